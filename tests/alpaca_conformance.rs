//! Alpaca's current issuer API (November 2026), end to end on a real anvil, the real HTTP server
//! and the simulator, which speaks only the current API:
//!
//! - the client is echoed under the field the mint used (`client_account_id` once an operator
//!   attached the AP's Alpaca account; `client_external_account_id` for our id and for the
//!   deprecated `client_id` alias), in the callback and in the redeem call; `client_id` is never
//!   sent;
//! - the redeem call's `Idempotency-Key` is a 36-character UUID derived from the redemption id;
//! - a final refusal of the mint callback or the redeem call stops the item with Alpaca's code and
//!   message, lists it as stuck, sends nothing more, and resumes only when an operator retries;
//! - a redeem call answered "issuer_request_id already exists" adopts the request Alpaca holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, U256};
use common::stack::{eventually, Issuer, World, AP_WALLET, SIM_ACCOUNT, SIM_KEY, SIM_SECRET};
use common::STRANGER_KEY;
use issuer::alpaca::{Broker, BrokerClient, BrokerConfig, RedeemRequest, RetryPolicy};
use issuer::cli::LOCAL_OPERATOR_KEY;
use issuer::config::Secret;
use issuer::http::operator_cli::{self, OperatorArgs, OperatorCommand};
use issuer::sim::{FaultsPatch, Refusal};
use reconciler::{
    Anomaly, Callback, ClientRef, IssuerRequestId, Policy, Qty, RedemptionState,
    TokenizationRequestId,
};
use serde_json::{json, Value};
use std::time::Duration;

const E18: u128 = 1_000_000_000_000_000_000;
const AP_ACCOUNT: &str = "9a1f3e52-2d5b-4c1a-8f0e-7b6c5d4e3f21";

fn bot() -> Address {
    common::bot().address()
}

fn operator(issuer: &Issuer, command: OperatorCommand) -> OperatorArgs {
    OperatorArgs {
        issuer_url: issuer.url.clone(),
        operator_key: Some(Secret::new(LOCAL_OPERATOR_KEY)),
        command,
    }
}

fn mint_callbacks(world: &World, trid: &str) -> Vec<Value> {
    world
        .sim
        .snapshot()
        .mint_callbacks
        .into_iter()
        .filter(|c| c.tokenization_request_id == trid)
        .map(|c| c.body)
        .collect()
}

fn redeem_calls(world: &World, id: &IssuerRequestId) -> Vec<(Option<String>, Value, u16)> {
    world
        .sim
        .snapshot()
        .redeem_calls
        .into_iter()
        .filter(|c| c.issuer_request_id.as_deref() == Some(id.as_str()))
        .map(|c| (c.idempotency_key, c.body, c.status))
        .collect()
}

async fn wait_redemption(
    issuer: &Issuer,
    id: &IssuerRequestId,
    what: &str,
    pred: impl Fn(&RedemptionState) -> bool,
) {
    eventually(Duration::from_secs(40), what, || async {
        issuer
            .store
            .redemption(id)
            .unwrap()
            .is_some_and(|r| pred(&r.state))
    })
    .await;
}

/// Several whole passes: anything that would be re-sent every pass shows up many times.
async fn a_few_passes(issuer: &Issuer) {
    issuer.more_passes(8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mint_by_alpaca_account_is_called_back_and_redeemed_under_client_account_id() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    // The operator attaches the AP's Alpaca account (CLI client of the operator API).
    let attached = operator_cli::call(&operator(
        &issuer,
        OperatorCommand::SetAlpacaAccount {
            client_id: world.client_id.to_string(),
            alpaca_account_id: AP_ACCOUNT.to_uppercase(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(attached["alpaca_account_id"], AP_ACCOUNT);

    let client = json!({ "client_account_id": AP_ACCOUNT });
    let answer = world.mint_as(&issuer.url, "tr-acct-1", "2", client).await;
    assert_eq!(answer["issuance_status"], 200, "{answer}");
    eventually(Duration::from_secs(30), "mint callback", || async {
        world.sim.mint_callback_count("tr-acct-1") >= 1
    })
    .await;
    assert_eq!(world.balance(world.ap_wallet).await, U256::from(2 * E18));
    let callbacks = mint_callbacks(&world, "tr-acct-1");
    assert_eq!(callbacks.len(), 1);
    assert_eq!(callbacks[0]["client_account_id"], AP_ACCOUNT);
    assert!(callbacks[0].get("client_external_account_id").is_none());
    assert!(
        callbacks[0].get("client_id").is_none(),
        "never the deprecated field"
    );

    // The AP sends one token back: the redeem call names the client the same way, under a UUID key.
    let tx = world.transfer(STRANGER_KEY, bot(), U256::from(E18)).await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_redemption(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;
    let calls = redeem_calls(&world, &id);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (key, body, status) = &calls[0];
    assert_eq!(*status, 200);
    assert_eq!(body["client_account_id"], AP_ACCOUNT);
    assert!(body.get("client_id").is_none());
    assert!(body.get("client_external_account_id").is_none());
    let key = key.as_deref().unwrap();
    assert_eq!(key.len(), 36, "{key}");
    assert_eq!(
        key,
        id.idempotency_key(),
        "derived from the redemption id alone"
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mint_naming_the_deprecated_client_id_is_called_back_as_client_external_account_id() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    // Alpaca records the request (under the current field), then calls us with the old alias.
    world
        .sim
        .add_mint_request(world.new_mint("tr-old-1", None, "1"))
        .unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        http.post(format!("{}{path}", issuer.url))
            .header("X-API-KEY", issuer::cli::LOCAL_API_KEY)
            .json(&body)
            .send()
    };
    let answer = post(
        "/tokenization/mint",
        json!({
            "tokenization_request_id": "tr-old-1", "qty": "1", "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL", "network": "anvil", "client_id": world.client_id.as_str(),
            "wallet_address": AP_WALLET,
        }),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    let irid: Value = answer.json().await.unwrap();
    let answer = post(
        "/tokenization/mint/confirm",
        json!({ "tokenization_request_id": "tr-old-1",
                "issuer_request_id": irid["issuer_request_id"], "status": "completed" }),
    )
    .await
    .unwrap();
    assert_eq!(answer.status(), 200);
    eventually(Duration::from_secs(30), "mint callback", || async {
        world.sim.mint_callback_count("tr-old-1") >= 1
    })
    .await;
    let callbacks = mint_callbacks(&world, "tr-old-1");
    assert_eq!(callbacks.len(), 1);
    assert_eq!(
        callbacks[0]["client_external_account_id"],
        world.client_id.as_str()
    );
    assert!(callbacks[0].get("client_id").is_none());
    assert_eq!(
        world.sim.request("tr-old-1").unwrap().status,
        issuer::alpaca::RequestStatus::Completed,
        "Alpaca accepted the callback"
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_mint_callback_stops_until_an_operator_retries_it() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world
        .sim
        .patch_faults(&FaultsPatch {
            refuse_mint_callback: Some(Some(Refusal {
                status: 404,
                message: "tokenization request not found".into(),
            })),
            ..FaultsPatch::default()
        })
        .unwrap();
    world.mint(&issuer.url, "tr-refused", "1").await;
    eventually(Duration::from_secs(30), "first callback", || async {
        world.sim.mint_callback_count("tr-refused") >= 1
    })
    .await;
    let lookups_before = world.sim.hits("GET requests:by_issuer_request_id");
    a_few_passes(&issuer).await;
    // One callback, no lookups: nothing is re-sent every pass.
    assert_eq!(world.sim.mint_callback_count("tr-refused"), 1);
    assert_eq!(
        world.sim.hits("GET requests:by_issuer_request_id"),
        lookups_before
    );
    let id = IssuerRequestId::for_mint(&TokenizationRequestId::parse("tr-refused").unwrap());
    let record = issuer.store.mint(&id).unwrap().unwrap();
    assert!(
        matches!(&record.intent.callback, Callback::Refused { status: 404, code: Some(code), message }
            if code == "40400000" && message == "tokenization request not found"),
        "{:?}",
        record.intent.callback
    );
    assert_eq!(world.deposits_for(id.as_str()).await, 1, "minted once");
    let stuck = operator_cli::call(&operator(&issuer, OperatorCommand::Stuck))
        .await
        .unwrap();
    let listed = stuck["mints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["issuer_request_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("not listed as stuck: {stuck}"));
    assert!(
        listed["problem"].as_str().unwrap().contains("404"),
        "{listed}"
    );
    assert_eq!(
        listed["callback"]["message"],
        "tokenization request not found"
    );

    // Alpaca fixed its side; the operator retries: Alpaca is asked, then the callback goes out.
    world
        .sim
        .patch_faults(&FaultsPatch {
            refuse_mint_callback: Some(None),
            ..FaultsPatch::default()
        })
        .unwrap();
    operator_cli::call(&operator(
        &issuer,
        OperatorCommand::RetryMint { id: id.to_string() },
    ))
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "acknowledged", || async {
        matches!(
            issuer.store.mint(&id).unwrap().unwrap().intent.callback,
            Callback::Acked { .. }
        )
    })
    .await;
    assert_eq!(world.sim.mint_callback_count("tr-refused"), 2);
    assert_eq!(
        world.deposits_for(id.as_str()).await,
        1,
        "still minted once"
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_redeem_call_stops_until_an_operator_retries_it() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-r", "2").await;
    world
        .sim
        .patch_faults(&FaultsPatch {
            refuse_redeem: Some(Some(Refusal {
                status: 422,
                message: "wallet_address is invalid".into(),
            })),
            ..FaultsPatch::default()
        })
        .unwrap();
    let tx = world.transfer(STRANGER_KEY, bot(), U256::from(E18)).await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_redemption(&issuer, &id, "flagged", |s| {
        matches!(s, RedemptionState::Flagged { .. })
    })
    .await;
    a_few_passes(&issuer).await;
    assert_eq!(
        redeem_calls(&world, &id).len(),
        1,
        "called once, then stopped"
    );
    let state = issuer.store.redemption(&id).unwrap().unwrap().state;
    assert!(
        matches!(&state, RedemptionState::Flagged {
            anomaly: Anomaly::RedeemRefused { status: 422, code: Some(code), message }, ..
        } if code == "42200000" && message == "wallet_address is invalid"),
        "{state:?}"
    );
    let stuck = operator_cli::call(&operator(&issuer, OperatorCommand::Stuck))
        .await
        .unwrap();
    assert!(
        stuck["redemptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str()),
        "{stuck}"
    );
    assert_eq!(
        world.total_supply().await,
        U256::from(2 * E18),
        "nothing burned"
    );

    world
        .sim
        .patch_faults(&FaultsPatch {
            refuse_redeem: Some(None),
            ..FaultsPatch::default()
        })
        .unwrap();
    let retried = operator_cli::call(&operator(
        &issuer,
        OperatorCommand::RetryRedemption { id: id.to_string() },
    ))
    .await
    .unwrap();
    assert_eq!(retried["state"], "requesting");
    wait_redemption(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;
    assert_eq!(world.redeem_requests_for(id.as_str()).len(), 1);
    assert_eq!(world.total_supply().await, U256::from(E18));
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redeem_call_whose_issuer_request_id_alpaca_already_holds_adopts_that_request() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-adopt", "1").await;
    issuer.stop().await;

    // While the issuer is down the AP redeems, and Alpaca already holds a request under that id
    // (an earlier call of ours under another key, whose answer was lost).
    let tx = world.transfer(STRANGER_KEY, bot(), U256::from(E18)).await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    let broker = BrokerClient::new(BrokerConfig {
        base_url: world.sim_url.clone(),
        account_id: SIM_ACCOUNT.into(),
        api_key: SIM_KEY.into(),
        api_secret: SIM_SECRET.into(),
        retry: RetryPolicy::default(),
    })
    .unwrap();
    let earlier = broker
        .redeem(
            &RedeemRequest {
                issuer_request_id: id.clone(),
                underlying_symbol: reconciler::Symbol::parse("AAPL").unwrap(),
                token_symbol: reconciler::Symbol::parse("tAAPL").unwrap(),
                client: ClientRef::ClientExternalAccountId(world.client_id.clone()),
                qty: Qty::parse("1").unwrap(),
                network: reconciler::Network::parse("anvil").unwrap(),
                wallet_address: world.ap_wallet,
                tx_hash: tx,
            },
            "an-older-key",
        )
        .await
        .unwrap();

    let issuer = Issuer::start(&world, Policy::default()).await;
    wait_redemption(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;
    let calls = redeem_calls(&world, &id);
    assert_eq!(calls.len(), 2, "ours and the issuer's: {calls:?}");
    assert_eq!(calls[1].2, 422, "Alpaca refused the second as a reused id");
    let requests = world.redeem_requests_for(id.as_str());
    assert_eq!(requests.len(), 1, "one request at Alpaca");
    assert_eq!(
        requests[0].id,
        earlier.id.as_str(),
        "the one Alpaca held, adopted"
    );
    assert_eq!(world.total_supply().await, U256::ZERO, "burned once");
    issuer.stop().await;
}
