//! Shared facts: what lives nowhere but in our store, written through to etcd before the HTTP
//! answer and imported by every instance.
//!
//! - The directory (accounts with their links and Alpaca account ids, the wallet whitelist, the
//!   asset list with its freezes) is one etcd value, changed by compare-and-swap on its mod
//!   revision: a write first imports etcd's directory, applies the change to the local store
//!   with the store's own rules (so conflicts answer as they always did), then puts the result
//!   only if nobody changed it meanwhile, else starts over.
//! - Each accepted mint intent is one key `facts/mints/<issuer_request_id>`, created only if
//!   absent (and only if the directory it was checked against is unchanged); Alpaca's confirm
//!   updates it by compare-and-swap. The issuer_request_id is derived from the
//!   tokenization_request_id, so the same request accepted on two instances is one key, and the
//!   store refuses a second intent under one id: re-import is never a second mint.
//!
//! - What the leader's reconciler tells Alpaca is shared before Alpaca hears it, so the next
//!   leader neither calls twice nor forgets a refusal: each mint's progress (callback state,
//!   failed transactions, problem) under `facts/mint-progress/<issuer_request_id>`, each
//!   redemption as last recorded under `facts/redemptions/<id>`. [`HaStore`] writes it after the
//!   local write and before it answers its caller, who only then calls Alpaca; if etcd does not
//!   take it, the local change is undone and the caller fails, so the local store never holds a
//!   mark etcd lacks. A new leader imports it all before its first pass
//!   ([`SharedFacts::import_progress`]); standbys do not need it.
//!
//! Every instance imports changes every [`SYNC_EVERY`]; the leader's pass is woken when an intent
//! or a confirm arrived through another instance.

use super::{timed, HaError, Keys};
use crate::http::Readiness;
use crate::store::{
    Account, AccountKey, Asset, AttachOutcome, ConfirmOutcome, Directory, IssuanceCheck,
    IssuanceOutcome, MintChange, MintMerge, MintProgress, MintRecord, PassView, RedbStore,
    RedemptionChange, ReturnOutcome, Scan, Select, Store, StoreError, TxRecord, TxSelect,
};
use alloy::primitives::{Address, B256};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use reconciler::{
    AlpacaAccountId, Callback, ClientId, IssuerRequestId, Journal, Network, ObservedBurn,
    ObservedDeposit, Redemption, RedemptionState, Symbol, TokenizationRequestId,
};
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How often every instance imports what other instances wrote.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);
/// Compare-and-swap attempts before a write gives up (answered 500: Alpaca retries).
const WRITE_ATTEMPTS: usize = 8;
/// Most puts in one etcd transaction (etcd's own default limit is 128 operations).
const PUTS_PER_TXN: usize = 100;
/// Locks the progress write-throughs are spread over by item id: writes of one item go one at a
/// time (so their puts reach etcd in the order of the local writes), writes of different items
/// side by side.
const WRITE_STRIPES: usize = 64;

/// The directory as last read from etcd.
struct Seen {
    mod_revision: i64,
    value: Vec<u8>,
}

/// The shared facts of one deployment, over one local redb.
pub struct SharedFacts {
    client: etcd_client::Client,
    keys: Keys,
    local: RedbStore,
    /// The runtime etcd calls run on (handlers run on async-std's threads).
    handle: tokio::runtime::Handle,
    /// Highest mod revision among the mint keys imported: the next sync asks only above it.
    mints_seen: AtomicI64,
    /// See [`WRITE_STRIPES`].
    writing: [tokio::sync::Mutex<()>; WRITE_STRIPES],
}

/// A mint record as shared: the intent and Alpaca's journal outcome, without what the
/// reconciler keeps of it.
fn fact_of(record: &MintRecord) -> MintRecord {
    let mut fact = record.clone();
    fact.intent.callback = Callback::NotSent;
    fact.intent.failed_attempts = 0;
    fact.problem = None;
    fact
}

fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, HaError> {
    serde_json::from_slice(value).map_err(|e| HaError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, HaError> {
    serde_json::to_vec(value).map_err(|e| HaError::Decode {
        key: "(encoding)".into(),
        detail: e.to_string(),
    })
}

impl SharedFacts {
    /// Must be called on the tokio runtime the etcd client runs on.
    pub fn new(client: etcd_client::Client, keys: Keys, local: RedbStore) -> Arc<Self> {
        Arc::new(SharedFacts {
            client,
            keys,
            local,
            handle: tokio::runtime::Handle::current(),
            mints_seen: AtomicI64::new(0),
            writing: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        })
    }

    /// Holds the write locks of `ids` (see [`WRITE_STRIPES`]), taken in one order so two callers
    /// never wait on each other.
    async fn writing<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a IssuerRequestId>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = ids
            .into_iter()
            .map(|id| {
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(id.as_str(), &mut hasher);
                usize::try_from(std::hash::Hasher::finish(&hasher) % WRITE_STRIPES as u64)
                    .unwrap_or(0)
            })
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            held.push(self.writing[stripe].lock().await);
        }
        held
    }

    /// The local directory, encoded as etcd holds it (one snapshot of the store).
    fn export_directory(&self) -> Result<Vec<u8>, HaError> {
        encode(&self.local.directory()?)
    }

    /// Makes the local directory etcd's. The first instance to run with an etcd that has none
    /// seeds it from its own store.
    async fn sync_directory(&self) -> Result<Seen, HaError> {
        let key = self.keys.directory();
        let mut kv = self.client.kv_client();
        for _ in 0..2 {
            let got = timed(kv.get(key.clone(), None)).await?;
            if let Some(found) = got.kvs().first() {
                let value = found.value().to_vec();
                if self.export_directory()? != value {
                    let directory: Directory = decode(found.key(), &value)?;
                    self.local.replace_directory(directory)?;
                }
                return Ok(Seen {
                    mod_revision: found.mod_revision(),
                    value,
                });
            }
            let value = self.export_directory()?;
            let empty = encode(&Directory::default())?;
            if value == empty {
                // Never seed an empty directory: an instance started on a fresh file before the
                // one holding the data would otherwise wipe it everywhere.
                return Ok(Seen {
                    mod_revision: 0,
                    value,
                });
            }
            let seed = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value, None)]);
            if timed(kv.txn(seed)).await?.succeeded() {
                tracing::info!("ha: seeded the shared directory from this instance's store");
            }
        }
        Err(HaError::Contended("the shared directory"))
    }

    /// Puts the local directory if it changed since `seen` and nobody else changed it.
    async fn put_directory(&self, seen: &Seen) -> Result<bool, HaError> {
        let value = self.export_directory()?;
        if value == seen.value {
            return Ok(true);
        }
        let key = self.keys.directory();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                seen.mod_revision,
            )])
            .and_then([TxnOp::put(key, value, None)]);
        Ok(timed(self.client.kv_client().txn(txn)).await?.succeeded())
    }

    /// Applies `op` to the directory, shared: see the module's documentation.
    pub async fn directory_write<R>(
        &self,
        op: impl Fn(&RedbStore) -> Result<R, StoreError>,
    ) -> Result<R, HaError> {
        for _ in 0..WRITE_ATTEMPTS {
            let seen = self.sync_directory().await?;
            let result = op(&self.local)?;
            if self.put_directory(&seen).await? {
                return Ok(result);
            }
        }
        Err(HaError::Contended("the shared directory"))
    }

    /// Imports one intent from etcd, if there; its mod revision and the shared record.
    async fn sync_mint(&self, id: &IssuerRequestId) -> Result<Option<(i64, MintRecord)>, HaError> {
        let got = timed(self.client.kv_client().get(self.keys.mint(id), None)).await?;
        let Some(found) = got.kvs().first() else {
            return Ok(None);
        };
        let fact: MintRecord = decode(found.key(), found.value())?;
        self.local.merge_mint_fact(fact.clone())?;
        Ok(Some((found.mod_revision(), fact)))
    }

    /// Puts `record`'s fact if the key is still at `expected` (0: absent) and, if given, the
    /// directory still at `directory`.
    async fn put_mint(
        &self,
        record: &MintRecord,
        expected: i64,
        directory: Option<&Seen>,
    ) -> Result<bool, HaError> {
        let key = self.keys.mint(&record.intent.issuer_request_id);
        let mut compares = vec![if expected == 0 {
            Compare::create_revision(key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key.clone(), CompareOp::Equal, expected)
        }];
        if let Some(seen) = directory {
            compares.push(Compare::mod_revision(
                self.keys.directory(),
                CompareOp::Equal,
                seen.mod_revision,
            ));
        }
        let txn =
            Txn::new()
                .when(compares)
                .and_then([TxnOp::put(key, encode(&fact_of(record))?, None)]);
        Ok(timed(self.client.kv_client().txn(txn)).await?.succeeded())
    }

    /// Accepts an issuance, shared: answered only once etcd holds the intent.
    pub async fn submit(
        &self,
        record: MintRecord,
        check: Option<IssuanceCheck>,
    ) -> Result<IssuanceOutcome, HaError> {
        let id = record.intent.issuer_request_id.clone();
        for _ in 0..WRITE_ATTEMPTS {
            let directory = self.sync_directory().await?;
            let known = self.sync_mint(&id).await?;
            let outcome = self
                .local
                .submit_issuance_async(record.clone(), check.clone())
                .await?;
            if !matches!(
                outcome,
                IssuanceOutcome::Created(_) | IssuanceOutcome::Repeat(_)
            ) || known.is_some()
            {
                return Ok(outcome);
            }
            let Some(stored) = self.local.mint(&id)? else {
                continue;
            };
            if self.put_mint(&stored, 0, Some(&directory)).await? {
                return Ok(outcome);
            }
        }
        Err(HaError::Contended("a mint intent"))
    }

    /// Records Alpaca's journal outcome, shared: answered only once etcd holds it.
    pub async fn confirm(
        &self,
        trid: &TokenizationRequestId,
        id: &IssuerRequestId,
        journal: Journal,
        reason: Option<String>,
        confirmed_at_ms: u64,
    ) -> Result<ConfirmOutcome, HaError> {
        for _ in 0..WRITE_ATTEMPTS {
            let known = self.sync_mint(id).await?;
            let outcome =
                self.local
                    .confirm_issuance(trid, id, journal, reason.clone(), confirmed_at_ms)?;
            if outcome != ConfirmOutcome::Recorded {
                return Ok(outcome);
            }
            let Some(stored) = self.local.mint(id)? else {
                return Ok(outcome);
            };
            if known
                .as_ref()
                .is_some_and(|(_, fact)| *fact == fact_of(&stored))
            {
                return Ok(outcome);
            }
            let expected = known.map_or(0, |(revision, _)| revision);
            if self.put_mint(&stored, expected, None).await? {
                return Ok(outcome);
            }
        }
        Err(HaError::Contended("a mint confirmation"))
    }

    /// Imports the intents changed since the last call (all of them with `everything`); how
    /// many were new or changed here.
    async fn sync_mints(&self, everything: bool) -> Result<usize, HaError> {
        let above = if everything {
            0
        } else {
            self.mints_seen.load(Ordering::SeqCst)
        };
        let options = GetOptions::new()
            .with_prefix()
            .with_min_mod_revision(above.saturating_add(1));
        let got = timed(
            self.client
                .kv_client()
                .get(self.keys.mints(), Some(options)),
        )
        .await?;
        let mut changed = 0;
        let mut highest = above;
        for found in got.kvs() {
            let fact: MintRecord = decode(found.key(), found.value())?;
            if self.local.merge_mint_fact(fact)? != MintMerge::Unchanged {
                changed += 1;
            }
            highest = highest.max(found.mod_revision());
        }
        self.mints_seen.fetch_max(highest, Ordering::SeqCst);
        Ok(changed)
    }

    /// Plain puts, one etcd transaction per [`PUTS_PER_TXN`]: for what only the fenced leader
    /// writes.
    async fn put_all(&self, puts: Vec<(String, Vec<u8>)>) -> Result<(), HaError> {
        let mut puts = puts.into_iter().peekable();
        while puts.peek().is_some() {
            let chunk: Vec<TxnOp> = puts
                .by_ref()
                .take(PUTS_PER_TXN)
                .map(|(key, value)| TxnOp::put(key, value, None))
                .collect();
            timed(self.client.kv_client().txn(Txn::new().and_then(chunk))).await?;
        }
        Ok(())
    }

    /// Shares signed transactions (every variant, and whether each settled) before they are
    /// broadcast.
    async fn put_txs(&self, network: &Network, txs: &[TxRecord]) -> Result<(), HaError> {
        let puts = txs
            .iter()
            .map(|tx| Ok((self.keys.tx(network, tx.nonce), encode(tx)?)))
            .collect::<Result<Vec<_>, HaError>>()?;
        self.put_all(puts).await
    }

    /// Shares the progress of `records`.
    async fn put_mint_progress(&self, records: &[MintRecord]) -> Result<(), HaError> {
        let puts = records
            .iter()
            .map(|r| {
                let key = self.keys.mint_progress_of(&r.intent.issuer_request_id);
                Ok((key, encode(&r.progress())?))
            })
            .collect::<Result<Vec<_>, HaError>>()?;
        self.put_all(puts).await
    }

    /// Changes one mint locally, then shares its progress if that changed; if etcd does not take
    /// it, the local progress goes back to what it was and the caller fails.
    async fn update_mint(
        &self,
        id: &IssuerRequestId,
        change: MintChange,
    ) -> Result<Option<MintRecord>, HaError> {
        let _writing = self.writing([id]).await;
        let Some(before) = self.local.mint(id)? else {
            return Ok(None);
        };
        let Some(after) = self.local.update_mint(id, change)? else {
            return Ok(None);
        };
        if after.progress() != before.progress() {
            if let Err(e) = self.put_mint_progress(std::slice::from_ref(&after)).await {
                self.undo_progress(&[(before, after.progress())])?;
                return Err(e);
            }
        }
        Ok(Some(after))
    }

    /// Marks mint callbacks attempted in one local commit, then shares them in one etcd
    /// transaction (per [`PUTS_PER_TXN`]) before any can go out.
    async fn mark_callbacks_attempted(
        &self,
        ids: &[IssuerRequestId],
    ) -> Result<Vec<IssuerRequestId>, HaError> {
        let _writing = self.writing(ids).await;
        let marked = self.local.mark_callbacks_attempted(ids)?;
        let mut records = Vec::with_capacity(marked.len());
        for id in &marked {
            records.extend(self.local.mint(id)?);
        }
        if let Err(e) = self.put_mint_progress(&records).await {
            let undo: Vec<_> = records
                .into_iter()
                .map(|after| {
                    let progress = after.progress();
                    let mut before = after;
                    before.intent.callback = Callback::NotSent;
                    (before, progress)
                })
                .collect();
            self.undo_progress(&undo)?;
            return Err(e);
        }
        Ok(marked)
    }

    /// Puts back each mint's progress as it was (`before`) where it is still `after`: a write etcd
    /// did not take, made before any call it was meant to precede.
    fn undo_progress(&self, undo: &[(MintRecord, MintProgress)]) -> Result<(), HaError> {
        for (before, after) in undo {
            let (back, after) = (before.progress(), after.clone());
            self.local.update_mint(
                &before.intent.issuer_request_id,
                Box::new(move |m| {
                    if m.progress() == after {
                        m.set_progress(back);
                    }
                }),
            )?;
        }
        Ok(())
    }

    /// Shares one redemption as recorded.
    async fn put_redemption(&self, redemption: &Redemption) -> Result<(), HaError> {
        let put = (self.keys.redemption(&redemption.id), encode(redemption)?);
        self.put_all(vec![put]).await
    }

    /// Changes one redemption locally with `write`, then shares it if it changed; if etcd does
    /// not take it, the local record goes back to what it was and the caller fails.
    async fn update_redemption<R>(
        &self,
        id: &IssuerRequestId,
        write: impl FnOnce(&RedbStore) -> Result<R, StoreError>,
    ) -> Result<R, HaError> {
        let _writing = self.writing([id]).await;
        let before = self.local.redemption(id)?;
        let result = write(&self.local)?;
        let Some(after) = self.local.redemption(id)? else {
            return Ok(result);
        };
        if before.as_ref() == Some(&after) {
            return Ok(result);
        }
        if let Err(e) = self.put_redemption(&after).await {
            if let Some(before) = before {
                self.local.update_redemption(
                    id,
                    Box::new(move |r| {
                        if *r == after {
                            *r = before;
                        }
                    }),
                )?;
            }
            return Err(e);
        }
        Ok(result)
    }

    /// Imports every mint's progress and every redemption the leaders shared: what a new leader
    /// does before its first pass, after the intents. How many local records changed.
    pub async fn import_progress(&self) -> Result<usize, HaError> {
        let mut kv = self.client.kv_client();
        let prefix = self.keys.mint_progress();
        let got = timed(kv.get(prefix.clone(), Some(GetOptions::new().with_prefix()))).await?;
        let mut mints = Vec::with_capacity(got.kvs().len());
        for found in got.kvs() {
            let key = String::from_utf8_lossy(found.key());
            let id = key
                .strip_prefix(&prefix)
                .and_then(|id| IssuerRequestId::parse(id).ok())
                .ok_or_else(|| HaError::Decode {
                    key: key.clone().into_owned(),
                    detail: "not a mint id".into(),
                })?;
            mints.push((id, decode::<MintProgress>(found.key(), found.value())?));
        }
        let got = timed(kv.get(
            self.keys.redemptions(),
            Some(GetOptions::new().with_prefix()),
        ))
        .await?;
        let redemptions = got
            .kvs()
            .iter()
            .map(|found| decode::<Redemption>(found.key(), found.value()))
            .collect::<Result<Vec<_>, HaError>>()?;
        // A redemption this store asked Alpaca about that etcd does not show as asked: this
        // instance marked it and died before etcd had it, then led again. Shared now, so a later
        // leader that finds the transfer on chain asks Alpaca first too.
        let asked: std::collections::HashSet<&IssuerRequestId> = redemptions
            .iter()
            .filter(|r| r.state != RedemptionState::Detected)
            .map(|r| &r.id)
            .collect();
        for local in self.local.redemptions(Select::Active)? {
            if local.state != RedemptionState::Detected && !asked.contains(&local.id) {
                self.put_redemption(&local).await?;
            }
        }
        Ok(self.local.merge_mint_progress(mints)?
            + self.local.merge_redemption_facts(redemptions)?)
    }

    /// Imports every transaction the leaders of `network` signed into the local store, where the
    /// local copy is missing or knows fewer variants: a new leader then re-sends a previous
    /// leader's transaction (the same bytes, at its nonce) instead of doing its work again at
    /// another nonce. How many were imported.
    pub async fn import_txs(&self, network: &Network) -> Result<usize, HaError> {
        let got = timed(self.client.kv_client().get(
            self.keys.txs(network),
            Some(GetOptions::new().with_prefix()),
        ))
        .await?;
        let mut imported = 0;
        for found in got.kvs() {
            let shared: TxRecord = decode(found.key(), found.value())?;
            let local = self.local.tx(network, shared.nonce)?;
            let newer = local.as_ref().is_none_or(|l| {
                l.variants.len() < shared.variants.len()
                    || (l.variants.len() == shared.variants.len()
                        && l.settled.is_none()
                        && shared.settled.is_some())
            });
            if newer {
                self.local.put_tx(network, &shared)?;
                imported += 1;
            }
        }
        Ok(imported)
    }

    /// Imports every shared fact: what a new leader does before its first pass.
    pub async fn import_all(&self) -> Result<usize, HaError> {
        self.sync_directory().await?;
        self.sync_mints(true).await
    }

    /// Imports what changed; how many intents were new or changed.
    pub async fn sync_once(&self) -> Result<usize, HaError> {
        self.sync_directory().await?;
        self.sync_mints(false).await
    }

    /// Runs `job` to completion from synchronous code on any thread: a handler on async-std's
    /// blocking pool, or a tokio worker (blocking in place).
    fn block<T>(&self, job: impl Future<Output = Result<T, HaError>>) -> Result<T, StoreError> {
        let result = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::block_in_place(|| self.handle.block_on(job))
        } else {
            self.handle.block_on(job)
        };
        result.map_err(into_store_error)
    }
}

fn into_store_error(e: HaError) -> StoreError {
    match e {
        HaError::Store(e) => e,
        other => StoreError::Storage(format!("shared facts: {other}")),
    }
}

/// Imports what other instances wrote every [`SYNC_EVERY`], keeping `/readyz`'s `etcd` check
/// current and waking the reconciler when an intent or a confirm arrived elsewhere.
pub async fn sync_forever(facts: Arc<SharedFacts>, readiness: Readiness, wake: Arc<Notify>) {
    loop {
        match facts.sync_once().await {
            Ok(changed) => {
                readiness.pass("etcd");
                if changed > 0 {
                    wake.notify_one();
                }
            }
            Err(e) => readiness.fail("etcd", e.to_string()),
        }
        tokio::time::sleep(SYNC_EVERY).await;
    }
}

/// The store in HA mode: the local redb, with the shared facts' writes (the directory, intents,
/// the leader's transactions and Alpaca-facing progress) going through etcd before they are
/// answered. Everything else is the local store's.
pub struct HaStore {
    facts: Arc<SharedFacts>,
    local: RedbStore,
}

impl HaStore {
    pub fn new(facts: Arc<SharedFacts>) -> Self {
        let local = facts.local.clone();
        HaStore { facts, local }
    }

    fn directory<R>(
        &self,
        op: impl Fn(&RedbStore) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.facts.block(self.facts.directory_write(op))
    }
}

impl Store for HaStore {
    fn health(&self) -> Result<(), StoreError> {
        self.local.health()
    }
    fn register_account(&self, email: &str) -> Result<Account, StoreError> {
        self.directory(|s| s.register_account(email))
    }
    fn link_account(
        &self,
        email: &str,
        account_number: &str,
    ) -> Result<Option<(Account, bool)>, StoreError> {
        self.directory(|s| s.link_account(email, account_number))
    }
    fn attach_alpaca_account(
        &self,
        client_id: &ClientId,
        alpaca_account_id: &AlpacaAccountId,
    ) -> Result<AttachOutcome, StoreError> {
        self.directory(|s| s.attach_alpaca_account(client_id, alpaca_account_id))
    }
    fn add_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError> {
        self.directory(|s| s.add_wallet(client_id, wallet))
    }
    fn remove_wallet(&self, client_id: &ClientId, wallet: Address) -> Result<bool, StoreError> {
        self.directory(|s| s.remove_wallet(client_id, wallet))
    }
    fn put_asset(&self, asset: &Asset) -> Result<(), StoreError> {
        self.directory(|s| s.put_asset(asset))
    }
    fn set_frozen(&self, underlying: &Symbol, frozen: bool) -> Result<usize, StoreError> {
        self.directory(|s| s.set_frozen(underlying, frozen))
    }
    fn account(&self, key: AccountKey<'_>) -> Result<Option<Account>, StoreError> {
        self.local.account(key)
    }
    fn directory(&self) -> Result<Directory, StoreError> {
        self.local.directory()
    }
    fn assets(&self) -> Result<Vec<Asset>, StoreError> {
        self.local.assets()
    }
    fn is_asset_contract(&self, address: Address) -> Result<bool, StoreError> {
        self.local.is_asset_contract(address)
    }
    fn asset(&self, underlying: &Symbol, network: &Network) -> Result<Option<Asset>, StoreError> {
        self.local.asset(underlying, network)
    }
    fn submit_issuance_async(
        &self,
        record: MintRecord,
        check: Option<IssuanceCheck>,
    ) -> crate::store::Pending<IssuanceOutcome> {
        let facts = self.facts.clone();
        let job = self
            .facts
            .handle
            .spawn(async move { facts.submit(record, check).await });
        Box::pin(async move {
            match job.await {
                Ok(result) => result.map_err(into_store_error),
                Err(e) => Err(StoreError::Storage(format!("shared facts: {e}"))),
            }
        })
    }
    fn confirm_issuance(
        &self,
        tokenization_request_id: &TokenizationRequestId,
        issuer_request_id: &IssuerRequestId,
        journal: Journal,
        reason: Option<String>,
        confirmed_at_ms: u64,
    ) -> Result<ConfirmOutcome, StoreError> {
        self.facts.block(self.facts.confirm(
            tokenization_request_id,
            issuer_request_id,
            journal,
            reason,
            confirmed_at_ms,
        ))
    }
    fn mints(&self, which: Select<'_>) -> Result<Vec<MintRecord>, StoreError> {
        self.local.mints(which)
    }
    /// Shared before it returns: a callback is marked attempted in etcd before it goes out.
    fn update_mint(
        &self,
        id: &IssuerRequestId,
        change: MintChange,
    ) -> Result<Option<MintRecord>, StoreError> {
        self.facts.block(self.facts.update_mint(id, change))
    }
    /// Shared before it returns, as [`HaStore::update_mint`].
    fn mark_callbacks_attempted(
        &self,
        ids: &[IssuerRequestId],
    ) -> Result<Vec<IssuerRequestId>, StoreError> {
        self.facts.block(self.facts.mark_callbacks_attempted(ids))
    }
    fn insert_mint_if_absent(&self, record: MintRecord) -> Result<bool, StoreError> {
        self.local.insert_mint_if_absent(record)
    }
    fn redemptions(&self, which: Select<'_>) -> Result<Vec<Redemption>, StoreError> {
        self.local.redemptions(which)
    }
    /// Shared before it returns: a redeem call is marked in etcd before it goes out.
    fn update_redemption(
        &self,
        id: &IssuerRequestId,
        change: RedemptionChange,
    ) -> Result<Option<Redemption>, StoreError> {
        self.facts.block(
            self.facts
                .update_redemption(id, move |local| local.update_redemption(id, change)),
        )
    }
    /// Shared before it returns, as [`HaStore::update_redemption`].
    fn request_return(&self, id: &IssuerRequestId) -> Result<ReturnOutcome, StoreError> {
        self.facts.block(
            self.facts
                .update_redemption(id, |local| local.request_return(id)),
        )
    }
    fn pass_view(&self) -> Result<PassView, StoreError> {
        self.local.pass_view()
    }
    fn deposits(&self) -> Result<Vec<ObservedDeposit>, StoreError> {
        self.local.deposits()
    }
    fn record_receipts(
        &self,
        deposits: Vec<ObservedDeposit>,
        burns: Vec<ObservedBurn>,
    ) -> Result<(), StoreError> {
        self.local.record_receipts(deposits, burns)
    }
    fn cursor(&self, network: &Network, vault: Address) -> Result<Option<u64>, StoreError> {
        self.local.cursor(network, vault)
    }
    fn block_hashes(&self, network: &Network) -> Result<Vec<(u64, B256)>, StoreError> {
        self.local.block_hashes(network)
    }
    fn advance(
        &self,
        network: &Network,
        vault: Address,
        block_number: u64,
        scan: Scan,
        hashes: Vec<(u64, B256)>,
    ) -> Result<(), StoreError> {
        self.local
            .advance(network, vault, block_number, scan, hashes)
    }
    fn rewind(&self, network: &Network, from_block: u64) -> Result<(), StoreError> {
        self.local.rewind(network, from_block)
    }
    /// Shared first: a transaction is in etcd before it is in the local store, so before it can
    /// be broadcast.
    fn put_txs(&self, network: &Network, txs: &[TxRecord]) -> Result<(), StoreError> {
        self.facts.block(self.facts.put_txs(network, txs))?;
        self.local.put_txs(network, txs)
    }
    fn txs(&self, network: &Network, which: TxSelect) -> Result<Vec<TxRecord>, StoreError> {
        self.local.txs(network, which)
    }
}
