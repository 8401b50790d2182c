//! `issuer alpaca-sim ...`: serve the simulator, or drive a running one.

use super::mint::{Confirm, MintScript};
use super::{serve, Sim, SimClient, SimConfig};
use anyhow::{bail, Context};
use std::fmt;
use std::net::SocketAddr;

/// Arguments of `issuer alpaca-sim`.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum SimCommand {
    /// Run the simulator until ctrl-c.
    Serve(ServeArgs),
    /// Play Alpaca's side of one mint against the issuer, through a running simulator.
    Mint(MintArgs),
    /// Print a running simulator's state as JSON.
    State(StateArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Loopback address to listen on (the control routes have no auth, so nothing else is allowed).
    #[arg(long, env = "ALPACA_SIM_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The issuer's tokenization account id the Broker API paths must carry.
    #[arg(long, env = "ALPACA_SIM_ACCOUNT_ID", default_value = "issuer-local")]
    pub account_id: String,
    /// HTTP Basic user the Broker API accepts.
    #[arg(long, env = "ALPACA_SIM_API_KEY", default_value = "sim-key")]
    pub api_key: String,
    /// HTTP Basic password the Broker API accepts.
    #[arg(
        long,
        env = "ALPACA_SIM_API_SECRET",
        hide_env_values = true,
        default_value = "sim-secret"
    )]
    pub api_secret: String,
    /// Seed of the fault dice and ids, to replay a run.
    #[arg(long, env = "ALPACA_SIM_SEED")]
    pub seed: Option<u64>,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("account_id", &self.account_id)
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("seed", &self.seed)
            .finish()
    }
}

#[derive(clap::Args)]
pub struct MintArgs {
    #[arg(long, env = "ALPACA_SIM_URL", default_value = "http://127.0.0.1:9000")]
    pub sim_url: String,
    /// Base URL of the issuer's HTTP server.
    #[arg(long, env = "ISSUER_URL", default_value = "http://127.0.0.1:8000")]
    pub issuer_url: String,
    /// The key Alpaca sends as `X-API-KEY`.
    #[arg(long, env = "ISSUER_API_KEY", hide_env_values = true, default_value = crate::config::LOCAL_API_KEY)]
    pub issuer_api_key: String,
    /// Shares to mint, a decimal string.
    #[arg(long)]
    pub qty: String,
    #[arg(long)]
    pub wallet: String,
    /// The client as the id the issuer's connect endpoint answered (`client_external_account_id`).
    #[arg(
        long,
        visible_alias = "client-id",
        required_unless_present = "client_account_id",
        conflicts_with = "client_account_id"
    )]
    pub client_external_account_id: Option<String>,
    /// The client as the AP's Alpaca account UUID (`client_account_id`).
    #[arg(long)]
    pub client_account_id: Option<String>,
    #[arg(long, default_value = "AAPL")]
    pub underlying: String,
    #[arg(long, default_value = "tAAPL")]
    pub token: String,
    #[arg(long, default_value = "anvil")]
    pub network: String,
    /// Alpaca's id for the request; fresh if not given.
    #[arg(long)]
    pub tokenization_request_id: Option<String>,
    /// Confirm the journal as `rejected` instead of `completed`.
    #[arg(long, conflicts_with = "no_confirm")]
    pub reject: bool,
    /// Do not send the confirm call at all.
    #[arg(long)]
    pub no_confirm: bool,
}

impl fmt::Debug for MintArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintArgs")
            .field("sim_url", &self.sim_url)
            .field("issuer_url", &self.issuer_url)
            .field("issuer_api_key", &"<redacted>")
            .field("qty", &self.qty)
            .field("wallet", &self.wallet)
            .field(
                "client_external_account_id",
                &self.client_external_account_id,
            )
            .field("client_account_id", &self.client_account_id)
            .field("underlying", &self.underlying)
            .field("token", &self.token)
            .field("network", &self.network)
            .field("tokenization_request_id", &self.tokenization_request_id)
            .field("reject", &self.reject)
            .field("no_confirm", &self.no_confirm)
            .finish()
    }
}

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    #[arg(long, env = "ALPACA_SIM_URL", default_value = "http://127.0.0.1:9000")]
    pub sim_url: String,
}

/// Runs one `alpaca-sim` command. `serve` returns after ctrl-c.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    match args.command {
        SimCommand::Serve(serve_args) => run_serve(serve_args).await,
        SimCommand::Mint(mint_args) => run_mint(mint_args).await,
        SimCommand::State(state_args) => {
            let url = format!("{}/sim/state", state_args.sim_url.trim_end_matches('/'));
            let response = reqwest::get(&url)
                .await
                .with_context(|| format!("GET {url}"))?;
            print_answer(response).await
        }
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: the simulator's control routes have no auth; use a loopback address",
            args.listen
        );
    }
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let bound = listener.local_addr()?;
    let sim = Sim::new(SimConfig {
        account_id: args.account_id,
        api_key: args.api_key,
        api_secret: args.api_secret,
        seed: args.seed,
    });
    tracing::info!(%bound, "alpaca simulator listening");
    let shutdown = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for ctrl-c; serving until killed");
            std::future::pending::<()>().await;
        }
    };
    serve(listener, sim, shutdown).await?;
    tracing::info!("alpaca simulator stopped");
    Ok(())
}

async fn run_mint(args: MintArgs) -> anyhow::Result<()> {
    let confirm = if args.no_confirm {
        None
    } else if args.reject {
        Some(Confirm::Rejected)
    } else {
        Some(Confirm::Completed)
    };
    let script = MintScript {
        issuer_url: args.issuer_url,
        issuer_api_key: args.issuer_api_key,
        tokenization_request_id: args.tokenization_request_id,
        qty: args.qty,
        underlying_symbol: args.underlying,
        token_symbol: args.token,
        network: args.network,
        client: match (args.client_external_account_id, args.client_account_id) {
            (_, Some(id)) => SimClient::ClientAccountId(id),
            (Some(id), None) => SimClient::ClientExternalAccountId(id),
            (None, None) => {
                bail!("--client-external-account-id or --client-account-id is required")
            }
        },
        wallet_address: args.wallet,
        confirm,
    };
    let url = format!("{}/sim/mint", args.sim_url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .json(&script)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    print_answer(response).await
}

/// Prints the JSON answer pretty on stdout; a non-2xx answer is printed too, then an error.
async fn print_answer(response: reqwest::Response) -> anyhow::Result<()> {
    let status = response.status();
    let bytes = response.bytes().await.context("reading the answer")?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(json) => println!("{}", serde_json::to_string_pretty(&json)?),
        Err(_) => println!("{}", String::from_utf8_lossy(&bytes)),
    }
    if !status.is_success() {
        bail!("simulator answered {status}");
    }
    Ok(())
}
