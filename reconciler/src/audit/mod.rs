//! `audit`: the auditor's question — is every token on chain explained by a completed journal at
//! Alpaca, and is every journal reflected on chain? — answered from observations alone.
//!
//! The shell reads the chain (vault logs, `totalSupply`, receipt balances, all at one block) and
//! Alpaca (its mint and redeem requests), hands them over as an [`AuditInput`], and renders the
//! [`AuditReport`]. No cache is read, so the same chain and the same Alpaca give the same report.
//!
//! # The difference
//!
//! For each asset, at block `N`:
//!
//! ```text
//! difference = total_supply(N) − alpaca_minted + alpaca_redeemed
//! ```
//!
//! - `total_supply(N)`: the vault's `totalSupply()` at `N`: every share in existence, wherever it
//!   sits (AP wallets, the bot's wallet waiting for a redemption, anywhere else).
//! - `alpaca_minted`: the sum of Alpaca's **completed** mint requests for the asset. Alpaca
//!   completes a mint when we call back with the deposit transaction, so each should be one
//!   tagged `Deposit` of exactly that quantity.
//! - `alpaca_redeemed`: the sum of Alpaca's **completed** redeem requests: shares journaled back
//!   to an AP, whose tokens should have been burned.
//!
//! Alpaca answers only for "now". A request is attributed to block `N` through its on-chain anchor:
//! a completed mint through its deposit transaction, a redeem through the transfer that started it.
//! A request whose anchor was mined after `N` is left out (counted in `alpaca_after_block`).
//!
//! Why this is exactly zero for a clean book: shares come into existence only by `Deposit` and
//! leave only by `Withdraw`. A clean mint is one tagged deposit of the completed quantity (+q on
//! both sides). A redemption moves tokens to the bot (supply unchanged, nothing journaled); while
//! it waits, is pending at Alpaca, is rejected or is returned by an operator, neither side moves.
//! When Alpaca completes it, `q` is journaled back and the bot burns exactly `q` (the part below
//! 9 decimals goes back to the AP as dust and stays in supply: Alpaca never journaled it).
//!
//! Every way the book can deviate is an [`Item`] whose `effect` is its exact contribution to the
//! difference, so `explained` (the sum of effects) equals `difference` and `unexplained` is zero
//! whenever the audit understands every log. Items with a zero effect (a transfer waiting, a
//! redemption pending at Alpaca, an unknown sender) do not move the difference but still need a
//! person's attention, so they are listed too.
//!
//! # Layout
//!
//! - `mod.rs`: the report types and [`audit`], which sums the supply and calls the matchers.
//! - `input.rs`: what the shell observed ([`AuditInput`] and the logs and requests in it).
//! - `signed.rs`: [`SignedQty`], the difference and the items' effects.
//! - `book.rs`: the book one asset's items, totals and chart events are collected in.
//! - `mints.rs`: deposits against Alpaca's mint requests.
//! - `redemptions.rs`: transfers to the bot, burns and returns against Alpaca's redeem requests.
//! - `chart.rs`: the supply-versus-journal series.

mod book;
mod chart;
mod input;
mod mints;
mod networks;
mod redemptions;
mod signed;

pub use chart::SERIES_POINTS_MAX;
pub use input::{
    AlpacaRequest, AssetInput, AuditInput, DepositLog, LogPos, ReceiptHolding, RequestKind,
    RequestStatus, Tag, TransferLog, TxBlock, WithdrawLog,
};
pub use networks::{
    combine, NetworkSection, NetworksReport, UnderlyingTotal, NETWORKS_SCHEMA_VERSION,
};
pub use signed::SignedQty;

use crate::ids::{Network, Symbol};
use crate::qty::Qty;
use alloy_primitives::{Address, B256, U256};
use book::{add, sadd, Book};
use chart::series;
use mints::audit_mints;
use redemptions::audit_redemptions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Version of the [`AuditReport`] JSON. Bumped on any change a reader could notice: a renamed or
/// removed field, a changed meaning. Adding an [`ItemKind`] also bumps it.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// Why an audit could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A sum left the range of a uint256: the observations cannot come from one real vault.
    #[error("quantity overflow while summing {0}")]
    Overflow(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Why a line of the report needs a person's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// `totalSupply()` differs from what the vault's logs add up to. Effect: the gap.
    SupplyNotFromLogs,
    /// A deposit whose receipt information is not ours. Effect: +shares.
    UntaggedDeposit,
    /// A tagged deposit for a request Alpaca does not list for this asset. Effect: +shares.
    DepositWithoutRequest,
    /// Minted while Alpaca still shows the request pending (callback not yet acknowledged).
    /// Effect: +shares.
    MintNotCalledBack,
    /// Minted although Alpaca rejected the journal. Effect: +shares.
    MintedAfterRejection,
    /// A second (or later) deposit for one request. Effect: +shares.
    DoubleMint,
    /// Alpaca shows the mint completed and no deposit for it is on the chain. Effect: −qty.
    MissingMint,
    /// Alpaca shows the mint pending and nothing is minted: informational. Effect: 0.
    MintPending,
    /// Chain and Alpaca disagree on a quantity, an id, a transaction or a delivery.
    /// Effect: the quantity gap, if any.
    Mismatch,
    /// Tokens a known AP sent to the bot, not yet handed to Alpaca. Effect: 0.
    TransferWaiting,
    /// Tokens sent to the bot from a wallet Alpaca never named. Effect: 0.
    UnknownSender,
    /// Alpaca's redeem journal is pending; the tokens wait in the bot's wallet. Effect: 0.
    RedemptionPending,
    /// Alpaca rejected the redemption; the tokens wait for an operator return. Effect: 0.
    RedemptionRejected,
    /// Alpaca journaled the shares back; the burn is not on chain yet. Effect: +qty.
    BurnPending,
    /// A burn for a redemption Alpaca did not complete. Effect: −shares.
    BurnWithoutJournal,
    /// A redemption burned in more than one transaction. Effect: journaled − burned.
    DoubleBurn,
    /// A burn whose tag names no transfer to the bot. Effect: −shares.
    BurnUnknownRedemption,
    /// A burn whose receipt information is not ours. Effect: −shares.
    UntaggedBurn,
    /// Alpaca lists a redeem with no transfer to the bot behind it: none at all, no issuer id to
    /// find one by, or one another of Alpaca's requests already names. Effect: +qty if completed.
    RedeemWithoutTransfer,
    /// The bot sent tokens out with no mint, burn or return behind it. Effect: 0.
    UnexplainedOutflow,
    /// The bot has transactions sent and not mined: the next blocks may change the book. Effect: 0.
    InFlight,
}

impl ItemKind {
    /// The snake_case name, as in JSON and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SupplyNotFromLogs => "supply_not_from_logs",
            Self::UntaggedDeposit => "untagged_deposit",
            Self::DepositWithoutRequest => "deposit_without_request",
            Self::MintNotCalledBack => "mint_not_called_back",
            Self::MintedAfterRejection => "minted_after_rejection",
            Self::DoubleMint => "double_mint",
            Self::MissingMint => "missing_mint",
            Self::MintPending => "mint_pending",
            Self::Mismatch => "mismatch",
            Self::TransferWaiting => "transfer_waiting",
            Self::UnknownSender => "unknown_sender",
            Self::RedemptionPending => "redemption_pending",
            Self::RedemptionRejected => "redemption_rejected",
            Self::BurnPending => "burn_pending",
            Self::BurnWithoutJournal => "burn_without_journal",
            Self::DoubleBurn => "double_burn",
            Self::BurnUnknownRedemption => "burn_unknown_redemption",
            Self::UntaggedBurn => "untagged_burn",
            Self::RedeemWithoutTransfer => "redeem_without_transfer",
            Self::UnexplainedOutflow => "unexplained_outflow",
            Self::InFlight => "in_flight",
        }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line that explains (part of) a difference or needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ItemKind,
    /// The log it is about; `None` for what is only at Alpaca (a missing mint) or bot-wide.
    pub at: Option<LogPos>,
    pub tokenization_request_id: Option<String>,
    pub issuer_request_id: Option<String>,
    /// The AP wallet or sender concerned.
    pub wallet: Option<Address>,
    /// The quantity concerned (shares on chain, or Alpaca's qty).
    pub qty: Qty,
    /// Exact contribution to the asset's difference.
    pub effect: SignedQty,
    pub detail: String,
}

/// Sums of one asset at the block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// `totalSupply()` at the block.
    pub total_supply: Qty,
    /// Σ deposit shares − Σ withdraw shares, from the logs.
    pub supply_from_logs: SignedQty,
    /// Shares of deposits carrying our tag.
    pub minted: Qty,
    /// Shares of deposits without our tag.
    pub minted_untagged: Qty,
    /// Shares of every burn.
    pub burned: Qty,
    /// Transfers to the bot sent back whole by an operator.
    pub returned: Qty,
    /// Parts below 9 decimals sent back to the AP with a burn.
    pub dust_returned: Qty,
    /// Transfers to the bot neither burned nor returned yet.
    pub waiting_in_bot: Qty,
    /// The bot's share balance.
    pub bot_shares: Qty,
    /// Σ of Alpaca's completed mints attributed to the block.
    pub alpaca_minted: Qty,
    /// Σ of Alpaca's completed redeems attributed to the block.
    pub alpaca_redeemed: Qty,
    /// `alpaca_minted − alpaca_redeemed`: the shares Alpaca holds for the tokens.
    pub alpaca_journaled: SignedQty,
    /// Alpaca requests whose on-chain anchor is after the block, left out.
    pub alpaca_after_block: u64,
    pub deposits: u64,
    pub withdraws: u64,
    pub redemptions: u64,
}

/// A receipt the bot holds, with the request it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRow {
    pub id: U256,
    pub balance: Qty,
    pub tokenization_request_id: Option<String>,
    pub issuer_request_id: Option<String>,
    pub deposit_block: Option<u64>,
}

/// One point of the supply-versus-journal chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub block: u64,
    /// Supply from the logs after this block.
    pub supply: SignedQty,
    /// Alpaca's journaled quantity attributed up to this block.
    pub journaled: SignedQty,
}

/// One asset's audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetReport {
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub vault: Address,
    pub bot: Address,
    pub deploy_block: u64,
    pub totals: Totals,
    /// `total_supply − alpaca_minted + alpaca_redeemed`; zero for a clean book.
    pub difference: SignedQty,
    /// Σ of the items' effects.
    pub explained: SignedQty,
    /// `difference − explained`: zero unless a log escaped the audit's understanding.
    pub unexplained: SignedQty,
    pub receipts: Vec<ReceiptRow>,
    /// Ordered by block and log index; items with no log last.
    pub items: Vec<Item>,
    pub series: Vec<Point>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub schema_version: u32,
    pub at_block: u64,
    /// True when every asset's difference and unexplained part are zero.
    pub balanced: bool,
    /// What an auditor reads first: balanced and clean, balanced with items to look at, or not
    /// balanced. A zero difference with an unknown sender's transfer waiting is not "clean".
    pub verdict: Verdict,
    /// Items (per asset and bot-wide) that need someone's attention.
    pub attention: usize,
    pub in_flight: u64,
    pub assets: Vec<AssetReport>,
    /// Bot-wide items (in-flight transactions).
    pub notices: Vec<Item>,
}

/// The report's verdict, in one word for machines and the exit code of `issuer report --check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The difference is zero and nothing needs attention (exit 0).
    Balanced,
    /// The difference is zero but items need attention (exit 1).
    BalancedWithAttention,
    /// Supply and journals differ (exit 2).
    NotBalanced,
}

impl Verdict {
    /// `issuer report --check`'s exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Balanced => 0,
            Self::BalancedWithAttention => 1,
            Self::NotBalanced => 2,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The audit
// ---------------------------------------------------------------------------------------------

/// Audits every asset of `input` at `input.at_block`. Pure: the same input gives the same report.
pub fn audit(input: &AuditInput) -> Result<AuditReport, AuditError> {
    let known_wallets: BTreeSet<Address> = input.alpaca.iter().map(|r| r.wallet).collect();
    let tx_blocks: BTreeMap<B256, u64> = input
        .tx_blocks
        .iter()
        .map(|t| (t.tx_hash, t.block))
        .collect();
    let mut assets = Vec::with_capacity(input.assets.len());
    for asset in &input.assets {
        assets.push(audit_asset(asset, input, &known_wallets, &tx_blocks)?);
    }
    let balanced = assets
        .iter()
        .all(|a| a.difference.is_zero() && a.unexplained.is_zero());
    let mut notices = Vec::new();
    if input.in_flight > 0 {
        notices.push(Item {
            kind: ItemKind::InFlight,
            at: None,
            tokenization_request_id: None,
            issuer_request_id: None,
            wallet: assets.first().map(|a| a.bot),
            qty: Qty::ZERO,
            effect: SignedQty::ZERO,
            detail: format!(
                "{} bot transaction(s) sent and not yet mined: the next blocks may mint or burn",
                input.in_flight
            ),
        });
    }
    let attention = assets.iter().map(|a| a.items.len()).sum::<usize>() + notices.len();
    let verdict = match (balanced, attention) {
        (true, 0) => Verdict::Balanced,
        (true, _) => Verdict::BalancedWithAttention,
        (false, _) => Verdict::NotBalanced,
    };
    Ok(AuditReport {
        schema_version: AUDIT_SCHEMA_VERSION,
        at_block: input.at_block,
        balanced,
        verdict,
        attention,
        in_flight: input.in_flight,
        assets,
        notices,
    })
}

fn audit_asset(
    asset: &AssetInput,
    input: &AuditInput,
    known_wallets: &BTreeSet<Address>,
    tx_blocks: &BTreeMap<B256, u64>,
) -> Result<AssetReport, AuditError> {
    let n = input.at_block;
    let mut deposits: Vec<&DepositLog> =
        asset.deposits.iter().filter(|d| d.at.block <= n).collect();
    deposits.sort_by_key(|d| d.at);
    let mut withdraws: Vec<&WithdrawLog> =
        asset.withdraws.iter().filter(|w| w.at.block <= n).collect();
    withdraws.sort_by_key(|w| w.at);
    let mut transfers: Vec<&TransferLog> =
        asset.transfers.iter().filter(|t| t.at.block <= n).collect();
    transfers.sort_by_key(|t| t.at);
    let mut requests: Vec<&AlpacaRequest> = input
        .alpaca
        .iter()
        .filter(|r| r.underlying == asset.underlying && r.network == asset.network)
        .collect();
    requests.sort_by(|a, b| a.id.cmp(&b.id));

    // Where each transaction sits: Alpaca's list plus every log of the asset, also those after
    // the block (a mint completed at Alpaca after the block is anchored there, not missing).
    let mut tx_index = tx_blocks.clone();
    let all_logs = asset
        .deposits
        .iter()
        .map(|d| d.at)
        .chain(asset.withdraws.iter().map(|w| w.at));
    for at in all_logs.chain(asset.transfers.iter().map(|t| t.at)) {
        tx_index.entry(at.tx_hash).or_insert(at.block);
    }
    let mut book = Book {
        asset,
        at_block: n,
        tx_blocks: &tx_index,
        totals: Totals {
            total_supply: asset.total_supply,
            bot_shares: asset.bot_shares,
            ..Totals::default()
        },
        items: Vec::new(),
        events: Vec::new(),
    };

    // Supply from the logs, and the plain sums.
    let mut supply_logs = SignedQty::ZERO;
    for d in &deposits {
        supply_logs = sadd(supply_logs, SignedQty::positive(d.shares), "supply")?;
        book.events
            .push((d.at.block, SignedQty::positive(d.shares), SignedQty::ZERO));
        match d.tag {
            Tag::Ours(_) => book.totals.minted = add(book.totals.minted, d.shares, "minted")?,
            Tag::Foreign { .. } => {
                book.totals.minted_untagged =
                    add(book.totals.minted_untagged, d.shares, "minted_untagged")?;
            }
        }
    }
    for w in &withdraws {
        supply_logs = sadd(supply_logs, SignedQty::negative(w.shares), "supply")?;
        book.events
            .push((w.at.block, SignedQty::negative(w.shares), SignedQty::ZERO));
        book.totals.burned = add(book.totals.burned, w.shares, "burned")?;
    }
    book.totals.supply_from_logs = supply_logs;
    book.totals.deposits = deposits.len() as u64;
    book.totals.withdraws = withdraws.len() as u64;
    let gap = sadd(
        SignedQty::positive(asset.total_supply),
        supply_logs.negated(),
        "supply gap",
    )?;
    if !gap.is_zero() {
        book.push(Item::new(
            ItemKind::SupplyNotFromLogs,
            None,
            gap.magnitude(),
            gap,
            format!(
                "totalSupply {} but the vault's logs add up to {supply_logs}",
                asset.total_supply
            ),
        ));
    }

    audit_mints(&mut book, &deposits, &transfers, &requests)?;
    audit_redemptions(
        &mut book,
        &withdraws,
        &transfers,
        &deposits,
        &requests,
        known_wallets,
    )?;

    let totals = &mut book.totals;
    totals.alpaca_journaled = SignedQty::diff(totals.alpaca_minted, totals.alpaca_redeemed);
    let difference = sadd(
        SignedQty::positive(totals.total_supply),
        totals.alpaca_journaled.negated(),
        "difference",
    )?;
    let mut explained = SignedQty::ZERO;
    for item in &book.items {
        explained = sadd(explained, item.effect, "explained")?;
    }
    let unexplained = sadd(difference, explained.negated(), "unexplained")?;

    let mut items = book.items;
    items.sort_by(|a, b| item_key(a).cmp(&item_key(b)));
    let receipts = receipt_rows(asset, &deposits);
    let series = series(book.events)?;
    Ok(AssetReport {
        underlying: asset.underlying.clone(),
        token: asset.token.clone(),
        network: asset.network.clone(),
        vault: asset.vault,
        bot: asset.bot,
        deploy_block: asset.deploy_block,
        totals: book.totals,
        difference,
        explained,
        unexplained,
        receipts,
        items,
        series,
    })
}

/// Block and log index first (items with no log last), then kind and ids, so equal inputs give
/// equal order whatever order they came in.
fn item_key(item: &Item) -> (u64, u64, ItemKind, Option<&str>, Option<&str>) {
    let (block, index) = item
        .at
        .map_or((u64::MAX, u64::MAX), |at| (at.block, at.log_index));
    (
        block,
        index,
        item.kind,
        item.tokenization_request_id.as_deref(),
        item.issuer_request_id.as_deref(),
    )
}

fn receipt_rows(asset: &AssetInput, deposits: &[&DepositLog]) -> Vec<ReceiptRow> {
    // The first deposit of each receipt id, looked up once per receipt (not a scan per receipt).
    let mut origins: BTreeMap<U256, &DepositLog> = BTreeMap::new();
    for d in deposits {
        origins.entry(d.id).or_insert(d);
    }
    let mut rows: Vec<ReceiptRow> = asset
        .receipts
        .iter()
        .filter(|r| !r.balance.is_zero())
        .map(|r| {
            let origin = origins.get(&r.id).copied();
            let info = origin.and_then(|d| match &d.tag {
                Tag::Ours(info) => Some(info),
                Tag::Foreign { .. } => None,
            });
            ReceiptRow {
                id: r.id,
                balance: r.balance,
                tokenization_request_id: info.map(|i| i.tokenization_request_id.clone()),
                issuer_request_id: info.map(|i| i.issuer_request_id.clone()),
                deposit_block: origin.map(|d| d.at.block),
            }
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    rows
}
