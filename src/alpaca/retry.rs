//! The retry policy of every Broker API call, decided in this one place.

use std::time::Duration;

/// How often and how patiently a Broker API call is tried.
///
/// Retried: transport errors, timeouts, 5xx and 429 (waiting what `Retry-After` asks, up to
/// `retry_after_cap`). Never retried: any other status, because Alpaca treats a 4xx as final and the
/// same request would get the same answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total, the first included; 1 means no retry. 0 is treated as 1.
    pub attempts_max: u32,
    /// Backoff before the first retry; doubles on each further retry.
    pub backoff_base: Duration,
    /// No backoff grows beyond this.
    pub backoff_cap: Duration,
    /// Up to this share (percent, 0 to 100) of each backoff is taken off at random, so many
    /// clients failing together do not retry in lockstep. Values above 100 count as 100.
    pub jitter_percent: u8,
    /// A `Retry-After` longer than this is cut to it, so a confused server cannot park us for hours.
    pub retry_after_cap: Duration,
    /// Limit on one attempt, from sending to the last byte of the answer.
    pub attempt_timeout: Duration,
    /// How a 429 is honoured. `false`: by sleeping inside the call (a report, a one-off command).
    /// `true`: by scheduling, for the reconciler, whose Alpaca calls must never sleep for minutes:
    /// the client closes its gate for `Retry-After` (capped by `retry_after_cap`) and answers
    /// [`super::BrokerError::RateLimited`] at once, and every call while the gate is closed gets
    /// the same answer without being sent.
    pub defer_rate_limits: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts_max: 5,
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(10),
            jitter_percent: 50,
            retry_after_cap: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(15),
            defer_rate_limits: false,
        }
    }
}

/// How a retryable attempt failed. Other statuses are final and never reach the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No answer: connection refused or dropped, timeout, body cut short.
    Transport,
    /// Any 5xx.
    ServerError,
    /// 429, with the `Retry-After` seconds if the server sent them.
    TooManyRequests { retry_after: Option<Duration> },
}

impl RetryPolicy {
    /// The reconciler's policy: rate limits scheduled, not slept; short attempts, few retries,
    /// so one call never holds an Alpaca job for long.
    pub fn for_reconciler() -> Self {
        Self {
            attempts_max: 3,
            attempt_timeout: Duration::from_secs(10),
            defer_rate_limits: true,
            ..Self::default()
        }
    }

    /// Tries in total, never less than one.
    pub fn attempts(&self) -> u32 {
        self.attempts_max.max(1)
    }

    /// Whether to try again after attempt number `attempt` (1-based) failed this way, and after
    /// how long. `unit_random` in 0..=1 picks the jitter, so the decision itself is pure.
    pub fn next_delay(
        &self,
        attempt: u32,
        failure: AttemptFailure,
        jitter_draw_percent: u8,
    ) -> Option<Duration> {
        if attempt >= self.attempts() {
            return None;
        }
        match failure {
            AttemptFailure::TooManyRequests {
                retry_after: Some(wait),
            } => Some(wait.min(self.retry_after_cap)),
            AttemptFailure::Transport
            | AttemptFailure::ServerError
            | AttemptFailure::TooManyRequests { retry_after: None } => {
                Some(self.backoff(attempt, jitter_draw_percent))
            }
        }
    }

    /// Capped exponential backoff before retry number `retry` (1-based), less a jitter share:
    /// `jitter_draw_percent` (0 to 100) of the allowed `jitter_percent` is taken off.
    pub fn backoff(&self, retry: u32, jitter_draw_percent: u8) -> Duration {
        let doubling = 2u32.checked_pow(retry.saturating_sub(1));
        let full = doubling
            .and_then(|factor| self.backoff_base.checked_mul(factor))
            .map_or(self.backoff_cap, |delay| delay.min(self.backoff_cap));
        let jitter = u128::from(self.jitter_percent.min(100));
        let draw = u128::from(jitter_draw_percent.min(100));
        let full_ms = full.as_millis();
        // Taken off: full * jitter% * draw%; never more than `full`.
        let off_ms = full_ms.saturating_mul(jitter).saturating_mul(draw) / 10_000;
        let kept_ms = full_ms.saturating_sub(off_ms);
        Duration::from_millis(u64::try_from(kept_ms).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts_max: 4,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(350),
            jitter_percent: 50,
            retry_after_cap: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            defer_rate_limits: false,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let p = policy();
        assert_eq!(p.backoff(1, 0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0), Duration::from_millis(350));
        assert_eq!(p.backoff(40, 0), Duration::from_millis(350));
        assert_eq!(p.backoff(2, 100), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 50), Duration::from_millis(150));
    }

    #[test]
    fn retries_stop_when_attempts_run_out_and_retry_after_is_capped() {
        let p = policy();
        assert!(p.next_delay(1, AttemptFailure::Transport, 0).is_some());
        assert!(p.next_delay(3, AttemptFailure::ServerError, 0).is_some());
        assert!(p.next_delay(4, AttemptFailure::ServerError, 0).is_none());
        let wait = Some(Duration::from_secs(60));
        assert_eq!(
            p.next_delay(1, AttemptFailure::TooManyRequests { retry_after: wait }, 0),
            Some(Duration::from_secs(5))
        );
    }
}
