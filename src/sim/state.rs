//! The simulator's memory and Alpaca's rules, with no I/O: each Broker API call is a method that
//! takes the parsed request and returns the status and JSON Alpaca would answer.

use crate::alpaca::wire::{RequestStatus, RequestType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reconciler::qty::ALPACA_DECIMALS;
use reconciler::Qty;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Who the simulator is: the account in its paths and the Basic credentials it accepts.
#[derive(Clone)]
pub struct SimConfig {
    pub account_id: String,
    pub api_key: String,
    /// Never printed.
    pub api_secret: String,
    /// Seeds the fault dice and the ids, so a failing run can be replayed. `None`: from entropy.
    pub seed: Option<u64>,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("account_id", &self.account_id)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("seed", &self.seed)
            .finish()
    }
}

pub use super::faults::{Faults, FaultsPatch, PendingTxHash, RedeemOutcome, Refusal};

/// A tokenization request as the simulator keeps it: plain strings, as Alpaca would store them,
/// so the client's parsing is tested against text it did not produce itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRequest {
    /// Alpaca's `tokenization_request_id`.
    pub id: String,
    pub issuer_request_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: RequestType,
    pub status: RequestStatus,
    pub underlying_symbol: String,
    pub token_symbol: String,
    pub qty: String,
    pub issuer: String,
    pub network: String,
    pub wallet_address: String,
    pub tx_hash: Option<String>,
    /// The client, under exactly one of Alpaca's two current fields.
    pub client: SimClient,
    pub created_at: String,
    pub updated_at: String,
    /// GETs of this request so far (drives `redeem_complete_after_polls`).
    pub polls: u32,
}

/// How a request names its client: Alpaca's two current fields, exactly one of them. The
/// deprecated `client_id` is neither accepted nor sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimClient {
    /// `client_external_account_id`: the id the issuer's connect endpoint answered.
    ClientExternalAccountId(String),
    /// `client_account_id`: the AP's Alpaca account UUID.
    ClientAccountId(String),
}

impl SimClient {
    pub fn field(&self) -> &'static str {
        match self {
            Self::ClientExternalAccountId(_) => "client_external_account_id",
            Self::ClientAccountId(_) => "client_account_id",
        }
    }
    pub fn value(&self) -> &str {
        match self {
            Self::ClientExternalAccountId(v) | Self::ClientAccountId(v) => v,
        }
    }
    /// The client a body names, `Err` with Alpaca's 422 message when it names none, both, or uses
    /// the deprecated `client_id`.
    pub fn from_body(body: &Value) -> Result<SimClient, String> {
        if body.get("client_id").is_some() {
            return Err("client_id is no longer supported: use client_external_account_id or client_account_id".into());
        }
        match (
            text_field(body, "client_external_account_id"),
            text_field(body, "client_account_id"),
        ) {
            (Some(id), None) => Ok(Self::ClientExternalAccountId(id.to_owned())),
            (None, Some(id)) => Ok(Self::ClientAccountId(id.to_owned())),
            (Some(_), Some(_)) => {
                Err("give one of client_external_account_id or client_account_id, not both".into())
            }
            (None, None) => {
                Err("client_external_account_id or client_account_id is required".into())
            }
        }
    }
}

impl SimRequest {
    /// The JSON Alpaca answers for this request.
    pub fn wire(&self, pending_tx_hash: PendingTxHash) -> Value {
        let mut body = Map::new();
        let mut put = |key: &str, value: Value| {
            body.insert(key.to_owned(), value);
        };
        put("tokenization_request_id", json!(self.id));
        put(
            "issuer_request_id",
            json!(self.issuer_request_id.clone().unwrap_or_default()),
        );
        put("type", json!(self.kind));
        put("status", json!(self.status));
        put("underlying_symbol", json!(self.underlying_symbol));
        put("token_symbol", json!(self.token_symbol));
        put("qty", json!(self.qty));
        put("issuer", json!(self.issuer));
        put("network", json!(self.network));
        put("wallet_address", json!(self.wallet_address));
        match (&self.tx_hash, pending_tx_hash) {
            (Some(hash), _) => put("tx_hash", json!(hash)),
            (None, PendingTxHash::Empty) => put("tx_hash", json!("")),
            (None, PendingTxHash::Null) => put("tx_hash", Value::Null),
            (None, PendingTxHash::Absent) => {}
        }
        put(self.client.field(), json!(self.client.value()));
        put("created_at", json!(self.created_at));
        put("updated_at", json!(self.updated_at));
        Value::Object(body)
    }
}

/// One `callback/mint` the simulator received, whatever it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedMintCallback {
    pub tokenization_request_id: String,
    pub body: Value,
    pub status: u16,
    /// When it arrived, in milliseconds since the Unix epoch (what the bench measures latency to).
    #[serde(default)]
    pub received_unix_ms: u64,
}

/// One `callback/redeem` the simulator received, whatever it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceivedRedeemCall {
    pub idempotency_key: Option<String>,
    pub issuer_request_id: Option<String>,
    /// The request created or replayed, if any.
    pub tokenization_request_id: Option<String>,
    pub body: Value,
    pub status: u16,
}

/// Everything the simulator knows, as `GET /sim/state` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimSnapshot {
    pub requests: Vec<SimRequest>,
    pub mint_callbacks: Vec<ReceivedMintCallback>,
    /// Callbacks received per tokenization_request_id (a test asserts exactly one).
    pub mint_callback_counts: BTreeMap<String, u64>,
    pub redeem_calls: Vec<ReceivedRedeemCall>,
    pub redeem_call_count: u64,
    /// Broker API hits per route (`"POST callback/redeem"`, ...), faulted ones included.
    pub hits: BTreeMap<String, u64>,
    pub hits_total: u64,
    pub faults: Faults,
}

/// A simulated Broker API answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// `Retry-After` seconds, for a 429.
    pub retry_after_secs: Option<u64>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            retry_after_secs: None,
        }
    }

    /// Alpaca's error shape: `{code, message}`, the code being the status followed by zeros.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "code": u64::from(status) * 100_000, "message": message.into() }),
            retry_after_secs: None,
        }
    }
}

/// What a remembered `Idempotency-Key` gave.
#[derive(Debug, Clone)]
struct IdempotentAnswer {
    body: Value,
    reply: Reply,
    tokenization_request_id: Option<String>,
}

/// A fault to inject before the call is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    ServerError,
    TooManyRequests { retry_after_secs: u64 },
}

/// A new mint request, as Alpaca records one when an AP asks to mint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMint {
    /// `None`: a fresh id.
    pub tokenization_request_id: Option<String>,
    pub issuer_request_id: Option<String>,
    pub qty: String,
    pub underlying_symbol: String,
    pub token_symbol: String,
    pub network: String,
    pub client: SimClient,
    pub wallet_address: String,
}

/// The simulator's state. Only reached through [`super::Sim`]'s lock.
pub(super) struct State {
    pub(super) config: SimConfig,
    pub(super) faults: Faults,
    rng: StdRng,
    requests: Vec<SimRequest>,
    /// Request id -> its place in `requests`: a bench holds 100,000 of them.
    positions: HashMap<String, usize>,
    mint_callbacks: Vec<ReceivedMintCallback>,
    redeem_calls: Vec<ReceivedRedeemCall>,
    idempotency: HashMap<String, IdempotentAnswer>,
    hits: BTreeMap<String, u64>,
}

/// Redeem fields Alpaca requires, besides one of the client id spellings.
const REDEEM_REQUIRED: [&str; 7] = [
    "issuer_request_id",
    "underlying_symbol",
    "token_symbol",
    "qty",
    "network",
    "wallet_address",
    "tx_hash",
];
/// Longest `Idempotency-Key` Alpaca accepts (announced: 36, a UUID).
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 36;

/// A non-empty string field of a JSON object.
fn text_field<'a>(body: &'a Value, key: &str) -> Option<&'a str> {
    body.get(key)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

impl State {
    pub(super) fn new(config: SimConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Self {
            config,
            faults: Faults::default(),
            rng,
            requests: Vec::new(),
            positions: HashMap::new(),
            mint_callbacks: Vec::new(),
            redeem_calls: Vec::new(),
            idempotency: HashMap::new(),
            hits: BTreeMap::new(),
        }
    }

    /// Forgets every request, call and fault; keeps the identity.
    pub(super) fn reset(&mut self) {
        *self = Self::new(self.config.clone());
    }

    pub(super) fn snapshot(&self) -> SimSnapshot {
        let mut mint_callback_counts = BTreeMap::new();
        for callback in &self.mint_callbacks {
            *mint_callback_counts
                .entry(callback.tokenization_request_id.clone())
                .or_insert(0u64) += 1;
        }
        SimSnapshot {
            requests: self.requests.clone(),
            mint_callbacks: self.mint_callbacks.clone(),
            mint_callback_counts,
            redeem_calls: self.redeem_calls.clone(),
            redeem_call_count: u64::try_from(self.redeem_calls.len()).unwrap_or(u64::MAX),
            hits: self.hits.clone(),
            hits_total: self.hits.values().sum(),
            faults: self.faults.clone(),
        }
    }

    pub(super) fn mint_callbacks_accepted(&self) -> usize {
        self.mint_callbacks
            .iter()
            .filter(|c| c.status == 200)
            .count()
    }

    pub(super) fn count_hit(&mut self, route: &str) {
        *self.hits.entry(route.to_owned()).or_insert(0) += 1;
    }

    /// Rolls the fault dice for one Broker API call.
    pub(super) fn roll_fault(&mut self) -> Option<Injected> {
        if self.rng.gen::<f64>() < self.faults.error_rate_5xx {
            return Some(Injected::ServerError);
        }
        if self.rng.gen::<f64>() < self.faults.rate_429 {
            return Some(Injected::TooManyRequests {
                retry_after_secs: self.faults.retry_after_secs,
            });
        }
        None
    }

    pub(super) fn roll_drop(&mut self) -> bool {
        self.rng.gen::<f64>() < self.faults.drop_connections_rate
    }

    fn fresh_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.gen();
        let hex = hex::encode(bytes);
        // UUID layout, as Alpaca's ids are; `hex` is always 32 ASCII characters.
        let part = |from: usize, to: usize| hex.get(from..to).unwrap_or_default().to_owned();
        format!(
            "{}-{}-{}-{}-{}",
            part(0, 8),
            part(8, 12),
            part(12, 16),
            part(16, 20),
            part(20, 32)
        )
    }

    pub(super) fn request(&self, id: &str) -> Option<&SimRequest> {
        self.requests.get(*self.positions.get(id)?)
    }

    fn request_mut(&mut self, id: &str) -> Option<&mut SimRequest> {
        self.requests.get_mut(*self.positions.get(id)?)
    }

    /// Keeps `request` (its id is new: both callers check).
    fn push_request(&mut self, request: SimRequest) {
        self.positions
            .insert(request.id.clone(), self.requests.len());
        self.requests.push(request);
    }

    /// Records a mint request the way Alpaca does when an AP asks to mint: pending, no tx yet.
    pub(super) fn add_mint(&mut self, mint: NewMint) -> Result<SimRequest, String> {
        let id = match mint.tokenization_request_id {
            Some(id) if self.request(&id).is_some() => {
                return Err(format!("tokenization_request_id {id} already exists"));
            }
            Some(id) if id.is_empty() => return Err("empty tokenization_request_id".to_owned()),
            Some(id) => id,
            None => self.fresh_id(),
        };
        let now = now_rfc3339();
        let request = SimRequest {
            id,
            issuer_request_id: mint.issuer_request_id.filter(|irid| !irid.is_empty()),
            kind: RequestType::Mint,
            status: RequestStatus::Pending,
            underlying_symbol: mint.underlying_symbol,
            token_symbol: mint.token_symbol,
            qty: mint.qty,
            issuer: "issuer".to_owned(),
            network: mint.network,
            wallet_address: mint.wallet_address,
            tx_hash: None,
            client: mint.client,
            created_at: now.clone(),
            updated_at: now,
            polls: 0,
        };
        self.push_request(request.clone());
        Ok(request)
    }

    /// Stores the issuer's id once the issuer accepted a mint.
    pub(super) fn set_issuer_request_id(&mut self, id: &str, issuer_request_id: &str) {
        if let Some(request) = self.request_mut(id) {
            request.issuer_request_id = Some(issuer_request_id.to_owned());
            request.updated_at = now_rfc3339();
        }
    }

    /// Completes or rejects a pending request by hand (or as the journal outcome).
    pub(super) fn settle(&mut self, id: &str, status: RequestStatus) -> Reply {
        let pending_tx_hash = self.faults.pending_tx_hash;
        let Some(request) = self.request_mut(id) else {
            return Reply::error(404, format!("tokenization request {id} not found"));
        };
        if request.status != RequestStatus::Pending {
            return Reply::error(
                409,
                format!("tokenization request {id} is already {:?}", request.status),
            );
        }
        request.status = status;
        request.updated_at = now_rfc3339();
        Reply::ok(request.wire(pending_tx_hash))
    }

    /// `POST .../callback/mint`.
    pub(super) fn mint_callback(&mut self, raw: &[u8]) -> Reply {
        let Ok(body) = serde_json::from_slice::<Value>(raw) else {
            return Reply::error(400, "body is not JSON");
        };
        let trid = text_field(&body, "tokenization_request_id")
            .unwrap_or_default()
            .to_owned();
        let reply = match &self.faults.refuse_mint_callback {
            Some(refusal) => Reply::error(refusal.status, refusal.message.clone()),
            None => self.mint_callback_reply(&trid, &body),
        };
        let received_unix_ms = crate::clock::unix_now_ms();
        self.mint_callbacks.push(ReceivedMintCallback {
            tokenization_request_id: trid,
            body,
            status: reply.status,
            received_unix_ms,
        });
        reply
    }

    fn mint_callback_reply(&mut self, trid: &str, body: &Value) -> Reply {
        for key in [
            "tokenization_request_id",
            "wallet_address",
            "tx_hash",
            "network",
        ] {
            if text_field(body, key).is_none() {
                return Reply::error(422, format!("{key} is required"));
            }
        }
        let client = match SimClient::from_body(body) {
            Ok(client) => client,
            Err(message) => return Reply::error(422, message),
        };
        let pending_tx_hash = self.faults.pending_tx_hash;
        let Some(request) = self.request_mut(trid) else {
            return Reply::error(404, format!("tokenization request {trid} not found"));
        };
        if request.kind != RequestType::Mint {
            return Reply::error(422, format!("tokenization request {trid} is not a mint"));
        }
        if request.status == RequestStatus::Rejected {
            return Reply::error(422, format!("tokenization request {trid} was rejected"));
        }
        let same = |key: &str, ours: &str| {
            text_field(body, key).is_some_and(|theirs| theirs.eq_ignore_ascii_case(ours))
        };
        if !same("wallet_address", &request.wallet_address) || !same("network", &request.network) {
            return Reply::error(422, "wallet_address or network does not match the request");
        }
        if client != request.client {
            return Reply::error(
                422,
                format!(
                    "{} does not match the request (it named its client by {})",
                    client.field(),
                    request.client.field()
                ),
            );
        }
        if request.status == RequestStatus::Pending {
            request.tx_hash = text_field(body, "tx_hash").map(str::to_owned);
            request.status = RequestStatus::Completed;
            request.updated_at = now_rfc3339();
        }
        Reply::ok(request.wire(pending_tx_hash))
    }

    /// `POST .../callback/redeem`.
    pub(super) fn redeem(&mut self, idempotency_key: Option<&str>, raw: &[u8]) -> Reply {
        let body = serde_json::from_slice::<Value>(raw).unwrap_or(Value::Null);
        let (reply, trid) = match &self.faults.refuse_redeem {
            Some(refusal) => (Reply::error(refusal.status, refusal.message.clone()), None),
            None => self.redeem_reply(idempotency_key, &body),
        };
        self.redeem_calls.push(ReceivedRedeemCall {
            idempotency_key: idempotency_key.map(str::to_owned),
            issuer_request_id: text_field(&body, "issuer_request_id").map(str::to_owned),
            tokenization_request_id: trid,
            body,
            status: reply.status,
        });
        reply
    }

    fn redeem_reply(&mut self, key: Option<&str>, body: &Value) -> (Reply, Option<String>) {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return (
                Reply::error(400, "Idempotency-Key header is required"),
                None,
            );
        };
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return (Reply::error(400, "malformed Idempotency-Key"), None);
        }
        if key.len() > IDEMPOTENCY_KEY_LEN_MAX {
            return (
                Reply::error(
                    422,
                    format!("Idempotency-Key longer than {IDEMPOTENCY_KEY_LEN_MAX} characters"),
                ),
                None,
            );
        }
        if !body.is_object() {
            return (Reply::error(400, "body is not a JSON object"), None);
        }
        if let Some(earlier) = self.idempotency.get(key) {
            if earlier.body == *body {
                let rejected = earlier
                    .tokenization_request_id
                    .as_deref()
                    .and_then(|id| self.request(id))
                    .is_some_and(|r| r.status == RequestStatus::Rejected);
                if rejected {
                    return (
                        Reply::error(400, "replay of a request that was rejected"),
                        None,
                    );
                }
                return (
                    earlier.reply.clone(),
                    earlier.tokenization_request_id.clone(),
                );
            }
            return (
                Reply::error(422, "Idempotency-Key already used with a different body"),
                None,
            );
        }
        for field in REDEEM_REQUIRED {
            if text_field(body, field).is_none() {
                return (Reply::error(422, format!("{field} is required")), None);
            }
        }
        let client = match SimClient::from_body(body) {
            Ok(client) => client,
            Err(message) => return (Reply::error(422, message), None),
        };
        let field = |key: &str| text_field(body, key).unwrap_or_default().to_owned();
        let qty = field("qty");
        match Qty::parse_positive(&qty) {
            Ok(parsed) if parsed.truncate_to(ALPACA_DECIMALS).1.is_zero() => {}
            Ok(_) => {
                return (
                    Reply::error(422, format!("qty {qty} has more than 9 decimals")),
                    None,
                );
            }
            Err(err) => return (Reply::error(422, format!("qty: {err}")), None),
        }
        let issuer_request_id = field("issuer_request_id");
        if self
            .requests
            .iter()
            .any(|r| r.issuer_request_id.as_deref() == Some(issuer_request_id.as_str()))
        {
            return (
                Reply::error(
                    422,
                    format!("issuer_request_id {issuer_request_id} already exists"),
                ),
                None,
            );
        }
        let now = now_rfc3339();
        let request = SimRequest {
            id: self.fresh_id(),
            issuer_request_id: Some(issuer_request_id),
            kind: RequestType::Redeem,
            status: RequestStatus::Pending,
            underlying_symbol: field("underlying_symbol"),
            token_symbol: field("token_symbol"),
            qty,
            issuer: "issuer".to_owned(),
            network: field("network"),
            wallet_address: field("wallet_address"),
            tx_hash: Some(field("tx_hash")),
            client,
            created_at: now.clone(),
            updated_at: now,
            polls: 0,
        };
        let reply = Reply::ok(request.wire(self.faults.pending_tx_hash));
        let trid = Some(request.id.clone());
        self.push_request(request);
        self.idempotency.insert(
            key.to_owned(),
            IdempotentAnswer {
                body: body.clone(),
                reply: reply.clone(),
                tokenization_request_id: trid.clone(),
            },
        );
        (reply, trid)
    }

    /// `GET .../requests/{id}`: a poll, which moves a pending redeem along its journal.
    pub(super) fn get_request(&mut self, id: &str) -> Reply {
        self.poll(|r| r.id == id)
            .unwrap_or_else(|| Reply::error(404, format!("tokenization request {id} not found")))
    }

    /// `GET .../requests:by_issuer_request_id`.
    pub(super) fn get_by_issuer_id(&mut self, issuer_request_id: &str) -> Reply {
        self.poll(|r| r.issuer_request_id.as_deref() == Some(issuer_request_id))
            .unwrap_or_else(|| {
                Reply::error(
                    404,
                    format!("no tokenization request with issuer_request_id {issuer_request_id}"),
                )
            })
    }

    fn poll(&mut self, matches: impl Fn(&SimRequest) -> bool) -> Option<Reply> {
        let faults = self.faults.clone();
        let request = self.requests.iter_mut().find(|r| matches(r))?;
        if request.kind == RequestType::Redeem
            && request.status == RequestStatus::Pending
            && request.polls >= faults.redeem_complete_after_polls
        {
            let settled = match faults.redeem_outcome {
                RedeemOutcome::Completed => Some(RequestStatus::Completed),
                RedeemOutcome::Rejected => Some(RequestStatus::Rejected),
                RedeemOutcome::Manual => None,
            };
            if let Some(status) = settled {
                request.status = status;
                request.updated_at = now_rfc3339();
            }
        }
        request.polls = request.polls.saturating_add(1);
        Some(Reply::ok(request.wire(faults.pending_tx_hash)))
    }

    /// `GET .../requests?type=&status=&after=&before=`.
    pub(super) fn list(&self, query: &[(String, String)]) -> Reply {
        let mut kind = None;
        let mut status = None;
        let mut after = None;
        let mut before = None;
        for (key, value) in query {
            match key.as_str() {
                "type" => match wire_enum::<RequestType>(value) {
                    Some(k) => kind = Some(k),
                    None => return Reply::error(422, format!("unknown type {value:?}")),
                },
                "status" => match wire_enum::<RequestStatus>(value) {
                    Some(s) => status = Some(s),
                    None => return Reply::error(422, format!("unknown status {value:?}")),
                },
                "after" => after = Some(value.as_str()),
                "before" => before = Some(value.as_str()),
                _ => {}
            }
        }
        let listed: Vec<Value> = self
            .requests
            .iter()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .filter(|r| status.is_none_or(|s| r.status == s))
            .filter(|r| after.is_none_or(|a| r.created_at.as_str() > a))
            .filter(|r| before.is_none_or(|b| r.created_at.as_str() < b))
            .map(|r| r.wire(self.faults.pending_tx_hash))
            .collect();
        Reply::ok(Value::Array(listed))
    }
}

/// A lowercase wire spelling (`mint`, `pending`, ...) to its enum.
fn wire_enum<T: serde::de::DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(Value::String(text.to_owned())).ok()
}

/// Now as RFC 3339 UTC with microseconds, which sorts as text in time order.
pub(super) fn now_rfc3339() -> String {
    let since = crate::clock::since_epoch();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
