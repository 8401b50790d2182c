//! The Fireblocks simulator's HTTP side: the API routes (authenticated, with faults) and the
//! unauthenticated `/sim/...` control routes.

use super::{FireblocksFaults, FireblocksSim, Reply};
use std::future::Future;
use tide::{Request, Response, StatusCode};

/// Serves the simulator on `listener` until `shutdown` resolves. Binds nothing itself.
pub async fn serve(
    listener: std::net::TcpListener,
    sim: FireblocksSim,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = async_std::net::TcpListener::from(listener);
    let mut app = tide::with_state(sim);
    app.at("/v1/*rest").get(api).post(api);
    app.at("/sim/state").get(state);
    app.at("/sim/faults").post(faults);
    tokio::select! {
        served = crate::http::listen::serve_app(listener, app) => served,
        () = shutdown => Ok(()),
    }
}

fn respond(reply: &Reply) -> Response {
    Response::builder(StatusCode::try_from(reply.status).unwrap_or(StatusCode::BadGateway))
        .content_type(tide::http::mime::JSON)
        .body(reply.body.to_string())
        .build()
}

/// Every API route: maybe fail, authenticate, serve.
async fn api(mut req: Request<FireblocksSim>) -> tide::Result {
    let sim = req.state().clone();
    let body = req.body_bytes().await?;
    let url = req.url();
    let uri = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let path = url.path().to_owned();
    if sim.take_failure() {
        return Ok(respond(&Reply::error(503, 1500, "simulated outage")));
    }
    let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
    if let Err(reason) = sim.authenticate(
        header("X-API-Key").as_deref(),
        header("Authorization").as_deref(),
        &uri,
        &body,
    ) {
        return Ok(respond(&Reply::error(401, -7, reason)));
    }
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let reply = match (req.method(), segments.as_slice()) {
        (
            tide::http::Method::Get,
            ["v1", "vault", "accounts", vault, asset, "addresses_paginated"],
        ) => sim.addresses(vault, asset),
        (tide::http::Method::Post, ["v1", "transactions"]) => sim.create(&body),
        (tide::http::Method::Get, ["v1", "transactions", "external_tx_id", external]) => {
            sim.get_by_external(external)
        }
        (tide::http::Method::Get, ["v1", "transactions", id]) => sim.get(id),
        (method, _) => Reply::error(404, 1, format!("no route {method} {path}")),
    };
    Ok(respond(&reply))
}

async fn state(req: Request<FireblocksSim>) -> tide::Result {
    Ok(respond(&Reply::ok(serde_json::to_value(
        req.state().snapshot(),
    )?)))
}

async fn faults(mut req: Request<FireblocksSim>) -> tide::Result {
    let faults: FireblocksFaults = match req.body_json().await {
        Ok(f) => f,
        Err(e) => return Ok(respond(&Reply::error(400, 1, format!("faults: {e}")))),
    };
    req.state().set_faults(faults.clone());
    Ok(respond(&Reply::ok(serde_json::to_value(faults)?)))
}

fn percent_decode(segment: &str) -> String {
    let mut out = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        let escaped = (first == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            rest = tail.get(2..).unwrap_or_default();
        } else {
            out.push(first);
            rest = tail;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
