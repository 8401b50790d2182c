//! The simulator's HTTP side: tide routes for the Broker API (with auth and faults) and the
//! unauthenticated, loopback-only `/sim/...` control routes.

use super::mint::{play_mint, MintScript};
use super::state::{FaultsPatch, Injected, NewMint, Reply};
use super::Sim;
use crate::alpaca::wire::RequestStatus;
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tide::{Body, Request, Response, StatusCode};

/// What every handler can reach.
#[derive(Clone)]
pub(super) struct AppState {
    pub(super) sim: Sim,
    /// reqwest needs the tokio runtime; tide handlers run on async-std's executor, so the calls
    /// `/sim/mint` makes to the issuer are handed to this runtime and awaited from here.
    pub(super) tokio: tokio::runtime::Handle,
    pub(super) http: reqwest::Client,
}

/// Serves the simulator on `listener` until `shutdown` resolves.
///
/// Binds nothing itself: the caller decides the address (tests and the CLI pass 127.0.0.1).
/// Must be called from inside a tokio runtime (the handle is captured for `/sim/mint`); the HTTP
/// server itself runs on async-std's own reactor and executor threads.
pub async fn serve(
    listener: std::net::TcpListener,
    sim: Sim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tokio = tokio::runtime::Handle::try_current()
        .map_err(|err| std::io::Error::other(format!("sim::serve needs a tokio runtime: {err}")))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|err| std::io::Error::other(format!("HTTP client: {err}")))?;
    listener.set_nonblocking(true)?;
    let listener = async_std::net::TcpListener::from(listener);
    let app = app(AppState { sim, tokio, http });
    tokio::select! {
        served = crate::http::listen::serve_app_with(listener, app, LIMITS) => served,
        () = shutdown => Ok(()),
    }
}

/// Alpaca has no 200-connection bound: the simulator standing in for it must not close a
/// connection in use because a test driver's pool and the issuer's Alpaca jobs (up to 128 at
/// once) together hold more.
const LIMITS: crate::http::listen::ConnectionLimits = crate::http::listen::ConnectionLimits {
    connections_max: 1024,
    head_timeout: Duration::from_secs(10),
    body_timeout: Duration::from_secs(10),
};

fn app(state: AppState) -> tide::Server<AppState> {
    let mut app = tide::with_state(state);
    app.at("/v1/accounts/:account_id/tokenization/*rest")
        .get(broker_api)
        .post(broker_api);
    app.at("/sim/state").get(sim_state);
    app.at("/sim/faults").get(get_faults).post(set_faults);
    app.at("/sim/reset").post(reset);
    app.at("/sim/mint").post(sim_mint);
    app.at("/sim/mint-request").post(add_mint_request);
    app.at("/sim/requests/:id/complete").post(complete);
    app.at("/sim/requests/:id/reject").post(reject);
    app
}

fn json_response(reply: &Reply) -> Response {
    let status = StatusCode::try_from(reply.status).unwrap_or(StatusCode::BadGateway);
    let mut response = Response::builder(status)
        .content_type(tide::http::mime::JSON)
        .body(reply.body.to_string())
        .build();
    if let Some(secs) = reply.retry_after_secs {
        response.insert_header("Retry-After", secs.to_string());
    }
    response
}

/// Where a Broker API call goes, and the name its hits are counted under.
pub(super) enum Route {
    MintCallback,
    Redeem,
    Request(String),
    ByIssuerId,
    List,
    Unknown,
}

impl Route {
    /// `method` as HTTP spells it (`GET`, `POST`).
    pub(super) fn parse(method: &str, rest: &str) -> Self {
        match (method, rest) {
            ("POST", "callback/mint") => Self::MintCallback,
            ("POST", "callback/redeem") => Self::Redeem,
            ("GET", "requests:by_issuer_request_id") => Self::ByIssuerId,
            ("GET", "requests") => Self::List,
            ("GET", other) => match other.strip_prefix("requests/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Self::Request(id.to_owned()),
                _ => Self::Unknown,
            },
            _ => Self::Unknown,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::MintCallback => "POST callback/mint",
            Self::Redeem => "POST callback/redeem",
            Self::Request(_) => "GET requests/{id}",
            Self::ByIssuerId => "GET requests:by_issuer_request_id",
            Self::List => "GET requests",
            Self::Unknown => "unknown",
        }
    }
}

/// Every Broker API route: count, delay, maybe fail, authenticate, serve, maybe lose the answer.
async fn broker_api(mut req: Request<AppState>) -> tide::Result {
    let sim = req.state().sim.clone();
    let path = req.url().path().to_owned();
    // /v1/accounts/{account_id}/tokenization/{rest}
    let mut parts = path.splitn(6, '/').skip(3);
    let account_id = parts.next().unwrap_or_default().to_owned();
    let rest = parts.nth(1).unwrap_or_default().to_owned();
    let route = Route::parse(req.method().as_ref(), &rest);

    let (latency_ms, injected) = before_call(&sim, &route);
    if latency_ms > 0 {
        async_std::task::sleep(Duration::from_millis(latency_ms)).await;
    }
    if let Some(reply) = injected {
        return Ok(json_response(&reply));
    }

    let authorization = req
        .header("Authorization")
        .map(|values| values.last().as_str().to_owned());
    let (expected, account_ok) = sim.with(|state| {
        let credentials = format!("{}:{}", state.config.api_key, state.config.api_secret);
        (
            format!("Basic {}", base64(credentials.as_bytes())),
            state.config.account_id == account_id,
        )
    });
    if authorization.as_deref() != Some(expected.as_str()) {
        return Ok(json_response(&Reply::error(401, "invalid credentials")));
    }
    if !account_ok {
        return Ok(json_response(&Reply::error(
            404,
            format!("account {account_id} not found"),
        )));
    }

    let key = req
        .header("Idempotency-Key")
        .map(|values| values.last().as_str().to_owned());
    let query: Vec<(String, String)> = req
        .url()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let body = match &route {
        Route::MintCallback | Route::Redeem => req.body_bytes().await?,
        _ => Vec::new(),
    };
    let reply = serve_call(&sim, &route, key.as_deref(), &query, &body);
    if reply.status == 404 && matches!(route, Route::Unknown) {
        return Ok(json_response(&Reply::error(
            404,
            format!("no route {} {rest}", req.method()),
        )));
    }

    if sim.with(super::state::State::roll_drop) {
        // The call took effect; its answer is lost mid-body and the connection closes.
        let response = Response::builder(StatusCode::Ok)
            .content_type(tide::http::mime::JSON)
            .body(Body::from_reader(Severed, None))
            .build();
        return Ok(response);
    }
    Ok(json_response(&reply))
}

/// Counts the hit and rolls the fault dice: how long to wait first, and an injected failure
/// (5xx or 429) to answer instead of serving the call.
pub(super) fn before_call(sim: &Sim, route: &Route) -> (u64, Option<Reply>) {
    let (latency_ms, injected) = sim.with(|state| {
        state.count_hit(route.name());
        (state.faults.latency_ms, state.roll_fault())
    });
    let reply = injected.map(|injected| match injected {
        Injected::ServerError => Reply::error(503, "simulated outage"),
        Injected::TooManyRequests { retry_after_secs } => {
            let mut reply = Reply::error(429, "simulated rate limit");
            reply.retry_after_secs = Some(retry_after_secs);
            reply
        }
    });
    (latency_ms, reply)
}

/// Serves one authenticated Broker API call.
pub(super) fn serve_call(
    sim: &Sim,
    route: &Route,
    idempotency_key: Option<&str>,
    query: &[(String, String)],
    body: &[u8],
) -> Reply {
    match route {
        Route::MintCallback => sim.with(|state| state.mint_callback(body)),
        Route::Redeem => sim.with(|state| state.redeem(idempotency_key, body)),
        Route::Request(id) => sim.with(|state| state.get_request(id)),
        Route::ByIssuerId => {
            let issuer_request_id = query
                .iter()
                .find(|(key, _)| key == "issuer_request_id")
                .map(|(_, value)| value.as_str());
            match issuer_request_id {
                Some(id) if !id.is_empty() => sim.with(|state| state.get_by_issuer_id(id)),
                _ => Reply::error(422, "issuer_request_id is required"),
            }
        }
        Route::List => sim.with(|state| state.list(query)),
        Route::Unknown => Reply::error(404, "no such route"),
    }
}

/// A body whose first read fails, so async-h1 closes the connection after the headers.
struct Severed;

impl async_std::io::Read for Severed {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(severed()))
    }
}

impl async_std::io::BufRead for Severed {
    fn poll_fill_buf(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<&[u8]>> {
        Poll::Ready(Err(severed()))
    }

    fn consume(self: Pin<&mut Self>, _amt: usize) {}
}

fn severed() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "simulated dropped connection",
    )
}

/// Standard base64 with padding, enough to build the expected `Authorization` header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, sextet) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from(*sextet).unwrap_or(0);
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `/sim/...` answers only callers on this machine: it has no auth.
fn from_loopback(req: &Request<AppState>) -> bool {
    req.peer_addr()
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .is_some_and(|addr| addr.ip().is_loopback())
}

fn forbidden() -> Response {
    json_response(&Reply::error(
        403,
        "/sim routes answer loopback callers only",
    ))
}

async fn sim_state(req: Request<AppState>) -> tide::Result {
    if !from_loopback(&req) {
        return Ok(forbidden());
    }
    let snapshot = req.state().sim.snapshot();
    Ok(json_response(&Reply::ok(serde_json::to_value(snapshot)?)))
}

async fn get_faults(req: Request<AppState>) -> tide::Result {
    if !from_loopback(&req) {
        return Ok(forbidden());
    }
    let faults = req.state().sim.faults();
    Ok(json_response(&Reply::ok(serde_json::to_value(faults)?)))
}

async fn set_faults(mut req: Request<AppState>) -> tide::Result {
    if !from_loopback(&req) {
        return Ok(forbidden());
    }
    let raw = req.body_bytes().await?;
    let patch: FaultsPatch = match serde_json::from_slice(&raw) {
        Ok(patch) => patch,
        Err(err) => return Ok(json_response(&Reply::error(422, err.to_string()))),
    };
    let reply = match req.state().sim.patch_faults(&patch) {
        Ok(faults) => Reply::ok(serde_json::to_value(faults)?),
        Err(message) => Reply::error(422, message),
    };
    Ok(json_response(&reply))
}

async fn reset(req: Request<AppState>) -> tide::Result {
    if !from_loopback(&req) {
        return Ok(forbidden());
    }
    req.state().sim.reset();
    Ok(json_response(&Reply::ok(json!({}))))
}

async fn complete(req: Request<AppState>) -> tide::Result {
    settle(&req, RequestStatus::Completed)
}

async fn reject(req: Request<AppState>) -> tide::Result {
    settle(&req, RequestStatus::Rejected)
}

fn settle(req: &Request<AppState>, status: RequestStatus) -> tide::Result {
    if !from_loopback(req) {
        return Ok(forbidden());
    }
    let id = req.param("id")?.to_owned();
    let reply = req.state().sim.with(|state| state.settle(&id, status));
    Ok(json_response(&reply))
}

/// Records a mint request without calling the issuer (what `Sim::add_mint_request` does).
async fn add_mint_request(mut req: Request<AppState>) -> tide::Result {
    if !from_loopback(&req) {
        return Ok(forbidden());
    }
    let raw = req.body_bytes().await?;
    let mint: NewMint = match serde_json::from_slice(&raw) {
        Ok(mint) => mint,
        Err(err) => return Ok(json_response(&Reply::error(422, err.to_string()))),
    };
    let reply = match req.state().sim.add_mint_request(mint) {
        Ok(request) => Reply::ok(serde_json::to_value(request)?),
        Err(message) => Reply::error(409, message),
    };
    Ok(json_response(&reply))
}

async fn sim_mint(mut req: Request<AppState>) -> tide::Result {
    if !from_loopback(&req) {
        return Ok(forbidden());
    }
    let raw = req.body_bytes().await?;
    let script: MintScript = match serde_json::from_slice(&raw) {
        Ok(script) => script,
        Err(err) => return Ok(json_response(&Reply::error(422, err.to_string()))),
    };
    let state = req.state().clone();
    let sim = state.sim.clone();
    let http = state.http.clone();
    // reqwest must run on tokio: spawn there and await the join handle from async-std.
    let reply = match state.tokio.spawn(play_mint(sim, http, script)).await {
        Ok(reply) => reply,
        Err(err) => Reply::error(500, format!("mint task failed: {err}")),
    };
    Ok(json_response(&reply))
}
