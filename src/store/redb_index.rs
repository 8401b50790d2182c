//! The index tables that let a pass read only what is live: active mints, the deposits of each
//! mint, deposits no mint record claims, open redemptions, the burns of each redemption and our
//! unsettled transactions. A pass then costs what is in flight, not what ever happened.
//!
//! Each index is written in the same write transaction as the record it indexes, by the one
//! function here that writes that kind of record ([`put_mint`], [`put_deposit`],
//! [`put_redemption`], [`put_burn`], [`put_tx`]) or drops it ([`drop_deposits_from`],
//! [`drop_burns_from`], [`remove_redemption`]): a record and its index entries commit together or
//! not at all, so there is no second source of truth that could drift. [`rebuild`] derives every
//! index from the records alone (the migration from schema version 1, which had none).

use super::records::Asset;
use super::records::{MintRecord, PassView, TxRecord};
use super::redb_tables::{
    addr_key, burn_key, decode, deposit_key, encode, put_raw, ASSETS, BLOCKS, BURNS, CURSORS,
    DEPOSITS, LEGACY_BLOCKS, LEGACY_CURSORS, LEGACY_TXS, MINTS, REDEMPTIONS, TXS,
};
use super::StoreError;
use alloy::primitives::Address;
use reconciler::{Network, ObservedBurn, ObservedDeposit, Redemption};
use redb::{
    MultimapTableDefinition, ReadTransaction, ReadableMultimapTable, ReadableTable,
    TableDefinition, WriteTransaction,
};
use std::collections::BTreeSet;

/// issuer_request_id of every mint record that [`MintRecord::is_active`].
pub(super) const ACTIVE_MINTS: TableDefinition<&str, ()> = TableDefinition::new("active_mints");
/// issuer_request_id -> key in `deposits` of every deposit tagged with it (claimed or not).
pub(super) const DEPOSITS_BY_MINT: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("deposits_by_mint");
/// Key in `deposits` of every deposit whose issuer_request_id has no mint record: what the plan
/// recovers a lost intent from.
pub(super) const UNCLAIMED_DEPOSITS: TableDefinition<&str, ()> =
    TableDefinition::new("unclaimed_deposits");
/// Id of every redemption whose state is not final.
pub(super) const ACTIVE_REDEMPTIONS: TableDefinition<&str, ()> =
    TableDefinition::new("active_redemptions");
/// Redemption id -> key in `burns` of every burn tagged with it.
pub(super) const BURNS_BY_REDEMPTION: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("burns_by_redemption");
/// (network, nonce) of every transaction of ours not yet settled.
pub(super) const UNSETTLED_TXS: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("network_unsettled_txs");
/// Schema version 2 and older: nonce alone (see [`LEGACY_TXS`]).
const LEGACY_UNSETTLED_TXS: TableDefinition<u64, ()> = TableDefinition::new("unsettled_txs");

/// Creates every index table (empty), so read transactions can open them.
pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(ACTIVE_MINTS)?;
    txn.open_multimap_table(DEPOSITS_BY_MINT)?;
    txn.open_table(UNCLAIMED_DEPOSITS)?;
    txn.open_table(ACTIVE_REDEMPTIONS)?;
    txn.open_multimap_table(BURNS_BY_REDEMPTION)?;
    txn.open_table(UNSETTLED_TXS)?;
    Ok(())
}

/// Writes a mint record with its index entries: active or not, and its deposits no longer
/// unclaimed (a record now exists for their issuer_request_id). Mint records are never deleted.
pub(super) fn put_mint(txn: &WriteTransaction, record: &MintRecord) -> Result<(), StoreError> {
    let id = record.intent.issuer_request_id.as_str();
    put_raw(txn, MINTS, id, record)?;
    {
        let mut active = txn.open_table(ACTIVE_MINTS)?;
        if record.is_active() {
            active.insert(id, ())?;
        } else {
            active.remove(id)?;
        }
    }
    let keys = {
        let by_mint = txn.open_multimap_table(DEPOSITS_BY_MINT)?;
        let mut keys = Vec::new();
        for key in by_mint.get(id)? {
            keys.push(key?.value().to_owned());
        }
        keys
    };
    let mut unclaimed = txn.open_table(UNCLAIMED_DEPOSITS)?;
    for key in keys {
        unclaimed.remove(key.as_str())?;
    }
    Ok(())
}

/// Writes a deposit with its index entries. The key names the log (block, transaction, log
/// index), so a rewrite under it is the same log with the same tag: nothing to unindex.
pub(super) fn put_deposit(txn: &WriteTransaction, d: &ObservedDeposit) -> Result<(), StoreError> {
    let key = deposit_key(d);
    let id = d.issuer_request_id.as_str();
    put_raw(txn, DEPOSITS, &key, d)?;
    txn.open_multimap_table(DEPOSITS_BY_MINT)?
        .insert(id, key.as_str())?;
    let claimed = txn.open_table(MINTS)?.get(id)?.is_some();
    let mut unclaimed = txn.open_table(UNCLAIMED_DEPOSITS)?;
    if claimed {
        unclaimed.remove(key.as_str())?;
    } else {
        unclaimed.insert(key.as_str(), ())?;
    }
    Ok(())
}

/// Forgets every deposit on `vaults` from `block_number` on, with its index entries (a reorg).
pub(super) fn drop_deposits_from(
    txn: &WriteTransaction,
    block_number: u64,
    vaults: &BTreeSet<Address>,
) -> Result<(), StoreError> {
    let from = format!("{block_number:020}");
    let dropped = {
        let deposits = txn.open_table(DEPOSITS)?;
        let mut dropped = Vec::new();
        for entry in deposits.range(from.as_str()..)? {
            let (k, v) = entry?;
            // The tag is needed to unindex it: one that does not decode stops the rewind.
            let d: ObservedDeposit = decode(k.value(), v.value())?;
            if vaults.contains(&d.vault) {
                dropped.push((k.value().to_owned(), d.issuer_request_id));
            }
        }
        dropped
    };
    let mut deposits = txn.open_table(DEPOSITS)?;
    let mut by_mint = txn.open_multimap_table(DEPOSITS_BY_MINT)?;
    let mut unclaimed = txn.open_table(UNCLAIMED_DEPOSITS)?;
    for (key, id) in dropped {
        deposits.remove(key.as_str())?;
        by_mint.remove(id.as_str(), key.as_str())?;
        unclaimed.remove(key.as_str())?;
    }
    Ok(())
}

/// Writes a redemption, active until its state is final.
pub(super) fn put_redemption(txn: &WriteTransaction, r: &Redemption) -> Result<(), StoreError> {
    let id = r.id.as_str();
    put_raw(txn, REDEMPTIONS, id, r)?;
    let mut active = txn.open_table(ACTIVE_REDEMPTIONS)?;
    if r.state.is_final() {
        active.remove(id)?;
    } else {
        active.insert(id, ())?;
    }
    Ok(())
}

/// Forgets a redemption (a reorg dropped its transfer before anything was done for it).
pub(super) fn remove_redemption(txn: &WriteTransaction, id: &str) -> Result<(), StoreError> {
    txn.open_table(REDEMPTIONS)?.remove(id)?;
    txn.open_table(ACTIVE_REDEMPTIONS)?.remove(id)?;
    Ok(())
}

/// The active redemptions, for the reorg rewind (only a `Detected` one can be forgotten).
pub(super) fn active_redemptions_in(txn: &WriteTransaction) -> Result<Vec<Redemption>, StoreError> {
    let ids = {
        let active = txn.open_table(ACTIVE_REDEMPTIONS)?;
        let mut ids = Vec::new();
        for entry in active.iter()? {
            ids.push(entry?.0.value().to_owned());
        }
        ids
    };
    let redemptions = txn.open_table(REDEMPTIONS)?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let value = redemptions.get(id.as_str())?.ok_or_else(|| dangling(&id))?;
        out.push(decode(&id, value.value())?);
    }
    Ok(out)
}

/// Writes a burn with its index entry. As for deposits, a key names one log.
pub(super) fn put_burn(txn: &WriteTransaction, b: &ObservedBurn) -> Result<(), StoreError> {
    let key = burn_key(b);
    put_raw(txn, BURNS, &key, b)?;
    txn.open_multimap_table(BURNS_BY_REDEMPTION)?
        .insert(b.redemption_id.as_str(), key.as_str())?;
    Ok(())
}

/// Forgets every burn on `vaults` from `block_number` on, with its index entry (a reorg).
pub(super) fn drop_burns_from(
    txn: &WriteTransaction,
    block_number: u64,
    vaults: &BTreeSet<Address>,
) -> Result<(), StoreError> {
    let from = format!("{block_number:020}");
    let dropped = {
        let burns = txn.open_table(BURNS)?;
        let mut dropped = Vec::new();
        for entry in burns.range(from.as_str()..)? {
            let (k, v) = entry?;
            let b: ObservedBurn = decode(k.value(), v.value())?;
            if vaults.contains(&b.vault) {
                dropped.push((k.value().to_owned(), b.redemption_id));
            }
        }
        dropped
    };
    let mut burns = txn.open_table(BURNS)?;
    let mut by_redemption = txn.open_multimap_table(BURNS_BY_REDEMPTION)?;
    for (key, id) in dropped {
        burns.remove(key.as_str())?;
        by_redemption.remove(id.as_str(), key.as_str())?;
    }
    Ok(())
}

/// Writes one of our transactions on `network`, tracked until it is settled.
pub(super) fn put_tx(
    txn: &WriteTransaction,
    network: &Network,
    tx: &TxRecord,
) -> Result<(), StoreError> {
    let key = (network.as_str(), tx.nonce);
    txn.open_table(TXS)?.insert(key, encode(tx)?.as_slice())?;
    let mut unsettled = txn.open_table(UNSETTLED_TXS)?;
    if tx.settled.is_some() {
        unsettled.remove(key)?;
    } else {
        unsettled.insert(key, ())?;
    }
    Ok(())
}

/// Why the move to per-network keys could not be made.
pub(super) enum MigrateError {
    Store(StoreError),
    /// Rows exist that cannot be given a network: the file's assets name none, or several.
    Ambiguous(String),
}

impl<E: Into<StoreError>> From<E> for MigrateError {
    fn from(e: E) -> Self {
        MigrateError::Store(e.into())
    }
}

/// Schema 2 -> 3: a file written when an issuer served one network holds cursors, block hashes
/// and transactions of that network alone, keyed without it. They move under the network of the
/// file's assets (cursors under the network of their vault's asset). A file whose assets name
/// several networks while it holds transactions or block hashes is refused, not guessed at:
/// a transaction filed under the wrong network could let its action be sent again.
/// Returns the network the rows were given, if any.
pub(super) fn to_networks(txn: &WriteTransaction) -> Result<Option<String>, MigrateError> {
    let assets: Vec<Asset> = {
        let table = txn.open_table(ASSETS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(decode(k.value(), v.value())?);
        }
        out
    };
    let networks: BTreeSet<&str> = assets.iter().map(|a| a.network.as_str()).collect();
    let legacy_txs: Vec<(u64, Vec<u8>)> = {
        let table = txn.open_table(LEGACY_TXS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value(), v.value().to_vec()));
        }
        out
    };
    let legacy_blocks: Vec<(u64, Vec<u8>)> = {
        let table = txn.open_table(LEGACY_BLOCKS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value(), v.value().to_vec()));
        }
        out
    };
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
        let mut txs = txn.open_table(TXS)?;
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

/// The vaults of `network`'s assets.
pub(super) fn vaults_on(
    txn: &WriteTransaction,
    network: &Network,
) -> Result<BTreeSet<Address>, StoreError> {
    let table = txn.open_table(ASSETS)?;
    let mut out = BTreeSet::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let asset: Asset = decode(k.value(), v.value())?;
        if asset.network == *network {
            out.insert(asset.vault);
        }
    }
    Ok(out)
}

/// Empties every index and derives it again from the records: what a file written before the
/// indexes existed gets once, at open. Returns how many entries each index got, for the log.
pub(super) fn rebuild(txn: &WriteTransaction) -> Result<[(&'static str, usize); 6], StoreError> {
    txn.delete_table(ACTIVE_MINTS)?;
    txn.delete_multimap_table(DEPOSITS_BY_MINT)?;
    txn.delete_table(UNCLAIMED_DEPOSITS)?;
    txn.delete_table(ACTIVE_REDEMPTIONS)?;
    txn.delete_multimap_table(BURNS_BY_REDEMPTION)?;
    txn.delete_table(LEGACY_UNSETTLED_TXS)?;
    create_tables(txn)?;
    let mut counts = [
        ("active_mints", 0),
        ("deposits_by_mint", 0),
        ("unclaimed_deposits", 0),
        ("active_redemptions", 0),
        ("burns_by_redemption", 0),
        ("unsettled_txs", 0),
    ];
    {
        let mints = txn.open_table(MINTS)?;
        let mut active = txn.open_table(ACTIVE_MINTS)?;
        for entry in mints.iter()? {
            let (k, v) = entry?;
            let record: MintRecord = decode(k.value(), v.value())?;
            if record.is_active() {
                active.insert(k.value(), ())?;
                counts[0].1 += 1;
            }
        }
    }
    {
        let mints = txn.open_table(MINTS)?;
        let deposits = txn.open_table(DEPOSITS)?;
        let mut by_mint = txn.open_multimap_table(DEPOSITS_BY_MINT)?;
        let mut unclaimed = txn.open_table(UNCLAIMED_DEPOSITS)?;
        for entry in deposits.iter()? {
            let (k, v) = entry?;
            let d: ObservedDeposit = decode(k.value(), v.value())?;
            let id = d.issuer_request_id.as_str();
            by_mint.insert(id, k.value())?;
            counts[1].1 += 1;
            if mints.get(id)?.is_none() {
                unclaimed.insert(k.value(), ())?;
                counts[2].1 += 1;
            }
        }
    }
    {
        let redemptions = txn.open_table(REDEMPTIONS)?;
        let mut active = txn.open_table(ACTIVE_REDEMPTIONS)?;
        for entry in redemptions.iter()? {
            let (k, v) = entry?;
            let r: Redemption = decode(k.value(), v.value())?;
            if !r.state.is_final() {
                active.insert(k.value(), ())?;
                counts[3].1 += 1;
            }
        }
    }
    {
        let burns = txn.open_table(BURNS)?;
        let mut by_redemption = txn.open_multimap_table(BURNS_BY_REDEMPTION)?;
        for entry in burns.iter()? {
            let (k, v) = entry?;
            let b: ObservedBurn = decode(k.value(), v.value())?;
            by_redemption.insert(b.redemption_id.as_str(), k.value())?;
            counts[4].1 += 1;
        }
    }
    {
        // Only a version 1 file is rebuilt: its transactions are still keyed by nonce alone.
        let txs = txn.open_table(LEGACY_TXS)?;
        let mut unsettled = txn.open_table(LEGACY_UNSETTLED_TXS)?;
        for entry in txs.iter()? {
            let (k, v) = entry?;
            let tx: TxRecord = decode(&k.value().to_string(), v.value())?;
            if tx.settled.is_none() {
                unsettled.insert(k.value(), ())?;
                counts[5].1 += 1;
            }
        }
    }
    Ok(counts)
}

/// An index entry whose record is missing: a bug (they are written together) or a damaged file.
fn dangling(key: &str) -> StoreError {
    StoreError::Decode {
        key: key.to_owned(),
        detail: "an index entry points to no record".into(),
    }
}

/// What one pass reads, from one snapshot: the active mints and their deposits, the unclaimed
/// deposits, the open redemptions and their burns. Each list is in its table's key order, as a
/// full scan filtered would give it.
pub(super) fn pass_view(txn: &ReadTransaction) -> Result<PassView, StoreError> {
    let mut deposit_keys = BTreeSet::new();
    let mut mints = Vec::new();
    {
        let records = txn.open_table(MINTS)?;
        let active = txn.open_table(ACTIVE_MINTS)?;
        let by_mint = txn.open_multimap_table(DEPOSITS_BY_MINT)?;
        for entry in active.iter()? {
            let (k, _) = entry?;
            let id = k.value();
            let value = records.get(id)?.ok_or_else(|| dangling(id))?;
            mints.push(decode::<MintRecord>(id, value.value())?);
            for key in by_mint.get(id)? {
                deposit_keys.insert(key?.value().to_owned());
            }
        }
        for entry in txn.open_table(UNCLAIMED_DEPOSITS)?.iter()? {
            deposit_keys.insert(entry?.0.value().to_owned());
        }
    }
    let deposits = read_keys(txn, DEPOSITS, &deposit_keys)?;
    let mut burn_keys = BTreeSet::new();
    let mut redemptions = Vec::new();
    {
        let records = txn.open_table(REDEMPTIONS)?;
        let by_redemption = txn.open_multimap_table(BURNS_BY_REDEMPTION)?;
        for entry in txn.open_table(ACTIVE_REDEMPTIONS)?.iter()? {
            let (k, _) = entry?;
            let id = k.value();
            let value = records.get(id)?.ok_or_else(|| dangling(id))?;
            redemptions.push(decode::<Redemption>(id, value.value())?);
            for key in by_redemption.get(id)? {
                burn_keys.insert(key?.value().to_owned());
            }
        }
    }
    let burns = read_keys(txn, BURNS, &burn_keys)?;
    Ok(PassView {
        mints,
        deposits,
        redemptions,
        burns,
    })
}

/// The records under `keys` (in key order) of a JSON table.
fn read_keys<V: serde::de::DeserializeOwned>(
    txn: &ReadTransaction,
    table: super::redb_tables::Json,
    keys: &BTreeSet<String>,
) -> Result<Vec<V>, StoreError> {
    let table = txn.open_table(table)?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let value = table.get(key.as_str())?.ok_or_else(|| dangling(key))?;
        out.push(decode(key, value.value())?);
    }
    Ok(out)
}

/// The active mint records, in issuer_request_id order.
pub(super) fn active_mints(txn: &ReadTransaction) -> Result<Vec<MintRecord>, StoreError> {
    let records = txn.open_table(MINTS)?;
    let mut out = Vec::new();
    for entry in txn.open_table(ACTIVE_MINTS)?.iter()? {
        let (k, _) = entry?;
        let value = records.get(k.value())?.ok_or_else(|| dangling(k.value()))?;
        out.push(decode(k.value(), value.value())?);
    }
    Ok(out)
}

/// Our transactions on `network` not yet settled, in nonce order.
pub(super) fn unsettled_txs(
    txn: &ReadTransaction,
    network: &Network,
) -> Result<Vec<TxRecord>, StoreError> {
    let records = txn.open_table(TXS)?;
    let mut out = Vec::new();
    let net = network.as_str();
    for entry in txn
        .open_table(UNSETTLED_TXS)?
        .range((net, 0)..=(net, u64::MAX))?
    {
        let nonce = entry?.0.value().1;
        let key = format!("{net}/{nonce}");
        let value = records.get((net, nonce))?.ok_or_else(|| dangling(&key))?;
        out.push(decode(&key, value.value())?);
    }
    Ok(out)
}
