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

impl IssuerRequestId {
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
    fn addresses() {
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8").is_ok());
        assert!(parse_address("70997970C51812dc3A010C7d01b50e0d17dc79C8").is_err());
        assert!(parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79").is_err());
        assert!(parse_address("0xZZ997970C51812dc3A010C7d01b50e0d17dc79C8").is_err());
    }
}
