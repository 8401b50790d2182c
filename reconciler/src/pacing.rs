//! How the shell paces what it does, decided here so it is tested without a node or a clock:
//! what a stuck transaction's replacement bids, how long an item's Alpaca calls back off, and how
//! a mint batch that does not estimate is split.

use crate::plan::MintItem;
use serde::{Deserialize, Serialize};

/// EIP-1559 fees of one transaction variant (wei per gas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeBid {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// What to do with a transaction stuck at its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Replacement {
    /// Sign a new variant at the same nonce with these fees.
    Bid(FeeBid),
    /// Re-send the last variant as it is: the last bid is already at the cap.
    ResendAtCap,
    /// Re-send the last variant: the cap leaves no room for the 10% raise nodes require, and a
    /// refused replacement could strand the nonce.
    ResendNoRoom,
}

/// A replacement bids at least 25% over the last variant (nodes want 10%), at least what the
/// market asks now, and never above `cap` for the fee per gas.
pub fn replacement(last: FeeBid, market: FeeBid, cap: u128) -> Replacement {
    if last.max_fee_per_gas >= cap {
        return Replacement::ResendAtCap;
    }
    let bump = |fee: u128| fee.saturating_add(fee / 4).saturating_add(1);
    let max_fee_per_gas = bump(last.max_fee_per_gas)
        .max(market.max_fee_per_gas)
        .min(cap);
    let node_minimum = |fee: u128| fee.saturating_add(fee / 10);
    if max_fee_per_gas < node_minimum(last.max_fee_per_gas) {
        return Replacement::ResendNoRoom;
    }
    Replacement::Bid(FeeBid {
        max_fee_per_gas,
        max_priority_fee_per_gas: bump(last.max_priority_fee_per_gas)
            .max(market.max_priority_fee_per_gas)
            .min(max_fee_per_gas),
    })
}

/// First wait after an item's Alpaca call failed.
pub const ALPACA_BACKOFF_FIRST_MS: u64 = 500;
/// Longest wait between two Alpaca calls for one item.
pub const ALPACA_BACKOFF_CAP_MS: u64 = 30_000;

/// How long an item's next Alpaca call waits after `failures` failed ones in a row: doubling from
/// [`ALPACA_BACKOFF_FIRST_MS`], capped at [`ALPACA_BACKOFF_CAP_MS`].
pub fn alpaca_backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let doublings = (failures - 1).min(16);
    ALPACA_BACKOFF_FIRST_MS
        .saturating_mul(1u64 << doublings)
        .min(ALPACA_BACKOFF_CAP_MS)
}

/// How a mint batch whose estimate failed goes out, once each item was estimated alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstimateSplit {
    /// Sent together as one transaction.
    pub together: Vec<MintItem>,
    /// Sent as one transaction each (they fit alone but not together).
    pub one_by_one: Vec<MintItem>,
    /// Not sent: they do not estimate alone (shown to operators, tried again next pass).
    pub waiting: Vec<MintItem>,
}

/// Splits a batch after each item's own estimate (`fits_alone`, in the same order): the items
/// that do not estimate wait, and neither hold back nor break up the rest, which go out
/// together; if every item fits alone, the batch itself was too big, and they go one by one.
pub fn split_after_estimates(items: &[MintItem], fits_alone: &[bool]) -> EstimateSplit {
    let (good, waiting): (Vec<_>, Vec<_>) = items
        .iter()
        .zip(fits_alone.iter().copied().chain(std::iter::repeat(false)))
        .partition(|(_, fits)| *fits);
    let good: Vec<MintItem> = good.into_iter().map(|(item, _)| item.clone()).collect();
    let waiting = waiting.into_iter().map(|(item, _)| item.clone()).collect();
    if good.len() == items.len() {
        EstimateSplit {
            one_by_one: good,
            ..EstimateSplit::default()
        }
    } else {
        EstimateSplit {
            together: good,
            waiting,
            ..EstimateSplit::default()
        }
    }
}
