//! The chain: vault bindings from the committed artifacts, the bot's signer, and what the issuer
//! reads from and sends to a node, over the [`Node`] trait ([`RpcNode`] in production,
//! [`mem::MemNode`] in the pass tests).
//!
//! [`Chain`] is the issuer's view: which deposits are ours, which transfers are redemptions, what
//! our receipts show, and the raw transactions we sign, store and broadcast ourselves. It holds
//! no state of its own beyond the node and the signer, so a clone is cheap.

pub mod deploy;
pub mod fireblocks;
pub mod kms;
pub mod mem;
pub mod node;
pub mod rpc;
pub mod signer;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::sol_types::SolCall;
pub use node::{At, BlockHead, Fees, LogAt, LogQuery, Node, NodeReceipt, VaultEvent, VaultLog};
use reconciler::{meta, IssuerRequestId, ObservedBurn, ObservedDeposit, TokenizationRequestId};
pub use rpc::{RpcNode, LOG_RANGE_BLOCKS_MAX};
pub use signer::{BotSigner, EthersSigner, SignerKind};
use std::sync::Arc;

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Vault,
    "contracts/out/Vault.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Receipt,
    "contracts/out/Receipt.json"
);
alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Authorizer,
    "contracts/out/Authorizer.json"
);

/// The share ratio every deposit asks for: one share per asset, 18 decimals.
pub const SHARE_RATIO: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);

/// Why a chain call failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC URL does not parse. Holds the URL as [`crate::config::redact_url`] shows it.
    #[error("bad RPC URL {0:?}")]
    BadUrl(String),
    /// The node answered with an error or could not be reached. `detail` went through
    /// [`crate::config::sanitise_for_log`]: no URL credentials, no raw control characters.
    #[error("RPC {call}: {detail}")]
    Rpc { call: &'static str, detail: String },
    /// The node did not answer in time.
    #[error("RPC {0}: timed out")]
    Timeout(&'static str),
    /// The node does not have a block we already saw: it is behind (or another node behind a
    /// load balancer answered). Wait for it; it is not a reorg.
    #[error("the node does not have block {block} we saw; it is behind")]
    NodeBehind { block: u64 },
    /// The block a scan was read up to changed while it was read: scan again next pass.
    #[error("block {block} changed while it was scanned; scanning again next pass")]
    HeadChanged { block: u64 },
    /// A broadcast the node already has.
    #[error("the node already has this transaction")]
    AlreadyKnown,
    /// A broadcast whose nonce is already used on chain.
    #[error("nonce too low: the nonce is already used")]
    NonceTooLow,
    /// A replacement the node refuses: it wants a higher fee for that nonce.
    #[error("replacement transaction underpriced")]
    Underpriced,
    /// Signing failed (the signer backend refused).
    #[error("signing failed: {0}")]
    Sign(String),
    /// A deployment step did not leave the state it should have.
    #[error("deploy: {0}")]
    Deploy(String),
}

/// A log on one of our vaults that did not decode as our tagged deposit: reported, never acted on.
#[derive(Debug, Clone)]
pub struct ForeignDeposit {
    pub vault: Address,
    pub tx_hash: B256,
    pub block_number: u64,
    pub assets: U256,
    pub detail: String,
}

/// A transfer of vault shares to the bot (a redemption's first fact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferIn {
    pub from: Address,
    pub value: U256,
    pub block_number: u64,
    pub tx_hash: B256,
    /// The log's place within its own transaction (see [`Node::index_in_transaction`]).
    pub index_in_tx: u64,
}

/// The node and the bot's key.
#[derive(Clone, Debug)]
pub struct Chain {
    node: Arc<dyn Node>,
    signer: BotSigner,
}

impl Chain {
    /// Connects to a JSON-RPC node.
    pub async fn connect(rpc_url: &str, signer: impl Into<BotSigner>) -> Result<Chain, ChainError> {
        let node = RpcNode::connect(rpc_url).await?;
        Ok(Chain::new(Arc::new(node), signer))
    }

    /// The issuer's view over any node.
    pub fn new(node: Arc<dyn Node>, signer: impl Into<BotSigner>) -> Chain {
        Chain {
            node,
            signer: signer.into(),
        }
    }

    pub fn node(&self) -> &dyn Node {
        self.node.as_ref()
    }

    pub fn signer(&self) -> &BotSigner {
        &self.signer
    }

    /// The bot: deposits for and receives shares, holds receipts, receives redemptions.
    pub fn bot(&self) -> Address {
        self.signer.address()
    }

    pub fn chain_id(&self) -> u64 {
        self.node.chain_id()
    }

    pub async fn head(&self) -> Result<u64, ChainError> {
        self.node.head().await
    }

    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        self.node.block_hash(number).await
    }

    /// Block `number`'s hash and the gas it left unused; `None` if the node does not have it.
    pub async fn block_head(&self, number: u64) -> Result<Option<BlockHead>, ChainError> {
        self.node.block_head(number).await
    }

    /// The bot's nonce counting only mined transactions.
    pub async fn nonce_latest(&self) -> Result<u64, ChainError> {
        self.node.nonce(self.bot(), At::Latest).await
    }

    /// The bot's nonce counting the transactions the node holds pending as well: above
    /// [`Chain::nonce_latest`] while one of the bot's transactions waits to be mined.
    pub async fn nonce_pending(&self) -> Result<u64, ChainError> {
        self.node.nonce(self.bot(), At::Pending).await
    }

    /// The bot's nonce as of block `number`: transactions mined up to and including it.
    pub async fn nonce_at(&self, number: u64) -> Result<u64, ChainError> {
        self.node.nonce(self.bot(), At::Block(number)).await
    }

    pub async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        self.node.code(address).await
    }

    /// Tagged `Deposit` logs of `vault` in `[from, to]`, and the ones that are not ours.
    pub async fn scan_deposits(
        &self,
        vault: Address,
        from: u64,
        to: u64,
    ) -> Result<(Vec<ObservedDeposit>, Vec<ForeignDeposit>), ChainError> {
        let mut ours = Vec::new();
        let mut foreign = Vec::new();
        for log in self
            .node
            .vault_logs(vault, LogQuery::Deposits, from, to)
            .await?
        {
            match decode_deposit(vault, &log) {
                Some(Ok(d)) => ours.push(d),
                Some(Err(f)) => foreign.push(*f),
                None => {}
            }
        }
        Ok((ours, foreign))
    }

    /// ERC-20 transfers of `vault` shares to the bot in `[from, to]`, mints and the bot's own
    /// transfers excluded.
    pub async fn scan_transfers_to_bot(
        &self,
        vault: Address,
        from: u64,
        to: u64,
    ) -> Result<Vec<TransferIn>, ChainError> {
        let bot = self.bot();
        let logs = self
            .node
            .vault_logs(vault, LogQuery::TransfersTo(bot), from, to)
            .await?;
        let inbound: Vec<(LogAt, Address, U256)> = logs
            .into_iter()
            .filter_map(|log| match log.event {
                VaultEvent::Transfer(event)
                    if event.to == bot && event.from != Address::ZERO && event.from != bot =>
                {
                    Some((log.at, event.from, event.value))
                }
                _ => None,
            })
            .collect();
        let ats: Vec<LogAt> = inbound.iter().map(|(at, _, _)| *at).collect();
        let indexes = self.node.indexes_in_transactions(&ats).await?;
        Ok(inbound
            .into_iter()
            .zip(indexes)
            .map(|((at, from, value), index_in_tx)| TransferIn {
                from,
                value,
                block_number: at.block_number,
                tx_hash: at.tx_hash,
                index_in_tx,
            })
            .collect())
    }

    /// `Withdraw` logs of `vault` in `[from, to]` whose information carries a redemption id.
    pub async fn scan_burns(
        &self,
        vault: Address,
        from: u64,
        to: u64,
    ) -> Result<Vec<ObservedBurn>, ChainError> {
        let logs = self
            .node
            .vault_logs(vault, LogQuery::Withdrawals, from, to)
            .await?;
        Ok(logs
            .iter()
            .filter_map(|log| {
                let burn = decode_burn(log);
                if burn.is_none() && matches!(log.event, VaultEvent::Withdraw(_)) {
                    tracing::warn!(%vault, tx = %log.at.tx_hash, "Withdraw without our tag: reported as an anomaly");
                }
                burn
            })
            .collect())
    }

    /// The bot's balances of receipt `ids` of `receipt`, in the same order.
    pub async fn receipt_balances(
        &self,
        receipt: Address,
        ids: &[U256],
    ) -> Result<Vec<U256>, ChainError> {
        self.node
            .receipt_balances(receipt, self.bot(), ids, At::Latest)
            .await
    }

    /// The vault's total supply of shares (18 decimals).
    pub async fn total_supply(&self, vault: Address) -> Result<U256, ChainError> {
        self.node.total_supply(vault, At::Latest).await
    }

    /// Which roles the bot lacks on `authorizer` to mint and burn.
    pub async fn missing_roles(
        &self,
        authorizer: Address,
    ) -> Result<Vec<&'static str>, ChainError> {
        self.node.missing_roles(authorizer, self.bot()).await
    }

    pub async fn fees(&self) -> Result<Fees, ChainError> {
        self.node.fees().await
    }

    /// Gas for `input` sent by the bot to `to` now, with a margin for state moving under it.
    pub async fn estimate_gas(&self, to: Address, input: &Bytes) -> Result<u64, ChainError> {
        let gas = self.node.estimate_gas(self.bot(), to, input).await?;
        Ok(gas.saturating_add(gas / 4).saturating_add(20_000))
    }

    /// Signs an EIP-1559 transaction (one signature, whichever backend holds the key); returns
    /// its hash and the exact bytes to broadcast.
    pub async fn sign(
        &self,
        nonce: u64,
        to: Address,
        input: Bytes,
        gas_limit: u64,
        fees: Fees,
    ) -> Result<(B256, Bytes), ChainError> {
        let tx = TxEip1559 {
            chain_id: self.chain_id(),
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: alloy::eips::eip2930::AccessList::default(),
            input,
        };
        let signature = self
            .signer
            .sign_tx(&tx)
            .await
            .map_err(|e| ChainError::Sign(crate::config::sanitise_for_log(&e.to_string())))?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok((*envelope.tx_hash(), Bytes::from(envelope.encoded_2718())))
    }

    /// Broadcasts stored bytes. A node that already has them, or that says the nonce is used or
    /// wants more for it, is not an error here: the next pass reads the truth from receipts and
    /// nonces.
    pub async fn broadcast(&self, raw: &Bytes) -> Result<(), ChainError> {
        match self.node.broadcast(raw).await {
            Err(
                e @ (ChainError::AlreadyKnown | ChainError::NonceTooLow | ChainError::Underpriced),
            ) => {
                tracing::debug!(error = %e, "broadcast: node already has it or the nonce moved on");
                Ok(())
            }
            other => other,
        }
    }

    /// Once one of our hashes is mined: its block, its status, and the tagged deposits and burns
    /// in its own logs (read from the receipt, so a log query served by a lagging node cannot
    /// make a mined mint look like one that did nothing).
    pub async fn mined(&self, hash: B256) -> Result<Option<Mined>, ChainError> {
        let Some(receipt) = self.node.receipt(hash).await? else {
            return Ok(None);
        };
        let mut deposits = Vec::new();
        let mut burns = Vec::new();
        for log in &receipt.logs {
            match &log.event {
                VaultEvent::Deposit(_) => {
                    if let Some(Ok(d)) = decode_deposit(log.address, log) {
                        deposits.push(d);
                    }
                }
                VaultEvent::Withdraw(_) => burns.extend(decode_burn(log)),
                _ => {}
            }
        }
        Ok(Some(Mined {
            block_number: receipt.block_number,
            success: receipt.success,
            deposits,
            burns,
        }))
    }
}

/// Most receipts asked of the node at once by [`Chain::mined_many`].
const RECEIPTS_AT_ONCE: usize = 16;

impl Chain {
    /// [`Chain::mined`] for each of `hashes`, in the same order, asked side by side (a pass with
    /// fifty transactions in flight does not wait on fifty round trips one after another).
    pub async fn mined_many(&self, hashes: &[B256]) -> Result<Vec<Option<Mined>>, ChainError> {
        let mut out = Vec::with_capacity(hashes.len());
        for chunk in hashes.chunks(RECEIPTS_AT_ONCE) {
            let answers =
                futures::future::join_all(chunk.iter().map(|hash| self.mined(*hash))).await;
            for answer in answers {
                out.push(answer?);
            }
        }
        Ok(out)
    }
}

/// One of our transactions as mined.
#[derive(Debug, Clone)]
pub struct Mined {
    pub block_number: u64,
    pub success: bool,
    pub deposits: Vec<ObservedDeposit>,
    pub burns: Vec<ObservedBurn>,
}

/// A `Withdraw` tagged with one of our redemption ids; `None` for anything else.
fn decode_burn(log: &VaultLog) -> Option<ObservedBurn> {
    let VaultEvent::Withdraw(event) = &log.event else {
        return None;
    };
    let info = meta::decode(&event.receiptInformation).ok()?;
    let redemption_id = IssuerRequestId::parse(&info.issuer_request_id).ok()?;
    Some(ObservedBurn {
        vault: log.address,
        redemption_id,
        shares: event.shares,
        receipt_id: event.id,
        block_number: log.at.block_number,
        tx_hash: log.at.tx_hash,
        log_index: log.at.log_index,
    })
}

/// A `Deposit` log as ours (tagged with both ids) or foreign (anything else on the topic);
/// `None` for other events.
fn decode_deposit(
    vault: Address,
    log: &VaultLog,
) -> Option<Result<ObservedDeposit, Box<ForeignDeposit>>> {
    let foreign = |assets: U256, detail: String| {
        Box::new(ForeignDeposit {
            vault,
            tx_hash: log.at.tx_hash,
            block_number: log.at.block_number,
            assets,
            detail,
        })
    };
    let event = match &log.event {
        VaultEvent::Deposit(event) => event,
        VaultEvent::Undecodable { detail } => {
            return Some(Err(foreign(U256::ZERO, format!("not a Deposit: {detail}"))))
        }
        _ => return None,
    };
    let tagged = meta::decode(&event.receiptInformation)
        .map_err(|e| e.to_string())
        .and_then(|info| {
            let irid =
                IssuerRequestId::parse(&info.issuer_request_id).map_err(|e| e.to_string())?;
            let trid = TokenizationRequestId::parse(&info.tokenization_request_id)
                .map_err(|e| e.to_string())?;
            Ok((irid, trid))
        });
    Some(match tagged {
        Ok((issuer_request_id, tokenization_request_id)) => Ok(ObservedDeposit {
            vault,
            issuer_request_id,
            tokenization_request_id,
            owner: event.owner,
            assets: event.assets,
            receipt_id: event.id,
            block_number: log.at.block_number,
            block_hash: log.at.block_hash,
            tx_hash: log.at.tx_hash,
            log_index: log.at.log_index,
        }),
        Err(detail) => Err(foreign(event.assets, detail)),
    })
}

/// Calldata of one mint transaction: `multicall([deposit(assets, bot, 1e18, info), transfer(to, assets)]...)`.
pub fn mint_calldata(bot: Address, items: &[(Address, U256, Vec<u8>)]) -> Bytes {
    let mut calls: Vec<Bytes> = Vec::with_capacity(items.len() * 2);
    for (receiver, assets, info) in items {
        calls.push(
            Vault::depositCall {
                assets: *assets,
                receiver: bot,
                depositMinShareRatio: SHARE_RATIO,
                receiptInformation: info.clone().into(),
            }
            .abi_encode()
            .into(),
        );
        calls.push(
            Vault::transferCall {
                to: *receiver,
                value: *assets,
            }
            .abi_encode()
            .into(),
        );
    }
    Vault::multicallCall { data: calls }.abi_encode().into()
}

/// Calldata of one burn: `multicall([redeem(shares_i, receiver, bot, id_i, info)..., transfer(receiver, dust)])`.
pub fn burn_calldata(
    bot: Address,
    receiver: Address,
    allocations: &[(U256, U256)],
    dust: U256,
    info: &[u8],
) -> Bytes {
    let mut calls: Vec<Bytes> = allocations
        .iter()
        .map(|(id, shares)| {
            Vault::redeemCall {
                shares: *shares,
                receiver,
                owner: bot,
                id: *id,
                receiptInformation: info.to_vec().into(),
            }
            .abi_encode()
            .into()
        })
        .collect();
    if !dust.is_zero() {
        calls.push(
            Vault::transferCall {
                to: receiver,
                value: dust,
            }
            .abi_encode()
            .into(),
        );
    }
    Vault::multicallCall { data: calls }.abi_encode().into()
}

/// Calldata of a return: the whole transfer back to its sender.
pub fn return_calldata(to: Address, value: U256) -> Bytes {
    Vault::transferCall { to, value }.abi_encode().into()
}
