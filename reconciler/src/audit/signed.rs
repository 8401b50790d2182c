//! [`SignedQty`]: a difference, or an effect on one, with exact checked arithmetic.

use crate::qty::Qty;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A quantity with a sign: a difference or an effect on it. Zero is never negative, so equal
/// values compare and print equal. Serialized as a decimal string (`"-1.5"`, `"0"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignedQty {
    negative: bool,
    magnitude: Qty,
}

impl SignedQty {
    pub const ZERO: SignedQty = SignedQty {
        negative: false,
        magnitude: Qty::ZERO,
    };

    pub fn positive(magnitude: Qty) -> Self {
        SignedQty {
            negative: false,
            magnitude,
        }
    }

    pub fn negative(magnitude: Qty) -> Self {
        SignedQty {
            negative: !magnitude.is_zero(),
            magnitude,
        }
    }

    pub fn is_zero(self) -> bool {
        self.magnitude.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.negative
    }

    pub fn magnitude(self) -> Qty {
        self.magnitude
    }

    #[must_use]
    pub fn negated(self) -> Self {
        if self.negative {
            Self::positive(self.magnitude)
        } else {
            Self::negative(self.magnitude)
        }
    }

    pub fn checked_add(self, other: SignedQty) -> Option<SignedQty> {
        if self.negative == other.negative {
            let magnitude = self.magnitude.checked_add(other.magnitude)?;
            return Some(if self.negative {
                Self::negative(magnitude)
            } else {
                Self::positive(magnitude)
            });
        }
        // Opposite signs: the larger magnitude wins the sign.
        let (big, small) = if self.magnitude >= other.magnitude {
            (self, other)
        } else {
            (other, self)
        };
        let magnitude = big.magnitude.checked_sub(small.magnitude)?;
        Some(if big.negative {
            Self::negative(magnitude)
        } else {
            Self::positive(magnitude)
        })
    }

    pub fn checked_sub(self, other: SignedQty) -> Option<SignedQty> {
        self.checked_add(other.negated())
    }

    /// `a − b` of two unsigned quantities.
    pub fn diff(a: Qty, b: Qty) -> SignedQty {
        match a.checked_sub(b) {
            Some(up) => Self::positive(up),
            None => Self::negative(b.checked_sub(a).unwrap_or_default()),
        }
    }
}

impl fmt::Display for SignedQty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.magnitude.to_decimal())
    }
}

impl fmt::Debug for SignedQty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedQty({self})")
    }
}

impl TryFrom<String> for SignedQty {
    type Error = crate::qty::QtyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.strip_prefix('-') {
            Some(rest) => Qty::parse(rest).map(Self::negative),
            None => Qty::parse(&value).map(Self::positive),
        }
    }
}

impl From<SignedQty> for String {
    fn from(value: SignedQty) -> Self {
        value.to_string()
    }
}
