//! Killing the issuer at each named point of the mint path and starting it again ends with exactly
//! one Deposit for the request, the AP holding exactly the quantity, and exactly one mint callback
//! at Alpaca (the simulator counts them). The issuer runs as the real binary; the crash is a real
//! `abort()` at the point named by `ISSUER_CRASH_AT`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::process::{spawn_issuer, wait_healthy, Process};
use common::stack::{eventually, World};
use std::time::{Duration, Instant};

async fn wait_exit(process: &mut Process, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "the issuer did not crash within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crash_then_recover(point: &str) {
    let world = World::start(None).await;
    let trid = format!("tr-crash-{point}");

    let mut first = spawn_issuer(&world, Some(point));
    wait_healthy(&first).await;
    let reply = world.mint(&first.url, &trid, "1.25").await;
    let irid = reply["issuer_request_id"].as_str().unwrap().to_owned();
    let status = wait_exit(&mut first, Duration::from_secs(30)).await;
    assert!(
        !status.success(),
        "the process must have aborted at {point}"
    );
    drop(first);

    let second = spawn_issuer(&world, None);
    wait_healthy(&second).await;
    eventually(
        Duration::from_secs(30),
        "the mint converges after restart",
        || async {
            world.sim.mint_callback_count(&trid) >= 1
                && world.balance(world.ap_wallet).await == U256::from(1_250_000_000_000_000_000u128)
        },
    )
    .await;
    // Let the restarted process run several more passes, then count.
    second.more_passes(5).await;
    assert_eq!(
        world.deposits_for(&irid).await,
        1,
        "exactly one Deposit after a crash at {point}"
    );
    assert_eq!(
        world.balance(world.ap_wallet).await,
        U256::from(1_250_000_000_000_000_000u128)
    );
    assert_eq!(
        world.sim.mint_callback_count(&trid),
        1,
        "exactly one callback after a crash at {point}"
    );
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_signing() {
    crash_then_recover("after_sign").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_broadcast() {
    crash_then_recover("after_broadcast").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_deposit_mined_before_recorded() {
    crash_then_recover("after_deposit_seen").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_callbacks_marked_before_any_was_sent() {
    crash_then_recover("after_callbacks_marked").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_callback_before_ack_recorded() {
    crash_then_recover("after_callback").await;
}

/// Redemption path: the AP's transfer arrives while the issuer runs with a crash point armed; the
/// restarted issuer ends with one redeem request at Alpaca and one burn.
async fn redeem_crash_then_recover(point: &str) {
    let world = World::start(None).await;
    let bot = common::bot().address();
    let steady = spawn_issuer(&world, None);
    wait_healthy(&steady).await;
    world
        .minted(&steady.url, &format!("tr-pre-{point}"), "2")
        .await;
    drop(steady);

    let mut armed = spawn_issuer(&world, Some(point));
    wait_healthy(&armed).await;
    let tx = world
        .transfer(
            common::STRANGER_KEY,
            bot,
            U256::from(1_000_000_000_000_000_000u128),
        )
        .await;
    let id = reconciler::IssuerRequestId::for_redemption(tx, 0);
    let status = wait_exit(&mut armed, Duration::from_secs(30)).await;
    assert!(
        !status.success(),
        "the process must have aborted at {point}"
    );
    drop(armed);

    let second = spawn_issuer(&world, None);
    wait_healthy(&second).await;
    let burns = || async {
        let chain = issuer::chain::Chain::connect(&world.rpc(), common::bot())
            .await
            .unwrap();
        let head = chain.head().await.unwrap();
        chain
            .scan_burns(world.deployed.vault, 0, head)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.redemption_id == id)
            .count()
    };
    eventually(
        Duration::from_secs(40),
        "the burn after restart",
        || async { burns().await >= 1 },
    )
    .await;
    second.more_passes(5).await;
    assert_eq!(
        burns().await,
        1,
        "exactly one burn after a crash at {point}"
    );
    assert_eq!(
        world.redeem_requests_for(id.as_str()).len(),
        1,
        "one redeem request after a crash at {point}"
    );
    assert_eq!(
        world.total_supply().await,
        U256::from(1_000_000_000_000_000_000u128)
    );
    assert_eq!(world.balance(bot).await, U256::ZERO);
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_redeem_call() {
    redeem_crash_then_recover("after_redeem_call").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_alpaca_completes() {
    redeem_crash_then_recover("after_journal_seen").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_burn_broadcast() {
    redeem_crash_then_recover("after_burn_broadcast").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_burn_mined_before_recorded() {
    redeem_crash_then_recover("after_burn_seen").await;
}

/// Intake durability: the process is killed (SIGKILL) while issuance requests are still arriving;
/// every request that was answered 200 is in the redb file when it is opened again.
#[tokio::test(flavor = "multi_thread")]
async fn killing_the_process_loses_no_answered_issuance() {
    use issuer::store::{RedbStore, Store};
    let world = World::start(None).await;
    let mut process = spawn_issuer(&world, None);
    wait_healthy(&process).await;

    let client = reqwest::Client::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..400 {
        let client = client.clone();
        let tx = tx.clone();
        let url = format!("{}/inkind/issuance", process.url);
        let body = serde_json::json!({
            "tokenization_request_id": format!("tr-kill-{i}"),
            "qty": "1",
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "network": "anvil",
            "client_external_account_id": world.client_id.as_str(),
            "wallet_address": common::stack::AP_WALLET,
        });
        tokio::spawn(async move {
            let answer = client
                .post(url)
                .header("X-API-KEY", issuer::cli::LOCAL_API_KEY)
                .json(&body)
                .send()
                .await;
            if let Ok(answer) = answer {
                if answer.status() == 200 {
                    if let Ok(value) = answer.json::<serde_json::Value>().await {
                        let _ = tx.send(
                            value["issuer_request_id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        );
                    }
                }
            }
        });
    }
    drop(tx);
    // Kill as soon as 100 answers are in, with the rest still in flight.
    let mut answered = Vec::new();
    while answered.len() < 100 {
        answered.push(rx.recv().await.unwrap());
    }
    process.child.kill().unwrap();
    let _ = process.child.wait();
    while let Ok(id) = rx.try_recv() {
        answered.push(id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(id) = rx.try_recv() {
        answered.push(id);
    }
    drop(process);

    let store = RedbStore::open(&world.db_path).unwrap();
    for id in &answered {
        let id = reconciler::IssuerRequestId::parse(id).unwrap();
        assert!(
            store.mint(&id).unwrap().is_some(),
            "{id} was answered 200 but is not on disk"
        );
    }
    assert!(answered.len() >= 100);
}
