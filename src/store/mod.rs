//! The redb file: a cache of what the chain and Alpaca say, plus the facts that live nowhere else
//! (account links, the wallet whitelist, the asset list, accepted intents, our signed transactions).
//!
//! Every write goes through one writer thread that groups the jobs waiting for it into a single
//! two-phase, fsynced transaction ([`writer`]): a caller is answered only after its job is on disk,
//! and many concurrent callers share one fsync.

mod asset_contracts;
mod growth;
mod records;
mod redb_index;
mod redb_jobs;
mod redb_open;
mod redb_shared;
mod redb_store;
mod redb_tables;
mod writer;

pub use records::{
    Account, Asset, AttachOutcome, CallbackRefusal, ConfirmOutcome, Directory, IssuanceCheck,
    IssuanceOutcome, IssuanceRefusal, MintProblem, MintProgress, MintRecord, PassView,
    ReturnOutcome, Scan, Settled, TxRecord, TxVariant, MINT_QTY_MAX_DEFAULT, SCHEMA_VERSION,
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

/// Each way a caller names an AP's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKey<'a> {
    /// Our client id (what Alpaca's `client_external_account_id` carries).
    Client(&'a ClientId),
    /// The email an operator registered it under (normalised before the lookup).
    Email(&'a str),
    /// The AP's Alpaca account UUID, once an operator attached it.
    Alpaca(&'a AlpacaAccountId),
    /// A whitelisted wallet: the account of the client it belongs to. A stored owner that does
    /// not parse is an error, never "nobody": a redemption from a whitelisted wallet must not be
    /// taken for an unknown sender's.
    Wallet(Address),
}

/// Which mints or redemptions to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select<'a> {
    /// The one under this issuer_request_id (redemption id), if any.
    One(&'a IssuerRequestId),
    /// Those still needing the reconciler ([`MintRecord::is_active`], a redemption not final),
    /// read through their index: the cost follows what is in flight.
    Active,
    /// Every one ever recorded: for operators, never for a pass (it grows with history).
    All,
}

/// Which of our transactions on one network to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxSelect {
    /// The one at this nonce, if any.
    Nonce(u64),
    /// Those not yet settled, in nonce order (through their index).
    Unsettled,
    /// The one at the highest nonce we ever signed.
    Last,
}

/// What a pass or a handler needs from the cache. Small on purpose: a faulty double is a short
/// test type, and redb stays behind it. The required methods are the domain operations; the
/// provided ones are shorthands over them. [`RedbStore`] adds what only tests, benches, the
/// report and HA need (closing, bulk seeding, the shared directory).
pub trait Store: Send + Sync {
    /// `Err` while the store cannot write (a disk error it has not yet recovered from): what
    /// `/readyz` reports. A store that cannot fail this way is always healthy.
    fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // The directory: accounts, their wallets and the asset list (operators and Alpaca write it).

    /// Registers an AP by email (normalised: trimmed, lower case). Idempotent per email.
    fn register_account(&self, email: &str) -> Result<Account, StoreError>;
    /// Links the account of `email` to Alpaca's account number: `Ok(None)` for an unknown email,
    /// `Some((account, false))` when it was already linked.
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
    /// Whitelists `wallet` for `client_id`; `false` if the wallet belongs to another client.
    fn add_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError>;
    /// Removes `wallet` from `client_id`'s whitelist; `false` if it was not theirs.
    fn remove_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError>;
    /// Inserts or replaces the asset for (underlying, network).
    fn put_asset(&self, asset: &Asset) -> Result<(), StoreError>;
    /// Freezes or unfreezes minting of `underlying` on every network; the number of assets changed.
    fn set_frozen(&self, underlying: &Symbol, frozen: bool) -> Result<usize, StoreError>;
    /// The account `key` names, if any.
    fn account(&self, key: AccountKey<'_>) -> Result<Option<Account>, StoreError>;
    /// The whole directory from one snapshot: operators' listings, HA's shared copy.
    fn directory(&self) -> Result<Directory, StoreError>;
    /// The asset list alone: what a pass and most handlers read.
    fn assets(&self) -> Result<Vec<Asset>, StoreError> {
        Ok(self.directory()?.assets)
    }
    /// Whether `address` is a vault, receipt or authorizer of a listed asset (never an AP's
    /// wallet).
    fn is_asset_contract(&self, address: Address) -> Result<bool, StoreError> {
        Ok(self
            .assets()?
            .iter()
            .any(|a| [a.vault, a.receipt, a.authorizer].contains(&address)))
    }
    /// The asset of `underlying` on `network`, if any.
    fn asset(&self, underlying: &Symbol, network: &Network) -> Result<Option<Asset>, StoreError> {
        Ok(self
            .assets()?
            .into_iter()
            .find(|a| a.underlying == *underlying && a.network == *network))
    }

    // Mint intents.

    /// Records an accepted issuance, or finds the one already under its tokenization_request_id:
    /// queued at once, answered when durable. With a `check`, a new intent is written only if it
    /// still holds inside the write transaction; a repeat of an accepted one is answered as
    /// before whatever changed since.
    fn submit_issuance_async(
        &self,
        record: MintRecord,
        check: Option<IssuanceCheck>,
    ) -> Pending<IssuanceOutcome>;
    /// [`Store::submit_issuance_async`] without a check, waiting on this thread until durable
    /// (tests, benches, tools).
    fn submit_issuance(&self, record: MintRecord) -> Result<IssuanceOutcome, StoreError> {
        futures::executor::block_on(self.submit_issuance_async(record, None))
    }
    /// Records Alpaca's journal outcome for a mint; `confirmed_at_ms` (Unix milliseconds, from
    /// the caller's clock) is kept when it completes the journal.
    fn confirm_issuance(
        &self,
        tokenization_request_id: &TokenizationRequestId,
        issuer_request_id: &IssuerRequestId,
        journal: Journal,
        reason: Option<String>,
        confirmed_at_ms: u64,
    ) -> Result<ConfirmOutcome, StoreError>;
    /// The mints `which` selects, in issuer_request_id order.
    fn mints(&self, which: Select<'_>) -> Result<Vec<MintRecord>, StoreError>;
    /// The mint under `issuer_request_id`, if any.
    fn mint(&self, issuer_request_id: &IssuerRequestId) -> Result<Option<MintRecord>, StoreError> {
        Ok(self.mints(Select::One(issuer_request_id))?.pop())
    }
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

    // Redemptions.

    /// The redemptions `which` selects, in id order.
    fn redemptions(&self, which: Select<'_>) -> Result<Vec<Redemption>, StoreError>;
    /// The redemption under `id`, if any.
    fn redemption(&self, id: &IssuerRequestId) -> Result<Option<Redemption>, StoreError> {
        Ok(self.redemptions(Select::One(id))?.pop())
    }
    /// Changes one redemption inside a single write transaction; `None` if there is none.
    fn update_redemption(
        &self,
        id: &IssuerRequestId,
        change: RedemptionChange,
    ) -> Result<Option<Redemption>, StoreError>;
    /// An operator asks to send a flagged redemption's tokens back to its sender.
    fn request_return(&self, id: &IssuerRequestId) -> Result<ReturnOutcome, StoreError>;

    // What the chain showed. Each network has its own cursors, reorg window and nonces.

    /// What one reconcile pass works on, read from one snapshot through index tables: its cost
    /// follows the active items, whatever the history holds.
    fn pass_view(&self) -> Result<PassView, StoreError>;
    /// Every deposit ever seen (the receipts a burn may spend; a pass reads
    /// [`Store::pass_view`] for the rest).
    fn deposits(&self) -> Result<Vec<ObservedDeposit>, StoreError>;
    /// Records the deposits and burns our own transactions' receipts showed, in one transaction
    /// (a log query may have missed them). A log already recorded is written again unchanged.
    fn record_receipts(
        &self,
        deposits: Vec<ObservedDeposit>,
        burns: Vec<ObservedBurn>,
    ) -> Result<(), StoreError>;
    /// Last block of `network` scanned for `vault` (inclusive), if any.
    fn cursor(&self, network: &Network, vault: Address) -> Result<Option<u64>, StoreError>;
    /// Block hashes we saw on `network`, newest last.
    fn block_hashes(&self, network: &Network) -> Result<Vec<(u64, B256)>, StoreError>;
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
    /// A reorg on `network` from `from_block`: forgets the observations and block hashes from
    /// there on and pulls the cursors back below it, in one transaction, so the range is scanned
    /// again; our transactions settled in it are tracked again.
    fn rewind(&self, network: &Network, from_block: u64) -> Result<(), StoreError>;

    // Our transactions, per network: two chains' nonce 0 are two transactions.

    /// Records `txs` (each replacing the one at its nonce) in one write transaction, durable
    /// before this returns.
    fn put_txs(&self, network: &Network, txs: &[TxRecord]) -> Result<(), StoreError>;
    /// [`Store::put_txs`] of one transaction.
    fn put_tx(&self, network: &Network, tx: &TxRecord) -> Result<(), StoreError> {
        self.put_txs(network, std::slice::from_ref(tx))
    }
    /// The transactions on `network` `which` selects, in nonce order.
    fn txs(&self, network: &Network, which: TxSelect) -> Result<Vec<TxRecord>, StoreError>;
    /// The transaction at `nonce` on `network`, if any.
    fn tx(&self, network: &Network, nonce: u64) -> Result<Option<TxRecord>, StoreError> {
        Ok(self.txs(network, TxSelect::Nonce(nonce))?.pop())
    }
    /// Our transactions on `network` not yet settled, in nonce order.
    fn unsettled_txs(&self, network: &Network) -> Result<Vec<TxRecord>, StoreError> {
        self.txs(network, TxSelect::Unsettled)
    }
    /// The highest nonce we signed on `network`, if any.
    fn highest_nonce(&self, network: &Network) -> Result<Option<u64>, StoreError> {
        Ok(self.txs(network, TxSelect::Last)?.pop().map(|tx| tx.nonce))
    }
}
