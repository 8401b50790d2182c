//! The simulator's switchable misbehaviour: what the Broker API routes do wrong, set through
//! `POST /sim/faults` (only the fields given change).

use serde::{Deserialize, Serialize};

/// What Alpaca's journal does with a redeem request once it has been polled enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedeemOutcome {
    #[default]
    Completed,
    Rejected,
    /// Stays pending until `POST /sim/requests/:id/complete` or `/reject`.
    Manual,
}

/// How a request without a transaction hash shows its `tx_hash`: Alpaca has been seen to send all
/// three, and the client must take each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PendingTxHash {
    /// `"tx_hash": ""`
    #[default]
    Empty,
    /// `"tx_hash": null`
    Null,
    /// no `tx_hash` field
    Absent,
}

/// Switchable misbehaviour of the Broker API routes (never of `/sim/...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of Broker API calls answered 503, 0 to 1.
    pub error_rate_5xx: f64,
    /// Share of Broker API calls answered 429 with `Retry-After: retry_after_secs`, 0 to 1.
    pub rate_429: f64,
    pub retry_after_secs: u64,
    /// Added before every Broker API answer.
    pub latency_ms: u64,
    /// Share of Broker API calls whose answer is lost: the call takes effect, the status line and
    /// headers go out, then the connection is closed in the middle of the body. (tide gives a
    /// handler no way to close a socket before answering; a body cut short is the nearest, and
    /// it is the dangerous case anyway: the effect happened but the caller cannot know.)
    pub drop_connections_rate: f64,
    pub redeem_outcome: RedeemOutcome,
    /// GETs of a redeem request that still see `pending` before the outcome applies.
    pub redeem_complete_after_polls: u32,
    pub pending_tx_hash: PendingTxHash,
    /// Answer every mint callback with this final refusal (nothing recorded as completed).
    pub refuse_mint_callback: Option<Refusal>,
    /// Answer every redeem call with this final refusal (no request created).
    pub refuse_redeem: Option<Refusal>,
}

/// A final refusal the simulator answers instead of serving a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate_5xx: 0.0,
            rate_429: 0.0,
            retry_after_secs: 1,
            latency_ms: 0,
            drop_connections_rate: 0.0,
            redeem_outcome: RedeemOutcome::Completed,
            redeem_complete_after_polls: 1,
            pending_tx_hash: PendingTxHash::Empty,
            refuse_mint_callback: None,
            refuse_redeem: None,
        }
    }
}

/// Body of `POST /sim/faults`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub error_rate_5xx: Option<f64>,
    pub rate_429: Option<f64>,
    pub retry_after_secs: Option<u64>,
    pub latency_ms: Option<u64>,
    pub drop_connections_rate: Option<f64>,
    pub redeem_outcome: Option<RedeemOutcome>,
    pub redeem_complete_after_polls: Option<u32>,
    pub pending_tx_hash: Option<PendingTxHash>,
    /// Absent: unchanged; `null`: cleared; a refusal: set.
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "some_or_null")]
    pub refuse_mint_callback: Option<Option<Refusal>>,
    /// Absent: unchanged; `null`: cleared; a refusal: set.
    #[allow(clippy::option_option)]
    #[serde(default, deserialize_with = "some_or_null")]
    pub refuse_redeem: Option<Option<Refusal>>,
}

/// A patch field that may be absent (unchanged), `null` (cleared) or a value (set): the three
/// cases are exactly what `Option<Option<T>>` spells.
#[allow(clippy::option_option)]
fn some_or_null<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

impl Faults {
    /// Applies a patch, refusing rates outside 0..=1 (and NaN) so a dice roll can never misbehave.
    pub fn patched(&self, patch: &FaultsPatch) -> Result<Faults, String> {
        let rate = |name: &str, value: Option<f64>, old: f64| match value {
            None => Ok(old),
            Some(v) if (0.0..=1.0).contains(&v) => Ok(v),
            Some(v) => Err(format!("{name} must be between 0 and 1, got {v}")),
        };
        Ok(Faults {
            error_rate_5xx: rate("error_rate_5xx", patch.error_rate_5xx, self.error_rate_5xx)?,
            rate_429: rate("rate_429", patch.rate_429, self.rate_429)?,
            retry_after_secs: patch.retry_after_secs.unwrap_or(self.retry_after_secs),
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            drop_connections_rate: rate(
                "drop_connections_rate",
                patch.drop_connections_rate,
                self.drop_connections_rate,
            )?,
            redeem_outcome: patch.redeem_outcome.unwrap_or(self.redeem_outcome),
            redeem_complete_after_polls: patch
                .redeem_complete_after_polls
                .unwrap_or(self.redeem_complete_after_polls),
            pending_tx_hash: patch.pending_tx_hash.unwrap_or(self.pending_tx_hash),
            refuse_mint_callback: patch
                .refuse_mint_callback
                .clone()
                .unwrap_or_else(|| self.refuse_mint_callback.clone()),
            refuse_redeem: patch
                .refuse_redeem
                .clone()
                .unwrap_or_else(|| self.refuse_redeem.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rates_outside_0_to_1_are_refused() {
        let patch = FaultsPatch {
            error_rate_5xx: Some(1.5),
            ..FaultsPatch::default()
        };
        assert!(Faults::default().patched(&patch).is_err());
        let patch = FaultsPatch {
            rate_429: Some(f64::NAN),
            ..FaultsPatch::default()
        };
        assert!(Faults::default().patched(&patch).is_err());
    }
}
