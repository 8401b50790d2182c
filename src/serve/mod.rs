//! `issuer serve`: its settings, checked before anything starts, and the wiring of the HTTP
//! server, the reconcile loop and the RPC watch, with a graceful stop.

use crate::alpaca::{BrokerClient, RetryPolicy};
use crate::chain::{BotSigner, Chain};
mod rpc;

use crate::config::{is_anvil_dev_account, is_loopback_url, parse_cidrs, redact_url, Secret};
use crate::http::{self, ConnectionLimits, HttpConfig, Readiness, ServeOptions};
use crate::pass::{CrashPoint, PassConfig, ReconcileLoop};
use crate::store::Store;
use anyhow::{bail, Context};
use clap::Args;
use reconciler::{Network, Policy};
use rpc::{check_chain_ids, check_roles, connect_chain, probe_rpc, Checks};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{LOCAL_API_KEY, LOCAL_OPERATOR_KEY};
use crate::settings::{AlpacaArgs, ChainArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address the HTTP server listens on.
    #[arg(long, env = "ISSUER_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// The redb file.
    #[arg(long, env = "ISSUER_DB", default_value = ".run/issuer.redb")]
    pub db: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Alpaca's name for the network of the single-RPC settings (RPC_URL, CONFIRMATIONS,
    /// BOT_*). Unset: the network the store's assets are on (`anvil` on the local stack while
    /// there are none). Not used with ISSUER_NETWORKS.
    #[arg(long, env = "ISSUER_NETWORK")]
    pub network: Option<String>,
    /// The chain id RPC_URL must answer; unset: not checked. Not used with ISSUER_NETWORKS.
    #[arg(long, env = "CHAIN_ID")]
    pub chain_id: Option<u64>,
    /// Several networks in one issuer, each with its own RPC, chain id, confirmations, log
    /// range, fee cap and signer: `name=base,rpc=URL,chain-id=8453[,confirmations=N]
    /// [,log-range=N][,max-fee-gwei=N][,key-env=VAR]`, entries separated by `;` (see
    /// [`crate::networks`]). Replaces RPC_URL and ISSUER_NETWORK.
    #[arg(long, env = "ISSUER_NETWORKS", hide_env_values = true)]
    pub networks: Option<String>,
    #[command(flatten)]
    pub alpaca: AlpacaArgs,
    /// Key Alpaca sends in X-API-KEY (at least 32 characters).
    #[arg(long, env = "ISSUER_API_KEY", hide_env_values = true, default_value = LOCAL_API_KEY)]
    pub api_key: Secret,
    /// Client addresses allowed on Alpaca's routes (comma-separated CIDRs).
    #[arg(
        long,
        env = "ISSUER_ALLOWED_CIDRS",
        default_value = "127.0.0.1/32,::1/128"
    )]
    pub allowed_cidrs: String,
    /// Key operators send in X-OPERATOR-KEY (at least 32 characters).
    #[arg(long, env = "ISSUER_OPERATOR_KEY", hide_env_values = true, default_value = LOCAL_OPERATOR_KEY)]
    pub operator_key: Secret,
    /// Client addresses allowed on operator routes.
    #[arg(
        long,
        env = "ISSUER_OPERATOR_CIDRS",
        default_value = "127.0.0.1/32,::1/128"
    )]
    pub operator_cidrs: String,
    /// How Alpaca authenticates to us, one scheme per issuer: `api-key` (X-API-KEY) or
    /// `signatures` (RFC 9421 Ed25519 signatures instead of the key; needs ALPACA_SIGNATURE_KEYS
    /// and ISSUER_PUBLIC_URL).
    #[arg(long, env = "ALPACA_AUTH", value_enum, default_value = "api-key")]
    pub alpaca_auth: AlpacaAuthScheme,
    /// Alpaca's Ed25519 public keys for `signatures`, as `keyid:KEY`, comma-separated; KEY is the
    /// PEM Alpaca hands over (line breaks may be written as \n), or base64.
    #[arg(long, env = "ALPACA_SIGNATURE_KEYS", default_value = "")]
    pub alpaca_signature_keys: String,
    /// The URL Alpaca calls us at (`https://issuer.example.com`): `@target-uri` of a signature is
    /// built from it, never from the Host header. Required with `signatures`.
    #[arg(long, env = "ISSUER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Chains besides Alpaca's own networks that mints and assets may name, comma-separated.
    /// Unset: `anvil` when listening on loopback with a loopback RPC (the local stack), none
    /// otherwise.
    #[arg(long, env = "ISSUER_LOCAL_NETWORKS")]
    pub local_networks: Option<String>,
    /// Oldest signature `created` accepted, in seconds.
    #[arg(long, env = "SIGNATURE_MAX_AGE_SECS", default_value_t = 300)]
    pub signature_max_age_secs: u64,
    /// Custody account id answered on /tokenization/custody-accounts.
    #[arg(
        long,
        env = "ISSUER_CUSTODY_ACCOUNT_ID",
        default_value = "issuer-custody-local"
    )]
    pub custody_account_id: String,
    /// Milliseconds between reconcile passes when nothing wakes the loop.
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = RECONCILE_INTERVAL_MS_DEFAULT)]
    pub reconcile_interval_ms: u64,
    /// Milliseconds between polls of each network's head (one `eth_blockNumber` call each); a
    /// new head starts a pass.
    #[arg(long, env = "HEAD_POLL_MS", default_value_t = 50)]
    pub head_poll_ms: u64,
    /// Blocks a log needs (its own included) before it is acted on.
    #[arg(long, env = "CONFIRMATIONS", default_value_t = 1)]
    pub confirmations: u64,
    /// Most mints in one multicall transaction.
    #[arg(long, env = "MINTS_PER_TX_MAX", default_value_t = 40)]
    pub mints_per_tx_max: usize,
    /// Highest fee per gas (gwei) a replacement of a stuck transaction may bid.
    #[arg(long, env = "MAX_FEE_PER_GAS_GWEI", default_value_t = 500)]
    pub max_fee_per_gas_gwei: u64,
    /// Most HTTP connections open at once; beyond it the oldest is closed.
    #[arg(long, env = "ISSUER_HTTP_CONNECTIONS_MAX", default_value_t = 200)]
    pub http_connections_max: usize,
    /// Milliseconds a connection may take to send a request head (and may sit idle between
    /// requests).
    #[arg(long, env = "ISSUER_HTTP_HEAD_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_head_timeout_ms: u64,
    /// Milliseconds from the end of a request head to the end of the answer (body included).
    #[arg(long, env = "ISSUER_HTTP_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_body_timeout_ms: u64,
    /// Test hook for crash tests: abort at a named point.
    #[arg(long, env = "ISSUER_CRASH_AT", hide = true)]
    pub crash_at: Option<CrashPoint>,
    #[command(flatten)]
    pub ha: crate::ha::HaArgs,
}

/// The two ways Alpaca can authenticate its calls to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlpacaAuthScheme {
    /// `X-API-KEY` on every request.
    ApiKey,
    /// RFC 9421 Ed25519 message signatures instead of a key.
    Signatures,
}

/// `RECONCILE_INTERVAL_MS` unless set: a pass at least this often when nothing wakes the loop
/// (a new head, a confirm and an Alpaca job's outcome start one at once).
pub const RECONCILE_INTERVAL_MS_DEFAULT: u64 = 500;

/// Longest wait at shutdown for a reconcile pass to finish; then it is abandoned. Safe: a pass is
/// built to survive being killed at any point (the crash tests), and outside calls (a hung RPC,
/// a slow Alpaca) must not hold the process.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Waits between attempts to reach the RPC: doubling from the first, capped at the second.
const RPC_RETRY_FIRST: Duration = Duration::from_millis(250);
const RPC_RETRY_MAX: Duration = Duration::from_secs(10);
/// How often a connected RPC is probed for `/readyz`, and how long a probe may take.
const RPC_PROBE_EVERY: Duration = Duration::from_secs(5);

/// What `serve` runs with, every setting checked before anything starts.
struct ServePlan {
    http_config: HttpConfig,
    limits: ConnectionLimits,
    broker: BrokerClient,
    /// One per network, each with its own RPC, signer and pass settings.
    networks: Vec<NetworkPlan>,
    /// HA mode's settings; `None` for the single instance.
    ha: Option<crate::ha::HaSettings>,
}

/// One network's reconciler, checked and ready to connect.
#[derive(Clone)]
struct NetworkPlan {
    /// `None` only in the single-RPC settings without ISSUER_NETWORK: decided once the store
    /// is open, from its assets ([`resolve_network`]).
    name: Option<Network>,
    rpc_url: String,
    /// The chain id the RPC must answer, when configured.
    chain_id: Option<u64>,
    log_range_blocks: u64,
    signer: BotSigner,
    pass: PassConfig,
}

/// The networks to serve: ISSUER_NETWORKS, or the single-RPC settings as a one-network list.
fn network_specs(args: &ServeArgs) -> anyhow::Result<Vec<crate::networks::NetworkSpec>> {
    if let Some(list) = args.networks.as_deref().filter(|l| !l.trim().is_empty()) {
        if args.network.is_some() || args.chain_id.is_some() {
            bail!("ISSUER_NETWORKS lists every network: remove ISSUER_NETWORK and CHAIN_ID (they describe the single-RPC settings)");
        }
        return Ok(crate::networks::parse(list)?);
    }
    reqwest::Url::parse(&args.chain.rpc_url).map_err(|e| {
        anyhow::anyhow!(
            "RPC_URL is not a URL ({e}): {}",
            redact_url(&args.chain.rpc_url)
        )
    })?;
    let name = args
        .network
        .as_deref()
        .map(Network::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("ISSUER_NETWORK: {e}"))?;
    Ok(vec![crate::networks::NetworkSpec {
        // Resolved from the store when unset; the placeholder is never used as a name.
        name: name.unwrap_or(Network::parse(UNRESOLVED)?),
        rpc_url: args.chain.rpc_url.clone(),
        chain_id: args.chain_id,
        confirmations: None,
        log_range_blocks: None,
        max_fee_per_gas_gwei: None,
        key_env: None,
    }])
}

/// The placeholder name of the single-RPC network until [`resolve_network`] decides it.
const UNRESOLVED: &str = "unresolved";

/// Checks every setting of `serve`; the first unusable one is the error, before a file is opened,
/// a port bound or a connection made.
async fn plan_serve(args: &ServeArgs) -> anyhow::Result<ServePlan> {
    let specs = network_specs(args)?;
    let local = args.listen.ip().is_loopback() && specs.iter().all(|n| is_loopback_url(&n.rpc_url));
    let shared_signer = args.chain.signer().await?;
    let mut signers = Vec::with_capacity(specs.len());
    for spec in &specs {
        signers.push(match &spec.key_env {
            None => shared_signer.clone(),
            Some(var) => {
                let key = std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "network {}: key-env names {var}, which is not set",
                        spec.name
                    )
                })?;
                BotSigner::from(
                    crate::chain::EthersSigner::from_private_key(key.trim())
                        .map_err(|e| anyhow::anyhow!("network {}: {var}: {e}", spec.name))?,
                )
            }
        });
    }
    let uses_dev_defaults = (args.alpaca_auth == AlpacaAuthScheme::ApiKey
        && args.api_key.expose() == LOCAL_API_KEY)
        || args.operator_key.expose() == LOCAL_OPERATOR_KEY
        || signers.iter().any(|s| is_anvil_dev_account(s.address()));
    if uses_dev_defaults && !local {
        bail!("the built-in local keys and anvil's dev keys are only accepted when listening on loopback with a loopback RPC; set ISSUER_API_KEY, ISSUER_OPERATOR_KEY and BOT_PRIVATE_KEY/BOT_KEYSTORE");
    }
    if args.confirmations == 0 {
        bail!("CONFIRMATIONS must be at least 1 (the block of the log itself)");
    }
    if args.mints_per_tx_max == 0 {
        bail!("MINTS_PER_TX_MAX must be at least 1");
    }
    if args.reconcile_interval_ms == 0 {
        bail!("RECONCILE_INTERVAL_MS must be at least 1");
    }
    if !(1..=HEAD_POLL_MS_MAX).contains(&args.head_poll_ms) {
        bail!("HEAD_POLL_MS must be from 1 to {HEAD_POLL_MS_MAX} (a minute)");
    }
    if args.max_fee_per_gas_gwei == 0 {
        bail!("MAX_FEE_PER_GAS_GWEI must be at least 1");
    }
    if args.custody_account_id.trim().is_empty() {
        bail!("ISSUER_CUSTODY_ACCOUNT_ID must not be empty");
    }
    let cidrs = |name: &str, text: &str| -> anyhow::Result<Vec<ipnet::IpNet>> {
        let nets = parse_cidrs(text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if nets.is_empty() {
            bail!("{name} is empty: nobody could call those routes");
        }
        Ok(nets)
    };
    let http_config = HttpConfig {
        alpaca_auth: alpaca_auth(args)?,
        alpaca_allow: cidrs("ISSUER_ALLOWED_CIDRS", &args.allowed_cidrs)?,
        operator_api_key: args.operator_key.clone(),
        operator_allow: cidrs("ISSUER_OPERATOR_CIDRS", &args.operator_cidrs)?,
        body_limit_bytes: 64 * 1024,
        failed_auth_per_minute_max: 10,
        custody_account_id: args.custody_account_id.clone(),
        local_networks: local_networks(args.local_networks.as_deref(), local)?,
        // Filled in once every network's name is known (see `serve`).
        served_networks: Vec::new(),
        issuer_addresses: {
            let mut bots: Vec<_> = signers.iter().map(BotSigner::address).collect();
            bots.sort_unstable();
            bots.dedup();
            bots
        },
    };
    http_config
        .check()
        .map_err(|e| anyhow::anyhow!("{e} (ISSUER_API_KEY, ISSUER_OPERATOR_KEY)"))?;
    let limits = ConnectionLimits {
        connections_max: args.http_connections_max,
        head_timeout: Duration::from_millis(args.http_head_timeout_ms),
        body_timeout: Duration::from_millis(args.http_body_timeout_ms),
    };
    limits.check().map_err(|e| {
        anyhow::anyhow!("{e} (ISSUER_HTTP_CONNECTIONS_MAX, ISSUER_HTTP_*_TIMEOUT_MS)")
    })?;
    if let Some(public_url) = &args.public_url {
        reqwest::Url::parse(public_url)
            .map_err(|e| anyhow::anyhow!("ISSUER_PUBLIC_URL is not a URL ({e})"))?;
    }
    if matches!(http_config.alpaca_auth, http::AlpacaAuth::Signatures(_))
        && args.signature_max_age_secs == 0
    {
        bail!("SIGNATURE_MAX_AGE_SECS must be at least 1");
    }
    let ha = args.ha.settings(args.listen).map_err(anyhow::Error::msg)?;
    if ha.is_some() && specs.len() > 1 {
        bail!("HA mode (ISSUER_HA_ETCD) serves one network for now: leadership is kept per signing key and one leader runs one network's loop; run ISSUER_NETWORKS in the single-instance mode");
    }
    // The reconciler's Alpaca calls honour rate limits by scheduling, never by sleeping.
    let broker = args.alpaca.broker_with(RetryPolicy::for_reconciler())?;
    let networks = specs
        .into_iter()
        .zip(signers)
        .map(|(spec, signer)| NetworkPlan {
            name: (spec.name.as_str() != UNRESOLVED).then_some(spec.name),
            rpc_url: spec.rpc_url,
            chain_id: spec.chain_id,
            log_range_blocks: spec
                .log_range_blocks
                .unwrap_or(crate::chain::LOG_RANGE_BLOCKS_MAX),
            signer,
            pass: PassConfig {
                interval: Duration::from_millis(args.reconcile_interval_ms),
                head_poll: Duration::from_millis(args.head_poll_ms),
                backoff_max: Duration::from_secs(30),
                policy: Policy {
                    confirmations_min: spec.confirmations.unwrap_or(args.confirmations),
                    mints_per_tx_max: args.mints_per_tx_max,
                    ..Policy::default()
                },
                crash_at: args.crash_at,
                max_fee_per_gas_wei: u128::from(
                    spec.max_fee_per_gas_gwei
                        .unwrap_or(args.max_fee_per_gas_gwei),
                )
                .saturating_mul(1_000_000_000),
            },
        })
        .collect();
    Ok(ServePlan {
        http_config,
        limits,
        broker,
        networks,
        ha,
    })
}

/// The slowest head poll allowed: a pass still runs every `RECONCILE_INTERVAL_MS` regardless.
const HEAD_POLL_MS_MAX: u64 = 60_000;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut plan = plan_serve(&args).await?;
    check_chain_ids(&plan.networks).await?;
    let local = open_store(&args.db)?;
    let single = plan.networks.len() == 1;
    let (store, ha): (Arc<dyn Store>, _) = match plan.ha.clone() {
        None => (Arc::new(local), None),
        Some(settings) => {
            let Some(first) = plan.networks.first() else {
                bail!("no network to serve");
            };
            let ha = crate::ha::HaParts::connect(settings, first.signer.address(), local).await?;
            (
                Arc::new(crate::ha::HaStore::new(ha.facts.clone())),
                Some(ha),
            )
        }
    };
    // The asset list as this instance serves it (in HA mode, the shared facts).
    for network in &mut plan.networks {
        if network.name.is_none() {
            network.name = Some(resolve_network(
                store.as_ref(),
                plan.http_config.local_networks.first(),
            )?);
        }
    }
    warn_unserved_assets(store.as_ref(), &plan.networks)?;
    plan.http_config.served_networks = plan
        .networks
        .iter()
        .filter_map(|n| n.name.clone())
        .collect();
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let readiness = Readiness::default();
    if ha.is_some() {
        readiness.set_role("standby");
    }
    let checks: Vec<Checks> = plan
        .networks
        .iter()
        .map(|n| Checks::for_network(n.name.as_ref(), single))
        .collect();
    for (network, check) in plan.networks.iter().zip(&checks) {
        readiness.fail(check.rpc, "connecting");
        tracing::info!(listen = %args.listen, network = ?network.name.as_ref().map(Network::as_str), rpc = %redact_url(&network.rpc_url), signer = %network.signer.kind(), bot = %network.signer.address(), db = %args.db.display(), "issuer serving");
    }

    let mut server = tokio::spawn(http::serve_with(
        listener,
        store.clone(),
        wake.clone(),
        plan.http_config,
        ServeOptions {
            limits: plan.limits,
            readiness: readiness.clone(),
            clock: crate::clock::system(),
        },
        shutdown(stop_rx.clone()),
    ));
    let mut work = match ha {
        None => {
            // Each network runs its own loop as its own task: a stalled RPC holds only its own.
            // An intent wakes every loop; each plans only its own network's work.
            let mut loops = tokio::task::JoinSet::new();
            let mut wakes = Vec::new();
            for (network, checks) in plan.networks.into_iter().zip(checks) {
                let own_wake = Arc::new(tokio::sync::Notify::new());
                wakes.push(own_wake.clone());
                loops.spawn(reconcile_when_connected(
                    network,
                    Unconnected {
                        store: store.clone(),
                        broker: plan.broker.clone(),
                    },
                    readiness.clone(),
                    checks,
                    own_wake,
                    shutdown(stop_rx.clone()),
                ));
            }
            let fan_out = wake.clone();
            tokio::spawn(async move {
                let wake_all = tokio::spawn(async move {
                    loop {
                        fan_out.notified().await;
                        for w in &wakes {
                            w.notify_one();
                        }
                    }
                });
                while loops.join_next().await.is_some() {}
                wake_all.abort();
            })
        }
        Some(ha) => {
            let Some(network) = plan.networks.into_iter().next() else {
                bail!("no network to serve");
            };
            let checks = checks.into_iter().next().unwrap_or(Checks::SINGLE);
            tokio::spawn(lead_when_connected(
                network,
                Unconnected {
                    store,
                    broker: plan.broker,
                },
                ha,
                readiness,
                checks,
                wake,
                shutdown(stop_rx),
            ))
        }
    };
    let ended = tokio::select! {
        _ = tokio::signal::ctrl_c() => { tracing::info!("interrupt: shutting down"); None }
        () = terminate() => { tracing::info!("terminate: shutting down"); None }
        result = &mut server => Some(result),
    };
    let _ = stop_tx.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut work)
        .await
        .is_err()
    {
        tracing::warn!("shutdown: abandoning an unfinished pass; the next start redoes it");
        // Dropping the loops' set with the task aborts every loop in it.
        work.abort();
    }
    let outcome = match ended {
        Some(result) => result,
        None => {
            if let Ok(result) = tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                result
            } else {
                server.abort();
                Ok(Ok(()))
            }
        }
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

/// The network of the single-RPC settings when ISSUER_NETWORK is unset: the one the store's
/// assets are on, else the local network on the local stack.
fn resolve_network(store: &dyn Store, local_network: Option<&Network>) -> anyhow::Result<Network> {
    let networks: std::collections::BTreeSet<Network> =
        store.assets()?.into_iter().map(|a| a.network).collect();
    let mut names = networks.iter();
    match (names.next(), names.next(), local_network) {
        (Some(only), None, _) => Ok(only.clone()),
        (None, _, Some(local)) => Ok(local.clone()),
        (None, _, None) => bail!("ISSUER_NETWORK is required: the store has no asset yet to tell which network RPC_URL is"),
        (Some(_), Some(_), _) => bail!(
            "the store's assets are on several networks ({}): set ISSUER_NETWORK for RPC_URL's, or list every network in ISSUER_NETWORKS",
            networks.iter().map(Network::as_str).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Logs every asset on a network this issuer does not serve: its mints would wait.
fn warn_unserved_assets(store: &dyn Store, networks: &[NetworkPlan]) -> anyhow::Result<()> {
    for asset in store.assets()? {
        if !networks
            .iter()
            .any(|n| n.name.as_ref() == Some(&asset.network))
        {
            tracing::warn!(underlying = %asset.underlying, network = %asset.network, vault = %asset.vault,
                "asset on a network this issuer does not serve: left out of the token list, its mints refused");
        }
    }
    Ok(())
}

/// A reconciler still without its chain.
struct Unconnected {
    store: Arc<dyn Store>,
    broker: BrokerClient,
}

/// One network's reconciler half of `serve`: connects to its RPC,
/// retrying with capped backoff and jitter while `/readyz` says why (intake is served all along),
/// then runs passes until `shutdown`, probing the RPC for `/readyz` beside them.
async fn reconcile_when_connected(
    network: NetworkPlan,
    pending: Unconnected,
    readiness: Readiness,
    checks: Checks,
    wake: Arc<tokio::sync::Notify>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let Some(name) = network.name.clone() else {
        return;
    };
    let (chain, probe) = connected(
        &network,
        &name,
        &pending,
        readiness,
        checks,
        "reconciler starting",
    )
    .await;
    let reconciler = ReconcileLoop::new(pending.store, name, chain, pending.broker, network.pass);
    reconciler.run(wake, shutdown).await;
    probe.abort();
}

/// Connects to `network`'s RPC (with backoff, `/readyz` saying why meanwhile), checks the bot's
/// roles, and starts the probe that keeps `rpc` and `roles` current.
async fn connected(
    network: &NetworkPlan,
    name: &Network,
    pending: &Unconnected,
    readiness: Readiness,
    checks: Checks,
    next: &str,
) -> (Chain, tokio::task::JoinHandle<()>) {
    let chain = connect_chain(network, &readiness, checks).await;
    tracing::info!(
        network = %name,
        chain_id = chain.chain_id(),
        signer = %chain.signer().kind(),
        bot = %chain.bot(),
        "rpc: connected; {next}"
    );
    check_roles(&chain, name, pending.store.as_ref(), &readiness, checks).await;
    let probe = tokio::spawn(probe_rpc(
        chain.clone(),
        name.clone(),
        pending.store.clone(),
        readiness,
        checks,
    ));
    (chain, probe)
}

/// HA mode's reconciler half of `serve`: connects to the RPC like the single instance, keeps
/// importing the shared facts, and campaigns; while it leads it runs the passes
/// ([`crate::ha::leader::run`]). HA mode serves one network.
#[allow(clippy::too_many_arguments)] // the wiring of one task; each part is distinct
async fn lead_when_connected(
    network: NetworkPlan,
    pending: Unconnected,
    ha: crate::ha::HaParts,
    readiness: Readiness,
    checks: Checks,
    wake: Arc<tokio::sync::Notify>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let Some(name) = network.name.clone() else {
        return;
    };
    let sync = tokio::spawn(crate::ha::facts::sync_forever(
        ha.facts.clone(),
        readiness.clone(),
        wake.clone(),
    ));
    let (chain, probe) = connected(
        &network,
        &name,
        &pending,
        readiness.clone(),
        checks,
        "campaigning for leadership",
    )
    .await;
    let parts = crate::ha::leader::TermParts {
        // The shared store: what the loop writes of its transactions is in etcd before it is
        // broadcast (the rest of its writes are local).
        store: Arc::new(crate::ha::HaStore::new(ha.facts.clone())),
        local: ha.local,
        network: name,
        chain,
        broker: pending.broker,
        config: network.pass,
    };
    crate::ha::leader::run(ha.leadership, ha.facts, parts, readiness, wake, shutdown).await;
    probe.abort();
    sync.abort();
}

/// The one scheme Alpaca authenticates with. Keys configured for the other scheme are refused
/// rather than ignored, so a configuration never silently means less than it says.
fn alpaca_auth(args: &ServeArgs) -> anyhow::Result<http::AlpacaAuth> {
    let keys = args
        .alpaca_signature_keys
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(crate::http::signature::parse_key)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("ALPACA_SIGNATURE_KEYS: {e}"))?;
    match args.alpaca_auth {
        AlpacaAuthScheme::ApiKey if keys.is_empty() => {
            Ok(http::AlpacaAuth::ApiKey(args.api_key.clone()))
        }
        AlpacaAuthScheme::ApiKey => bail!(
            "ALPACA_SIGNATURE_KEYS is set but ALPACA_AUTH is api-key: Alpaca uses one scheme; set ALPACA_AUTH=signatures or remove the keys"
        ),
        AlpacaAuthScheme::Signatures => {
            if keys.is_empty() {
                bail!("ALPACA_AUTH=signatures needs Alpaca's public key in ALPACA_SIGNATURE_KEYS (keyid:PEM)");
            }
            let Some(public_url) = args.public_url.clone().filter(|u| !u.trim().is_empty()) else {
                bail!("ALPACA_AUTH=signatures needs ISSUER_PUBLIC_URL, the URL Alpaca calls us at: signatures cover it, and the Host header cannot be trusted for it");
            };
            let config = crate::http::signature::SignatureConfig {
                keys,
                public_base_url: public_url,
                max_age_secs: args.signature_max_age_secs,
            };
            crate::http::signature::check_config(&config).map_err(anyhow::Error::msg)?;
            Ok(http::AlpacaAuth::Signatures(config))
        }
    }
}

/// The local networks this issuer accepts besides Alpaca's: as configured, else `anvil` on the
/// local stack only.
pub fn local_networks(configured: Option<&str>, local: bool) -> anyhow::Result<Vec<Network>> {
    match configured {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| Network::parse(n).map_err(|e| anyhow::anyhow!("ISSUER_LOCAL_NETWORKS: {e}")))
            .collect(),
        None if local => Ok(vec![Network::parse("anvil")?]),
        None => Ok(Vec::new()),
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}

/// Opens (or creates, with its directory) the store at `path`.
pub fn open_store(path: &std::path::Path) -> anyhow::Result<crate::store::RedbStore> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(crate::store::RedbStore::open(path)?)
}
