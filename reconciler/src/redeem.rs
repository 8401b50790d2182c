//! What we know of a redemption: a transfer of shares to the bot, Alpaca's journal of the shares
//! back, and the burn (or, for what is not a clean redemption, the return to the sender).

use crate::ids::{
    AlpacaAccountId, ClientId, ClientRef, IssuerRequestId, Network, Symbol, TokenizationRequestId,
};
use crate::qty::Qty;
use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

/// Why a transfer to the bot is not (or no longer) a clean redemption. Each is kept with
/// everything needed to act, and listed for operators; nothing sits silently in the wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Anomaly {
    /// The sender is not a wallet whitelisted to a linked client.
    UnknownSender,
    /// The quantity is below what Alpaca can journal (9 decimals).
    BelowAlpacaPrecision,
    /// Alpaca rejected the journal.
    Rejected,
    /// Alpaca's request does not echo what we sent.
    Mismatch { detail: String },
    /// Our burn transactions for it reverted or did nothing `attempts` times; none is sent again.
    BurnFailed { attempts: u32 },
    /// Alpaca refused the redeem call with a final status and does not know the request: not
    /// called again until an operator retries it. Alpaca's status, code and message are kept.
    RedeemRefused {
        #[serde(default)]
        status: u16,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: String,
    },
}

/// Where a redemption stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RedemptionState {
    /// Seen on chain; Alpaca not yet asked.
    Detected,
    /// The redeem call went out at least once without a recorded answer: ask Alpaca first.
    Requesting,
    /// Alpaca holds the request; its journal is not final.
    Requested {
        tokenization_request_id: TokenizationRequestId,
    },
    /// Alpaca completed the journal: the shares are to be burned.
    Journaled {
        tokenization_request_id: TokenizationRequestId,
    },
    /// Our tagged Withdraw is confirmed on chain. Final.
    Burned {
        tokenization_request_id: TokenizationRequestId,
        tx_hash: B256,
    },
    /// Needs an operator. `return_requested`: the operator asked to send the tokens back.
    Flagged {
        anomaly: Anomaly,
        return_requested: bool,
        tokenization_request_id: Option<TokenizationRequestId>,
    },
    /// The tokens went back to the sender. Final.
    Returned { tx_hash: B256 },
}

impl Anomaly {
    /// Whether sending the tokens back is safe: only when Alpaca has certainly not journaled the
    /// shares back (it never heard of it, or rejected it). After a mismatch or a failed burn,
    /// Alpaca may have journaled: returning too would pay the AP twice.
    pub fn returnable(&self) -> bool {
        matches!(
            self,
            Self::UnknownSender
                | Self::BelowAlpacaPrecision
                | Self::Rejected
                | Self::RedeemRefused { .. }
        )
    }
}

impl RedemptionState {
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Burned { .. } | Self::Returned { .. })
    }
}

/// One transfer log to the bot's wallet: one redemption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    /// `red-<tx hash>-<log index>`: two transfers in one transaction are two redemptions.
    pub id: IssuerRequestId,
    pub vault: Address,
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub sender: Address,
    /// The linked client whitelisted for `sender`, when there is one.
    pub client_id: Option<ClientId>,
    /// The client's Alpaca account, when an operator attached one before the transfer was seen:
    /// then the redeem call names the client by `client_account_id`. Fixed at detection, so
    /// every retry of the call carries the same body under the same Idempotency-Key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_account_id: Option<AlpacaAccountId>,
    /// Everything the sender transferred.
    pub qty: Qty,
    pub tx_hash: B256,
    pub log_index: u64,
    pub block_number: u64,
    pub state: RedemptionState,
    /// Our burn or return transactions for it that were mined without doing it (reverted, or no
    /// tagged log) or lost their nonce. Bounded so a broken vault does not burn gas forever.
    #[serde(default)]
    pub failed_attempts: u32,
}

impl Redemption {
    /// How the redeem call names the client, `None` for an unknown sender.
    pub fn client_ref(&self) -> Option<ClientRef> {
        match (&self.client_account_id, &self.client_id) {
            (Some(account), _) => Some(ClientRef::ClientAccountId(account.clone())),
            (None, Some(id)) => Some(ClientRef::ClientExternalAccountId(id.clone())),
            (None, None) => None,
        }
    }

    /// What Alpaca journals (at most 9 decimals) and what goes back to the sender as dust.
    pub fn split(&self) -> (Qty, Qty) {
        self.qty.truncate_to(crate::qty::ALPACA_DECIMALS)
    }
}

/// A `Withdraw` on one of our vaults tagged with a redemption id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedBurn {
    pub vault: Address,
    pub redemption_id: IssuerRequestId,
    pub shares: U256,
    pub receipt_id: U256,
    pub block_number: u64,
    pub tx_hash: B256,
    pub log_index: u64,
}

/// Alpaca's journal status for a redemption's request, as polled this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalStatus {
    Pending,
    Completed,
    Rejected,
}

/// The poll of one redemption's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlpacaView {
    pub redemption_id: IssuerRequestId,
    pub status: JournalStatus,
    /// Fields Alpaca echoed that differ from ours; empty when everything matches.
    pub mismatches: Vec<String>,
}

/// The bot's balance of one receipt id of one vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBalance {
    pub vault: Address,
    pub id: U256,
    pub balance: U256,
}
