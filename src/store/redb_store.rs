//! [`Store`] on a redb file: the trait's operations over the tables of [`super::redb_tables`]; the
//! bigger write jobs live in [`super::redb_jobs`].

use super::records::{
    Account, Asset, AttachOutcome, ConfirmOutcome, IssuanceCheck, IssuanceOutcome, MintRecord,
    PassView, ReturnOutcome, Scan, TxRecord,
};
use super::redb_index::{self, put_burn, put_deposit, put_mint, put_redemption, put_tx};
use super::redb_jobs::{drop_from, issuance_job};
use super::redb_tables::{
    addr_key, asset_key, check_before_open, create_new, decode, get_json, new_client_id,
    normalise_email, open_existing, put_json, unusable, Json, ACCOUNTS, ACCOUNT_BY_EMAIL, ASSETS,
    BLOCKS, BLOCK_WINDOW, BURNS, CURSORS, DEPOSITS, MINTS, MINT_BY_TRID, REDEMPTIONS, TXS, WALLETS,
};
use super::writer::{DbCell, Writer};
use super::{Store, StoreError};
use alloy::primitives::{Address, B256};
use reconciler::{
    AlpacaAccountId, ClientId, IssuerRequestId, Journal, Network, ObservedBurn, ObservedDeposit,
    Redemption, RedemptionState, Symbol, TokenizationRequestId,
};
use redb::backends::FileBackend;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend, WriteTransaction};
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// The store on a redb file. Cheap to clone; [`Store::close`] releases the file for every clone.
#[derive(Clone)]
pub struct RedbStore {
    open: Arc<RwLock<Option<Open>>>,
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

    pub(super) fn write<R, F>(&self, job: F) -> Result<R, StoreError>
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

    /// Reads one record of `table`, changes it and writes it back with `put` (which keeps its
    /// indexes), in one write transaction; `None` if there is no such record.
    fn update_record<V>(
        &self,
        table: Json,
        id: &IssuerRequestId,
        change: Box<dyn FnOnce(&mut V) + Send>,
        put: fn(&WriteTransaction, &V) -> Result<(), StoreError>,
    ) -> Result<Option<V>, StoreError>
    where
        V: DeserializeOwned + Send + 'static,
    {
        let id = id.clone();
        self.write(move |txn| {
            let Some(mut record) = get_json::<V>(txn, table, id.as_str())? else {
                return Ok(None);
            };
            change(&mut record);
            put(txn, &record)?;
            Ok(Some(record))
        })
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
        // A stored owner that does not parse is an error, not "nobody": a redemption from a
        // whitelisted wallet must never be taken for an unknown sender's.
        owner
            .map(|o| {
                ClientId::parse(&o).map_err(|e| StoreError::Decode {
                    key: addr_key(wallet),
                    detail: e.to_string(),
                })
            })
            .transpose()
    }

    fn wallets(&self) -> Result<Vec<(Address, ClientId)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(WALLETS)?;
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
                    record.confirmed_at_ms =
                        (wanted == Journal::Completed).then(crate::clock::unix_now_ms);
                    put_mint(txn, &record)?;
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
        redb_index::active_mints(&self.db()?.begin_read()?)
    }

    fn pass_view(&self) -> Result<PassView, StoreError> {
        redb_index::pass_view(&self.db()?.begin_read()?)
    }

    fn all_mints(&self) -> Result<Vec<MintRecord>, StoreError> {
        self.read_all(MINTS)
    }

    fn update_mint(
        &self,
        id: &IssuerRequestId,
        change: super::MintChange,
    ) -> Result<Option<MintRecord>, StoreError> {
        self.update_record(MINTS, id, change, put_mint)
    }

    fn mark_callbacks_attempted(
        &self,
        ids: &[IssuerRequestId],
    ) -> Result<Vec<IssuerRequestId>, StoreError> {
        let ids = ids.to_vec();
        self.write(move |txn| {
            let mut marked = Vec::new();
            for id in ids {
                let Some(mut record) = get_json::<MintRecord>(txn, MINTS, id.as_str())? else {
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
        self.write(move |txn| {
            let trid = record.intent.tokenization_request_id.as_str().to_owned();
            let taken = txn.open_table(MINT_BY_TRID)?.get(trid.as_str())?.is_some();
            if taken
                || get_json::<MintRecord>(txn, MINTS, record.intent.issuer_request_id.as_str())?
                    .is_some()
            {
                return Ok(false);
            }
            put_mint(txn, &record)?;
            txn.open_table(MINT_BY_TRID)?
                .insert(trid.as_str(), record.intent.issuer_request_id.as_str())?;
            Ok(true)
        })
    }

    fn put_mints(&self, records: Vec<MintRecord>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for record in &records {
                put_mint(txn, record)?;
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
                put_deposit(txn, d)?;
            }
            Ok(())
        })
    }

    fn deposits(&self) -> Result<Vec<ObservedDeposit>, StoreError> {
        self.read_all(DEPOSITS)
    }

    fn drop_observations_from(
        &self,
        network: &Network,
        block_number: u64,
    ) -> Result<(), StoreError> {
        let network = network.clone();
        self.write(move |txn| drop_from(txn, &network, block_number))
    }

    fn cursor(&self, network: &Network, vault: Address) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(CURSORS)?;
        let cursor = table
            .get((network.as_str(), addr_key(vault).as_str()))?
            .map(|v| v.value());
        Ok(cursor)
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
            let net = network.as_str();
            for d in &scan.deposits {
                put_deposit(txn, d)?;
            }
            for b in &scan.burns {
                put_burn(txn, b)?;
            }
            for r in &scan.redemptions {
                let known = txn.open_table(REDEMPTIONS)?.get(r.id.as_str())?.is_some();
                if !known {
                    put_redemption(txn, r)?;
                }
            }
            let mut blocks = txn.open_table(BLOCKS)?;
            for (number, hash) in &hashes {
                blocks.insert((net, *number), hash.as_slice())?;
            }
            let newest = blocks
                .range((net, 0)..=(net, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().1);
            if let Some(newest) = newest {
                let floor = newest.saturating_sub(BLOCK_WINDOW);
                let old = blocks
                    .range((net, 0)..(net, floor))?
                    .map(|entry| entry.map(|(k, _)| k.value().1))
                    .collect::<Result<Vec<u64>, _>>()?;
                for number in old {
                    blocks.remove((net, number))?;
                }
            }
            txn.open_table(CURSORS)?
                .insert((net, addr_key(vault).as_str()), block_number)?;
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
        self.update_record(REDEMPTIONS, id, change, put_redemption)
    }

    fn put_redemptions(&self, redemptions: Vec<Redemption>) -> Result<(), StoreError> {
        self.write(move |txn| {
            for r in &redemptions {
                put_redemption(txn, r)?;
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
                put_burn(txn, b)?;
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
                        put_redemption(txn, &r)?;
                    }
                    Ok(ReturnOutcome::Requested)
                }
                other => Ok(ReturnOutcome::NotFlagged(other.clone())),
            }
        })
    }

    fn rewind_cursors(&self, network: &Network, block_number: u64) -> Result<(), StoreError> {
        let network = network.clone();
        self.write(move |txn| drop_from(txn, &network, block_number))
    }

    fn block_hashes(&self, network: &Network) -> Result<Vec<(u64, B256)>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(BLOCKS)?;
        let net = network.as_str();
        let mut out = Vec::new();
        for entry in table.range((net, 0)..=(net, u64::MAX))? {
            let (k, v) = entry?;
            out.push((k.value().1, B256::from_slice(v.value())));
        }
        Ok(out)
    }

    fn put_tx(&self, network: &Network, tx: &TxRecord) -> Result<(), StoreError> {
        let (network, tx) = (network.clone(), tx.clone());
        self.write(move |txn| put_tx(txn, &network, &tx))
    }

    fn put_txs(&self, network: &Network, txs: &[TxRecord]) -> Result<(), StoreError> {
        let (network, txs) = (network.clone(), txs.to_vec());
        self.write(move |txn| txs.iter().try_for_each(|tx| put_tx(txn, &network, tx)))
    }

    fn unsettled_txs(&self, network: &Network) -> Result<Vec<TxRecord>, StoreError> {
        redb_index::unsettled_txs(&self.db()?.begin_read()?, network)
    }

    fn tx(&self, network: &Network, nonce: u64) -> Result<Option<TxRecord>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TXS)?;
        let found = table.get((network.as_str(), nonce))?;
        match found {
            Some(v) => Ok(Some(decode(&format!("{network}/{nonce}"), v.value())?)),
            None => Ok(None),
        }
    }

    fn highest_nonce(&self, network: &Network) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let table = txn.open_table(TXS)?;
        let net = network.as_str();
        let last = table
            .range((net, 0)..=(net, u64::MAX))?
            .next_back()
            .transpose()?
            .map(|(k, _)| k.value().1);
        Ok(last)
    }
}
