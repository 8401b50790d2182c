//! Opening, creating and migrating the redb file: a file that is not ours, damaged, or written by
//! a newer schema is refused before anything could change it; an older one is brought up to
//! [`SCHEMA_VERSION`] in one transaction.

use super::growth::Allocating;
use super::records::{TxRecord, SCHEMA_VERSION};
use super::redb_index::{self, LEGACY_UNSETTLED_TXS, UNSETTLED_TXS};
use super::redb_tables::{
    addr_key, decode, Snapshot, ACCOUNTS, ACCOUNT_BY_EMAIL, ASSETS, BLOCKS, BURNS, CURSORS,
    DEPOSITS, LEGACY_BLOCKS, LEGACY_CURSORS, LEGACY_TXS, META, MINTS, MINT_BY_TRID, REDEMPTIONS,
    TXS, WALLETS,
};
use super::StoreError;
use redb::backends::FileBackend;
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend,
    TableDefinition, WriteTransaction,
};
use std::collections::BTreeSet;
use std::path::Path;

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
pub(super) fn check_before_open(path: &Path, shown: &str) -> Result<(), StoreError> {
    let file = std::fs::File::open(path).map_err(|e| unusable(shown, &e))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(shown, e))?;
    match Builder::new().open_read_only_with_backend(backend) {
        Ok(ro) => {
            check_schema(shown, &ro)?;
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
    let allocate = file.try_clone().map_err(|e| unusable(shown, &e))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(shown, e))?;
    let db = Builder::new()
        .create_with_backend(Allocating::new(wrap(backend), allocate))
        .map_err(|e| open_error(shown, e))?;
    check_schema(shown, &db)?;
    migrate(shown, &db)?;
    Ok(db)
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
    let allocate = file.try_clone().map_err(|e| unusable(shown, &e))?;
    let backend = FileBackend::new(file).map_err(|e| open_error(shown, e))?;
    let db = Builder::new()
        .create_with_backend(Allocating::new(wrap(backend), allocate))
        .map_err(|e| open_error(shown, e))?;
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    {
        let mut meta = txn.open_table(META)?;
        meta.insert("schema_version", SCHEMA_VERSION)?;
        for table in [ACCOUNTS.definition(), ASSETS.definition()] {
            txn.open_table(table)?;
        }
        for table in [
            MINTS.definition(),
            DEPOSITS.definition(),
            REDEMPTIONS.definition(),
            BURNS.definition(),
        ] {
            txn.open_table(table)?;
        }
        for table in [ACCOUNT_BY_EMAIL, WALLETS, MINT_BY_TRID] {
            txn.open_table(table)?;
        }
        txn.open_table(CURSORS)?;
        txn.open_table(BLOCKS)?;
        txn.open_table(TXS.definition())?;
    }
    redb_index::create_tables(&txn)?;
    txn.commit()?;
    Ok(db)
}

fn check_schema(path: &str, db: &impl ReadableDatabase) -> Result<(), StoreError> {
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
        None => Err(corrupt("no schema version".into())),
        Some(_) => Ok(()),
    }
}

/// Brings a file of an older schema up to [`SCHEMA_VERSION`] in one two-phase write transaction:
/// a crash during it leaves the file as it was, and the next open migrates again.
/// Version 1 -> 2 builds the pass's index tables from the records ([`redb_index::rebuild`]);
/// 2 -> 3 moves cursors, block hashes and transactions under the network of the file's assets
/// ([`to_networks`]); 3 -> 4 changes no row (the request id index keeps its entries, which stay
/// true; new mints under their derived id just get none); 4 -> 5 moves the active mints under
/// order 0 of the ordered set ([`redb_index::order_active_mints`]).
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
    let mut counts = if found < 2 {
        redb_index::rebuild(&txn)?
    } else {
        [("none", 0); 6]
    };
    if (2..5).contains(&found) {
        counts[0] = (
            "active_mints_in_order",
            redb_index::order_active_mints(&txn)?,
        );
    }
    let network = if found < 3 {
        to_networks(&txn).map_err(|detail| match detail {
            MigrateError::Store(e) => e,
            MigrateError::Ambiguous(detail) => StoreError::Corrupt {
                path: shown.to_owned(),
                detail,
            },
        })?
    } else {
        None
    };
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
        "store: schema migrated (indexes built where missing; cursors, block hashes and transactions now per network; active mints in order)"
    );
    Ok(())
}

/// Why the move to per-network keys could not be made.
enum MigrateError {
    Store(StoreError),
    /// Rows exist that cannot be given a network: the file's assets name none, or several.
    Ambiguous(String),
}

impl<E: Into<StoreError>> From<E> for MigrateError {
    fn from(e: E) -> Self {
        MigrateError::Store(e.into())
    }
}

/// Every row of a legacy table keyed by block or nonce, raw.
fn legacy_rows(
    txn: &WriteTransaction,
    table: TableDefinition<'static, u64, &'static [u8]>,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let table = txn.table(table)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        out.push((k.value(), v.value().to_vec()));
    }
    Ok(out)
}

/// Schema 2 -> 3: a file written when an issuer served one network holds cursors, block hashes
/// and transactions of that network alone, keyed without it. They move under the network of the
/// file's assets (cursors under the network of their vault's asset). A file whose assets name
/// several networks while it holds transactions or block hashes is refused, not guessed at:
/// a transaction filed under the wrong network could let its action be sent again.
/// Returns the network the rows were given, if any.
fn to_networks(txn: &WriteTransaction) -> Result<Option<String>, MigrateError> {
    let assets = ASSETS.all(txn)?;
    let networks: BTreeSet<&str> = assets.iter().map(|a| a.network.as_str()).collect();
    let legacy_txs = legacy_rows(txn, LEGACY_TXS)?;
    let legacy_blocks = legacy_rows(txn, LEGACY_BLOCKS)?;
    let legacy_cursors: Vec<(String, u64)> = {
        let table = txn.open_table(LEGACY_CURSORS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), v.value()));
        }
        out
    };
    let single = match networks.len() {
        1 => networks.iter().next().map(|n| (*n).to_owned()),
        _ if legacy_txs.is_empty() && legacy_blocks.is_empty() => None,
        0 => {
            return Err(MigrateError::Ambiguous(
                "the file holds transactions or block hashes but no asset names their network"
                    .to_owned(),
            ))
        }
        _ => {
            return Err(MigrateError::Ambiguous(format!(
                "the file holds transactions of a single-network issuer but its assets are on several networks ({}); open it with an issuer of schema version 2 and settle them first",
                networks.into_iter().collect::<Vec<_>>().join(", ")
            )))
        }
    };
    if let Some(network) = &single {
        let network = network.as_str();
        let mut txs = txn.open_table(TXS.definition())?;
        let mut unsettled = txn.open_table(UNSETTLED_TXS)?;
        for (nonce, bytes) in &legacy_txs {
            let tx: TxRecord = decode(&nonce.to_string(), bytes)?;
            txs.insert((network, *nonce), bytes.as_slice())?;
            if tx.settled.is_none() {
                unsettled.insert((network, *nonce), ())?;
            }
        }
        let mut blocks = txn.open_table(BLOCKS)?;
        for (number, hash) in &legacy_blocks {
            blocks.insert((network, *number), hash.as_slice())?;
        }
    }
    {
        let mut cursors = txn.open_table(CURSORS)?;
        for (vault, block) in &legacy_cursors {
            for asset in assets.iter().filter(|a| addr_key(a.vault) == *vault) {
                cursors.insert((asset.network.as_str(), vault.as_str()), *block)?;
            }
        }
    }
    txn.delete_table(LEGACY_TXS)?;
    txn.delete_table(LEGACY_UNSETTLED_TXS)?;
    txn.delete_table(LEGACY_BLOCKS)?;
    txn.delete_table(LEGACY_CURSORS)?;
    Ok(single)
}
