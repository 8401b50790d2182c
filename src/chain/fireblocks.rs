//! The bot's key in a Fireblocks vault account, used through raw signing: Fireblocks signs the
//! transaction hash (`operation: RAW`), we poll the request to completion and assemble the signed
//! transaction ourselves, so broadcast, nonces and the stored signed bytes stay the issuer's.
//!
//! Every request carries `X-API-Key` and `Authorization: Bearer <JWT>`, the JWT signed RS256 with
//! the API user's RSA key over `{uri, nonce, iat, exp, sub, bodyHash}` as Fireblocks documents.
//!
//! **One signature per nonce at a time.** A signing request is named by an `externalTxId` built
//! from the chain, the vault account, the nonce and an attempt number, and carries the hash it
//! signs. Before asking, the signer looks up attempt 0, 1, ... of that nonce: a request for the
//! same hash is adopted (polled, or its signature read) instead of asked again — the case of an
//! answer lost to a timeout or a crash; a request for another hash still in flight is waited for
//! (an error for this action: the pass plans again), never raced; a rejected, failed, cancelled
//! or blocked one is dead and the next attempt number is free. A completed signature of another
//! hash at that nonce (a fee replacement, or a batch re-planned after a lost answer) is
//! superseded: only one transaction per nonce can ever be mined.

use super::signer::{SignerSetupError, SigningFor};
use crate::config::Secret;
use alloy::primitives::{Address, Signature, B256, U256};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

/// Attempts (dead or superseded requests) one nonce may use before the signer gives up.
const ATTEMPTS_PER_NONCE_MAX: u32 = 64;
/// Longest one HTTP call to Fireblocks may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// JWT lifetime: Fireblocks accepts at most 30 seconds.
const JWT_LIFETIME_SECS: u64 = 29;
/// Polling a signing request: the first wait, doubling to the cap.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

/// How to reach Fireblocks and which key signs.
#[derive(Clone)]
pub struct FireblocksSettings {
    /// `https://api.fireblocks.io` (or the sandbox, or our simulator).
    pub api_url: String,
    pub api_key: Secret,
    /// The API user's RSA private key, PEM.
    pub private_key_pem: Secret,
    pub vault_account_id: String,
    /// The asset whose address is the bot, e.g. `ETH` or `ETH_TEST5`.
    pub asset_id: String,
    /// Longest wait for one signing request to complete in one action; past it the action fails
    /// and the next pass looks the request up again.
    pub sign_timeout: Duration,
}

impl fmt::Debug for FireblocksSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FireblocksSettings")
            .field("api_url", &crate::config::redact_url(&self.api_url))
            .field("api_key", &self.api_key)
            .field("private_key_pem", &self.private_key_pem)
            .field("vault_account_id", &self.vault_account_id)
            .field("asset_id", &self.asset_id)
            .field("sign_timeout", &self.sign_timeout)
            .finish()
    }
}

/// Why a Fireblocks signature was not obtained.
#[derive(Debug, thiserror::Error)]
pub enum FireblocksError {
    /// Fireblocks could not be reached or did not answer in time.
    #[error("Fireblocks {call}: {detail}")]
    Transport { call: String, detail: String },
    /// Fireblocks answered with an error status.
    #[error("Fireblocks {call}: HTTP {status}: {message}")]
    Status {
        call: String,
        status: u16,
        message: String,
    },
    /// The signing request ended without a signature (rejected by policy, failed, cancelled,
    /// blocked).
    #[error("Fireblocks refused signing request {id} ({external_tx_id}): {status} {sub_status}")]
    Refused {
        id: String,
        external_tx_id: String,
        status: String,
        sub_status: String,
    },
    /// The signing request did not complete within the timeout; it is looked up again (never
    /// asked again) by the next attempt.
    #[error("Fireblocks signing request {id} ({external_tx_id}) still {status} after {waited_ms} ms; it is looked up again next time, not re-sent")]
    Pending {
        id: String,
        external_tx_id: String,
        status: String,
        waited_ms: u128,
    },
    /// An earlier request for this nonce, over another hash, is still in flight: no second
    /// signature for the nonce until it completes or dies.
    #[error("Fireblocks signing request {id} ({external_tx_id}) for this nonce over another hash is still {status}; waiting for it before signing again")]
    InFlight {
        id: String,
        external_tx_id: String,
        status: String,
    },
    /// Fireblocks answered something we cannot use.
    #[error("Fireblocks answer unusable: {0}")]
    BadAnswer(String),
    /// Every attempt number of this nonce is used.
    #[error("Fireblocks: {0} signing attempts for one nonce used up; an operator must look")]
    AttemptsExhausted(u32),
}

/// Where a signing request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    InFlight,
    Completed,
    Dead,
}

fn stage(status: &str) -> Stage {
    match status {
        "COMPLETED" => Stage::Completed,
        "REJECTED" | "FAILED" | "CANCELLED" | "BLOCKED" | "TIMEOUT" => Stage::Dead,
        _ => Stage::InFlight,
    }
}

/// A signing request as Fireblocks reports it.
#[derive(Debug, Clone)]
struct Request {
    id: String,
    external_tx_id: String,
    status: String,
    sub_status: String,
    /// The hash it signs (hex, no prefix, lower case).
    content: Option<String>,
    body: Value,
}

impl Request {
    fn parse(body: Value) -> Result<Request, FireblocksError> {
        let text = |v: &Value| v.as_str().map(str::to_owned);
        let id = text(&body["id"])
            .ok_or_else(|| FireblocksError::BadAnswer("transaction without id".into()))?;
        let content = text(&body["signedMessages"][0]["content"])
            .or_else(|| text(&body["extraParameters"]["rawMessageData"]["messages"][0]["content"]))
            .map(|c| c.trim_start_matches("0x").to_ascii_lowercase());
        Ok(Request {
            id,
            external_tx_id: text(&body["externalTxId"]).unwrap_or_default(),
            status: text(&body["status"]).unwrap_or_default(),
            sub_status: text(&body["subStatus"]).unwrap_or_default(),
            content,
            body,
        })
    }

    fn refused(&self) -> FireblocksError {
        FireblocksError::Refused {
            id: self.id.clone(),
            external_tx_id: self.external_tx_id.clone(),
            status: self.status.clone(),
            sub_status: self.sub_status.clone(),
        }
    }

    /// `signedMessages[0].signature {r, s, v}` as a signature (parity as given; the caller
    /// normalises and checks recovery).
    fn signature(&self) -> Result<Signature, FireblocksError> {
        let sig = &self.body["signedMessages"][0]["signature"];
        let scalar = |name: &str| -> Result<U256, FireblocksError> {
            let text = sig[name]
                .as_str()
                .ok_or_else(|| FireblocksError::BadAnswer(format!("signature without {name}")))?;
            let bytes = hex::decode(text.trim_start_matches("0x"))
                .map_err(|_| FireblocksError::BadAnswer(format!("signature {name} is not hex")))?;
            if bytes.len() > 32 {
                return Err(FireblocksError::BadAnswer(format!(
                    "signature {name} is longer than 32 bytes"
                )));
            }
            Ok(U256::from_be_slice(&bytes))
        };
        let v = sig["v"]
            .as_u64()
            .or_else(|| sig["v"].as_str().and_then(|t| t.parse().ok()))
            .ok_or_else(|| FireblocksError::BadAnswer("signature without v".into()))?;
        let parity = match v {
            0 | 27 => false,
            1 | 28 => true,
            other => {
                return Err(FireblocksError::BadAnswer(format!(
                    "signature v is {other}"
                )))
            }
        };
        Ok(Signature::new(scalar("r")?, scalar("s")?, parity))
    }
}

/// A Fireblocks vault account as the bot's signer. `Debug` shows no credentials.
pub struct FireblocksSigner {
    http: reqwest::Client,
    settings: FireblocksSettings,
    key: EncodingKey,
    address: Address,
}

impl fmt::Debug for FireblocksSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FireblocksSigner")
            .field("settings", &self.settings)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl FireblocksSigner {
    /// Loads the API user's key and reads the vault account's address for the asset: bad
    /// credentials or a wrong vault fail here, before anything starts.
    pub async fn connect(
        settings: FireblocksSettings,
    ) -> Result<FireblocksSigner, SignerSetupError> {
        let key = EncodingKey::from_rsa_pem(settings.private_key_pem.expose().as_bytes()).map_err(
            |e| {
                SignerSetupError::Fireblocks(format!(
                    "the API user's private key is not an RSA PEM key ({e})"
                ))
            },
        )?;
        reqwest::Url::parse(&settings.api_url).map_err(|e| {
            SignerSetupError::Fireblocks(format!(
                "FIREBLOCKS_API_URL is not a URL ({e}): {}",
                crate::config::redact_url(&settings.api_url)
            ))
        })?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| SignerSetupError::Fireblocks(format!("HTTP client: {e}")))?;
        let mut signer = FireblocksSigner {
            http,
            settings,
            key,
            address: Address::ZERO,
        };
        signer.address = signer
            .vault_address()
            .await
            .map_err(|e| SignerSetupError::Fireblocks(e.to_string()))?;
        Ok(signer)
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// The vault account's deposit address for the asset: the bot.
    async fn vault_address(&self) -> Result<Address, FireblocksError> {
        let path = format!(
            "/v1/vault/accounts/{}/{}/addresses_paginated",
            urlencode(&self.settings.vault_account_id),
            urlencode(&self.settings.asset_id)
        );
        let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
        if !status.is_success() {
            return Err(status_error(&path, status, &body));
        }
        let text = body["addresses"][0]["address"].as_str().ok_or_else(|| {
            FireblocksError::BadAnswer(format!(
                "vault account {} has no {} address",
                self.settings.vault_account_id, self.settings.asset_id
            ))
        })?;
        text.parse().map_err(|_| {
            FireblocksError::BadAnswer(format!("vault address {text:?} is not an EVM address"))
        })
    }

    /// The signature of `hash` for `purpose`, asking Fireblocks at most once per attempt number
    /// (see the module's doc).
    pub async fn sign_hash(
        &self,
        hash: &B256,
        purpose: SigningFor,
    ) -> Result<Signature, FireblocksError> {
        let content = hex::encode(hash);
        let base = match purpose {
            SigningFor::Transaction { chain_id, nonce } => format!(
                "issuer-{chain_id}-{}-{:#x}-{nonce}",
                self.settings.vault_account_id, self.address
            ),
            SigningFor::Message => format!("issuer-msg-{content}"),
        };
        for attempt in 0..ATTEMPTS_PER_NONCE_MAX {
            let external_tx_id = format!("{base}-{attempt}");
            let Some(known) = self.lookup(&external_tx_id).await? else {
                let id = self.create(&external_tx_id, &content).await?;
                return self.wait(id, &external_tx_id).await;
            };
            let same = known.content.as_deref() == Some(content.as_str());
            match (stage(&known.status), same) {
                (Stage::Dead, true) => {
                    tracing::warn!(id = %known.id, %external_tx_id, status = %known.status, sub_status = %known.sub_status, "Fireblocks: this hash's signing request is dead; asking again under the next attempt");
                }
                (Stage::Dead | Stage::Completed, false) => {
                    tracing::debug!(id = %known.id, %external_tx_id, status = %known.status, "Fireblocks: earlier request for this nonce is settled; next attempt");
                }
                (Stage::Completed, true) => {
                    tracing::info!(id = %known.id, %external_tx_id, "Fireblocks: adopting the completed signing request found for this hash");
                    return known.signature();
                }
                (Stage::InFlight, true) => {
                    tracing::info!(id = %known.id, %external_tx_id, status = %known.status, "Fireblocks: waiting on the signing request already made for this hash");
                    return self.wait(known.id, &external_tx_id).await;
                }
                (Stage::InFlight, false) => {
                    return Err(FireblocksError::InFlight {
                        id: known.id,
                        external_tx_id,
                        status: known.status,
                    })
                }
            }
        }
        Err(FireblocksError::AttemptsExhausted(ATTEMPTS_PER_NONCE_MAX))
    }

    /// The request named `external_tx_id`, if Fireblocks has one.
    async fn lookup(&self, external_tx_id: &str) -> Result<Option<Request>, FireblocksError> {
        let path = format!(
            "/v1/transactions/external_tx_id/{}",
            urlencode(external_tx_id)
        );
        let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(
                "GET /v1/transactions/external_tx_id",
                status,
                &body,
            ));
        }
        Request::parse(body).map(Some)
    }

    /// Asks Fireblocks to sign `content` (hash hex) from the vault account; returns the id.
    async fn create(&self, external_tx_id: &str, content: &str) -> Result<String, FireblocksError> {
        let body = json!({
            "operation": "RAW",
            "assetId": self.settings.asset_id,
            "source": { "type": "VAULT_ACCOUNT", "id": self.settings.vault_account_id },
            "externalTxId": external_tx_id,
            "note": format!("issuer bot signature {external_tx_id}"),
            "extraParameters": { "rawMessageData": { "messages": [ { "content": content } ] } },
        });
        let (status, answer) = self
            .call(reqwest::Method::POST, "/v1/transactions", Some(&body))
            .await?;
        if !status.is_success() {
            return Err(status_error("POST /v1/transactions", status, &answer));
        }
        tracing::info!(%external_tx_id, id = ?answer["id"], "Fireblocks: signing request made");
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| FireblocksError::BadAnswer("created transaction without id".into()))
    }

    /// Polls request `id` with capped doubling waits until it completes, dies, or the timeout.
    async fn wait(&self, id: String, external_tx_id: &str) -> Result<Signature, FireblocksError> {
        let started = Instant::now();
        let mut delay = POLL_FIRST;
        let path = format!("/v1/transactions/{}", urlencode(&id));
        loop {
            let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
            if !status.is_success() {
                return Err(status_error("GET /v1/transactions/{id}", status, &body));
            }
            let request = Request::parse(body)?;
            match stage(&request.status) {
                Stage::Completed => return request.signature(),
                Stage::Dead => return Err(request.refused()),
                Stage::InFlight => {}
            }
            let waited = started.elapsed();
            if waited >= self.settings.sign_timeout {
                return Err(FireblocksError::Pending {
                    id,
                    external_tx_id: external_tx_id.to_owned(),
                    status: request.status,
                    waited_ms: waited.as_millis(),
                });
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 50);
            tokio::time::sleep(
                (delay + jitter).min(self.settings.sign_timeout.saturating_sub(waited)),
            )
            .await;
            delay = delay.saturating_mul(2).min(POLL_MAX);
        }
    }

    /// One authenticated call; answers the status and the JSON body (`null` when not JSON).
    async fn call(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<(reqwest::StatusCode, Value), FireblocksError> {
        let call = format!("{method} {path_and_query}");
        let text = body.map(Value::to_string).unwrap_or_default();
        let base = self.settings.api_url.trim_end_matches('/');
        let url = format!("{base}{path_and_query}");
        // `uri` is what the server sees: the full path (a base URL's own path included) and query.
        let uri = reqwest::Url::parse(&url)
            .map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            })
            .map_err(|e| FireblocksError::Transport {
                call: call.clone(),
                detail: format!("bad URL: {e}"),
            })?;
        let token = self
            .jwt(&uri, &text)
            .map_err(|e| FireblocksError::Transport {
                call: call.clone(),
                detail: format!("cannot sign the request JWT: {e}"),
            })?;
        let mut request = self
            .http
            .request(method, &url)
            .header("X-API-Key", self.settings.api_key.expose())
            .bearer_auth(token);
        if body.is_some() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(text);
        }
        let response = request
            .send()
            .await
            .map_err(|e| FireblocksError::Transport {
                call: call.clone(),
                detail: crate::config::sanitise_for_log(&e.to_string()),
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| FireblocksError::Transport {
                call,
                detail: crate::config::sanitise_for_log(&e.to_string()),
            })?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// The request's JWT: RS256 over `{uri, nonce, iat, exp, sub, bodyHash}`.
    fn jwt(&self, uri: &str, body: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let now = crate::clock::unix_now();
        let claims = json!({
            "uri": uri,
            "nonce": hex::encode(rand::random::<[u8; 16]>()),
            "iat": now,
            "exp": now + JWT_LIFETIME_SECS,
            "sub": self.settings.api_key.expose(),
            "bodyHash": hex::encode(Sha256::digest(body.as_bytes())),
        });
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
    }
}

fn status_error(call: &str, status: reqwest::StatusCode, body: &Value) -> FireblocksError {
    let message = body["message"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    FireblocksError::Status {
        call: call.to_owned(),
        status: status.as_u16(),
        message: crate::config::sanitise_for_log(&message),
    }
}

/// Percent-encodes a path segment (ids are ours or Fireblocks', but `:` and the like must not be
/// read as structure).
fn urlencode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
