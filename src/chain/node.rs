//! [`Node`]: everything the issuer asks of an EVM node, as one small trait of ours. The alloy
//! implementation ([`super::rpc::RpcNode`]) speaks JSON-RPC; the in-memory one
//! ([`super::mem::MemNode`]) lets whole passes run in a test without a process or a sleep.
//!
//! The trait answers facts (heads, hashes, nonces, logs, receipts, balances, fees, estimates) and
//! takes signed bytes. What those facts mean for us (which deposit is ours, which transfer is a
//! redemption) is decided above it, in [`super::Chain`], once for every node.

use super::{ChainError, Vault};
use alloy::primitives::{Address, Bytes, B256, U256};

/// Which state a read is answered at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The newest mined block.
    Latest,
    /// Mined block `n`.
    Block(u64),
    /// The newest block plus the node's pending pool (nonces only).
    Pending,
}

/// Where a mined log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAt {
    pub block_number: u64,
    pub block_hash: B256,
    pub tx_hash: B256,
    /// Block-wide index.
    pub log_index: u64,
}

/// A vault event the issuer reads, decoded; or one whose topic is ours but whose data does not
/// decode (reported, never acted on).
#[derive(Debug, Clone)]
pub enum VaultEvent {
    Deposit(Vault::Deposit),
    Withdraw(Vault::Withdraw),
    Transfer(Vault::Transfer),
    Undecodable { detail: String },
}

/// One mined log of a vault (or of any contract, in a receipt).
#[derive(Debug, Clone)]
pub struct VaultLog {
    /// The contract that emitted it.
    pub address: Address,
    pub at: LogAt,
    pub event: VaultEvent,
}

/// Which logs of one vault a scan asks for. Logs without a block position (pending) are never
/// returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogQuery {
    Deposits,
    Withdrawals,
    /// ERC-20 transfers whose recipient is this address.
    TransfersTo(Address),
    /// Deposits, withdrawals and every transfer (the audit's full book).
    All,
}

/// A mined block as the pass reads its head: its hash, and the gas it left unused (its limit less
/// what its transactions used), which says whether a transaction of ours it left out would have
/// fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    pub hash: B256,
    pub gas_room: u64,
}

/// A mined transaction's receipt: its block, status and the vault events among its logs.
#[derive(Debug, Clone)]
pub struct NodeReceipt {
    pub block_number: u64,
    pub success: bool,
    pub logs: Vec<VaultLog>,
}

/// Fees for a new transaction (the plan's own type: it decides replacements' bids).
pub type Fees = reconciler::pacing::FeeBid;

/// An EVM node as the issuer uses it. Every call is bounded in time by the implementation and
/// fails with a typed [`ChainError`]; none retries on its own (the pass does, next time).
#[async_trait::async_trait]
pub trait Node: Send + Sync + std::fmt::Debug {
    /// EIP-155 chain id, read once at connect.
    fn chain_id(&self) -> u64;

    async fn head(&self) -> Result<u64, ChainError>;

    /// Block `number`'s hash and unused gas; `None` if the node does not have it (yet).
    async fn block_head(&self, number: u64) -> Result<Option<BlockHead>, ChainError>;

    /// The hash of block `number`; `None` if the node does not have it (yet).
    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        Ok(self.block_head(number).await?.map(|b| b.hash))
    }

    /// `account`'s transaction count at `at`.
    async fn nonce(&self, account: Address, at: At) -> Result<u64, ChainError>;

    async fn code(&self, address: Address) -> Result<Bytes, ChainError>;

    /// The logs of `vault` matching `query` in blocks `[from, to]`, in chain order. The
    /// implementation asks in ranges a provider accepts.
    async fn vault_logs(
        &self,
        vault: Address,
        query: LogQuery,
        from: u64,
        to: u64,
    ) -> Result<Vec<VaultLog>, ChainError>;

    /// Where a log stands among the logs of its own transaction (how many of that
    /// transaction's logs come before it), which a reorg that re-mines the transaction
    /// elsewhere in a block cannot change.
    async fn index_in_transaction(&self, at: &LogAt) -> Result<u64, ChainError>;

    /// [`Node::index_in_transaction`] of each of `ats`, in their order. An implementation may
    /// read each block once for all of its logs (a block of many redemptions, a report's whole
    /// history).
    async fn indexes_in_transactions(&self, ats: &[LogAt]) -> Result<Vec<u64>, ChainError> {
        let mut out = Vec::with_capacity(ats.len());
        for at in ats {
            out.push(self.index_in_transaction(at).await?);
        }
        Ok(out)
    }

    /// The receipt of a mined transaction; `None` while it is not mined (or unknown).
    async fn receipt(&self, hash: B256) -> Result<Option<NodeReceipt>, ChainError>;

    async fn total_supply(&self, vault: Address, at: At) -> Result<U256, ChainError>;

    /// `owner`'s share balance of `vault`.
    async fn share_balance(
        &self,
        vault: Address,
        owner: Address,
        at: At,
    ) -> Result<U256, ChainError>;

    /// The receipt (ERC-1155) contract of `vault`.
    async fn receipt_contract(&self, vault: Address, at: At) -> Result<Address, ChainError>;

    /// `owner`'s balances of receipt `ids`, in the same order.
    async fn receipt_balances(
        &self,
        receipt: Address,
        owner: Address,
        ids: &[U256],
        at: At,
    ) -> Result<Vec<U256>, ChainError>;

    /// Which of [`super::deploy::ROLES_TO_RUN`] `account` lacks on `authorizer`.
    async fn missing_roles(
        &self,
        authorizer: Address,
        account: Address,
    ) -> Result<Vec<&'static str>, ChainError>;

    /// Fees a new transaction should offer now.
    async fn fees(&self) -> Result<Fees, ChainError>;

    /// Gas `input` from `from` to `to` would use now (no margin added).
    async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
    ) -> Result<u64, ChainError>;

    /// Hands signed bytes to the node. A node that already has them, whose nonce is used, or that
    /// wants a higher fee for the nonce says so with the typed errors [`ChainError::AlreadyKnown`],
    /// [`ChainError::NonceTooLow`] and [`ChainError::Underpriced`].
    async fn broadcast(&self, raw: &Bytes) -> Result<(), ChainError>;
}
