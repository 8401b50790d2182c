//! The bot's signer: one [`BotSigner`] in front of the backends that can hold its key — a local
//! key or keystore (ethers-signers, adapted to alloy's signer traits), AWS KMS, or Fireblocks raw
//! signing. The rest of the code (and alloy's wallet, for deployment) only sees "sign this
//! transaction hash"; broadcast, nonces and the stored signed bytes stay ours whatever signs.
//!
//! A remote signature is checked to recover to the address the backend named at start before it
//! is used: a misconfigured key is an error on that action, never a transaction from someone else.

use super::fireblocks::FireblocksSigner;
use super::kms::KmsSigner;
use alloy::consensus::SignableTransaction;
use alloy::network::{TxSigner, TxSignerSync};
use alloy::primitives::{Address, ChainId, Signature, B256, U256};
use alloy::signers::{Error as SignerError, Result as SignerResult, SignerSync};
use ethers_core::types::H256;
use ethers_signers::{LocalWallet, Signer as _};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Why a signer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SignerSetupError {
    /// The private key is not 32 bytes of hex.
    #[error("private key is not valid hex of 32 bytes")]
    BadKey,
    /// The keystore file could not be read or the password is wrong.
    #[error("cannot decrypt keystore {path}: {detail}")]
    Keystore { path: String, detail: String },
    /// AWS KMS did not give a usable secp256k1 public key for the configured key (unreachable,
    /// no credentials or region, unknown key, wrong key spec).
    #[error("AWS KMS key {key_id}: {detail}")]
    Kms { key_id: String, detail: String },
    /// Fireblocks could not be used: the API user's RSA key does not load, or the vault
    /// account's address for the asset could not be read.
    #[error("Fireblocks: {0}")]
    Fireblocks(String),
}

/// Which backend holds the bot's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerKind {
    /// A raw hex key in the environment (or anvil's dev key on the local stack).
    LocalKey,
    /// An encrypted JSON keystore file.
    Keystore,
    /// An AWS KMS `ECC_SECG_P256K1` key.
    AwsKms,
    /// A Fireblocks vault account, raw signing.
    Fireblocks,
}

impl SignerKind {
    /// How `BOT_SIGNER` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignerKind::LocalKey => "local",
            SignerKind::Keystore => "keystore",
            SignerKind::AwsKms => "aws-kms",
            SignerKind::Fireblocks => "fireblocks",
        }
    }
}

impl fmt::Display for SignerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hash is signed for. A remote signer keys its requests on it, so a request whose answer
/// was lost is found again instead of signed twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningFor {
    /// A transaction of the bot at `nonce` on `chain_id`.
    Transaction { chain_id: u64, nonce: u64 },
    /// Anything else (an EIP-191 report signature): keyed on the hash itself.
    Message,
}

/// The bot's signer, whichever backend holds the key. Cheap to clone. `Debug` shows the kind and
/// the address only.
#[derive(Clone)]
pub enum BotSigner {
    /// A local key or keystore, held in this process.
    Local {
        signer: EthersSigner,
        kind: SignerKind,
    },
    /// AWS KMS.
    Kms(Arc<KmsSigner>),
    /// Fireblocks raw signing.
    Fireblocks(Arc<FireblocksSigner>),
}

impl fmt::Debug for BotSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BotSigner")
            .field("kind", &self.kind())
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl From<EthersSigner> for BotSigner {
    fn from(signer: EthersSigner) -> Self {
        BotSigner::Local {
            signer,
            kind: SignerKind::LocalKey,
        }
    }
}

impl BotSigner {
    pub fn kind(&self) -> SignerKind {
        match self {
            BotSigner::Local { kind, .. } => *kind,
            BotSigner::Kms(_) => SignerKind::AwsKms,
            BotSigner::Fireblocks(_) => SignerKind::Fireblocks,
        }
    }

    pub fn address(&self) -> Address {
        match self {
            BotSigner::Local { signer, .. } => signer.address(),
            BotSigner::Kms(kms) => kms.address(),
            BotSigner::Fireblocks(fireblocks) => fireblocks.address(),
        }
    }

    /// Signs `hash` (a transaction's signature hash, or an EIP-191 message hash) as the bot.
    /// A remote backend's answer is normalised to low-s and must recover to [`Self::address`].
    pub async fn sign_hash_for(&self, hash: &B256, purpose: SigningFor) -> SignerResult<Signature> {
        let signature = match self {
            BotSigner::Local { signer, .. } => return signer.sign_prehash(hash),
            BotSigner::Kms(kms) => kms.sign_hash(hash).await?,
            BotSigner::Fireblocks(fireblocks) => fireblocks
                .sign_hash(hash, purpose)
                .await
                .map_err(|e| SignerError::other(e.to_string()))?,
        };
        let signature = signature.normalized_s();
        let recovered = signature.recover_address_from_prehash(hash).map_err(|e| {
            SignerError::other(format!("{} signature does not recover: {e}", self.kind()))
        })?;
        if recovered != self.address() {
            return Err(SignerError::other(format!(
                "{} signature recovers to {recovered:#x}, not the bot {:#x}: refused",
                self.kind(),
                self.address()
            )));
        }
        Ok(signature)
    }

    /// Signs a transaction's signature hash, keyed for remote backends on its chain and nonce.
    pub async fn sign_tx(
        &self,
        tx: &dyn SignableTransaction<Signature>,
    ) -> SignerResult<Signature> {
        let purpose = SigningFor::Transaction {
            chain_id: tx.chain_id().unwrap_or_default(),
            nonce: tx.nonce(),
        };
        self.sign_hash_for(&tx.signature_hash(), purpose).await
    }

    /// An EIP-191 signature of `message` (what `issuer report --sign` produces).
    pub async fn sign_message(&self, message: &[u8]) -> SignerResult<Signature> {
        let hash = alloy::primitives::eip191_hash_message(message);
        self.sign_hash_for(&hash, SigningFor::Message).await
    }
}

#[async_trait::async_trait]
impl TxSigner<Signature> for BotSigner {
    fn address(&self) -> Address {
        BotSigner::address(self)
    }

    async fn sign_transaction(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> SignerResult<Signature> {
        self.sign_tx(tx).await
    }
}

/// The bot's key, held by ethers-signers. `Debug` shows only the address.
#[derive(Clone)]
pub struct EthersSigner {
    wallet: LocalWallet,
    address: Address,
}

impl fmt::Debug for EthersSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EthersSigner")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl EthersSigner {
    pub fn from_private_key(hex_key: &str) -> Result<EthersSigner, SignerSetupError> {
        let wallet: LocalWallet = hex_key
            .trim()
            .trim_start_matches("0x")
            .parse()
            .map_err(|_| SignerSetupError::BadKey)?;
        Ok(Self::from_wallet(wallet))
    }

    pub fn from_keystore(path: &Path, password: &str) -> Result<EthersSigner, SignerSetupError> {
        let wallet = LocalWallet::decrypt_keystore(path, password).map_err(|e| {
            SignerSetupError::Keystore {
                path: path.display().to_string(),
                detail: e.to_string(),
            }
        })?;
        Ok(Self::from_wallet(wallet))
    }

    fn from_wallet(wallet: LocalWallet) -> EthersSigner {
        let address = Address::from_slice(wallet.address().as_bytes());
        EthersSigner { wallet, address }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    fn sign_prehash(&self, hash: &B256) -> SignerResult<Signature> {
        let sig = self
            .wallet
            .sign_hash(H256::from_slice(hash.as_slice()))
            .map_err(|e| SignerError::other(e.to_string()))?;
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        sig.r.to_big_endian(&mut r);
        sig.s.to_big_endian(&mut s);
        // ethers reports v as 27 + recovery id.
        let y_parity = match sig.v {
            27 => false,
            28 => true,
            other => {
                return Err(SignerError::other(format!(
                    "unexpected recovery value {other}"
                )))
            }
        };
        Ok(Signature::new(
            U256::from_be_bytes(r),
            U256::from_be_bytes(s),
            y_parity,
        ))
    }
}

impl SignerSync for EthersSigner {
    fn sign_hash_sync(&self, hash: &B256) -> SignerResult<Signature> {
        self.sign_prehash(hash)
    }

    fn chain_id_sync(&self) -> Option<ChainId> {
        None
    }
}

impl TxSignerSync<Signature> for EthersSigner {
    fn address(&self) -> Address {
        self.address
    }

    fn sign_transaction_sync(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> SignerResult<Signature> {
        self.sign_prehash(&tx.signature_hash())
    }
}

#[async_trait::async_trait]
impl TxSigner<Signature> for EthersSigner {
    fn address(&self) -> Address {
        self.address
    }

    async fn sign_transaction(
        &self,
        tx: &mut dyn SignableTransaction<Signature>,
    ) -> SignerResult<Signature> {
        self.sign_prehash(&tx.signature_hash())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ANVIL_DEV_KEY;

    #[test]
    fn dev_key_has_the_well_known_address() {
        let signer = EthersSigner::from_private_key(ANVIL_DEV_KEY).unwrap();
        assert_eq!(
            signer.address(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
                .parse::<Address>()
                .unwrap()
        );
        assert!(!format!("{signer:?}").contains("ac0974"));
    }

    #[test]
    fn an_encrypted_keystore_signs_as_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = ANVIL_DEV_KEY.trim_start_matches("0x");
        let bytes = hex::decode(key).unwrap();
        LocalWallet::encrypt_keystore(
            dir.path(),
            &mut rand::thread_rng(),
            bytes,
            "pass-word",
            Some("bot.json"),
        )
        .unwrap();
        let from_file =
            EthersSigner::from_keystore(&dir.path().join("bot.json"), "pass-word").unwrap();
        assert_eq!(
            from_file.address(),
            EthersSigner::from_private_key(ANVIL_DEV_KEY)
                .unwrap()
                .address()
        );
        let wrong = EthersSigner::from_keystore(&dir.path().join("bot.json"), "wrong").unwrap_err();
        assert!(matches!(wrong, SignerSetupError::Keystore { .. }));
    }

    #[test]
    fn signatures_recover_to_the_signer() {
        let signer = EthersSigner::from_private_key(ANVIL_DEV_KEY).unwrap();
        let hash = B256::repeat_byte(7);
        let sig = signer.sign_hash_sync(&hash).unwrap();
        assert_eq!(
            sig.recover_address_from_prehash(&hash).unwrap(),
            signer.address()
        );
    }
}
