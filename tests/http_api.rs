//! The HTTP API answers exactly the statuses and messages of DESIGN §5 (both of Alpaca's route
//! spellings), refuses before it writes, is idempotent under retries and concurrency, and every
//! 200 it gave for an issuance is durable: a real tide server on 127.0.0.1:0 over a real redb file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use issuer::config::Secret;
use issuer::http::operator_cli::{self, OperatorArgs, OperatorCommand};
use issuer::http::{serve, serve_with, AlpacaAuth, HttpConfig, HttpError, ServeOptions};
use issuer::store::{RedbStore, Select, Store};
use reconciler::{ClientId, ClientRef, IssuerRequestId, Journal, TokenizationRequestId};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};

const ALPACA_KEY: &str = "alpaca-test-key-0123456789abcdef0123";
const OPERATOR_KEY: &str = "operator-test-key-0123456789abcdef01";
const BODY_LIMIT: usize = 4096;
const INVALID_PAYLOAD: &str = "Failed Validation: Invalid data payload";
const INVALID_TOKEN: &str = "Invalid Token: Token not available on the network";
const NOT_ELIGIBLE: &str = "Insufficient Eligibility: Client not eligible";
const INVALID_WALLET: &str = "Invalid Wallet: Wallet does not belong to client";
const ASSET_FROZEN: &str = "Asset Frozen: Minting is suspended for this asset";
/// The wallet of `fixtures/issuer/wallet.json`.
const WALLET: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
const OTHER_WALLET: &str = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc";
/// The issuer's bot in these tests (anvil's first dev account): never an AP's wallet.
const BOT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/issuer")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn with(mut body: Value, changes: &[(&str, Value)]) -> Value {
    for (key, value) in changes {
        if value.is_null() {
            body.as_object_mut().unwrap().remove(*key);
        } else {
            body[*key] = value.clone();
        }
    }
    body
}

fn config(alpaca_allow: &str) -> HttpConfig {
    HttpConfig {
        alpaca_auth: AlpacaAuth::ApiKey(Secret::new(ALPACA_KEY)),
        alpaca_allow: issuer::config::parse_cidrs(alpaca_allow).unwrap(),
        operator_api_key: Secret::new(OPERATOR_KEY),
        operator_allow: issuer::config::parse_cidrs("127.0.0.1/32,::1/128").unwrap(),
        body_limit_bytes: BODY_LIMIT,
        failed_auth_per_minute_max: 10,
        custody_account_id: "issuer-custody-0001".into(),
        local_networks: vec![reconciler::Network::parse("anvil").unwrap()],
        served_networks: vec![],
        issuer_addresses: vec![BOT.parse().unwrap()],
    }
}

/// A running server over a redb file, with a client that speaks to it.
struct Server {
    base: String,
    store: Arc<RedbStore>,
    wake: Arc<Notify>,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), HttpError>>>,
}

impl Server {
    async fn start(path: &Path, config: HttpConfig) -> Server {
        Self::start_with(path, config, ServeOptions::default()).await
    }

    async fn start_with(path: &Path, config: HttpConfig, options: ServeOptions) -> Server {
        let store = Arc::new(reopen(path).await);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let shared: Arc<dyn Store> = store.clone();
        let task = tokio::spawn(serve_with(
            listener,
            shared,
            wake.clone(),
            config,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let server = Server {
            base,
            store,
            wake,
            http,
            stop: Some(stop),
            task: Some(task),
        };
        server.wait_healthy().await;
        server
    }

    async fn wait_healthy(&self) {
        for _ in 0..100 {
            if let Ok(r) = self.http.get(format!("{}/health", self.base)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not become healthy");
    }

    /// Stops serving and drops every handle on the store this test holds.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<(&str, &str)>,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some((name, value)) = key {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path} answered non-JSON {status}: {text:?}"));
        (status, value)
    }

    async fn alpaca(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.send(
            method,
            path,
            Some(("X-API-KEY", ALPACA_KEY)),
            body.map(Value::to_string),
        )
        .await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.alpaca(Method::POST, path, Some(body)).await
    }

    async fn operator(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.send(
            method,
            path,
            Some(("X-OPERATOR-KEY", OPERATOR_KEY)),
            body.map(Value::to_string),
        )
        .await
    }

    /// Lists (or relists) an asset through the operators' route; asserts it was taken.
    async fn list_asset(&self, asset: &Value) {
        let (status, answer) = self
            .operator(Method::POST, "/operator/assets", Some(asset))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    /// Registers and links the AP of the fixtures, whitelists its wallet and adds AAPL on anvil.
    async fn seed(&self) -> String {
        let (status, account) = self
            .operator(
                Method::POST,
                "/operator/accounts",
                Some(&json!({ "email": "ap.desk@example.com" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{account}");
        let client_id = account["client_id"].as_str().unwrap().to_owned();
        let (status, linked) = self
            .post("/accounts/connect", &fixture("connect.json"))
            .await;
        assert_eq!(
            (status, linked["client_id"].as_str()),
            (StatusCode::OK, Some(client_id.as_str()))
        );
        let (status, _) = self
            .post(
                &format!("/accounts/{client_id}/wallets"),
                &fixture("wallet.json"),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        self.list_asset(&fixture("operator_asset.json")).await;
        client_id
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    server: Server,
    client_id: String,
}

impl Fixture {
    /// Accepts the issuance `trid` (200) into an empty store: its stored record.
    async fn issued(&self, trid: &str) -> issuer::store::MintRecord {
        let (status, answer) = self
            .server
            .post("/inkind/issuance", &issuance(&self.client_id, trid))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let mut mints = self.server.store.mints(Select::All).unwrap();
        assert_eq!(mints.len(), 1);
        mints.remove(0)
    }
}

async fn seeded() -> Fixture {
    seeded_with(config("127.0.0.1/32")).await
}

async fn seeded_with(config: HttpConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let server = Server::start(&path, config).await;
    let client_id = server.seed().await;
    Fixture {
        _dir: dir,
        path,
        server,
        client_id,
    }
}

fn issuance(client_id: &str, trid: &str) -> Value {
    with(
        fixture("inkind_issuance.json"),
        &[
            ("client_id", json!(client_id)),
            ("tokenization_request_id", json!(trid)),
        ],
    )
}

fn error(message: &str) -> Value {
    json!({ "error": message })
}

#[tokio::test(flavor = "multi_thread")]
async fn health_openapi_and_unknown_routes_answer_json() {
    let f = seeded().await;
    let s = &f.server;
    assert_eq!(
        s.send(Method::GET, "/health", None, None).await,
        (StatusCode::OK, json!({ "status": "ok" }))
    );

    let (status, doc) = s.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
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
        "/operator/accounts",
        "/operator/wallets",
        "/operator/assets",
        "/operator/assets/{underlying}/freeze",
        "/operator/stuck",
    ] {
        assert!(paths.contains_key(path), "openapi.json lacks {path}");
    }

    assert_eq!(
        s.alpaca(Method::GET, "/no/such/route", None).await,
        (StatusCode::NOT_FOUND, error("not found"))
    );
    assert_eq!(
        s.send(Method::GET, "/no/such/route", None, None).await,
        (StatusCode::NOT_FOUND, error("not found"))
    );
    let (status, body) = s.alpaca(Method::GET, "/inkind/issuance", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_checked_per_route_kind() {
    let f = seeded().await;
    let s = &f.server;
    let body = issuance(&f.client_id, "auth-1").to_string();
    let unauthorized = error("missing or invalid API key");
    let missing = s
        .send(Method::POST, "/inkind/issuance", None, Some(body.clone()))
        .await;
    assert_eq!(missing, (StatusCode::UNAUTHORIZED, unauthorized.clone()));
    let wrong = s
        .send(
            Method::POST,
            "/inkind/issuance",
            Some(("X-API-KEY", "x".repeat(36).as_str())),
            Some(body.clone()),
        )
        .await;
    assert_eq!(wrong, (StatusCode::UNAUTHORIZED, unauthorized.clone()));
    let operator_key_on_alpaca_route = s
        .send(
            Method::POST,
            "/inkind/issuance",
            Some(("X-API-KEY", OPERATOR_KEY)),
            Some(body),
        )
        .await;
    assert_eq!(operator_key_on_alpaca_route.0, StatusCode::UNAUTHORIZED);
    let alpaca_key_on_operator_route = s
        .send(
            Method::GET,
            "/operator/accounts",
            Some(("X-OPERATOR-KEY", ALPACA_KEY)),
            None,
        )
        .await;
    assert_eq!(
        alpaca_key_on_operator_route,
        (StatusCode::UNAUTHORIZED, unauthorized.clone())
    );
    let alpaca_header_on_operator_route = s
        .send(
            Method::GET,
            "/operator/accounts",
            Some(("X-API-KEY", OPERATOR_KEY)),
            None,
        )
        .await;
    assert_eq!(alpaca_header_on_operator_route.0, StatusCode::UNAUTHORIZED);
    assert!(f.server.store.mints(Select::All).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_outside_the_allowlist_is_403_even_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("issuer.redb"),
        config("10.0.0.0/8,::1/128"),
    )
    .await;
    let answer = s
        .post("/inkind/issuance", &issuance("5505-1234-ABC-4G45", "ip-1"))
        .await;
    assert_eq!(
        answer,
        (StatusCode::FORBIDDEN, error("client address not allowed"))
    );
    assert_eq!(
        s.alpaca(Method::GET, "/tokenized-assets", None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.post("/accounts/connect", &fixture("connect.json"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // The operator allowlist is separate and does contain 127.0.0.1.
    assert_eq!(
        s.operator(Method::GET, "/operator/assets", None).await.0,
        StatusCode::OK
    );
    assert!(s.store.mints(Select::All).unwrap().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_failed_attempts_lock_the_address_out_even_with_the_right_key() {
    let f = seeded().await;
    let s = &f.server;
    let wrong = "w".repeat(40);
    for attempt in 1..=10 {
        let answer = s
            .send(
                Method::GET,
                "/tokenized-assets",
                Some(("X-API-KEY", wrong.as_str())),
                None,
            )
            .await;
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let response = s
        .http
        .get(format!("{}/tokenized-assets", s.base))
        .header("X-API-KEY", ALPACA_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("too many failed"));
    // Still locked, and a missing key does not get a 401 either.
    assert_eq!(
        s.send(Method::GET, "/tokenized-assets", None, None).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The operator routes count their own failures.
    assert_eq!(
        s.operator(Method::GET, "/operator/assets", None).await.0,
        StatusCode::OK
    );
    // Public routes are not behind a key.
    assert_eq!(
        s.send(Method::GET, "/health", None, None).await.0,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_row_of_the_refusal_table_answers_its_status_and_message_and_writes_nothing() {
    let f = seeded().await;
    let s = &f.server;
    let client = f.client_id.as_str();
    // A registered but unlinked client with its own wallet, and a second underlying on base.
    let (_, unlinked) = s
        .operator(
            Method::POST,
            "/operator/accounts",
            Some(&json!({ "email": "other@example.com" })),
        )
        .await;
    let unlinked = unlinked["client_id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .operator(
            Method::POST,
            "/operator/wallets",
            Some(&json!({ "client_id": unlinked, "wallet": OTHER_WALLET })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let tsla = with(
        fixture("operator_asset.json"),
        &[("underlying", json!("TSLA")), ("token", json!("tTSLA"))],
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets", Some(&tsla))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets/TSLA/freeze", None)
            .await
            .0,
        StatusCode::OK
    );

    let base = issuance(client, "table-1");
    let raw_cases: Vec<(&str, String)> = vec![
        ("not JSON", "{\"tokenization_request_id\": ".into()),
        ("JSON but not an object", "[1, 2]".into()),
        ("empty body", String::new()),
    ];
    for (what, raw) in raw_cases {
        let answer = s
            .send(
                Method::POST,
                "/inkind/issuance",
                Some(("X-API-KEY", ALPACA_KEY)),
                Some(raw),
            )
            .await;
        assert_eq!(
            answer,
            (StatusCode::BAD_REQUEST, error(INVALID_PAYLOAD)),
            "{what}"
        );
    }

    let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
        // 1. Malformed: 400, as every mint refusal (Alpaca's issuer guide).
        (
            "qty missing",
            with(base.clone(), &[("qty", Value::Null)]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "network missing",
            with(base.clone(), &[("network", Value::Null)]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty a JSON number",
            with(base.clone(), &[("qty", json!(1.5))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "trid a number",
            with(base.clone(), &[("tokenization_request_id", json!(7))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "trid with a space",
            with(base.clone(), &[("tokenization_request_id", json!("a b"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "short address",
            with(
                base.clone(),
                &[(
                    "wallet_address",
                    json!("0x70997970C51812dc3A010C7d01b50e0d17dc79"),
                )],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "address without 0x",
            with(
                base.clone(),
                &[(
                    "wallet_address",
                    json!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
                )],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "no client",
            with(base.clone(), &[("client_id", Value::Null)]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "two different clients",
            with(
                base.clone(),
                &[(
                    "client_account_id",
                    json!("9a1f3e52-2d5b-4c1a-8f0e-7b6c5d4e3f21"),
                )],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "client_account_id not a UUID",
            with(
                base.clone(),
                &[
                    ("client_id", Value::Null),
                    ("client_account_id", json!("someone-else")),
                ],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "the deprecated alias disagreeing with the current field",
            with(
                base.clone(),
                &[("client_external_account_id", json!("somebody-else"))],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        // Malformed wins over every later check.
        (
            "malformed and bad qty",
            with(
                base.clone(),
                &[("qty", json!("0")), ("wallet_address", json!("0x12"))],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        // 2. Quantity: 400.
        (
            "qty zero",
            with(base.clone(), &[("qty", json!("0"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty 0.000",
            with(base.clone(), &[("qty", json!("0.000"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty negative",
            with(base.clone(), &[("qty", json!("-1"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty 19 decimals",
            with(base.clone(), &[("qty", json!("1.0000000000000000001"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty exponent",
            with(base.clone(), &[("qty", json!("1e3"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty empty",
            with(base.clone(), &[("qty", json!(""))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty words",
            with(base.clone(), &[("qty", json!("ten"))]),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        (
            "qty and token bad",
            with(
                base.clone(),
                &[("qty", json!("0")), ("underlying_symbol", json!("MSFT"))],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_PAYLOAD,
        ),
        // 3. Token: 400.
        (
            "unknown underlying",
            with(base.clone(), &[("underlying_symbol", json!("MSFT"))]),
            StatusCode::BAD_REQUEST,
            INVALID_TOKEN,
        ),
        (
            "token not the underlying's",
            with(base.clone(), &[("token_symbol", json!("tTSLA"))]),
            StatusCode::BAD_REQUEST,
            INVALID_TOKEN,
        ),
        (
            "a network Alpaca does not know",
            with(base.clone(), &[("network", json!("polygon"))]),
            StatusCode::BAD_REQUEST,
            INVALID_TOKEN,
        ),
        (
            "not on that network",
            with(base.clone(), &[("network", json!("base"))]),
            StatusCode::BAD_REQUEST,
            INVALID_TOKEN,
        ),
        (
            "token and client bad",
            with(
                base.clone(),
                &[("network", json!("base")), ("client_id", json!("nobody"))],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_TOKEN,
        ),
        // 4. Eligibility: 400.
        (
            "unknown client",
            with(base.clone(), &[("client_id", json!("nobody"))]),
            StatusCode::BAD_REQUEST,
            NOT_ELIGIBLE,
        ),
        (
            "an Alpaca account attached to no client",
            with(
                base.clone(),
                &[
                    ("client_id", Value::Null),
                    (
                        "client_account_id",
                        json!("9a1f3e52-2d5b-4c1a-8f0e-7b6c5d4e3f21"),
                    ),
                ],
            ),
            StatusCode::BAD_REQUEST,
            NOT_ELIGIBLE,
        ),
        (
            "client not linked",
            with(
                base.clone(),
                &[
                    ("client_id", json!(unlinked)),
                    ("wallet_address", json!(OTHER_WALLET)),
                ],
            ),
            StatusCode::BAD_REQUEST,
            NOT_ELIGIBLE,
        ),
        (
            "client and wallet bad",
            with(
                base.clone(),
                &[
                    ("client_id", json!("nobody")),
                    ("wallet_address", json!(OTHER_WALLET)),
                ],
            ),
            StatusCode::BAD_REQUEST,
            NOT_ELIGIBLE,
        ),
        // 5. Wallet: 400.
        (
            "wallet of nobody",
            with(
                base.clone(),
                &[(
                    "wallet_address",
                    json!("0x90f79bf6eb2c4f870365e785982e1f101e93b906"),
                )],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_WALLET,
        ),
        (
            "wallet of another client",
            with(base.clone(), &[("wallet_address", json!(OTHER_WALLET))]),
            StatusCode::BAD_REQUEST,
            INVALID_WALLET,
        ),
        (
            "wallet bad and frozen",
            with(
                base.clone(),
                &[
                    ("underlying_symbol", json!("TSLA")),
                    ("token_symbol", json!("tTSLA")),
                    ("wallet_address", json!(OTHER_WALLET)),
                ],
            ),
            StatusCode::BAD_REQUEST,
            INVALID_WALLET,
        ),
        // 6. Frozen: 400.
        (
            "frozen",
            with(
                base.clone(),
                &[
                    ("underlying_symbol", json!("TSLA")),
                    ("token_symbol", json!("tTSLA")),
                ],
            ),
            StatusCode::BAD_REQUEST,
            ASSET_FROZEN,
        ),
    ];
    for spelling in ["/inkind/issuance", "/tokenization/mint"] {
        for (what, body, status, message) in &cases {
            let answer = s.post(spelling, body).await;
            assert_eq!(answer, (*status, error(message)), "{spelling}: {what}");
        }
    }
    assert!(
        s.store.mints(Select::All).unwrap().is_empty(),
        "a refused request wrote an intent"
    );
    assert!(s.store.mints(Select::Active).unwrap().is_empty());

    // And the unrefused body is accepted: the refusals were about their one change.
    let (status, answer) = s.post("/inkind/issuance", &base).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(s.store.mints(Select::All).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn issuance_is_idempotent_per_tokenization_request_id() {
    let f = seeded().await;
    let s = &f.server;
    let body = issuance(&f.client_id, "12345-678-90AB");
    let expected_id =
        IssuerRequestId::for_mint(&TokenizationRequestId::parse("12345-678-90AB").unwrap());
    let created = json!({ "issuer_request_id": expected_id.as_str(), "status": "created" });
    assert_eq!(
        s.post("/inkind/issuance", &body).await,
        (StatusCode::OK, created.clone())
    );
    assert_eq!(
        s.post("/inkind/issuance", &body).await,
        (StatusCode::OK, created.clone())
    );
    // The same request spelled differently (the other route, qty with a trailing zero, wallet in
    // another case, the client under another field name) is the same request.
    let respelled = with(
        body.clone(),
        &[
            ("qty", json!("1.230")),
            (
                "wallet_address",
                json!(WALLET.to_uppercase().replace("0X", "0x")),
            ),
            ("client_id", Value::Null),
            ("client_external_account_id", json!(f.client_id)),
        ],
    );
    assert_eq!(
        s.post("/tokenization/mint", &respelled).await,
        (StatusCode::OK, created.clone())
    );
    // A different body under the same id is a conflict, and changes nothing.
    let other_qty = with(body.clone(), &[("qty", json!("1.24"))]);
    let (status, answer) = s.post("/inkind/issuance", &other_qty).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(answer["error"].is_string());

    let mints = s.store.mints(Select::All).unwrap();
    assert_eq!(mints.len(), 1);
    let intent = &mints[0].intent;
    assert_eq!(intent.issuer_request_id, expected_id);
    assert_eq!(intent.qty.to_decimal(), "1.23");
    assert_eq!(intent.journal, Journal::Pending);
    assert_eq!(
        intent.client,
        ClientRef::ClientExternalAccountId(ClientId::parse(&f.client_id).unwrap())
    );
    assert_eq!(format!("{:#x}", intent.wallet), WALLET);
    assert_eq!(
        format!("{:#x}", intent.vault),
        "0x5fbdb2315678afecb367f032d93f642f64180aa3"
    );
    assert!(mints[0].problem.is_none() && mints[0].reject_reason.is_none());

    // A repeat of an accepted request keeps its answer after the asset is frozen.
    assert_eq!(
        s.operator(Method::POST, "/operator/assets/AAPL/freeze", None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        s.post("/inkind/issuance", &body).await,
        (StatusCode::OK, created)
    );
    let new = issuance(&f.client_id, "after-freeze");
    assert_eq!(
        s.post("/inkind/issuance", &new).await,
        (StatusCode::BAD_REQUEST, error(ASSET_FROZEN))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_identical_concurrent_issuances_create_one_intent() {
    let f = seeded().await;
    let s = Arc::new(f.server);
    let body = issuance(&f.client_id, "concurrent-1");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (s, body) = (s.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            s.post("/inkind/issuance", &body).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{answer}");
        ids.insert(answer["issuer_request_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(s.store.mints(Select::All).unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_is_idempotent_and_final() {
    let f = seeded().await;
    let s = &f.server;
    let (_, created) = s
        .post(
            "/inkind/issuance",
            &issuance(&f.client_id, "12345-678-90AB"),
        )
        .await;
    let irid = created["issuer_request_id"].as_str().unwrap();
    let completed = with(
        fixture("inkind_issuance_confirm_completed.json"),
        &[("issuer_request_id", json!(irid))],
    );
    let rejected = with(
        fixture("inkind_issuance_confirm_rejected.json"),
        &[("issuer_request_id", json!(irid))],
    );
    let answer = json!({ "tokenization_request_id": "12345-678-90AB", "issuer_request_id": irid, "status": "completed" });

    assert_eq!(
        s.post("/inkind/issuance/confirm", &completed).await,
        (StatusCode::OK, answer.clone())
    );
    tokio::time::timeout(Duration::from_secs(5), s.wake.notified())
        .await
        .expect("completed woke the reconciler");
    assert_eq!(
        s.post("/inkind/issuance/confirm", &completed).await,
        (StatusCode::OK, answer.clone())
    );
    assert_eq!(
        s.post("/tokenization/mint/confirm", &completed).await,
        (StatusCode::OK, answer)
    );
    let (status, _) = s.post("/inkind/issuance/confirm", &rejected).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let record = s
        .store
        .mint(&IssuerRequestId::parse(irid).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(record.intent.journal, Journal::Completed);

    // Unknown, mismatched and malformed confirmations.
    let unknown = with(
        completed.clone(),
        &[("issuer_request_id", json!("mint-ffff"))],
    );
    assert_eq!(
        s.post("/inkind/issuance/confirm", &unknown).await.0,
        StatusCode::NOT_FOUND
    );
    let mismatched = with(
        completed.clone(),
        &[("tokenization_request_id", json!("someone-elses"))],
    );
    assert_eq!(
        s.post("/inkind/issuance/confirm", &mismatched).await.0,
        StatusCode::BAD_REQUEST
    );
    for bad in [
        with(completed.clone(), &[("status", json!("done"))]),
        with(completed.clone(), &[("status", Value::Null)]),
        with(completed.clone(), &[("issuer_request_id", json!(12))]),
        with(
            completed.clone(),
            &[("tokenization_request_id", json!("has space"))],
        ),
    ] {
        assert_eq!(
            s.post("/inkind/issuance/confirm", &bad).await,
            (StatusCode::BAD_REQUEST, error(INVALID_PAYLOAD))
        );
    }

    // Rejected first, then completed: 409, and the rejection and its reason stand.
    let (_, second) = s
        .post(
            "/tokenization/mint",
            &with(
                fixture("tokenization_mint.json"),
                &[("client_external_account_id", json!(f.client_id))],
            ),
        )
        .await;
    let second_id = second["issuer_request_id"].as_str().unwrap();
    let trid = "a1b2c3d4-0000-4000-8000-00000000a001";
    let reject = with(
        rejected,
        &[
            ("issuer_request_id", json!(second_id)),
            ("tokenization_request_id", json!(trid)),
        ],
    );
    assert_eq!(
        s.post("/tokenization/mint/confirm", &reject).await.0,
        StatusCode::OK
    );
    assert_eq!(
        s.post("/tokenization/mint/confirm", &reject).await.0,
        StatusCode::OK
    );
    let complete = with(reject.clone(), &[("status", json!("completed"))]);
    assert_eq!(
        s.post("/tokenization/mint/confirm", &complete).await.0,
        StatusCode::CONFLICT
    );
    let record = s
        .store
        .mint(&IssuerRequestId::parse(second_id).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(record.intent.journal, Journal::Rejected);
    assert_eq!(
        record.reject_reason.as_deref(),
        Some("insufficient position")
    );
    assert_eq!(record.intent.qty.to_decimal(), "0.450574852280275235");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_413_and_not_read() {
    let f = seeded().await;
    let s = &f.server;
    let padded = with(
        issuance(&f.client_id, "big-1"),
        &[("padding", json!("x".repeat(BODY_LIMIT)))],
    );
    let (status, answer) = s.post("/inkind/issuance", &padded).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer["error"].as_str().unwrap().contains("larger than"));
    // Chunked, without a Content-Length: the limit holds on what is read.
    let mut stream = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /inkind/issuance HTTP/1.1\r\nHost: x\r\nX-API-KEY: {ALPACA_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = "x".repeat(BODY_LIMIT / 4);
    for _ in 0..8 {
        // The server may answer and close before the last chunk: later writes may fail.
        if stream
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(s.store.mints(Select::All).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_and_wallets_answer_their_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("issuer.redb"), config("127.0.0.1/32")).await;
    assert_eq!(
        s.post("/accounts/connect", &fixture("connect.json")).await,
        (StatusCode::NOT_FOUND, error("unknown email"))
    );
    let (_, account) = s
        .operator(
            Method::POST,
            "/operator/accounts",
            Some(&json!({ "email": "  AP.desk@example.COM " })),
        )
        .await;
    assert_eq!(account["email"], "ap.desk@example.com");
    assert_eq!(account["linked"], false);
    let client_id = account["client_id"].as_str().unwrap();

    let linked = (StatusCode::OK, json!({ "client_id": client_id }));
    assert_eq!(
        s.post("/accounts/connect", &fixture("connect.json")).await,
        linked
    );
    // Alpaca's retry of the same link gets the same answer; another account number is 409.
    assert_eq!(
        s.post("/accounts/connect", &fixture("connect.json")).await,
        linked
    );
    let tokenization = s
        .post(
            "/tokenization/accounts/connect",
            &fixture("tokenization_connect.json"),
        )
        .await;
    assert_eq!(
        tokenization,
        (
            StatusCode::OK,
            json!({ "client_external_account_id": client_id })
        )
    );
    let elsewhere = with(fixture("connect.json"), &[("account", json!("111111111"))]);
    assert_eq!(
        s.post("/accounts/connect", &elsewhere).await,
        (StatusCode::CONFLICT, error("account already linked"))
    );
    let malformed = with(fixture("connect.json"), &[("email", json!("not-an-email"))]);
    assert_eq!(
        s.post("/accounts/connect", &malformed).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let missing = with(fixture("connect.json"), &[("account", Value::Null)]);
    assert_eq!(
        s.post("/accounts/connect", &missing).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let wallets = format!("/accounts/{client_id}/wallets");
    let ok = (
        StatusCode::OK,
        json!({ "client_id": client_id, "wallet": WALLET }),
    );
    assert_eq!(s.post(&wallets, &fixture("wallet.json")).await, ok);
    assert_eq!(s.post(&wallets, &fixture("wallet.json")).await, ok);
    assert_eq!(
        s.post("/accounts/nobody/wallets", &fixture("wallet.json"))
            .await,
        (StatusCode::NOT_FOUND, error("unknown client"))
    );
    assert_eq!(
        s.post(&wallets, &json!({ "wallet": "0xnothex" })).await,
        (StatusCode::UNPROCESSABLE_ENTITY, error(INVALID_PAYLOAD))
    );
    assert_eq!(
        s.post(&wallets, &json!({ "address": WALLET })).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, other) = s
        .operator(
            Method::POST,
            "/operator/accounts",
            Some(&json!({ "email": "b@example.com" })),
        )
        .await;
    let other_wallets = format!("/accounts/{}/wallets", other["client_id"].as_str().unwrap());
    assert_eq!(
        s.post(&other_wallets, &fixture("wallet.json")).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(s.store.directory().unwrap().wallets.len(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_custody_accounts_list_what_operators_added() {
    let f = seeded().await;
    let s = &f.server;
    let on_base = with(
        fixture("operator_asset.json"),
        &[("network", json!("base"))],
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets", Some(&on_base))
            .await
            .0,
        StatusCode::OK
    );
    let expected = (StatusCode::OK, fixture("tokens_answer.json"));
    assert_eq!(
        s.alpaca(Method::GET, "/tokenized-assets", None).await,
        expected
    );
    assert_eq!(
        s.alpaca(Method::GET, "/tokenization/tokens", None).await,
        expected
    );
    assert_eq!(
        s.alpaca(Method::GET, "/tokenization/custody-accounts/AAPL", None)
            .await,
        (
            StatusCode::OK,
            json!({ "account_id": "issuer-custody-0001", "underlying_symbol": "AAPL" })
        )
    );
    assert_eq!(
        s.alpaca(Method::GET, "/tokenization/custody-accounts/MSFT", None)
            .await,
        (StatusCode::NOT_FOUND, error("unknown underlying"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_routes_manage_accounts_wallets_assets_and_show_stuck_work() {
    let f = seeded().await;
    let s = &f.server;
    let (status, accounts) = s.operator(Method::GET, "/operator/accounts", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        accounts,
        json!({ "accounts": [{ "client_id": f.client_id, "email": "ap.desk@example.com", "linked": true,
                               "account_number": "910532871", "alpaca_account_id": null, "wallets": [WALLET] }] })
    );
    assert_eq!(
        s.operator(
            Method::POST,
            "/operator/accounts",
            Some(&json!({ "email": "nope" }))
        )
        .await
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Removing the wallet refuses new mints to it; removing it again is a no-op.
    let wallet = json!({ "client_id": f.client_id, "wallet": WALLET });
    let (status, removed) = s
        .operator(Method::DELETE, "/operator/wallets", Some(&wallet))
        .await;
    assert_eq!(
        (status, removed["removed"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (_, removed) = s
        .operator(Method::DELETE, "/operator/wallets", Some(&wallet))
        .await;
    assert_eq!(removed["removed"], false);
    let answer = s
        .post("/inkind/issuance", &issuance(&f.client_id, "op-1"))
        .await;
    assert_eq!(answer, (StatusCode::BAD_REQUEST, error(INVALID_WALLET)));
    assert_eq!(
        s.operator(Method::POST, "/operator/wallets", Some(&wallet))
            .await
            .0,
        StatusCode::OK
    );
    let unknown = json!({ "client_id": "nobody", "wallet": WALLET });
    assert_eq!(
        s.operator(Method::POST, "/operator/wallets", Some(&unknown))
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Freeze and unfreeze; unknown underlyings are 404; a replaced asset keeps its freeze.
    assert_eq!(
        s.operator(Method::POST, "/operator/assets/MSFT/freeze", None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (_, frozen) = s
        .operator(Method::POST, "/operator/assets/AAPL/freeze", None)
        .await;
    assert_eq!(
        frozen,
        json!({ "underlying": "AAPL", "frozen": true, "assets_changed": 1 })
    );
    let (_, replaced) = s
        .operator(
            Method::POST,
            "/operator/assets",
            Some(&fixture("operator_asset.json")),
        )
        .await;
    assert_eq!(replaced["frozen"], true);
    assert_eq!(
        s.post("/inkind/issuance", &issuance(&f.client_id, "op-2"))
            .await,
        (StatusCode::BAD_REQUEST, error(ASSET_FROZEN))
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets/AAPL/unfreeze", None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        s.post("/inkind/issuance", &issuance(&f.client_id, "op-2"))
            .await
            .0,
        StatusCode::OK
    );
    let zero_vault = with(
        fixture("operator_asset.json"),
        &[("vault", json!("0x0000000000000000000000000000000000000000"))],
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets", Some(&zero_vault))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (_, assets) = s.operator(Method::GET, "/operator/assets", None).await;
    assert_eq!(assets["assets"].as_array().unwrap().len(), 1);
    assert_eq!(assets["assets"][0]["frozen"], false);

    // Stuck: nothing yet; a mint the reconciler stopped on shows up with its problem.
    assert_eq!(
        s.operator(Method::GET, "/operator/stuck", None).await,
        (
            StatusCode::OK,
            json!({ "mints": [], "transactions": [], "redemptions": [] })
        )
    );
    let mut record = s.store.mints(Select::All).unwrap().remove(0);
    record.problem = Some(issuer::store::MintProblem::Note(
        "vault reverted 3 times".into(),
    ));
    s.store.put_mints(vec![record.clone()]).unwrap();
    let (_, stuck) = s.operator(Method::GET, "/operator/stuck", None).await;
    assert_eq!(
        stuck["mints"][0]["issuer_request_id"],
        record.intent.issuer_request_id.as_str()
    );
    assert_eq!(stuck["mints"][0]["problem"], "vault reverted 3 times");

    // The operator CLI client speaks to the same routes.
    let args = |command| OperatorArgs {
        issuer_url: s.base.clone(),
        operator_key: Some(Secret::new(OPERATOR_KEY)),
        command,
    };
    let registered = operator_cli::call(&args(OperatorCommand::RegisterAccount {
        email: "cli@example.com".into(),
    }))
    .await
    .unwrap();
    assert_eq!(registered["linked"], false);
    let listed = operator_cli::call(&args(OperatorCommand::Accounts))
        .await
        .unwrap();
    assert_eq!(listed["accounts"].as_array().unwrap().len(), 2);
    let refused = operator_cli::call(&args(OperatorCommand::Freeze {
        underlying: "MSFT".into(),
    }))
    .await;
    assert!(refused.unwrap_err().to_string().contains("404"));
    let wrong_key = OperatorArgs {
        operator_key: Some(Secret::new("k".repeat(40))),
        ..args(OperatorCommand::Assets)
    };
    assert!(operator_cli::call(&wrong_key)
        .await
        .unwrap_err()
        .to_string()
        .contains("401"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_issuance_answered_200_survives_a_restart() {
    let f = seeded().await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        let (status, answer) = f
            .server
            .post(
                "/inkind/issuance",
                &issuance(&f.client_id, &format!("durable-{i}")),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        accepted.push(answer["issuer_request_id"].as_str().unwrap().to_owned());
    }
    let confirm = json!({ "tokenization_request_id": "durable-0", "issuer_request_id": accepted[0], "status": "completed" });
    assert_eq!(
        f.server.post("/inkind/issuance/confirm", &confirm).await.0,
        StatusCode::OK
    );

    // Drop the server, its connections and the store; nothing is flushed beyond what the 200s
    // already waited for.
    let Fixture {
        _dir,
        path,
        server,
        client_id,
    } = f;
    server.stop().await;
    let store = reopen(&path).await;
    let mints = store.mints(Select::All).unwrap();
    assert_eq!(mints.len(), 5);
    for id in &accepted {
        let record = store
            .mint(&IssuerRequestId::parse(id).unwrap())
            .unwrap()
            .expect("accepted intent lost");
        let expected = if id == &accepted[0] {
            Journal::Completed
        } else {
            Journal::Pending
        };
        assert_eq!(record.intent.journal, expected);
    }
    drop(store);

    // A restarted server answers the repeat as before.
    let server = Server::start(&path, config("127.0.0.1/32")).await;
    let (status, answer) = server
        .post("/inkind/issuance", &issuance(&client_id, "durable-3"))
        .await;
    assert_eq!(
        (status, answer["issuer_request_id"].as_str()),
        (StatusCode::OK, Some(accepted[3].as_str()))
    );
    server.stop().await;
}

/// Opens the redb file, waiting for every handle of a stopped server to let go of it (connection
/// tasks end when their sockets close; the writer thread ends when the last handle drops).
async fn reopen(path: &Path) -> RedbStore {
    for _ in 0..200 {
        match RedbStore::open(path) {
            Ok(store) => return store,
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
    RedbStore::open(path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_a_short_key() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("issuer.redb")).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let short = HttpConfig {
        alpaca_auth: AlpacaAuth::ApiKey(Secret::new("short")),
        ..config("127.0.0.1/32")
    };
    let result = serve(listener, store, Arc::new(Notify::new()), short, async {}).await;
    assert!(matches!(result, Err(HttpError::Config(_))), "{result:?}");
}

/// An operator can start a stopped mint's attempts again; an unknown one is 404.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_retries_a_mint_that_stopped() {
    let f = seeded().await;
    let s = &f.server;
    let mut record = f.issued("tr-retry").await;
    let irid = record.intent.issuer_request_id.to_string();
    record.intent.failed_attempts = 3;
    record.problem = Some(issuer::store::MintProblem::Plan {
        plan: reconciler::Problem::AttemptsExhausted { attempts: 3 },
    });
    s.store.put_mints(vec![record]).unwrap();

    let (status, answer) = s
        .operator(Method::POST, &format!("/operator/mints/{irid}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let record = s.store.mints(Select::All).unwrap().remove(0);
    assert_eq!(record.intent.failed_attempts, 0);
    assert_eq!(record.problem, None);
    let (status, _) = s
        .operator(Method::POST, "/operator/mints/mint-nope/retry", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .operator(Method::POST, "/operator/redemptions/red-nope-0/retry", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Addresses that can never receive an AP's tokens (the zero address, the issuer's bot, its
/// vault, receipt and authorizer) are refused as wallets with a clear 422 and written nowhere;
/// one whitelisted before this rule existed is refused at intake as not the client's wallet.
#[tokio::test(flavor = "multi_thread")]
async fn wallets_that_are_the_issuers_own_or_zero_are_refused() {
    let f = seeded().await;
    let s = &f.server;
    let asset = fixture("operator_asset.json");
    let before = s.store.directory().unwrap().wallets;
    let zero = "0x0000000000000000000000000000000000000000";
    for (wallet, what) in [
        (zero, "the zero address"),
        (BOT, "the issuer's bot"),
        (
            asset["vault"].as_str().unwrap(),
            "a vault, receipt or authorizer",
        ),
        (
            asset["receipt"].as_str().unwrap(),
            "a vault, receipt or authorizer",
        ),
        (
            asset["authorizer"].as_str().unwrap(),
            "a vault, receipt or authorizer",
        ),
    ] {
        let (status, answer) = s
            .post(
                &format!("/accounts/{}/wallets", f.client_id),
                &json!({ "wallet": wallet }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{wallet}: {answer}"
        );
        assert!(
            answer["error"].as_str().unwrap().contains(what),
            "{wallet}: {answer}"
        );
        let (status, _) = s
            .operator(
                Method::POST,
                "/operator/wallets",
                Some(&json!({ "client_id": f.client_id, "wallet": wallet })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{wallet}");
    }
    assert_eq!(
        s.store.directory().unwrap().wallets,
        before,
        "nothing whitelisted"
    );

    // Whitelisted before the rule (straight into the store): refused at intake, nothing written.
    let client = ClientId::parse(&f.client_id).unwrap();
    assert!(s.store.add_wallet(&client, BOT.parse().unwrap()).unwrap());
    let body = with(
        issuance(&f.client_id, "to-the-bot"),
        &[("wallet_address", json!(BOT))],
    );
    assert_eq!(
        s.post("/tokenization/mint", &body).await,
        (StatusCode::BAD_REQUEST, error(INVALID_WALLET))
    );
    assert!(s.store.mints(Select::All).unwrap().is_empty());
}

/// An asset listed after intake has run names, as its vault, a wallet an AP already uses: from
/// the listing's answer on, an issuance to that wallet is refused (the issuer's own contract),
/// and nothing is written. Intake keeps what it knows of the assets' contracts in memory; the
/// listing must reach it at once. Relisting the asset with other contracts lets the wallet in.
#[tokio::test(flavor = "multi_thread")]
async fn a_wallet_that_becomes_an_assets_contract_is_refused_from_the_listing_on() {
    let f = seeded().await;
    let s = &f.server;
    let wallet = fixture("wallet.json")["wallet"]
        .as_str()
        .unwrap()
        .to_owned();
    f.issued("before").await;
    let listed = |vault: &str| {
        with(
            fixture("operator_asset.json"),
            &[
                ("underlying", json!("MSFT")),
                ("token", json!("tMSFT")),
                ("vault", json!(vault)),
            ],
        )
    };
    s.list_asset(&listed(&wallet)).await;
    assert_eq!(
        s.post("/inkind/issuance", &issuance(&f.client_id, "after"))
            .await,
        (StatusCode::BAD_REQUEST, error(INVALID_WALLET))
    );
    assert_eq!(s.store.mints(Select::All).unwrap().len(), 1);

    s.list_asset(&listed("0x00000000000000000000000000000000000000aa"))
        .await;
    let (status, answer) = s
        .post("/inkind/issuance", &issuance(&f.client_id, "relisted"))
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

/// A mint rebuilt under the id derived from a request id but naming another request: an
/// issuance of that request id is a 500 with the reason, never the final 409 nor a new mint.
#[tokio::test(flavor = "multi_thread")]
async fn an_issuance_meeting_a_rebuilt_mint_of_another_request_is_an_error() {
    let f = seeded().await;
    let s = &f.server;
    let mut rebuilt = f.issued("tr-template").await;
    let tagged = reconciler::TokenizationRequestId::parse("tr-tagged").unwrap();
    rebuilt.intent.tokenization_request_id =
        reconciler::TokenizationRequestId::parse("tr-answered").unwrap();
    rebuilt.intent.issuer_request_id = reconciler::IssuerRequestId::for_mint(&tagged);
    rebuilt.fingerprint = "rebuilt".into();
    assert!(s.store.insert_mint_if_absent(rebuilt).unwrap());
    let before = s.store.mints(Select::All).unwrap();

    let (status, answer) = s
        .post("/inkind/issuance", &issuance(&f.client_id, "tr-tagged"))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
    assert!(
        answer["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{answer}"
    );
    assert_eq!(s.store.mints(Select::All).unwrap(), before);
}

/// A body that does not say it is JSON is refused with 415 before it is parsed; JSON with a
/// charset parameter is JSON.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_without_a_json_content_type_is_415() {
    let f = seeded().await;
    let s = &f.server;
    let body = issuance(&f.client_id, "ct-1").to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = s
            .http
            .post(format!("{}/tokenization/mint", s.base))
            .header("X-API-KEY", ALPACA_KEY)
            .body(body.clone());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer, error("Content-Type must be application/json"));
    }
    assert!(
        s.store.mints(Select::All).unwrap().is_empty(),
        "nothing written"
    );
    let response = s
        .http
        .post(format!("{}/tokenization/mint", s.base))
        .header("X-API-KEY", ALPACA_KEY)
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// A quantity above the asset's limit (by default a billion shares; an operator can set it per
/// asset) is an invalid payload: `1` followed by 58 zeros never reaches the vault.
#[tokio::test(flavor = "multi_thread")]
async fn quantities_above_the_assets_limit_are_refused() {
    let f = seeded().await;
    let s = &f.server;
    let huge = format!("1{}", "0".repeat(58));
    for (trid, qty) in [("q-1", huge.as_str()), ("q-2", "1000000000.000000001")] {
        let body = with(issuance(&f.client_id, trid), &[("qty", json!(qty))]);
        assert_eq!(
            s.post("/tokenization/mint", &body).await,
            (StatusCode::BAD_REQUEST, error(INVALID_PAYLOAD)),
            "{qty}"
        );
    }
    assert!(s.store.mints(Select::All).unwrap().is_empty());
    let at_limit = with(
        issuance(&f.client_id, "q-3"),
        &[("qty", json!("1000000000"))],
    );
    assert_eq!(
        s.post("/tokenization/mint", &at_limit).await.0,
        StatusCode::OK
    );

    // The operator lowers AAPL's limit to 100 shares.
    let lowered = with(
        fixture("operator_asset.json"),
        &[("mint_qty_max", json!("100"))],
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets", Some(&lowered))
            .await
            .0,
        StatusCode::OK
    );
    let over = with(issuance(&f.client_id, "q-4"), &[("qty", json!("100.5"))]);
    assert_eq!(
        s.post("/tokenization/mint", &over).await,
        (StatusCode::BAD_REQUEST, error(INVALID_PAYLOAD))
    );
    let under = with(issuance(&f.client_id, "q-5"), &[("qty", json!("100"))]);
    assert_eq!(s.post("/tokenization/mint", &under).await.0, StatusCode::OK);
    let bad = with(
        fixture("operator_asset.json"),
        &[("mint_qty_max", json!("-1"))],
    );
    assert_eq!(
        s.operator(Method::POST, "/operator/assets", Some(&bad))
            .await
            .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

/// A clock a test sets: Unix milliseconds, moved only when the test says so.
#[derive(Debug)]
struct SetClock(std::sync::atomic::AtomicU64);

impl issuer::clock::Clock for SetClock {
    fn unix_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The HTTP layer reads time from the clock it is given, never the machine's: an intent is
/// accepted and a journal confirmed at the clock's time, and a completed mint counts as stuck
/// once the clock (not the wall) says it waited more than a minute.
#[tokio::test(flavor = "multi_thread")]
async fn the_http_layer_reads_time_from_the_clock_it_is_given() {
    // Years ahead of the machine's clock, so a handler reading the wall would show.
    const START_MS: u64 = 4_000_000_000_123;
    let clock = Arc::new(SetClock(std::sync::atomic::AtomicU64::new(START_MS)));
    let dir = tempfile::tempdir().unwrap();
    let options = ServeOptions {
        clock: clock.clone(),
        ..ServeOptions::default()
    };
    let s = Server::start_with(
        &dir.path().join("issuer.redb"),
        config("127.0.0.1/32"),
        options,
    )
    .await;
    let client_id = s.seed().await;
    let (status, created) = s
        .post("/inkind/issuance", &issuance(&client_id, "clock-1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let irid = IssuerRequestId::parse(created["issuer_request_id"].as_str().unwrap()).unwrap();
    assert_eq!(
        s.store.mint(&irid).unwrap().unwrap().intent.accepted_at,
        START_MS / 1000
    );

    clock
        .0
        .store(START_MS + 5_000, std::sync::atomic::Ordering::SeqCst);
    let confirm = json!({ "tokenization_request_id": "clock-1", "issuer_request_id": irid.as_str(), "status": "completed" });
    assert_eq!(
        s.post("/inkind/issuance/confirm", &confirm).await.0,
        StatusCode::OK
    );
    let record = s.store.mint(&irid).unwrap().unwrap();
    assert_eq!(record.confirmed_at_ms, Some(START_MS + 5_000));

    // Completed, not called back: not stuck a minute after acceptance, stuck just past it.
    let stuck_mints = || async {
        let (status, body) = s.operator(Method::GET, "/operator/stuck", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["mints"].as_array().unwrap().len()
    };
    clock
        .0
        .store(START_MS + 60_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(stuck_mints().await, 0);
    clock
        .0
        .store(START_MS + 62_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(stuck_mints().await, 1);
    s.stop().await;
}
