//! A confirmed journal becomes tokens in the AP's wallet exactly once, and Alpaca receives exactly
//! one mint callback carrying the deposit's transaction hash — over real HTTP, a real anvil and
//! the Alpaca simulator. Also: several mints converge together, a rejected journal mints nothing,
//! and a deleted cache neither mints nor calls back twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::stack::{eventually, Issuer, World};
use reconciler::Policy;
use std::time::Duration;

fn units(whole: u64, frac_18: u64) -> U256 {
    U256::from(whole) * U256::from(10u64).pow(U256::from(18)) + U256::from(frac_18)
}

#[tokio::test(flavor = "multi_thread")]
async fn confirmed_mint_lands_once_and_alpaca_hears_once() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;

    let reply = world.mint(&issuer.url, "tr-mint-1", "1.5").await;
    let irid = reply["issuer_request_id"].as_str().unwrap().to_owned();

    eventually(Duration::from_secs(30), "callback acknowledged", || async {
        world.sim.mint_callback_count("tr-mint-1") >= 1
    })
    .await;
    assert_eq!(
        world.balance(world.ap_wallet).await,
        units(1, 500_000_000_000_000_000)
    );
    assert_eq!(world.deposits_for(&irid).await, 1);
    let request = world.sim.request("tr-mint-1").unwrap();
    let wire = serde_json::to_value(&request).unwrap();
    assert_eq!(wire["status"], "completed", "{wire}");

    // More passes change nothing: still one deposit, one callback.
    issuer.more_passes(5).await;
    assert_eq!(world.deposits_for(&irid).await, 1);
    assert_eq!(world.sim.mint_callback_count("tr-mint-1"), 1);
    assert_eq!(
        world.balance(world.ap_wallet).await,
        units(1, 500_000_000_000_000_000)
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn many_mints_share_transactions_and_each_lands_once() {
    let world = World::start(Some(1)).await;
    let issuer = Issuer::start(
        &world,
        Policy {
            mints_per_tx_max: 8,
            ..Policy::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let reply = world
            .mint(&issuer.url, &format!("tr-many-{i}"), "0.000000000000000001")
            .await;
        ids.push(reply["issuer_request_id"].as_str().unwrap().to_owned());
    }
    eventually(Duration::from_secs(60), "20 callbacks", || async {
        (0..20).all(|i| world.sim.mint_callback_count(&format!("tr-many-{i}")) >= 1)
    })
    .await;
    assert_eq!(world.balance(world.ap_wallet).await, U256::from(20));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(world.deposits_for(id).await, 1, "mint {i}");
        assert_eq!(world.sim.mint_callback_count(&format!("tr-many-{i}")), 1);
    }
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_journal_mints_nothing() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    let body = serde_json::json!({
        "issuer_url": issuer.url,
        "issuer_api_key": issuer::cli::LOCAL_API_KEY,
        "tokenization_request_id": "tr-rejected",
        "qty": "3",
        "underlying_symbol": "AAPL",
        "token_symbol": "tAAPL",
        "network": "anvil",
        "client": { "client_external_account_id": world.client_id.as_str() },
        "wallet_address": common::stack::AP_WALLET,
        "confirm": "rejected",
    });
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/sim/mint", world.sim_url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let irid = reply["issuer_request_id"].as_str().unwrap().to_owned();
    issuer.more_passes(5).await;
    assert_eq!(world.balance(world.ap_wallet).await, U256::ZERO);
    assert_eq!(world.deposits_for(&irid).await, 0);
    assert_eq!(world.sim.mint_callback_count("tr-rejected"), 0);
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_cache_neither_mints_nor_calls_back_twice() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    let reply = world.mint(&issuer.url, "tr-lost-cache", "2").await;
    let irid = reply["issuer_request_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "callback", || async {
        world.sim.mint_callback_count("tr-lost-cache") >= 1
    })
    .await;
    issuer.stop().await;

    // The cache is gone; an operator re-adds the asset (it lives nowhere else) and restarts.
    world.lose_cache();
    let issuer = Issuer::start(&world, Policy::default()).await;
    eventually(
        Duration::from_secs(30),
        "the deposit is recovered from chain and Alpaca",
        || async {
            issuer
                .store
                .mint(&reconciler::IssuerRequestId::parse(&irid).unwrap())
                .unwrap()
                .is_some_and(|m| matches!(m.intent.callback, reconciler::Callback::Acked { .. }))
        },
    )
    .await;
    issuer.more_passes(5).await;
    assert_eq!(world.deposits_for(&irid).await, 1);
    assert_eq!(world.sim.mint_callback_count("tr-lost-cache"), 1);
    assert_eq!(world.balance(world.ap_wallet).await, units(2, 0));
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn callbacks_get_through_a_flaky_alpaca() {
    use issuer::sim::FaultsPatch;
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    // Half of Alpaca's Broker API answers are 503 and some of the rest 429 with Retry-After
    // (the simulator's control routes, which play Alpaca's side of the mint, are never faulted).
    world
        .sim
        .patch_faults(&FaultsPatch {
            error_rate_5xx: Some(0.5),
            rate_429: Some(0.3),
            retry_after_secs: Some(1),
            ..FaultsPatch::default()
        })
        .unwrap();
    world.mint(&issuer.url, "tr-flaky", "1").await;
    eventually(
        Duration::from_secs(60),
        "callback through the faults",
        || async { world.sim.mint_callback_count("tr-flaky") >= 1 },
    )
    .await;
    issuer.more_passes(5).await;
    assert_eq!(world.sim.mint_callback_count("tr-flaky"), 1);
    assert_eq!(world.balance(world.ap_wallet).await, units(1, 0));
    let snapshot = world.sim.snapshot();
    let callback_hits = snapshot
        .hits
        .get("POST callback/mint")
        .copied()
        .unwrap_or(0);
    assert!(
        callback_hits > 1,
        "the faults were exercised: {:?}",
        snapshot.hits
    );
    issuer.stop().await;
}

/// One confirmed mint that cannot be estimated (its receiver reverts: here the zero address,
/// whitelisted before intake refused it) waits with a readable problem for an operator, and the
/// five mints planned in the same batch still go out together as one transaction.
#[tokio::test(flavor = "multi_thread")]
async fn a_mint_that_does_not_estimate_neither_blocks_nor_splits_its_batch() {
    use issuer::store::{MintRecord, RedbStore, Store};
    use reconciler::{
        Callback, ClientRef, IssuerRequestId, Journal, MintIntent, Network, Qty, Symbol,
        TokenizationRequestId,
    };
    let world = World::start(None).await;
    let record = |trid: &str, wallet: alloy::primitives::Address| {
        let trid = TokenizationRequestId::parse(trid).unwrap();
        MintRecord {
            intent: MintIntent {
                issuer_request_id: IssuerRequestId::for_mint(&trid),
                tokenization_request_id: trid,
                client: ClientRef::ClientExternalAccountId(world.client_id.clone()),
                wallet,
                underlying: Symbol::parse("AAPL").unwrap(),
                token: Symbol::parse("tAAPL").unwrap(),
                network: Network::parse("anvil").unwrap(),
                qty: Qty::parse("1").unwrap(),
                vault: world.deployed.vault,
                journal: Journal::Completed,
                callback: Callback::NotSent,
                failed_attempts: 0,
                accepted_at: 0,
            },
            fingerprint: String::new(),
            reject_reason: None,
            problem: None,
            confirmed_at_ms: None,
        }
    };
    // Six confirmed intents before the issuer starts, so its first pass plans them as one batch.
    {
        let store = RedbStore::open(&world.db_path).unwrap();
        store
            .submit_issuance(record("tr-zero", alloy::primitives::Address::ZERO))
            .unwrap();
        for i in 0..5 {
            let trid = format!("tr-batch-{i}");
            store
                .submit_issuance(record(&trid, world.ap_wallet))
                .unwrap();
            world
                .sim
                .add_mint_request(issuer::sim::NewMint {
                    tokenization_request_id: Some(trid),
                    issuer_request_id: None,
                    qty: "1".into(),
                    underlying_symbol: "AAPL".into(),
                    token_symbol: "tAAPL".into(),
                    network: "anvil".into(),
                    client: issuer::sim::SimClient::ClientExternalAccountId(
                        world.client_id.to_string(),
                    ),
                    wallet_address: common::stack::AP_WALLET.into(),
                })
                .unwrap();
        }
        store.close();
    }
    let issuer = Issuer::start(&world, Policy::default()).await;
    eventually(Duration::from_secs(30), "five mints on chain", || async {
        world.balance(world.ap_wallet).await == units(5, 0)
    })
    .await;
    let chain = issuer::chain::Chain::connect(&world.rpc(), common::bot())
        .await
        .unwrap();
    let head = chain.head().await.unwrap();
    let (deposits, _) = chain
        .scan_deposits(world.deployed.vault, 0, head)
        .await
        .unwrap();
    let txs: std::collections::BTreeSet<_> = deposits.iter().map(|d| d.tx_hash).collect();
    assert_eq!(deposits.len(), 5, "{deposits:?}");
    assert_eq!(txs.len(), 1, "the five mints went out as one transaction");

    let zero = IssuerRequestId::for_mint(&TokenizationRequestId::parse("tr-zero").unwrap());
    let stored = issuer.store.mint(&zero).unwrap().unwrap().problem.unwrap();
    assert!(
        matches!(stored, issuer::store::MintProblem::DoesNotEstimate { .. }),
        "stored typed: {stored:?}"
    );
    let problem = stored.to_string();
    assert!(problem.contains("does not estimate"), "{problem}");
    assert!(
        !problem.chars().any(char::is_control),
        "readable problem text: {problem:?}"
    );
    assert_eq!(world.deposits_for(zero.as_str()).await, 0);
    issuer.stop().await;
}

/// A new block starts a pass: with the timer at 30 s and 1-second blocks, the callback for a
/// mint goes out within a few blocks of its confirmation, not at the next timer tick.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_head_starts_a_pass_without_waiting_for_the_timer() {
    let world = World::start(Some(1)).await;
    let issuer =
        Issuer::start_with_interval(&world, Policy::default(), Duration::from_secs(30)).await;
    // The first pass runs at start; wait past it so the timer is far away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    world.mint(&issuer.url, "tr-head-1", "1").await;
    let confirmed = std::time::Instant::now();
    eventually(Duration::from_secs(25), "callback", || async {
        world.sim.mint_callback_count("tr-head-1") >= 1
    })
    .await;
    let took = confirmed.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "confirm to callback took {took:?} with the timer at 30 s"
    );
    issuer.stop().await;
}
