//! The addresses of every listed asset's contracts (vault, receipt, authorizer), kept in memory:
//! intake refuses them as wallets on every request, and reading the whole asset list for that
//! cost each request what the listing's size is (500 listed assets took intake from about
//! 11,500 to 3,100 requests/s).
//!
//! Kept true by a generation count: a write of the assets bumps it after its commit (whatever
//! the outcome) and drops the set; a reader stores the set it built only if no bump happened
//! since it began, so a set built from a snapshot older than a listing is never kept.

use alloy::primitives::Address;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
struct Known {
    generation: u64,
    contracts: Option<Arc<HashSet<Address>>>,
}

/// Cheap to clone: clones share one set.
#[derive(Clone, Default)]
pub(super) struct AssetContracts(Arc<Mutex<Known>>);

impl AssetContracts {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `address` is one of the contracts; `build` lists them from a fresh snapshot when
    /// the set is not known.
    pub(super) fn contains<E>(
        &self,
        address: Address,
        build: impl FnOnce() -> Result<HashSet<Address>, E>,
    ) -> Result<bool, E> {
        let began = {
            let known = self.lock();
            if let Some(contracts) = &known.contracts {
                return Ok(contracts.contains(&address));
            }
            known.generation
        };
        let contracts = build()?;
        let found = contracts.contains(&address);
        let mut known = self.lock();
        if known.generation == began {
            known.contracts = Some(Arc::new(contracts));
        }
        Ok(found)
    }

    /// Forgets the set: called after every write of the assets has committed (or failed).
    pub(super) fn changed(&self) {
        let mut known = self.lock();
        known.generation = known.generation.wrapping_add(1);
        known.contracts = None;
    }
}
