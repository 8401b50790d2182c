//! Auditor reports: the chain and Alpaca, reconciled at one block by [`reconciler::audit`], and
//! rendered as JSON, CSV, Markdown or HTML; optionally signed with the issuer's key.
//!
//! - [`observe`]: reads the vaults' logs (bounded ranges, progress on a terminal), supply and
//!   balances at the block, and Alpaca's request lists. The redb cache is never read for facts:
//!   at most for the asset list, which the flags can give instead.
//! - [`render`]: the four formats; the JSON is canonical (keys sorted) so it can be signed.
//! - [`sign`]: EIP-191 over the canonical JSON, and the check anyone can run with only the address.
//!
//! # JSON schema (`schema_version` 1)
//!
//! The document is [`reconciler::audit::AuditReport`] with keys sorted. Quantities are exact
//! decimal strings in shares (18 decimals; signed ones may start with `-`), addresses and hashes
//! are 0x-prefixed lowercase hex, receipt ids 0x-prefixed hex.
//!
//! - `schema_version`, `at_block`, `in_flight` (bot transactions sent and not mined, at report
//!   time), `balanced` (every asset's `difference` and `unexplained` are zero), `notices` (bot-wide
//!   items), `assets`: one object per asset with `underlying`, `token`, `network`, `vault`, `bot`,
//!   `deploy_block`, `totals`, `difference`, `explained`, `unexplained`, `items`, `receipts`,
//!   `series`.
//! - `difference` = `totals.total_supply − totals.alpaca_minted + totals.alpaca_redeemed`.
//! - `items[]`: `kind` (see [`reconciler::audit::ItemKind`]), `at` (`{block, log_index, tx_hash}`
//!   or null), `tokenization_request_id`, `issuer_request_id`, `wallet`, `qty`, `effect` (exact
//!   contribution to `difference`), `detail`.
//! - A signed file is `{"report": <the document>, "signature": "0x<65 bytes>", "signer": "0x.."}`;
//!   the signature is EIP-191 (`personal_sign`) over the compact JSON of `report` with sorted keys.

mod observe;
pub mod render;
pub mod sign;

pub use observe::observe;
pub use sign::{sign, verify, SignedReport};

use crate::chain::Chain;
mod args;

use crate::store::{RedbStore, Store};
use alloy::primitives::Address;
use anyhow::{bail, Context};
pub use args::{ReportArgs, ReportCommand, ReportVerifyArgs};
use reconciler::audit::{audit, AuditReport};
use reconciler::{Network, Symbol};
use std::path::Path;

/// Why a report could not be made or checked.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The node failed, timed out or answered something that does not decode.
    #[error("chain: {0}")]
    Chain(String),
    /// Alpaca's request list could not be read.
    #[error("alpaca: {0}")]
    Alpaca(String),
    /// The audit itself refused the observations (a sum overflowed).
    #[error("audit: {0}")]
    Audit(#[from] reconciler::audit::AuditError),
    /// A report or signed file is not the JSON it should be.
    #[error("json: {0}")]
    Json(String),
    /// Signing failed in the signer backend.
    #[error("signing: {0}")]
    Sign(String),
    /// The signature does not recover to the expected address: wrong signer or altered report.
    #[error("signature check failed: {0}")]
    BadSignature(String),
}

/// One asset to audit: where its vault is and from which block to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetSpec {
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub vault: Address,
    pub deploy_block: u64,
}

/// Output formats of `issuer report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Json,
    Csv,
    Markdown,
    Html,
}

/// Renders `report` in `format`.
pub fn render(report: &AuditReport, format: ReportFormat) -> Result<String, ReportError> {
    match format {
        ReportFormat::Json => render::json(report),
        ReportFormat::Csv => Ok(render::csv(report)),
        ReportFormat::Markdown => Ok(render::markdown(report)),
        ReportFormat::Html => Ok(render::html(report)),
    }
}

/// The latest block with `confirmations` blocks on it (its own included).
pub fn confirmed_block(head: u64, confirmations: u64) -> u64 {
    head.saturating_sub(confirmations.saturating_sub(1))
}

/// `issuer report` and `issuer report verify`.
pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    if let Some(ReportCommand::Verify(v)) = &args.command {
        let text = std::fs::read_to_string(&v.file)
            .with_context(|| format!("reading {}", v.file.display()))?;
        let signer = verify(&text, v.address)?;
        eprintln!(
            "OK: {} is signed by {signer:#x} and unaltered",
            v.file.display()
        );
        return Ok(());
    }
    if args.sign && args.format != ReportFormat::Json {
        bail!("--sign signs the canonical JSON: use it with --format json");
    }
    let mut assets = asset_list(&args).await?;
    if let Some(only) = &args.asset {
        assets.retain(|a| a.underlying.as_str() == only);
        if assets.is_empty() {
            bail!("asset {only} is not in the asset list");
        }
    }
    if args.vault.is_none() {
        if let Some(only) = &args.network {
            assets.retain(|a| a.network.as_str() == only);
            if assets.is_empty() {
                bail!("no asset on network {only}");
            }
        }
    }
    let signer = args.chain.signer().await?;
    let broker = args.alpaca.broker()?;
    let (text, verdict) = match args.networks.as_deref().filter(|n| !n.trim().is_empty()) {
        None => {
            let networks: std::collections::BTreeSet<&str> =
                assets.iter().map(|a| a.network.as_str()).collect();
            if networks.len() > 1 {
                bail!(
                    "the assets are on several networks ({}) and RPC_URL is one chain: list them in ISSUER_NETWORKS, or pick RPC_URL's with --network",
                    networks.into_iter().collect::<Vec<_>>().join(", ")
                );
            }
            let chain = Chain::connect(&args.chain.rpc_url, signer.clone()).await?;
            let report =
                network_report(&args, &chain, &broker, &assets, args.confirmations).await?;
            let text = output(&args, &report, &signer).await?;
            let verdict = render::verdict(&report);
            if !report.balanced {
                tracing::warn!("the book is not balanced: see the report's items");
            }
            (text, (verdict, report.verdict.exit_code()))
        }
        Some(list) => {
            let sections = network_sections(&args, list, &signer, &broker, &assets).await?;
            if let [only] = sections.as_slice() {
                // One network: the report of old, in any format.
                let report = &only.report;
                let text = output(&args, report, &signer).await?;
                (text, (render::verdict(report), report.verdict.exit_code()))
            } else {
                let combined = reconciler::audit::combine(sections)?;
                let text = match args.format {
                    _ if args.sign => signed_text(&combined, &signer).await?,
                    ReportFormat::Json => render::json(&combined)?,
                    ReportFormat::Markdown => render::networks_markdown(&combined),
                    ReportFormat::Csv | ReportFormat::Html => bail!(
                        "several networks are reported as json or markdown; pick one network with --network for csv or html"
                    ),
                };
                if !combined.balanced {
                    tracing::warn!("the book is not balanced across networks: see the totals and each network's items");
                }
                let verdict = match combined.verdict {
                    reconciler::audit::Verdict::Balanced => {
                        "BALANCED on every network and in total per underlying"
                    }
                    reconciler::audit::Verdict::BalancedWithAttention => {
                        "BALANCED across networks, with items that need attention"
                    }
                    reconciler::audit::Verdict::NotBalanced => {
                        "NOT BALANCED: see the totals per underlying and each network's items"
                    }
                };
                (text, (verdict.to_owned(), combined.verdict.exit_code()))
            }
        }
    };
    if let Some(path) = &args.out {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    } else {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
    }
    if args.check {
        let (text, code) = verdict;
        eprintln!("{text}");
        if code != 0 {
            std::process::exit(code);
        }
    }
    Ok(())
}

/// One chain's audit of `assets` at its confirmed block (or --at-block).
async fn network_report(
    args: &ReportArgs,
    chain: &Chain,
    broker: &crate::alpaca::BrokerClient,
    assets: &[AssetSpec],
    confirmations: u64,
) -> anyhow::Result<AuditReport> {
    let head = chain.head().await?;
    let at_block = match args.at_block {
        Some(n) if n > head => bail!("--at-block {n} is past the chain's head {head}"),
        Some(n) => n,
        None => confirmed_block(head, confirmations),
    };
    tracing::info!(at_block, assets = assets.len(), bot = %chain.bot(), chain_id = chain.chain_id(), "building audit report");
    let input = observe(chain, broker, assets, at_block).await?;
    Ok(audit(&input)?)
}

/// Each listed network that has assets to report, audited on its own RPC (its chain id checked)
/// with its own bot and confirmations.
async fn network_sections(
    args: &ReportArgs,
    list: &str,
    signer: &crate::chain::BotSigner,
    broker: &crate::alpaca::BrokerClient,
    assets: &[AssetSpec],
) -> anyhow::Result<Vec<reconciler::audit::NetworkSection>> {
    let specs = crate::networks::parse(list)?;
    for asset in assets {
        if !specs.iter().any(|s| s.name == asset.network) {
            bail!(
                "asset {} is on network {}, which ISSUER_NETWORKS does not list: no RPC to read it on",
                asset.underlying,
                asset.network
            );
        }
    }
    let specs: Vec<_> = specs
        .into_iter()
        .filter(|s| assets.iter().any(|a| a.network == s.name))
        .collect();
    if specs.len() > 1 && args.at_block.is_some() {
        bail!("--at-block names one chain's block: pick the network with --network");
    }
    let mut sections = Vec::with_capacity(specs.len());
    for spec in specs {
        let bot = match &spec.key_env {
            None => signer.clone(),
            Some(var) => {
                let key = std::env::var(var).map_err(|_| {
                    anyhow::anyhow!(
                        "network {}: key-env names {var}, which is not set",
                        spec.name
                    )
                })?;
                crate::chain::BotSigner::from(crate::chain::EthersSigner::from_private_key(
                    key.trim(),
                )?)
            }
        };
        let node = crate::chain::RpcNode::connect_with(
            &spec.rpc_url,
            spec.log_range_blocks
                .unwrap_or(crate::chain::LOG_RANGE_BLOCKS_MAX),
        )
        .await?;
        let chain = Chain::new(std::sync::Arc::new(node), bot);
        if let Some(expected) = spec.chain_id {
            if chain.chain_id() != expected {
                bail!(
                    "network {}: the RPC answers chain id {}, configured {expected}",
                    spec.name,
                    chain.chain_id()
                );
            }
        }
        let own: Vec<AssetSpec> = assets
            .iter()
            .filter(|a| a.network == spec.name)
            .cloned()
            .collect();
        let report = network_report(
            args,
            &chain,
            broker,
            &own,
            spec.confirmations.unwrap_or(args.confirmations),
        )
        .await?;
        sections.push(reconciler::audit::NetworkSection {
            network: spec.name,
            chain_id: chain.chain_id(),
            report,
        });
    }
    Ok(sections)
}

/// One report in the chosen format, or signed.
async fn output(
    args: &ReportArgs,
    report: &AuditReport,
    signer: &crate::chain::BotSigner,
) -> anyhow::Result<String> {
    if args.sign {
        signed_text(report, signer).await
    } else {
        Ok(render(report, args.format)?)
    }
}

async fn signed_text(
    report: &(impl serde::Serialize + Sync),
    signer: &crate::chain::BotSigner,
) -> anyhow::Result<String> {
    let envelope = sign(report, signer).await?;
    let mut text = serde_json::to_string_pretty(&envelope).context("encoding the signed report")?;
    text.push('\n');
    Ok(text)
}

/// The asset list of the issuer running at `--issuer-url` (`GET /operator/assets`).
async fn running_issuer_assets(args: &ReportArgs) -> anyhow::Result<Vec<crate::store::Asset>> {
    use crate::http::operator_cli::{call, OperatorArgs, OperatorCommand};
    let operator = OperatorArgs {
        issuer_url: args.issuer_url.clone(),
        operator_key: args.operator_key.clone(),
        command: OperatorCommand::Assets,
    };
    let answer = call(&operator).await?;
    let assets = answer
        .get("assets")
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the issuer's answer has no asset list"))?;
    Ok(serde_json::from_value(assets)?)
}

/// The assets to audit: from the flags, or else from the store's asset list. Opening the store is
/// only for that list; the report never reads the cache's observations.
async fn asset_list(args: &ReportArgs) -> anyhow::Result<Vec<AssetSpec>> {
    if let Some(vault) = args.vault {
        let (Some(underlying), Some(token), Some(deploy_block)) =
            (&args.underlying, &args.token, args.deploy_block)
        else {
            bail!("--vault needs --underlying, --token and --deploy-block");
        };
        return Ok(vec![AssetSpec {
            underlying: Symbol::parse(underlying)?,
            token: Symbol::parse(token)?,
            network: Network::parse(args.network.as_deref().unwrap_or("anvil"))?,
            vault,
            deploy_block,
        }]);
    }
    let path = args
        .db
        .clone()
        .unwrap_or_else(|| Path::new(".run/issuer.redb").to_path_buf());
    if !path.exists() {
        bail!("no asset list: {} does not exist; pass --vault, --underlying, --token and --deploy-block", path.display());
    }
    let stored = match RedbStore::open(&path) {
        Ok(store) => {
            let assets = store.assets()?;
            store.close();
            assets
        }
        // A running issuer holds the file: ask it instead (the same list, over its operator API).
        Err(open_error) => running_issuer_assets(args).await.with_context(|| {
            format!(
                "cannot read the asset list from {} ({open_error}) nor from the issuer at {}; pass --vault, --underlying, --token and --deploy-block",
                path.display(),
                args.issuer_url
            )
        })?,
    };
    let mut assets: Vec<AssetSpec> = stored
        .into_iter()
        .map(|a| AssetSpec {
            underlying: a.underlying,
            token: a.token,
            network: a.network,
            vault: a.vault,
            deploy_block: a.deploy_block,
        })
        .collect();
    assets.sort_by(|a, b| {
        (a.underlying.as_str(), a.network.as_str())
            .cmp(&(b.underlying.as_str(), b.network.as_str()))
    });
    Ok(assets)
}
