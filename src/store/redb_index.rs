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
//!
//! A mint is found by Alpaca's id without an index when it is stored under the id derived from
//! it ([`IssuerRequestId::for_mint`], every intake): the link table holds only the others
//! ([`link_mint`], [`mint_for_trid`]), which spares each intake a random write in a second tree.

use super::records::{MintRecord, PassView, TxRecord};
use super::redb_tables::{
    block_key, burn_key, decode, deposit_key, encode, link, set_link, Snapshot, BURNS, DEPOSITS,
    LEGACY_TXS, MINTS, MINT_BY_TRID, REDEMPTIONS, TXS,
};
use super::StoreError;
use alloy::primitives::Address;
use reconciler::{
    IssuerRequestId, Network, ObservedBurn, ObservedDeposit, Redemption, TokenizationRequestId,
};
use redb::{
    MultimapTableDefinition, ReadTransaction, ReadableMultimapTable, ReadableTable,
    TableDefinition, WriteTransaction,
};
use std::collections::BTreeSet;

/// A set of ids: an id is in it or not.
type IdSet = TableDefinition<'static, &'static str, ()>;

/// (order, issuer_request_id) of every mint record that [`MintRecord::is_active`]. A mint gets
/// its order when it is first stored active: one more than the highest in the set, so intake's
/// inserts append at the tree's right edge. Keyed by the id alone (a hash), each of a commit's
/// issuances landed on a page of its own, one more page to copy, write and sync per issuance.
/// The order is kept in the mint's row ([`with_order`]); rows without one (written before
/// schema 5, or first stored finished) are under order 0.
const ACTIVE_MINTS: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("active_mints_in_order");
/// Schema version 4 and older: the active mints keyed by id alone. Read only by the migration
/// to version 5 ([`order_active_mints`]).
const LEGACY_ACTIVE_MINTS: IdSet = TableDefinition::new("active_mints");
/// What ends a mint row that has an order: `,"active_order":N}` closes its JSON object, so the
/// record decodes as it always did (unknown fields are ignored) and the order reads from the
/// row's end without decoding it.
const ORDER_FIELD: &[u8] = b",\"active_order\":";
/// issuer_request_id -> key in `deposits` of every deposit tagged with it (claimed or not).
const DEPOSITS_BY_MINT: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("deposits_by_mint");
/// Key in `deposits` of every deposit whose issuer_request_id has no mint record: what the plan
/// recovers a lost intent from.
const UNCLAIMED_DEPOSITS: IdSet = TableDefinition::new("unclaimed_deposits");
/// Id of every redemption whose state is not final.
const ACTIVE_REDEMPTIONS: IdSet = TableDefinition::new("active_redemptions");
/// Redemption id -> key in `burns` of every burn tagged with it.
const BURNS_BY_REDEMPTION: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("burns_by_redemption");
/// (network, nonce) of every transaction of ours not yet settled.
pub(super) const UNSETTLED_TXS: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("network_unsettled_txs");
/// Schema version 2 and older: nonce alone (see [`LEGACY_TXS`]).
pub(super) const LEGACY_UNSETTLED_TXS: TableDefinition<u64, ()> =
    TableDefinition::new("unsettled_txs");

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

/// Puts `id` in `set` or takes it out. Nothing is written when it is already in or out: an
/// insert of a key already there still copies and rewrites its page, one more random page for
/// every commit to write and sync.
fn set_member(
    txn: &WriteTransaction,
    set: IdSet,
    id: &str,
    member: bool,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(set)?;
    if table.get(id)?.is_some() == member {
        return Ok(());
    }
    if member {
        table.insert(id, ())?;
    } else {
        table.remove(id)?;
    }
    Ok(())
}

/// The ids in `set`, in order.
fn members(txn: &impl Snapshot, set: IdSet) -> Result<Vec<String>, StoreError> {
    let table = txn.table(set)?;
    let mut ids = Vec::new();
    for entry in table.iter()? {
        ids.push(entry?.0.value().to_owned());
    }
    Ok(ids)
}

/// The order a stored mint row carries ([`ORDER_FIELD`]), if it has one.
fn order_of(row: &[u8]) -> Option<u64> {
    let body = row.strip_suffix(b"}")?;
    let digits = body.len() - body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let (head, digits) = body.split_at(digits);
    if digits.is_empty() || !head.ends_with(ORDER_FIELD) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `json` (a mint record's object) with `order` kept at its end ([`ORDER_FIELD`]).
fn with_order(mut json: Vec<u8>, order: Option<u64>) -> Vec<u8> {
    // A record always has fields: `{}` cannot take a leading comma.
    if let (Some(order), Some(b'}')) = (order, json.last()) {
        if json.len() > 2 {
            json.pop();
            json.extend_from_slice(ORDER_FIELD);
            json.extend_from_slice(order.to_string().as_bytes());
            json.push(b'}');
        }
    }
    json
}

/// Writes a mint record with its index entries: active or not, and its deposits no longer
/// unclaimed (a record now exists for their issuer_request_id). Mint records are never deleted.
/// A row keeps the order it was given ([`ACTIVE_MINTS`]) whatever record replaces it: the order
/// is the store's, not the record's, so a record from elsewhere (HA, a rebuild) cannot move it.
pub(super) fn put_mint(txn: &WriteTransaction, record: &MintRecord) -> Result<(), StoreError> {
    let id = record.intent.issuer_request_id.as_str();
    let active = record.is_active();
    let mut mints = txn.open_table(MINTS.definition())?;
    let mut set = txn.open_table(ACTIVE_MINTS)?;
    let stored = mints.get(id)?.map(|row| order_of(row.value()));
    let order = match stored {
        Some(order) => order,
        None if active => Some(match set.last()? {
            Some((last, _)) => last.value().0.saturating_add(1),
            None => 1,
        }),
        None => None,
    };
    let row = with_order(encode::<&str, _>(&id, record)?, order);
    mints.insert(id, row.as_slice())?;
    // Keyed by the order the row now carries, read back from it: the set's key and the row can
    // never disagree, whatever `with_order` could not write.
    let key = (order_of(&row).unwrap_or(0), id);
    // Written only when membership changes: an update of an active mint (its deposit seen, its
    // callback marked, answered) leaves the set's page as it is.
    if set.get(key)?.is_some() != active {
        if active {
            set.insert(key, ())?;
        } else {
            set.remove(key)?;
        }
    }
    drop((mints, set));
    let keys = {
        let by_mint = txn.open_multimap_table(DEPOSITS_BY_MINT)?;
        let mut keys = Vec::new();
        for key in by_mint.get(id)? {
            keys.push(key?.value().to_owned());
        }
        keys
    };
    // A new mint (every intake) has no deposit yet: leave the table unopened.
    if !keys.is_empty() {
        let mut unclaimed = txn.open_table(UNCLAIMED_DEPOSITS)?;
        for key in keys {
            unclaimed.remove(key.as_str())?;
        }
    }
    Ok(())
}

/// Links Alpaca's id to `record` when the mint is stored under another id than the one derived
/// from it (a mint rebuilt from a deposit tagged with another id). A mint under its derived id
/// needs no link: [`mint_for_trid`] derives the id and finds it.
pub(super) fn link_mint(txn: &WriteTransaction, record: &MintRecord) -> Result<(), StoreError> {
    let (trid, irid) = (
        &record.intent.tokenization_request_id,
        &record.intent.issuer_request_id,
    );
    if *irid == IssuerRequestId::for_mint(trid) {
        return Ok(());
    }
    set_link(txn, MINT_BY_TRID, trid.as_str(), irid.as_str())
}

/// The mint recorded for Alpaca's `trid`: under the id derived from it, else under the id its
/// link names (files written before links were kept for the others alone have one for every
/// mint). A link pointing to no mint is an error, never "no such mint": a request would then be
/// recorded twice under two ids. So is a mint under the derived id that names another request.
pub(super) fn mint_for_trid(
    txn: &impl Snapshot,
    trid: &TokenizationRequestId,
) -> Result<Option<MintRecord>, StoreError> {
    let derived = IssuerRequestId::for_mint(trid);
    if let Some(record) = MINTS.get(txn, derived.as_str())? {
        if record.intent.tokenization_request_id == *trid {
            return Ok(Some(record));
        }
        // Rebuilt from a deposit whose tag and Alpaca's answer disagree: neither a repeat nor
        // free to take (writing under this id would overwrite that mint).
        return Err(StoreError::Decode {
            key: trid.as_str().to_owned(),
            detail: format!(
                "the mint under this request id's derived id ({derived}) names another request ({})",
                record.intent.tokenization_request_id
            ),
        });
    }
    let Some(irid) = link(txn, MINT_BY_TRID, trid.as_str())? else {
        return Ok(None);
    };
    MINTS
        .get(txn, &irid)?
        .ok_or_else(|| StoreError::Decode {
            key: trid.as_str().to_owned(),
            detail: format!("the request id index points to no mint ({irid})"),
        })
        .map(Some)
}

/// Whether a mint is recorded for `trid` or under `irid`, without decoding one: what a rebuild
/// checks before it adds a mint (any hit, even a dangling link, leaves the store as it is).
pub(super) fn mint_taken(
    txn: &impl Snapshot,
    trid: &TokenizationRequestId,
    irid: &IssuerRequestId,
) -> Result<bool, StoreError> {
    Ok(MINTS.contains(txn, irid.as_str())?
        || MINTS.contains(txn, IssuerRequestId::for_mint(trid).as_str())?
        || link(txn, MINT_BY_TRID, trid.as_str())?.is_some())
}

/// Writes a deposit with its index entries. The key names the log (block, transaction, log
/// index), so a rewrite under it is the same log with the same tag: nothing to unindex.
pub(super) fn put_deposit(txn: &WriteTransaction, d: &ObservedDeposit) -> Result<(), StoreError> {
    let key = deposit_key(d);
    let id = d.issuer_request_id.as_str();
    DEPOSITS.put_beside_index(txn, &key, d)?;
    txn.open_multimap_table(DEPOSITS_BY_MINT)?
        .insert(id, key.as_str())?;
    let claimed = MINTS.contains(txn, id)?;
    set_member(txn, UNCLAIMED_DEPOSITS, &key, !claimed)
}

/// Forgets every deposit on `vaults` from `block_number` on, with its index entries (a reorg).
/// The tag is needed to unindex one: a deposit that does not decode stops the rewind.
pub(super) fn drop_deposits_from(
    txn: &WriteTransaction,
    block_number: u64,
    vaults: &BTreeSet<Address>,
) -> Result<(), StoreError> {
    let from = block_key(block_number);
    let mut dropped = Vec::new();
    DEPOSITS.each_in(txn, from.as_str().., |key, d| {
        if vaults.contains(&d.vault) {
            dropped.push((key.to_owned(), d.issuer_request_id));
        }
        Ok(())
    })?;
    for (key, id) in dropped {
        DEPOSITS.remove(txn, &key)?;
        txn.open_multimap_table(DEPOSITS_BY_MINT)?
            .remove(id.as_str(), key.as_str())?;
        set_member(txn, UNCLAIMED_DEPOSITS, &key, false)?;
    }
    Ok(())
}

/// Writes a redemption, active until its state is final.
pub(super) fn put_redemption(txn: &WriteTransaction, r: &Redemption) -> Result<(), StoreError> {
    let id = r.id.as_str();
    REDEMPTIONS.put_beside_index(txn, id, r)?;
    set_member(txn, ACTIVE_REDEMPTIONS, id, !r.state.is_final())
}

/// Forgets a redemption (a reorg dropped its transfer before anything was done for it).
pub(super) fn remove_redemption(txn: &WriteTransaction, id: &str) -> Result<(), StoreError> {
    REDEMPTIONS.remove(txn, id)?;
    set_member(txn, ACTIVE_REDEMPTIONS, id, false)
}

/// Writes a burn with its index entry. As for deposits, a key names one log.
pub(super) fn put_burn(txn: &WriteTransaction, b: &ObservedBurn) -> Result<(), StoreError> {
    let key = burn_key(b);
    BURNS.put_beside_index(txn, &key, b)?;
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
    let from = block_key(block_number);
    let mut dropped = Vec::new();
    BURNS.each_in(txn, from.as_str().., |key, b| {
        if vaults.contains(&b.vault) {
            dropped.push((key.to_owned(), b.redemption_id));
        }
        Ok(())
    })?;
    for (key, id) in dropped {
        BURNS.remove(txn, &key)?;
        txn.open_multimap_table(BURNS_BY_REDEMPTION)?
            .remove(id.as_str(), key.as_str())?;
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
    TXS.put_beside_index(txn, key, tx)?;
    let mut unsettled = txn.open_table(UNSETTLED_TXS)?;
    if tx.settled.is_some() {
        unsettled.remove(key)?;
    } else {
        unsettled.insert(key, ())?;
    }
    Ok(())
}

/// Empties every index and derives it again from the records: what a file written before the
/// indexes existed gets once, at open. Returns how many entries each index got, for the log.
pub(super) fn rebuild(txn: &WriteTransaction) -> Result<[(&'static str, usize); 6], StoreError> {
    txn.delete_table(ACTIVE_MINTS)?;
    txn.delete_table(LEGACY_ACTIVE_MINTS)?;
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
    let mut active = Vec::new();
    {
        let mints = txn.open_table(MINTS.definition())?;
        for entry in mints.iter()? {
            let (id, row) = entry?;
            let (id, row) = (id.value(), row.value());
            if decode::<MintRecord>(id, row)?.is_active() {
                active.push((order_of(row).unwrap_or(0), id.to_owned()));
            }
        }
    }
    counts[0].1 = active.len();
    {
        let mut set = txn.open_table(ACTIVE_MINTS)?;
        for (order, id) in &active {
            set.insert((*order, id.as_str()), ())?;
        }
    }
    let mut deposits = Vec::new();
    DEPOSITS.each(txn, |key, d| {
        deposits.push((key.to_owned(), d.issuer_request_id));
        Ok(())
    })?;
    for (key, id) in &deposits {
        txn.open_multimap_table(DEPOSITS_BY_MINT)?
            .insert(id.as_str(), key.as_str())?;
        counts[1].1 += 1;
        if !MINTS.contains(txn, id.as_str())? {
            set_member(txn, UNCLAIMED_DEPOSITS, key, true)?;
            counts[2].1 += 1;
        }
    }
    let mut open = Vec::new();
    REDEMPTIONS.each(txn, |id, r| {
        if !r.state.is_final() {
            open.push(id.to_owned());
        }
        Ok(())
    })?;
    counts[3].1 = open.len();
    for id in &open {
        set_member(txn, ACTIVE_REDEMPTIONS, id, true)?;
    }
    let mut burns = Vec::new();
    BURNS.each(txn, |key, b| {
        burns.push((key.to_owned(), b.redemption_id));
        Ok(())
    })?;
    counts[4].1 = burns.len();
    for (key, id) in &burns {
        txn.open_multimap_table(BURNS_BY_REDEMPTION)?
            .insert(id.as_str(), key.as_str())?;
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

/// Schema 4 -> 5: the active mints, keyed by id alone, move under the order their rows carry:
/// none in a version 4 file, so 0; mints stored from now on get theirs. Returns how many moved.
pub(super) fn order_active_mints(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let ids = members(txn, LEGACY_ACTIVE_MINTS)?;
    {
        let mints = txn.open_table(MINTS.definition())?;
        let mut set = txn.open_table(ACTIVE_MINTS)?;
        for id in &ids {
            let row = mints.get(id.as_str())?.ok_or_else(|| StoreError::Decode {
                key: id.clone(),
                detail: "the active mints index points to no mint".into(),
            })?;
            set.insert((order_of(row.value()).unwrap_or(0), id.as_str()), ())?;
        }
    }
    txn.delete_table(LEGACY_ACTIVE_MINTS)?;
    Ok(ids.len())
}

/// The active mint records, in issuer_request_id order (the set is in acceptance order; the
/// records are read in id order, as a full scan filtered would give them).
pub(super) fn active_mints(txn: &impl Snapshot) -> Result<Vec<MintRecord>, StoreError> {
    let mut ids = Vec::new();
    for entry in txn.table(ACTIVE_MINTS)?.iter()? {
        ids.push(entry?.0.value().1.to_owned());
    }
    ids.sort_unstable();
    MINTS.expect_all(txn, ids.iter().map(String::as_str))
}

/// The redemptions not final, in id order. A record that does not decode is an error: forgetting
/// it, or keeping it without knowing what it is, could both lose a redemption.
pub(super) fn active_redemptions(txn: &impl Snapshot) -> Result<Vec<Redemption>, StoreError> {
    let ids = members(txn, ACTIVE_REDEMPTIONS)?;
    REDEMPTIONS.expect_all(txn, ids.iter().map(String::as_str))
}

/// Our transactions on `network` not yet settled, in nonce order.
pub(super) fn unsettled_txs(
    txn: &impl Snapshot,
    network: &Network,
) -> Result<Vec<TxRecord>, StoreError> {
    let net = network.as_str();
    let nonces = {
        let table = txn.table(UNSETTLED_TXS)?;
        let mut nonces = Vec::new();
        for entry in table.range((net, 0)..=(net, u64::MAX))? {
            nonces.push(entry?.0.value().1);
        }
        nonces
    };
    TXS.expect_all(txn, nonces.into_iter().map(|nonce| (net, nonce)))
}

/// What one pass reads, from one snapshot: the active mints and their deposits, the unclaimed
/// deposits, the open redemptions and their burns. Each list is in its table's key order, as a
/// full scan filtered would give it.
pub(super) fn pass_view(txn: &ReadTransaction) -> Result<PassView, StoreError> {
    let mints = active_mints(txn)?;
    let mut deposit_keys: BTreeSet<String> =
        members(txn, UNCLAIMED_DEPOSITS)?.into_iter().collect();
    {
        let by_mint = txn.open_multimap_table(DEPOSITS_BY_MINT)?;
        for mint in &mints {
            for key in by_mint.get(mint.intent.issuer_request_id.as_str())? {
                deposit_keys.insert(key?.value().to_owned());
            }
        }
    }
    let redemptions = active_redemptions(txn)?;
    let mut burn_keys = BTreeSet::new();
    {
        let by_redemption = txn.open_multimap_table(BURNS_BY_REDEMPTION)?;
        for r in &redemptions {
            for key in by_redemption.get(r.id.as_str())? {
                burn_keys.insert(key?.value().to_owned());
            }
        }
    }
    Ok(PassView {
        mints,
        deposits: DEPOSITS.expect_all(txn, deposit_keys.iter().map(String::as_str))?,
        redemptions,
        burns: BURNS.expect_all(txn, burn_keys.iter().map(String::as_str))?,
    })
}

#[cfg(test)]
mod tests {
    use super::{order_of, with_order};

    /// The order rides at the row's end and reads back without decoding the record; a row
    /// without one (schema 4, or stored finished) has none, whatever its last field looks like.
    #[test]
    fn a_rows_order_reads_back_and_a_row_without_one_has_none() {
        let record = br#"{"intent":{"qty":"1"},"problem":null}"#.to_vec();
        assert_eq!(order_of(&with_order(record.clone(), Some(42))), Some(42));
        assert_eq!(order_of(&with_order(record.clone(), None)), None);
        assert_eq!(order_of(&record), None);
        let decoded: serde_json::Value =
            serde_json::from_slice(&with_order(record, Some(7))).unwrap();
        assert_eq!(decoded["active_order"], 7);
        for lookalike in [
            br#"{"problem":{"active_order":5}}"#.as_slice(),
            br#"{"confirmed_at_ms":5}"#,
            br#"{"x":"\",\"active_order\":5"}"#,
            br#"{"x":1,"active_order":}"#,
        ] {
            assert_eq!(
                order_of(lookalike),
                None,
                "{}",
                String::from_utf8_lossy(lookalike)
            );
        }
    }
}
