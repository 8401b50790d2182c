//! Who may call a route: the peer address allowlist, the key header (constant-time), the
//! failed-attempt limit, and the body size limit, checked in that order before any handler runs.

use super::{AlpacaAuth, AppState, HttpError, INVALID_PAYLOAD};
use async_std::io::ReadExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tide::{Middleware, Next, Request, StatusCode};

/// Which key and allowlist a route is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RouteKind {
    Alpaca,
    Operator,
    /// `/metrics`: the operators' allowlist and no key, as Prometheus scrapers expect.
    Scrape,
}

impl RouteKind {
    fn header(self) -> &'static str {
        match self {
            RouteKind::Alpaca => "X-API-KEY",
            RouteKind::Operator | RouteKind::Scrape => "X-OPERATOR-KEY",
        }
    }
}

/// The per-route middleware: admits a request or answers the refusal itself.
pub(super) struct Guard {
    kind: RouteKind,
}

impl Guard {
    pub(super) fn new(kind: RouteKind) -> Guard {
        Guard { kind }
    }

    async fn admit(&self, req: &mut Request<AppState>) -> Result<(), HttpError> {
        let state = req.state().clone();
        let config = state.config();
        // The TCP peer, never a forwarding header: a header is whatever the caller wants it to be.
        let ip = req
            .peer_addr()
            .and_then(|p| p.parse::<SocketAddr>().ok())
            .map(|p| p.ip().to_canonical())
            .ok_or(HttpError::Forbidden)?;
        // One scheme per route: a key, or (Alpaca's routes, when configured) a signature instead.
        let (allow, key, signatures, limiter) = match (self.kind, &config.alpaca_auth) {
            (RouteKind::Alpaca, AlpacaAuth::ApiKey(key)) => (
                &config.alpaca_allow,
                Some(key),
                None,
                &state.inner.alpaca_failures,
            ),
            (RouteKind::Alpaca, AlpacaAuth::Signatures(signatures)) => (
                &config.alpaca_allow,
                None,
                Some(signatures),
                &state.inner.alpaca_failures,
            ),
            (RouteKind::Operator, _) => (
                &config.operator_allow,
                Some(&config.operator_api_key),
                None,
                &state.inner.operator_failures,
            ),
            (RouteKind::Scrape, _) => (
                &config.operator_allow,
                None,
                None,
                &state.inner.operator_failures,
            ),
        };
        if !allow.iter().any(|net| net.contains(&ip)) {
            return Err(HttpError::Forbidden);
        }
        let now = Instant::now();
        limiter.check(ip, now)?;
        if let Some(key) = key {
            let given = req
                .header(self.kind.header())
                .map(|v| v.last().as_str().to_owned());
            let matches =
                given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.expose().as_bytes())));
            if !matches {
                limiter.record_failure(ip, now);
                tracing::warn!(%ip, route = %req.url().path(), "http: failed authentication");
                return Err(HttpError::Unauthorized);
            }
        }
        let limit_bytes = config.body_limit_bytes;
        if req.len().is_some_and(|len| len > limit_bytes) {
            return Err(HttpError::BodyTooLarge { limit_bytes });
        }
        // Content-Length may be absent (chunked) or lie: read at most one byte past the limit.
        let read_max = u64::try_from(limit_bytes)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut bytes = Vec::new();
        req.take_body()
            .take(read_max)
            .read_to_end(&mut bytes)
            .await
            .map_err(|_| HttpError::Unprocessable(INVALID_PAYLOAD.into()))?;
        if bytes.len() > limit_bytes {
            return Err(HttpError::BodyTooLarge { limit_bytes });
        }
        // Every body we take is JSON, and says so: anything else is refused before it is parsed.
        if !bytes.is_empty() && !is_json(req.content_type().map(|m| m.essence().to_owned())) {
            return Err(HttpError::UnsupportedMediaType);
        }
        if let Some(signatures) = signatures {
            // `@target-uri` as Alpaca addressed us: the configured public URL with this path and
            // query, never the Host header (whatever the caller wants it to be).
            let target = signatures.target_uri(req.url().path(), req.url().query());
            let header = |name: &str| req.header(name).map(|v| v.last().as_str().to_owned());
            let (content_type, digest, input, signature) = (
                header("content-type"),
                header("content-digest"),
                header("signature-input"),
                header("signature"),
            );
            let method = req.method().to_string();
            let signed = super::signature::Signed {
                method: &method,
                target_uri: &target,
                content_type: content_type.as_deref(),
                content_digest: digest.as_deref(),
                signature_input: input.as_deref(),
                signature: signature.as_deref(),
                body: &bytes,
            };
            let now_secs = req.state().clock().unix_secs();
            if let Err(e) = super::signature::verify(signatures, &signed, now_secs) {
                limiter.record_failure(ip, now);
                tracing::warn!(%ip, route = %req.url().path(), error = %e, "http: signature refused");
                return Err(HttpError::BadSignature(e.to_string()));
            }
        }
        req.set_body(bytes);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Middleware<AppState> for Guard {
    async fn handle(&self, mut req: Request<AppState>, next: Next<'_, AppState>) -> tide::Result {
        match self.admit(&mut req).await {
            Ok(()) => Ok(next.run(req).await),
            Err(refusal) => Ok(refusal.into_response()),
        }
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`), any case.
fn is_json(essence: Option<String>) -> bool {
    essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json"))
}

/// Gives tide's own empty 404 (unknown route) and 405 (known route, other method) a JSON body,
/// so every answer of ours is `{"error": ...}`.
pub(super) fn json_fallback<'a>(
    req: Request<AppState>,
    next: Next<'a, AppState>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = tide::Result> + Send + 'a>> {
    Box::pin(async move {
        let response = next.run(req).await;
        let empty = response.len() == Some(0);
        Ok(match response.status() {
            StatusCode::NotFound if empty => {
                HttpError::NotFound("not found".into()).into_response()
            }
            StatusCode::MethodNotAllowed if empty => {
                let mut answer = super::json(
                    StatusCode::MethodNotAllowed,
                    &serde_json::json!({ "error": "method not allowed" }),
                );
                if let Some(allow) = response.header("Allow") {
                    answer.insert_header("Allow", allow);
                }
                answer
            }
            _ => response,
        })
    })
}

/// Most client IPs remembered: beyond it the oldest window is forgotten, so a flood of sources
/// cannot grow memory without bound (the allowlist already limits who gets this far).
const TRACKED_IPS_MAX: usize = 4096;

/// Counts failed authentications per IP in a fixed window; at `max` failures the IP is refused
/// (429) until its window ends, right key or not.
///
/// A std mutex, not an async one: the critical section is a hash map update that never awaits.
pub(super) struct FailureLimiter {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailureLimiter {
    pub(super) fn per_minute(max: u32) -> FailureLimiter {
        FailureLimiter {
            max,
            window: Duration::from_secs(60),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(TooManyFailures)` while `ip` has used up its failures in the current window.
    pub(super) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), HttpError> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&ip) {
            Some(w)
                if w.failures >= self.max
                    && now.saturating_duration_since(w.started) < self.window =>
            {
                let left = self
                    .window
                    .saturating_sub(now.saturating_duration_since(w.started));
                Err(HttpError::TooManyFailures {
                    retry_after_secs: left.as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    pub(super) fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if !entries.contains_key(&ip) && entries.len() >= TRACKED_IPS_MAX {
            let window = self.window;
            entries.retain(|_, w| now.saturating_duration_since(w.started) < window);
            if entries.len() >= TRACKED_IPS_MAX {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(ip, _)| *ip);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        let entry = entries.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.saturating_duration_since(entry.started) >= self.window {
            *entry = Window {
                started: now,
                failures: 0,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_max_failures_until_the_window_ends() {
        let limiter = FailureLimiter::per_minute(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(ip, t0).is_ok());
            limiter.record_failure(ip, t0);
        }
        assert!(matches!(
            limiter.check(ip, t0),
            Err(HttpError::TooManyFailures { .. })
        ));
        assert!(limiter.check(other, t0).is_ok(), "limits are per IP");
        let later = t0 + Duration::from_secs(59);
        assert!(limiter.check(ip, later).is_err());
        let after = t0 + Duration::from_secs(60);
        assert!(limiter.check(ip, after).is_ok());
        limiter.record_failure(ip, after);
        assert!(
            limiter.check(ip, after).is_ok(),
            "a new window starts counting from zero"
        );
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = FailureLimiter::per_minute(10);
        let t0 = Instant::now();
        for i in 0..(u32::try_from(TRACKED_IPS_MAX).unwrap() + 100) {
            limiter.record_failure(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(limiter.entries.lock().unwrap().len() <= TRACKED_IPS_MAX);
    }
}
