//! High availability (issue 17): two or more `issuer serve` instances on one signing key, one
//! active, with leadership held in etcd.
//!
//! One signing key has one writer: two writers would race on nonces and on the tagged-deposit
//! check. So every instance serves intake, but only the holder of the election key
//! `/issuer/<bot>/leader` runs the reconcile pass, and every transaction broadcast and every
//! Alpaca call with side effects is preceded by a [`Fence`] check against etcd itself (the
//! election key still carries the create revision this instance won it at), so a paused or
//! partitioned former leader cannot act after a new one took over.
//!
//! The facts that live nowhere but in our store (accounts, wallets, assets, freezes, accepted
//! intents and their journal outcome) are written through to etcd before the HTTP answer
//! ([`facts::HaStore`]) and imported by every instance. What the leader did that Alpaca or the
//! chain saw (every transaction it signed, where each mint callback and each redemption's redeem
//! call stands) is written through to etcd before the effect, and imported by the next leader
//! before its first pass; everything else a new leader rebuilds from the chain and Alpaca as
//! after a lost cache ([`leader`]).
//!
//! Off by default: without `--ha-etcd` the single binary with its embedded store runs as before,
//! and [`Fence::single`] passes without I/O.

pub mod facts;
mod fence;
pub mod leader;

pub use facts::{HaStore, SharedFacts};
pub use fence::{Fence, FenceError};
pub use leader::Leadership;

use alloy::primitives::Address;
use clap::Args;
use std::time::Duration;

/// `serve`'s HA settings.
#[derive(Debug, Clone, Args)]
pub struct HaArgs {
    /// etcd endpoints, comma-separated (`http://10.0.0.5:2379,...`): turns HA on. Unset: one
    /// instance with its embedded store (the default).
    #[arg(long = "ha-etcd", env = "ISSUER_HA_ETCD", hide_env_values = true)]
    pub etcd: Option<String>,
    /// Seconds the leader's lease lives without renewal: a dead leader is replaced after at most
    /// this long.
    #[arg(
        long = "ha-lease-ttl-secs",
        env = "ISSUER_HA_LEASE_TTL_SECS",
        default_value_t = 5
    )]
    pub lease_ttl_secs: u64,
    /// Milliseconds between lease renewals; default a third of the TTL.
    #[arg(long = "ha-renew-ms", env = "ISSUER_HA_RENEW_MS")]
    pub renew_ms: Option<u64>,
    /// This instance's name in the election, in logs and in `/readyz`; default `host-pid`.
    #[arg(long = "ha-instance", env = "ISSUER_HA_INSTANCE")]
    pub instance: Option<String>,
}

/// HA settings, checked.
#[derive(Debug, Clone)]
pub struct HaSettings {
    pub endpoints: Vec<String>,
    pub lease_ttl: Duration,
    pub renew_every: Duration,
    pub instance: String,
}

impl HaArgs {
    /// `Ok(None)` when HA is off; the first unusable setting otherwise.
    pub fn settings(&self, listen: std::net::SocketAddr) -> Result<Option<HaSettings>, String> {
        let Some(list) = self.etcd.as_deref() else {
            return Ok(None);
        };
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err("ISSUER_HA_ETCD names no endpoint".into());
        }
        for endpoint in &endpoints {
            let shown = crate::config::redact_url(endpoint);
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| format!("ISSUER_HA_ETCD: {shown} is not a URL ({e})"))?;
            if url.scheme() != "http" {
                return Err(format!(
                    "ISSUER_HA_ETCD: {shown}: only http:// endpoints are supported (run etcd on a private network or behind a TLS-terminating proxy)"
                ));
            }
            // etcd's own authentication is not supported: credentials in the URL would only
            // travel in clear text and into logs.
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "ISSUER_HA_ETCD: {shown}: credentials in the endpoint are not supported (etcd auth is not used; keep etcd on a private network)"
                ));
            }
        }
        if self.lease_ttl_secs < 2 {
            return Err("ISSUER_HA_LEASE_TTL_SECS must be at least 2".into());
        }
        let lease_ttl = Duration::from_secs(self.lease_ttl_secs);
        let renew_every = self.renew_ms.map_or(lease_ttl / 3, Duration::from_millis);
        if renew_every.is_zero() || renew_every * 2 > lease_ttl {
            return Err(
                "ISSUER_HA_RENEW_MS must be positive and at most half the lease TTL".into(),
            );
        }
        let instance = self.instance.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| listen.to_string());
            format!("{host}-{}", std::process::id())
        });
        if instance.trim().is_empty() {
            return Err("ISSUER_HA_INSTANCE must not be empty".into());
        }
        Ok(Some(HaSettings {
            endpoints,
            lease_ttl,
            renew_every,
            instance,
        }))
    }
}

/// Why an etcd operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// etcd did not answer or refused the call (down, partitioned, overloaded).
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer within the deadline.
    #[error("etcd: no answer within {0:?}")]
    Timeout(Duration),
    /// A value under our prefix does not decode: written by a newer issuer, or damaged.
    #[error("etcd value under {key} does not decode: {detail}")]
    Decode { key: String, detail: String },
    /// The local store failed while importing or exporting facts.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A write kept losing races against other instances; the caller may retry.
    #[error("etcd: {0} kept changing under us; try again")]
    Contended(&'static str),
}

/// The keys of one signing key's deployment: everything under `/issuer/<bot>/`, so several
/// vault groups with their own keys share one etcd.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(bot: Address) -> Self {
        Keys {
            prefix: format!("/issuer/{bot:#x}/"),
        }
    }

    /// The election key: its value is the leader's instance name, its create revision the term.
    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    /// Accounts, wallets and assets, as one value: few, rarely written, and kept consistent
    /// with each other by one compare-and-swap.
    pub fn directory(&self) -> String {
        format!("{}facts/directory", self.prefix)
    }

    /// Every accepted mint intent, one key each.
    pub fn mints(&self) -> String {
        format!("{}facts/mints/", self.prefix)
    }

    pub fn mint(&self, issuer_request_id: &reconciler::IssuerRequestId) -> String {
        format!("{}{}", self.mints(), issuer_request_id.as_str())
    }

    /// The reconciler's progress on every mint (its callback to Alpaca, failed transactions,
    /// problem), one key each: a callback may have reached Alpaca before the leader died.
    pub fn mint_progress(&self) -> String {
        format!("{}facts/mint-progress/", self.prefix)
    }

    pub fn mint_progress_of(&self, issuer_request_id: &reconciler::IssuerRequestId) -> String {
        format!("{}{}", self.mint_progress(), issuer_request_id.as_str())
    }

    /// Every redemption as the leader last recorded it, one key each: a redeem call may have
    /// reached Alpaca before the leader died.
    pub fn redemptions(&self) -> String {
        format!("{}facts/redemptions/", self.prefix)
    }

    pub fn redemption(&self, id: &reconciler::IssuerRequestId) -> String {
        format!("{}{}", self.redemptions(), id.as_str())
    }

    /// Every transaction the leaders of one network signed, one key each: a signed transaction
    /// lives nowhere else until it is mined, and a node may hold it queued behind a nonce gap.
    pub fn txs(&self, network: &reconciler::Network) -> String {
        format!("{}facts/txs/{}/", self.prefix, network.as_str())
    }

    /// Zero-padded, so the keys sort by nonce.
    pub fn tx(&self, network: &reconciler::Network, nonce: u64) -> String {
        format!("{}{nonce:020}", self.txs(network))
    }
}

/// Connects to etcd. The channel reconnects by itself: a call made while etcd is down fails, and
/// the next one after it is back goes through.
pub async fn connect(settings: &HaSettings) -> Result<etcd_client::Client, HaError> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(ETCD_CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    Ok(etcd_client::Client::connect(&settings.endpoints, Some(options)).await?)
}

/// Longest any single etcd call may take.
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `call` with [`ETCD_CALL_TIMEOUT`].
pub(crate) async fn timed<T, F>(call: F) -> Result<T, HaError>
where
    F: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(ETCD_CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(HaError::Timeout(ETCD_CALL_TIMEOUT)),
    }
}

/// What `serve` holds in HA mode: the shared facts, this instance's leadership, the local redb.
pub struct HaParts {
    pub facts: std::sync::Arc<SharedFacts>,
    pub leadership: std::sync::Arc<Leadership>,
    pub local: crate::store::RedbStore,
}

impl HaParts {
    /// Connects to etcd (lazily: an etcd still down is retried by every later call) and sets up
    /// the keys of `bot`'s deployment.
    pub async fn connect(
        settings: HaSettings,
        bot: Address,
        local: crate::store::RedbStore,
    ) -> Result<Self, HaError> {
        let client = connect(&settings).await?;
        let keys = Keys::new(bot);
        tracing::info!(instance = %settings.instance, endpoints = ?settings.endpoints, ttl_s = settings.lease_ttl.as_secs(), election = %keys.leader(), "ha: on");
        Ok(HaParts {
            facts: SharedFacts::new(client.clone(), keys.clone(), local.clone()),
            leadership: Leadership::new(client, &keys, settings),
            local,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(etcd: Option<&str>, ttl: u64, renew_ms: Option<u64>) -> HaArgs {
        HaArgs {
            etcd: etcd.map(str::to_owned),
            lease_ttl_secs: ttl,
            renew_ms,
            instance: Some("a".into()),
        }
    }

    #[test]
    fn off_unless_etcd_is_named() {
        let listen = "127.0.0.1:8000".parse().unwrap();
        assert!(args(None, 5, None).settings(listen).unwrap().is_none());
        let on = args(
            Some("http://127.0.0.1:2379, http://127.0.0.2:2379"),
            6,
            None,
        )
        .settings(listen)
        .unwrap()
        .unwrap();
        assert_eq!(on.endpoints.len(), 2);
        assert_eq!(on.renew_every, Duration::from_secs(2));
    }

    #[test]
    fn credentials_in_an_endpoint_are_refused_without_being_echoed() {
        let listen = "127.0.0.1:8000".parse().unwrap();
        let refused = args(Some("http://root:etcdpassword@10.0.0.5:2379"), 5, None)
            .settings(listen)
            .unwrap_err();
        assert!(refused.contains("credentials"), "{refused}");
        assert!(!refused.contains("etcdpassword"), "{refused}");
    }

    #[test]
    fn unusable_settings_are_refused_before_start() {
        let listen = "127.0.0.1:8000".parse().unwrap();
        for bad in [
            args(Some(" , "), 5, None),
            args(Some("127.0.0.1:2379"), 5, None),
            args(Some("https://etcd:2379"), 5, None),
            args(Some("http://etcd:2379"), 1, None),
            args(Some("http://etcd:2379"), 5, Some(0)),
            args(Some("http://etcd:2379"), 5, Some(3000)),
        ] {
            assert!(bad.settings(listen).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn keys_are_per_signing_key() {
        let keys = Keys::new(Address::repeat_byte(0xab));
        assert_eq!(
            keys.leader(),
            "/issuer/0xabababababababababababababababababababab/leader"
        );
        assert!(keys.mints().starts_with("/issuer/0xabab"));
        // A prefix read of the intents must not return the progress keys beside them.
        assert!(!keys.mint_progress().starts_with(&keys.mints()));
    }
}
