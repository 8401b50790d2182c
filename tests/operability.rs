//! What an operator of a money-moving service relies on: `/metrics` in Prometheus text format
//! without a key from the operators' addresses, naming what happened (intents, Alpaca calls,
//! confirm-to-callback latency, passes, the chain head, supply); `/livez` (and its older name
//! `/health`) and `/readyz`; and a graceful stop: SIGTERM under load, with Alpaca hanging, exits 0
//! within 5 s and every intent that was answered 200 is on disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::{spawn_issuer, wait_healthy};
use common::stack::{eventually, Issuer, World, AP_WALLET};
use issuer::sim::FaultsPatch;
use issuer::store::{RedbStore, Store};
use reconciler::{IssuerRequestId, Policy, TokenizationRequestId};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The value of the first sample line starting with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_probes_tell_what_happened() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-metrics-1", "1.5").await;
    eventually(Duration::from_secs(20), "callback acknowledged", || async {
        let id = IssuerRequestId::for_mint(&TokenizationRequestId::parse("tr-metrics-1").unwrap());
        matches!(
            issuer.store.mint(&id).unwrap().unwrap().intent.callback,
            reconciler::Callback::Acked { .. }
        )
    })
    .await;
    // A refused one too.
    let refused = reqwest::Client::new()
        .post(format!("{}/tokenization/mint", issuer.url))
        .header("X-API-KEY", issuer::cli::LOCAL_API_KEY)
        .json(&json!({"tokenization_request_id": "tr-bad", "qty": "1", "underlying_symbol": "MSFT",
                      "token_symbol": "tMSFT", "network": "anvil",
                      "client_external_account_id": world.client_id.as_str(), "wallet_address": AP_WALLET}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The supply is read every 2 s: wait for the one after the mint.
    eventually(Duration::from_secs(15), "supply after the mint", || async {
        let text = reqwest::get(format!("{}/metrics", issuer.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sample(
            &text,
            r#"issuer_asset_supply_shares{underlying="AAPL",network="anvil"}"#,
        )
        .is_some_and(|v| v >= 1.5)
    })
    .await;
    // No key needed from an allowed address; Prometheus text format.
    let answer = reqwest::get(format!("{}/metrics", issuer.url))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.contains("openmetrics-text"), "{content_type}");
    let text = answer.text().await.unwrap();
    let at_least = |prefix: &str, min: f64| {
        let value = sample(&text, prefix).unwrap_or_else(|| panic!("{prefix} missing:\n{text}"));
        assert!(value >= min, "{prefix} = {value} < {min}");
    };
    at_least(
        r#"issuer_intents_total{outcome="accepted",reason="created"}"#,
        1.0,
    );
    at_least(
        r#"issuer_intents_total{outcome="refused",reason="invalid_token"}"#,
        1.0,
    );
    at_least(
        r#"issuer_alpaca_calls_total{route="callback/mint",outcome="ok"}"#,
        1.0,
    );
    at_least("issuer_confirm_to_callback_seconds_count", 1.0);
    at_least("issuer_pass_duration_seconds_count", 1.0);
    at_least(r#"issuer_passes_total{outcome="ok""#, 1.0);
    at_least("issuer_chain_head_block", 1.0);
    at_least(
        r#"issuer_asset_supply_shares{underlying="AAPL",network="anvil"}"#,
        1.5,
    );
    at_least("issuer_transactions_in_flight", 0.0);
    // The store's group commits: the issuance, the pass's records.
    at_least("issuer_store_commits_total", 1.0);
    at_least("issuer_transactions_resent_total", 0.0);
    at_least("issuer_store_committed_writes_total", 1.0);
    at_least("issuer_store_commit_duration_seconds_count", 1.0);
    at_least(r#"issuer_stuck_items{kind="mint"}"#, 0.0);
    assert!(text.contains("issuer_scan_lag_blocks{vault="), "{text}");
    assert!(
        text.contains(r#"issuer_mints{state="awaiting_callback"}"#),
        "{text}"
    );

    for probe in ["/livez", "/health", "/readyz"] {
        let answer = reqwest::get(format!("{}{probe}", issuer.url))
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{probe}");
        let body: Value = answer.json().await.unwrap();
        assert!(
            body["status"] == "ok" || body["status"] == "ready",
            "{probe}: {body}"
        );
    }
    issuer.stop().await;
}

/// SIGTERM while 32 clients keep posting issuances and Alpaca hangs on a callback: the process
/// exits 0 within 5 s, and every issuance it answered 200 is in the store afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_cleanly_and_keeps_every_answered_intent() {
    let world = World::start(None).await;
    let process = spawn_issuer(&world, None);
    wait_healthy(&process).await;
    // A mint whose callback hangs at Alpaca when the signal comes.
    world
        .sim
        .patch_faults(&FaultsPatch {
            latency_ms: Some(30_000),
            ..FaultsPatch::default()
        })
        .unwrap();
    world.mint(&process.url, "tr-hanging", "1").await;

    let answered: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_millis(2_500);
    let mut clients = Vec::new();
    for c in 0..32 {
        let (url, answered) = (process.url.clone(), answered.clone());
        let client_id = world.client_id.to_string();
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0.. {
                if Instant::now() > stop_at + Duration::from_secs(3) {
                    break;
                }
                let trid = format!("tr-load-{c}-{i}");
                let sent = http
                    .post(format!("{url}/tokenization/mint"))
                    .header("X-API-KEY", issuer::cli::LOCAL_API_KEY)
                    .timeout(Duration::from_secs(5))
                    .json(&json!({"tokenization_request_id": trid, "qty": "1",
                        "underlying_symbol": "AAPL", "token_symbol": "tAAPL", "network": "anvil",
                        "client_external_account_id": client_id, "wallet_address": AP_WALLET}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => answered.lock().unwrap().push(trid),
                    Ok(_) | Err(_) => {
                        if Instant::now() > stop_at {
                            break;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep_until(stop_at.into()).await;
    let pid = process.child.id();
    let signalled = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut process = process;
    let exit = loop {
        if let Some(exit) = process.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = signalled.elapsed();
    assert!(exit.success(), "exit status {exit:?}");
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "only {} answered", answered.len());
    let store = RedbStore::open(&world.db_path).unwrap();
    for trid in &answered {
        let id = IssuerRequestId::for_mint(&TokenizationRequestId::parse(trid).unwrap());
        assert!(
            store.mint(&id).unwrap().is_some(),
            "{trid} answered 200 but lost"
        );
    }
    eprintln!(
        "SIGTERM to exit: {took:?}; {} intents answered, all on disk",
        answered.len()
    );
}
