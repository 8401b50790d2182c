//! A pass reads the live items through index tables (`Store::pass_view`, `unsettled_txs`), not by
//! scanning the history; the world the plan sees must not change for it. Guards: after every kind
//! of write (issuance, confirm, update, recovery insert, scan, deposits and burns from receipts,
//! redemption changes, a return request, our transactions) and after a reorg rewind, the indexed
//! reads equal the full scans filtered as the pass filtered them before; they survive a reopen; and
//! a file written by schema version 1 (no index tables) is migrated once at open to the same reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use alloy::primitives::{Address, Bytes, B256, U256};
use issuer::store::{
    MintProblem, MintRecord, PassView, RedbStore, Scan, Select, Settled, Store, TxRecord,
    SCHEMA_VERSION,
};
use reconciler::{
    Anomaly, Callback, ClientId, ClientRef, IssuerRequestId, Journal, MintIntent, Network,
    ObservedBurn, ObservedDeposit, Qty, Redemption, RedemptionState, Symbol, TokenizationRequestId,
    TxPurpose,
};
use redb::{Database, MultimapTableDefinition, ReadableDatabase, TableDefinition};
use std::collections::BTreeSet;

const VAULT: Address = Address::repeat_byte(0x11);

fn trid(name: &str) -> TokenizationRequestId {
    TokenizationRequestId::parse(name).unwrap()
}

fn irid(name: &str) -> IssuerRequestId {
    IssuerRequestId::for_mint(&trid(name))
}

fn mint(name: &str, journal: Journal, callback: Callback) -> MintRecord {
    MintRecord {
        intent: MintIntent {
            issuer_request_id: irid(name),
            tokenization_request_id: trid(name),
            client: ClientRef::ClientExternalAccountId(ClientId::parse("c").unwrap()),
            wallet: Address::repeat_byte(0x22),
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: Network::parse("base").unwrap(),
            qty: Qty::parse("1").unwrap(),
            vault: VAULT,
            journal,
            callback,
            failed_attempts: 0,
            accepted_at: 0,
        },
        fingerprint: format!("f-{name}"),
        reject_reason: None,
        problem: None,
        confirmed_at_ms: None,
    }
}

fn acked() -> Callback {
    Callback::Acked {
        tx_hash: B256::repeat_byte(0xac),
    }
}

/// A deposit tagged for the mint `name`, in `block` (the key orders deposits by block).
fn deposit(name: &str, block: u64, log_index: u64) -> ObservedDeposit {
    ObservedDeposit {
        vault: VAULT,
        issuer_request_id: irid(name),
        tokenization_request_id: trid(name),
        owner: Address::repeat_byte(0xb0),
        assets: U256::from(1u64),
        receipt_id: U256::from(block * 100 + log_index),
        block_number: block,
        block_hash: B256::from(U256::from(block)),
        tx_hash: B256::from(U256::from(block * 1000 + log_index)),
        log_index,
    }
}

fn redemption(n: u64, block: u64, state: RedemptionState) -> Redemption {
    let tx_hash = B256::from(U256::from(0xdead_0000 + n));
    Redemption {
        id: IssuerRequestId::for_redemption(tx_hash, 0),
        vault: VAULT,
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("base").unwrap(),
        sender: Address::repeat_byte(0x22),
        client_id: None,
        client_account_id: None,
        qty: Qty::parse("1").unwrap(),
        tx_hash,
        log_index: 0,
        block_number: block,
        state,
        failed_attempts: 0,
    }
}

fn burn(r: &Redemption, block: u64) -> ObservedBurn {
    ObservedBurn {
        vault: VAULT,
        redemption_id: r.id.clone(),
        shares: U256::from(1u64),
        receipt_id: U256::from(7u64),
        block_number: block,
        tx_hash: B256::from(U256::from(0xb000 + block)),
        log_index: 0,
    }
}

fn tx(nonce: u64, mined_block: Option<u64>) -> TxRecord {
    TxRecord {
        nonce,
        from: Address::repeat_byte(0xb0),
        to: VAULT,
        purpose: TxPurpose::Other {
            label: format!("tx-{nonce}"),
        },
        input: Bytes::new(),
        gas_limit: 21_000,
        variants: Vec::new(),
        settled: mined_block.map(|b| Settled {
            mined_block: Some(b),
            hash: Some(B256::repeat_byte(0x55)),
            success: true,
        }),
    }
}

fn requested_state() -> RedemptionState {
    RedemptionState::Requested {
        tokenization_request_id: trid("red-t"),
    }
}

fn journaled_state() -> RedemptionState {
    RedemptionState::Journaled {
        tokenization_request_id: trid("red-t"),
    }
}

fn burned_state() -> RedemptionState {
    RedemptionState::Burned {
        tokenization_request_id: trid("red-t"),
        tx_hash: B256::repeat_byte(0xbb),
    }
}

/// What a pass read before the indexes: every record, filtered to the live ones.
fn scanned(store: &RedbStore) -> PassView {
    let all = store.mints(Select::All).unwrap();
    let known: BTreeSet<_> = all
        .iter()
        .map(|m| m.intent.issuer_request_id.clone())
        .collect();
    let mints: Vec<MintRecord> = all.into_iter().filter(MintRecord::is_active).collect();
    let active: BTreeSet<_> = mints
        .iter()
        .map(|m| m.intent.issuer_request_id.clone())
        .collect();
    let deposits = store
        .deposits()
        .unwrap()
        .into_iter()
        .filter(|d| active.contains(&d.issuer_request_id) || !known.contains(&d.issuer_request_id))
        .collect();
    let redemptions: Vec<Redemption> = store
        .redemptions(Select::All)
        .unwrap()
        .into_iter()
        .filter(|r| !r.state.is_final())
        .collect();
    let live: BTreeSet<_> = redemptions.iter().map(|r| r.id.clone()).collect();
    let burns = store
        .burns()
        .unwrap()
        .into_iter()
        .filter(|b| live.contains(&b.redemption_id))
        .collect();
    PassView {
        mints,
        deposits,
        redemptions,
        burns,
    }
}

/// Unsettled nonces found by reading every nonce, as the full scan did.
fn unsettled_scanned(store: &RedbStore) -> Vec<u64> {
    let Some(highest) = store.highest_nonce(&base()).unwrap() else {
        return Vec::new();
    };
    (0..=highest)
        .filter(|n| {
            store
                .tx(&base(), *n)
                .unwrap()
                .is_some_and(|t| t.settled.is_none())
        })
        .collect()
}

/// The indexed reads equal the scans; returns the view.
fn same_as_scan(store: &RedbStore, when: &str) -> PassView {
    let view = store.pass_view().unwrap();
    assert_eq!(
        view,
        scanned(store),
        "pass view differs from the scan {when}"
    );
    let unsettled: Vec<u64> = store
        .unsettled_txs(&base())
        .unwrap()
        .iter()
        .map(|t| t.nonce)
        .collect();
    assert_eq!(
        unsettled,
        unsettled_scanned(store),
        "unsettled transactions differ {when}"
    );
    assert_eq!(
        store.mints(Select::Active).unwrap(),
        view.mints,
        "active mints differ {when}"
    );
    assert_eq!(
        store.redemptions(Select::Active).unwrap(),
        view.redemptions,
        "active redemptions differ {when}"
    );
    view
}

fn mint_names(view: &PassView) -> BTreeSet<IssuerRequestId> {
    view.mints
        .iter()
        .map(|m| m.intent.issuer_request_id.clone())
        .collect()
}

fn deposit_blocks(view: &PassView) -> Vec<(IssuerRequestId, u64)> {
    view.deposits
        .iter()
        .map(|d| (d.issuer_request_id.clone(), d.block_number))
        .collect()
}

/// Fills a store with finished and active items of every kind, written every way the shell
/// writes them, then rewinds a reorg; checks the indexed reads against the scans at each step.
fn base() -> Network {
    Network::parse("base").unwrap()
}

fn build(store: &RedbStore) -> PassView {
    // The vault's asset: a reorg on its network drops the observations on its vaults.
    store
        .put_asset(&issuer::store::Asset {
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: base(),
            vault: VAULT,
            receipt: Address::repeat_byte(0x12),
            authorizer: Address::repeat_byte(0x13),
            deploy_block: 1,
            frozen: false,
            mint_qty_max: None,
        })
        .unwrap();
    // Mints: active ones, finished ones, one finished after the fact, a stuck one.
    assert!(matches!(
        store
            .submit_issuance(mint("pending", Journal::Pending, Callback::NotSent))
            .unwrap(),
        issuer::store::IssuanceOutcome::Created(_)
    ));
    store
        .submit_issuance(mint("rejected", Journal::Pending, Callback::NotSent))
        .unwrap();
    store
        .confirm_issuance(
            &trid("rejected"),
            &irid("rejected"),
            Journal::Rejected,
            Some("no".into()),
            1_800_000_000_000,
        )
        .unwrap();
    let mut stuck = mint("stuck", Journal::Completed, Callback::NotSent);
    stuck.problem = Some(MintProblem::Note("double deposit".into()));
    store
        .put_mints(vec![
            mint("acked", Journal::Completed, acked()),
            mint("acked-later", Journal::Completed, Callback::Attempted),
            mint("double", Journal::Completed, Callback::NotSent),
            stuck,
        ])
        .unwrap();
    same_as_scan(store, "after the mints");

    // Deposits: from a scan (with a redemption and a burn), from our receipts; a double deposit
    // for an active mint, deposits of finished mints, deposits no mint claims (yet).
    let detected_early = redemption(1, 12, RedemptionState::Detected);
    let detected_late = redemption(2, 50, RedemptionState::Detected);
    store
        .advance(
            &base(),
            VAULT,
            20,
            Scan {
                deposits: vec![
                    deposit("double", 10, 0),
                    deposit("acked", 11, 0),
                    deposit("lost", 12, 1),
                    deposit("recovered", 13, 0),
                    deposit("recovered-done", 14, 0),
                ],
                redemptions: vec![detected_early.clone()],
                burns: Vec::new(),
            },
            vec![(20, B256::repeat_byte(20))],
        )
        .unwrap();
    store
        .record_receipts(
            vec![
                deposit("double", 41, 0),
                deposit("acked-later", 15, 0),
                deposit("lost-late", 45, 0),
                deposit("stuck", 16, 0),
            ],
            Vec::new(),
        )
        .unwrap();
    same_as_scan(store, "after the deposits");

    // Lost intents rebuilt from Alpaca: one still to call back, one already acknowledged.
    assert!(store
        .insert_mint_if_absent(mint("recovered", Journal::Completed, Callback::NotSent))
        .unwrap());
    assert!(store
        .insert_mint_if_absent(mint("recovered-done", Journal::Completed, acked()))
        .unwrap());
    assert!(!store
        .insert_mint_if_absent(mint("recovered", Journal::Completed, acked()))
        .unwrap());
    // A mint finishes through a change inside its write transaction.
    store
        .update_mint(
            &irid("acked-later"),
            Box::new(|m| m.intent.callback = acked()),
        )
        .unwrap()
        .unwrap();
    same_as_scan(store, "after recovery and an update");

    // Redemptions in every state, burns of live and of final ones, one finishing by a change.
    let requested = redemption(3, 30, requested_state());
    let journaled = redemption(4, 31, journaled_state());
    let burned = redemption(5, 32, burned_state());
    let returned = redemption(
        6,
        33,
        RedemptionState::Returned {
            tx_hash: B256::repeat_byte(0xee),
        },
    );
    let flagged = redemption(
        7,
        34,
        RedemptionState::Flagged {
            anomaly: Anomaly::UnknownSender,
            return_requested: false,
            tokenization_request_id: None,
        },
    );
    let finishing = redemption(8, 35, journaled_state());
    store
        .put_redemptions(vec![
            requested.clone(),
            journaled.clone(),
            burned.clone(),
            returned,
            flagged.clone(),
            finishing.clone(),
        ])
        .unwrap();
    store
        .advance(
            &base(),
            VAULT,
            60,
            Scan {
                deposits: Vec::new(),
                // Already known: keeps its state.
                redemptions: vec![
                    detected_late.clone(),
                    redemption(3, 30, RedemptionState::Detected),
                ],
                burns: vec![
                    burn(&burned, 36),
                    burn(&finishing, 37),
                    burn(&journaled, 55),
                ],
            },
            vec![(60, B256::repeat_byte(60))],
        )
        .unwrap();
    store
        .record_receipts(Vec::new(), vec![burn(&journaled, 38)])
        .unwrap();
    store
        .update_redemption(&finishing.id, Box::new(|r| r.state = burned_state()))
        .unwrap()
        .unwrap();
    assert_eq!(
        store.request_return(&flagged.id).unwrap(),
        issuer::store::ReturnOutcome::Requested
    );
    // Our transactions: settled before the fork, settled after it, not settled.
    store.put_tx(&base(), &tx(0, Some(5))).unwrap();
    store.put_tx(&base(), &tx(1, Some(52))).unwrap();
    store.put_tx(&base(), &tx(2, None)).unwrap();
    store.put_tx(&base(), &tx(3, None)).unwrap();
    store.put_tx(&base(), &tx(3, Some(58))).unwrap();
    let before = same_as_scan(store, "before the reorg");
    assert_eq!(before.redemptions.len(), 5, "{:?}", before.redemptions);
    assert_eq!(before.burns.len(), 2, "{:?}", before.burns);

    // A reorg from block 40: deposits, burns and the detected transfer above it are forgotten;
    // our transactions settled in it are tracked again.
    store.rewind(&base(), 40).unwrap();
    let view = same_as_scan(store, "after the reorg");

    let names = |list: &[&str]| list.iter().map(|n| irid(n)).collect::<BTreeSet<_>>();
    assert_eq!(
        mint_names(&view),
        names(&["pending", "double", "stuck", "recovered"])
    );
    assert_eq!(
        deposit_blocks(&view),
        vec![
            (irid("double"), 10),
            (irid("lost"), 12),
            (irid("recovered"), 13),
            (irid("stuck"), 16),
        ]
    );
    let ids: Vec<_> = view.redemptions.iter().map(|r| r.id.clone()).collect();
    let mut expected = vec![
        detected_early.id,
        requested.id,
        journaled.id.clone(),
        flagged.id,
    ];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(view.burns, vec![burn(&journaled, 38)]);
    let unsettled: Vec<u64> = store
        .unsettled_txs(&base())
        .unwrap()
        .iter()
        .map(|t| t.nonce)
        .collect();
    assert_eq!(unsettled, vec![1, 2, 3]);

    // The same logs seen again after the reorg: the double deposit is back.
    store
        .record_receipts(
            vec![deposit("double", 41, 0), deposit("lost-late", 45, 0)],
            Vec::new(),
        )
        .unwrap();
    let view = same_as_scan(store, "after the logs are seen again");
    assert_eq!(
        deposit_blocks(&view),
        vec![
            (irid("double"), 10),
            (irid("lost"), 12),
            (irid("recovered"), 13),
            (irid("stuck"), 16),
            (irid("double"), 41),
            (irid("lost-late"), 45),
        ]
    );
    view
}

/// Records Alpaca's rejection of the journal of mint `name`: it finishes.
fn reject(store: &RedbStore, name: &str) {
    store
        .update_mint(
            &irid(name),
            Box::new(|m| m.intent.journal = Journal::Rejected),
        )
        .unwrap()
        .unwrap();
}

/// A closed store file holding [`build`]'s records, its path and the pass view it gave.
fn built_file() -> (tempfile::TempDir, std::path::PathBuf, PassView) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let store = RedbStore::open(&path).unwrap();
    let view = build(&store);
    store.close();
    (dir, path, view)
}

#[test]
fn the_pass_reads_exactly_the_live_items_a_full_scan_finds() {
    let (_dir, path, view) = built_file();
    let reopened = RedbStore::open(&path).unwrap();
    assert_eq!(
        same_as_scan(&reopened, "after a reopen"),
        view,
        "a reopen changed the view"
    );
}

/// The ordered active mints' table of schema 5: (order, issuer_request_id).
const ACTIVE_IN_ORDER: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("active_mints_in_order");

/// Turns a current file into what schema version 4 wrote: the active mints keyed by id alone,
/// and mint rows without the order the store keeps at their end.
fn make_version_4(path: &std::path::Path) {
    use redb::ReadableTable;
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let ordered = txn.open_table(ACTIVE_IN_ORDER).unwrap();
        let mut by_id = txn
            .open_table(TableDefinition::<&str, ()>::new("active_mints"))
            .unwrap();
        for entry in ordered.iter().unwrap() {
            by_id.insert(entry.unwrap().0.value().1, ()).unwrap();
        }
        let mut mints = txn
            .open_table(TableDefinition::<&str, &[u8]>::new("mints"))
            .unwrap();
        let rows: Vec<(String, Vec<u8>)> = mints
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_owned(), v.value().to_vec())
            })
            .collect();
        let mut ordered_rows = 0;
        for (id, row) in rows {
            let mut value: serde_json::Value = serde_json::from_slice(&row).unwrap();
            if value
                .as_object_mut()
                .unwrap()
                .remove("active_order")
                .is_some()
            {
                ordered_rows += 1;
            }
            let row = serde_json::to_vec(&value).unwrap();
            mints.insert(id.as_str(), row.as_slice()).unwrap();
        }
        assert!(ordered_rows > 0, "no mint row carried an order to take off");
    }
    assert!(txn.delete_table(ACTIVE_IN_ORDER).unwrap());
    txn.open_table(TableDefinition::<&str, u32>::new("meta"))
        .unwrap()
        .insert("schema_version", 4)
        .unwrap();
    txn.commit().unwrap();
}

/// Turns a current file into what schema version 1 wrote: the same records, no index tables.
fn make_version_1(path: &std::path::Path) {
    make_version_4(path);
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    for name in ["active_mints", "unclaimed_deposits", "active_redemptions"] {
        assert!(txn
            .delete_table(TableDefinition::<&str, ()>::new(name))
            .unwrap());
    }
    assert!(txn
        .delete_table(TableDefinition::<(&str, u64), ()>::new(
            "network_unsettled_txs"
        ))
        .unwrap());
    to_single_network(&txn);
    for name in ["deposits_by_mint", "burns_by_redemption"] {
        assert!(txn
            .delete_multimap_table(MultimapTableDefinition::<&str, &str>::new(name))
            .unwrap());
    }
    txn.open_table(TableDefinition::<&str, u32>::new("meta"))
        .unwrap()
        .insert("schema_version", 1)
        .unwrap();
    txn.commit().unwrap();
}

/// Moves cursors, block hashes and transactions back to schema 2's keys (one network per file,
/// keyed without it), as a file written before several networks were served holds them.
fn to_single_network(txn: &redb::WriteTransaction) {
    use redb::ReadableTable;
    let net_txs = TableDefinition::<(&str, u64), &[u8]>::new("network_txs");
    let net_blocks = TableDefinition::<(&str, u64), &[u8]>::new("network_blocks");
    let net_cursors = TableDefinition::<(&str, &str), u64>::new("network_cursors");
    {
        let from = txn.open_table(net_txs).unwrap();
        let mut to = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("txs"))
            .unwrap();
        for entry in from.iter().unwrap() {
            let (k, v) = entry.unwrap();
            to.insert(k.value().1, v.value()).unwrap();
        }
        let from = txn.open_table(net_blocks).unwrap();
        let mut to = txn
            .open_table(TableDefinition::<u64, &[u8]>::new("blocks"))
            .unwrap();
        for entry in from.iter().unwrap() {
            let (k, v) = entry.unwrap();
            to.insert(k.value().1, v.value()).unwrap();
        }
        let from = txn.open_table(net_cursors).unwrap();
        let mut to = txn
            .open_table(TableDefinition::<&str, u64>::new("cursors"))
            .unwrap();
        for entry in from.iter().unwrap() {
            let (k, v) = entry.unwrap();
            to.insert(k.value().1, v.value()).unwrap();
        }
    }
    assert!(txn.delete_table(net_txs).unwrap());
    assert!(txn.delete_table(net_blocks).unwrap());
    assert!(txn.delete_table(net_cursors).unwrap());
}

/// Turns a current file into what schema version 2 wrote: indexes, but one network per file.
fn make_version_2(path: &std::path::Path) {
    use redb::ReadableTable;
    make_version_4(path);
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    let net_unsettled = TableDefinition::<(&str, u64), ()>::new("network_unsettled_txs");
    {
        let from = txn.open_table(net_unsettled).unwrap();
        let mut to = txn
            .open_table(TableDefinition::<u64, ()>::new("unsettled_txs"))
            .unwrap();
        for entry in from.iter().unwrap() {
            to.insert(entry.unwrap().0.value().1, ()).unwrap();
        }
    }
    assert!(txn.delete_table(net_unsettled).unwrap());
    to_single_network(&txn);
    txn.open_table(TableDefinition::<&str, u32>::new("meta"))
        .unwrap()
        .insert("schema_version", 2)
        .unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_version_2_file_keeps_its_transactions_hashes_and_cursors_under_its_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let store = RedbStore::open(&path).unwrap();
    let view = build(&store);
    let unsettled = store.unsettled_txs(&base()).unwrap();
    let hashes = store.block_hashes(&base()).unwrap();
    let cursor = store.cursor(&base(), VAULT).unwrap();
    let highest = store.highest_nonce(&base()).unwrap();
    assert!(!unsettled.is_empty() && cursor.is_some() && highest.is_some());
    store.close();
    make_version_2(&path);
    assert_eq!(schema_version(&path), 2);

    let migrated = RedbStore::open(&path).unwrap();
    assert_eq!(same_as_scan(&migrated, "after the migration"), view);
    assert_eq!(migrated.unsettled_txs(&base()).unwrap(), unsettled);
    assert_eq!(migrated.block_hashes(&base()).unwrap(), hashes);
    assert_eq!(migrated.cursor(&base(), VAULT).unwrap(), cursor);
    assert_eq!(migrated.highest_nonce(&base()).unwrap(), highest);
    // Another network starts empty: its nonce 0 is not the migrated network's.
    let other = Network::parse("ethereum").unwrap();
    assert_eq!(migrated.highest_nonce(&other).unwrap(), None);
    assert!(migrated.unsettled_txs(&other).unwrap().is_empty());
    assert!(migrated.block_hashes(&other).unwrap().is_empty());
    assert_eq!(migrated.cursor(&other, VAULT).unwrap(), None);
    assert_eq!(migrated.tx(&other, 0).unwrap(), None);
    migrated.close();
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
}

/// A version 3 file has a request id index entry for every mint; version 4 keeps them and adds
/// none for a mint under its derived id. Opened, the file is version 4 and every mint still
/// answers a repeat as a repeat and another body as a conflict.
#[test]
fn a_version_3_file_opens_as_version_4_and_its_mints_keep_their_request_ids() {
    use issuer::store::IssuanceOutcome;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let store = RedbStore::open(&path).unwrap();
    build(&store);
    let mints = store.mints(Select::All).unwrap();
    store.close();
    make_version_4(&path);
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut links = txn
                .open_table(TableDefinition::<&str, &str>::new("mint_by_trid"))
                .unwrap();
            for m in &mints {
                let (trid, irid) = (
                    &m.intent.tokenization_request_id,
                    &m.intent.issuer_request_id,
                );
                links.insert(trid.as_str(), irid.as_str()).unwrap();
            }
            txn.open_table(TableDefinition::<&str, u32>::new("meta"))
                .unwrap()
                .insert("schema_version", 3)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    assert_eq!(schema_version(&path), 3);
    let migrated = RedbStore::open(&path).unwrap();
    for m in &mints {
        let repeat = migrated.submit_issuance(m.clone()).unwrap();
        assert!(
            matches!(&repeat, IssuanceOutcome::Repeat(id) if *id == m.intent.issuer_request_id),
            "{repeat:?}"
        );
        let mut changed = m.clone();
        changed.fingerprint = format!("{} changed", m.fingerprint);
        let conflict = migrated.submit_issuance(changed).unwrap();
        assert!(
            matches!(conflict, IssuanceOutcome::Conflict),
            "{conflict:?}"
        );
    }
    assert_eq!(migrated.mints(Select::All).unwrap(), mints);
    migrated.close();
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
}

fn schema_version(path: &std::path::Path) -> u32 {
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn
        .open_table(TableDefinition::<&str, u32>::new("meta"))
        .unwrap();
    let version = meta.get("schema_version").unwrap().unwrap().value();
    version
}

#[test]
fn a_version_1_file_gets_its_indexes_once_at_open_and_the_same_pass() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let store = RedbStore::open(&path).unwrap();
    let view = build(&store);
    let unsettled = store.unsettled_txs(&base()).unwrap();
    store.close();
    make_version_1(&path);
    assert_eq!(schema_version(&path), 1);

    let migrated = RedbStore::open(&path).unwrap();
    assert_eq!(same_as_scan(&migrated, "after the migration"), view);
    assert_eq!(migrated.unsettled_txs(&base()).unwrap(), unsettled);
    // The indexes keep up with writes after the migration.
    reject(&migrated, "pending");
    migrated.rewind(&base(), 11).unwrap();
    let after = same_as_scan(&migrated, "after writes on the migrated file");
    assert_eq!(
        mint_names(&after),
        [irid("double"), irid("stuck"), irid("recovered")]
            .into_iter()
            .collect()
    );
    migrated.close();
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
    let again = RedbStore::open(&path).unwrap();
    assert_eq!(same_as_scan(&again, "after a second open"), after);
}

/// Schema 5 keys the active mints by the order the store gave them. A version 4 file (keyed by
/// id, rows without an order) opens as version 5 with the same pass view; its mints still leave
/// the view when they finish, and a new intake joins it, across a reopen.
#[test]
fn a_version_4_file_opens_as_version_5_and_its_active_mints_still_come_and_go() {
    let (_dir, path, view) = built_file();
    make_version_4(&path);
    assert_eq!(schema_version(&path), 4);

    let migrated = RedbStore::open(&path).unwrap();
    assert_eq!(same_as_scan(&migrated, "after the migration"), view);
    assert!(mint_names(&view).contains(&irid("pending")));
    reject(&migrated, "pending");
    migrated
        .submit_issuance(mint("fresh", Journal::Pending, Callback::NotSent))
        .unwrap();
    let mut expected = mint_names(&view);
    expected.remove(&irid("pending"));
    expected.insert(irid("fresh"));
    let after = same_as_scan(&migrated, "after writes on the migrated file");
    assert_eq!(mint_names(&after), expected);
    migrated.close();
    assert_eq!(schema_version(&path), SCHEMA_VERSION);
    let again = RedbStore::open(&path).unwrap();
    assert_eq!(same_as_scan(&again, "after a second open"), after);
}

/// The last key of the ordered active set, read from the closed file.
fn last_active(path: &std::path::Path) -> (u64, String) {
    use redb::ReadableTable;
    let db = Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let set = txn.open_table(ACTIVE_IN_ORDER).unwrap();
    let (key, _) = set.last().unwrap().expect("the active set is empty");
    let (order, id) = key.value();
    (order, id.to_owned())
}

/// What the order is for: each intake lands at the end of the active set, after every mint
/// accepted before it whatever their ids (hashes), so a commit's issuances share its last pages.
/// A mint's order stays when a record from elsewhere replaces its row (HA's shared intent with
/// another body), so it still leaves the set when it finishes: no entry is left behind.
#[test]
fn an_intake_appends_to_the_active_set_and_keeps_its_place_until_it_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let mut store = RedbStore::open(&path).unwrap();
    build(&store);
    let mut orders = Vec::new();
    for name in ["zz-last-by-id", "aa-first-by-id"] {
        store
            .submit_issuance(mint(name, Journal::Pending, Callback::NotSent))
            .unwrap();
        store.close();
        let (order, id) = last_active(&path);
        assert_eq!(id, irid(name).as_str(), "{name} is not at the set's end");
        orders.push(order);
        store = RedbStore::open(&path).unwrap();
        assert!(mint_names(&same_as_scan(&store, name)).contains(&irid(name)));
    }
    assert_eq!(orders[1], orders[0] + 1, "orders {orders:?}");

    let mut shared = mint("aa-first-by-id", Journal::Pending, Callback::NotSent);
    shared.fingerprint = "the shared body".into();
    store.merge_mint_fact(shared).unwrap();
    store.close();
    assert_eq!(
        last_active(&path),
        (orders[1], irid("aa-first-by-id").to_string()),
        "the shared record moved the mint"
    );
    store = RedbStore::open(&path).unwrap();
    store
        .update_mint(
            &irid("aa-first-by-id"),
            Box::new(|m| m.intent.callback = acked()),
        )
        .unwrap()
        .unwrap();
    let view = same_as_scan(&store, "after the mint finished");
    assert!(!mint_names(&view).contains(&irid("aa-first-by-id")));
    store.close();
    assert_eq!(
        last_active(&path),
        (orders[0], irid("zz-last-by-id").to_string())
    );
}
