//! The Broker API client against the Alpaca simulator, over real HTTP on 127.0.0.1.
//!
//! Guards: a redeem is created once per Idempotency-Key and once per issuer_request_id (a reuse is
//! a final 422, a lost answer replays the same request); the simulator speaks only Alpaca's
//! current API (no `client_id`, keys of at most 36 characters, `tokenization_request_id`); lookups by either id; the journal
//! moves pending -> completed/rejected as the issuer polls; every spelling of an empty `tx_hash`
//! decodes; retries happen exactly on transport errors, 5xx and 429 (honouring Retry-After) and
//! never on other 4xx; `/sim/mint` plays Alpaca's side of a mint against an issuer and the mint
//! callback completes it exactly once; Alpaca's recorded JSON bodies decode.

// A test fails loudly on the first surprise: unwrapping is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{Address, B256};
use issuer::alpaca::{
    Broker, BrokerClient, BrokerConfig, BrokerError, MintCallback, RedeemRequest, RequestFilter,
    RequestStatus, RequestType, RetryPolicy, TokenizationRequest,
};
use issuer::sim::{self, Faults, NewMint, PendingTxHash, RedeemOutcome, Sim, SimClient, SimConfig};
use reconciler::{
    AlpacaAccountId, ClientId, ClientRef, IssuerRequestId, Network, Qty, Symbol,
    TokenizationRequestId,
};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "acct-issuer-1";
const KEY: &str = "sim-key";
const SECRET: &str = "sim-secret-do-not-print";
const WALLET: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

/// A running simulator; dropping it shuts the server down.
struct Running {
    sim: Sim,
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Needs a tokio runtime (it spawns the server).
fn start_sim() -> Running {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sim = Sim::new(SimConfig {
        account_id: ACCOUNT.to_owned(),
        api_key: KEY.to_owned(),
        api_secret: SECRET.to_owned(),
        seed: Some(7),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    tokio::spawn(sim::serve(listener, sim.clone(), shutdown));
    Running {
        sim,
        url,
        _stop: stop,
    }
}

fn policy(attempts_max: u32) -> RetryPolicy {
    RetryPolicy {
        attempts_max,
        backoff_base: Duration::from_millis(10),
        backoff_cap: Duration::from_millis(50),
        jitter_percent: 0,
        retry_after_cap: Duration::from_secs(5),
        defer_rate_limits: false,
        attempt_timeout: Duration::from_secs(5),
    }
}

fn client_with(url: &str, secret: &str, attempts_max: u32) -> BrokerClient {
    BrokerClient::new(BrokerConfig {
        base_url: url.to_owned(),
        account_id: ACCOUNT.to_owned(),
        api_key: KEY.to_owned(),
        api_secret: secret.to_owned(),
        retry: policy(attempts_max),
    })
    .unwrap()
}

fn client(running: &Running) -> BrokerClient {
    client_with(&running.url, SECRET, 3)
}

fn redeem_request(issuer_request_id: &str, qty: &str) -> RedeemRequest {
    RedeemRequest {
        issuer_request_id: IssuerRequestId::parse(issuer_request_id).unwrap(),
        underlying_symbol: Symbol::parse("AAPL").unwrap(),
        token_symbol: Symbol::parse("tAAPL").unwrap(),
        client: client_42(),
        qty: Qty::parse(qty).unwrap(),
        network: Network::parse("anvil").unwrap(),
        wallet_address: WALLET.parse().unwrap(),
        tx_hash: B256::repeat_byte(0xab),
    }
}

fn new_mint(id: Option<&str>) -> NewMint {
    NewMint {
        tokenization_request_id: id.map(str::to_owned),
        issuer_request_id: None,
        qty: "3.5".to_owned(),
        underlying_symbol: "AAPL".to_owned(),
        token_symbol: "tAAPL".to_owned(),
        network: "anvil".to_owned(),
        client: SimClient::ClientExternalAccountId("client-42".to_owned()),
        wallet_address: WALLET.to_owned(),
    }
}

fn client_42() -> ClientRef {
    ClientRef::ClientExternalAccountId(ClientId::parse("client-42").unwrap())
}

fn trid(id: &str) -> TokenizationRequestId {
    TokenizationRequestId::parse(id).unwrap()
}

async fn set_faults(running: &Running, patch: Value) {
    let answer = reqwest::Client::new()
        .post(format!("{}/sim/faults", running.url))
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn redeem_creates_one_request_and_the_same_key_replays_it() {
    let running = start_sim();
    let broker = client(&running);
    let request = redeem_request("red-1", "2.5");

    let first = broker.redeem(&request, "key-red-1").await.unwrap();
    assert_eq!(first.kind, RequestType::Redeem);
    assert_eq!(first.status, RequestStatus::Pending);
    assert_eq!(
        first.issuer_request_id.as_ref(),
        Some(&request.issuer_request_id)
    );
    assert_eq!(first.qty, request.qty);
    assert_eq!(first.wallet_address, request.wallet_address);
    assert_eq!(first.tx_hash, Some(request.tx_hash));
    assert_eq!(first.client(), Some(client_42()));

    let again = broker.redeem(&request, "key-red-1").await.unwrap();
    assert_eq!(again.id, first.id);

    let state = running.sim.snapshot();
    assert_eq!(state.requests.len(), 1, "one request for one key");
    assert_eq!(state.redeem_call_count, 2, "both calls reached Alpaca");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_issuer_request_id_under_another_key_is_a_final_422() {
    let running = start_sim();
    let broker = client(&running);
    let request = redeem_request("red-2", "1");
    broker.redeem(&request, "key-a").await.unwrap();

    let err = broker.redeem(&request, "key-b").await.unwrap_err();
    assert!(
        matches!(&err, BrokerError::Status { status: 422, message, .. } if message.contains("already exists")),
        "{err:?}"
    );
    assert_eq!(
        running.sim.hits("POST callback/redeem"),
        2,
        "a 422 is not retried"
    );
    assert_eq!(running.sim.snapshot().requests.len(), 1);

    // The recovery the caller does: look it up by our id.
    let found = broker
        .request_by_issuer_id(&request.issuer_request_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.issuer_request_id.as_ref(),
        Some(&request.issuer_request_id)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_refuses_what_alpaca_would_refuse_without_sending_it() {
    let running = start_sim();
    let broker = client(&running);
    let long_key = "k".repeat(37);
    let err = broker
        .redeem(&redeem_request("red-3", "1"), &long_key)
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidRequest(_)), "{err:?}");
    let err = broker
        .redeem(&redeem_request("red-3", "1.0000000001"), "key")
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidRequest(_)), "{err:?}");
    assert_eq!(running.sim.snapshot().hits_total, 0);
    assert!(broker
        .redeem(&redeem_request("red-3", "1.000000001"), &"k".repeat(36))
        .await
        .is_ok());
}

/// The simulator is Alpaca as it is now: a body naming its client by the deprecated `client_id`,
/// or an Idempotency-Key longer than 36 characters, is refused with 422, so a regression in the
/// issuer's calls fails the tests instead of passing against a lenient fake.
#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_refuses_the_deprecated_client_id_and_long_keys() {
    let running = start_sim();
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/accounts/{ACCOUNT}/tokenization/callback/redeem",
        running.url
    );
    let mut body = serde_json::to_value(redeem_request("red-9", "1")).unwrap();
    let send = |body: Value, key: String| {
        http.post(&url)
            .basic_auth(KEY, Some(SECRET))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let answer = send(body.clone(), "k".repeat(37)).await.unwrap();
    assert_eq!(answer.status(), 422);
    let text = answer.text().await.unwrap();
    assert!(text.contains("36"), "{text}");

    body["client_id"] = json!("client-42");
    let answer = send(body.clone(), "k".repeat(36)).await.unwrap();
    assert_eq!(answer.status(), 422);
    let text = answer.text().await.unwrap();
    assert!(text.contains("client_id"), "{text}");
    assert!(
        running.sim.snapshot().requests.is_empty(),
        "nothing created"
    );

    // The same for the mint callback.
    running
        .sim
        .add_mint_request(new_mint(Some("tr-cb")))
        .unwrap();
    let answer = http
        .post(format!(
            "{}/v1/accounts/{ACCOUNT}/tokenization/callback/mint",
            running.url
        ))
        .basic_auth(KEY, Some(SECRET))
        .json(&json!({
            "tokenization_request_id": "tr-cb",
            "client_id": "client-42",
            "wallet_address": WALLET,
            "tx_hash": format!("{:#x}", B256::repeat_byte(1)),
            "network": "anvil",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 422);
    assert_eq!(
        running.sim.request("tr-cb").unwrap().status,
        RequestStatus::Pending,
        "not completed by a deprecated callback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_found_by_either_id_and_unknown_ones_are_none() {
    let running = start_sim();
    let broker = client(&running);
    let created = broker
        .redeem(&redeem_request("red-4", "4"), "key-4")
        .await
        .unwrap();

    let by_id = broker.request(&created.id).await.unwrap().unwrap();
    assert_eq!(by_id.id, created.id);
    let by_issuer = broker
        .request_by_issuer_id(&IssuerRequestId::parse("red-4").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_issuer.id, created.id);

    assert!(broker
        .request(&trid("no-such-request"))
        .await
        .unwrap()
        .is_none());
    assert!(broker
        .request_by_issuer_id(&IssuerRequestId::parse("red-none").unwrap())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        running.sim.hits("GET requests/{id}"),
        2,
        "a 404 is not retried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn polling_sees_pending_then_the_journal_outcome() {
    let running = start_sim();
    let broker = client(&running);
    set_faults(&running, json!({"redeem_complete_after_polls": 2})).await;
    let created = broker
        .redeem(&redeem_request("red-5", "1"), "key-5")
        .await
        .unwrap();
    let statuses = [
        broker.request(&created.id).await.unwrap().unwrap().status,
        broker.request(&created.id).await.unwrap().unwrap().status,
        broker.request(&created.id).await.unwrap().unwrap().status,
    ];
    assert_eq!(
        statuses,
        [
            RequestStatus::Pending,
            RequestStatus::Pending,
            RequestStatus::Completed
        ]
    );

    set_faults(
        &running,
        json!({"redeem_outcome": "rejected", "redeem_complete_after_polls": 1}),
    )
    .await;
    let rejected = broker
        .redeem(&redeem_request("red-6", "1"), "key-6")
        .await
        .unwrap();
    assert_eq!(
        broker.request(&rejected.id).await.unwrap().unwrap().status,
        RequestStatus::Pending
    );
    assert_eq!(
        broker.request(&rejected.id).await.unwrap().unwrap().status,
        RequestStatus::Rejected
    );

    set_faults(&running, json!({"redeem_outcome": "manual"})).await;
    let manual = broker
        .redeem(&redeem_request("red-7", "1"), "key-7")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            broker.request(&manual.id).await.unwrap().unwrap().status,
            RequestStatus::Pending
        );
    }
    let completed = reqwest::Client::new()
        .post(format!(
            "{}/sim/requests/{}/complete",
            running.url, manual.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), 200);
    assert_eq!(
        broker.request(&manual.id).await.unwrap().unwrap().status,
        RequestStatus::Completed
    );

    let listed = broker
        .list_requests(&RequestFilter {
            kind: Some(RequestType::Redeem),
            status: Some(RequestStatus::Completed),
            ..RequestFilter::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = listed.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut expected = vec![created.id.clone(), manual.id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_tx_hash_decodes_as_none_in_all_three_spellings() {
    let running = start_sim();
    let broker = client(&running);
    running
        .sim
        .add_mint_request(new_mint(Some("mint-tx-1")))
        .unwrap();
    let http = reqwest::Client::new();
    for (spelling, raw) in [
        (PendingTxHash::Empty, Some(json!(""))),
        (PendingTxHash::Null, Some(Value::Null)),
        (PendingTxHash::Absent, None),
    ] {
        running.sim.set_faults(Faults {
            pending_tx_hash: spelling,
            ..Faults::default()
        });
        let body: Value = http
            .get(format!(
                "{}/v1/accounts/{ACCOUNT}/tokenization/requests/mint-tx-1",
                running.url
            ))
            .basic_auth(KEY, Some(SECRET))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            body.get("tx_hash").cloned(),
            raw,
            "the sim sends {spelling:?}"
        );
        let decoded = broker.request(&trid("mint-tx-1")).await.unwrap().unwrap();
        assert_eq!(decoded.tx_hash, None, "{spelling:?}");
        assert_eq!(decoded.issuer_request_id, None, "\"\" is no id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried_attempts_max_times_then_given_up() {
    let running = start_sim();
    let broker = client_with(&running.url, SECRET, 3);
    set_faults(&running, json!({"error_rate_5xx": 1.0})).await;
    let err = broker.request(&trid("anything")).await.unwrap_err();
    assert!(
        matches!(err, BrokerError::RetriesExhausted { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(running.sim.hits("GET requests/{id}"), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_requests_waits_what_retry_after_asks() {
    let running = start_sim();
    let broker = client_with(&running.url, SECRET, 2);
    set_faults(&running, json!({"rate_429": 1.0, "retry_after_secs": 1})).await;
    let started = Instant::now();
    let err = broker.request(&trid("anything")).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, BrokerError::RetriesExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(950),
        "waited only {elapsed:?}"
    );
    assert_eq!(running.sim.hits("GET requests/{id}"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_client_errors_are_final_and_not_retried() {
    let running = start_sim();
    let broker = client_with(&running.url, SECRET, 5);
    let callback = MintCallback {
        tokenization_request_id: trid("never-created"),
        client: client_42(),
        wallet_address: WALLET.parse().unwrap(),
        tx_hash: B256::repeat_byte(1),
        network: Network::parse("anvil").unwrap(),
    };
    let err = broker.mint_callback(&callback).await.unwrap_err();
    assert!(
        matches!(err, BrokerError::Status { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(running.sim.hits("POST callback/mint"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_final_and_not_retried() {
    let running = start_sim();
    let broker = client_with(&running.url, "wrong-secret", 5);
    let err = broker.request(&trid("anything")).await.unwrap_err();
    assert!(
        matches!(err, BrokerError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(running.sim.hits("GET requests/{id}"), 1);
    let printed = format!("{broker:?}");
    assert!(!printed.contains("wrong-secret"), "{printed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_redeem_answer_is_retried_and_replayed_not_duplicated() {
    let running = start_sim();
    let broker = client_with(&running.url, SECRET, 3);
    set_faults(&running, json!({"drop_connections_rate": 1.0})).await;
    let request = redeem_request("red-8", "1");
    let err = broker.redeem(&request, "key-8").await.unwrap_err();
    let BrokerError::RetriesExhausted { attempts: 3, last } = &err else {
        panic!("{err:?}");
    };
    assert!(
        !last.starts_with(|c: char| c.is_ascii_digit()),
        "a transport failure, not a status: {last}"
    );
    assert_eq!(running.sim.hits("POST callback/redeem"), 3);
    assert_eq!(
        running.sim.snapshot().requests.len(),
        1,
        "the first call took effect"
    );

    set_faults(&running, json!({"drop_connections_rate": 0.0})).await;
    let answered = broker.redeem(&request, "key-8").await.unwrap();
    let state = running.sim.snapshot();
    assert_eq!(state.requests.len(), 1);
    assert_eq!(state.requests[0].id, answered.id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_settings_are_validated_and_readable() {
    let running = start_sim();
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{}/sim/faults", running.url))
        .json(&json!({"error_rate_5xx": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    set_faults(
        &running,
        json!({"latency_ms": 5, "redeem_outcome": "manual"}),
    )
    .await;
    let faults: Faults = http
        .get(format!("{}/sim/faults", running.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults.latency_ms, 5);
    assert_eq!(faults.redeem_outcome, RedeemOutcome::Manual);
    assert!(
        faults.error_rate_5xx.abs() < f64::EPSILON,
        "refused patch changed nothing"
    );
}

/// What the fake issuer received: (path, X-API-KEY, body).
type Received = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// Notes what the fake issuer was sent and hands the body back.
async fn record(mut req: tide::Request<Received>) -> tide::Result<Value> {
    let body: Value = req.body_json().await?;
    let key = req
        .header("X-API-KEY")
        .map(|v| v.last().as_str().to_owned());
    req.state()
        .lock()
        .unwrap()
        .push((req.url().path().to_owned(), key, body.clone()));
    Ok(body)
}

/// A stand-in for the issuer's two mint endpoints: it accepts any positive qty and refuses "0".
/// Needs a tokio runtime (it spawns the server).
fn start_fake_issuer() -> (String, Received) {
    let received: Received = Arc::default();
    let mut app = tide::with_state(received.clone());
    app.at("/tokenization/mint")
        .post(|req: tide::Request<Received>| async move {
            let body = record(req).await?;
            if body["qty"] == "0" {
                let mut refused = tide::Response::new(400);
                refused.set_body(json!({"error": "Failed Validation: Invalid data payload"}));
                return Ok(refused);
            }
            let mut ok = tide::Response::new(200);
            ok.set_body(json!({"issuer_request_id": "irid-1", "status": "created"}));
            Ok(ok)
        });
    app.at("/tokenization/mint/confirm")
        .post(|req: tide::Request<Received>| async move {
            record(req).await?;
            Ok(tide::Response::new(200))
        });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = async_std::net::TcpListener::from(listener);
    tokio::spawn(async move { app.listen(listener).await });
    (url, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_mint_drives_the_issuer_and_the_mint_callback_completes_it_once() {
    let running = start_sim();
    let (issuer_url, received) = start_fake_issuer();
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/sim/mint", running.url))
        .json(&json!({
            "issuer_url": issuer_url,
            "issuer_api_key": "issuer-key-0123456789-0123456789-0123",
            "tokenization_request_id": "tr-mint-1",
            "qty": "3.5",
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "network": "anvil",
            "client": {"client_external_account_id": "client-42"},
            "wallet_address": WALLET,
            "confirm": "completed"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let result: Value = answer.json().await.unwrap();
    assert_eq!(result["tokenization_request_id"], "tr-mint-1");
    assert_eq!(result["issuer_request_id"], "irid-1");
    assert_eq!(result["issuance_status"], 200);
    assert_eq!(result["confirm_status"], 200);

    {
        let calls = received.lock().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "/tokenization/mint");
        assert_eq!(calls[0].2["client_external_account_id"], "client-42");
        assert!(
            calls[0].2.get("client_id").is_none(),
            "never the deprecated field"
        );
        assert_eq!(
            calls[0].1.as_deref(),
            Some("issuer-key-0123456789-0123456789-0123")
        );
        assert_eq!(calls[0].2["tokenization_request_id"], "tr-mint-1");
        assert_eq!(calls[0].2["qty"], "3.5");
        assert_eq!(calls[1].0, "/tokenization/mint/confirm");
        assert_eq!(
            calls[1].2,
            json!({"tokenization_request_id": "tr-mint-1", "issuer_request_id": "irid-1", "status": "completed"})
        );
    }
    let recorded = running.sim.request("tr-mint-1").unwrap();
    assert_eq!(recorded.status, RequestStatus::Pending);
    assert_eq!(recorded.issuer_request_id.as_deref(), Some("irid-1"));

    let broker = client(&running);
    let tx_hash = B256::repeat_byte(0x5a);
    let callback = MintCallback {
        tokenization_request_id: trid("tr-mint-1"),
        client: client_42(),
        wallet_address: WALLET.parse::<Address>().unwrap(),
        tx_hash,
        network: Network::parse("anvil").unwrap(),
    };
    broker.mint_callback(&callback).await.unwrap();

    let state = running.sim.snapshot();
    assert_eq!(state.mint_callback_counts.get("tr-mint-1"), Some(&1));
    let seen = broker.request(&trid("tr-mint-1")).await.unwrap().unwrap();
    assert_eq!(seen.status, RequestStatus::Completed);
    assert_eq!(seen.tx_hash, Some(tx_hash));
    assert_eq!(seen.kind, RequestType::Mint);
    assert_eq!(
        seen.issuer_request_id,
        Some(IssuerRequestId::parse("irid-1").unwrap())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_mint_passes_an_issuer_refusal_through_and_rejects_the_request() {
    let running = start_sim();
    let (issuer_url, received) = start_fake_issuer();
    let answer = reqwest::Client::new()
        .post(format!("{}/sim/mint", running.url))
        .json(&json!({
            "issuer_url": issuer_url,
            "issuer_api_key": "k",
            "tokenization_request_id": "tr-mint-0",
            "qty": "0",
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "network": "anvil",
            "client": {"client_external_account_id": "client-42"},
            "wallet_address": WALLET,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "Failed Validation: Invalid data payload"})
    );
    assert_eq!(
        received.lock().unwrap().len(),
        1,
        "no confirm after a refusal"
    );
    assert_eq!(
        running.sim.request("tr-mint-0").unwrap().status,
        RequestStatus::Rejected
    );
}

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/alpaca/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

#[test]
fn alpacas_bodies_decode() {
    let pending: TokenizationRequest =
        serde_json::from_str(&fixture("mint_request_pending.json")).unwrap();
    assert_eq!(pending.status, RequestStatus::Pending);
    assert_eq!(pending.kind, RequestType::Mint);
    assert_eq!(pending.tx_hash, None);
    assert_eq!(pending.issuer_request_id, None);
    assert_eq!(pending.qty, Qty::parse("1.23").unwrap());
    assert_eq!(pending.client(), Some(client_42()));
    assert_eq!(
        pending.client_account_id,
        Some(AlpacaAccountId::parse("9a1f3e52-2d5b-4c1a-8f0e-7b6c5d4e3f21").unwrap())
    );

    let completed: TokenizationRequest =
        serde_json::from_str(&fixture("mint_request_completed.json")).unwrap();
    assert_eq!(completed.status, RequestStatus::Completed);
    assert!(completed.tx_hash.is_some());
    assert_eq!(completed.transfer_status.as_deref(), Some("settled"));
    assert_eq!(
        completed.wallet_address, pending.wallet_address,
        "address case does not matter"
    );

    let redeem: TokenizationRequest =
        serde_json::from_str(&fixture("redeem_answer_pending.json")).unwrap();
    assert_eq!(redeem.id.as_str(), "5e2c7b1a-3d4f-4e5a-b6c7-d8e9f0a1b2c3");
    assert_eq!(redeem.kind, RequestType::Redeem);
    assert_eq!(redeem.tx_hash, None);

    let body = RedeemRequest {
        issuer_request_id: IssuerRequestId::parse(
            "red-8f3b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a-3",
        )
        .unwrap(),
        underlying_symbol: Symbol::parse("AAPL").unwrap(),
        token_symbol: Symbol::parse("tAAPL").unwrap(),
        client: client_42(),
        qty: Qty::parse("2.5").unwrap(),
        network: Network::parse("base").unwrap(),
        wallet_address: WALLET.parse().unwrap(),
        tx_hash: "0x8f3b2a1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"
            .parse()
            .unwrap(),
    };
    let sent: Value = serde_json::to_value(&body).unwrap();
    let original: Value = serde_json::from_str(&fixture("redeem_request_body.json")).unwrap();
    assert_eq!(
        sent, original,
        "we send the body exactly as Alpaca spells it"
    );
    let by_account = RedeemRequest {
        client: ClientRef::ClientAccountId(
            AlpacaAccountId::parse("9a1f3e52-2d5b-4c1a-8f0e-7b6c5d4e3f21").unwrap(),
        ),
        ..body
    };
    let sent = serde_json::to_value(&by_account).unwrap();
    assert_eq!(
        sent["client_account_id"],
        "9a1f3e52-2d5b-4c1a-8f0e-7b6c5d4e3f21"
    );
    assert!(sent.get("client_external_account_id").is_none());
    assert!(sent.get("client_id").is_none());

    let error: issuer::alpaca::ApiError = serde_json::from_str(&fixture("error_422.json")).unwrap();
    assert_eq!(error.code.as_deref(), Some("42210000"));
}

#[test]
fn ids_that_disagree_or_are_missing_do_not_decode() {
    let mut body: Value = serde_json::from_str(&fixture("mint_request_completed.json")).unwrap();
    body["id"] = json!("another-id");
    assert!(serde_json::from_value::<TokenizationRequest>(body.clone()).is_err());
    body.as_object_mut().unwrap().remove("id");
    body.as_object_mut()
        .unwrap()
        .remove("tokenization_request_id");
    assert!(serde_json::from_value::<TokenizationRequest>(body).is_err());
}

#[test]
fn the_command_line_parses() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: issuer::sim::SimArgs,
    }
    let cli = Cli::try_parse_from([
        "alpaca-sim",
        "serve",
        "--account-id",
        "acct",
        "--api-key",
        "k",
        "--api-secret",
        "s",
    ])
    .unwrap();
    let issuer::sim::SimCommand::Serve(serve) = cli.sim.command else {
        panic!("not serve");
    };
    assert_eq!(serve.listen.to_string(), "127.0.0.1:9000");
    assert!(
        !format!("{serve:?}").contains("\"s\""),
        "the secret is redacted"
    );
    let cli = Cli::try_parse_from([
        "alpaca-sim",
        "mint",
        "--issuer-url",
        "http://127.0.0.1:8080",
        "--issuer-api-key",
        "x",
        "--qty",
        "1",
        "--wallet",
        WALLET,
        "--client-id",
        "c",
        "--underlying",
        "AAPL",
        "--token",
        "tAAPL",
        "--network",
        "anvil",
        "--reject",
    ])
    .unwrap();
    assert!(matches!(cli.sim.command, issuer::sim::SimCommand::Mint(ref m) if m.reject));
}

/// The simulator stands in for Alpaca, which has no 200-connection bound: a driver's pool plus
/// the issuer's Alpaca jobs (up to 128 at once) must not make it close a connection in use. The
/// first of 300 open connections is still answered.
#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_keeps_more_than_two_hundred_connections_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let running = start_sim();
    let addr = running.url.trim_start_matches("http://").to_owned();
    let mut first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut others = Vec::new();
    for _ in 0..299 {
        others.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // Let the server accept them all before the first one speaks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first
        .write_all(
            format!("GET /sim/state HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the oldest connection was closed: {answer:?}"
    );
    drop(others);
}
