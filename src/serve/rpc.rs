//! The RPC side of `serve`: each network's `/readyz` check names, the chain id check at start,
//! connecting with backoff, and the probes that keep `rpc` and `roles` current.

use super::{NetworkPlan, RPC_PROBE_EVERY, RPC_RETRY_FIRST, RPC_RETRY_MAX};
use crate::chain::Chain;
use crate::config::redact_url;
use crate::http::Readiness;
use crate::store::Store;
use anyhow::bail;
use reconciler::Network;
use std::sync::Arc;
use std::time::Duration;

/// The names of one network's `/readyz` checks: `rpc` and `roles` with one network (as before),
/// `rpc base` and `roles base` with several.
#[derive(Clone, Copy)]
pub(super) struct Checks {
    pub(super) rpc: &'static str,
    pub(super) roles: &'static str,
}

impl Checks {
    pub(super) const SINGLE: Checks = Checks {
        rpc: "rpc",
        roles: "roles",
    };

    pub(super) fn for_network(name: Option<&Network>, single: bool) -> Checks {
        match name {
            Some(name) if !single => Checks {
                // Made once per configured network at start: a handful of bytes for the
                // process's life, so readiness keeps its `&'static str` check names.
                rpc: Box::leak(format!("rpc {name}").into_boxed_str()),
                roles: Box::leak(format!("roles {name}").into_boxed_str()),
            },
            _ => Checks::SINGLE,
        }
    }
}

/// Reaches every configured network once: one answering another chain id than configured
/// refuses to start (a wrong RPC would mint on the wrong chain). One not reachable yet is
/// checked again when its loop connects.
pub(super) async fn check_chain_ids(networks: &[NetworkPlan]) -> anyhow::Result<()> {
    for network in networks {
        let Some(expected) = network.chain_id else {
            continue;
        };
        let reached = tokio::time::timeout(
            RPC_PROBE_EVERY,
            crate::chain::RpcNode::connect(&network.rpc_url),
        )
        .await;
        if let Ok(Ok(node)) = reached {
            let found = crate::chain::Node::chain_id(&node);
            if found != expected {
                bail!(
                    "network {}: {} answers chain id {found}, configured {expected}: refusing to start",
                    network.name.as_ref().map_or("(single)", Network::as_str),
                    redact_url(&network.rpc_url)
                );
            }
        }
    }
    Ok(())
}

/// Connects to the network's RPC, retrying with capped backoff and jitter while `/readyz` says
/// why. An RPC answering another chain id than configured is never used: it is reported and
/// tried again (an operator may be fixing it), and nothing is sent meanwhile.
pub(super) async fn connect_chain(
    network: &NetworkPlan,
    readiness: &Readiness,
    checks: Checks,
) -> Chain {
    let mut delay = RPC_RETRY_FIRST;
    let chain = loop {
        let failure = match crate::chain::RpcNode::connect_with(
            &network.rpc_url,
            network.log_range_blocks,
        )
        .await
        {
            Ok(node) => match network.chain_id {
                Some(expected) if crate::chain::Node::chain_id(&node) != expected => {
                    let text = format!(
                        "answers chain id {}, configured {expected}",
                        crate::chain::Node::chain_id(&node)
                    );
                    tracing::error!(network = ?network.name.as_ref().map(Network::as_str), rpc = %redact_url(&network.rpc_url), problem = %text, "rpc: wrong chain; not used");
                    text
                }
                _ => break Chain::new(Arc::new(node), network.signer.clone()),
            },
            Err(e) => {
                tracing::warn!(network = ?network.name.as_ref().map(Network::as_str), error = %e, retry_in_ms = delay.as_millis(), "rpc: not reachable; intake is served, the reconciler waits");
                e.to_string()
            }
        };
        crate::metrics::heartbeat();
        readiness.fail(checks.rpc, failure);
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep(delay + jitter).await;
        delay = delay.saturating_mul(2).min(RPC_RETRY_MAX);
    };
    readiness.pass(checks.rpc);
    chain
}

/// Keeps the network's `rpc` and `roles` checks of `/readyz` current while its reconciler runs.
pub(super) async fn probe_rpc(
    chain: Chain,
    network: Network,
    store: Arc<dyn Store>,
    readiness: Readiness,
    checks: Checks,
) {
    loop {
        tokio::time::sleep(RPC_PROBE_EVERY).await;
        match tokio::time::timeout(RPC_PROBE_EVERY, chain.head()).await {
            Ok(Ok(_)) => readiness.pass(checks.rpc),
            Ok(Err(e)) => readiness.fail(checks.rpc, e.to_string()),
            Err(_) => readiness.fail(checks.rpc, "eth_blockNumber: timed out"),
        }
        check_roles(&chain, &network, store.as_ref(), &readiness, checks).await;
    }
}

/// The `roles` check of `/readyz`: the bot (whichever signer holds its key) must hold DEPOSIT and
/// WITHDRAW on every asset's authorizer. A missing role is logged as an error naming it and the
/// issuer reports not ready; its mints and burns would not estimate, so nothing is spent meanwhile.
pub(super) async fn check_roles(
    chain: &Chain,
    network: &Network,
    store: &dyn Store,
    readiness: &Readiness,
    checks: Checks,
) {
    let assets = match store.assets() {
        Ok(assets) => assets,
        Err(e) => {
            readiness.fail(checks.roles, format!("cannot read the asset list: {e}"));
            return;
        }
    };
    let assets: Vec<_> = assets
        .into_iter()
        .filter(|a| a.network == *network)
        .collect();
    let mut problems = Vec::new();
    for asset in &assets {
        let checked =
            tokio::time::timeout(RPC_PROBE_EVERY, chain.missing_roles(asset.authorizer)).await;
        match checked {
            Ok(Ok(missing)) if missing.is_empty() => {}
            Ok(Ok(missing)) => problems.push(format!(
                "bot {:#x} ({} signer) lacks {} on {} ({}) authorizer {:#x}",
                chain.bot(),
                chain.signer().kind(),
                missing.join(" and "),
                asset.underlying,
                asset.network,
                asset.authorizer
            )),
            Ok(Err(e)) => problems.push(format!("roles on {}: {e}", asset.underlying)),
            Err(_) => problems.push(format!("roles on {}: timed out", asset.underlying)),
        }
    }
    if problems.is_empty() {
        readiness.pass(checks.roles);
    } else {
        let text = problems.join("; ");
        tracing::error!(problem = %text, "the bot lacks vault roles it needs: not ready");
        readiness.fail(checks.roles, text);
    }
}
