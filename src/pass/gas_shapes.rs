//! Gas limits remembered across passes: a batch whose shape (vault, mint count, receivers) an
//! earlier estimate covers reuses that estimate's limit instead of asking the node again.

use alloy::primitives::Address;
use reconciler::{IssuerRequestId, MintIntent, MintItem};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Whether `items` may reuse the gas limit estimated for a shape (its receivers and its mint
/// count): no more mints than the shape (each mint costs tens of thousands of gas, far more than
/// two batches' ids differ by, and the limit carries the estimate's margin), every receiver of
/// `items` among the shape's (a receiver's first mint in a transaction, which may create its
/// balance, is what costs most; a receiver the shape has costs no more here), and no mint of
/// `items` that failed before (those are estimated with their own batch).
pub(super) fn covers(
    shape_receivers: &BTreeSet<Address>,
    shape_len: usize,
    items: &[MintItem],
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
) -> bool {
    items.len() <= shape_len
        && items.iter().all(|item| {
            shape_receivers.contains(&item.receiver)
                && intents
                    .get(&item.issuer_request_id)
                    .is_some_and(|intent| intent.failed_attempts == 0)
        })
}

/// The receivers of a batch, as a shape keeps them.
pub(super) fn receivers(items: &[MintItem]) -> BTreeSet<Address> {
    items.iter().map(|i| i.receiver).collect()
}

/// How many blocks a gas limit estimated for a batch's shape is reused by later passes.
const SHAPE_REUSE_BLOCKS: u64 = 10;

/// Gas limits estimated in recent passes, by shape (vault, mint count, receivers): a later
/// pass's batch that a shape [`covers`] reuses its limit, for [`SHAPE_REUSE_BLOCKS`] blocks,
/// instead of estimating again (under load an estimate of 40 mints took 60 to 200 ms of each
/// pass). Forgotten when one of our transactions fails. Empty at start-up and in a new leader;
/// cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct GasShapes(Arc<Mutex<Vec<GasShape>>>);

#[derive(Debug, Clone)]
struct GasShape {
    vault: Address,
    len: usize,
    receivers: BTreeSet<Address>,
    gas_limit: u64,
    learned_at: u64,
}

impl GasShapes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<GasShape>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The remembered limit for `items` on `vault`, if a shape learned within
    /// [`SHAPE_REUSE_BLOCKS`] of `head` covers them (the lowest, if several do).
    pub(super) fn limit_for(
        &self,
        head: u64,
        vault: Address,
        items: &[MintItem],
        intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
    ) -> Option<u64> {
        // The tightest of the covering limits: a limit above need can keep a transaction out of
        // a block's last gas.
        self.lock()
            .iter()
            .filter(|s| {
                s.vault == vault
                    && head < s.learned_at.saturating_add(SHAPE_REUSE_BLOCKS)
                    && head >= s.learned_at
                    && covers(&s.receivers, s.len, items, intents)
            })
            .map(|s| s.gas_limit)
            .min()
    }

    /// Remembers the limit estimated at `head` for `items` on `vault` (and drops stale shapes).
    pub(super) fn learn(&self, head: u64, vault: Address, items: &[MintItem], gas_limit: u64) {
        let receivers = receivers(items);
        let mut shapes = self.lock();
        shapes.retain(|s| {
            head < s.learned_at.saturating_add(SHAPE_REUSE_BLOCKS)
                && head >= s.learned_at
                && !(s.vault == vault && s.len == items.len() && s.receivers == receivers)
        });
        shapes.push(GasShape {
            vault,
            len: items.len(),
            receivers,
            gas_limit,
            learned_at: head,
        });
    }

    /// Forgets every remembered limit.
    pub fn forget(&self) {
        self.lock().clear();
    }
}
