//! What HA mode ([`crate::ha`]) needs of the redb file beyond the [`super::Store`] trait: the
//! shared facts imported from etcd as they are there. Inherent methods, so the trait every pass
//! and handler sees does not carry them.

use super::records::{Directory, MintProgress, MintRecord};
use super::redb_index::{link_mint, put_mint, put_redemption};
use super::redb_store::RedbStore;
use super::redb_tables::{
    addr_key, asset_key, set_link, ACCOUNTS, ACCOUNT_BY_EMAIL, ASSETS, MINTS, REDEMPTIONS, WALLETS,
};
use super::StoreError;
use reconciler::{Callback, IssuerRequestId, Journal, Redemption, RedemptionState};

/// What importing one mint fact did to the local record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintMerge {
    /// The store did not know the intent: recorded as etcd has it.
    Inserted,
    /// Alpaca's journal outcome (recorded elsewhere) was taken over.
    Updated,
    /// Nothing new.
    Unchanged,
}

impl RedbStore {
    /// Makes the directory exactly `directory` (as etcd holds it), in one transaction.
    pub fn replace_directory(&self, directory: Directory) -> Result<(), StoreError> {
        let written = self.write(move |txn| {
            txn.open_table(ACCOUNTS.definition())?
                .retain(|_, _| false)?;
            txn.open_table(ACCOUNT_BY_EMAIL)?.retain(|_, _| false)?;
            txn.open_table(WALLETS)?.retain(|_, _| false)?;
            txn.open_table(ASSETS.definition())?.retain(|_, _| false)?;
            for account in &directory.accounts {
                ACCOUNTS.put(txn, account.client_id.as_str(), account)?;
                set_link(
                    txn,
                    ACCOUNT_BY_EMAIL,
                    &account.email,
                    account.client_id.as_str(),
                )?;
            }
            for (wallet, client) in &directory.wallets {
                set_link(txn, WALLETS, &addr_key(*wallet), client.as_str())?;
            }
            for asset in &directory.assets {
                ASSETS.put(txn, &asset_key(&asset.underlying, &asset.network), asset)?;
            }
            Ok(())
        });
        self.assets_changed();
        written
    }

    /// Imports an accepted intent as etcd holds it. Only what intake decides is taken: the
    /// intent and Alpaca's journal outcome; what the reconciler keeps of it (callback state,
    /// attempts, problems) stays. A local record with another body never was answered (its
    /// write to etcd lost a race), so etcd's replaces it.
    pub fn merge_mint_fact(&self, fact: MintRecord) -> Result<MintMerge, StoreError> {
        self.write(move |txn| {
            let id = fact.intent.issuer_request_id.as_str().to_owned();
            let Some(mut local) = MINTS.get(txn, &id)? else {
                put_mint(txn, &fact)?;
                link_mint(txn, &fact)?;
                return Ok(MintMerge::Inserted);
            };
            if local.fingerprint != fact.fingerprint {
                tracing::warn!(issuer_request_id = %id, "ha: a local intent never answered differs from the shared one; taking the shared one");
                put_mint(txn, &fact)?;
                return Ok(MintMerge::Updated);
            }
            if local.intent.journal == Journal::Pending && fact.intent.journal != Journal::Pending
            {
                local.intent.journal = fact.intent.journal;
                local.reject_reason = fact.reject_reason;
                local.confirmed_at_ms = fact.confirmed_at_ms;
                put_mint(txn, &local)?;
                return Ok(MintMerge::Updated);
            }
            Ok(MintMerge::Unchanged)
        })
    }
    /// Imports mints' progress as the last leader shared it, in one transaction; how many local
    /// records changed. The shared progress is the newer one (only a leader writes it, before
    /// acting on it), except where this store knows more: a callback it recorded acknowledged
    /// stays so, and one it marked attempted is not taken back to "not sent". A mint the store
    /// does not know is left alone (its intent is imported first).
    pub fn merge_mint_progress(
        &self,
        shared: Vec<(IssuerRequestId, MintProgress)>,
    ) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut changed = 0;
            for (id, shared) in shared {
                let Some(mut local) = MINTS.get(txn, id.as_str())? else {
                    continue;
                };
                let known = local.progress();
                let keep_local = matches!(known.callback, Callback::Acked { .. })
                    || (shared.callback == Callback::NotSent
                        && known.callback != Callback::NotSent);
                if keep_local || known == shared {
                    continue;
                }
                local.set_progress(shared);
                put_mint(txn, &local)?;
                changed += 1;
            }
            Ok(changed)
        })
    }

    /// Imports redemptions as the last leader shared them, in one transaction; how many local
    /// records changed. The shared record is the newer one, except that a redemption final here
    /// stays final. A shared one still `Detected` (no Alpaca call made for it) is not imported:
    /// the chain says whether that transfer exists, and a reorg may have dropped it.
    pub fn merge_redemption_facts(&self, shared: Vec<Redemption>) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut changed = 0;
            for shared in shared {
                if shared.state == RedemptionState::Detected {
                    continue;
                }
                if let Some(local) = REDEMPTIONS.get(txn, shared.id.as_str())? {
                    if local.state.is_final() || local == shared {
                        continue;
                    }
                }
                put_redemption(txn, &shared)?;
                changed += 1;
            }
            Ok(changed)
        })
    }
}
