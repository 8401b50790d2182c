//! Half-sent requests cannot hold the server (issue 11): a head that never ends, a body that was
//! announced and never sent, and a refused request each lose their connection within a deadline,
//! and at the connection bound new callers (`/health`) are still answered. A real tide server on
//! 127.0.0.1:0 over a real redb file, spoken to with raw TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use issuer::config::{parse_cidrs, Secret};
use issuer::http::{serve, serve_with, ConnectionLimits, HttpConfig, ServeOptions};
use issuer::store::{RedbStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

const ALPACA_KEY: &str = "alpaca-test-key-0123456789abcdef0123";
const OPERATOR_KEY: &str = "operator-test-key-0123456789abcdef01";

fn config(alpaca_allow: &str) -> HttpConfig {
    HttpConfig {
        alpaca_auth: issuer::http::AlpacaAuth::ApiKey(Secret::new(ALPACA_KEY)),
        alpaca_allow: parse_cidrs(alpaca_allow).unwrap(),
        operator_api_key: Secret::new(OPERATOR_KEY),
        operator_allow: parse_cidrs("127.0.0.1/32").unwrap(),
        body_limit_bytes: 4096,
        failed_auth_per_minute_max: 1000,
        local_networks: vec![],
        served_networks: vec![],
        issuer_addresses: vec![],
        custody_account_id: "custody".into(),
    }
}

struct Running {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

fn start(alpaca_allow: &str, limits: Option<ConnectionLimits>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("issuer.redb")).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let wake = Arc::new(Notify::new());
    match limits {
        None => {
            tokio::spawn(serve(listener, store, wake, config(alpaca_allow), shutdown));
        }
        Some(limits) => {
            let options = ServeOptions {
                limits,
                ..ServeOptions::default()
            };
            tokio::spawn(serve_with(
                listener,
                store,
                wake,
                config(alpaca_allow),
                options,
                shutdown,
            ));
        }
    }
    Running {
        addr,
        _dir: dir,
        _stop: stop,
    }
}

fn issuance_head(content_length: u64) -> String {
    format!(
        "POST /inkind/issuance HTTP/1.1\r\nHost: issuer\r\nX-API-KEY: {ALPACA_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

/// Reads until the server closes the connection; panics if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        let Ok(read) = tokio::time::timeout(left, stream.read(&mut buf)).await else {
            panic!(
                "connection still open after {within:?}; received so far: {:?}",
                String::from_utf8_lossy(&seen)
            )
        };
        match read {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn health(addr: std::net::SocketAddr) -> reqwest::StatusCode {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_refused_request_closes_its_connection_without_waiting_for_the_body() {
    // 127.0.0.1 is not allowed on Alpaca's routes: 403 before the body is read.
    let server = start("10.0.0.0/8", None);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(issuance_head(1_000_000_000).as_bytes())
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(seen.starts_with("HTTP/1.1 403"), "{seen:?}");

    // Allowed, but the body is larger than the limit: 413, and closed.
    let server = start("127.0.0.1/32", None);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(issuance_head(1_000_000_000).as_bytes())
        .await
        .unwrap();
    let seen = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(seen.starts_with("HTTP/1.1 413"), "{seen:?}");
}

#[tokio::test]
async fn a_body_never_sent_and_a_head_never_ended_lose_their_connections() {
    let limits = ConnectionLimits {
        connections_max: 64,
        head_timeout: Duration::from_millis(400),
        body_timeout: Duration::from_millis(400),
    };
    let server = start("127.0.0.1/32", Some(limits));

    // A body announced within the limit and never sent.
    let mut body_never_sent = TcpStream::connect(server.addr).await.unwrap();
    body_never_sent
        .write_all(issuance_head(1000).as_bytes())
        .await
        .unwrap();
    body_never_sent.write_all(b"{\"qty\":").await.unwrap();
    // A head that never ends.
    let mut head_never_ended = TcpStream::connect(server.addr).await.unwrap();
    head_never_ended
        .write_all(b"POST /inkind/issuance HTTP/1.1\r\nHost: issuer\r\n")
        .await
        .unwrap();
    // A connection that never says anything.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();

    let started = Instant::now();
    read_until_closed(&mut body_never_sent, Duration::from_secs(3)).await;
    read_until_closed(&mut head_never_ended, Duration::from_secs(3)).await;
    read_until_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A whole request on a kept-alive connection still works within the deadlines.
    assert_eq!(health(server.addr).await, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn at_the_connection_bound_health_is_still_answered() {
    let limits = ConnectionLimits {
        connections_max: 16,
        head_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(60),
    };
    let server = start("127.0.0.1/32", Some(limits));
    let mut held = Vec::new();
    for _ in 0..48 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(issuance_head(1000).as_bytes())
            .await
            .unwrap();
        held.push(stream);
    }
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(health(server.addr).await, reqwest::StatusCode::OK);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The oldest half-sent connections were closed to make room.
    let mut closed = 0;
    for stream in &mut held {
        let mut buf = [0u8; 64];
        if matches!(
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        ) {
            closed += 1;
        }
    }
    assert!(closed >= 48 - 16, "only {closed} connections were closed");
}
