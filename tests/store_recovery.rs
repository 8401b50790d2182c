//! A disk that fails writes (full) does not break the store until a restart (issue 11): while
//! writes fail `/readyz` says `store` is not ready and intake answers 500 (never a 200 it did not
//! keep); once writes can succeed the store reopens itself, nothing answered is lost and nothing
//! refused is half there. The disk is the real file behind a backend that fails writes while a
//! flag is set (a real full disk cannot be made portably). Also: the file is created 0600, and a
//! path that cannot be a store says why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use issuer::config::Secret;
use issuer::http::{serve, HttpConfig};
use issuer::store::{RedbStore, Store, StoreError};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPERATOR_KEY: &str = "operator-test-key-0123456789abcdef01";

/// The file backend, with writes, syncs and resizes failing (ENOSPC) while `full` is set.
#[derive(Debug)]
struct FillableDisk {
    inner: FileBackend,
    full: Arc<AtomicBool>,
}

impl FillableDisk {
    fn refuse(&self) -> Result<(), std::io::Error> {
        if self.full.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    }
}

impl StorageBackend for FillableDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.refuse()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.refuse()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.refuse()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

fn config() -> HttpConfig {
    HttpConfig {
        alpaca_auth: issuer::http::AlpacaAuth::ApiKey(Secret::new(
            "alpaca-test-key-0123456789abcdef0123",
        )),
        alpaca_allow: issuer::config::parse_cidrs("127.0.0.1/32").unwrap(),
        operator_api_key: Secret::new(OPERATOR_KEY),
        operator_allow: issuer::config::parse_cidrs("127.0.0.1/32").unwrap(),
        body_limit_bytes: 4096,
        failed_auth_per_minute_max: 10,
        local_networks: vec![],
        served_networks: vec![],
        issuer_addresses: vec![],
        custody_account_id: "custody".into(),
    }
}

async fn register(http: &reqwest::Client, base: &str, email: &str) -> reqwest::StatusCode {
    http.post(format!("{base}/operator/accounts"))
        .header("X-OPERATOR-KEY", OPERATOR_KEY)
        .json(&serde_json::json!({ "email": email }))
        .send()
        .await
        .unwrap()
        .status()
}

async fn readyz(http: &reqwest::Client, base: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_is_reported_by_readyz_and_the_store_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    let full = Arc::new(AtomicBool::new(false));
    let disk = full.clone();
    let store = Arc::new(
        RedbStore::open_with(&path, move |inner| FillableDisk {
            inner,
            full: disk.clone(),
        })
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shared: Arc<dyn Store> = store.clone();
    let server = tokio::spawn(serve(
        listener,
        shared,
        Arc::new(tokio::sync::Notify::new()),
        config(),
        async move {
            let _ = stopped.await;
        },
    ));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    assert_eq!(register(&http, &base, "before@example.com").await, 200);
    let (status, body) = readyz(&http, &base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["store"], "ok");

    full.store(true, Ordering::SeqCst);
    assert_eq!(register(&http, &base, "during@example.com").await, 500);
    let (status, body) = readyz(&http, &base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["failing"], serde_json::json!(["store"]));
    assert_eq!(register(&http, &base, "during@example.com").await, 500);
    assert_eq!(readyz(&http, &base).await.0, 503);
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "liveness stays up"
    );

    // The disk has room again: no restart, the store recovers by itself.
    full.store(false, Ordering::SeqCst);
    let started = Instant::now();
    loop {
        let (status, body) = readyz(&http, &base).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still not ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(register(&http, &base, "after@example.com").await, 200);

    let emails = |store: &dyn Store| {
        let mut emails: Vec<String> = store
            .directory()
            .unwrap()
            .accounts
            .into_iter()
            .map(|a| a.email)
            .collect();
        emails.sort();
        emails
    };
    let expected = vec![
        "after@example.com".to_owned(),
        "before@example.com".to_owned(),
    ];
    assert_eq!(emails(store.as_ref()), expected);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
    store.close();
    let reopened = RedbStore::open(&path).unwrap();
    assert_eq!(
        emails(&reopened),
        expected,
        "what was answered 200 is on disk"
    );
}

#[cfg(unix)]
#[test]
fn a_new_store_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("issuer.redb");
    RedbStore::open(&path).unwrap().close();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[test]
fn a_path_that_cannot_be_a_store_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let err = RedbStore::open(dir.path())
        .err()
        .expect("a directory is not a store");
    assert!(matches!(err, StoreError::Unusable { .. }), "{err}");
    assert!(err.to_string().contains("is a directory"), "{err}");
    assert!(!err.to_string().contains("corrupt"), "{err}");

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = RedbStore::open(&file.join("issuer.redb"))
        .err()
        .expect("a path under a file is not a store");
    assert!(!err.to_string().contains("corrupt"), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("not a directory"),
        "{err}"
    );
}
