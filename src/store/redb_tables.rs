//! The redb file's layout and the plumbing under [`super::RedbStore`]: table definitions, the
//! JSON encoding of records, keys, opening and creating the file with its schema check.

use super::records::SCHEMA_VERSION;
use super::StoreError;
use alloy::primitives::Address;
use reconciler::{Network, ObservedBurn, ObservedDeposit, Symbol};
use redb::backends::FileBackend;
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition, TableHandle, WriteTransaction,
};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

pub(super) type Json = TableDefinition<'static, &'static str, &'static [u8]>;

pub(super) const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
pub(super) const ACCOUNTS: Json = TableDefinition::new("accounts");
pub(super) const ACCOUNT_BY_EMAIL: TableDefinition<&str, &str> =
    TableDefinition::new("account_by_email");
pub(super) const WALLETS: TableDefinition<&str, &str> = TableDefinition::new("wallets");
pub(super) const ASSETS: Json = TableDefinition::new("assets");
pub(super) const MINTS: Json = TableDefinition::new("mints");
pub(super) const MINT_BY_TRID: TableDefinition<&str, &str> = TableDefinition::new("mint_by_trid");
pub(super) const DEPOSITS: Json = TableDefinition::new("deposits");
/// (network, vault) -> last block scanned: each network has its own cursors.
pub(super) const CURSORS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("network_cursors");
/// (network, block number) -> block hash: each network's own reorg window.
pub(super) const BLOCKS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("network_blocks");
/// (network, nonce) -> our transaction: two chains' nonce 0 are two transactions.
pub(super) const TXS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("network_txs");
/// Schema version 2 and older, one network per file: keyed by vault, block, nonce alone. Read
/// only by the migration to version 3, which moves their rows under the file's network.
pub(super) const LEGACY_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
pub(super) const LEGACY_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub(super) const LEGACY_TXS: TableDefinition<u64, &[u8]> = TableDefinition::new("txs");
pub(super) const REDEMPTIONS: Json = TableDefinition::new("redemptions");
pub(super) const BURNS: Json = TableDefinition::new("burns");

/// Block hashes kept for reorg detection.
pub(super) const BLOCK_WINDOW: u64 = 256;

pub(super) fn encode<V: Serialize>(value: &V) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Decode {
        key: String::new(),
        detail: format!("cannot encode a record: {e}"),
    })
}

pub(super) fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<V, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

pub(super) fn addr_key(address: Address) -> String {
    format!("{address:#x}")
}

pub(super) fn deposit_key(d: &ObservedDeposit) -> String {
    format!("{:020}/{:#x}/{:06}", d.block_number, d.tx_hash, d.log_index)
}

pub(super) fn burn_key(b: &ObservedBurn) -> String {
    format!("{:020}/{:#x}/{:06}", b.block_number, b.tx_hash, b.log_index)
}

pub(super) fn asset_key(underlying: &Symbol, network: &Network) -> String {
    format!("{}/{}", underlying.as_str(), network.as_str())
}

/// Normalises an email as operators and Alpaca may spell it differently.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// A path that cannot be opened, said plainly ("permission denied", "is a directory").
pub(super) fn unusable(path: &str, e: &std::io::Error) -> StoreError {
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
pub(super) fn open_error(path: &str, e: DatabaseError) -> StoreError {
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
pub(super) fn check_before_open(path: &Path, shown: &str) -> Result<(), StoreError> {
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

pub(super) fn open_existing<B: StorageBackend>(
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
    migrate(shown, &db)?;
    Ok(db)
}

/// Brings a file of an older schema up to [`SCHEMA_VERSION`] in one two-phase write transaction:
/// a crash during it leaves the file as it was, and the next open migrates again.
/// Version 1 -> 2 builds the pass's index tables from the records; 2 -> 3 moves cursors, block
/// hashes and transactions under the network of the file's assets ([`super::redb_index::to_networks`]).
fn migrate(shown: &str, db: &Database) -> Result<(), StoreError> {
    let found = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let found = meta.get("schema_version")?.map(|v| v.value());
        found
    };
    let Some(found) = found.filter(|v| *v < SCHEMA_VERSION) else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    let counts = if found < 2 {
        super::redb_index::rebuild(&txn)?
    } else {
        [("none", 0); 6]
    };
    let network = super::redb_index::to_networks(&txn).map_err(|detail| match detail {
        super::redb_index::MigrateError::Store(e) => e,
        super::redb_index::MigrateError::Ambiguous(detail) => StoreError::Corrupt {
            path: shown.to_owned(),
            detail,
        },
    })?;
    txn.open_table(META)?
        .insert("schema_version", SCHEMA_VERSION)?;
    txn.commit()?;
    tracing::info!(
        store = %shown,
        from = found,
        to = SCHEMA_VERSION,
        indexes = ?counts,
        network = ?network,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "store: schema migrated (indexes built where missing; cursors, block hashes and transactions now per network)"
    );
    Ok(())
}

pub(super) fn create_new<B: StorageBackend>(
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
    super::redb_index::create_tables(&txn)?;
    txn.commit()?;
    Ok(db)
}

pub(super) fn check_schema(
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

pub(super) fn get_json<V: DeserializeOwned>(
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

/// Writes a record of a table without index. Mints, deposits, redemptions and burns are written
/// only by [`super::redb_index`], which keeps their indexes in the same transaction.
pub(super) fn put_json<V: Serialize>(
    txn: &WriteTransaction,
    table: Json,
    key: &str,
    value: &V,
) -> Result<(), StoreError> {
    debug_assert!(
        ![MINTS, DEPOSITS, REDEMPTIONS, BURNS]
            .iter()
            .any(|t| t.name() == table.name()),
        "an indexed table is written through redb_index"
    );
    put_raw(txn, table, key, value)
}

/// [`put_json`] without the check: for [`super::redb_index`], which writes the indexes with it.
pub(super) fn put_raw<V: Serialize>(
    txn: &WriteTransaction,
    table: Json,
    key: &str,
    value: &V,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(table)?;
    table.insert(key, encode(value)?.as_slice())?;
    Ok(())
}

pub(super) fn new_client_id() -> String {
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
