//! The one error type of the Broker API boundary.

/// Why a Broker API call did not give an answer the caller can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The client cannot be built as configured: a base URL that does not parse, an account id
    /// that cannot sit in a URL path, an HTTP client that fails to initialise.
    #[error("bad Broker API configuration: {0}")]
    BadConfig(String),
    /// The caller asked for something Alpaca would refuse, so it was not sent: an
    /// `Idempotency-Key` longer than 36 characters, a redeem `qty` with more than 9 decimals.
    #[error("invalid Broker API request: {0}")]
    InvalidRequest(String),
    /// The request could not be sent for a reason a retry cannot fix (reqwest refused to build it).
    /// Connection failures and timeouts are retried and end as [`BrokerError::RetriesExhausted`].
    #[error("Broker API transport error: {0}")]
    Transport(String),
    /// Alpaca answered with a final status (any 4xx but 429, or an unexpected non-error status
    /// such as a 204 where only 200 counts). Not retried: the same request would get the same answer.
    #[error("Broker API answered {status}: {message} (code {code:?})")]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Every allowed attempt met a retryable failure (transport error, timeout, 5xx, 429). `last`
    /// describes the final one. The request may or may not have taken effect at Alpaca.
    #[error("Broker API still failing after {attempts} attempts; last: {last}")]
    RetriesExhausted { attempts: u32, last: String },
    /// Alpaca asked us to slow down (429) and the client schedules rather than sleeps
    /// ([`super::RetryPolicy::defer_rate_limits`]): not sent (or answered 429); try again after
    /// `retry_after_ms`. Nothing happened at Alpaca.
    #[error("Broker API rate limit: not before {retry_after_ms} ms from now")]
    RateLimited { retry_after_ms: u64 },
    /// A success answer whose body is not the JSON we expect.
    #[error("cannot decode Broker API answer: {0}")]
    Decode(String),
}
