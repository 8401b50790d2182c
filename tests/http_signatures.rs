//! With signature keys configured, Alpaca's requests pass only with a valid RFC 9421 Ed25519
//! signature over method, target URI, content type and an RFC 9530 content digest of the exact
//! body: an unsigned, altered, replayed-late or foreign-signed request is 401 and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::stack::http_config;
use issuer::http::signature::{sign, SignatureConfig};
use issuer::store::{RedbStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn post(url: &str, body: &[u8], headers: &[(String, String)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("X-API-KEY", issuer::cli::LOCAL_API_KEY)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn only_requests_signed_by_alpacas_key_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    store.register_account("ap@example.com").unwrap();
    let alpaca = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let mut config = http_config();
    config.signatures = Some(SignatureConfig {
        keys: vec![("alpaca-prod".into(), alpaca.verifying_key())],
        public_base_url: Some("https://issuer.example.com".into()),
        max_age_secs: 300,
    });
    let listener = common::loopback_listener();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(issuer::http::serve(
        listener,
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
        config,
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let url = format!("{base}/accounts/connect");
    let target = "https://issuer.example.com/accounts/connect";
    let body = serde_json::to_vec(&json!({"email": "ap@example.com", "account": "ALP-9"})).unwrap();

    // Unsigned: refused, nothing linked.
    let (status, answer) = post(&url, &body, &[]).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("signature refused"),
        "{answer}"
    );
    // Signed by someone else: refused.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
    let forged = sign(
        &stranger,
        "alpaca-prod",
        "POST",
        target,
        "application/json",
        &body,
        now(),
    );
    assert_eq!(post(&url, &body, &forged).await.0, 401);
    // Signed, then the body altered on the way: refused.
    let signed = sign(
        &alpaca,
        "alpaca-prod",
        "POST",
        target,
        "application/json",
        &body,
        now(),
    );
    let altered =
        serde_json::to_vec(&json!({"email": "ap@example.com", "account": "ALP-0"})).unwrap();
    assert_eq!(post(&url, &altered, &signed).await.0, 401);
    // Signed long ago (a replay): refused.
    let old = sign(
        &alpaca,
        "alpaca-prod",
        "POST",
        target,
        "application/json",
        &body,
        now() - 3600,
    );
    assert_eq!(post(&url, &body, &old).await.0, 401);
    assert!(
        !store
            .account_by_email("ap@example.com")
            .unwrap()
            .unwrap()
            .linked(),
        "nothing changed"
    );

    // Properly signed: through, and linked.
    let (status, answer) = post(&url, &body, &signed).await;
    assert_eq!(status, 200, "{answer}");
    assert!(store
        .account_by_email("ap@example.com")
        .unwrap()
        .unwrap()
        .linked());
    let _ = stop.send(true);
}
