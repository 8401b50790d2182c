//! Several networks in one report: each network's audit (its own chain, its own block) as a
//! section, and per underlying the supply on all networks against what Alpaca journaled for it.
//! Pure, like [`super::audit`]: the same sections give the same report.

use super::{AuditError, AuditReport, SignedQty, Verdict};
use crate::ids::{Network, Symbol};
use crate::qty::Qty;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One network's audit, at a block of that network's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSection {
    pub network: Network,
    pub chain_id: u64,
    pub report: AuditReport,
}

/// One underlying across every network in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderlyingTotal {
    pub underlying: Symbol,
    /// The networks it is on, in the report's order.
    pub networks: Vec<Network>,
    /// Σ `totalSupply()` of its vaults, each at its own network's block.
    pub supply: Qty,
    /// Σ of Alpaca's completed mints minus completed redeems for it, per network as attributed.
    pub journaled: SignedQty,
    /// `supply − journaled`: zero for a clean book.
    pub difference: SignedQty,
}

/// The report over several networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworksReport {
    pub schema_version: u32,
    /// Every section balanced and every underlying's total difference zero.
    pub balanced: bool,
    /// The worst section's verdict (a non-zero total makes it `not_balanced`).
    pub verdict: Verdict,
    pub attention: usize,
    pub networks: Vec<NetworkSection>,
    pub totals: Vec<UnderlyingTotal>,
}

/// The schema of [`NetworksReport`]'s JSON.
pub const NETWORKS_SCHEMA_VERSION: u32 = 1;

/// Combines the sections (in the order given) with their totals per underlying.
pub fn combine(networks: Vec<NetworkSection>) -> Result<NetworksReport, AuditError> {
    let mut totals: BTreeMap<Symbol, UnderlyingTotal> = BTreeMap::new();
    for section in &networks {
        for asset in &section.report.assets {
            let total = totals
                .entry(asset.underlying.clone())
                .or_insert_with(|| UnderlyingTotal {
                    underlying: asset.underlying.clone(),
                    networks: Vec::new(),
                    supply: Qty::ZERO,
                    journaled: SignedQty::ZERO,
                    difference: SignedQty::ZERO,
                });
            if !total.networks.contains(&asset.network) {
                total.networks.push(asset.network.clone());
            }
            total.supply = total
                .supply
                .checked_add(asset.totals.total_supply)
                .ok_or(AuditError::Overflow("supply across networks"))?;
            total.journaled = total
                .journaled
                .checked_add(asset.totals.alpaca_journaled)
                .ok_or(AuditError::Overflow("journaled across networks"))?;
        }
    }
    let mut totals: Vec<UnderlyingTotal> = totals.into_values().collect();
    for total in &mut totals {
        total.difference = SignedQty::positive(total.supply)
            .checked_sub(total.journaled)
            .ok_or(AuditError::Overflow("difference across networks"))?;
    }
    let totals_zero = totals.iter().all(|t| t.difference.is_zero());
    let balanced = totals_zero && networks.iter().all(|s| s.report.balanced);
    let attention = networks.iter().map(|s| s.report.attention).sum();
    let verdict = if !balanced {
        Verdict::NotBalanced
    } else if networks
        .iter()
        .any(|s| s.report.verdict == Verdict::BalancedWithAttention)
    {
        Verdict::BalancedWithAttention
    } else {
        Verdict::Balanced
    };
    Ok(NetworksReport {
        schema_version: NETWORKS_SCHEMA_VERSION,
        balanced,
        verdict,
        attention,
        networks,
        totals,
    })
}
