//! Quantities: exact decimal strings in, base units (10^-18) out, and back. Never a float.

use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Decimals of the vault's shares (and of every quantity we accept from Alpaca).
pub const SHARE_DECIMALS: u32 = 18;
/// Alpaca keeps quantities to this many decimals; the redeem call truncates to it.
pub const ALPACA_DECIMALS: u32 = 9;

/// Why a decimal string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QtyError {
    /// Empty, a sign, an exponent, spaces or any character that is not a digit or one dot.
    #[error("not a plain decimal number: {0:?}")]
    NotDecimal(String),
    /// More fractional digits than the 18 the vault holds: accepting it would round silently.
    #[error("more than 18 decimals: {0:?}")]
    TooPrecise(String),
    /// Zero where a positive quantity is required.
    #[error("quantity must be positive")]
    Zero,
    /// Larger than a uint256 of base units.
    #[error("quantity too large: {0:?}")]
    Overflow(String),
}

/// A non-negative quantity of shares in base units (1 share = 10^18 units).
///
/// Built only by parsing an exact decimal string or from chain units, so no value is ever rounded.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Qty(U256);

impl Qty {
    pub const ZERO: Qty = Qty(U256::ZERO);

    /// Parses a plain decimal string such as `"12"`, `"0.5"` or `"1.000000000000000001"`.
    pub fn parse(text: &str) -> Result<Self, QtyError> {
        let not_decimal = || QtyError::NotDecimal(text.to_owned());
        let (whole, frac) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) {
            return Err(not_decimal());
        }
        if text.ends_with('.') {
            return Err(not_decimal());
        }
        if frac.len() > SHARE_DECIMALS as usize {
            return Err(QtyError::TooPrecise(text.to_owned()));
        }
        let overflow = || QtyError::Overflow(text.to_owned());
        let whole_units = U256::from_str_radix(whole, 10).map_err(|_| overflow())?;
        let scale = U256::from(10u64).pow(U256::from(SHARE_DECIMALS));
        let mut units = whole_units.checked_mul(scale).ok_or_else(overflow)?;
        if !frac.is_empty() {
            let padded = format!("{frac:0<18}");
            let frac_units = U256::from_str_radix(&padded, 10).map_err(|_| not_decimal())?;
            units = units.checked_add(frac_units).ok_or_else(overflow)?;
        }
        Ok(Qty(units))
    }

    /// Parses and additionally refuses zero.
    pub fn parse_positive(text: &str) -> Result<Self, QtyError> {
        let qty = Self::parse(text)?;
        if qty.is_zero() {
            return Err(QtyError::Zero);
        }
        Ok(qty)
    }

    pub const fn from_units(units: U256) -> Self {
        Qty(units)
    }

    pub const fn units(self) -> U256 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn checked_add(self, other: Qty) -> Option<Qty> {
        self.0.checked_add(other.0).map(Qty)
    }

    pub fn checked_sub(self, other: Qty) -> Option<Qty> {
        self.0.checked_sub(other.0).map(Qty)
    }

    /// Splits into the part Alpaca can hold (at most `decimals` decimals) and the dust below it.
    /// `kept + dust == self` always holds.
    pub fn truncate_to(self, decimals: u32) -> (Qty, Qty) {
        let step = U256::from(10u64).pow(U256::from(SHARE_DECIMALS.saturating_sub(decimals)));
        let dust = self.0 % step;
        (Qty(self.0 - dust), Qty(dust))
    }

    /// The exact decimal string, without trailing zeros (`"1.5"`, `"2"`).
    pub fn to_decimal(self) -> String {
        let scale = U256::from(10u64).pow(U256::from(SHARE_DECIMALS));
        let whole = self.0 / scale;
        let frac = self.0 % scale;
        if frac.is_zero() {
            return whole.to_string();
        }
        let frac = format!("{frac:0>18}");
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal())
    }
}

impl fmt::Debug for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Qty({})", self.to_decimal())
    }
}

impl TryFrom<String> for Qty {
    type Error = QtyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Qty::parse(&value)
    }
}

impl From<Qty> for String {
    fn from(value: Qty) -> Self {
        value.to_decimal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(
            Qty::parse("1").unwrap().units(),
            U256::from(10u64).pow(U256::from(18))
        );
        assert_eq!(
            Qty::parse("0.000000000000000001").unwrap().units(),
            U256::from(1)
        );
        assert_eq!(Qty::parse("1.5").unwrap().to_decimal(), "1.5");
        assert_eq!(Qty::parse("007.10").unwrap().to_decimal(), "7.1");
    }

    #[test]
    fn refuses_what_would_round_or_is_not_a_number() {
        for bad in [
            "", ".5", "5.", "-1", "+1", "1e3", " 1", "1,5", "1.2.3", "NaN", "0x10",
        ] {
            assert!(
                matches!(Qty::parse(bad), Err(QtyError::NotDecimal(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Qty::parse("0.0000000000000000001"),
            Err(QtyError::TooPrecise(_))
        ));
        assert_eq!(Qty::parse_positive("0.000"), Err(QtyError::Zero));
        let huge = "9".repeat(80);
        assert!(matches!(Qty::parse(&huge), Err(QtyError::Overflow(_))));
    }

    #[test]
    fn truncation_keeps_every_unit() {
        let qty = Qty::parse("0.450574852280275235").unwrap();
        let (kept, dust) = qty.truncate_to(ALPACA_DECIMALS);
        assert_eq!(kept.to_decimal(), "0.450574852");
        assert_eq!(kept.units(), U256::from(450_574_852_000_000_000u64));
        assert_eq!(dust.units(), U256::from(280_275_235u64));
        assert_eq!(kept.checked_add(dust), Some(qty));
        let exact = Qty::parse("3.123456789").unwrap();
        assert_eq!(exact.truncate_to(ALPACA_DECIMALS).1, Qty::ZERO);
    }
}
