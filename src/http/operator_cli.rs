//! `issuer operator ...`: a thin client of the `/operator` routes. The running server holds the
//! redb file lock, so operator commands go through HTTP instead of opening the store.

use crate::config::Secret;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// How long one operator request may take; the server answers after one fsync.
const REQUEST_TIMEOUT_SECS: u64 = 30;

/// Settings and the command for the operator client.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Base URL of the running issuer.
    #[arg(
        long,
        env = "ISSUER_URL",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    pub issuer_url: String,
    /// The operator key (`X-OPERATOR-KEY`). Defaults to the local stack's key when the issuer is
    /// on loopback.
    #[arg(
        long,
        env = "ISSUER_OPERATOR_KEY",
        hide_env_values = true,
        global = true
    )]
    pub operator_key: Option<Secret>,
    #[command(subcommand)]
    pub command: OperatorCommand,
}

/// One operator action; each maps to one `/operator` route.
#[derive(Debug, Clone, Subcommand)]
pub enum OperatorCommand {
    /// Register an Authorized Participant by email (Alpaca then links it).
    RegisterAccount {
        #[arg(long)]
        email: String,
    },
    /// Attach the AP's Alpaca account UUID to a registered client: mints naming
    /// `client_account_id` then resolve to it, and its redemptions are requested with that field.
    SetAlpacaAccount {
        /// The client_id our connect endpoint answered for the AP.
        #[arg(long)]
        client_id: String,
        /// The AP's account id at Alpaca (a UUID).
        #[arg(long)]
        alpaca_account_id: String,
    },
    /// Whitelist a wallet for a client.
    AddWallet {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        wallet: String,
    },
    /// Remove a wallet from a client's whitelist.
    RemoveWallet {
        #[arg(long)]
        client_id: String,
        #[arg(long)]
        wallet: String,
    },
    /// Add or replace the asset of an underlying on a network.
    AddAsset {
        /// Underlying equity symbol, e.g. AAPL.
        #[arg(long)]
        underlying: String,
        /// Token symbol, e.g. tAAPL.
        #[arg(long)]
        token: String,
        /// Network as Alpaca names it (base, ethereum, ...), or a configured local one (anvil).
        #[arg(long)]
        network: String,
        /// The OffchainAssetReceiptVault's address.
        #[arg(long)]
        vault: String,
        /// The vault's receipt (ERC-1155) address.
        #[arg(long)]
        receipt: String,
        /// The vault's authorizer address.
        #[arg(long)]
        authorizer: String,
        /// Block the vault was deployed in: log scans start there.
        #[arg(long)]
        deploy_block: u64,
        /// Largest quantity one mint may ask for (default: 1,000,000,000 shares).
        #[arg(long)]
        mint_qty_max: Option<String>,
    },

    /// Suspend minting of an underlying on every network.
    Freeze {
        #[arg(long)]
        underlying: String,
    },
    /// Resume minting of an underlying.
    Unfreeze {
        #[arg(long)]
        underlying: String,
    },
    /// List work that is not converging.
    Stuck,
    /// List accounts with their wallets.
    Accounts,
    /// List assets.
    Assets,
    /// List redemptions and their states.
    Redemptions,
    /// Send a flagged redemption's tokens back to its sender (exactly once).
    ReturnRedemption {
        /// The redemption id (`red-<tx hash>-<log index>`).
        id: String,
    },
    /// Start again a redemption whose burns kept failing or whose redeem call Alpaca refused
    /// (after fixing the cause).
    RetryRedemption {
        /// The redemption id.
        id: String,
    },
    /// Start a stopped mint again (failed attempts, or a callback Alpaca refused) after fixing the
    /// cause; the reconciler asks Alpaca first, then tries again.
    RetryMint {
        /// The issuer_request_id.
        id: String,
    },
}

impl OperatorCommand {
    /// The route, method and body this command sends.
    fn request(&self) -> (Method, String, Option<Value>) {
        match self {
            OperatorCommand::RegisterAccount { email } => (
                Method::POST,
                "/operator/accounts".into(),
                Some(json!({ "email": email })),
            ),
            OperatorCommand::SetAlpacaAccount {
                client_id,
                alpaca_account_id,
            } => (
                Method::POST,
                format!(
                    "/operator/accounts/{}/alpaca-account",
                    path_segment(client_id)
                ),
                Some(json!({ "alpaca_account_id": alpaca_account_id })),
            ),
            OperatorCommand::AddWallet { client_id, wallet } => (
                Method::POST,
                "/operator/wallets".into(),
                Some(json!({ "client_id": client_id, "wallet": wallet })),
            ),
            OperatorCommand::RemoveWallet { client_id, wallet } => (
                Method::DELETE,
                "/operator/wallets".into(),
                Some(json!({ "client_id": client_id, "wallet": wallet })),
            ),
            OperatorCommand::AddAsset {
                underlying,
                token,
                network,
                vault,
                receipt,
                authorizer,
                deploy_block,
                mint_qty_max,
            } => (
                Method::POST,
                "/operator/assets".into(),
                Some(json!({
                    "underlying": underlying, "token": token, "network": network, "vault": vault,
                    "receipt": receipt, "authorizer": authorizer, "deploy_block": deploy_block,
                    "mint_qty_max": mint_qty_max,
                })),
            ),
            OperatorCommand::Freeze { underlying } => (
                Method::POST,
                format!("/operator/assets/{}/freeze", path_segment(underlying)),
                None,
            ),
            OperatorCommand::Unfreeze { underlying } => (
                Method::POST,
                format!("/operator/assets/{}/unfreeze", path_segment(underlying)),
                None,
            ),
            OperatorCommand::Stuck => (Method::GET, "/operator/stuck".into(), None),
            OperatorCommand::Accounts => (Method::GET, "/operator/accounts".into(), None),
            OperatorCommand::Assets => (Method::GET, "/operator/assets".into(), None),
            OperatorCommand::Redemptions => (Method::GET, "/operator/redemptions".into(), None),
            OperatorCommand::ReturnRedemption { id } => (
                Method::POST,
                format!("/operator/redemptions/{}/return", path_segment(id)),
                None,
            ),
            OperatorCommand::RetryRedemption { id } => (
                Method::POST,
                format!("/operator/redemptions/{}/retry", path_segment(id)),
                None,
            ),
            OperatorCommand::RetryMint { id } => (
                Method::POST,
                format!("/operator/mints/{}/retry", path_segment(id)),
                None,
            ),
        }
    }
}

/// Keeps a symbol from changing the path: anything outside the id alphabet is percent-encoded
/// (the server then answers 404 for it).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Sends the command to the running issuer and prints its JSON answer on stdout. A non-2xx
/// answer is an error naming the status and the body.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let answer = call(&args).await?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// [`run`] without the printing: the answer as JSON.
pub async fn call(args: &OperatorArgs) -> anyhow::Result<Value> {
    let local = Secret::new(crate::config::LOCAL_OPERATOR_KEY);
    let key = match &args.operator_key {
        Some(key) => key,
        // The local stack (`just up`) serves on loopback with its built-in key.
        None if crate::config::is_loopback_url(&args.issuer_url) => &local,
        None => bail!(
            "the operator key is required for a non-local issuer: --operator-key or ISSUER_OPERATOR_KEY"
        ),
    };
    let (method, path, body) = args.command.request();
    let url = format!("{}{path}", args.issuer_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
        .build()
        .context("building the HTTP client")?;
    let mut request = client
        .request(method.clone(), &url)
        .header("X-OPERATOR-KEY", key.expose());
    if let Some(body) = &body {
        request = request.json(body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer of {method} {url}"))?;
    if !status.is_success() {
        bail!("{method} {url} answered {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{method} {url} answered non-JSON: {text}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: OperatorArgs,
    }

    #[test]
    fn commands_parse_and_map_to_routes() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["x", "--operator-key", "k", "freeze", "--underlying", "AAPL"])
                .unwrap();
        assert_eq!(cli.args.command.request().1, "/operator/assets/AAPL/freeze");
        let cli = Cli::try_parse_from(["x", "stuck", "--issuer-url", "http://h:1"]).unwrap();
        assert_eq!(cli.args.issuer_url, "http://h:1");
        assert_eq!(path_segment("A/../B"), "A%2F..%2FB");
    }
}
