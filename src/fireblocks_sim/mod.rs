//! A Fireblocks simulator: a real HTTP server (tide) speaking the slice of Fireblocks' API the
//! issuer's raw signer uses, holding a secp256k1 key for one vault account, with faults.
//!
//! It authenticates every API call as Fireblocks does: `X-API-Key` must be the configured key and
//! `Authorization: Bearer <JWT>` must verify RS256 against the API user's public key, with `sub`
//! the API key, `uri` the request's path and query, `bodyHash` the SHA-256 of the exact body, an
//! unexpired `exp` at most 30 seconds after `iat`, and a `nonce` never seen before.
//!
//! API: `GET /v1/vault/accounts/:vault/:asset/addresses_paginated`, `POST /v1/transactions`
//! (`operation: RAW` only), `GET /v1/transactions/:id`,
//! `GET /v1/transactions/external_tx_id/:external_tx_id`.
//! Control, no auth (loopback only): `GET /sim/state`, `POST /sim/faults`.
//!
//! Faults: a signing request completes only after `complete_after_ms`; the next
//! `reject_next` requests end REJECTED; the next `fail_next` API calls answer 503; the next
//! `lose_next_create_answers` requests are created but answered 503 (the answer lost on the way);
//! `high_s` answers signatures with the high-s twin (valid, but not what Ethereum accepts).

mod cli;
mod server;

pub use cli::{run, FireblocksSimArgs};
pub use server::serve;

use crate::chain::EthersSigner;
use alloy::primitives::{Address, B256, U256};
use alloy::signers::SignerSync;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The order of secp256k1's group: `n - s` is the high-s twin of a signature's `s`.
const SECP256K1_N: U256 = alloy::primitives::uint!(
    0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256
);

/// What the simulator is configured with.
#[derive(Clone)]
pub struct FireblocksSimConfig {
    /// The API user's key, expected in `X-API-Key` and as the JWT's `sub`.
    pub api_key: String,
    /// The API user's RSA public key (PEM) the JWTs must verify against.
    pub public_key_pem: String,
    /// The vault account's secp256k1 key, hex.
    pub signing_key: String,
    pub vault_account_id: String,
    pub asset_id: String,
}

impl std::fmt::Debug for FireblocksSimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FireblocksSimConfig")
            .field("vault_account_id", &self.vault_account_id)
            .field("asset_id", &self.asset_id)
            .finish_non_exhaustive()
    }
}

/// Switchable faults (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FireblocksFaults {
    pub complete_after_ms: u64,
    pub reject_next: u32,
    pub fail_next: u32,
    pub lose_next_create_answers: u32,
    pub high_s: bool,
}

/// One signing request as the simulator holds it.
#[derive(Debug, Clone, Serialize)]
pub struct SimSigning {
    pub id: String,
    pub external_tx_id: String,
    /// The hash to sign, hex without prefix.
    pub content: String,
    pub status: String,
    /// Whether a signature was produced.
    pub signed: bool,
}

/// What `GET /sim/state` answers.
#[derive(Debug, Clone, Serialize)]
pub struct FireblocksSnapshot {
    pub address: Address,
    pub signings: Vec<SimSigning>,
    /// Signatures produced in all.
    pub signatures: u64,
    /// Requests created while another request for the same nonce (the same `externalTxId` but
    /// for its last `-attempt` part) was still in flight: what the issuer must never do.
    pub overlapping_creates: u64,
    /// API calls refused for their authentication, by reason.
    pub auth_refusals: BTreeMap<String, u64>,
    pub faults: FireblocksFaults,
}

struct Signing {
    id: String,
    external_tx_id: String,
    content: String,
    request: Value,
    created: Instant,
    complete_after: Duration,
    rejected: bool,
    /// `(r, s, v)` once completed.
    signature: Option<(U256, U256, u8)>,
}

impl Signing {
    fn status(&self) -> &'static str {
        match (self.signature.is_some(), self.rejected) {
            (_, true) if self.created.elapsed() >= self.complete_after => "REJECTED",
            (true, _) => "COMPLETED",
            _ => "PENDING_SIGNATURE",
        }
    }

    fn view(&self) -> SimSigning {
        SimSigning {
            id: self.id.clone(),
            external_tx_id: self.external_tx_id.clone(),
            content: self.content.clone(),
            status: self.status().to_owned(),
            signed: self.signature.is_some(),
        }
    }

    fn json(&self, public_key: &str) -> Value {
        let status = self.status();
        let mut body = json!({
            "id": self.id,
            "externalTxId": self.external_tx_id,
            "status": status,
            "subStatus": if status == "REJECTED" { "REJECTED_BY_USER" } else { "" },
            "operation": "RAW",
            "assetId": self.request["assetId"],
            "source": self.request["source"],
            "extraParameters": self.request["extraParameters"],
            "note": self.request["note"],
            "signedMessages": [],
        });
        if let (Some((r, s, v)), "COMPLETED") = (self.signature, status) {
            let r = format!("{r:064x}");
            let s = format!("{s:064x}");
            body["signedMessages"] = json!([{
                "content": self.content,
                "algorithm": "MPC_ECDSA_SECP256K1",
                "derivationPath": [44, 60, 0, 0, 0],
                "signature": { "fullSig": format!("{r}{s}"), "r": r, "s": s, "v": v },
                "publicKey": public_key,
            }]);
        }
        body
    }
}

struct State {
    config: FireblocksSimConfig,
    signer: EthersSigner,
    decoding: DecodingKey,
    faults: FireblocksFaults,
    signings: Vec<Signing>,
    seen_nonces: HashSet<String>,
    signatures: u64,
    overlapping_creates: u64,
    auth_refusals: BTreeMap<String, u64>,
    next_id: u64,
}

/// A reply: status and JSON body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    fn error(status: u16, code: i64, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "message": message.into(), "code": code }),
        }
    }
}

/// A cheap-to-clone handle on the simulator's state (a std `Mutex`, never held across an
/// `.await`, as in the Alpaca simulator).
#[derive(Clone)]
pub struct FireblocksSim {
    inner: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FireblocksSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FireblocksSim").finish_non_exhaustive()
    }
}

impl FireblocksSim {
    /// Refuses a signing key or public key that does not parse.
    pub fn new(config: FireblocksSimConfig) -> Result<FireblocksSim, String> {
        let signer = EthersSigner::from_private_key(&config.signing_key)
            .map_err(|e| format!("signing key: {e}"))?;
        let decoding = DecodingKey::from_rsa_pem(config.public_key_pem.as_bytes())
            .map_err(|e| format!("API user's public key: {e}"))?;
        Ok(FireblocksSim {
            inner: Arc::new(Mutex::new(State {
                config,
                signer,
                decoding,
                faults: FireblocksFaults::default(),
                signings: Vec::new(),
                seen_nonces: HashSet::new(),
                signatures: 0,
                overlapping_creates: 0,
                auth_refusals: BTreeMap::new(),
                next_id: 1,
            })),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// The vault account's address: the bot the issuer will sign as.
    pub fn address(&self) -> Address {
        self.with(|s| s.signer.address())
    }

    pub fn snapshot(&self) -> FireblocksSnapshot {
        self.with(|s| {
            s.settle();
            FireblocksSnapshot {
                address: s.signer.address(),
                signings: s.signings.iter().map(Signing::view).collect(),
                signatures: s.signatures,
                overlapping_creates: s.overlapping_creates,
                auth_refusals: s.auth_refusals.clone(),
                faults: s.faults.clone(),
            }
        })
    }

    pub fn set_faults(&self, faults: FireblocksFaults) {
        self.with(|s| s.faults = faults);
    }

    /// Checks a request's authentication (see the module doc); the reason when refused.
    pub(crate) fn authenticate(
        &self,
        api_key: Option<&str>,
        authorization: Option<&str>,
        uri: &str,
        body: &[u8],
    ) -> Result<(), String> {
        self.with(|s| {
            let checked = s.check_auth(api_key, authorization, uri, body);
            if let Err(reason) = &checked {
                *s.auth_refusals.entry(reason.clone()).or_default() += 1;
            }
            checked
        })
    }

    /// Takes one `fail_next` fault if armed.
    pub(crate) fn take_failure(&self) -> bool {
        self.with(|s| {
            if s.faults.fail_next > 0 {
                s.faults.fail_next -= 1;
                true
            } else {
                false
            }
        })
    }

    pub(crate) fn addresses(&self, vault: &str, asset: &str) -> Reply {
        self.with(|s| {
            if vault != s.config.vault_account_id || asset != s.config.asset_id {
                return Reply::error(
                    404,
                    11001,
                    format!("vault account {vault} has no {asset} wallet"),
                );
            }
            Reply::ok(json!({
                "addresses": [{
                    "assetId": s.config.asset_id,
                    "address": format!("{:#x}", s.signer.address()),
                    "type": "Permanent",
                    "addressFormat": "BASE",
                }],
                "paging": {},
            }))
        })
    }

    pub(crate) fn create(&self, body: &[u8]) -> Reply {
        self.with(|s| s.create(body))
    }

    pub(crate) fn get(&self, id: &str) -> Reply {
        self.with(|s| {
            s.settle();
            let public_key = s.public_key_hex();
            match s.signings.iter().find(|t| t.id == id) {
                Some(t) => Reply::ok(t.json(&public_key)),
                None => Reply::error(404, 1004, format!("transaction {id} not found")),
            }
        })
    }

    pub(crate) fn get_by_external(&self, external_tx_id: &str) -> Reply {
        self.with(|s| {
            s.settle();
            let public_key = s.public_key_hex();
            match s
                .signings
                .iter()
                .find(|t| t.external_tx_id == external_tx_id)
            {
                Some(t) => Reply::ok(t.json(&public_key)),
                None => Reply::error(
                    404,
                    1004,
                    format!("no transaction with externalTxId {external_tx_id}"),
                ),
            }
        })
    }
}

impl State {
    fn check_auth(
        &mut self,
        api_key: Option<&str>,
        authorization: Option<&str>,
        uri: &str,
        body: &[u8],
    ) -> Result<(), String> {
        if api_key != Some(self.config.api_key.as_str()) {
            return Err("X-API-Key missing or unknown".into());
        }
        let token = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .ok_or("Authorization: Bearer missing")?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(token, &self.decoding, &validation)
            .map_err(|e| format!("JWT refused: {e}"))?
            .claims;
        if claims["sub"].as_str() != Some(self.config.api_key.as_str()) {
            return Err("JWT sub is not the API key".into());
        }
        if claims["uri"].as_str() != Some(uri) {
            return Err(format!("JWT uri {:?} is not {uri:?}", claims["uri"]));
        }
        let body_hash = hex::encode(Sha256::digest(body));
        if claims["bodyHash"].as_str() != Some(body_hash.as_str()) {
            return Err("JWT bodyHash does not match the body".into());
        }
        let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
            return Err("JWT iat/exp are not numbers".into());
        };
        if exp < iat || exp - iat > 30 {
            return Err("JWT lives longer than 30 seconds".into());
        }
        let nonce = claims["nonce"].as_str().ok_or("JWT without nonce")?;
        if !self.seen_nonces.insert(nonce.to_owned()) {
            return Err("JWT nonce replayed".into());
        }
        Ok(())
    }

    fn public_key_hex(&self) -> String {
        // The address stands in for the public key: the issuer never reads this field.
        format!("{:#x}", self.signer.address())
    }

    fn create(&mut self, body: &[u8]) -> Reply {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Reply::error(400, 1000, "body is not JSON");
        };
        if request["operation"] != "RAW" {
            return Reply::error(400, 1001, "only operation RAW is simulated");
        }
        if request["assetId"].as_str() != Some(self.config.asset_id.as_str()) {
            return Reply::error(400, 1002, "unknown assetId for this vault account");
        }
        if request["source"]["type"] != "VAULT_ACCOUNT"
            || request["source"]["id"].as_str() != Some(self.config.vault_account_id.as_str())
        {
            return Reply::error(400, 1003, "source must be the configured vault account");
        }
        let messages = request["extraParameters"]["rawMessageData"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let [message] = messages.as_slice() else {
            return Reply::error(400, 1005, "exactly one raw message is simulated");
        };
        let content = message["content"].as_str().unwrap_or_default().to_owned();
        if content.len() != 64 || hex::decode(&content).is_err() {
            return Reply::error(400, 1006, "content must be a 32-byte hash in hex");
        }
        let external_tx_id = request["externalTxId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !external_tx_id.is_empty()
            && self
                .signings
                .iter()
                .any(|t| t.external_tx_id == external_tx_id)
        {
            return Reply::error(
                400,
                1438,
                "The external tx id that was provided in the request, already exists",
            );
        }
        self.settle();
        let base = |id: &str| id.rsplit_once('-').map(|(b, _)| b.to_owned());
        let this_base = base(&external_tx_id);
        if this_base.is_some()
            && self
                .signings
                .iter()
                .any(|t| base(&t.external_tx_id) == this_base && t.status() == "PENDING_SIGNATURE")
        {
            self.overlapping_creates += 1;
        }
        let rejected = if self.faults.reject_next > 0 {
            self.faults.reject_next -= 1;
            true
        } else {
            false
        };
        let id = format!("fb-sim-{:06}", self.next_id);
        self.next_id += 1;
        self.signings.push(Signing {
            id: id.clone(),
            external_tx_id,
            content,
            request,
            created: Instant::now(),
            complete_after: Duration::from_millis(self.faults.complete_after_ms),
            rejected,
            signature: None,
        });
        self.settle();
        if self.faults.lose_next_create_answers > 0 {
            self.faults.lose_next_create_answers -= 1;
            return Reply::error(503, 1500, "simulated: the answer was lost");
        }
        Reply::ok(json!({ "id": id, "status": "SUBMITTED" }))
    }

    /// Signs what is due: each request at most once.
    fn settle(&mut self) {
        let high_s = self.faults.high_s;
        let mut produced = 0;
        for t in &mut self.signings {
            if t.signature.is_some() || t.rejected || t.created.elapsed() < t.complete_after {
                continue;
            }
            let Ok(bytes) = hex::decode(&t.content) else {
                continue;
            };
            let Ok(sig) = self.signer.sign_hash_sync(&B256::from_slice(&bytes)) else {
                continue;
            };
            let (s, v) = if high_s {
                (SECP256K1_N - sig.s(), u8::from(!sig.v()))
            } else {
                (sig.s(), u8::from(sig.v()))
            };
            t.signature = Some((sig.r(), s, v));
            produced += 1;
        }
        self.signatures += produced;
    }
}
