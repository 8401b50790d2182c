//! What HA mode ([`crate::ha`]) needs of the redb file beyond the [`super::Store`] trait: the
//! shared facts imported from etcd as they are there, and a new leader's forgetting of its own
//! transactions from an earlier term. Inherent methods, so the trait every pass and handler sees
//! stays as it is.

use super::records::{Account, Asset, MintRecord};
use super::redb_index::put_mint;
use super::redb_store::RedbStore;
use super::redb_tables::{
    addr_key, asset_key, get_json, put_json, ACCOUNTS, ACCOUNT_BY_EMAIL, ASSETS, MINTS,
    MINT_BY_TRID, WALLETS,
};
use super::StoreError;
use alloy::primitives::Address;
use reconciler::{ClientId, Journal};

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
    /// Makes the accounts, wallets and assets exactly `accounts`, `wallets` and `assets`, in
    /// one transaction (the shared directory as etcd holds it).
    pub fn replace_directory(
        &self,
        accounts: Vec<Account>,
        wallets: Vec<(Address, ClientId)>,
        assets: Vec<Asset>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(ACCOUNTS)?.retain(|_, _| false)?;
            txn.open_table(ACCOUNT_BY_EMAIL)?.retain(|_, _| false)?;
            txn.open_table(WALLETS)?.retain(|_, _| false)?;
            txn.open_table(ASSETS)?.retain(|_, _| false)?;
            for account in &accounts {
                put_json(txn, ACCOUNTS, account.client_id.as_str(), account)?;
                txn.open_table(ACCOUNT_BY_EMAIL)?
                    .insert(account.email.as_str(), account.client_id.as_str())?;
            }
            for (wallet, client) in &wallets {
                txn.open_table(WALLETS)?
                    .insert(addr_key(*wallet).as_str(), client.as_str())?;
            }
            for asset in &assets {
                put_json(
                    txn,
                    ASSETS,
                    &asset_key(&asset.underlying, &asset.network),
                    asset,
                )?;
            }
            Ok(())
        })
    }

    /// Imports an accepted intent as etcd holds it. Only what intake decides is taken: the
    /// intent and Alpaca's journal outcome; what the reconciler keeps of it (callback state,
    /// attempts, problems) stays. A local record with another body never was answered (its
    /// write to etcd lost a race), so etcd's replaces it.
    pub fn merge_mint_fact(&self, fact: MintRecord) -> Result<MintMerge, StoreError> {
        self.write(move |txn| {
            let id = fact.intent.issuer_request_id.as_str().to_owned();
            let Some(mut local) = get_json::<MintRecord>(txn, MINTS, &id)? else {
                put_mint(txn, &fact)?;
                txn.open_table(MINT_BY_TRID)?
                    .insert(fact.intent.tokenization_request_id.as_str(), id.as_str())?;
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
}
