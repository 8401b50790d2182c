//! The redb file's layout and the typed access every operation of [`super::RedbStore`] is written
//! over: which table holds what under which key, and [`Records`], the one place a record is
//! encoded and decoded. Every error names the key it is about; nothing that fails to read is
//! skipped.

use super::records::{Account, Asset, MintRecord, TxRecord};
use super::StoreError;
use alloy::primitives::{Address, B256};
use reconciler::{ClientId, Network, ObservedBurn, ObservedDeposit, Redemption, Symbol};
use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableTable, Table, TableDefinition, Value,
    WriteTransaction,
};
use serde::{de::DeserializeOwned, Serialize};
use std::borrow::Borrow;
use std::marker::PhantomData;
use std::ops::RangeBounds;

/// A table of plain strings (an index from one id to another, or a wallet to its owner).
pub(super) type Links = TableDefinition<'static, &'static str, &'static str>;

pub(super) const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
pub(super) const ACCOUNTS: Records<&str, Account> = Records::new("accounts");
/// Normalised email -> client id.
pub(super) const ACCOUNT_BY_EMAIL: Links = TableDefinition::new("account_by_email");
/// Wallet address -> the client it is whitelisted for.
pub(super) const WALLETS: Links = TableDefinition::new("wallets");
/// `underlying/network` ([`asset_key`]) -> asset.
pub(super) const ASSETS: Records<&str, Asset> = Records::new("assets");
pub(super) const MINTS: Records<&str, MintRecord, Indexed> = Records::new("mints");
/// tokenization_request_id -> issuer_request_id.
pub(super) const MINT_BY_TRID: Links = TableDefinition::new("mint_by_trid");
/// [`log_key`] -> deposit.
pub(super) const DEPOSITS: Records<&str, ObservedDeposit, Indexed> = Records::new("deposits");
/// (network, vault) -> last block scanned: each network has its own cursors.
pub(super) const CURSORS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("network_cursors");
/// (network, block number) -> block hash: each network's own reorg window.
pub(super) const BLOCKS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("network_blocks");
/// (network, nonce) -> our transaction: two chains' nonce 0 are two transactions.
pub(super) const TXS: Records<(&str, u64), TxRecord, Indexed> = Records::new("network_txs");
/// Schema version 2 and older, one network per file: keyed by vault, block, nonce alone. Read
/// only by the migration to version 3, which moves their rows under the file's network.
pub(super) const LEGACY_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
pub(super) const LEGACY_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
pub(super) const LEGACY_TXS: TableDefinition<u64, &[u8]> = TableDefinition::new("txs");
pub(super) const REDEMPTIONS: Records<&str, Redemption, Indexed> = Records::new("redemptions");
/// [`log_key`] -> burn.
pub(super) const BURNS: Records<&str, ObservedBurn, Indexed> = Records::new("burns");

/// Block hashes kept for reorg detection.
pub(super) const BLOCK_WINDOW: u64 = 256;

/// A key type of ours, and how a key is named in errors.
pub(super) trait Keyed: Key + 'static {
    fn shown(key: &Self::SelfType<'_>) -> String;
}

impl Keyed for &'static str {
    fn shown(key: &&str) -> String {
        (*key).to_owned()
    }
}

impl Keyed for (&'static str, u64) {
    fn shown(key: &(&str, u64)) -> String {
        format!("{}/{}", key.0, key.1)
    }
}

/// A transaction tables can be read in: a read snapshot, or the write transaction itself (a
/// write job reads what it is about to change).
pub(super) trait Snapshot {
    type Table<'t, K: Key + 'static, V: Value + 'static>: ReadableTable<K, V>
    where
        Self: 't;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<Self::Table<'_, K, V>, StoreError>;
}

impl Snapshot for ReadTransaction {
    type Table<'t, K: Key + 'static, V: Value + 'static> = ReadOnlyTable<K, V>;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<ReadOnlyTable<K, V>, StoreError> {
        Ok(self.open_table(table)?)
    }
}

impl Snapshot for WriteTransaction {
    type Table<'t, K: Key + 'static, V: Value + 'static> = Table<'t, K, V>;

    fn table<K: Key + 'static, V: Value + 'static>(
        &self,
        table: TableDefinition<'_, K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        Ok(self.open_table(table)?)
    }
}

/// Marks a table without index: any write job may put its records.
pub(super) enum Plain {}
/// Marks a table whose records [`super::redb_index`] alone writes, with their index entries in
/// the same transaction.
pub(super) enum Indexed {}

/// A table of JSON records of type `V` under keys `K`: the one place records are encoded and
/// decoded. Every error names the key.
pub(super) struct Records<K: Keyed, V, I = Plain> {
    table: TableDefinition<'static, K, &'static [u8]>,
    record: PhantomData<fn() -> (V, I)>,
}

impl<K: Keyed, V, I> Clone for Records<K, V, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Keyed, V, I> Copy for Records<K, V, I> {}

// Keys are `&str` or `(&str, u64)`: copies of a borrow, passed by value as redb takes them.
#[allow(clippy::needless_pass_by_value)]
impl<K: Keyed, V, I> Records<K, V, I> {
    pub(super) const fn new(name: &'static str) -> Self {
        Records {
            table: TableDefinition::new(name),
            record: PhantomData,
        }
    }

    /// The raw table: to create it, or to delete it in a migration.
    pub(super) fn definition(self) -> TableDefinition<'static, K, &'static [u8]> {
        self.table
    }

    /// Whether a record is stored under `key`, without decoding it.
    pub(super) fn contains(
        self,
        txn: &impl Snapshot,
        key: K::SelfType<'_>,
    ) -> Result<bool, StoreError> {
        Ok(txn.table(self.table)?.get(&key)?.is_some())
    }

    /// Forgets the record under `key`; whether there was one.
    pub(super) fn remove(
        self,
        txn: &WriteTransaction,
        key: K::SelfType<'_>,
    ) -> Result<bool, StoreError> {
        Ok(txn.open_table(self.table)?.remove(&key)?.is_some())
    }
}

// Keys are `&str` or `(&str, u64)`: copies of a borrow, passed by value as redb takes them.
#[allow(clippy::needless_pass_by_value)]
impl<K: Keyed, V: DeserializeOwned, I> Records<K, V, I> {
    pub(super) fn get(
        self,
        txn: &impl Snapshot,
        key: K::SelfType<'_>,
    ) -> Result<Option<V>, StoreError> {
        let table = txn.table(self.table)?;
        let found = table.get(&key)?;
        found
            .map(|v| decode(&K::shown(&key), v.value()))
            .transpose()
    }

    /// The record an index entry points to: its absence is a bug (they are written together) or
    /// a damaged file, never "no such record".
    pub(super) fn expect(self, txn: &impl Snapshot, key: K::SelfType<'_>) -> Result<V, StoreError> {
        let shown = K::shown(&key);
        self.get(txn, key)?.ok_or_else(|| dangling(&shown))
    }

    /// The records index entries point to, in the order given (see [`Records::expect`]).
    pub(super) fn expect_all<'k>(
        self,
        txn: &impl Snapshot,
        keys: impl IntoIterator<Item = K::SelfType<'k>>,
    ) -> Result<Vec<V>, StoreError> {
        let table = txn.table(self.table)?;
        let keys = keys.into_iter();
        // Sized up front: a pass reads thousands, and a growing vector copies them over and over.
        let mut out = Vec::with_capacity(keys.size_hint().0);
        for key in keys {
            let shown = K::shown(&key);
            let found = table.get(&key)?.ok_or_else(|| dangling(&shown))?;
            out.push(decode(&shown, found.value())?);
        }
        Ok(out)
    }

    /// Every record, in key order.
    pub(super) fn all(self, txn: &impl Snapshot) -> Result<Vec<V>, StoreError> {
        let mut out = Vec::new();
        self.each(txn, |_, record| {
            out.push(record);
            Ok(())
        })?;
        Ok(out)
    }

    /// The records under `range`, in key order.
    pub(super) fn range<'a, KR>(
        self,
        txn: &impl Snapshot,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<Vec<V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let mut out = Vec::new();
        self.each_in(txn, range, |_, record| {
            out.push(record);
            Ok(())
        })?;
        Ok(out)
    }

    /// The record with the highest key under `range`, if any.
    pub(super) fn last<'a, KR>(
        self,
        txn: &impl Snapshot,
        range: impl RangeBounds<KR> + 'a,
    ) -> Result<Option<V>, StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let table = txn.table(self.table)?;
        let last = table.range(range)?.next_back().transpose()?;
        last.map(|(k, v)| decode(&K::shown(&k.value()), v.value()))
            .transpose()
    }

    /// Calls `visit` with every key and its record, in key order. The first record that does not
    /// decode (or `visit`'s first error) stops the walk.
    pub(super) fn each(
        self,
        txn: &impl Snapshot,
        visit: impl FnMut(K::SelfType<'_>, V) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let table = txn.table(self.table)?;
        walk(table.iter()?, visit)
    }

    /// [`Records::each`] for the keys under `range`.
    pub(super) fn each_in<'a, KR>(
        self,
        txn: &impl Snapshot,
        range: impl RangeBounds<KR> + 'a,
        visit: impl FnMut(K::SelfType<'_>, V) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let table = txn.table(self.table)?;
        walk(table.range(range)?, visit)
    }
}

fn walk<K: Keyed, V: DeserializeOwned>(
    entries: redb::Range<'_, K, &'static [u8]>,
    mut visit: impl FnMut(K::SelfType<'_>, V) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for entry in entries {
        let (k, v) = entry?;
        let key = k.value();
        let record = decode(&K::shown(&key), v.value())?;
        visit(key, record)?;
    }
    Ok(())
}

impl<K: Keyed, V: Serialize> Records<K, V, Plain> {
    /// Inserts or replaces the record under `key`.
    pub(super) fn put(
        self,
        txn: &WriteTransaction,
        key: K::SelfType<'_>,
        record: &V,
    ) -> Result<(), StoreError> {
        write(txn, self.table, key, record)
    }
}

impl<K: Keyed, V: Serialize> Records<K, V, Indexed> {
    /// Inserts or replaces the record under `key`. For [`super::redb_index`] alone, which writes
    /// the record's index entries beside it.
    pub(super) fn put_beside_index(
        self,
        txn: &WriteTransaction,
        key: K::SelfType<'_>,
        record: &V,
    ) -> Result<(), StoreError> {
        write(txn, self.table, key, record)
    }
}

#[allow(clippy::needless_pass_by_value)] // see above
fn write<K: Keyed, V: Serialize>(
    txn: &WriteTransaction,
    table: TableDefinition<'static, K, &'static [u8]>,
    key: K::SelfType<'_>,
    record: &V,
) -> Result<(), StoreError> {
    let bytes = encode::<K, V>(&key, record)?;
    txn.open_table(table)?.insert(&key, bytes.as_slice())?;
    Ok(())
}

/// A record's JSON, as every table of records stores it (a mint row adds its order to it).
pub(super) fn encode<K: Keyed, V: Serialize>(
    key: &K::SelfType<'_>,
    record: &V,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Decode {
        key: K::shown(key),
        detail: format!("cannot encode the record: {e}"),
    })
}

/// Decodes the JSON record stored under `key`.
pub(super) fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<V, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode {
        key: key.to_owned(),
        detail: e.to_string(),
    })
}

/// A block hash as stored under (network, block).
pub(super) fn decode_hash(network: &str, block: u64, bytes: &[u8]) -> Result<B256, StoreError> {
    B256::try_from(bytes).map_err(|_| StoreError::Decode {
        key: format!("{network}/{block}"),
        detail: format!("a block hash of {} bytes", bytes.len()),
    })
}

/// An index entry whose record is missing: a bug (they are written together) or a damaged file.
pub(super) fn dangling(key: &str) -> StoreError {
    StoreError::Decode {
        key: key.to_owned(),
        detail: "an index entry points to no record".into(),
    }
}

/// The value under `key` in a table of strings.
pub(super) fn link(
    txn: &impl Snapshot,
    table: Links,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let table = txn.table(table)?;
    let found = table.get(key)?.map(|v| v.value().to_owned());
    Ok(found)
}

/// Sets the value under `key` in a table of strings.
pub(super) fn set_link(
    txn: &WriteTransaction,
    table: Links,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    txn.open_table(table)?.insert(key, value)?;
    Ok(())
}

/// The client `wallet` is whitelisted for. A stored owner that does not parse is an error, not
/// "nobody": a redemption from a whitelisted wallet must never be taken for an unknown sender's.
pub(super) fn wallet_owner(
    txn: &impl Snapshot,
    wallet: Address,
) -> Result<Option<ClientId>, StoreError> {
    let key = addr_key(wallet);
    link(txn, WALLETS, &key)?
        .map(|owner| {
            ClientId::parse(&owner).map_err(|e| StoreError::Decode {
                key: key.clone(),
                detail: e.to_string(),
            })
        })
        .transpose()
}

/// Every whitelisted wallet with its client, in address order.
pub(super) fn wallets(txn: &impl Snapshot) -> Result<Vec<(Address, ClientId)>, StoreError> {
    let table = txn.table(WALLETS)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (k, v) = entry?;
        let bad = |detail: String| StoreError::Decode {
            key: k.value().to_owned(),
            detail,
        };
        let wallet = k
            .value()
            .parse::<Address>()
            .map_err(|e| bad(e.to_string()))?;
        let client = ClientId::parse(v.value()).map_err(|e| bad(e.to_string()))?;
        out.push((wallet, client));
    }
    Ok(out)
}

pub(super) fn addr_key(address: Address) -> String {
    format!("{address:#x}")
}

/// The key of a log (a deposit or a burn): block, transaction and log index, so keys sort in
/// block order and one log has one key.
pub(super) fn log_key(block_number: u64, tx_hash: B256, log_index: u64) -> String {
    format!("{block_number:020}/{tx_hash:#x}/{log_index:06}")
}

/// The first key of block `block_number` in a table keyed by [`log_key`].
pub(super) fn block_key(block_number: u64) -> String {
    format!("{block_number:020}")
}

pub(super) fn deposit_key(d: &ObservedDeposit) -> String {
    log_key(d.block_number, d.tx_hash, d.log_index)
}

pub(super) fn burn_key(b: &ObservedBurn) -> String {
    log_key(b.block_number, b.tx_hash, b.log_index)
}

pub(super) fn asset_key(underlying: &Symbol, network: &Network) -> String {
    format!("{}/{}", underlying.as_str(), network.as_str())
}

/// Normalises an email as operators and Alpaca may spell it differently.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
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
