//! Signing through ethers-signers, adapted to alloy's signer traits so the rest of the code (and
//! alloy's wallet) never knows which backend signs. Swapping to a KMS or a hardware signer means
//! another adapter of this shape, nothing else.

use alloy::consensus::SignableTransaction;
use alloy::network::{TxSigner, TxSignerSync};
use alloy::primitives::{Address, ChainId, Signature, B256, U256};
use alloy::signers::{Error as SignerError, Result as SignerResult, SignerSync};
use ethers_core::types::H256;
use ethers_signers::{LocalWallet, Signer as _};
use std::fmt;
use std::path::Path;

/// Why a signer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SignerSetupError {
    /// The private key is not 32 bytes of hex.
    #[error("private key is not valid hex of 32 bytes")]
    BadKey,
    /// The keystore file could not be read or the password is wrong.
    #[error("cannot decrypt keystore {path}: {detail}")]
    Keystore { path: String, detail: String },
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
