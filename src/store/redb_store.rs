//! [`Store`] on a redb file.

use super::records::{
    Account, Asset, AttachOutcome, ConfirmOutcome, IssuanceCheck, IssuanceOutcome, IssuanceRefusal,
    MintRecord, ReturnOutcome, Scan, TxRecord, SCHEMA_VERSION,
};
use super::writer::{DbCell, Writer};
use super::{Store, StoreError};
use alloy::primitives::{Address, B256};
use reconciler::{
    AlpacaAccountId, ClientId, IssuerRequestId, Journal, Network, ObservedBurn, ObservedDeposit,
    Redemption, RedemptionState, Symbol, TokenizationRequestId,
};
use redb::backends::FileBackend;
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition, WriteTransaction,
};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::{Arc, RwLock};

type Json = TableDefinition<'static, &'static str, &'static [u8]>;

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const ACCOUNTS: Json = TableDefinition::new("accounts");
const ACCOUNT_BY_EMAIL: TableDefinition<&str, &str> = TableDefinition::new("account_by_email");
const WALLETS: TableDefinition<&str, &str> = TableDefinition::new("wallets");
const ASSETS: Json = TableDefinition::new("assets");
const MINTS: Json = TableDefinition::new("mints");
const MINT_BY_TRID: TableDefinition<&str, &str> = TableDefinition::new("mint_by_trid");
const DEPOSITS: Json = TableDefinition::new("deposits");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const TXS: TableDefinition<u64, &[u8]> = TableDefinition::new("txs");
const REDEMPTIONS: Json = TableDefinition::new("redemptions");
const BURNS: Json = TableDefinition::new("burns");

/// Block hashes kept for reorg detection.
const BLOCK_WINDOW: u64 = 256;

/// The store on a redb file. Cheap to clone; [`Store::close`] releases the file for every clone.
#[derive(Clone)]
pub struct RedbStore {
    open: Arc<RwLock<Option<Open>>>,
}

struct Open {
    cell: Arc<DbCell>,
    writer: Writer,
}

fn encode<V: Serialize>(value: &V) -> Vec<u8> {
    // Our records are plain structs of strings and numbers: serialisation cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<V, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

fn addr_key(address: Address) -> String {
    format!("{address:#x}")
}

fn deposit_key(d: &ObservedDeposit) -> String {
    format!("{:020}/{:#x}/{:06}", d.block_number, d.tx_hash, d.log_index)
}

fn burn_key(b: &ObservedBurn) -> String {
    format!("{:020}/{:#x}/{:06}", b.block_number, b.tx_hash, b.log_index)
}

fn asset_key(underlying: &Symbol, network: &Network) -> String {
    format!("{}/{}", underlying.as_str(), network.as_str())
}

/// Normalises an email as operators and Alpaca may spell it differently.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
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
        Ok(Self::started(db, reopen))
    }

    fn started(db: Database, reopen: super::writer::Reopen) -> RedbStore {
        let cell = Arc::new(DbCell::new(db, reopen));
        let writer = Writer::start(cell.clone());
        RedbStore {
            open: Arc::new(RwLock::new(Some(Open { cell, writer }))),
        }
    }

    fn db(&self) -> Result<Arc<Database>, StoreError> {
        let open = self
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.as_ref().ok_or(StoreError::Closed)?.cell.get()
    }

    fn write<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let open = self
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.as_ref().ok_or(StoreError::Closed)?.writer.write(job)
    }

    fn read_json<V: DeserializeOwned>(
        &self,
        table: Json,
        key: &str,
    ) -> Result<Option<V>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(table)?;
        match table.get(key)? {
            Some(v) => Ok(Some(decode(key, v.value())?)),
            None => Ok(None),
        }
    }

    fn read_all<V: DeserializeOwned>(&self, table: Json) -> Result<Vec<V>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }
}

/// A path that cannot be opened, said plainly ("permission denied", "is a directory").
fn unusable(path: &str, e: &std::io::Error) -> StoreError {
    let reason = match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "is a directory".to_owned(),
        _ => e.to_string(),
    };
    StoreError::Unusable {
        path: path.to_owned(),
        reason,
    }
}

/// An I/O failure about the path (permissions, not a file) says so; anything else redb finds in
/// the file (not redb, damaged) is corruption.
fn open_error(path: &str, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::IsADirectory
                    | std::io::ErrorKind::NotADirectory
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            unusable(path, &io)
        }
        DatabaseError::Storage(s) => StoreError::Corrupt {
            path: path.to_owned(),
            detail: s.to_string(),
        },
        other => StoreError::Open {
            path: path.to_owned(),
            source: other,
        },
    }
}

/// Checks an existing file read-only first, so a file that is not ours (or is newer) is refused
/// before a writable open could repair or change anything in it.
fn check_before_open(path: &Path, shown: &str) -> Result<(), StoreError> {
    let file = std::fs::File::open(path).map_err(|e| unusable(shown, &e))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(shown, e))?;
    match Builder::new().open_read_only_with_backend(backend) {
        Ok(ro) => {
            check_schema(shown, &ro, true)?;
            drop(ro);
            Ok(())
        }
        // Needs recovery after a crash: only a writable open can repair; the schema is checked
        // right after, before anything is written.
        Err(DatabaseError::RepairAborted) => Ok(()),
        Err(e) => Err(open_error(shown, e)),
    }
}

fn open_existing<B: StorageBackend>(
    path: &Path,
    shown: &str,
    wrap: &(dyn Fn(FileBackend) -> B + Send + Sync),
) -> Result<Database, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| unusable(shown, &e))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(shown, e))?;
    let db = Builder::new()
        .create_with_backend(wrap(backend))
        .map_err(|e| open_error(shown, e))?;
    check_schema(shown, &db, true)?;
    Ok(db)
}

fn create_new<B: StorageBackend>(
    path: &Path,
    shown: &str,
    wrap: &(dyn Fn(FileBackend) -> B + Send + Sync),
) -> Result<Database, StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| unusable(shown, &e))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(shown, e))?;
    let db = Builder::new()
        .create_with_backend(wrap(backend))
        .map_err(|e| open_error(shown, e))?;
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("schema_version", SCHEMA_VERSION)?;
        for table in [ACCOUNTS, ASSETS, MINTS, DEPOSITS, REDEMPTIONS, BURNS] {
            txn.open_table(table)?;
        }
        for table in [ACCOUNT_BY_EMAIL, WALLETS, MINT_BY_TRID] {
            txn.open_table(table)?;
        }
        txn.open_table(CURSORS)?;
        txn.open_table(BLOCKS)?;
        txn.open_table(TXS)?;
    }
    txn.commit()?;
    Ok(db)
}

fn check_schema(
    path: &str,
    db: &impl ReadableDatabase,
    must_exist: bool,
) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let txn = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(e) => return Err(corrupt(format!("no schema table ({e})"))),
    };
    let found = meta
        .get("schema_version")
        .map_err(|e| corrupt(e.to_string()))?
        .map(|v| v.value());
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        }),
        None if must_exist => Err(corrupt("no schema version".into())),
        Some(_) | None => Ok(()),
    }
}

fn get_json<V: DeserializeOwned>(
    txn: &WriteTransaction,
    table: Json,
    key: &str,
) -> Result<Option<V>, StoreError> {
    let table = txn.open_table(table)?;
    let value = table.get(key)?;
    match value {
        Some(v) => Ok(Some(decode(key, v.value())?)),
        None => Ok(None),
    }
}

fn put_json<V: Serialize>(
    txn: &WriteTransaction,
    table: Json,
    key: &str,
    value: &V,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(table)?;
    table.insert(key, encode(value).as_slice())?;
    Ok(())
}

fn new_client_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Store for RedbStore {
    fn close(&self) {
        let taken = self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Dropping the writer finishes queued jobs and joins its thread; then the file closes.
        drop(taken);
    }

    fn health(&self) -> Result<(), StoreError> {
        let open = self
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match open.as_ref().ok_or(StoreError::Closed)?.cell.broken() {
            Some(reason) => Err(StoreError::Storage(reason)),
            None => Ok(()),
        }
    }

    fn register_account(&self, email: &str) -> Result<Account, StoreError> {
        let email = normalise_email(email);
        self.write(move |txn| {
            let existing = {
                let by_email = txn.open_table(ACCOUNT_BY_EMAIL)?;
                let found = by_email.get(email.as_str())?.map(|v| v.value().to_owned());
                found
            };
            if let Some(id) = existing {
                return get_json::<Account>(txn, ACCOUNTS, &id)?.ok_or(StoreError::Decode {
                    key: id,
                    detail: "account index points nowhere".into(),
                });
            }
            let client_id = ClientId::parse(&new_client_id()).map_err(|e| StoreError::Decode {
                key: email.clone(),
                detail: e.to_string(),
            })?;
            let account = Account {
                client_id,
                email: email.clone(),
                account_number: None,
                alpaca_account_id: None,
            };
            put_json(txn, ACCOUNTS, account.client_id.as_str(), &account)?;
            txn.open_table(ACCOUNT_BY_EMAIL)?
                .insert(email.as_str(), account.client_id.as_str())?;
            Ok(account)
        })
    }

    fn account(&self, client_id: &ClientId) -> Result<Option<Account>, StoreError> {
        self.read_json(ACCOUNTS, client_id.as_str())
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read_all(ACCOUNTS)
    }

    fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
        let email = normalise_email(email);
        let id = {
            let txn = self.db()?.begin_read()?;
            let table = txn.open_table(ACCOUNT_BY_EMAIL)?;
            let found = table.get(email.as_str())?.map(|v| v.value().to_owned());
            found
        };
        match id {
            Some(id) => self.read_json(ACCOUNTS, &id),
            None => Ok(None),
        }
    }

    fn link_account(
        &self,
        email: &str,
        account_number: &str,
    ) -> Result<Option<(Account, bool)>, StoreError> {
        let email = normalise_email(email);
        let account_number = account_number.to_owned();
        self.write(move |txn| {
            let id = {
                let by_email = txn.open_table(ACCOUNT_BY_EMAIL)?;
                let found = by_email.get(email.as_str())?.map(|v| v.value().to_owned());
                found
            };
            let Some(id) = id else { return Ok(None) };
            let Some(mut account) = get_json::<Account>(txn, ACCOUNTS, &id)? else {
                return Ok(None);
            };
            if account.linked() {
                return Ok(Some((account, false)));
            }
            account.account_number = Some(account_number);
            put_json(txn, ACCOUNTS, &id, &account)?;
            Ok(Some((account, true)))
        })
    }

    fn attach_alpaca_account(
        &self,
        client_id: &ClientId,
        alpaca_account_id: &AlpacaAccountId,
    ) -> Result<AttachOutcome, StoreError> {
        let (client_id, wanted) = (client_id.clone(), alpaca_account_id.clone());
        self.write(move |txn| {
            // Accounts are few (one per AP): a scan inside the write keeps the UUID unique
            // without an index table older files lack.
            let accounts: Vec<Account> = {
                let table = txn.open_table(ACCOUNTS)?;
                let mut all = Vec::new();
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    all.push(decode(k.value(), v.value())?);
                }
                all
            };
            if let Some(owner) = accounts
                .iter()
                .find(|a| a.alpaca_account_id.as_ref() == Some(&wanted) && a.client_id != client_id)
            {
                return Ok(AttachOutcome::TakenBy(owner.client_id.clone()));
            }
            let Some(mut account) = accounts.into_iter().find(|a| a.client_id == client_id) else {
                return Ok(AttachOutcome::UnknownClient);
            };
            match &account.alpaca_account_id {
                Some(existing) if *existing == wanted => Ok(AttachOutcome::Attached(account)),
                Some(other) => Ok(AttachOutcome::HasOther(other.clone())),
                None => {
                    account.alpaca_account_id = Some(wanted);
                    put_json(txn, ACCOUNTS, account.client_id.as_str(), &account)?;
                    Ok(AttachOutcome::Attached(account))
                }
            }
        })
    }

    fn account_by_alpaca_id(
        &self,
        alpaca_account_id: &AlpacaAccountId,
    ) -> Result<Option<Account>, StoreError> {
        Ok(self
            .accounts()?
            .into_iter()
            .find(|a| a.alpaca_account_id.as_ref() == Some(alpaca_account_id)))
    }

    fn add_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError> {
        let client = client_id.as_str().to_owned();
        self.write(move |txn| {
            let mut wallets = txn.open_table(WALLETS)?;
            let key = addr_key(wallet);
            let owner = wallets.get(key.as_str())?.map(|v| v.value().to_owned());
            if let Some(owner) = owner {
                return Ok(owner == client);
            }
            wallets.insert(key.as_str(), client.as_str())?;
            Ok(true)
        })
    }

    fn remove_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError> {
        let client = client_id.as_str().to_owned();
        self.write(move |txn| {
            let mut wallets = txn.open_table(WALLETS)?;
            let key = addr_key(wallet);
            let owner = wallets.get(key.as_str())?.map(|v| v.value().to_owned());
            if owner.as_deref() == Some(client.as_str()) {
                wallets.remove(key.as_str())?;
                return Ok(true);
            }
            Ok(false)
        })
    }

    fn wallet_owner(&self, wallet: Address) -> Result<Option<ClientId>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(WALLETS)?;
        let owner = table
            .get(addr_key(wallet).as_str())?
            .map(|v| v.value().to_owned());
        Ok(owner.and_then(|o| ClientId::parse(&o).ok()))
    }

    fn wallets(&self) -> Result<Vec<(Address, ClientId)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(WALLETS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            if let (Ok(a), Ok(c)) = (k.value().parse::<Address>(), ClientId::parse(v.value())) {
                out.push((a, c));
            }
        }
        Ok(out)
    }

    fn put_asset(&self, asset: &Asset) -> Result<(), StoreError> {
        let asset = asset.clone();
        self.write(move |txn| {
            put_json(
                txn,
                ASSETS,
                &asset_key(&asset.underlying, &asset.network),
                &asset,
            )
        })
    }

    fn assets(&self) -> Result<Vec<Asset>, StoreError> {
        self.read_all(ASSETS)
    }

    fn asset(&self, underlying: &Symbol, network: &Network) -> Result<Option<Asset>, StoreError> {
        self.read_json(ASSETS, &asset_key(underlying, network))
    }

    fn set_frozen(&self, underlying: &Symbol, frozen: bool) -> Result<usize, StoreError> {
        let underlying = underlying.clone();
        self.write(move |txn| {
            let mut changed = Vec::new();
            {
                let table = txn.open_table(ASSETS)?;
                for entry in table.iter()? {
                    let (k, v) = entry?;
                    let mut asset: Asset = decode(k.value(), v.value())?;
                    if asset.underlying == underlying {
                        asset.frozen = frozen;
                        changed.push((k.value().to_owned(), asset));
                    }
                }
            }
            for (key, asset) in &changed {
                put_json(txn, ASSETS, key, asset)?;
            }
            Ok(changed.len())
        })
    }

    fn submit_issuance(&self, record: MintRecord) -> Result<IssuanceOutcome, StoreError> {
        self.write(move |txn| issuance_job(txn, &record, None))
    }

    fn submit_issuance_async(
        &self,
        record: MintRecord,
        check: IssuanceCheck,
    ) -> super::Pending<IssuanceOutcome> {
        let open = self
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(open) = open.as_ref() else {
            return Box::pin(std::future::ready(Err(StoreError::Closed)));
        };
        let rx = open
            .writer
            .submit(move |txn| issuance_job(txn, &record, Some(&check)));
        Box::pin(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
    }

    fn confirm_issuance(
        &self,
        tokenization_request_id: &TokenizationRequestId,
        issuer_request_id: &IssuerRequestId,
        journal: Journal,
        reason: Option<String>,
    ) -> Result<ConfirmOutcome, StoreError> {
        let trid = tokenization_request_id.clone();
        let irid = issuer_request_id.clone();
        self.write(move |txn| {
            let Some(mut record) = get_json::<MintRecord>(txn, MINTS, irid.as_str())? else {
                return Ok(ConfirmOutcome::Unknown);
            };
            if record.intent.tokenization_request_id != trid {
                return Ok(ConfirmOutcome::Mismatch);
            }
            match (record.intent.journal, journal) {
                (current, wanted) if current == wanted => Ok(ConfirmOutcome::Recorded),
                (Journal::Pending, wanted) => {
                    record.intent.journal = wanted;
                    record.reject_reason = reason;
                    record.confirmed_at_ms = (wanted == Journal::Completed).then(|| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    });
                    put_json(txn, MINTS, irid.as_str(), &record)?;
                    Ok(ConfirmOutcome::Recorded)
                }
                _ => Ok(ConfirmOutcome::Conflict),
            }
        })
    }

    fn mint(&self, issuer_request_id: &IssuerRequestId) -> Result<Option<MintRecord>, StoreError> {
        self.read_json(MINTS, issuer_request_id.as_str())
    }

    fn active_mints(&self) -> Result<Vec<MintRecord>, StoreError> {
        Ok(self
            .all_mints()?
            .into_iter()
            .filter(MintRecord::is_active)
            .collect())
    }

    fn all_mints(&self) -> Result<Vec<MintRecord>, StoreError> {
        self.read_all(MINTS)
    }

    fn update_mint(
        &self,
        id: &IssuerRequestId,
        change: super::MintChange,
    ) -> Result<Option<MintRecord>, StoreError> {
        let id = id.clone();
        self.write(move |txn| {
            let Some(mut record) = get_json::<MintRecord>(txn, MINTS, id.as_str())? else {
                return Ok(None);
            };
            change(&mut record);
            put_json(txn, MINTS, id.as_str(), &record)?;
            Ok(Some(record))
        })
    }

    fn insert_mint_if_absent(&self, record: MintRecord) -> Result<bool, StoreError> {
        self.write(move |txn| {
            let trid = record.intent.tokenization_request_id.as_str().to_owned();
            let taken = txn.open_table(MINT_BY_TRID)?.get(trid.as_str())?.is_some();
            if taken
                || get_json::<MintRecord>(txn, MINTS, record.intent.issuer_request_id.as_str())?
                    .is_some()
            {
                return Ok(false);
            }
            put_json(
                txn,
                MINTS,
                record.intent.issuer_request_id.as_str(),
                &record,
            )?;
            txn.open_table(MINT_BY_TRID)?
                .insert(trid.as_str(), record.intent.issuer_request_id.as_str())?;
            Ok(true)
        })
    }

    fn put_mints(&self, records: Vec<MintRecord>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for record in &records {
                put_json(txn, MINTS, record.intent.issuer_request_id.as_str(), record)?;
                txn.open_table(MINT_BY_TRID)?.insert(
                    record.intent.tokenization_request_id.as_str(),
                    record.intent.issuer_request_id.as_str(),
                )?;
            }
            Ok(())
        })
    }

    fn put_deposits(&self, deposits: Vec<ObservedDeposit>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for d in &deposits {
                put_json(txn, DEPOSITS, &deposit_key(d), d)?;
            }
            Ok(())
        })
    }

    fn deposits(&self) -> Result<Vec<ObservedDeposit>, StoreError> {
        self.read_all(DEPOSITS)
    }

    fn drop_observations_from(&self, block_number: u64) -> Result<(), StoreError> {
        self.write(move |txn| drop_from(txn, block_number))
    }

    fn cursor(&self, vault: Address) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CURSORS)?;
        let cursor = table.get(addr_key(vault).as_str())?.map(|v| v.value());
        Ok(cursor)
    }

    fn advance(
        &self,
        vault: Address,
        block_number: u64,
        scan: Scan,
        hashes: Vec<(u64, B256)>,
    ) -> Result<(), StoreError> {
        self.write(move |txn| {
            for d in &scan.deposits {
                put_json(txn, DEPOSITS, &deposit_key(d), d)?;
            }
            for b in &scan.burns {
                put_json(txn, BURNS, &burn_key(b), b)?;
            }
            for r in &scan.redemptions {
                if get_json::<Redemption>(txn, REDEMPTIONS, r.id.as_str())?.is_none() {
                    put_json(txn, REDEMPTIONS, r.id.as_str(), r)?;
                }
            }
            let mut blocks = txn.open_table(BLOCKS)?;
            for (number, hash) in &hashes {
                blocks.insert(*number, hash.as_slice())?;
            }
            let newest = blocks.last()?.map(|(k, _)| k.value());
            if let Some(newest) = newest {
                let floor = newest.saturating_sub(BLOCK_WINDOW);
                let old: Vec<u64> = blocks
                    .range(..floor)?
                    .filter_map(Result::ok)
                    .map(|(k, _)| k.value())
                    .collect();
                for number in old {
                    blocks.remove(number)?;
                }
            }
            txn.open_table(CURSORS)?
                .insert(addr_key(vault).as_str(), block_number)?;
            Ok(())
        })
    }

    fn redemptions(&self) -> Result<Vec<Redemption>, StoreError> {
        self.read_all(REDEMPTIONS)
    }

    fn redemption(&self, id: &IssuerRequestId) -> Result<Option<Redemption>, StoreError> {
        self.read_json(REDEMPTIONS, id.as_str())
    }

    fn update_redemption(
        &self,
        id: &IssuerRequestId,
        change: super::RedemptionChange,
    ) -> Result<Option<Redemption>, StoreError> {
        let id = id.clone();
        self.write(move |txn| {
            let Some(mut r) = get_json::<Redemption>(txn, REDEMPTIONS, id.as_str())? else {
                return Ok(None);
            };
            change(&mut r);
            put_json(txn, REDEMPTIONS, id.as_str(), &r)?;
            Ok(Some(r))
        })
    }

    fn put_redemptions(&self, redemptions: Vec<Redemption>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for r in &redemptions {
                put_json(txn, REDEMPTIONS, r.id.as_str(), r)?;
            }
            Ok(())
        })
    }

    fn burns(&self) -> Result<Vec<ObservedBurn>, StoreError> {
        self.read_all(BURNS)
    }

    fn put_burns(&self, burns: Vec<ObservedBurn>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for b in &burns {
                put_json(txn, BURNS, &burn_key(b), b)?;
            }
            Ok(())
        })
    }

    fn request_return(&self, id: &IssuerRequestId) -> Result<ReturnOutcome, StoreError> {
        let id = id.clone();
        self.write(move |txn| {
            let Some(mut r) = get_json::<Redemption>(txn, REDEMPTIONS, id.as_str())? else {
                return Ok(ReturnOutcome::Unknown);
            };
            match &mut r.state {
                RedemptionState::Flagged { anomaly, .. } if !anomaly.returnable() => {
                    Ok(ReturnOutcome::NotReturnable(anomaly.clone()))
                }
                RedemptionState::Flagged {
                    return_requested, ..
                } => {
                    if !*return_requested {
                        // An operator asking again starts the attempts afresh.
                        *return_requested = true;
                        r.failed_attempts = 0;
                        put_json(txn, REDEMPTIONS, id.as_str(), &r)?;
                    }
                    Ok(ReturnOutcome::Requested)
                }
                other => Ok(ReturnOutcome::NotFlagged(other.clone())),
            }
        })
    }

    fn rewind_cursors(&self, block_number: u64) -> Result<(), StoreError> {
        self.write(move |txn| drop_from(txn, block_number))
    }

    fn block_hashes(&self) -> Result<Vec<(u64, B256)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value(), B256::from_slice(v.value())));
        }
        Ok(out)
    }

    fn put_tx(&self, tx: &TxRecord) -> Result<(), StoreError> {
        let tx = tx.clone();
        self.write(move |txn| {
            txn.open_table(TXS)?
                .insert(tx.nonce, encode(&tx).as_slice())?;
            Ok(())
        })
    }

    fn unsettled_txs(&self) -> Result<Vec<TxRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TXS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let tx: TxRecord = decode(&k.value().to_string(), v.value())?;
            if tx.settled.is_none() {
                out.push(tx);
            }
        }
        Ok(out)
    }

    fn tx(&self, nonce: u64) -> Result<Option<TxRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TXS)?;
        let found = table.get(nonce)?;
        match found {
            Some(v) => Ok(Some(decode(&nonce.to_string(), v.value())?)),
            None => Ok(None),
        }
    }

    fn highest_nonce(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TXS)?;
        let last = table.last()?.map(|(k, _)| k.value());
        Ok(last)
    }
}

/// Forgets observations and block hashes from `block_number` on and pulls every cursor back
/// below it, so the range is scanned again. Our transactions settled in those blocks are tracked
/// again: a reorg deeper than the confirmations must re-observe them, not plan their actions anew.
fn drop_from(txn: &WriteTransaction, block_number: u64) -> Result<(), StoreError> {
    {
        let mut txs = txn.open_table(TXS)?;
        let mut unsettled = Vec::new();
        for entry in txs.iter()? {
            let (k, v) = entry?;
            let mut tx: TxRecord = decode(&k.value().to_string(), v.value())?;
            if tx
                .settled
                .as_ref()
                .is_some_and(|s| s.mined_block.is_some_and(|b| b >= block_number))
            {
                tx.settled = None;
                unsettled.push(tx);
            }
        }
        for tx in unsettled {
            txs.insert(tx.nonce, encode(&tx).as_slice())?;
        }
    }
    {
        let mut deposits = txn.open_table(DEPOSITS)?;
        let from = format!("{block_number:020}");
        let keys: Vec<String> = deposits
            .range(from.as_str()..)?
            .filter_map(Result::ok)
            .map(|(k, _)| k.value().to_owned())
            .collect();
        for key in keys {
            deposits.remove(key.as_str())?;
        }
    }
    {
        let mut burns = txn.open_table(BURNS)?;
        let from = format!("{block_number:020}");
        let keys: Vec<String> = burns
            .range(from.as_str()..)?
            .filter_map(Result::ok)
            .map(|(k, _)| k.value().to_owned())
            .collect();
        for key in keys {
            burns.remove(key.as_str())?;
        }
    }
    {
        // A transfer in a dropped block that nothing was done for yet is forgotten and found
        // again if it is still on chain; one Alpaca already has is kept (and logged by the caller).
        let mut redemptions = txn.open_table(REDEMPTIONS)?;
        let gone: Vec<String> = redemptions
            .iter()?
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let r: Redemption = serde_json::from_slice(v.value()).ok()?;
                (r.block_number >= block_number && r.state == RedemptionState::Detected)
                    .then(|| k.value().to_owned())
            })
            .collect();
        for key in gone {
            redemptions.remove(key.as_str())?;
        }
    }
    {
        let mut blocks = txn.open_table(BLOCKS)?;
        let numbers: Vec<u64> = blocks
            .range(block_number..)?
            .filter_map(Result::ok)
            .map(|(k, _)| k.value())
            .collect();
        for n in numbers {
            blocks.remove(n)?;
        }
    }
    let mut cursors = txn.open_table(CURSORS)?;
    let moved: Vec<(String, u64)> = cursors
        .iter()?
        .filter_map(Result::ok)
        .filter(|(_, v)| v.value() >= block_number)
        .map(|(k, _)| (k.value().to_owned(), block_number.saturating_sub(1)))
        .collect();
    for (key, value) in moved {
        cursors.insert(key.as_str(), value)?;
    }
    Ok(())
}

/// Records an issuance unless its tokenization_request_id is taken: then a repeat or a conflict.
fn issuance_job(
    txn: &WriteTransaction,
    record: &MintRecord,
    check: Option<&IssuanceCheck>,
) -> Result<IssuanceOutcome, StoreError> {
    let trid = record.intent.tokenization_request_id.as_str().to_owned();
    let existing = {
        let index = txn.open_table(MINT_BY_TRID)?;
        let found = index.get(trid.as_str())?.map(|v| v.value().to_owned());
        found
    };
    if let Some(irid) = existing {
        let old: Option<MintRecord> = get_json(txn, MINTS, &irid)?;
        return Ok(match old {
            Some(old) if old.fingerprint == record.fingerprint => {
                IssuanceOutcome::Repeat(old.intent.issuer_request_id)
            }
            _ => IssuanceOutcome::Conflict,
        });
    }
    if let Some(refusal) = check.map(|c| refused_in_txn(txn, c)).transpose()?.flatten() {
        return Ok(IssuanceOutcome::Refused(refusal));
    }
    let irid = record.intent.issuer_request_id.clone();
    put_json(txn, MINTS, irid.as_str(), record)?;
    txn.open_table(MINT_BY_TRID)?
        .insert(trid.as_str(), irid.as_str())?;
    Ok(IssuanceOutcome::Created(irid))
}

/// The refusal-table rules (token, eligibility, wallet, frozen) read inside the write
/// transaction: what the handler checked on its snapshot, now on the state being committed.
fn refused_in_txn(
    txn: &WriteTransaction,
    check: &IssuanceCheck,
) -> Result<Option<IssuanceRefusal>, StoreError> {
    let asset: Option<Asset> =
        get_json(txn, ASSETS, &asset_key(&check.underlying, &check.network))?;
    let Some(asset) = asset.filter(|a| a.token == check.token && a.vault == check.vault) else {
        return Ok(Some(IssuanceRefusal::InvalidToken));
    };
    let account: Option<Account> = get_json(txn, ACCOUNTS, check.client_id.as_str())?;
    if !account.is_some_and(|a| a.linked()) {
        return Ok(Some(IssuanceRefusal::NotEligible));
    }
    let owner = {
        let wallets = txn.open_table(WALLETS)?;
        let found = wallets
            .get(addr_key(check.wallet).as_str())?
            .map(|v| v.value().to_owned());
        found
    };
    if owner.as_deref() != Some(check.client_id.as_str()) {
        return Ok(Some(IssuanceRefusal::InvalidWallet));
    }
    if asset.frozen {
        return Ok(Some(IssuanceRefusal::Frozen));
    }
    Ok(None)
}
