//! With `signatures` chosen, Alpaca's requests pass only with a valid RFC 9421 Ed25519 signature
//! over method, target URI, content type and an RFC 9530 content digest of the exact body,
//! *instead of* an API key (Alpaca's guide, one scheme per issuer): an unsigned request (even one
//! with the right key), an altered, replayed-late, foreign-signed one, or one signed for another
//! host than the configured public URL is 401 and changes nothing. Alpaca's key is configured as
//! the PEM it hands over; a start without the public URL is refused with a clear error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::stack::http_config;
use issuer::http::signature::{parse_key, public_key_pem, sign, SignatureConfig};
use issuer::http::AlpacaAuth;
use issuer::store::{AccountKey, RedbStore, Store};
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
    // The key as Alpaca hands it over: PEM (SPKI).
    let pem = public_key_pem(&alpaca.verifying_key());
    config.alpaca_auth = AlpacaAuth::Signatures(SignatureConfig {
        keys: vec![parse_key(&format!("alpaca-prod:{pem}")).unwrap()],
        public_base_url: "https://issuer.example.com".into(),
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

    // The API key is not an alternative once signatures are chosen: refused.
    let key = [(
        "X-API-KEY".to_owned(),
        issuer::cli::LOCAL_API_KEY.to_owned(),
    )];
    let (status, answer) = post(&url, &body, &key).await;
    assert_eq!(status, 401, "{answer}");
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
    // Signed for the address this server sees (what a Host header says), not the public URL
    // Alpaca calls: refused, the target URI is never taken from the request.
    let local_target = sign(
        &alpaca,
        "alpaca-prod",
        "POST",
        &url,
        "application/json",
        &body,
        now(),
    );
    assert_eq!(post(&url, &body, &local_target).await.0, 401);
    assert!(
        !store
            .account(AccountKey::Email("ap@example.com"))
            .unwrap()
            .unwrap()
            .linked(),
        "nothing changed"
    );

    // Properly signed, without any key: through, and linked.
    let (status, answer) = post(&url, &body, &signed).await;
    assert_eq!(status, 200, "{answer}");
    assert!(store
        .account(AccountKey::Email("ap@example.com"))
        .unwrap()
        .unwrap()
        .linked());
    let _ = stop.send(true);
}

/// `issuer serve` with signatures chosen but no public URL does not start, and says why.
#[test]
fn signatures_without_the_public_url_refuse_to_start() {
    let alpaca = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let pem = public_key_pem(&alpaca.verifying_key()).replace('\n', "\\n");
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .arg("serve")
        .args(["--db", dir.path().join("s.redb").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("ALPACA_AUTH", "signatures")
        .env("ALPACA_SIGNATURE_KEYS", format!("alpaca-prod:{pem}"))
        .env_remove("ISSUER_PUBLIC_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ISSUER_PUBLIC_URL"), "{stderr}");
    assert!(
        !dir.path().join("s.redb").exists(),
        "nothing started: {stderr}"
    );
}

/// Keys configured while the scheme is the API key are refused, not silently ignored.
#[test]
fn signature_keys_with_the_api_key_scheme_refuse_to_start() {
    let alpaca = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]);
    let pem = public_key_pem(&alpaca.verifying_key()).replace('\n', "\\n");
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .arg("serve")
        .args(["--db", dir.path().join("s.redb").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("ALPACA_AUTH")
        .env("ALPACA_SIGNATURE_KEYS", format!("alpaca-prod:{pem}"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ALPACA_AUTH"), "{stderr}");
}
