//! A JSON-RPC node in front of anvil that answers `eth_getLogs` as hosted providers do: an answer
//! of more than `cap` logs is refused with geth's and Infura's error (code -32005, "query
//! returned more than N results"). Everything else is passed through. Counts what it refused.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Clone)]
struct State {
    upstream: String,
    cap: usize,
    http: reqwest::Client,
    tokio: tokio::runtime::Handle,
    refused: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

pub struct CappedNode {
    pub url: String,
    refused: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

impl CappedNode {
    /// Serves on a free loopback port, forwarding to `upstream`, until dropped.
    pub fn start(upstream: &str, cap: usize) -> CappedNode {
        let state = State {
            upstream: upstream.to_owned(),
            cap,
            http: reqwest::Client::new(),
            tokio: tokio::runtime::Handle::current(),
            refused: Arc::default(),
            answered: Arc::default(),
        };
        let (refused, answered) = (state.refused.clone(), state.answered.clone());
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
            _stop: stop,
        }
    }

    /// `eth_getLogs` calls refused for the size of their answer.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    /// `eth_getLogs` calls answered.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

async fn forward(mut req: tide::Request<State>) -> tide::Result {
    let body: Value = req.body_json().await?;
    let state = req.state().clone();
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
