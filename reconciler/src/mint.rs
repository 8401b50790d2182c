//! What we know of a mint, and what the chain and our own transactions say about it.

use crate::ids::{ClientId, ClientRef, IssuerRequestId, Network, Symbol, TokenizationRequestId};
use crate::qty::Qty;
use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

/// Alpaca's word on the journal behind a mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Journal {
    /// Issuance accepted; Alpaca has not confirmed the journal yet. Nothing may be minted.
    Pending,
    /// Alpaca confirmed the shares arrived: mint.
    Completed,
    /// Alpaca says the journal failed: never mint.
    Rejected,
}

/// Where the mint callback to Alpaca stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Callback {
    /// Never sent: sending it cannot be a duplicate.
    NotSent,
    /// We started sending it at least once and do not know whether Alpaca recorded it, so the
    /// next attempt asks Alpaca first.
    Attempted,
    /// Alpaca answered 200 (or already shows the mint): done.
    Acked { tx_hash: B256 },
    /// Alpaca refused it with a final status (a 4xx other than 429): not sent again until an
    /// operator retries it (then Alpaca is asked first). Kept with Alpaca's code and message.
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
}

/// An accepted mint request: what Alpaca asked for, and its journal and callback states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintIntent {
    pub issuer_request_id: IssuerRequestId,
    pub tokenization_request_id: TokenizationRequestId,
    /// The client as the mint request named it; the callback names it the same way. Records
    /// written before the field existed held a bare `client_id` (our external id).
    #[serde(alias = "client_id", deserialize_with = "client_ref_or_legacy_id")]
    pub client: ClientRef,
    pub wallet: Address,
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub qty: Qty,
    pub vault: Address,
    pub journal: Journal,
    pub callback: Callback,
    /// Our mint transactions for this intent that were mined reverted or were pushed out.
    /// Bounded so a vault that always reverts does not burn gas forever.
    pub failed_attempts: u32,
    /// Unix seconds when the issuance was accepted.
    pub accepted_at: u64,
}

impl MintIntent {
    /// The canonical form of what defines the request: the same tokenization_request_id with the
    /// same fingerprint is a repeat, with another a conflict. `|` and `=` cannot occur in ids.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.tokenization_request_id,
            self.qty,
            &self.underlying,
            &self.token,
            &self.network,
            &self.client,
            self.wallet,
        )
    }
}

/// A [`ClientRef`], or the bare client id older records stored (which was always ours).
fn client_ref_or_legacy_id<'de, D: serde::Deserializer<'de>>(de: D) -> Result<ClientRef, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Ref(ClientRef),
        Legacy(ClientId),
    }
    Ok(match Stored::deserialize(de)? {
        Stored::Ref(client) => client,
        Stored::Legacy(id) => ClientRef::ClientExternalAccountId(id),
    })
}

/// [`MintIntent::fingerprint`] from the parts of an issuance request, before an intent exists.
pub fn fingerprint(
    tokenization_request_id: &TokenizationRequestId,
    qty: Qty,
    underlying: &Symbol,
    token: &Symbol,
    network: &Network,
    client: &ClientRef,
    wallet: Address,
) -> String {
    // `client=` for our own id keeps the fingerprints of records written before Alpaca's
    // account ids were accepted.
    let client = match client {
        ClientRef::ClientExternalAccountId(id) => format!("client={id}"),
        ClientRef::ClientAccountId(id) => format!("client_account_id={id}"),
    };
    format!(
        "trid={tokenization_request_id}|qty={}|underlying={underlying}|token={token}|network={network}|{client}|wallet={wallet:#x}",
        qty.to_decimal(),
    )
}

/// A `Deposit` on one of our vaults whose receipt information decoded as ours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDeposit {
    pub vault: Address,
    pub issuer_request_id: IssuerRequestId,
    pub tokenization_request_id: TokenizationRequestId,
    /// `Deposit.owner`: who received the shares (the bot, which forwards them in the same tx).
    pub owner: Address,
    pub assets: U256,
    pub receipt_id: U256,
    pub block_number: u64,
    pub block_hash: B256,
    pub tx_hash: B256,
    pub log_index: u64,
}

/// What a transaction of ours is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TxPurpose {
    /// One multicall of `[deposit, transfer]` pairs on one vault.
    Mint {
        vault: Address,
        issuer_request_ids: Vec<IssuerRequestId>,
    },
    /// One burn: `multicall([redeem(shares_i, ap, bot, id_i, info)..., transfer(ap, dust)])`.
    /// `allocations` reserves receipt balances while the transaction is in flight.
    Burn {
        vault: Address,
        redemption_id: IssuerRequestId,
        allocations: Vec<(U256, U256)>,
    },
    /// An operator's return of a flagged redemption's tokens to its sender.
    Return {
        vault: Address,
        redemption_id: IssuerRequestId,
    },
    /// Anything else the plan does not reason about (deploys).
    Other { label: String },
}

/// What the chain says of one of our nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TxStatus {
    /// Signed and stored; no variant has a receipt and the nonce is still ours to fill.
    Pending {
        /// Blocks since the newest variant was signed.
        age_blocks: u64,
    },
    /// One of its variants, `hash`, is in block `block_number`.
    Mined {
        block_number: u64,
        success: bool,
        hash: B256,
    },
    /// The account's nonce moved past this one and no variant of ours is mined: something else
    /// used the nonce, so this action never happened.
    NonceTaken,
}

/// One of our nonces with its purpose and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedTx {
    pub nonce: u64,
    pub purpose: TxPurpose,
    pub status: TxStatus,
    /// The gas limit it was signed with (its newest variant's); `None` if not known.
    #[serde(default)]
    pub gas_limit: Option<u64>,
}
