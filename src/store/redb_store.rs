//! [`Store`] on a redb file: each operation is one read snapshot or one queued write job, over
//! the typed tables of [`super::redb_tables`]; the bigger jobs live in [`super::redb_jobs`].

use super::asset_contracts::AssetContracts;
use super::records::{
    Account, Asset, AttachOutcome, ConfirmOutcome, Directory, IssuanceCheck, IssuanceOutcome,
    MintRecord, PassView, ReturnOutcome, Scan, TxRecord,
};
use super::redb_index::{self, link_mint, put_burn, put_deposit, put_mint, put_redemption, put_tx};
use super::redb_jobs;
use super::redb_open::{check_before_open, create_new, open_existing, unusable};
use super::redb_tables::{
    addr_key, asset_key, decode_hash, normalise_email, wallets, Snapshot, ACCOUNTS, ASSETS, BLOCKS,
    BURNS, CURSORS, DEPOSITS, MINTS, REDEMPTIONS, TXS,
};
use super::writer::{DbCell, Writer};
use super::{AccountKey, Pending, Select, Store, StoreError, TxSelect};
use alloy::primitives::{Address, B256};
use reconciler::{
    AlpacaAccountId, ClientId, IssuerRequestId, Journal, Network, ObservedBurn, ObservedDeposit,
    Redemption, Symbol, TokenizationRequestId,
};
use redb::backends::FileBackend;
use redb::{ReadTransaction, ReadableDatabase, StorageBackend, WriteTransaction};
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// The store on a redb file. Cheap to clone; [`RedbStore::close`] releases the file for every
/// clone.
#[derive(Clone)]
pub struct RedbStore {
    open: Arc<RwLock<Option<Open>>>,
    contracts: AssetContracts,
}

struct Open {
    cell: Arc<DbCell>,
    writer: Writer,
}

impl RedbStore {
    /// Opens (or creates) the store at `path`. A corrupt file, a file that is not ours, or one
    /// written by a newer schema is refused with a clear error and left untouched; a path that
    /// cannot be a store (a directory, no permission) is refused saying so. A new file is created
    /// readable and writable by its owner only (0600): it holds account links and signed
    /// transactions.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        Self::open_with(path, |file| file)
    }

    /// [`RedbStore::open`] with the file behind a backend of the caller's (tests wrap the file
    /// backend to fail writes as a full disk would). Every reopen after an I/O error uses it too.
    pub fn open_with<B, W>(path: &Path, wrap: W) -> Result<RedbStore, StoreError>
    where
        B: StorageBackend,
        W: Fn(FileBackend) -> B + Send + Sync + 'static,
    {
        let shown = path.display().to_string();
        let wrap = Arc::new(wrap);
        let existing = match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(StoreError::Unusable {
                    path: shown,
                    reason: "is a directory".into(),
                })
            }
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(unusable(&shown, &e)),
        };
        let db = if existing {
            check_before_open(path, &shown)?;
            open_existing(path, &shown, wrap.as_ref())?
        } else {
            create_new(path, &shown, wrap.as_ref())?
        };
        let reopen_path = path.to_path_buf();
        let reopen: super::writer::Reopen =
            Box::new(move || open_existing(&reopen_path, &shown, wrap.as_ref()));
        let cell = Arc::new(DbCell::new(db, reopen));
        let writer = Writer::start(cell.clone());
        Ok(RedbStore {
            open: Arc::new(RwLock::new(Some(Open { cell, writer }))),
            contracts: AssetContracts::default(),
        })
    }

    /// Releases the file for every handle (in-process restarts, tests, the report). Queued
    /// writes finish first; later calls fail with [`StoreError::Closed`].
    pub fn close(&self) {
        let taken = self
            .open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Dropping the writer finishes queued jobs and joins its thread; then the file closes.
        drop(taken);
    }

    /// After a write of the assets, committed or not: the asset contracts intake refuses as
    /// wallets are read again.
    pub(super) fn assets_changed(&self) {
        self.contracts.changed();
    }

    /// Runs `job` on one read snapshot.
    fn read<R>(
        &self,
        job: impl FnOnce(&ReadTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let db = {
            let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
            open.as_ref().ok_or(StoreError::Closed)?.cell.get()?
        };
        job(&db.begin_read()?)
    }

    /// Runs `job` in the next group commit and returns its result once that is durable.
    pub(super) fn write<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        open.as_ref().ok_or(StoreError::Closed)?.writer.write(job)
    }

    /// Writes `records` as they are, replacing any under their ids (tests and benches seed a
    /// store with it; intake goes through [`Store::submit_issuance_async`]).
    pub fn put_mints(&self, records: Vec<MintRecord>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for record in &records {
                put_mint(txn, record)?;
                link_mint(txn, record)?;
            }
            Ok(())
        })
    }

    /// Writes `redemptions` as they are, replacing any under their ids (tests and benches; a
    /// pass records new ones through [`Store::advance`]).
    pub fn put_redemptions(&self, redemptions: Vec<Redemption>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for r in &redemptions {
                put_redemption(txn, r)?;
            }
            Ok(())
        })
    }

    /// Every burn ever seen (tests, benches; a pass reads [`Store::pass_view`]).
    pub fn burns(&self) -> Result<Vec<ObservedBurn>, StoreError> {
        self.read(|txn| BURNS.all(txn))
    }
}

/// An update of one record: read, changed and written back with `put` (which keeps its
/// indexes) in one write transaction; `None` if there is no such record.
fn update<V>(
    store: &RedbStore,
    table: super::redb_tables::Records<&'static str, V, super::redb_tables::Indexed>,
    id: &IssuerRequestId,
    change: Box<dyn FnOnce(&mut V) + Send>,
    put: fn(&WriteTransaction, &V) -> Result<(), StoreError>,
) -> Result<Option<V>, StoreError>
where
    V: serde::de::DeserializeOwned + Send + 'static,
{
    let id = id.clone();
    store.write(move |txn| {
        let Some(mut record) = table.get(txn, id.as_str())? else {
            return Ok(None);
        };
        change(&mut record);
        put(txn, &record)?;
        Ok(Some(record))
    })
}

impl Store for RedbStore {
    fn health(&self) -> Result<(), StoreError> {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        match open.as_ref().ok_or(StoreError::Closed)?.cell.broken() {
            Some(reason) => Err(StoreError::Storage(reason)),
            None => Ok(()),
        }
    }

    fn register_account(&self, email: &str) -> Result<Account, StoreError> {
        let email = normalise_email(email);
        self.write(move |txn| redb_jobs::register(txn, &email))
    }

    fn link_account(
        &self,
        email: &str,
        account_number: &str,
    ) -> Result<Option<(Account, bool)>, StoreError> {
        let (email, number) = (email.to_owned(), account_number.to_owned());
        self.write(move |txn| redb_jobs::link_account(txn, &email, number))
    }

    fn attach_alpaca_account(
        &self,
        client_id: &ClientId,
        alpaca_account_id: &AlpacaAccountId,
    ) -> Result<AttachOutcome, StoreError> {
        let (client_id, wanted) = (client_id.clone(), alpaca_account_id.clone());
        self.write(move |txn| redb_jobs::attach_alpaca_account(txn, &client_id, wanted))
    }

    fn add_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError> {
        let client = client_id.as_str().to_owned();
        self.write(move |txn| redb_jobs::add_wallet(txn, &client, wallet))
    }

    fn remove_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError> {
        let client = client_id.as_str().to_owned();
        self.write(move |txn| redb_jobs::remove_wallet(txn, &client, wallet))
    }

    fn put_asset(&self, asset: &Asset) -> Result<(), StoreError> {
        let asset = asset.clone();
        let written = self.write(move |txn| {
            ASSETS.put(txn, &asset_key(&asset.underlying, &asset.network), &asset)
        });
        self.assets_changed();
        written
    }

    fn set_frozen(&self, underlying: &Symbol, frozen: bool) -> Result<usize, StoreError> {
        let underlying = underlying.clone();
        let written = self.write(move |txn| redb_jobs::set_frozen(txn, &underlying, frozen));
        self.assets_changed();
        written
    }

    fn account(&self, key: AccountKey<'_>) -> Result<Option<Account>, StoreError> {
        self.read(|txn| redb_jobs::account(txn, key))
    }

    fn directory(&self) -> Result<Directory, StoreError> {
        self.read(|txn| {
            Ok(Directory {
                accounts: ACCOUNTS.all(txn)?,
                wallets: wallets(txn)?,
                assets: ASSETS.all(txn)?,
            })
        })
    }

    fn assets(&self) -> Result<Vec<Asset>, StoreError> {
        self.read(|txn| ASSETS.all(txn))
    }

    fn is_asset_contract(&self, address: Address) -> Result<bool, StoreError> {
        self.contracts.contains(address, || {
            Ok(self
                .assets()?
                .iter()
                .flat_map(|a| [a.vault, a.receipt, a.authorizer])
                .collect())
        })
    }

    fn asset(&self, underlying: &Symbol, network: &Network) -> Result<Option<Asset>, StoreError> {
        self.read(|txn| ASSETS.get(txn, &asset_key(underlying, network)))
    }

    fn submit_issuance_async(
        &self,
        record: MintRecord,
        check: Option<IssuanceCheck>,
    ) -> Pending<IssuanceOutcome> {
        let open = self.open.read().unwrap_or_else(PoisonError::into_inner);
        let Some(open) = open.as_ref() else {
            return Box::pin(std::future::ready(Err(StoreError::Closed)));
        };
        let rx = open
            .writer
            .submit(move |txn| redb_jobs::submit_issuance(txn, &record, check.as_ref()));
        Box::pin(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
    }

    fn confirm_issuance(
        &self,
        tokenization_request_id: &TokenizationRequestId,
        issuer_request_id: &IssuerRequestId,
        journal: Journal,
        reason: Option<String>,
        confirmed_at_ms: u64,
    ) -> Result<ConfirmOutcome, StoreError> {
        let (trid, irid) = (tokenization_request_id.clone(), issuer_request_id.clone());
        self.write(move |txn| {
            redb_jobs::confirm_issuance(txn, &trid, &irid, journal, reason, confirmed_at_ms)
        })
    }

    fn mints(&self, which: Select<'_>) -> Result<Vec<MintRecord>, StoreError> {
        self.read(|txn| match which {
            Select::One(id) => Ok(MINTS.get(txn, id.as_str())?.into_iter().collect()),
            Select::Active => redb_index::active_mints(txn),
            Select::All => MINTS.all(txn),
        })
    }

    fn update_mint(
        &self,
        id: &IssuerRequestId,
        change: super::MintChange,
    ) -> Result<Option<MintRecord>, StoreError> {
        update(self, MINTS, id, change, put_mint)
    }

    fn mark_callbacks_attempted(
        &self,
        ids: &[IssuerRequestId],
    ) -> Result<Vec<IssuerRequestId>, StoreError> {
        let ids = ids.to_vec();
        self.write(move |txn| {
            let mut marked = Vec::new();
            for id in ids {
                let Some(mut record) = MINTS.get(txn, id.as_str())? else {
                    continue;
                };
                if record.intent.callback == reconciler::Callback::NotSent {
                    record.intent.callback = reconciler::Callback::Attempted;
                    put_mint(txn, &record)?;
                    marked.push(id);
                }
            }
            Ok(marked)
        })
    }

    fn insert_mint_if_absent(&self, record: MintRecord) -> Result<bool, StoreError> {
        self.write(move |txn| redb_jobs::insert_mint_if_absent(txn, &record))
    }

    fn redemptions(&self, which: Select<'_>) -> Result<Vec<Redemption>, StoreError> {
        self.read(|txn| match which {
            Select::One(id) => Ok(REDEMPTIONS.get(txn, id.as_str())?.into_iter().collect()),
            Select::Active => redb_index::active_redemptions(txn),
            Select::All => REDEMPTIONS.all(txn),
        })
    }

    fn update_redemption(
        &self,
        id: &IssuerRequestId,
        change: super::RedemptionChange,
    ) -> Result<Option<Redemption>, StoreError> {
        update(self, REDEMPTIONS, id, change, put_redemption)
    }

    fn request_return(&self, id: &IssuerRequestId) -> Result<ReturnOutcome, StoreError> {
        let id = id.clone();
        self.write(move |txn| redb_jobs::request_return(txn, &id))
    }

    fn pass_view(&self) -> Result<PassView, StoreError> {
        self.read(redb_index::pass_view)
    }

    fn deposits(&self) -> Result<Vec<ObservedDeposit>, StoreError> {
        self.read(|txn| DEPOSITS.all(txn))
    }

    fn record_receipts(
        &self,
        deposits: Vec<ObservedDeposit>,
        burns: Vec<ObservedBurn>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            for d in &deposits {
                put_deposit(txn, d)?;
            }
            for b in &burns {
                put_burn(txn, b)?;
            }
            Ok(())
        })
    }

    fn cursor(&self, network: &Network, vault: Address) -> Result<Option<u64>, StoreError> {
        self.read(|txn| {
            let table = txn.table(CURSORS)?;
            let cursor = table
                .get((network.as_str(), addr_key(vault).as_str()))?
                .map(|v| v.value());
            Ok(cursor)
        })
    }

    fn block_hashes(&self, network: &Network) -> Result<Vec<(u64, B256)>, StoreError> {
        let net = network.as_str();
        self.read(|txn| {
            let table = txn.table(BLOCKS)?;
            let mut out = Vec::new();
            for entry in table.range((net, 0)..=(net, u64::MAX))? {
                let (k, v) = entry?;
                let number = k.value().1;
                out.push((number, decode_hash(net, number, v.value())?));
            }
            Ok(out)
        })
    }

    fn advance(
        &self,
        network: &Network,
        vault: Address,
        block_number: u64,
        scan: Scan,
        hashes: Vec<(u64, B256)>,
    ) -> Result<(), StoreError> {
        let network = network.clone();
        self.write(move |txn| {
            redb_jobs::advance(txn, &network, vault, block_number, &scan, &hashes)
        })
    }

    fn rewind(&self, network: &Network, from_block: u64) -> Result<(), StoreError> {
        let network = network.clone();
        self.write(move |txn| redb_jobs::rewind(txn, &network, from_block))
    }

    fn put_txs(&self, network: &Network, txs: &[TxRecord]) -> Result<(), StoreError> {
        let (network, txs) = (network.clone(), txs.to_vec());
        self.write(move |txn| {
            for tx in &txs {
                put_tx(txn, &network, tx)?;
            }
            Ok(())
        })
    }

    fn txs(&self, network: &Network, which: TxSelect) -> Result<Vec<TxRecord>, StoreError> {
        let net = network.as_str();
        self.read(|txn| match which {
            TxSelect::Nonce(nonce) => Ok(TXS.get(txn, (net, nonce))?.into_iter().collect()),
            TxSelect::Unsettled => redb_index::unsettled_txs(txn, network),
            TxSelect::Last => Ok(TXS
                .last(txn, (net, 0)..=(net, u64::MAX))?
                .into_iter()
                .collect()),
        })
    }
}
