//! The flags of `issuer report`.

use crate::config::Secret;
use crate::settings::{AlpacaArgs, ChainArgs};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `issuer report`: reads only the chain and Alpaca; the store at most for the asset list.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: Option<ReportCommand>,
    /// Only this underlying (default: every asset).
    #[arg(long)]
    pub asset: Option<String>,
    /// The block to report at (default: the latest block with CONFIRMATIONS blocks on it).
    #[arg(long)]
    pub at_block: Option<u64>,
    /// Blocks a log needs (its own included) for the default block.
    #[arg(long, env = "CONFIRMATIONS", default_value_t = 1)]
    pub confirmations: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: crate::report::ReportFormat,
    /// Write here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sign the canonical JSON with the bot's key (EIP-191): `{report, signature, signer}`.
    #[arg(long)]
    pub sign: bool,
    /// Exit with the verdict: 0 balanced and nothing needs attention, 1 balanced but items need
    /// attention, 2 not balanced (the report is written either way).
    #[arg(long)]
    pub check: bool,
    /// One vault to audit instead of the issuer's asset list.
    #[arg(long)]
    pub vault: Option<alloy::primitives::Address>,
    /// Underlying of --vault, e.g. AAPL.
    #[arg(long)]
    pub underlying: Option<String>,
    /// Token symbol of --vault, e.g. tAAPL.
    #[arg(long)]
    pub token: Option<String>,
    /// Block the --vault was deployed in: the scan starts there.
    #[arg(long)]
    pub deploy_block: Option<u64>,
    /// With --vault: the vault's network as Alpaca spells it (default `anvil`). Otherwise: report
    /// only this network (default: every network).
    #[arg(long, env = "ISSUER_NETWORK")]
    pub network: Option<String>,
    /// The networks to report on, as `issuer serve` takes them (`name=base,rpc=URL,chain-id=N;...`,
    /// see [`crate::networks`]): each asset is read on its own network's RPC, one section per
    /// network plus a total per underlying. Unset: RPC_URL for every asset.
    #[arg(long, env = "ISSUER_NETWORKS", hide_env_values = true)]
    pub networks: Option<String>,
    /// The redb file holding the asset list (default .run/issuer.redb), when --vault is not given.
    #[arg(long, env = "ISSUER_DB")]
    pub db: Option<PathBuf>,
    /// The running issuer asked for the asset list when its store is in use (as while `serve`
    /// runs).
    #[arg(long, env = "ISSUER_URL", default_value = "http://127.0.0.1:8000")]
    pub issuer_url: String,
    /// Operator key for that question; defaults to the local stack's key on loopback.
    #[arg(long, env = "ISSUER_OPERATOR_KEY", hide_env_values = true)]
    pub operator_key: Option<Secret>,
    #[command(flatten)]
    pub chain: ChainArgs,
    #[command(flatten)]
    pub alpaca: AlpacaArgs,
}

/// Subcommands of `issuer report`.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Check a signed report: exits non-zero unless it recovers to --address and is unaltered.
    Verify(ReportVerifyArgs),
}

#[derive(Debug, Args)]
pub struct ReportVerifyArgs {
    /// The signed report file (`issuer report --sign --out FILE`).
    pub file: PathBuf,
    /// The issuer's address the report must be signed by.
    #[arg(long)]
    pub address: alloy::primitives::Address,
}
