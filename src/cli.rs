//! The command line: subcommands and their settings (flags with environment variables), and
//! the wiring that turns them into running parts. `main.rs` only parses and calls [`run`].

use crate::alpaca::{BrokerClient, BrokerConfig, RetryPolicy};
use crate::chain::fireblocks::{FireblocksSettings, FireblocksSigner};
use crate::chain::kms::{KmsSettings, KmsSigner};
use crate::chain::{deploy, BotSigner, Chain, EthersSigner, SignerKind};
use crate::config::{
    is_anvil_dev_account, is_loopback_url, parse_cidrs, redact_url, Secret, ANVIL_DEV_KEY,
};
use crate::http::{self, ConnectionLimits, HttpConfig, Readiness, ServeOptions};
use crate::pass::{CrashPoint, PassConfig, Reconciler};
use crate::store::{Asset, RedbStore, Store};
use crate::telemetry::LogFormat;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use reconciler::{Network, Policy, Symbol};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::{LOCAL_API_KEY, LOCAL_OPERATOR_KEY};

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

/// Where the chain is and who signs. `Debug` shows the RPC URL redacted (it can carry keys) and
/// no credential.
#[derive(Clone, Args)]
pub struct ChainArgs {
    /// JSON-RPC endpoint of the chain.
    #[arg(
        long,
        env = "RPC_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8545"
    )]
    pub rpc_url: String,
    /// Which backend holds the bot's key: `local` (BOT_PRIVATE_KEY, or anvil's dev key on a
    /// loopback RPC), `keystore` (BOT_KEYSTORE), `aws-kms` (AWS_KMS_KEY_ID) or `fireblocks`
    /// (FIREBLOCKS_*). Unset: `keystore` when BOT_KEYSTORE is set, else `local`.
    #[arg(long = "signer", env = "BOT_SIGNER", value_enum)]
    pub signer_backend: Option<SignerBackend>,
    /// The bot's private key (hex). Defaults to anvil's first dev key, accepted only on a loopback RPC.
    #[arg(
        long,
        env = "BOT_PRIVATE_KEY",
        hide_env_values = true,
        conflicts_with = "keystore"
    )]
    pub private_key: Option<Secret>,
    /// An encrypted JSON keystore instead of a raw key.
    #[arg(long, env = "BOT_KEYSTORE")]
    pub keystore: Option<PathBuf>,
    /// Password of --keystore.
    #[arg(
        long,
        env = "BOT_KEYSTORE_PASSWORD",
        hide_env_values = true,
        default_value = ""
    )]
    pub keystore_password: Secret,
    /// `aws-kms`: the key (id, ARN or `alias/...`), key spec ECC_SECG_P256K1, usage SIGN_VERIFY.
    /// Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    /// AWS_PROFILE, web identity, instance role).
    #[arg(long, env = "AWS_KMS_KEY_ID")]
    pub aws_kms_key_id: Option<String>,
    /// `aws-kms`: endpoint override (a VPC endpoint, or a local emulator); unset: AWS's own.
    #[arg(long, env = "AWS_KMS_ENDPOINT")]
    pub aws_kms_endpoint: Option<String>,
    /// `aws-kms`: region; unset: the standard AWS chain (profile).
    #[arg(long, env = "AWS_REGION")]
    pub aws_region: Option<String>,
    /// `fireblocks`: API base URL.
    #[arg(
        long,
        env = "FIREBLOCKS_API_URL",
        default_value = "https://api.fireblocks.io"
    )]
    pub fireblocks_api_url: String,
    /// `fireblocks`: the API user's key (sent as X-API-Key and the JWT's `sub`).
    #[arg(long, env = "FIREBLOCKS_API_KEY", hide_env_values = true)]
    pub fireblocks_api_key: Option<Secret>,
    /// `fireblocks`: the API user's RSA private key (PEM file) the request JWTs are signed with.
    #[arg(long, env = "FIREBLOCKS_PRIVATE_KEY_PATH")]
    pub fireblocks_private_key_path: Option<PathBuf>,
    /// `fireblocks`: the vault account whose address for FIREBLOCKS_ASSET_ID is the bot.
    #[arg(long, env = "FIREBLOCKS_VAULT_ACCOUNT_ID")]
    pub fireblocks_vault_account_id: Option<String>,
    /// `fireblocks`: the asset whose vault address is the bot (ETH, ETH_TEST5, ...).
    #[arg(long, env = "FIREBLOCKS_ASSET_ID", default_value = "ETH")]
    pub fireblocks_asset_id: String,
    /// `fireblocks`: longest wait for one signing request in one action (milliseconds); past it
    /// the action fails and the request is looked up again (never re-sent) next time.
    #[arg(long, env = "FIREBLOCKS_SIGN_TIMEOUT_MS", default_value_t = 60_000)]
    pub fireblocks_sign_timeout_ms: u64,
}

/// The backends that can hold the bot's key (`BOT_SIGNER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignerBackend {
    /// A raw hex key (BOT_PRIVATE_KEY), or anvil's dev key on a loopback RPC.
    Local,
    /// An encrypted JSON keystore (BOT_KEYSTORE, BOT_KEYSTORE_PASSWORD).
    Keystore,
    /// An AWS KMS secp256k1 key (AWS_KMS_KEY_ID, AWS_KMS_ENDPOINT, AWS_REGION).
    AwsKms,
    /// Fireblocks raw signing (FIREBLOCKS_*).
    Fireblocks,
}

impl fmt::Debug for ChainArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainArgs")
            .field("rpc_url", &redact_url(&self.rpc_url))
            .field("signer_backend", &self.signer_backend)
            .field("private_key", &self.private_key)
            .field("keystore", &self.keystore)
            .field("keystore_password", &self.keystore_password)
            .field("aws_kms_key_id", &self.aws_kms_key_id)
            .field(
                "aws_kms_endpoint",
                &self.aws_kms_endpoint.as_deref().map(redact_url),
            )
            .field("aws_region", &self.aws_region)
            .field("fireblocks_api_url", &redact_url(&self.fireblocks_api_url))
            .field("fireblocks_api_key", &self.fireblocks_api_key)
            .field(
                "fireblocks_private_key_path",
                &self.fireblocks_private_key_path,
            )
            .field(
                "fireblocks_vault_account_id",
                &self.fireblocks_vault_account_id,
            )
            .field("fireblocks_asset_id", &self.fireblocks_asset_id)
            .field(
                "fireblocks_sign_timeout_ms",
                &self.fireblocks_sign_timeout_ms,
            )
            .finish()
    }
}

impl ChainArgs {
    /// The backend these settings choose.
    pub fn backend(&self) -> SignerBackend {
        self.signer_backend.unwrap_or(if self.keystore.is_some() {
            SignerBackend::Keystore
        } else {
            SignerBackend::Local
        })
    }

    /// Settings of a backend other than the chosen one are refused rather than ignored: a
    /// configuration never silently means another key than it seems to say.
    fn check_backend_settings(&self, backend: SignerBackend) -> anyhow::Result<()> {
        let set = [
            (
                SignerBackend::Local,
                "BOT_PRIVATE_KEY",
                self.private_key.is_some(),
            ),
            (
                SignerBackend::Keystore,
                "BOT_KEYSTORE",
                self.keystore.is_some(),
            ),
            (
                SignerBackend::AwsKms,
                "AWS_KMS_KEY_ID",
                self.aws_kms_key_id.is_some(),
            ),
            (
                SignerBackend::AwsKms,
                "AWS_KMS_ENDPOINT",
                self.aws_kms_endpoint.is_some(),
            ),
            (
                SignerBackend::Fireblocks,
                "FIREBLOCKS_API_KEY",
                self.fireblocks_api_key.is_some(),
            ),
            (
                SignerBackend::Fireblocks,
                "FIREBLOCKS_PRIVATE_KEY_PATH",
                self.fireblocks_private_key_path.is_some(),
            ),
            (
                SignerBackend::Fireblocks,
                "FIREBLOCKS_VAULT_ACCOUNT_ID",
                self.fireblocks_vault_account_id.is_some(),
            ),
        ];
        for (owner, name, present) in set {
            if present && owner != backend {
                bail!(
                    "{name} is set but BOT_SIGNER is {}: remove it or choose that signer",
                    signer_name(backend)
                );
            }
        }
        Ok(())
    }

    /// The bot's signer. Anvil's dev keys (the default, or one set explicitly) are refused unless
    /// the RPC is on loopback: their private keys are public. A remote backend is reached here
    /// (its public key or vault address read), so a wrong key id or credential fails at start.
    pub async fn signer(&self) -> anyhow::Result<BotSigner> {
        let backend = self.backend();
        self.check_backend_settings(backend)?;
        let signer = match backend {
            SignerBackend::Keystore => {
                let Some(path) = &self.keystore else {
                    bail!("BOT_SIGNER=keystore needs BOT_KEYSTORE");
                };
                BotSigner::Local {
                    signer: EthersSigner::from_keystore(path, self.keystore_password.expose())?,
                    kind: SignerKind::Keystore,
                }
            }
            SignerBackend::Local => BotSigner::from(match &self.private_key {
                Some(key) => EthersSigner::from_private_key(key.expose())?,
                None if is_loopback_url(&self.rpc_url) => {
                    EthersSigner::from_private_key(ANVIL_DEV_KEY)?
                }
                None => bail!(
                    "BOT_PRIVATE_KEY or BOT_KEYSTORE is required for a non-local RPC ({}), or a remote signer (BOT_SIGNER=aws-kms|fireblocks)",
                    redact_url(&self.rpc_url)
                ),
            }),
            SignerBackend::AwsKms => {
                let Some(key_id) = self.aws_kms_key_id.clone().filter(|k| !k.trim().is_empty())
                else {
                    bail!("BOT_SIGNER=aws-kms needs AWS_KMS_KEY_ID");
                };
                if let Some(endpoint) = &self.aws_kms_endpoint {
                    reqwest::Url::parse(endpoint).map_err(|e| {
                        anyhow::anyhow!("AWS_KMS_ENDPOINT is not a URL ({e}): {}", redact_url(endpoint))
                    })?;
                }
                let settings = KmsSettings {
                    key_id,
                    endpoint: self.aws_kms_endpoint.clone(),
                    region: self.aws_region.clone().filter(|r| !r.trim().is_empty()),
                };
                // Boxed: the SDK's future is deep and large; kept off the callers' futures.
                BotSigner::Kms(Arc::new(Box::pin(KmsSigner::connect(&settings)).await?))
            }
            SignerBackend::Fireblocks => {
                let (Some(api_key), Some(key_path), Some(vault)) = (
                    &self.fireblocks_api_key,
                    &self.fireblocks_private_key_path,
                    &self.fireblocks_vault_account_id,
                ) else {
                    bail!("BOT_SIGNER=fireblocks needs FIREBLOCKS_API_KEY, FIREBLOCKS_PRIVATE_KEY_PATH and FIREBLOCKS_VAULT_ACCOUNT_ID");
                };
                if self.fireblocks_sign_timeout_ms == 0 {
                    bail!("FIREBLOCKS_SIGN_TIMEOUT_MS must be at least 1");
                }
                let pem = std::fs::read_to_string(key_path).with_context(|| {
                    format!("reading FIREBLOCKS_PRIVATE_KEY_PATH {}", key_path.display())
                })?;
                let settings = FireblocksSettings {
                    api_url: self.fireblocks_api_url.clone(),
                    api_key: api_key.clone(),
                    private_key_pem: Secret::new(pem),
                    vault_account_id: vault.clone(),
                    asset_id: self.fireblocks_asset_id.clone(),
                    sign_timeout: Duration::from_millis(self.fireblocks_sign_timeout_ms),
                };
                BotSigner::Fireblocks(Arc::new(FireblocksSigner::connect(settings).await?))
            }
        };
        if is_anvil_dev_account(signer.address()) && !is_loopback_url(&self.rpc_url) {
            bail!(
                "the bot key is one of anvil's public dev keys ({:#x}); it is only accepted with a loopback RPC, not {}",
                signer.address(),
                redact_url(&self.rpc_url)
            );
        }
        Ok(signer)
    }
}

fn signer_name(backend: SignerBackend) -> &'static str {
    match backend {
        SignerBackend::Local => "local",
        SignerBackend::Keystore => "keystore",
        SignerBackend::AwsKms => "aws-kms",
        SignerBackend::Fireblocks => "fireblocks",
    }
}

/// Where Alpaca's Broker API is and how we authenticate (HTTP Basic).
#[derive(Debug, Clone, Args)]
pub struct AlpacaArgs {
    /// Alpaca Broker API base URL (the simulator locally).
    #[arg(long, env = "ALPACA_BASE_URL", default_value = "http://127.0.0.1:9000")]
    pub alpaca_base_url: String,
    /// The issuer's tokenization account id at Alpaca.
    #[arg(long, env = "ALPACA_ACCOUNT_ID", default_value = "issuer-local")]
    pub alpaca_account_id: String,
    /// Alpaca Broker API key id (HTTP Basic user).
    #[arg(
        long,
        env = "ALPACA_API_KEY",
        hide_env_values = true,
        default_value = "sim-key"
    )]
    pub alpaca_api_key: String,
    /// Alpaca Broker API secret (HTTP Basic password).
    #[arg(
        long,
        env = "ALPACA_API_SECRET",
        hide_env_values = true,
        default_value = "sim-secret"
    )]
    pub alpaca_api_secret: Secret,
}

impl AlpacaArgs {
    /// The Broker API client these settings describe, with the default retry policy.
    pub fn broker(&self) -> Result<BrokerClient, crate::alpaca::BrokerError> {
        self.broker_with(RetryPolicy::default())
    }

    /// The Broker API client these settings describe, with `retry`.
    pub fn broker_with(
        &self,
        retry: RetryPolicy,
    ) -> Result<BrokerClient, crate::alpaca::BrokerError> {
        BrokerClient::new(BrokerConfig {
            base_url: self.alpaca_base_url.clone(),
            account_id: self.alpaca_account_id.clone(),
            api_key: self.alpaca_api_key.clone(),
            api_secret: self.alpaca_api_secret.expose().to_owned(),
            retry,
        })
    }
}

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
    #[arg(long, env = "RECONCILE_INTERVAL_MS", default_value_t = 500)]
    pub reconcile_interval_ms: u64,
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
}

/// The two ways Alpaca can authenticate its calls to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlpacaAuthScheme {
    /// `X-API-KEY` on every request.
    ApiKey,
    /// RFC 9421 Ed25519 message signatures instead of a key.
    Signatures,
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
    /// Network of --vault as Alpaca spells it.
    #[arg(long, env = "ISSUER_NETWORK", default_value = "anvil")]
    pub network: String,
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

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
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

fn open_store(path: &std::path::Path) -> anyhow::Result<RedbStore> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(RedbStore::open(path)?)
}

async fn deploy_asset(args: DeployArgs) -> anyhow::Result<()> {
    let signer = args.chain.signer().await?;
    let store = open_store(&args.db)?;
    let underlying = Symbol::parse(&args.asset)?;
    let token = Symbol::parse(&args.token)?;
    let network = Network::parse(&args.network)?;
    let local = local_networks(
        args.local_networks.as_deref(),
        is_loopback_url(&args.chain.rpc_url),
    )?;
    if !http::ALPACA_NETWORKS.contains(&network.as_str()) && !local.contains(&network) {
        bail!(
            "network {network} is neither one of Alpaca's ({}) nor a local network (ISSUER_LOCAL_NETWORKS)",
            http::ALPACA_NETWORKS.join(", ")
        );
    }
    let certify_until = unix_now().saturating_add(args.certify_days.saturating_mul(86_400));
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    signer: BotSigner,
    broker: BrokerClient,
    pass: PassConfig,
}

/// Checks every setting of `serve`; the first unusable one is the error, before a file is opened,
/// a port bound or a connection made.
async fn plan_serve(args: &ServeArgs) -> anyhow::Result<ServePlan> {
    reqwest::Url::parse(&args.chain.rpc_url).map_err(|e| {
        anyhow::anyhow!(
            "RPC_URL is not a URL ({e}): {}",
            redact_url(&args.chain.rpc_url)
        )
    })?;
    let local = args.listen.ip().is_loopback() && is_loopback_url(&args.chain.rpc_url);
    let signer = args.chain.signer().await?;
    let uses_dev_defaults = (args.alpaca_auth == AlpacaAuthScheme::ApiKey
        && args.api_key.expose() == LOCAL_API_KEY)
        || args.operator_key.expose() == LOCAL_OPERATOR_KEY
        || is_anvil_dev_account(signer.address());
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
        issuer_addresses: vec![signer.address()],
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
    // The reconciler's Alpaca calls honour rate limits by scheduling, never by sleeping.
    let broker = args.alpaca.broker_with(RetryPolicy::for_reconciler())?;
    Ok(ServePlan {
        http_config,
        limits,
        signer,
        broker,
        pass: PassConfig {
            interval: Duration::from_millis(args.reconcile_interval_ms),
            backoff_max: Duration::from_secs(30),
            policy: Policy {
                confirmations_min: args.confirmations,
                mints_per_tx_max: args.mints_per_tx_max,
                ..Policy::default()
            },
            crash_at: args.crash_at,
            max_fee_per_gas_wei: u128::from(args.max_fee_per_gas_gwei)
                .saturating_mul(1_000_000_000),
        },
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let plan = plan_serve(&args).await?;
    let store: Arc<dyn Store> = Arc::new(open_store(&args.db)?);
    let listener = std::net::TcpListener::bind(args.listen)
        .with_context(|| format!("binding {}", args.listen))?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shutdown = move |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let readiness = Readiness::default();
    readiness.fail("rpc", "connecting");
    let rpc_url = args.chain.rpc_url.clone();
    tracing::info!(listen = %args.listen, rpc = %redact_url(&rpc_url), signer = %plan.signer.kind(), bot = %plan.signer.address(), db = %args.db.display(), "issuer serving");

    let mut server = tokio::spawn(http::serve_with(
        listener,
        store.clone(),
        wake.clone(),
        plan.http_config,
        ServeOptions {
            limits: plan.limits,
            readiness: readiness.clone(),
        },
        shutdown(stop_rx.clone()),
    ));
    let mut work = tokio::spawn(reconcile_when_connected(
        rpc_url,
        plan.signer,
        Unconnected {
            store,
            broker: plan.broker,
            config: plan.pass,
        },
        readiness,
        wake,
        shutdown(stop_rx),
    ));
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

/// A reconciler still without its chain.
struct Unconnected {
    store: Arc<dyn Store>,
    broker: BrokerClient,
    config: PassConfig,
}

/// The reconciler half of `serve`: connects to the RPC,
/// retrying with capped backoff and jitter while `/readyz` says why (intake is served all along),
/// then runs passes until `shutdown`, probing the RPC for `/readyz` beside them.
async fn reconcile_when_connected(
    rpc_url: String,
    signer: BotSigner,
    pending: Unconnected,
    readiness: Readiness,
    wake: Arc<tokio::sync::Notify>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut delay = RPC_RETRY_FIRST;
    let chain = loop {
        match Chain::connect(&rpc_url, signer.clone()).await {
            Ok(chain) => break chain,
            Err(e) => {
                crate::metrics::heartbeat();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis(), "rpc: not reachable; intake is served, the reconciler waits");
                readiness.fail("rpc", e.to_string());
                let jitter = Duration::from_millis(rand::random::<u64>() % 100);
                tokio::time::sleep(delay + jitter).await;
                delay = delay.saturating_mul(2).min(RPC_RETRY_MAX);
            }
        }
    };
    readiness.pass("rpc");
    tracing::info!(
        chain_id = chain.chain_id(),
        signer = %chain.signer().kind(),
        bot = %chain.bot(),
        "rpc: connected; reconciler starting"
    );
    check_roles(&chain, pending.store.as_ref(), &readiness).await;
    let probe = tokio::spawn(probe_rpc(chain.clone(), pending.store.clone(), readiness));
    let reconciler = Reconciler {
        store: pending.store,
        chain,
        broker: pending.broker,
        config: pending.config,
        polls: crate::pass::PollSchedule::default(),
        alpaca: crate::pass::AlpacaWork::default(),
        stop: crate::pass::StopFlag::default(),
    };
    reconciler.run(wake, shutdown).await;
    probe.abort();
}

/// Keeps the `rpc` and `roles` checks of `/readyz` current while the reconciler runs.
async fn probe_rpc(chain: Chain, store: Arc<dyn Store>, readiness: Readiness) {
    loop {
        tokio::time::sleep(RPC_PROBE_EVERY).await;
        match tokio::time::timeout(RPC_PROBE_EVERY, chain.head()).await {
            Ok(Ok(_)) => readiness.pass("rpc"),
            Ok(Err(e)) => readiness.fail("rpc", e.to_string()),
            Err(_) => readiness.fail("rpc", "eth_blockNumber: timed out"),
        }
        check_roles(&chain, store.as_ref(), &readiness).await;
    }
}

/// The `roles` check of `/readyz`: the bot (whichever signer holds its key) must hold DEPOSIT and
/// WITHDRAW on every asset's authorizer. A missing role is logged as an error naming it and the
/// issuer reports not ready; its mints and burns would not estimate, so nothing is spent meanwhile.
async fn check_roles(chain: &Chain, store: &dyn Store, readiness: &Readiness) {
    let assets = match store.assets() {
        Ok(assets) => assets,
        Err(e) => {
            readiness.fail("roles", format!("cannot read the asset list: {e}"));
            return;
        }
    };
    let mut problems = Vec::new();
    for asset in &assets {
        let checked = tokio::time::timeout(
            RPC_PROBE_EVERY,
            deploy::missing_roles(chain.provider(), asset.authorizer, chain.bot()),
        )
        .await;
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
        readiness.pass("roles");
    } else {
        let text = problems.join("; ");
        tracing::error!(problem = %text, "the bot lacks vault roles it needs: not ready");
        readiness.fail("roles", text);
    }
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
