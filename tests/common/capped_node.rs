//! A JSON-RPC node in front of anvil that answers as hosted providers do: an `eth_getLogs` answer
//! of more than `cap` logs is refused with geth's and Infura's error (code -32005, "query
//! returned more than N results"); with a rate limit, every `every`-th call is refused for its
//! rate, by turns with HTTP 429 and with Infura's -32005 "project ID request rate exceeded".
//! Everything else is passed through. Counts what it refused.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
struct State {
    upstream: String,
    cap: usize,
    /// Every this many calls, one is refused for its rate (0: never).
    rate_limit_every: usize,
    calls: Arc<AtomicUsize>,
    rate_limited: Arc<AtomicUsize>,
    http: reqwest::Client,
    tokio: tokio::runtime::Handle,
    refused: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

pub struct CappedNode {
    pub url: String,
    refused: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    rate_limited: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

impl CappedNode {
    /// Serves on a free loopback port, forwarding to `upstream`, until dropped.
    pub fn start(upstream: &str, cap: usize) -> CappedNode {
        CappedNode::rate_limited(upstream, cap, 0)
    }

    /// [`CappedNode::start`], refusing every `every`-th call for its rate.
    pub fn rate_limited(upstream: &str, cap: usize, every: usize) -> CappedNode {
        let state = State {
            upstream: upstream.to_owned(),
            cap,
            rate_limit_every: every,
            calls: Arc::default(),
            rate_limited: Arc::default(),
            http: reqwest::Client::new(),
            tokio: tokio::runtime::Handle::current(),
            refused: Arc::default(),
            answered: Arc::default(),
        };
        let (refused, answered, rate_limited) = (
            state.refused.clone(),
            state.answered.clone(),
            state.rate_limited.clone(),
        );
        let mut app = tide::with_state(state);
        app.at("/").post(forward);
        let listener = super::loopback_listener();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let listener = async_std::net::TcpListener::from(listener);
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = app.listen(listener) => {}
                _ = stopped.changed() => {}
            }
        });
        CappedNode {
            url,
            refused,
            answered,
            rate_limited,
            _stop: stop,
        }
    }

    /// `eth_getLogs` calls refused for the size of their answer.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// Calls refused for their rate.
    pub fn rate_limited_calls(&self) -> usize {
        self.rate_limited.load(Ordering::SeqCst)
    }

    /// `eth_getLogs` calls answered.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

async fn forward(mut req: tide::Request<State>) -> tide::Result {
    let body: Value = req.body_json().await?;
    let state = req.state().clone();
    let call = state.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if state.rate_limit_every > 0 && call % state.rate_limit_every == 0 {
        let refusal = state.rate_limited.fetch_add(1, Ordering::SeqCst);
        if refusal % 2 == 0 {
            return Ok(tide::Response::builder(429)
                .body("Too Many Requests")
                .build());
        }
        let answer = json!({
            "jsonrpc": "2.0",
            "id": body["id"],
            "error": {"code": -32005, "message": "project ID request rate exceeded"},
        });
        return Ok(tide::Response::builder(200)
            .body(tide::Body::from_json(&answer)?)
            .build());
    }
    let call = body.clone();
    let answer: Value = state
        .tokio
        .spawn(async move {
            state
                .http
                .post(&state.upstream)
                .json(&call)
                .send()
                .await?
                .json::<Value>()
                .await
        })
        .await??;
    let state = req.state();
    let answer = if body["method"] == "eth_getLogs" {
        let logs = answer["result"].as_array().map_or(0, Vec::len);
        if logs > state.cap {
            state.refused.fetch_add(1, Ordering::SeqCst);
            json!({
                "jsonrpc": "2.0",
                "id": body["id"],
                "error": {
                    "code": -32005,
                    "message": format!("query returned more than {} results", state.cap),
                },
            })
        } else {
            state.answered.fetch_add(1, Ordering::SeqCst);
            answer
        }
    } else {
        answer
    };
    Ok(tide::Response::builder(200)
        .body(tide::Body::from_json(&answer)?)
        .build())
}
