//! The store refuses what it must not touch: a file written by a newer schema, a damaged file and
//! a redb file that is not ours each give a clear error, and the file's bytes stay exactly as they
//! were. A store closed and reopened keeps what it was told.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use issuer::store::{AccountKey, RedbStore, Select, Store, StoreError, SCHEMA_VERSION};
use redb::{Database, TableDefinition};

fn bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn a_newer_schema_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    RedbStore::open(&path).unwrap().close();
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u32>::new("meta"))
            .unwrap()
            .insert("schema_version", SCHEMA_VERSION + 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = bytes(&path);
    let err = RedbStore::open(&path)
        .err()
        .expect("a newer schema must be refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
    assert!(err.to_string().contains("schema version"), "{err}");
    assert_eq!(bytes(&path), before, "the file was modified");
}

#[test]
fn a_damaged_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    std::fs::write(
        &path,
        b"this is not a redb file, just some bytes that happen to be here",
    )
    .unwrap();
    let before = bytes(&path);
    let err = RedbStore::open(&path)
        .err()
        .expect("garbage must be refused");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }),
        "{err}"
    );
    assert_eq!(bytes(&path), before);

    // A real store with its middle overwritten.
    let damaged = dir.path().join("damaged.redb");
    {
        let store = RedbStore::open(&damaged).unwrap();
        for i in 0..50 {
            store
                .register_account(&format!("ap{i}@example.com"))
                .unwrap();
        }
        store.close();
    }
    let mut raw = bytes(&damaged);
    let middle = raw.len() / 2;
    let end = middle + 4096.min(raw.len() - middle);
    for b in &mut raw[middle..end] {
        *b = 0xa5;
    }
    raw[..64].iter_mut().for_each(|b| *b ^= 0xff);
    std::fs::write(&damaged, &raw).unwrap();
    let err = RedbStore::open(&damaged)
        .err()
        .expect("a damaged store must be refused");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }),
        "{err}"
    );
    assert_eq!(bytes(&damaged), raw);
}

#[test]
fn a_redb_file_that_is_not_ours_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, &str>::new("something"))
            .unwrap()
            .insert("k", "v")
            .unwrap();
        txn.commit().unwrap();
    }
    let before = bytes(&path);
    let err = RedbStore::open(&path)
        .err()
        .expect("a foreign redb file must be refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("not an issuer store"), "{err}");
    assert_eq!(bytes(&path), before);
}

#[test]
fn what_is_written_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let store = RedbStore::open(&path).unwrap();
    let account = store.register_account("  AP@Example.com ").unwrap();
    assert_eq!(account.email, "ap@example.com", "emails are normalised");
    assert_eq!(
        store.register_account("ap@example.com").unwrap(),
        account,
        "registering is idempotent"
    );
    store.close();
    assert!(matches!(
        store.account(AccountKey::Client(&account.client_id)),
        Err(StoreError::Closed)
    ));
    let reopened = RedbStore::open(&path).unwrap();
    assert_eq!(
        reopened
            .account(AccountKey::Client(&account.client_id))
            .unwrap(),
        Some(account)
    );
}

/// The refusal-table rules are checked again inside the issuance's own write transaction: a
/// wallet removed or an asset frozen after the handler's checks (a race with an operator) refuses
/// the issuance instead of writing it; the checks passing writes it.
#[tokio::test]
async fn issuance_rules_hold_inside_the_write_transaction() {
    use issuer::store::{Asset, IssuanceCheck, IssuanceOutcome, IssuanceRefusal, MintRecord};
    use reconciler::{
        Callback, ClientRef, IssuerRequestId, Journal, MintIntent, Network, Qty, Symbol,
        TokenizationRequestId,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("issuer.redb")).unwrap();
    let vault = alloy::primitives::Address::repeat_byte(0x11);
    let wallet = alloy::primitives::Address::repeat_byte(0x22);
    let asset = Asset {
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("base").unwrap(),
        vault,
        receipt: alloy::primitives::Address::repeat_byte(0x12),
        authorizer: alloy::primitives::Address::repeat_byte(0x13),
        deploy_block: 1,
        frozen: false,
        mint_qty_max: None,
    };
    store.put_asset(&asset).unwrap();
    let account = store.register_account("ap@example.com").unwrap();
    store.link_account("ap@example.com", "ALP-1").unwrap();
    assert!(store.add_wallet(&account.client_id, wallet).unwrap());
    let record = |trid: &str| {
        let trid = TokenizationRequestId::parse(trid).unwrap();
        MintRecord {
            intent: MintIntent {
                issuer_request_id: IssuerRequestId::for_mint(&trid),
                tokenization_request_id: trid,
                client: ClientRef::ClientExternalAccountId(account.client_id.clone()),
                wallet,
                underlying: asset.underlying.clone(),
                token: asset.token.clone(),
                network: asset.network.clone(),
                qty: Qty::parse("1").unwrap(),
                vault,
                journal: Journal::Pending,
                callback: Callback::NotSent,
                failed_attempts: 0,
                accepted_at: 0,
            },
            fingerprint: "f".into(),
            reject_reason: None,
            problem: None,
            confirmed_at_ms: None,
        }
    };
    let check = IssuanceCheck {
        client_id: account.client_id.clone(),
        wallet,
        underlying: asset.underlying.clone(),
        token: asset.token.clone(),
        network: asset.network.clone(),
        vault,
    };

    // The operator removed the wallet after the handler looked: refused, nothing written.
    assert!(store.remove_wallet(&account.client_id, wallet).unwrap());
    let outcome = store
        .submit_issuance_async(record("t-1"), Some(check.clone()))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        IssuanceOutcome::Refused(IssuanceRefusal::InvalidWallet)
    );
    // The operator froze the asset: refused.
    assert!(store.add_wallet(&account.client_id, wallet).unwrap());
    assert_eq!(store.set_frozen(&asset.underlying, true).unwrap(), 1);
    let outcome = store
        .submit_issuance_async(record("t-2"), Some(check.clone()))
        .await
        .unwrap();
    assert_eq!(outcome, IssuanceOutcome::Refused(IssuanceRefusal::Frozen));
    assert!(
        store.mints(Select::All).unwrap().is_empty(),
        "nothing written"
    );

    // Everything holds: written.
    assert_eq!(store.set_frozen(&asset.underlying, false).unwrap(), 1);
    let outcome = store
        .submit_issuance_async(record("t-3"), Some(check))
        .await
        .unwrap();
    assert!(
        matches!(outcome, IssuanceOutcome::Created(_)),
        "{outcome:?}"
    );
    assert_eq!(store.mints(Select::All).unwrap().len(), 1);
}

/// A damaged wallet entry is an error, never "nobody owns this wallet": a redemption from a
/// whitelisted wallet taken for an unknown sender's would be flagged instead of redeemed.
#[test]
fn a_wallet_owner_that_does_not_parse_is_an_error_not_an_unknown_sender() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let wallet = alloy::primitives::Address::repeat_byte(0x11);
    {
        let store = RedbStore::open(&path).unwrap();
        let account = store.register_account("ap@example.com").unwrap();
        assert!(store.add_wallet(&account.client_id, wallet).unwrap());
        assert_eq!(
            store
                .account(AccountKey::Wallet(wallet))
                .unwrap()
                .map(|a| a.client_id),
            Some(account.client_id)
        );
        store.close();
    }
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, &str>::new("wallets"))
            .unwrap()
            .insert(format!("{wallet:#x}").as_str(), "not an id \u{7}")
            .unwrap();
        txn.commit().unwrap();
    }
    let store = RedbStore::open(&path).unwrap();
    let read = store.account(AccountKey::Wallet(wallet));
    assert!(
        matches!(read, Err(StoreError::Decode { .. })),
        "a damaged owner must be an error: {read:?}"
    );
}

/// Changes the file under `path` behind the store's back, as damage or a bug would.
fn damage(path: &std::path::Path, change: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    change(&txn);
    txn.commit().unwrap();
}

/// An email index entry whose account record is gone is an error, never "no such email": the
/// link would otherwise be answered 404 (final for Alpaca) for an AP that registered.
#[test]
fn an_email_that_points_to_no_account_is_an_error_not_an_unknown_email() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let account = {
        let store = RedbStore::open(&path).unwrap();
        let account = store.register_account("ap@example.com").unwrap();
        store.close();
        account
    };
    damage(&path, |txn| {
        txn.open_table(TableDefinition::<&str, &[u8]>::new("accounts"))
            .unwrap()
            .remove(account.client_id.as_str())
            .unwrap();
    });
    let store = RedbStore::open(&path).unwrap();
    let linked = store.link_account("ap@example.com", "ALP-1");
    assert!(
        matches!(linked, Err(StoreError::Decode { .. })),
        "a dangling email index must be an error: {linked:?}"
    );
    let found = store.account(AccountKey::Email("ap@example.com"));
    assert!(
        matches!(found, Err(StoreError::Decode { .. })),
        "a dangling email index must be an error: {found:?}"
    );
}

fn aapl_asset(vault: alloy::primitives::Address) -> issuer::store::Asset {
    use reconciler::{Network, Symbol};
    issuer::store::Asset {
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("base").unwrap(),
        vault,
        receipt: alloy::primitives::Address::repeat_byte(0x12),
        authorizer: alloy::primitives::Address::repeat_byte(0x13),
        deploy_block: 1,
        frozen: false,
        mint_qty_max: None,
    }
}

fn mint_record(
    trid: &str,
    client: &reconciler::ClientId,
    wallet: alloy::primitives::Address,
    vault: alloy::primitives::Address,
) -> issuer::store::MintRecord {
    use reconciler::{
        Callback, ClientRef, IssuerRequestId, Journal, MintIntent, Network, Qty, Symbol,
        TokenizationRequestId,
    };
    let trid = TokenizationRequestId::parse(trid).unwrap();
    issuer::store::MintRecord {
        intent: MintIntent {
            issuer_request_id: IssuerRequestId::for_mint(&trid),
            tokenization_request_id: trid,
            client: ClientRef::ClientExternalAccountId(client.clone()),
            wallet,
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: Network::parse("base").unwrap(),
            qty: Qty::parse("1").unwrap(),
            vault,
            journal: Journal::Pending,
            callback: Callback::NotSent,
            failed_attempts: 0,
            accepted_at: 0,
        },
        fingerprint: "f".into(),
        reject_reason: None,
        problem: None,
        confirmed_at_ms: None,
    }
}

/// A directory for a store file, and the file's path in it.
fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    (dir, path)
}

/// A mint of Alpaca's request `trid` (client c-1, one wallet, one vault), under its derived id.
fn mint_of(trid: &str) -> issuer::store::MintRecord {
    mint_record(
        trid,
        &reconciler::ClientId::parse("c-1").unwrap(),
        alloy::primitives::Address::repeat_byte(0x22),
        alloy::primitives::Address::repeat_byte(0x11),
    )
}

/// A mint rebuilt from the chain under an issuer_request_id that is not the one derived from
/// Alpaca's id (`IssuerRequestId::for_mint`): the same (record, id) as `record`, under `irid`.
fn under_another_id(record: &issuer::store::MintRecord, irid: &str) -> issuer::store::MintRecord {
    let mut moved = record.clone();
    moved.intent.issuer_request_id = reconciler::IssuerRequestId::parse(irid).unwrap();
    moved
}

/// A tokenization_request_id whose index entry points to no mint record is an error, never a
/// conflict: a 409 is final for Alpaca, for a request that may well be the same one.
#[test]
fn a_request_id_that_points_to_no_mint_is_an_error_not_a_conflict() {
    let (_dir, path) = scratch();
    let record = mint_of("t-1");
    // Only a mint under another id than the derived one needs an index entry.
    let rebuilt = under_another_id(&record, "mint-rebuilt-1");
    {
        let store = RedbStore::open(&path).unwrap();
        assert!(store.insert_mint_if_absent(rebuilt.clone()).unwrap());
        store.close();
    }
    damage(&path, |txn| {
        txn.open_table(TableDefinition::<&str, &[u8]>::new("mints"))
            .unwrap()
            .remove(rebuilt.intent.issuer_request_id.as_str())
            .unwrap();
    });
    let store = RedbStore::open(&path).unwrap();
    let again = store.submit_issuance(record);
    assert!(
        matches!(again, Err(StoreError::Decode { .. })),
        "a dangling request id index must be an error: {again:?}"
    );
}

/// Alpaca's id stays taken by a mint whichever issuer_request_id it is stored under: the one
/// derived from it (every intake) or another (a mint rebuilt from the chain), before and after a
/// reopen. A repeat answers with the stored id, a changed body is a conflict, and no second mint
/// is ever recorded for it.
#[test]
fn a_request_id_stays_taken_whatever_id_its_mint_is_stored_under() {
    use issuer::store::IssuanceOutcome;
    let (_dir, path) = scratch();
    let derived = mint_of("t-derived");
    let rebuilt = under_another_id(&mint_of("t-rebuilt"), "mint-rebuilt-2");
    let changed = |r: &issuer::store::MintRecord| {
        let mut c = r.clone();
        c.fingerprint = "another body".into();
        c
    };
    {
        let store = RedbStore::open(&path).unwrap();
        assert!(matches!(
            store.submit_issuance(derived.clone()).unwrap(),
            IssuanceOutcome::Created(_)
        ));
        assert!(store.insert_mint_if_absent(rebuilt.clone()).unwrap());
        store.close();
    }
    for reopened in [false, true] {
        let store = RedbStore::open(&path).unwrap();
        for r in [&derived, &rebuilt] {
            let repeat = store.submit_issuance(r.clone()).unwrap();
            assert!(
                matches!(&repeat, IssuanceOutcome::Repeat(id) if *id == r.intent.issuer_request_id),
                "reopened {reopened}: {repeat:?}"
            );
            let conflict = store.submit_issuance(changed(r)).unwrap();
            assert!(
                matches!(conflict, IssuanceOutcome::Conflict),
                "{conflict:?}"
            );
        }
        // A rebuild never adds a second mint for a taken request id, under either id.
        let derived_again = mint_of("t-rebuilt");
        assert!(!store.insert_mint_if_absent(derived_again).unwrap());
        assert!(!store
            .insert_mint_if_absent(under_another_id(&derived, "mint-rebuilt-3"))
            .unwrap());
        assert_eq!(store.mints(Select::All).unwrap().len(), 2);
        store.close();
    }
}

/// A mint stored under the id derived from request id T but naming another request id (a
/// rebuild from a deposit whose tag and Alpaca's answer disagree) is never overwritten by an
/// issuance of T: that is an error, and the stored mint stays as it was.
#[test]
fn a_mint_under_t_s_derived_id_naming_another_request_is_never_overwritten() {
    let (_dir, path) = scratch();
    let t = mint_of("t-tagged");
    let mut other = mint_of("t-answered");
    other.intent.issuer_request_id = t.intent.issuer_request_id.clone();
    other.fingerprint = "the rebuilt one".into();
    let store = RedbStore::open(&path).unwrap();
    assert!(store.insert_mint_if_absent(other.clone()).unwrap());
    let answer = store.submit_issuance(t);
    assert!(
        matches!(answer, Err(StoreError::Decode { .. })),
        "must be an error, not a new mint: {answer:?}"
    );
    assert_eq!(store.mints(Select::All).unwrap(), vec![other]);
}

/// A damaged wallet owner found inside the issuance's write transaction is an error, never the
/// final refusal "wallet does not belong to client".
#[tokio::test]
async fn a_damaged_wallet_owner_inside_the_issuance_is_an_error_not_a_refusal() {
    use issuer::store::IssuanceCheck;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let vault = alloy::primitives::Address::repeat_byte(0x11);
    let wallet = alloy::primitives::Address::repeat_byte(0x22);
    let asset = aapl_asset(vault);
    let account = {
        let store = RedbStore::open(&path).unwrap();
        store.put_asset(&asset).unwrap();
        let account = store.register_account("ap@example.com").unwrap();
        store.link_account("ap@example.com", "ALP-1").unwrap();
        assert!(store.add_wallet(&account.client_id, wallet).unwrap());
        store.close();
        account
    };
    damage(&path, |txn| {
        txn.open_table(TableDefinition::<&str, &str>::new("wallets"))
            .unwrap()
            .insert(format!("{wallet:#x}").as_str(), "not an id \u{7}")
            .unwrap();
    });
    let store = RedbStore::open(&path).unwrap();
    let check = IssuanceCheck {
        client_id: account.client_id.clone(),
        wallet,
        underlying: asset.underlying.clone(),
        token: asset.token.clone(),
        network: asset.network.clone(),
        vault,
    };
    let outcome = store
        .submit_issuance_async(
            mint_record("t-1", &account.client_id, wallet, vault),
            Some(check),
        )
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Decode { .. })),
        "a damaged owner must be an error: {outcome:?}"
    );
}

/// A stored block hash of the wrong length is an error, not a panic of the pass.
#[test]
fn a_block_hash_of_the_wrong_length_is_an_error() {
    use alloy::primitives::B256;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let base = reconciler::Network::parse("base").unwrap();
    let vault = alloy::primitives::Address::repeat_byte(0x11);
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .advance(
                &base,
                vault,
                7,
                issuer::store::Scan::default(),
                vec![(7, B256::repeat_byte(7))],
            )
            .unwrap();
        assert_eq!(
            store.block_hashes(&base).unwrap(),
            vec![(7, B256::repeat_byte(7))]
        );
        store.close();
    }
    damage(&path, |txn| {
        txn.open_table(TableDefinition::<(&str, u64), &[u8]>::new("network_blocks"))
            .unwrap()
            .insert(("base", 7), [1u8, 2, 3].as_slice())
            .unwrap();
    });
    let store = RedbStore::open(&path).unwrap();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.block_hashes(&base)));
    assert!(
        matches!(read, Ok(Err(StoreError::Decode { .. }))),
        "a short block hash must be an error, not a panic: {read:?}"
    );
}

/// A write that finds a record it cannot decode answers its caller with that error, not with
/// "store writer stopped": the writer is fine, the record is not, and the operator must be told
/// which.
#[test]
fn a_write_that_meets_a_damaged_record_answers_with_the_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let asset = aapl_asset(alloy::primitives::Address::repeat_byte(0x11));
    {
        let store = RedbStore::open(&path).unwrap();
        store.put_asset(&asset).unwrap();
        store.close();
    }
    damage(&path, |txn| {
        txn.open_table(TableDefinition::<&str, &[u8]>::new("assets"))
            .unwrap()
            .insert("AAPL/base", b"{not json".as_slice())
            .unwrap();
    });
    let store = RedbStore::open(&path).unwrap();
    let frozen = store.set_frozen(&asset.underlying, true);
    assert!(
        matches!(frozen, Err(StoreError::Decode { ref key, .. }) if key == "AAPL/base"),
        "the write must fail with the decode error naming the key: {frozen:?}"
    );
    // The writer still works.
    store.register_account("ap@example.com").unwrap();
}

/// A pass marks its first mint callbacks attempted in one commit: only those never sent move,
/// and only they are answered (their jobs may send without asking Alpaca first). One already
/// attempted, acknowledged, or unknown is left as it was, and the marks survive a reopen.
#[test]
fn only_callbacks_never_sent_are_marked_attempted() {
    use reconciler::{Callback, IssuerRequestId, TokenizationRequestId};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let vault = alloy::primitives::Address::repeat_byte(0x11);
    let wallet = alloy::primitives::Address::repeat_byte(0x22);
    let client = reconciler::ClientId::parse("c-1").unwrap();
    let store = RedbStore::open(&path).unwrap();
    let mut ids = Vec::new();
    for (trid, callback) in [
        ("t-new", Callback::NotSent),
        ("t-tried", Callback::Attempted),
        (
            "t-acked",
            Callback::Acked {
                tx_hash: alloy::primitives::B256::repeat_byte(7),
            },
        ),
        ("t-new-2", Callback::NotSent),
    ] {
        let mut record = mint_record(trid, &client, wallet, vault);
        record.intent.callback = callback;
        ids.push(record.intent.issuer_request_id.clone());
        store.submit_issuance(record).unwrap();
    }
    let unknown = IssuerRequestId::for_mint(&TokenizationRequestId::parse("t-unknown").unwrap());
    let mut asked = ids.clone();
    asked.push(unknown.clone());
    let marked = store.mark_callbacks_attempted(&asked).unwrap();
    assert_eq!(marked, vec![ids[0].clone(), ids[3].clone()]);
    store.close();
    let store = RedbStore::open(&path).unwrap();
    let callback = |id: &IssuerRequestId| store.mint(id).unwrap().unwrap().intent.callback;
    assert_eq!(callback(&ids[0]), Callback::Attempted);
    assert_eq!(callback(&ids[1]), Callback::Attempted);
    assert!(matches!(callback(&ids[2]), Callback::Acked { .. }));
    assert_eq!(callback(&ids[3]), Callback::Attempted);
    assert!(store.mint(&unknown).unwrap().is_none(), "nothing made up");
    assert!(
        store.mark_callbacks_attempted(&ids).unwrap().is_empty(),
        "a second mark moves nothing"
    );
}

/// HA: what a new leader imports of the previous leader's progress never takes back what its own
/// store knows of a call to Alpaca (an acknowledged callback, one marked attempted), and a
/// redemption the previous leader had not yet asked Alpaca about is left for the chain to tell
/// (a reorg may have dropped its transfer); one it had asked about is imported, one final here
/// stays final.
#[test]
fn imported_progress_never_takes_back_a_call_this_store_knows_of() {
    use issuer::store::MintProgress;
    use reconciler::{
        Callback, IssuerRequestId, Network, Qty, Redemption, RedemptionState, Symbol,
        TokenizationRequestId,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("issuer.redb")).unwrap();
    let vault = alloy::primitives::Address::repeat_byte(0x11);
    let wallet = alloy::primitives::Address::repeat_byte(0x22);
    let client = reconciler::ClientId::parse("c-1").unwrap();
    let acked = Callback::Acked {
        tx_hash: alloy::primitives::B256::repeat_byte(7),
    };
    let refused = Callback::Refused {
        status: 422,
        code: None,
        message: "no".into(),
    };
    let progress = |callback: &Callback| MintProgress {
        callback: callback.clone(),
        failed_attempts: 1,
        problem: None,
    };
    // (local callback, shared callback, callback after the import)
    let cases = [
        (acked.clone(), Callback::Attempted, acked.clone()),
        (Callback::Attempted, Callback::NotSent, Callback::Attempted),
        (Callback::NotSent, Callback::Attempted, Callback::Attempted),
        (Callback::NotSent, refused.clone(), refused.clone()),
        (refused.clone(), Callback::Attempted, Callback::Attempted),
        (Callback::Attempted, acked.clone(), acked.clone()),
    ];
    for (i, (local, shared, expected)) in cases.iter().enumerate() {
        let mut record = mint_record(&format!("t-{i}"), &client, wallet, vault);
        record.intent.callback = local.clone();
        let id = record.intent.issuer_request_id.clone();
        store.submit_issuance(record).unwrap();
        store
            .merge_mint_progress(vec![(id.clone(), progress(shared))])
            .unwrap();
        let now = store.mint(&id).unwrap().unwrap().intent.callback;
        assert_eq!(&now, expected, "local {local:?}, shared {shared:?}");
    }
    let unknown = IssuerRequestId::for_mint(&TokenizationRequestId::parse("t-none").unwrap());
    let merged = store.merge_mint_progress(vec![(unknown.clone(), progress(&Callback::Attempted))]);
    assert_eq!(merged.unwrap(), 0);
    assert!(store.mint(&unknown).unwrap().is_none(), "nothing made up");

    let redemption = |byte: u8, state: RedemptionState| Redemption {
        id: IssuerRequestId::for_redemption(alloy::primitives::B256::repeat_byte(byte), 0),
        vault,
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("base").unwrap(),
        sender: wallet,
        client_id: Some(client.clone()),
        client_account_id: None,
        qty: Qty::parse("1").unwrap(),
        tx_hash: alloy::primitives::B256::repeat_byte(byte),
        log_index: 0,
        block_number: 5,
        state,
        failed_attempts: 0,
    };
    let detected = redemption(1, RedemptionState::Detected);
    assert_eq!(
        store
            .merge_redemption_facts(vec![detected.clone()])
            .unwrap(),
        0
    );
    assert!(store.redemption(&detected.id).unwrap().is_none());
    let requesting = redemption(2, RedemptionState::Requesting);
    assert_eq!(
        store
            .merge_redemption_facts(vec![requesting.clone()])
            .unwrap(),
        1
    );
    let active = store.redemptions(Select::Active).unwrap();
    assert_eq!(active, vec![requesting], "imported, and still to do");
    let trid = TokenizationRequestId::parse("tr-9").unwrap();
    let burned = redemption(
        3,
        RedemptionState::Burned {
            tokenization_request_id: trid.clone(),
            tx_hash: alloy::primitives::B256::repeat_byte(9),
        },
    );
    assert_eq!(
        store.merge_redemption_facts(vec![burned.clone()]).unwrap(),
        1
    );
    let older = redemption(
        3,
        RedemptionState::Requested {
            tokenization_request_id: trid,
        },
    );
    assert_eq!(store.merge_redemption_facts(vec![older]).unwrap(), 0);
    assert_eq!(store.redemption(&burned.id).unwrap(), Some(burned));
}
