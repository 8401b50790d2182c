//! [`BrokerClient`]: the Broker API over reqwest, with HTTP Basic auth and the [`RetryPolicy`].

use super::retry::{AttemptFailure, RetryPolicy};
use super::wire::{ApiError, MintCallback, RedeemRequest, RequestFilter, TokenizationRequest};
use super::{Broker, BrokerError};
use rand::Rng;
use reconciler::ids::{IssuerRequestId, TokenizationRequestId};
use reconciler::qty::ALPACA_DECIMALS;
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Longest `Idempotency-Key` Alpaca accepts: it announced a 36-character maximum (a UUID), down
/// from 128.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 36;

/// Where and as whom the client talks to Alpaca.
#[derive(Clone)]
pub struct BrokerConfig {
    /// Scheme and host, e.g. `https://broker-api.sandbox.alpaca.markets` (sandbox and production
    /// differ, and tests point it at the simulator).
    pub base_url: String,
    /// The issuer's tokenization account at Alpaca: the `{account_id}` of every path.
    pub account_id: String,
    /// HTTP Basic user.
    pub api_key: String,
    /// HTTP Basic password; never printed.
    pub api_secret: String,
    pub retry: RetryPolicy,
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("base_url", &self.base_url)
            .field("account_id", &self.account_id)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

/// The Broker API client. Cheap to clone (reqwest's pool is shared).
#[derive(Clone)]
pub struct BrokerClient {
    /// How a call reaches Alpaca: HTTP, or the simulator in the same process (pass tests).
    transport: Arc<dyn Transport>,
    retry: RetryPolicy,
    /// With [`RetryPolicy::defer_rate_limits`]: no call is sent before this instant (Alpaca's
    /// last `Retry-After`). Shared by every clone, as the limit is Alpaca's for the whole account.
    gate: Arc<Mutex<Option<Instant>>>,
}

impl fmt::Debug for BrokerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerClient")
            .field("transport", &self.transport)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// One Broker API call as the client makes it, before any wire: `path` is relative to
/// `/v1/accounts/{account_id}/tokenization/`.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub idempotency_key: Option<&'a str>,
    /// A JSON body.
    pub body: Option<&'a [u8]>,
}

/// How a call reaches Alpaca and its answer comes back. `Err` is a transport failure (no
/// answer: refused, reset, cut mid-body), described for the logs.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    async fn exchange(&self, call: &Exchange<'_>) -> Result<Answer, String>;
}

/// The Broker API over HTTP with Basic auth.
struct HttpTransport {
    http: reqwest::Client,
    /// `{base}/v1/accounts/{account_id}/tokenization`, checked once at construction.
    prefix: String,
    api_key: String,
    api_secret: String,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("prefix", &self.prefix)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn exchange(&self, call: &Exchange<'_>) -> Result<Answer, String> {
        let url = format!("{}/{}", self.prefix, call.path);
        let mut builder = self
            .http
            .request(call.method.clone(), &url)
            .basic_auth(&self.api_key, Some(&self.api_secret))
            .header(header::ACCEPT, "application/json");
        if !call.query.is_empty() {
            builder = builder.query(call.query);
        }
        if let Some(key) = call.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(bytes) = call.body {
            builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes.to_vec());
        }
        let response = builder.send().await.map_err(|err| describe(&err))?;
        let status = response.status();
        let retry_after = retry_after(response.headers().get(header::RETRY_AFTER));
        let body = response.bytes().await.map_err(|err| describe(&err))?;
        Ok(Answer {
            status,
            retry_after,
            body: body.to_vec(),
        })
    }
}

/// What Alpaca answered: a status and its whole body (`Retry-After` is only read for a 429).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, BrokerError> {
        serde_json::from_slice(&self.body)
            .map_err(|err| BrokerError::Decode(format!("{err}; body: {}", snippet(&self.body))))
    }

    fn api_error(&self) -> ApiError {
        serde_json::from_slice::<ApiError>(&self.body).unwrap_or_else(|_| ApiError {
            code: None,
            message: snippet(&self.body),
        })
    }

    fn status_error(&self) -> BrokerError {
        let ApiError { code, message } = self.api_error();
        BrokerError::Status {
            status: self.status.as_u16(),
            code,
            message,
        }
    }
}

/// The start of a body, for error messages (never the whole of a large body).
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

impl BrokerClient {
    pub fn new(config: BrokerConfig) -> Result<Self, BrokerError> {
        let base = config.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(base)
            .map_err(|err| BrokerError::BadConfig(format!("base_url {base:?}: {err}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(BrokerError::BadConfig(format!(
                "base_url {base:?} must be an http(s) URL with a host"
            )));
        }
        let account_ok = !config.account_id.is_empty()
            && config
                .account_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !account_ok {
            return Err(BrokerError::BadConfig(format!(
                "account_id {:?} must be non-empty [A-Za-z0-9_-]",
                config.account_id
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.retry.attempt_timeout)
            .timeout(config.retry.attempt_timeout)
            .build()
            .map_err(|err| BrokerError::BadConfig(format!("HTTP client: {err}")))?;
        let transport = HttpTransport {
            http,
            prefix: format!("{base}/v1/accounts/{}/tokenization", config.account_id),
            api_key: config.api_key,
            api_secret: config.api_secret,
        };
        Ok(Self::with_transport(Arc::new(transport), config.retry))
    }

    /// A client whose calls go through `transport` (the simulator in-process, in pass tests),
    /// with the same retries, rate-limit gate and decoding as over HTTP.
    pub fn with_transport(transport: Arc<dyn Transport>, retry: RetryPolicy) -> Self {
        Self {
            transport,
            retry,
            gate: Arc::new(Mutex::new(None)),
        }
    }

    /// Sends one logical call, retrying per [`RetryPolicy`], and returns the first answer that is
    /// not retried (success or final error status).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, BrokerError> {
        self.call_with(method, path, query, body, idempotency_key, true)
            .await
    }

    /// [`Self::call`], choosing whether a transport failure (no answer: the call may or may not
    /// have taken effect) is retried here. A call without an idempotency key must not be: its
    /// caller asks Alpaca what happened before sending again.
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        idempotency_key: Option<&str>,
        retry_transport: bool,
    ) -> Result<Answer, BrokerError> {
        let mut attempt: u32 = 0;
        if let Some(wait) = self.gate_closed_for() {
            return Err(BrokerError::RateLimited {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
        }
        loop {
            attempt = attempt.saturating_add(1);
            let exchange = Exchange {
                method: &method,
                path,
                query,
                idempotency_key,
                body: body.as_deref(),
            };
            let started = Instant::now();
            let tried = self.attempt(&exchange).await;
            record_call(path, &tried, started.elapsed());
            let (failure, last) = match tried {
                Ok(answer) => match classify(&answer) {
                    None => return Ok(answer),
                    // A 5xx may come from a gateway after Alpaca acted: as ambiguous as no
                    // answer, so a call that must not repeat returns it instead of retrying.
                    Some(AttemptFailure::ServerError) if !retry_transport => {
                        return Err(answer.status_error());
                    }
                    Some(failure) => {
                        let last = format!("{} {}", answer.status, snippet(&answer.body));
                        (failure, last)
                    }
                },
                Err(description) if !retry_transport => {
                    return Err(BrokerError::Transport(description));
                }
                Err(description) => (AttemptFailure::Transport, description),
            };
            let draw: u8 = rand::thread_rng().gen_range(0..=100);
            if let (AttemptFailure::TooManyRequests { retry_after }, true) =
                (failure, self.retry.defer_rate_limits)
            {
                let wait = retry_after
                    .unwrap_or_else(|| self.retry.backoff(attempt, draw))
                    .min(self.retry.retry_after_cap);
                self.close_gate(wait);
                tracing::warn!(%method, path, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "Broker API rate limit: calls wait instead of sleeping");
                return Err(BrokerError::RateLimited {
                    retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                });
            }
            let Some(delay) = self.retry.next_delay(attempt, failure, draw) else {
                return Err(BrokerError::RetriesExhausted {
                    attempts: attempt,
                    last,
                });
            };
            tracing::warn!(
                %method, path, attempt, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                last = %last, "Broker API call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// How long the rate-limit gate stays closed, if it is.
    fn gate_closed_for(&self) -> Option<Duration> {
        let gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        gate.and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    fn close_gate(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gate = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        if gate.is_none_or(|current| current < until) {
            *gate = Some(until);
        }
    }

    /// One try: send and read the whole body within the attempt timeout. A body cut short counts
    /// as a transport failure like a refused connection.
    async fn attempt(&self, exchange: &Exchange<'_>) -> Result<Answer, String> {
        let timeout = self.retry.attempt_timeout;
        let exchange = self.transport.exchange(exchange);
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
            Ok(result) => result,
        }
    }
}

/// One attempt in the metrics: its route (the path template, not the id in it), what came of it
/// and how long it took.
fn record_call(path: &str, tried: &Result<Answer, String>, took: Duration) {
    let route = if path.starts_with("requests/") {
        "requests/{id}"
    } else {
        path
    };
    let outcome = match tried {
        Err(_) => "transport",
        Ok(answer) if answer.status.is_success() => "ok",
        Ok(answer) if answer.status == StatusCode::TOO_MANY_REQUESTS => "429",
        Ok(answer) if answer.status.is_server_error() => "5xx",
        Ok(_) => "4xx",
    };
    crate::metrics::metrics().alpaca_call(route, outcome, took.as_secs_f64());
    crate::metrics::alpaca_answered(matches!(outcome, "ok" | "4xx"));
}

/// `Retry-After` in its seconds form; the HTTP-date form falls back to our own backoff.
fn retry_after(value: Option<&header::HeaderValue>) -> Option<Duration> {
    let secs = value?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs))
}

/// `None`: the answer is final (success or a status not worth retrying).
fn classify(answer: &Answer) -> Option<AttemptFailure> {
    if answer.status == StatusCode::TOO_MANY_REQUESTS {
        return Some(AttemptFailure::TooManyRequests {
            retry_after: answer.retry_after,
        });
    }
    if answer.status.is_server_error() {
        return Some(AttemptFailure::ServerError);
    }
    None
}

/// reqwest's error with its causes, which name the real reason (refused, reset, timed out).
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, BrokerError> {
    serde_json::to_vec(value).map_err(|err| BrokerError::InvalidRequest(err.to_string()))
}

impl Broker for BrokerClient {
    async fn mint_callback(&self, callback: &MintCallback) -> Result<(), BrokerError> {
        let body = to_json(callback)?;
        // No idempotency key on this call: 5xx and 429 (nothing done) are retried here, but a lost
        // answer is not; the reconciler asks Alpaca first before it sends again.
        let answer = self
            .call_with(Method::POST, "callback/mint", &[], Some(body), None, false)
            .await?;
        if answer.status == StatusCode::OK {
            Ok(())
        } else {
            Err(answer.status_error())
        }
    }

    async fn redeem(
        &self,
        request: &RedeemRequest,
        idempotency_key: &str,
    ) -> Result<TokenizationRequest, BrokerError> {
        if idempotency_key.is_empty() || idempotency_key.len() > IDEMPOTENCY_KEY_LEN_MAX {
            return Err(BrokerError::InvalidRequest(format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} characters, got {}",
                idempotency_key.len()
            )));
        }
        if !idempotency_key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BrokerError::InvalidRequest(
                "Idempotency-Key must be printable ASCII without spaces".to_owned(),
            ));
        }
        let (_, dust) = request.qty.truncate_to(ALPACA_DECIMALS);
        if !dust.is_zero() {
            return Err(BrokerError::InvalidRequest(format!(
                "qty {} has more than {ALPACA_DECIMALS} decimals; truncate it and return the dust",
                request.qty
            )));
        }
        let body = to_json(request)?;
        let answer = self
            .call(
                Method::POST,
                "callback/redeem",
                &[],
                Some(body),
                Some(idempotency_key),
            )
            .await?;
        if answer.status.is_success() {
            answer.decode()
        } else {
            // Every final refusal goes back with Alpaca's code and message: the caller looks the
            // request up and decides (`reconciler::refusal::redeem_refusal`).
            Err(answer.status_error())
        }
    }

    async fn request(
        &self,
        id: &TokenizationRequestId,
    ) -> Result<Option<TokenizationRequest>, BrokerError> {
        let path = format!("requests/{}", id.as_str());
        let answer = self.call(Method::GET, &path, &[], None, None).await?;
        optional(&answer)
    }

    async fn request_by_issuer_id(
        &self,
        id: &IssuerRequestId,
    ) -> Result<Option<TokenizationRequest>, BrokerError> {
        let query = [("issuer_request_id", id.as_str())];
        let answer = self
            .call(
                Method::GET,
                "requests:by_issuer_request_id",
                &query,
                None,
                None,
            )
            .await?;
        optional(&answer)
    }

    async fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> Result<Vec<TokenizationRequest>, BrokerError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(kind) = filter.kind {
            query.push(("type", kind.as_str()));
        }
        if let Some(status) = filter.status {
            query.push(("status", status.as_str()));
        }
        if let Some(after) = &filter.after {
            query.push(("after", after));
        }
        if let Some(before) = &filter.before {
            query.push(("before", before));
        }
        let answer = self
            .call(Method::GET, "requests", &query, None, None)
            .await?;
        if answer.status.is_success() {
            answer.decode()
        } else {
            Err(answer.status_error())
        }
    }
}

/// 200 with a request, 404 as "not there (yet)"; anything else is an error.
fn optional(answer: &Answer) -> Result<Option<TokenizationRequest>, BrokerError> {
    if answer.status.is_success() {
        answer.decode().map(Some)
    } else if answer.status == StatusCode::NOT_FOUND {
        Ok(None)
    } else {
        Err(answer.status_error())
    }
}
