//! Identifiers and symbols: parsed once at the boundary, carried as types after that.

use alloy_primitives::{keccak256, Address, B256};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier or symbol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be 1 to {max} characters of [A-Za-z0-9._:-], got {got:?}")]
    BadId {
        what: &'static str,
        max: usize,
        got: String,
    },
    #[error("not a 0x-prefixed 20-byte hex address: {0:?}")]
    BadAddress(String),
    #[error("not a UUID (8-4-4-4-12 hex digits): {0:?}")]
    BadUuid(String),
}

fn checked_id(what: &'static str, max: usize, text: &str) -> Result<String, IdError> {
    let ok = !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(IdError::BadId {
            what,
            max,
            got: text.to_owned(),
        })
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<Self, IdError> {
                checked_id($what, $max, text).map(Self)
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(&value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// Alpaca's id for a mint or redeem request.
    TokenizationRequestId, "tokenization_request_id", 128
);
string_id!(
    /// Our id for a mint (derived from Alpaca's id) or a redemption (derived from the transfer log).
    IssuerRequestId, "issuer_request_id", 128
);
string_id!(
    /// The AP's account at Alpaca, as Alpaca names it to us.
    ClientId, "client_id", 128
);
string_id!(
    /// A chain name as Alpaca spells it (`base`, `ethereum`, `anvil`).
    Network, "network", 32
);
string_id!(
    /// An equity symbol (`AAPL`) or a token symbol (`tAAPL`).
    Symbol, "symbol", 32
);

/// An AP's account at Alpaca: a UUID (`client_account_id` in Alpaca's requests). Kept in the
/// canonical lower-case 8-4-4-4-12 form, so the same account always compares and indexes equal.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AlpacaAccountId(String);

impl AlpacaAccountId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        if is_uuid(text) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(IdError::BadUuid(text.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AlpacaAccountId {
    type Error = IdError;
    fn try_from(value: String) -> Result<Self, IdError> {
        Self::parse(&value)
    }
}
impl From<AlpacaAccountId> for String {
    fn from(value: AlpacaAccountId) -> String {
        value.0
    }
}
impl fmt::Display for AlpacaAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for AlpacaAccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlpacaAccountId({:?})", self.0)
    }
}

/// `8-4-4-4-12` hex digits, any case.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8usize, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// How Alpaca named the client of a mint, and so how we name it back: the callback and every
/// later call about the same client echo the field the request used. Alpaca deprecated
/// `client_id` (2026-07-15); it arrives at most as an alias of `client_external_account_id`
/// and is never sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "field", content = "id")]
pub enum ClientRef {
    /// `client_external_account_id`: the id our connect endpoint answered.
    ClientExternalAccountId(ClientId),
    /// `client_account_id`: the AP's Alpaca account, attached to a linked client by an operator.
    ClientAccountId(AlpacaAccountId),
}

impl ClientRef {
    /// The wire field this reference is sent under.
    pub fn field(&self) -> &'static str {
        match self {
            Self::ClientExternalAccountId(_) => "client_external_account_id",
            Self::ClientAccountId(_) => "client_account_id",
        }
    }
    /// The value sent under [`Self::field`].
    pub fn value(&self) -> &str {
        match self {
            Self::ClientExternalAccountId(id) => id.as_str(),
            Self::ClientAccountId(id) => id.as_str(),
        }
    }
}

impl IssuerRequestId {
    /// The `Idempotency-Key` of the redeem call for this redemption: a UUID (Alpaca allows at
    /// most 36 characters and recommends UUIDs) that is a function of the id alone, so a rebuilt
    /// cache sends the same key. Version 8 (RFC 9562 custom) over keccak-256 of the id.
    pub fn idempotency_key(&self) -> String {
        let digest = keccak256(format!("issuer-redeem-idempotency-key:{}", self.0));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex = alloy_primitives::hex::encode(bytes);
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// The issuer id of a mint is a function of Alpaca's id, so a lost cache and a repeated
    /// request still agree on it.
    pub fn for_mint(tokenization_request_id: &TokenizationRequestId) -> Self {
        let digest = keccak256(format!("mint:{}", tokenization_request_id.as_str()));
        Self(format!(
            "mint-{}",
            &alloy_primitives::hex::encode(digest)[..32]
        ))
    }

    /// The issuer id of a redemption is a function of the transfer log that started it.
    pub fn for_redemption(tx_hash: B256, log_index: u64) -> Self {
        Self(format!(
            "red-{}-{log_index}",
            alloy_primitives::hex::encode(tx_hash)
        ))
    }
}

/// Parses a 0x-prefixed 40-hex-digit address (any case; checksums are not enforced).
pub fn parse_address(text: &str) -> Result<Address, IdError> {
    let bad = || IdError::BadAddress(text.to_owned());
    let hex = text.strip_prefix("0x").ok_or_else(bad)?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    text.parse::<Address>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_what_cannot_be_keys() {
        assert!(TokenizationRequestId::parse("12345-678-90AB").is_ok());
        assert!(TokenizationRequestId::parse("").is_err());
        assert!(TokenizationRequestId::parse("a b").is_err());
        assert!(TokenizationRequestId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn mint_ids_are_stable_and_distinct() {
        let a = TokenizationRequestId::parse("a").unwrap();
        let b = TokenizationRequestId::parse("b").unwrap();
        assert_eq!(IssuerRequestId::for_mint(&a), IssuerRequestId::for_mint(&a));
        assert_ne!(IssuerRequestId::for_mint(&a), IssuerRequestId::for_mint(&b));
    }

    #[test]
    fn idempotency_keys_are_stable_uuids_of_36_characters() {
        let a = IssuerRequestId::for_redemption(B256::repeat_byte(1), 3);
        let b = IssuerRequestId::for_redemption(B256::repeat_byte(1), 4);
        assert_eq!(a.idempotency_key(), a.idempotency_key());
        assert_ne!(a.idempotency_key(), b.idempotency_key());
        let key = a.idempotency_key();
        assert_eq!(key.len(), 36);
        assert!(AlpacaAccountId::parse(&key).is_ok());
        assert_eq!(&key[14..15], "8");
    }

    #[test]
    fn alpaca_account_ids_are_uuids() {
        let id = AlpacaAccountId::parse("B0B6DD9D-8B9B-48A9-BA46-B9D54906E415").unwrap();
        assert_eq!(id.as_str(), "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415");
        assert!(AlpacaAccountId::parse("b0b6dd9d8b9b48a9ba46b9d54906e415").is_err());
        assert!(AlpacaAccountId::parse("b0b6dd9d-8b9b-48a9-ba46-b9d54906e41").is_err());
        assert!(AlpacaAccountId::parse("g0b6dd9d-8b9b-48a9-ba46-b9d54906e415").is_err());
    }

    #[test]
    fn addresses() {
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8").is_ok());
        assert!(parse_address("70997970C51812dc3A010C7d01b50e0d17dc79C8").is_err());
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79").is_err());
        assert!(parse_address("0xZZ997970C51812dc3A010C7d01b50e0d17dc79C8").is_err());
    }
}
