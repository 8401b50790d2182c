//! The chain: vault bindings from the committed artifacts, the bot's signer, log scans, and the
//! raw transactions we sign, store and broadcast ourselves.

pub mod deploy;
pub mod fireblocks;
pub mod kms;
pub mod signer;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockNumberOrTag;
use alloy::network::Ethereum;
use alloy::primitives::{Address, Bytes, TxKind, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol_types::{SolCall, SolEvent};
use reconciler::{meta, IssuerRequestId, ObservedBurn, ObservedDeposit, TokenizationRequestId};
pub use signer::{BotSigner, EthersSigner, SignerKind};
use std::future::IntoFuture;
use std::time::Duration;

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
/// Most blocks asked for in one `eth_getLogs`: providers cap ranges, and a bounded range keeps a
/// long catch-up scan interruptible.
pub const LOG_RANGE_BLOCKS_MAX: u64 = 2_000;
/// Every RPC call gives up after this; the pass retries later.
const RPC_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Signing failed (the signer backend refused).
    #[error("signing failed: {0}")]
    Sign(String),
    /// A deployment step did not leave the state it should have.
    #[error("deploy: {0}")]
    Deploy(String),
}

async fn timed<T, E: std::fmt::Display>(
    call: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ChainError> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ChainError::Rpc {
            call,
            detail: crate::config::sanitise_for_log(&e.to_string()),
        }),
        Err(_) => Err(ChainError::Timeout(call)),
    }
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

/// Fees for a new transaction.
#[derive(Debug, Clone, Copy)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// The node and the bot's key.
#[derive(Clone, Debug)]
pub struct Chain {
    provider: RootProvider<Ethereum>,
    signer: BotSigner,
    /// EIP-155 chain id, read once at connect: every signature commits to it.
    #[allow(clippy::struct_field_names)]
    chain_id: u64,
}

impl Chain {
    pub async fn connect(rpc_url: &str, signer: impl Into<BotSigner>) -> Result<Chain, ChainError> {
        let signer = signer.into();
        let url = rpc_url
            .parse()
            .map_err(|_| ChainError::BadUrl(crate::config::redact_url(rpc_url)))?;
        let provider = RootProvider::<Ethereum>::new_http(url);
        let chain_id = timed("eth_chainId", provider.get_chain_id()).await?;
        Ok(Chain {
            provider,
            signer,
            chain_id,
        })
    }

    pub fn provider(&self) -> &RootProvider<Ethereum> {
        &self.provider
    }

    pub fn signer(&self) -> &BotSigner {
        &self.signer
    }

    /// The bot: deposits for and receives shares, holds receipts, receives redemptions.
    pub fn bot(&self) -> Address {
        self.signer.address()
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    pub async fn head(&self) -> Result<u64, ChainError> {
        timed("eth_blockNumber", self.provider.get_block_number()).await
    }

    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = timed(
            "eth_getBlockByNumber",
            self.provider
                .get_block_by_number(BlockNumberOrTag::Number(number))
                .into_future(),
        )
        .await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// The bot's nonce counting only mined transactions.
    pub async fn nonce_latest(&self) -> Result<u64, ChainError> {
        timed(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(self.bot())
                .latest()
                .into_future(),
        )
        .await
    }

    /// The bot's nonce counting the transactions the node holds pending as well: above
    /// [`Chain::nonce_latest`] while one of the bot's transactions waits to be mined.
    pub async fn nonce_pending(&self) -> Result<u64, ChainError> {
        timed(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(self.bot())
                .pending()
                .into_future(),
        )
        .await
    }

    /// The bot's nonce as of block `number`: transactions mined up to and including it.
    pub async fn nonce_at(&self, number: u64) -> Result<u64, ChainError> {
        timed(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(self.bot())
                .number(number)
                .into_future(),
        )
        .await
    }

    pub async fn code_at(&self, address: Address) -> Result<Bytes, ChainError> {
        timed(
            "eth_getCode",
            self.provider.get_code_at(address).into_future(),
        )
        .await
    }

    /// Tagged `Deposit` logs of `vault` in `[from, to]`, in bounded ranges.
    pub async fn scan_deposits(
        &self,
        vault: Address,
        from: u64,
        to: u64,
    ) -> Result<(Vec<ObservedDeposit>, Vec<ForeignDeposit>), ChainError> {
        let mut ours = Vec::new();
        let mut foreign = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(LOG_RANGE_BLOCKS_MAX - 1));
            let filter = Filter::new()
                .address(vault)
                .event_signature(Vault::Deposit::SIGNATURE_HASH)
                .from_block(start)
                .to_block(end);
            let logs = timed("eth_getLogs", self.provider.get_logs(&filter)).await?;
            for log in logs {
                match decode_deposit(vault, &log) {
                    Ok(d) => ours.push(d),
                    Err(f) => foreign.push(*f),
                }
            }
            start = end + 1;
        }
        Ok((ours, foreign))
    }

    /// Every log of `filter` in `[from, to]`, asked in bounded ranges.
    async fn logs_in_ranges(
        &self,
        filter: Filter,
        from: u64,
        to: u64,
    ) -> Result<Vec<Log>, ChainError> {
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(LOG_RANGE_BLOCKS_MAX - 1));
            let ranged = filter.clone().from_block(start).to_block(end);
            out.extend(timed("eth_getLogs", self.provider.get_logs(&ranged)).await?);
            start = end + 1;
        }
        Ok(out)
    }

    /// ERC-20 transfers of `vault` shares to the bot in `[from, to]`, mints excluded:
    /// `(from, value, block, tx hash, log index)`.
    pub async fn scan_transfers_to_bot(
        &self,
        vault: Address,
        from: u64,
        to: u64,
    ) -> Result<Vec<(Address, U256, u64, B256, u64)>, ChainError> {
        let filter = Filter::new()
            .address(vault)
            .event_signature(Vault::Transfer::SIGNATURE_HASH)
            .topic2(self.bot().into_word());
        let mut out = Vec::new();
        for log in self.logs_in_ranges(filter, from, to).await? {
            let Ok(decoded) = log.log_decode::<Vault::Transfer>() else {
                continue;
            };
            let event = decoded.inner.data;
            if event.from == Address::ZERO || event.from == self.bot() {
                continue;
            }
            let Some((block_number, tx_hash, _)) = position(&log) else {
                continue;
            };
            // The id uses the log's place within its transaction, which a reorg that re-mines
            // the transaction elsewhere in a block cannot change (the block-wide index can).
            let index = self.index_in_transaction(&log, tx_hash).await?;
            out.push((event.from, event.value, block_number, tx_hash, index));
        }
        Ok(out)
    }

    /// `Withdraw` logs of `vault` in `[from, to]` whose information carries a redemption id.
    pub async fn scan_burns(
        &self,
        vault: Address,
        from: u64,
        to: u64,
    ) -> Result<Vec<ObservedBurn>, ChainError> {
        let filter = Filter::new()
            .address(vault)
            .event_signature(Vault::Withdraw::SIGNATURE_HASH);
        let mut out = Vec::new();
        for log in self.logs_in_ranges(filter, from, to).await? {
            let Ok(decoded) = log.log_decode::<Vault::Withdraw>() else {
                continue;
            };
            let event = decoded.inner.data;
            let tag = meta::decode(&event.receiptInformation)
                .ok()
                .and_then(|info| IssuerRequestId::parse(&info.issuer_request_id).ok());
            let Some(redemption_id) = tag else {
                tracing::warn!(%vault, tx = ?log.transaction_hash, "Withdraw without our tag: reported as an anomaly");
                continue;
            };
            if let Some(burn) = decode_burn(vault, &log, redemption_id) {
                out.push(burn);
            }
        }
        Ok(out)
    }

    /// Where `log` stands among the logs of its own transaction: the number of that
    /// transaction's logs before it in the block. Read from the block's logs (every node keeps
    /// them), not from a receipt lookup that pruned nodes refuse for old transactions.
    pub async fn index_in_transaction(&self, log: &Log, tx_hash: B256) -> Result<u64, ChainError> {
        let missing = |what: &str| ChainError::Rpc {
            call: "eth_getLogs",
            detail: format!("log of {tx_hash} without its {what}"),
        };
        let block_hash = log.block_hash.ok_or_else(|| missing("block hash"))?;
        let index = log.log_index.ok_or_else(|| missing("log index"))?;
        let block_logs = timed(
            "eth_getLogs",
            self.provider
                .get_logs(&Filter::new().at_block_hash(block_hash)),
        )
        .await?;
        let before = block_logs
            .iter()
            .filter(|l| {
                l.transaction_hash == Some(tx_hash) && l.log_index.is_some_and(|i| i < index)
            })
            .count();
        Ok(u64::try_from(before).unwrap_or(u64::MAX))
    }

    /// The bot's balances of receipt `ids` of `receipt`, in the same order.
    pub async fn receipt_balances(
        &self,
        receipt: Address,
        ids: &[U256],
    ) -> Result<Vec<U256>, ChainError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let contract = Receipt::new(receipt, &self.provider);
        let owners = vec![self.bot(); ids.len()];
        timed(
            "balanceOfBatch",
            contract
                .balanceOfBatch(owners, ids.to_vec())
                .call()
                .into_future(),
        )
        .await
    }

    /// The vault's total supply of shares (18 decimals).
    pub async fn total_supply(&self, vault: Address) -> Result<U256, ChainError> {
        let contract = Vault::new(vault, &self.provider);
        timed("totalSupply", contract.totalSupply().call().into_future()).await
    }

    pub async fn fees(&self) -> Result<Fees, ChainError> {
        let estimate = timed("eth_feeHistory", self.provider.estimate_eip1559_fees()).await?;
        Ok(Fees {
            max_fee_per_gas: estimate.max_fee_per_gas,
            max_priority_fee_per_gas: estimate.max_priority_fee_per_gas,
        })
    }

    /// Gas for `input` sent by the bot to `to` now, with a margin for state moving under it.
    pub async fn estimate_gas(&self, to: Address, input: &Bytes) -> Result<u64, ChainError> {
        let request = TransactionRequest::default()
            .from(self.bot())
            .to(to)
            .input(input.clone().into());
        let gas = timed(
            "eth_estimateGas",
            self.provider.estimate_gas(request).into_future(),
        )
        .await?;
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
            chain_id: self.chain_id,
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

    /// Broadcasts stored bytes. A node that already has them, or that says the nonce is used,
    /// is not an error here: the next pass reads the truth from receipts and nonces.
    pub async fn broadcast(&self, raw: &Bytes) -> Result<(), ChainError> {
        match timed(
            "eth_sendRawTransaction",
            self.provider.send_raw_transaction(raw),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(ChainError::Rpc { detail, .. })
                if [
                    "already known",
                    "nonce too low",
                    "already imported",
                    "replacement transaction underpriced",
                ]
                .iter()
                .any(|s| detail.to_lowercase().contains(s)) =>
            {
                tracing::debug!(%detail, "broadcast: node already has it or the nonce moved on");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Once one of our hashes is mined: its block, its status, and the tagged deposits and burns
    /// in its own logs (read from the receipt, so a log query served by a lagging node cannot
    /// make a mined mint look like one that did nothing).
    pub async fn mined(&self, hash: B256) -> Result<Option<Mined>, ChainError> {
        let receipt = timed(
            "eth_getTransactionReceipt",
            self.provider.get_transaction_receipt(hash).into_future(),
        )
        .await?;
        let Some(receipt) = receipt else {
            return Ok(None);
        };
        let Some(block_number) = receipt.block_number else {
            return Ok(None);
        };
        let mut deposits = Vec::new();
        let mut burns = Vec::new();
        for log in receipt.inner.logs() {
            let vault = log.address();
            match log.topics().first() {
                Some(t) if *t == Vault::Deposit::SIGNATURE_HASH => {
                    if let Ok(d) = decode_deposit(vault, log) {
                        deposits.push(d);
                    }
                }
                Some(t) if *t == Vault::Withdraw::SIGNATURE_HASH => {
                    let tag = log.log_decode::<Vault::Withdraw>().ok().and_then(|w| {
                        meta::decode(&w.inner.data.receiptInformation)
                            .ok()
                            .and_then(|info| IssuerRequestId::parse(&info.issuer_request_id).ok())
                    });
                    if let Some(burn) = tag.and_then(|id| decode_burn(vault, log, id)) {
                        burns.push(burn);
                    }
                }
                _ => {}
            }
        }
        Ok(Some(Mined {
            block_number,
            success: receipt.status(),
            deposits,
            burns,
        }))
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

/// Block, transaction and block-wide index of a mined log; `None` for a log without them
/// (pending), which is never acted on rather than defaulted to block 0.
fn position(log: &Log) -> Option<(u64, B256, u64)> {
    Some((log.block_number?, log.transaction_hash?, log.log_index?))
}

fn decode_burn(vault: Address, log: &Log, redemption_id: IssuerRequestId) -> Option<ObservedBurn> {
    let (block_number, tx_hash, log_index) = position(log)?;
    let event = log.log_decode::<Vault::Withdraw>().ok()?.inner.data;
    Some(ObservedBurn {
        vault,
        redemption_id,
        shares: event.shares,
        receipt_id: event.id,
        block_number,
        tx_hash,
        log_index,
    })
}

fn decode_deposit(vault: Address, log: &Log) -> Result<ObservedDeposit, Box<ForeignDeposit>> {
    let Some((block_number, tx_hash, log_index)) = position(log) else {
        return Err(Box::new(ForeignDeposit {
            vault,
            tx_hash: log.transaction_hash.unwrap_or_default(),
            block_number: 0,
            assets: U256::ZERO,
            detail: "log without a block position (pending)".into(),
        }));
    };
    let foreign = |assets: U256, detail: String| {
        Box::new(ForeignDeposit {
            vault,
            tx_hash,
            block_number,
            assets,
            detail,
        })
    };
    let decoded = log
        .log_decode::<Vault::Deposit>()
        .map_err(|e| foreign(U256::ZERO, format!("not a Deposit: {e}")))?;
    let event = decoded.inner.data;
    let info = meta::decode(&event.receiptInformation)
        .map_err(|e| foreign(event.assets, e.to_string()))?;
    let irid = IssuerRequestId::parse(&info.issuer_request_id)
        .map_err(|e| foreign(event.assets, e.to_string()))?;
    let trid = TokenizationRequestId::parse(&info.tokenization_request_id)
        .map_err(|e| foreign(event.assets, e.to_string()))?;
    Ok(ObservedDeposit {
        vault,
        issuer_request_id: irid,
        tokenization_request_id: trid,
        owner: event.owner,
        assets: event.assets,
        receipt_id: event.id,
        block_number,
        block_hash: log.block_hash.unwrap_or_default(),
        tx_hash,
        log_index,
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
