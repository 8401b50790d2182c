//! Alpaca's side of a mint, played against the issuer's endpoints: record the request, ask the
//! issuer to issue, then confirm (or reject) the journal.

use super::state::{NewMint, Reply, SimClient};
use super::Sim;
use crate::alpaca::wire::RequestStatus;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// The journal answer Alpaca sends in the confirm call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confirm {
    Completed,
    Rejected,
}

#[allow(clippy::unnecessary_wraps)] // serde's `default = ...` needs exactly this shape.
fn confirm_completed() -> Option<Confirm> {
    Some(Confirm::Completed)
}

/// Body of `POST /sim/mint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintScript {
    /// Base URL of the issuer's HTTP server, e.g. `http://127.0.0.1:8080`.
    pub issuer_url: String,
    /// Sent as `X-API-KEY`.
    pub issuer_api_key: String,
    /// `None`: a fresh id.
    #[serde(default)]
    pub tokenization_request_id: Option<String>,
    pub qty: String,
    pub underlying_symbol: String,
    pub token_symbol: String,
    pub network: String,
    /// How Alpaca names the client in the mint request (exactly one of its two current fields).
    pub client: SimClient,
    pub wallet_address: String,
    /// Absent: `completed`. `null`: no confirm call at all (the issuer is left waiting).
    #[serde(default = "confirm_completed")]
    pub confirm: Option<Confirm>,
}

/// Confirm calls are retried like Alpaca retries them: identical body, on 5xx and transport
/// errors, a few times.
const CONFIRM_ATTEMPTS_MAX: u32 = 3;

/// What one call to the issuer gave: its status (or none, if it never answered) and its body.
struct IssuerAnswer {
    status: Option<u16>,
    body: Value,
}

async fn post(http: &reqwest::Client, url: &str, api_key: &str, body: &Value) -> IssuerAnswer {
    let sent = http
        .post(url)
        .header("X-API-KEY", api_key)
        .json(body)
        .send()
        .await;
    match sent {
        Err(err) => IssuerAnswer {
            status: None,
            body: json!({ "error": err.to_string() }),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            let body = match response.bytes().await {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&bytes).into_owned())
                }),
                Err(err) => json!({ "error": err.to_string() }),
            };
            IssuerAnswer {
                status: Some(status),
                body,
            }
        }
    }
}

/// Runs one mint against the issuer. Must run on tokio (reqwest).
pub(super) async fn play_mint(sim: Sim, http: reqwest::Client, script: MintScript) -> Reply {
    let recorded = sim.add_mint_request(NewMint {
        tokenization_request_id: script.tokenization_request_id.clone(),
        issuer_request_id: None,
        qty: script.qty.clone(),
        underlying_symbol: script.underlying_symbol.clone(),
        token_symbol: script.token_symbol.clone(),
        network: script.network.clone(),
        client: script.client.clone(),
        wallet_address: script.wallet_address.clone(),
    });
    let request = match recorded {
        Ok(request) => request,
        Err(message) => return Reply::error(409, message),
    };
    let base = script.issuer_url.trim_end_matches('/');
    let mut issuance = json!({
        "tokenization_request_id": request.id,
        "qty": script.qty,
        "underlying_symbol": script.underlying_symbol,
        "token_symbol": script.token_symbol,
        "network": script.network,
        "wallet_address": script.wallet_address,
    });
    if let Some(fields) = issuance.as_object_mut() {
        fields.insert(
            script.client.field().to_owned(),
            Value::String(script.client.value().to_owned()),
        );
    }
    let answer = post(
        &http,
        &format!("{base}/tokenization/mint"),
        &script.issuer_api_key,
        &issuance,
    )
    .await;

    let accepted_id = match (answer.status, &answer.body) {
        (Some(200), body) if body.get("status").and_then(Value::as_str) == Some("created") => body
            .get("issuer_request_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        _ => None,
    };
    let Some(issuer_request_id) = accepted_id else {
        // The issuer refused (or never answered): Alpaca rejects the request and tells the AP.
        sim.with(|state| state.settle(&request.id, RequestStatus::Rejected));
        return match answer.status {
            Some(status) => Reply {
                status,
                body: answer.body,
                retry_after_secs: None,
            },
            None => Reply {
                status: 502,
                body: json!({
                    "code": 50_200_000,
                    "message": "issuer did not answer",
                    "issuer_error": answer.body,
                }),
                retry_after_secs: None,
            },
        };
    };
    sim.with(|state| state.set_issuer_request_id(&request.id, &issuer_request_id));

    let mut confirm_status = None;
    let mut confirm_answer = Value::Null;
    let mut confirm_attempts = 0u32;
    if let Some(confirm) = script.confirm {
        if confirm == Confirm::Rejected {
            sim.with(|state| state.settle(&request.id, RequestStatus::Rejected));
        }
        let body = json!({
            "tokenization_request_id": request.id,
            "issuer_request_id": issuer_request_id,
            "status": confirm,
        });
        let url = format!("{base}/tokenization/mint/confirm");
        loop {
            confirm_attempts += 1;
            let answer = post(&http, &url, &script.issuer_api_key, &body).await;
            confirm_status = answer.status;
            confirm_answer = answer.body;
            let retryable = confirm_status.is_none_or(|status| status >= 500);
            if !retryable || confirm_attempts >= CONFIRM_ATTEMPTS_MAX {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    Reply::ok(json!({
        "tokenization_request_id": request.id,
        "issuer_request_id": issuer_request_id,
        "issuance_status": answer.status,
        "issuance_answer": answer.body,
        "confirm_status": confirm_status,
        "confirm_answer": confirm_answer,
        "confirm_attempts": confirm_attempts,
    }))
}
