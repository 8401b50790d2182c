//! `issuer fireblocks-sim serve`: the Fireblocks simulator as a process, for the local stack.

use super::{serve, FireblocksSim, FireblocksSimConfig};
use anyhow::{bail, Context};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `issuer fireblocks-sim`.
#[derive(clap::Args, Debug)]
pub struct FireblocksSimArgs {
    #[command(subcommand)]
    pub command: FireblocksSimCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum FireblocksSimCommand {
    /// Run the simulator until ctrl-c.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Loopback address to listen on (the control routes have no auth).
    #[arg(long, env = "FIREBLOCKS_SIM_LISTEN", default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// The API key the issuer must send.
    #[arg(long, env = "FIREBLOCKS_SIM_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// The API user's RSA public key (PEM file) JWTs must verify against.
    #[arg(long, env = "FIREBLOCKS_SIM_PUBLIC_KEY_PATH")]
    pub public_key_path: PathBuf,
    /// The vault account's secp256k1 key (hex) the simulator signs with.
    #[arg(long, env = "FIREBLOCKS_SIM_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: String,
    #[arg(long, env = "FIREBLOCKS_SIM_VAULT_ACCOUNT_ID", default_value = "0")]
    pub vault_account_id: String,
    #[arg(long, env = "FIREBLOCKS_SIM_ASSET_ID", default_value = "ETH")]
    pub asset_id: String,
}

impl fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeArgs")
            .field("listen", &self.listen)
            .field("public_key_path", &self.public_key_path)
            .field("vault_account_id", &self.vault_account_id)
            .field("asset_id", &self.asset_id)
            .finish_non_exhaustive()
    }
}

pub async fn run(args: FireblocksSimArgs) -> anyhow::Result<()> {
    let FireblocksSimCommand::Serve(args) = args.command;
    if !args.listen.ip().is_loopback() {
        bail!("the Fireblocks simulator listens on loopback only");
    }
    let public_key_pem = std::fs::read_to_string(&args.public_key_path)
        .with_context(|| format!("reading {}", args.public_key_path.display()))?;
    let sim = FireblocksSim::new(FireblocksSimConfig {
        api_key: args.api_key,
        public_key_pem,
        signing_key: args.signing_key,
        vault_account_id: args.vault_account_id,
        asset_id: args.asset_id,
    })
    .map_err(anyhow::Error::msg)?;
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, address = %sim.address(), "Fireblocks simulator serving");
    serve(listener, sim, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
