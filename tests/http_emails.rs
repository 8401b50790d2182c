//! Emails with control or invisible characters are refused at the HTTP boundary (issue 11): NUL,
//! ESC and zero-width or direction-mark characters would let two accounts look the same to an
//! operator. A real tide server on 127.0.0.1:0 over a real redb file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use issuer::config::Secret;
use issuer::http::{serve, HttpConfig};
use issuer::store::{RedbStore, Store};
use std::sync::Arc;

const ALPACA_KEY: &str = "alpaca-test-key-0123456789abcdef0123";
const OPERATOR_KEY: &str = "operator-test-key-0123456789abcdef01";

#[tokio::test]
async fn control_and_invisible_characters_in_emails_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("issuer.redb")).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = HttpConfig {
        alpaca_auth: issuer::http::AlpacaAuth::ApiKey(Secret::new(ALPACA_KEY)),
        alpaca_allow: issuer::config::parse_cidrs("127.0.0.1/32").unwrap(),
        operator_api_key: Secret::new(OPERATOR_KEY),
        operator_allow: issuer::config::parse_cidrs("127.0.0.1/32").unwrap(),
        body_limit_bytes: 4096,
        failed_auth_per_minute_max: 10,
        local_networks: vec![],
        served_networks: vec![],
        issuer_addresses: vec![],
        custody_account_id: "custody".into(),
    };
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, header: &'static str, key: &'static str, body: serde_json::Value| {
        let request = http
            .post(format!("{base}{path}"))
            .header(header, key)
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    for bad in [
        "ap\u{0}@example.com",
        "ap\u{1b}[31m@example.com",
        "ap\u{7f}@example.com",
        "ap\u{200b}@example.com",
        "ap@exa\u{200d}mple.com",
        "\u{200e}ap@example.com",
        "ap@example.com\u{2060}",
        "\u{feff}ap@example.com",
        "ap\u{202e}@example.com",
        "ap\u{ad}@example.com",
    ] {
        let status = post(
            "/operator/accounts",
            "X-OPERATOR-KEY",
            OPERATOR_KEY,
            serde_json::json!({ "email": bad }),
        )
        .await;
        assert_eq!(status, 422, "operator registered {bad:?}");
        let status = post(
            "/accounts/connect",
            "X-API-KEY",
            ALPACA_KEY,
            serde_json::json!({ "email": bad, "account": "ALP-1" }),
        )
        .await;
        assert_eq!(status, 422, "Alpaca linked {bad:?}");
    }
    assert!(store.directory().unwrap().accounts.is_empty());
    let status = post(
        "/operator/accounts",
        "X-OPERATOR-KEY",
        OPERATOR_KEY,
        serde_json::json!({ "email": "ap.desk+1@example.com" }),
    )
    .await;
    assert_eq!(status, 200, "a plain email is still accepted");
}
