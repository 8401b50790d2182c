//! The redb file: a cache of what the chain and Alpaca say, plus the facts that live nowhere else
//! (account links, the wallet whitelist, the asset list, accepted intents, our signed transactions).
//!
//! Every write goes through one writer thread that groups the jobs waiting for it into a single
//! two-phase, fsynced transaction ([`writer`]): a caller is answered only after its job is on disk,
//! and many concurrent callers share one fsync.

mod records;
mod redb_index;
mod redb_jobs;
mod redb_shared;
mod redb_store;
mod redb_tables;
mod writer;

pub use records::{
    Account, Asset, AttachOutcome, CallbackRefusal, ConfirmOutcome, IssuanceCheck, IssuanceOutcome,
    IssuanceRefusal, MintProblem, MintRecord, PassView, ReturnOutcome, Scan, Settled, TxRecord,
    TxVariant, MINT_QTY_MAX_DEFAULT, SCHEMA_VERSION,
};
pub use redb_shared::MintMerge;
pub use redb_store::RedbStore;

use alloy::primitives::{Address, B256};
use reconciler::{
    AlpacaAccountId, ClientId, IssuerRequestId, Journal, Network, ObservedBurn, ObservedDeposit,
    Redemption, Symbol, TokenizationRequestId,
};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened: missing directory, permissions, locked by another process.
    #[error("cannot open store {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    /// The path cannot be a store at all: a directory, no permission to read or write it.
    #[error("cannot use {path} as the store: {reason}")]
    Unusable { path: String, reason: String },
    /// The file is not a redb file of ours, or redb found it damaged. It was not modified.
    #[error("store {path} is corrupt or not an issuer store: {detail}")]
    Corrupt { path: String, detail: String },
    /// The file was written by a newer issuer; opening it could lose data it holds. Not modified.
    #[error("store {path} has schema version {found}, this issuer understands up to {supported}")]
    NewerSchema {
        path: String,
        found: u32,
        supported: u32,
    },
    /// redb failed during a transaction (I/O error, disk full).
    #[error("storage failure: {0}")]
    Storage(String),
    /// A stored value no longer decodes: a bug or a damaged file.
    #[error("stored value under {key} does not decode: {detail}")]
    Decode { key: String, detail: String },
    /// The writer thread is gone (the store is shutting down).
    #[error("store writer stopped")]
    WriterGone,
    /// The store was closed; this handle can no longer be used.
    #[error("store closed")]
    Closed,
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// A change to one stored mint, applied inside the write transaction.
pub type MintChange = Box<dyn FnOnce(&mut MintRecord) + Send>;
/// A change to one stored redemption, applied inside the write transaction.
pub type RedemptionChange = Box<dyn FnOnce(&mut Redemption) + Send>;

/// A write queued for the next group commit; resolves once it is durable (or failed).
pub type Pending<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send>>;

/// What a pass or a handler needs from the cache. Small on purpose: a faulty double is a short
/// test type, and redb stays behind it.
pub trait Store: Send + Sync {
    /// Releases the file for every handle (in-process restarts, tests). Later calls fail with
    /// [`StoreError::Closed`].
    fn close(&self);

    /// `Err` while the store cannot write (a disk error it has not yet recovered from): what
    /// `/readyz` reports. A store that cannot fail this way is always healthy.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // Accounts and wallets.
    /// Registers an AP by email (normalised: trimmed, lower case). Idempotent per email.
    fn register_account(&self, email: &str) -> Result<Account, StoreError>;
    fn account(&self, client_id: &ClientId) -> Result<Option<Account>, StoreError>;
    fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError>;
    /// Every registered account, for operators.
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Links the account of `email` to Alpaca's account number: `Ok(None)` for an unknown email,
    /// `Err`-free `Some((account, false))` when it was already linked.
    fn link_account(
        &self,
        email: &str,
        account_number: &str,
    ) -> Result<Option<(Account, bool)>, StoreError>;
    /// Attaches the AP's Alpaca account UUID to a registered client. Idempotent.
    fn attach_alpaca_account(
        &self,
        client_id: &ClientId,
        alpaca_account_id: &AlpacaAccountId,
    ) -> Result<AttachOutcome, StoreError>;
    /// The client an Alpaca account UUID is attached to.
    fn account_by_alpaca_id(
        &self,
        alpaca_account_id: &AlpacaAccountId,
    ) -> Result<Option<Account>, StoreError>;
    /// Whitelists `wallet` for `client_id`; `false` if the wallet belongs to another client.
    fn add_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError>;
    fn remove_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError>;
    fn wallet_owner(&self, wallet: Address) -> Result<Option<ClientId>, StoreError>;
    fn wallets(&self) -> Result<Vec<(Address, ClientId)>, StoreError>;

    // Assets.
    /// Inserts or replaces the asset for (underlying, network).
    fn put_asset(&self, asset: &Asset) -> Result<(), StoreError>;
    fn assets(&self) -> Result<Vec<Asset>, StoreError>;
    fn asset(&self, underlying: &Symbol, network: &Network) -> Result<Option<Asset>, StoreError>;
    /// Freezes or unfreezes minting of `underlying` on every network; the number of assets changed.
    fn set_frozen(&self, underlying: &Symbol, frozen: bool) -> Result<usize, StoreError>;

    // Mint intents.
    /// Records an accepted issuance, or finds the one already under its tokenization_request_id.
    fn submit_issuance(&self, record: MintRecord) -> Result<IssuanceOutcome, StoreError>;
    /// [`Store::submit_issuance`] for async callers: queued at once, answered when durable. A new
    /// intent is written only if `check` still holds inside the write transaction; a repeat of an
    /// accepted one is answered as before whatever changed since.
    fn submit_issuance_async(
        &self,
        record: MintRecord,
        check: IssuanceCheck,
    ) -> Pending<IssuanceOutcome>;
    /// Records Alpaca's journal outcome for a mint.
    fn confirm_issuance(
        &self,
        tokenization_request_id: &TokenizationRequestId,
        issuer_request_id: &IssuerRequestId,
        journal: Journal,
        reason: Option<String>,
    ) -> Result<ConfirmOutcome, StoreError>;
    fn mint(&self, issuer_request_id: &IssuerRequestId) -> Result<Option<MintRecord>, StoreError>;
    /// Mints not yet acknowledged by Alpaca and not rejected.
    fn active_mints(&self) -> Result<Vec<MintRecord>, StoreError>;
    /// Every mint ever accepted: for operators, never for a pass (it grows with history).
    fn all_mints(&self) -> Result<Vec<MintRecord>, StoreError>;
    fn put_mints(&self, records: Vec<MintRecord>) -> Result<(), StoreError>;
    /// Changes one mint inside a single write transaction, so a concurrent confirm from Alpaca is
    /// never overwritten by a stale copy. `None` if there is no such mint.
    fn update_mint(
        &self,
        id: &IssuerRequestId,
        change: MintChange,
    ) -> Result<Option<MintRecord>, StoreError>;
    /// Marks the mint callbacks of `ids` as attempted, in one commit, before they go out; the ids
    /// that were not sent before (whose callback can go out without asking Alpaca first). An
    /// unknown id, or one already attempted, acknowledged or refused, is left as it is.
    fn mark_callbacks_attempted(
        &self,
        ids: &[IssuerRequestId],
    ) -> Result<Vec<IssuerRequestId>, StoreError>;
    /// Records a mint rebuilt from the chain and Alpaca unless one is already there; `true` if it
    /// was inserted.
    fn insert_mint_if_absent(&self, record: MintRecord) -> Result<bool, StoreError>;

    /// What one reconcile pass works on, read from one snapshot through index tables: its cost
    /// follows the active items, whatever the history holds.
    fn pass_view(&self) -> Result<PassView, StoreError>;

    // Chain observations and our transactions.
    fn put_deposits(&self, deposits: Vec<ObservedDeposit>) -> Result<(), StoreError>;
    /// Every deposit ever seen (operators, tests; a pass reads [`Store::pass_view`]).
    fn deposits(&self) -> Result<Vec<ObservedDeposit>, StoreError>;
    // Chain-local state: each network has its own cursors, reorg window and nonces.
    /// Forgets every observation on `network` from `block_number` on (a reorg there).
    fn drop_observations_from(
        &self,
        network: &Network,
        block_number: u64,
    ) -> Result<(), StoreError>;
    /// Last block of `network` scanned for `vault` (inclusive), if any.
    fn cursor(&self, network: &Network, vault: Address) -> Result<Option<u64>, StoreError>;
    /// Records the scan of `vault` on `network` up to `block_number` together with the block
    /// hashes seen, in one transaction with the observations it produced.
    fn advance(
        &self,
        network: &Network,
        vault: Address,
        block_number: u64,
        scan: Scan,
        hashes: Vec<(u64, B256)>,
    ) -> Result<(), StoreError>;

    // Redemptions.
    /// Every redemption, final ones included.
    fn redemptions(&self) -> Result<Vec<Redemption>, StoreError>;
    fn redemption(&self, id: &IssuerRequestId) -> Result<Option<Redemption>, StoreError>;
    fn put_redemptions(&self, redemptions: Vec<Redemption>) -> Result<(), StoreError>;
    /// Changes one redemption inside a single write transaction; `None` if there is none.
    fn update_redemption(
        &self,
        id: &IssuerRequestId,
        change: RedemptionChange,
    ) -> Result<Option<Redemption>, StoreError>;
    /// Every burn ever seen (operators, tests; a pass reads [`Store::pass_view`]).
    fn burns(&self) -> Result<Vec<ObservedBurn>, StoreError>;
    fn put_burns(&self, burns: Vec<ObservedBurn>) -> Result<(), StoreError>;
    /// An operator asks to send a flagged redemption's tokens back to its sender.
    fn request_return(&self, id: &IssuerRequestId) -> Result<ReturnOutcome, StoreError>;
    fn rewind_cursors(&self, network: &Network, block_number: u64) -> Result<(), StoreError>;
    /// Block hashes we saw on `network`, newest last.
    fn block_hashes(&self, network: &Network) -> Result<Vec<(u64, B256)>, StoreError>;
    /// Our transactions, per network: two chains' nonce 0 are two transactions.
    fn put_tx(&self, network: &Network, tx: &TxRecord) -> Result<(), StoreError>;
    /// Several transactions of `network` in one write transaction: all of them are durable when
    /// this returns, or none (a pass's consecutive nonces never leave a gap in the store).
    fn put_txs(&self, network: &Network, txs: &[TxRecord]) -> Result<(), StoreError>;
    fn unsettled_txs(&self, network: &Network) -> Result<Vec<TxRecord>, StoreError>;
    fn tx(&self, network: &Network, nonce: u64) -> Result<Option<TxRecord>, StoreError>;
    fn highest_nonce(&self, network: &Network) -> Result<Option<u64>, StoreError>;
}
