//! Readiness (`GET /readyz`), apart from liveness (`GET /health`): whether this process can do
//! its work now. The store is asked on every call; other checks (the RPC) are set by whoever
//! watches them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Checks other parts of the process keep up to date. Cheap to clone; clones share the checks.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    /// Check name to `None` (passing) or `Some(reason)` (failing).
    checks: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
    /// In HA mode, `leader` or `standby`; `None` for a single instance.
    role: Arc<Mutex<Option<&'static str>>>,
}

impl Readiness {
    /// Marks `check` as failing for `reason` (the reason is shown by `/readyz`).
    pub fn fail(&self, check: &'static str, reason: impl Into<String>) {
        self.lock().insert(check, Some(reason.into()));
    }

    /// Marks `check` as passing.
    pub fn pass(&self, check: &'static str) {
        self.lock().insert(check, None);
    }

    /// Sets this instance's HA role (`leader` or `standby`), shown by `/readyz`. A standby
    /// whose checks pass answers 200 with `"status": "standby"`: it serves intake.
    pub fn set_role(&self, role: &'static str) {
        *self.role.lock().unwrap_or_else(PoisonError::into_inner) = Some(role);
    }

    /// The HA role, if any.
    pub fn role(&self) -> Option<&'static str> {
        *self.role.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every check and its reason when failing.
    pub fn snapshot(&self) -> BTreeMap<&'static str, Option<String>> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        self.checks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Broker API calls failing (no answer, 5xx, 429) for longer than this make the issuer not
/// ready: callbacks and redemptions cannot progress. Shorter blips are ridden out by retries.
pub const ALPACA_UNREADY_AFTER_SECS: u64 = 300;

/// The `/readyz` answer: 200 `{"status":"ready","checks":{..}}` when every check passes, else
/// 503 `{"status":"not ready","failing":[..],"checks":{..}}`; each check is `"ok"` or its reason.
pub(super) fn answer(
    store: Result<(), crate::store::StoreError>,
    readiness: &Readiness,
    alpaca_failing_for_secs: Option<u64>,
) -> (bool, serde_json::Value) {
    let mut checks = readiness.snapshot();
    checks.insert("store", store.err().map(|e| e.to_string()));
    checks.insert(
        "alpaca",
        alpaca_failing_for_secs
            .filter(|secs| *secs > ALPACA_UNREADY_AFTER_SECS)
            .map(|secs| format!("Broker API calls have been failing for {secs} s")),
    );
    let failing: Vec<&str> = checks
        .iter()
        .filter(|(_, reason)| reason.is_some())
        .map(|(name, _)| *name)
        .collect();
    let shown: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, reason)| {
            (
                (*name).to_owned(),
                serde_json::Value::String(reason.clone().unwrap_or_else(|| "ok".to_owned())),
            )
        })
        .collect();
    let role = readiness.role();
    let mut body = if failing.is_empty() {
        let status = if role == Some("standby") {
            "standby"
        } else {
            "ready"
        };
        serde_json::json!({ "status": status, "checks": shown })
    } else {
        serde_json::json!({ "status": "not ready", "failing": failing, "checks": shown })
    };
    if let (Some(role), Some(fields)) = (role, body.as_object_mut()) {
        fields.insert("role".into(), role.into());
    }
    (failing.is_empty(), body)
}
