//! Prometheus metrics (`GET /metrics`, the text format of the `prometheus-client` crate).
//!
//! One registry for the process, reached through [`metrics`]: the HTTP layer, the pass, the
//! Alpaca client and its jobs record into it without every constructor carrying a handle (the
//! registry is the one piece of process-wide state, as Prometheus clients conventionally keep
//! it). Names follow Prometheus conventions: `issuer_..._total` counters, base units (`_seconds`,
//! `_blocks`, `_shares`). Recording is a few atomic operations; [`set_enabled`] turns it off, which
//! only the benchmark does, to print what it costs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// An outcome and why (`accepted`/`created`, `refused`/`invalid_wallet`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
    pub reason: String,
}

/// A state of an item (`pending`, `journaled`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// A Broker API route (its path template) and what came of the call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub route: String,
    pub outcome: String,
}

/// A Broker API route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// One of our vaults.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultLabels {
    pub vault: String,
}

/// One asset: an underlying on a network.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AssetLabels {
    pub underlying: String,
    pub network: String,
}

/// The kind of item an operator must look at.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Every metric the issuer exports.
pub struct Metrics {
    registry: Registry,
    /// `issuer_intents_total{outcome, reason}`: mint requests accepted (created, repeat) and
    /// refused (by the refusal table's rule).
    pub intents: Family<OutcomeLabels, Counter>,
    /// `issuer_mints{state}`: active mints by state, as of the last pass.
    pub mints: Family<StateLabels, Gauge>,
    /// `issuer_redemptions{state}`: redemptions not yet final, by state, as of the last pass.
    pub redemptions: Family<StateLabels, Gauge>,
    /// `issuer_pass_duration_seconds`.
    pub pass_duration: Histogram,
    /// `issuer_passes_total{outcome}`: passes that finished or failed.
    pub passes: Family<OutcomeLabels, Counter>,
    /// `issuer_chain_head_block`: the head the last pass saw.
    pub chain_head: Gauge,
    /// `issuer_scan_lag_blocks{vault}`: head minus the last block scanned.
    pub scan_lag: Family<VaultLabels, Gauge>,
    /// `issuer_scan_age_seconds{vault}`: time since the vault's last successful scan.
    pub scan_age: Family<VaultLabels, Gauge>,
    /// Unix seconds of each vault's last successful scan (the age is computed at scrape time).
    scanned_at: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// `issuer_transactions_in_flight`: our transactions not yet settled.
    pub txs_in_flight: Gauge,
    /// `issuer_transaction_oldest_age_blocks`: blocks since the oldest unsettled one was signed.
    pub tx_oldest_age: Gauge,
    /// `issuer_transactions_resent_total`: pending transactions of ours sent again as they were,
    /// after a block that had room for them left them out (a node that loses them shows here).
    pub txs_resent: Counter,
    /// `issuer_alpaca_calls_total{route, outcome}`.
    pub alpaca_calls: Family<CallLabels, Counter>,
    /// `issuer_alpaca_call_duration_seconds{route}`.
    pub alpaca_latency: Family<RouteLabels, Histogram>,
    /// `issuer_confirm_to_callback_seconds`: from Alpaca's journal confirmation to its
    /// acknowledgement of our mint callback.
    pub confirm_to_callback: Histogram,
    /// `issuer_stuck_items{kind}`: items waiting for an operator.
    pub stuck: Family<KindLabels, Gauge>,
    /// `issuer_asset_supply_shares{underlying, network}`: the vault's total supply (whole shares,
    /// for dashboards; the audit report holds the exact figure).
    pub supply: Family<AssetLabels, Gauge<f64, AtomicU64>>,
    /// `issuer_store_commits_total`: the store's group commits that reached the disk.
    pub store_commits: Counter,
    /// `issuer_store_committed_writes_total`: writes (an issuance, a pass's record, ...) those
    /// commits carried; divided by the commits, how many writes share one fsync.
    pub store_writes: Counter,
    /// `issuer_store_commit_duration_seconds`: one group commit, its writes and its fsyncs.
    pub store_commit_duration: Histogram,
}

static ENABLED: AtomicBool = AtomicBool::new(true);
/// Unix seconds of the reconciler loop's last turn; 0 before it first turns.
static HEARTBEAT: AtomicU64 = AtomicU64::new(0);
/// Unix seconds since Broker API calls have been failing without an answer (transport errors,
/// 5xx, 429); 0 while the last call got an answer.
static ALPACA_FAILING_SINCE: AtomicU64 = AtomicU64::new(0);

/// The reconciler loop is alive: it turned just now.
pub fn heartbeat() {
    HEARTBEAT.store(crate::clock::unix_now(), Ordering::Relaxed);
}

/// Seconds since the reconciler loop last turned, `None` before it first did.
pub fn heartbeat_age_secs() -> Option<u64> {
    match HEARTBEAT.load(Ordering::Relaxed) {
        0 => None,
        at => Some(crate::clock::unix_now().saturating_sub(at)),
    }
}

/// Records whether a Broker API call got an answer from Alpaca (any status but 5xx and 429).
pub fn alpaca_answered(answered: bool) {
    if answered {
        ALPACA_FAILING_SINCE.store(0, Ordering::Relaxed);
    } else {
        let _ = ALPACA_FAILING_SINCE.compare_exchange(
            0,
            crate::clock::unix_now(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// Seconds Broker API calls have been failing, `None` while they get answers.
pub fn alpaca_failing_for_secs() -> Option<u64> {
    match ALPACA_FAILING_SINCE.load(Ordering::Relaxed) {
        0 => None,
        since => Some(crate::clock::unix_now().saturating_sub(since)),
    }
}
static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// Whether recording happens (the benchmark turns it off to measure its cost).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let intents = Family::default();
        registry.register(
            "issuer_intents",
            "Mint requests accepted and refused, by reason",
            intents.clone(),
        );
        let mints = Family::default();
        registry.register("issuer_mints", "Active mints by state", mints.clone());
        let redemptions = Family::default();
        registry.register(
            "issuer_redemptions",
            "Redemptions not yet final, by state",
            redemptions.clone(),
        );
        let pass_duration = Histogram::new(seconds_buckets());
        registry.register(
            "issuer_pass_duration_seconds",
            "Duration of one reconcile pass",
            pass_duration.clone(),
        );
        let passes = Family::default();
        registry.register(
            "issuer_passes",
            "Reconcile passes, by outcome",
            passes.clone(),
        );
        let chain_head = Gauge::default();
        registry.register(
            "issuer_chain_head_block",
            "Head block the last pass saw",
            chain_head.clone(),
        );
        let scan_lag = Family::default();
        registry.register(
            "issuer_scan_lag_blocks",
            "Head minus the last block scanned, per vault",
            scan_lag.clone(),
        );
        let scan_age = Family::default();
        registry.register(
            "issuer_scan_age_seconds",
            "Seconds since the last successful scan, per vault",
            scan_age.clone(),
        );
        let txs_in_flight = Gauge::default();
        registry.register(
            "issuer_transactions_in_flight",
            "Our transactions not yet settled",
            txs_in_flight.clone(),
        );
        let tx_oldest_age = Gauge::default();
        registry.register(
            "issuer_transaction_oldest_age_blocks",
            "Blocks since the oldest unsettled transaction was signed",
            tx_oldest_age.clone(),
        );
        let alpaca_calls = Family::default();
        registry.register(
            "issuer_alpaca_calls",
            "Broker API calls by route and outcome",
            alpaca_calls.clone(),
        );
        let alpaca_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "issuer_alpaca_call_duration_seconds",
            "Broker API call latency by route",
            alpaca_latency.clone(),
        );
        let confirm_to_callback = Histogram::new(seconds_buckets());
        registry.register(
            "issuer_confirm_to_callback_seconds",
            "From Alpaca's journal confirmation to its acknowledgement of the mint callback",
            confirm_to_callback.clone(),
        );
        let stuck = Family::default();
        registry.register(
            "issuer_stuck_items",
            "Items waiting for an operator, by kind",
            stuck.clone(),
        );
        let supply = Family::default();
        registry.register(
            "issuer_asset_supply_shares",
            "Total supply of the asset's vault, in shares",
            supply.clone(),
        );
        let txs_resent = Counter::default();
        registry.register(
            "issuer_transactions_resent",
            "Pending transactions of ours sent again as they were",
            txs_resent.clone(),
        );
        let store_commits = Counter::default();
        registry.register(
            "issuer_store_commits",
            "Group commits of the store that reached the disk",
            store_commits.clone(),
        );
        let store_writes = Counter::default();
        registry.register(
            "issuer_store_committed_writes",
            "Writes carried by the store's group commits",
            store_writes.clone(),
        );
        let store_commit_duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        registry.register(
            "issuer_store_commit_duration_seconds",
            "One group commit of the store: its writes and its fsyncs",
            store_commit_duration.clone(),
        );
        Self {
            registry,
            intents,
            mints,
            redemptions,
            pass_duration,
            passes,
            chain_head,
            scan_lag,
            scan_age,
            scanned_at: std::sync::Mutex::new(std::collections::HashMap::new()),
            txs_in_flight,
            tx_oldest_age,
            txs_resent,
            alpaca_calls,
            alpaca_latency,
            confirm_to_callback,
            stuck,
            supply,
            store_commits,
            store_writes,
            store_commit_duration,
        }
    }

    /// A group commit of `writes` writes reached the disk in `seconds`.
    pub fn store_committed(&self, writes: usize, seconds: f64) {
        if !enabled() {
            return;
        }
        self.store_commits.inc();
        self.store_writes
            .inc_by(u64::try_from(writes).unwrap_or(u64::MAX));
        self.store_commit_duration.observe(seconds);
    }

    /// The text exposition of every metric, for `GET /metrics`.
    pub fn render(&self) -> String {
        let now = crate::clock::unix_now();
        {
            let scanned = self
                .scanned_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (vault, at) in scanned.iter() {
                self.scan_age
                    .get_or_create(&VaultLabels {
                        vault: vault.clone(),
                    })
                    .set(i64::try_from(now.saturating_sub(*at)).unwrap_or(i64::MAX));
            }
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// A mint request's answer.
    pub fn intent(&self, outcome: &str, reason: &str) {
        if enabled() {
            self.intents
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// One Broker API call on `route` that ended as `outcome` after `seconds`.
    pub fn alpaca_call(&self, route: &str, outcome: &str, seconds: f64) {
        if !enabled() {
            return;
        }
        self.alpaca_calls
            .get_or_create(&CallLabels {
                route: route.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.alpaca_latency
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// A successful scan of `vault` up to `scanned` with the chain at `head`.
    pub fn scanned(&self, vault: &str, head: u64, scanned: u64) {
        self.scan_lag
            .get_or_create(&VaultLabels {
                vault: vault.to_owned(),
            })
            .set(i64::try_from(head.saturating_sub(scanned)).unwrap_or(i64::MAX));
        self.scanned_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(vault.to_owned(), crate::clock::unix_now());
    }

    /// Sets a gauge family to exactly `counts` (states absent from it go to zero).
    pub fn set_states(family: &Family<StateLabels, Gauge>, counts: &[(&str, i64)]) {
        // Known states reset to zero first, so a state that emptied does not keep its old count.
        for (state, _) in counts {
            family
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(0);
        }
        for (state, count) in counts {
            family
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(*count);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_follow_prometheus_conventions() {
        let m = metrics();
        m.intent("refused", "invalid_wallet");
        m.alpaca_call("callback/mint", "ok", 0.02);
        m.scanned("0xabc", 10, 9);
        let text = m.render();
        assert!(text.contains("# TYPE issuer_intents counter"), "{text}");
        assert!(
            text.contains(r#"issuer_intents_total{outcome="refused",reason="invalid_wallet"}"#),
            "{text}"
        );
        assert!(
            text.contains("issuer_alpaca_call_duration_seconds_bucket"),
            "{text}"
        );
        assert!(
            text.contains(r#"issuer_scan_lag_blocks{vault="0xabc"} 1"#),
            "{text}"
        );
        assert!(text.contains("issuer_scan_age_seconds"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
