//! The command line: subcommands and their settings (flags with environment variables), and
//! the wiring that turns them into running parts. `main.rs` only parses and calls [`run`].

use crate::chain::{deploy, Chain};
use crate::config::{is_loopback_url, Secret};
use crate::http::{self};
use crate::store::{Asset, Store};
use crate::telemetry::LogFormat;
use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use reconciler::{Network, Symbol};
use std::path::PathBuf;

pub use crate::config::{LOCAL_API_KEY, LOCAL_OPERATOR_KEY};
pub use crate::report::{ReportArgs, ReportCommand, ReportVerifyArgs};
pub use crate::serve::{AlpacaAuthScheme, ServeArgs};
pub use crate::settings::{AlpacaArgs, ChainArgs, SignerBackend};

#[derive(Debug, Parser)]
#[command(
    name = "issuer",
    version,
    about = "Issuer side of Alpaca's Instant Tokenization Network"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "human",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve Alpaca's endpoints and run the reconciler.
    Serve(ServeArgs),
    /// Deploy receipt, vault and authorizer for one asset and record it in the store.
    Deploy(DeployArgs),
    /// Run or drive the Alpaca simulator.
    AlpacaSim(crate::sim::SimArgs),
    /// Run the Fireblocks simulator (raw signing with a key it holds).
    FireblocksSim(crate::fireblocks_sim::FireblocksSimArgs),
    /// Operator commands against a running issuer (accounts, wallets, assets, stuck work).
    Operator(crate::http::operator_cli::OperatorArgs),
    /// Redemptions on a running issuer: `list`, or `return ID` for a flagged one.
    Redemption(RedemptionArgs),
    /// Auditor report: chain against Alpaca at a block (JSON, CSV, Markdown, HTML; signed), or
    /// `report verify` to check a signed one.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct RedemptionArgs {
    #[arg(long, env = "ISSUER_URL", default_value = "http://127.0.0.1:8000")]
    pub issuer_url: String,
    #[arg(long, env = "ISSUER_OPERATOR_KEY", hide_env_values = true, default_value = LOCAL_OPERATOR_KEY, hide_default_value = true)]
    pub operator_key: Secret,
    #[command(subcommand)]
    pub command: RedemptionCommand,
}

#[derive(Debug, Subcommand)]
pub enum RedemptionCommand {
    /// List redemptions and their states.
    List,
    /// Send a flagged redemption's tokens back to its sender, exactly once.
    Return {
        /// The redemption id (`red-<tx hash>-<log index>`).
        id: String,
    },
    /// Start again a redemption whose burns kept failing or whose redeem call Alpaca refused,
    /// after fixing the cause.
    Retry {
        /// The redemption id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Underlying equity symbol, e.g. AAPL.
    #[arg(long)]
    pub asset: String,
    /// Token symbol, e.g. tAAPL.
    #[arg(long)]
    pub token: String,
    /// Network name as Alpaca spells it: one of Alpaca's, or a local one (ISSUER_LOCAL_NETWORKS;
    /// anvil on a loopback RPC).
    #[arg(long, env = "ISSUER_NETWORK", default_value = "anvil")]
    pub network: String,
    /// Chains besides Alpaca's networks an asset may be on, comma-separated (as for `serve`).
    #[arg(long, env = "ISSUER_LOCAL_NETWORKS")]
    pub local_networks: Option<String>,
    /// Token name (defaults to "<TOKEN> tokenized <ASSET>").
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, env = "ISSUER_DB", default_value = ".run/issuer.redb")]
    pub db: PathBuf,
    #[command(flatten)]
    pub chain: ChainArgs,
    /// Days the vault stays certified.
    #[arg(long, default_value_t = 3650)]
    pub certify_days: u64,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => crate::serve::serve(args).await,
        Command::Deploy(args) => deploy_asset(args).await,
        Command::AlpacaSim(args) => crate::sim::run(args).await,
        Command::FireblocksSim(args) => crate::fireblocks_sim::run(args).await,
        Command::Operator(args) => crate::http::operator_cli::run(args).await,
        Command::Report(args) => crate::report::run(args).await,
        Command::Redemption(args) => {
            use crate::http::operator_cli::{OperatorArgs, OperatorCommand};
            let command = match args.command {
                RedemptionCommand::List => OperatorCommand::Redemptions,
                RedemptionCommand::Return { id } => OperatorCommand::ReturnRedemption { id },
                RedemptionCommand::Retry { id } => OperatorCommand::RetryRedemption { id },
            };
            crate::http::operator_cli::run(OperatorArgs {
                issuer_url: args.issuer_url,
                operator_key: Some(args.operator_key),
                command,
            })
            .await
        }
    }
}

async fn deploy_asset(args: DeployArgs) -> anyhow::Result<()> {
    let signer = args.chain.signer().await?;
    let store = crate::serve::open_store(&args.db)?;
    let underlying = Symbol::parse(&args.asset)?;
    let token = Symbol::parse(&args.token)?;
    let network = Network::parse(&args.network)?;
    let local = crate::serve::local_networks(
        args.local_networks.as_deref(),
        is_loopback_url(&args.chain.rpc_url),
    )?;
    if !http::ALPACA_NETWORKS.contains(&network.as_str()) && !local.contains(&network) {
        bail!(
            "network {network} is neither one of Alpaca's ({}) nor a local network (ISSUER_LOCAL_NETWORKS)",
            http::ALPACA_NETWORKS.join(", ")
        );
    }
    let certify_until =
        crate::clock::unix_now().saturating_add(args.certify_days.saturating_mul(86_400));
    let chain = Chain::connect(&args.chain.rpc_url, signer.clone()).await?;

    if let Some(asset) = store.asset(&underlying, &network)? {
        if !chain.code_at(asset.vault).await?.is_empty() {
            let deployed = deploy::Deployed {
                vault: asset.vault,
                receipt: asset.receipt,
                authorizer: asset.authorizer,
                deploy_block: asset.deploy_block,
            };
            deploy::ensure_ready(&args.chain.rpc_url, &signer, deployed, certify_until).await?;
            println!("{}", asset_json(&asset, "existing"));
            return Ok(());
        }
        tracing::warn!(vault = %asset.vault, "recorded vault has no code on this chain; deploying anew");
    }
    let name = args
        .name
        .unwrap_or_else(|| format!("{} tokenized {}", args.token, args.asset));
    let deployed = deploy::deploy(
        &args.chain.rpc_url,
        &signer,
        &name,
        token.as_str(),
        certify_until,
    )
    .await?;
    let asset = Asset {
        underlying,
        token,
        network,
        vault: deployed.vault,
        receipt: deployed.receipt,
        authorizer: deployed.authorizer,
        deploy_block: deployed.deploy_block,
        frozen: false,
        mint_qty_max: None,
    };
    store.put_asset(&asset)?;
    println!("{}", asset_json(&asset, "deployed"));
    Ok(())
}

fn asset_json(asset: &Asset, status: &str) -> serde_json::Value {
    serde_json::json!({
        "status": status,
        "underlying": asset.underlying,
        "token": asset.token,
        "network": asset.network,
        "vault": asset.vault,
        "receipt": asset.receipt,
        "authorizer": asset.authorizer,
        "deploy_block": asset.deploy_block,
    })
}
