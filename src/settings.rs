//! Settings shared by several subcommands: where the chain is and who signs ([`ChainArgs`]),
//! and where Alpaca's Broker API is ([`AlpacaArgs`]). Flags with environment variables (clap).

use crate::alpaca::{BrokerClient, BrokerConfig, RetryPolicy};
use crate::chain::fireblocks::{FireblocksSettings, FireblocksSigner};
use crate::chain::kms::{KmsSettings, KmsSigner};
use crate::chain::{BotSigner, EthersSigner, SignerKind};
use crate::config::{is_anvil_dev_account, is_loopback_url, redact_url, Secret, ANVIL_DEV_KEY};
use anyhow::{bail, Context};
use clap::Args;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
