//! The bot's key in AWS KMS (`ECC_SECG_P256K1`, `SIGN_VERIFY`), through alloy's own adapter
//! (`alloy-signer-aws`): the address is derived from KMS's public key once at start; each hash
//! is signed by KMS `Sign` with `MessageType=DIGEST` and `ECDSA_SHA_256`, and the DER answer is
//! normalised to low-s with its recovery id found by recovering against that public key.
//! Credentials come from the standard AWS chain (environment, profile, web identity, container,
//! instance metadata); the endpoint can be overridden (a VPC endpoint, or a local emulator).

use alloy::primitives::{Address, Signature, B256};
use alloy::signers::Signer as _;
use alloy_signer_aws::AwsSigner;
use std::fmt;
use std::time::Duration;

use super::signer::SignerSetupError;

/// Longest one KMS call may take, retries included; then the action fails and the pass plans
/// again.
const KMS_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);

/// Where the key is.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// Key id, ARN, or alias (`alias/issuer-bot`).
    pub key_id: String,
    /// Endpoint override, e.g. `http://127.0.0.1:4566` for an emulator; `None`: AWS's own.
    pub endpoint: Option<String>,
    /// Region override; `None`: the standard chain (`AWS_REGION`, the profile).
    pub region: Option<String>,
}

/// A KMS-held key. `Debug` shows the key id and address.
pub struct KmsSigner {
    inner: AwsSigner,
    key_id: String,
    address: Address,
}

impl fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsSigner")
            .field("key_id", &self.key_id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl KmsSigner {
    /// Connects and reads the key's public key: a key that is missing, not secp256k1 or not
    /// reachable fails here, before anything starts.
    pub async fn connect(settings: &KmsSettings) -> Result<KmsSigner, SignerSetupError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_kms::config::Builder::from(&shared).timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(KMS_OPERATION_TIMEOUT)
                .build(),
        );
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = aws_sdk_kms::Client::from_conf(config.build());
        Self::with_client(client, &settings.key_id).await
    }

    /// The signer over a KMS client built elsewhere (tests and benchmarks with their own
    /// credentials); reads the key's public key.
    pub async fn with_client(
        client: aws_sdk_kms::Client,
        key_id: &str,
    ) -> Result<KmsSigner, SignerSetupError> {
        let inner = AwsSigner::new(client, key_id.to_owned(), None)
            .await
            .map_err(|e| SignerSetupError::Kms {
                key_id: key_id.to_owned(),
                detail: crate::config::sanitise_for_log(&error_chain(&e)),
            })?;
        let address = inner.address();
        Ok(KmsSigner {
            inner,
            key_id: key_id.to_owned(),
            address,
        })
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// One KMS `Sign` of `hash` (as a digest), low-s with its recovery id.
    pub async fn sign_hash(&self, hash: &B256) -> alloy::signers::Result<Signature> {
        self.inner.sign_hash(hash).await.map_err(|e| {
            alloy::signers::Error::other(crate::config::sanitise_for_log(&format!(
                "AWS KMS sign with {}: {}",
                self.key_id,
                error_chain(&e)
            )))
        })
    }
}

/// The error with its sources: the SDK's top-level text ("service error") says little alone.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
