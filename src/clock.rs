//! Wall-clock time, read in one place: Unix seconds and milliseconds for records, ages and
//! signatures' freshness. A clock before 1970 reads as 0, which only makes every age generous.
//!
//! Code whose timestamps a test must control (the pass, its Alpaca jobs, the HTTP layer) reads
//! time through a [`Clock`] it is given; waits and backoffs use tokio's clock, which such a test
//! controls too. The rest (metrics, the CLI, the simulators) reads the machine's clock here.

use std::sync::Arc;

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix milliseconds now.
    fn unix_ms(&self) -> u64;

    /// Unix seconds now.
    fn unix_secs(&self) -> u64 {
        self.unix_ms() / 1000
    }
}

/// The machine's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        unix_now_ms()
    }
}

/// The system clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that starts at a given Unix time and then follows tokio's clock: under
/// `tokio::time::pause` it moves only when the test's time does.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_unix_ms: u64,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(unix_ms: u64) -> TokioClock {
        TokioClock {
            start_unix_ms: unix_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn unix_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.start_unix_ms.saturating_add(elapsed)
    }
}

/// Unix seconds now, from the machine's clock.
pub fn unix_now() -> u64 {
    since_epoch().as_secs()
}

/// Unix milliseconds now, from the machine's clock.
pub fn unix_now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// The machine's clock as time since the Unix epoch: the one place it is read (the simulator
/// wants its microseconds).
pub fn since_epoch() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}
