//! The tide server Alpaca and operators call.
//!
//! A handler validates, durably records an intent in the store and answers; it never sends a
//! transaction or calls Alpaca (DESIGN §2). Three kinds of route:
//!
//! - Alpaca's (`X-API-KEY`, `alpaca_allow`): account link, wallets, tokens, issuance, confirm.
//! - operators' (`/operator/...`, `X-OPERATOR-KEY`, `operator_allow`): accounts, wallets, assets,
//!   freeze, stuck work. The running server holds the redb lock, so the operator CLI
//!   ([`operator_cli`]) goes through these routes.
//! - public: `/health` (liveness: the process answers), `/readyz` (readiness: the store can write
//!   and the RPC answers, [`ready`]) and `/openapi.json`.
//!
//! Status codes are part of the contract: Alpaca retries 5xx and treats every 4xx as final, so a
//! 5xx is only ever a real fault of ours (the store failed) and a 4xx is only ever a final answer.

mod alpaca;
mod auth;
pub(crate) mod listen;
mod operator;
pub mod operator_cli;
pub mod ready;
pub mod signature;

pub use listen::ConnectionLimits;
pub use ready::Readiness;

use crate::clock::Clock;
use crate::config::Secret;
use crate::store::{Store, StoreError};
use auth::{FailureLimiter, Guard, RouteKind};
use futures::future::{select, Either};
use ipnet::IpNet;
use reconciler::Network;
use std::future::Future;
use std::sync::Arc;
use tide::http::mime;
use tide::{Request, Response, StatusCode};

/// Keys shorter than this are refused at startup: a short shared secret is guessable well within
/// the failed-attempt limit's lifetime.
pub const API_KEY_LEN_MIN: usize = 32;

/// The message Alpaca knows for a body it sent wrong or a quantity we refuse (400 on the mint
/// routes, 422 on the others).
pub const INVALID_PAYLOAD: &str = "Failed Validation: Invalid data payload";

/// How Alpaca authenticates to us: one scheme per issuer, as Alpaca's guide offers them.
#[derive(Debug, Clone)]
pub enum AlpacaAuth {
    /// `X-API-KEY`; at least [`API_KEY_LEN_MIN`] characters, checked by [`serve`].
    ApiKey(Secret),
    /// RFC 9421 Ed25519 message signatures instead of a key: a request carries no key, and one
    /// without a valid signature is refused.
    Signatures(signature::SignatureConfig),
}

/// What the server needs besides the store. Secrets are [`Secret`]s so `Debug` never prints them.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// How Alpaca's requests are authenticated.
    pub alpaca_auth: AlpacaAuth,
    /// Client IPs (the TCP peer, never a forwarding header) allowed on Alpaca's routes.
    pub alpaca_allow: Vec<IpNet>,
    /// `X-OPERATOR-KEY` for `/operator/...`; separate from Alpaca's so a leak of one does not open
    /// the other. At least [`API_KEY_LEN_MIN`] characters.
    pub operator_api_key: Secret,
    /// Client IPs allowed on the operator routes.
    pub operator_allow: Vec<IpNet>,
    /// Largest request body read; a larger one is answered 413 before it is parsed.
    pub body_limit_bytes: usize,
    /// Failed authentications per client IP per minute; further requests from that IP are 429
    /// until the minute is over, even with the right key.
    pub failed_auth_per_minute_max: u32,
    /// The issuer's custody account at Alpaca, answered by `/tokenization/custody-accounts/{sym}`.
    pub custody_account_id: String,
    /// The issuer's own addresses besides its contracts (the bot): never accepted as an AP's
    /// wallet (the contracts' addresses are read from the asset list).
    pub issuer_addresses: Vec<alloy::primitives::Address>,
    /// Chains besides Alpaca's own networks ([`ALPACA_NETWORKS`]) this issuer serves, such as
    /// `anvil` on the local stack. A mint or an asset on any other network is refused.
    pub local_networks: Vec<Network>,
    /// The networks this issuer runs a reconciler for. A mint naming another network is refused
    /// as `Invalid Token` and the token list leaves it out, as nothing would ever mint there.
    /// Empty: no such restriction (an HTTP server without reconcilers, as in some tests).
    pub served_networks: Vec<Network>,
}

/// The `network` values Alpaca's API knows (its TokenizationNetwork enum, November 2026).
pub const ALPACA_NETWORKS: [&str; 12] = [
    "arbitrum",
    "base",
    "binance",
    "cronos",
    "ethereum",
    "hypercore",
    "hyperevm",
    "mantle",
    "robinhood",
    "solana",
    "ton",
    "tron",
];

impl HttpConfig {
    /// Whether mints and assets may name `network`: one of Alpaca's, or a configured local one.
    pub fn network_allowed(&self, network: &Network) -> bool {
        ALPACA_NETWORKS.contains(&network.as_str()) || self.local_networks.contains(network)
    }

    /// Whether a reconciler runs for `network` (see [`HttpConfig::served_networks`]).
    pub fn network_served(&self, network: &Network) -> bool {
        self.served_networks.is_empty() || self.served_networks.contains(network)
    }
}

/// Why the server could not start, or why a request was refused. Each request variant maps to
/// one status code ([`HttpError::status`]); the body is always `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Startup: a setting is unusable (a key shorter than [`API_KEY_LEN_MIN`], a zero limit).
    #[error("invalid http configuration: {0}")]
    Config(String),
    /// Startup or while serving: the listener failed (socket error, address in use).
    #[error("http listener failed: {0}")]
    Listen(#[from] std::io::Error),
    /// 401: the route's key header is missing or wrong. Counts as a failed attempt.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// 401: signatures are required and this request's RFC 9421 signature or its content digest
    /// does not check out. Counts as a failed attempt.
    #[error("signature refused: {0}")]
    BadSignature(String),
    /// 403: the TCP peer address is not in the route's allowlist.
    #[error("client address not allowed")]
    Forbidden,
    /// 429: this IP failed authentication too often in the current minute.
    #[error("too many failed authentication attempts, retry in {retry_after_secs} s")]
    TooManyFailures { retry_after_secs: u64 },
    /// 413: the body is larger than `body_limit_bytes`; it was not parsed.
    #[error("request body larger than {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    /// 415: a body that does not declare `Content-Type: application/json`; it was not parsed.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 422: the body is not JSON, a field is missing or of the wrong type, an id or address is
    /// malformed. The message is the one Alpaca knows ([`INVALID_PAYLOAD`]).
    #[error("{0}")]
    Unprocessable(String),
    /// 400: well-formed, but refused by a rule (the mint refusal table, a mismatched id).
    #[error("{0}")]
    Refused(String),
    /// 404: the thing named does not exist (unknown email, client, route, request).
    #[error("{0}")]
    NotFound(String),
    /// 409: it contradicts what was recorded before (already linked elsewhere, a different body
    /// under the same tokenization_request_id, the opposite journal status).
    #[error("{0}")]
    Conflict(String),
    /// 500: the store failed. The only 5xx: Alpaca retries it, and the retry is safe because
    /// every write is idempotent.
    #[error("store failed: {0}")]
    Store(#[from] StoreError),
}

impl HttpError {
    /// The status code this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::Unauthorized | HttpError::BadSignature(_) => StatusCode::Unauthorized,
            HttpError::Forbidden => StatusCode::Forbidden,
            HttpError::TooManyFailures { .. } => StatusCode::TooManyRequests,
            HttpError::BodyTooLarge { .. } => StatusCode::PayloadTooLarge,
            HttpError::UnsupportedMediaType => StatusCode::UnsupportedMediaType,
            HttpError::Unprocessable(_) => StatusCode::UnprocessableEntity,
            HttpError::Refused(_) => StatusCode::BadRequest,
            HttpError::NotFound(_) => StatusCode::NotFound,
            HttpError::Conflict(_) => StatusCode::Conflict,
            HttpError::Config(_) | HttpError::Listen(_) | HttpError::Store(_) => {
                StatusCode::InternalServerError
            }
        }
    }

    /// The `{"error": message}` answer. Store failures are logged here and answered without
    /// detail: the caller cannot act on our disk's trouble.
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            HttpError::Store(e) => {
                tracing::error!(error = %e, "http: store failure, answering 500");
                "internal error".to_owned()
            }
            HttpError::Config(_) | HttpError::Listen(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        let mut response = json(status, &serde_json::json!({ "error": message }));
        if let HttpError::TooManyFailures { retry_after_secs } = self {
            response.insert_header("Retry-After", retry_after_secs.to_string());
        }
        response
    }
}

/// What every handler shares. Cheap to clone (tide clones it per connection).
#[derive(Clone)]
struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
    config: HttpConfig,
    readiness: Readiness,
    /// Where handlers read "now": an intent's acceptance, a confirmation's time, a signature's
    /// freshness, how long a mint has been waiting.
    clock: Arc<dyn Clock>,
    alpaca_failures: FailureLimiter,
    operator_failures: FailureLimiter,
}

impl AppState {
    fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    fn config(&self) -> &HttpConfig {
        &self.inner.config
    }

    fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// Tells the reconciler there is new work; it runs a pass instead of waiting for its timer.
    fn wake(&self) {
        self.inner.wake.notify_one();
    }
}

/// How the server runs besides its routes' settings: connection limits, readiness checks and
/// its clock.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub limits: ConnectionLimits,
    /// Checks beyond the store that `/readyz` reports (the RPC, set by the caller).
    pub readiness: Readiness,
    /// Where handlers read the time; the machine's clock unless a test fixes it.
    pub clock: Arc<dyn Clock>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            limits: ConnectionLimits::default(),
            readiness: Readiness::default(),
            clock: crate::clock::system(),
        }
    }
}

/// Serves Alpaca's and the operators' routes on `listener` until `shutdown` completes, with the
/// default [`ServeOptions`].
pub async fn serve(
    listener: std::net::TcpListener,
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    serve_with(
        listener,
        store,
        wake,
        config,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

/// Serves Alpaca's and the operators' routes on `listener` until `shutdown` completes.
///
/// Refuses to start (`HttpError::Config`) with a key shorter than [`API_KEY_LEN_MIN`], a zero
/// body limit or a zero failed-attempt limit. Connections already open when `shutdown` fires
/// finish their current request; every answer given was already durable.
pub async fn serve_with(
    listener: std::net::TcpListener,
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
    config: HttpConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HttpError> {
    config.check()?;
    options.limits.check().map_err(HttpError::Config)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let app = app(store, wake, config, options.readiness, options.clock);
    let listener = async_std::net::TcpListener::from(listener);
    tracing::info!(address = %local, "http: listening");
    let listening = Box::pin(listen::serve_app_with(listener, app, options.limits));
    let shutdown = Box::pin(shutdown);
    match select(listening, shutdown).await {
        Either::Left((result, _)) => result.map_err(HttpError::Listen),
        Either::Right(((), _)) => {
            tracing::info!("http: shut down");
            Ok(())
        }
    }
}

impl HttpConfig {
    /// `Err(HttpError::Config)` naming the first unusable setting: a key shorter than
    /// [`API_KEY_LEN_MIN`], the same key for Alpaca and operators, an empty allowlist, a zero
    /// limit.
    pub fn check(&self) -> Result<(), HttpError> {
        check_config(self)
    }
}

fn check_config(config: &HttpConfig) -> Result<(), HttpError> {
    if config.alpaca_allow.is_empty() || config.operator_allow.is_empty() {
        return Err(HttpError::Config(
            "an allowlist of client addresses is empty: nobody could call those routes".into(),
        ));
    }
    let short = |which: &str, key: &Secret| {
        (key.expose().chars().count() < API_KEY_LEN_MIN).then(|| {
            HttpError::Config(format!(
                "{which} must be at least {API_KEY_LEN_MIN} characters"
            ))
        })
    };
    if let Some(e) = short("operator api key", &config.operator_api_key) {
        return Err(e);
    }
    match &config.alpaca_auth {
        AlpacaAuth::ApiKey(key) => {
            if let Some(e) = short("alpaca api key", key) {
                return Err(e);
            }
            if *key == config.operator_api_key {
                return Err(HttpError::Config(
                    "the operator key must differ from Alpaca's key".into(),
                ));
            }
        }
        AlpacaAuth::Signatures(signatures) => {
            signature::check_config(signatures).map_err(HttpError::Config)?;
        }
    }
    if config.body_limit_bytes == 0 {
        return Err(HttpError::Config("body limit must be positive".into()));
    }
    if config.failed_auth_per_minute_max == 0 {
        return Err(HttpError::Config(
            "failed auth limit must be positive".into(),
        ));
    }
    Ok(())
}

fn app(
    store: Arc<dyn Store>,
    wake: Arc<tokio::sync::Notify>,
    config: HttpConfig,
    readiness: Readiness,
    clock: Arc<dyn Clock>,
) -> tide::Server<AppState> {
    let limit = config.failed_auth_per_minute_max;
    let state = AppState {
        inner: Arc::new(Shared {
            store,
            wake,
            config,
            readiness,
            clock,
            alpaca_failures: FailureLimiter::per_minute(limit),
            operator_failures: FailureLimiter::per_minute(limit),
        }),
    };
    let mut app = tide::with_state(state);
    app.with(auth::json_fallback);

    // Liveness: the process answers and its reconciler loop turns. `/health` is the older name.
    app.at("/livez")
        .get(|_req: Request<AppState>| async { Ok(livez()) });
    app.at("/health")
        .get(|_req: Request<AppState>| async { Ok(livez()) });
    app.at("/metrics")
        .with(Guard::new(RouteKind::Scrape))
        .get(|_req: Request<AppState>| async {
            let mut response = Response::new(StatusCode::Ok);
            response.set_body(crate::metrics::metrics().render());
            response.insert_header(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            );
            Ok(response)
        });
    // The operator page: the operators' addresses only; its data needs the operator key.
    app.at("/ui")
        .with(Guard::new(RouteKind::Scrape))
        .get(|_req: Request<AppState>| async {
            let mut response = Response::new(StatusCode::Ok);
            response.set_body(UI_PAGE);
            response.set_content_type(mime::HTML);
            response.insert_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'",
            );
            response.insert_header("X-Frame-Options", "DENY");
            response.insert_header("Referrer-Policy", "no-referrer");
            Ok(response)
        });
    app.at("/readyz").get(|req: Request<AppState>| async move {
        let state = req.state().clone();
        let store = state.store();
        let checked = async_std::task::spawn_blocking(move || store.health()).await;
        let (ready, body) = ready::answer(
            checked,
            &state.inner.readiness,
            crate::metrics::alpaca_failing_for_secs(),
        );
        let status = if ready {
            StatusCode::Ok
        } else {
            StatusCode::ServiceUnavailable
        };
        Ok(json(status, &body))
    });
    app.at("/openapi.json")
        .get(|_req: Request<AppState>| async {
            let mut response = Response::new(StatusCode::Ok);
            response.set_body(OPENAPI);
            response.set_content_type(mime::JSON);
            Ok(response)
        });

    let alpaca = || Guard::new(RouteKind::Alpaca);
    app.at("/accounts/connect")
        .with(alpaca())
        .post(endpoint(alpaca::connect));
    app.at("/tokenization/accounts/connect")
        .with(alpaca())
        .post(endpoint(alpaca::connect_tokenization));
    app.at("/accounts/:client_id/wallets")
        .with(alpaca())
        .post(endpoint(alpaca::add_wallet));
    app.at("/tokenized-assets")
        .with(alpaca())
        .get(endpoint(alpaca::tokens));
    app.at("/tokenization/tokens")
        .with(alpaca())
        .get(endpoint(alpaca::tokens));
    app.at("/inkind/issuance")
        .with(alpaca())
        .post(endpoint(alpaca::issuance));
    app.at("/tokenization/mint")
        .with(alpaca())
        .post(endpoint(alpaca::issuance));
    app.at("/inkind/issuance/confirm")
        .with(alpaca())
        .post(endpoint(alpaca::confirm));
    app.at("/tokenization/mint/confirm")
        .with(alpaca())
        .post(endpoint(alpaca::confirm));
    app.at("/tokenization/custody-accounts/:underlying_symbol")
        .with(alpaca())
        .get(endpoint(alpaca::custody_account));

    let op = || Guard::new(RouteKind::Operator);
    app.at("/operator/accounts")
        .with(op())
        .post(endpoint(operator::register_account))
        .get(endpoint(operator::accounts));
    app.at("/operator/accounts/:client_id/alpaca-account")
        .with(op())
        .post(endpoint(operator::attach_alpaca_account));
    app.at("/operator/wallets")
        .with(op())
        .post(endpoint(operator::add_wallet))
        .delete(endpoint(operator::remove_wallet));
    app.at("/operator/assets")
        .with(op())
        .post(endpoint(operator::put_asset))
        .get(endpoint(operator::assets));
    app.at("/operator/assets/:underlying/freeze")
        .with(op())
        .post(endpoint(operator::freeze));
    app.at("/operator/assets/:underlying/unfreeze")
        .with(op())
        .post(endpoint(operator::unfreeze));
    app.at("/operator/stuck")
        .with(op())
        .get(endpoint(operator::stuck));
    app.at("/operator/redemptions")
        .with(op())
        .get(endpoint(operator::redemptions));
    app.at("/operator/redemptions/:id/return")
        .with(op())
        .post(endpoint(operator::return_redemption));
    app.at("/operator/redemptions/:id/retry")
        .with(op())
        .post(endpoint(operator::retry_redemption));
    app.at("/operator/mints")
        .with(op())
        .get(endpoint(operator::mints));
    app.at("/operator/mints/:id/retry")
        .with(op())
        .post(endpoint(operator::retry_mint));
    app
}

/// A reconciler loop that has not turned for this long is not alive (a pass is bounded by its
/// calls' timeouts, far below this).
pub const LIVENESS_MAX_SECS: u64 = 120;

/// `/livez`: 200 `{"status":"ok"}`, or 503 naming the loop that stopped turning.
fn livez() -> Response {
    match crate::metrics::heartbeat_age_secs() {
        Some(age) if age > LIVENESS_MAX_SECS => json(
            StatusCode::ServiceUnavailable,
            &serde_json::json!({
                "status": "not alive",
                "failing": ["reconciler"],
                "checks": { "reconciler": format!("the reconcile loop has not turned for {age} s") },
            }),
        ),
        _ => json(StatusCode::Ok, &serde_json::json!({ "status": "ok" })),
    }
}

/// The operator page: plain HTML, CSS and a little JavaScript, embedded in the binary.
const UI_PAGE: &str = include_str!("ui.html");

/// The hand-written OpenAPI 3.0 description of every route above.
const OPENAPI: &str = include_str!("openapi.json");

/// Adapts a handler returning `Result<Response, HttpError>` to a tide endpoint, turning the
/// error into its `{"error": ...}` answer.
fn endpoint<F, Fut>(handler: F) -> impl tide::Endpoint<AppState>
where
    F: Fn(Request<AppState>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response, HttpError>> + Send + 'static,
{
    move |req: Request<AppState>| {
        let answer = handler(req);
        async move { Ok::<Response, tide::Error>(answer.await.unwrap_or_else(HttpError::into_response)) }
    }
}

/// A JSON answer with `status`.
fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut response = Response::new(status);
    match tide::Body::from_json(value) {
        Ok(body) => response.set_body(body),
        Err(e) => {
            // Our answers are plain maps of strings and numbers; this is unreachable in practice.
            tracing::error!(error = %e, "http: cannot serialise an answer");
            response.set_status(StatusCode::InternalServerError);
            response.set_body(tide::Body::from_string(
                r#"{"error":"internal error"}"#.to_owned(),
            ));
        }
    }
    response.set_content_type(mime::JSON);
    response
}

/// Runs store work on the blocking pool: every store call waits for a group-committed, fsynced
/// redb transaction, which must not stall tide's executor.
async fn blocking<T, F>(state: &AppState, job: F) -> Result<T, HttpError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, HttpError> + Send + 'static,
{
    let store = state.store();
    async_std::task::spawn_blocking(move || job(store.as_ref())).await
}

/// Parses the (already size-checked) body as `T`; anything else is Alpaca's 422.
async fn body<T: serde::de::DeserializeOwned>(req: &mut Request<AppState>) -> Result<T, HttpError> {
    let bytes = req
        .body_bytes()
        .await
        .map_err(|_| HttpError::Unprocessable(INVALID_PAYLOAD.into()))?;
    serde_json::from_slice(&bytes).map_err(|_| HttpError::Unprocessable(INVALID_PAYLOAD.into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_json_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/accounts/connect",
            "/tokenization/accounts/connect",
            "/accounts/{client_id}/wallets",
            "/tokenized-assets",
            "/tokenization/tokens",
            "/inkind/issuance",
            "/tokenization/mint",
            "/inkind/issuance/confirm",
            "/tokenization/mint/confirm",
            "/tokenization/custody-accounts/{underlying_symbol}",
            "/health",
            "/operator/accounts",
            "/operator/wallets",
            "/operator/assets",
            "/operator/assets/{underlying}/freeze",
            "/operator/assets/{underlying}/unfreeze",
            "/operator/stuck",
            "/operator/accounts/{client_id}/alpaca-account",
        ] {
            assert!(paths.contains_key(path), "{path} missing from openapi.json");
        }
    }

    #[test]
    fn short_or_shared_keys_are_refused() {
        let good = HttpConfig {
            alpaca_auth: AlpacaAuth::ApiKey(Secret::new("a".repeat(32))),
            alpaca_allow: crate::config::parse_cidrs("127.0.0.1").unwrap(),
            operator_api_key: Secret::new("o".repeat(32)),
            operator_allow: crate::config::parse_cidrs("127.0.0.1").unwrap(),
            body_limit_bytes: 1024,
            failed_auth_per_minute_max: 10,
            custody_account_id: "custody".into(),
            issuer_addresses: vec![],
            local_networks: vec![],
            served_networks: vec![],
        };
        assert!(check_config(&good).is_ok());
        let short = HttpConfig {
            alpaca_auth: AlpacaAuth::ApiKey(Secret::new("a".repeat(31))),
            ..good.clone()
        };
        assert!(matches!(check_config(&short), Err(HttpError::Config(_))));
        let shared = HttpConfig {
            operator_api_key: Secret::new("a".repeat(32)),
            ..good.clone()
        };
        assert!(matches!(check_config(&shared), Err(HttpError::Config(_))));
        let nobody = HttpConfig {
            alpaca_allow: vec![],
            ..good.clone()
        };
        assert!(matches!(check_config(&nobody), Err(HttpError::Config(_))));
        let no_limit = HttpConfig {
            failed_auth_per_minute_max: 0,
            ..good
        };
        assert!(matches!(check_config(&no_limit), Err(HttpError::Config(_))));
    }
}
