//! What an audit looks at: the vault's logs, balances and `totalSupply` at one block, and
//! Alpaca's requests, as the shell observed them.

use crate::ids::{IssuerRequestId, Network, Symbol, TokenizationRequestId};
use crate::meta::ReceiptInfo;
use crate::qty::Qty;
use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};

/// Where a log sits on chain. The field order is the report's order: block, then log index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPos {
    pub block: u64,
    pub log_index: u64,
    pub tx_hash: B256,
}

/// What a `receiptInformation` said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Tag {
    /// It decoded as our receipt information.
    Ours(ReceiptInfo),
    /// It did not: someone else's deposit or burn, or bytes we cannot read. Never trusted.
    Foreign { detail: String },
}

/// A vault `Deposit` log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositLog {
    pub at: LogPos,
    pub sender: Address,
    pub owner: Address,
    pub assets: Qty,
    /// What the deposit added to the supply.
    pub shares: Qty,
    /// The ERC-1155 receipt id it created.
    pub id: U256,
    pub tag: Tag,
}

/// A vault `Withdraw` log (a burn, whether by `redeem` or `withdraw`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawLog {
    pub at: LogPos,
    pub sender: Address,
    pub receiver: Address,
    pub owner: Address,
    pub assets: Qty,
    /// What the burn removed from the supply.
    pub shares: Qty,
    pub id: U256,
    pub tag: Tag,
}

/// A vault ERC-20 `Transfer` log to or from the bot (mints from and burns to zero included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLog {
    pub at: LogPos,
    pub from: Address,
    pub to: Address,
    pub value: Qty,
    /// The log's place within its own transaction: what a redemption id is made of (the
    /// block-wide index can change when a reorg re-mines the transaction). Absent: `at.log_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_in_tx: Option<u64>,
}

/// The bot's balance of one receipt id at the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptHolding {
    pub id: U256,
    pub balance: Qty,
}

/// Whether an Alpaca request moves shares into tokens or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Mint,
    Redeem,
}

/// Where Alpaca's journal of a request stands, as Alpaca says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Completed,
    Rejected,
}

/// One of Alpaca's tokenization requests, as listed by Alpaca.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlpacaRequest {
    pub id: TokenizationRequestId,
    pub issuer_request_id: Option<IssuerRequestId>,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub qty: Qty,
    /// The AP wallet: receiver of a mint, sender of a redemption.
    pub wallet: Address,
    /// A mint's deposit transaction; a redeem's inbound transfer transaction.
    pub tx_hash: Option<B256>,
}

/// Block of a transaction Alpaca names that is not among the observed logs up to the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBlock {
    pub tx_hash: B256,
    pub block: u64,
}

/// One asset's observations, all at [`AuditInput::at_block`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetInput {
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub vault: Address,
    /// The issuer's wallet: deposits for, holds receipts, receives redemptions, burns.
    pub bot: Address,
    pub deploy_block: u64,
    /// `totalSupply()` at the block.
    pub total_supply: Qty,
    /// `balanceOf(bot)` at the block.
    pub bot_shares: Qty,
    pub deposits: Vec<DepositLog>,
    pub withdraws: Vec<WithdrawLog>,
    pub transfers: Vec<TransferLog>,
    pub receipts: Vec<ReceiptHolding>,
}

/// Everything one audit looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditInput {
    /// The block the report is at; logs after it are ignored.
    pub at_block: u64,
    /// The bot's transactions sent and not yet mined (pending nonce − latest nonce), now.
    pub in_flight: u64,
    pub assets: Vec<AssetInput>,
    /// Every mint and redeem request Alpaca lists, for all assets.
    pub alpaca: Vec<AlpacaRequest>,
    /// Where the transactions Alpaca names were mined, for those not among the observed logs;
    /// a hash missing here is not on the chain (never mined, or reorged out).
    #[serde(default)]
    pub tx_blocks: Vec<TxBlock>,
}
