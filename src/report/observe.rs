//! Observe for an audit: the vaults' logs up to the block (in bounded ranges), supply and
//! balances *at* that block, and Alpaca's request lists. Reads nothing from the cache.

use super::{AssetSpec, ReportError};
use crate::alpaca::{
    Broker, RequestFilter, RequestStatus as WireStatus, RequestType, TokenizationRequest,
};
use crate::chain::{Chain, Receipt, Vault, LOG_RANGE_BLOCKS_MAX};
use alloy::eips::BlockId;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reconciler::audit::{
    AlpacaRequest, AssetInput, AuditInput, DepositLog, LogPos, ReceiptHolding, RequestKind,
    RequestStatus, Tag, TransferLog, TxBlock, WithdrawLog,
};
use reconciler::{meta, Qty};
use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::io::IsTerminal;
use std::time::Duration;

/// Receipt ids asked for in one `balanceOfBatch`: keeps each call's calldata and gas small.
const RECEIPT_BATCH_MAX: usize = 500;
/// Every RPC call of a report gives up after this.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

async fn timed<T, E: std::fmt::Display>(
    call: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ReportError> {
    match tokio::time::timeout(RPC_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ReportError::Chain(format!("{call}: {e}"))),
        Err(_) => Err(ReportError::Chain(format!("{call}: timed out"))),
    }
}

/// A bar on stderr when a person watches it; nothing when stderr is piped or a file.
fn progress(total_blocks: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_blocks), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} blocks ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Everything the audit needs for `assets` at `at_block`.
pub async fn observe<B: Broker>(
    chain: &Chain,
    broker: &B,
    assets: &[AssetSpec],
    at_block: u64,
) -> Result<AuditInput, ReportError> {
    let bot = chain.bot();
    let total_blocks: u64 = assets
        .iter()
        .map(|a| at_block.saturating_sub(a.deploy_block).saturating_add(1))
        .sum();
    let bar = progress(total_blocks);
    let mut inputs = Vec::with_capacity(assets.len());
    for spec in assets {
        bar.set_message(format!("{} logs", spec.underlying));
        inputs.push(observe_asset(chain, spec, bot, at_block, &bar).await?);
    }
    bar.finish_and_clear();

    let mut alpaca = Vec::new();
    for kind in [RequestType::Mint, RequestType::Redeem] {
        let filter = RequestFilter {
            kind: Some(kind),
            ..RequestFilter::default()
        };
        let listed = broker
            .list_requests(&filter)
            .await
            .map_err(|e| ReportError::Alpaca(e.to_string()))?;
        alpaca.extend(listed.into_iter().map(alpaca_request));
    }

    // Transactions Alpaca names that are not among the logs up to the block: where are they?
    let seen: BTreeSet<B256> = inputs
        .iter()
        .flat_map(|a| {
            a.deposits
                .iter()
                .map(|d| d.at.tx_hash)
                .chain(a.withdraws.iter().map(|w| w.at.tx_hash))
                .chain(a.transfers.iter().map(|t| t.at.tx_hash))
        })
        .collect();
    let named: BTreeSet<B256> = alpaca
        .iter()
        .filter_map(|r| r.tx_hash)
        .filter(|h| !seen.contains(h))
        .collect();
    let mut tx_blocks = Vec::new();
    for tx_hash in named {
        let receipt = timed(
            "eth_getTransactionReceipt",
            chain
                .provider()
                .get_transaction_receipt(tx_hash)
                .into_future(),
        )
        .await?;
        if let Some(block) = receipt.and_then(|r| r.block_number) {
            tx_blocks.push(TxBlock { tx_hash, block });
        }
    }

    let latest = timed(
        "eth_getTransactionCount",
        chain
            .provider()
            .get_transaction_count(bot)
            .latest()
            .into_future(),
    )
    .await?;
    let pending = timed(
        "eth_getTransactionCount",
        chain
            .provider()
            .get_transaction_count(bot)
            .pending()
            .into_future(),
    )
    .await?;
    Ok(AuditInput {
        at_block,
        in_flight: pending.saturating_sub(latest),
        assets: inputs,
        alpaca,
        tx_blocks,
    })
}

async fn observe_asset(
    chain: &Chain,
    spec: &AssetSpec,
    bot: Address,
    at_block: u64,
    bar: &ProgressBar,
) -> Result<AssetInput, ReportError> {
    let provider = chain.provider();
    let mut deposits = Vec::new();
    let mut withdraws = Vec::new();
    let mut transfers = Vec::new();
    let mut start = spec.deploy_block;
    while start <= at_block {
        let end = at_block.min(start.saturating_add(LOG_RANGE_BLOCKS_MAX - 1));
        let filter = Filter::new()
            .address(spec.vault)
            .event_signature(vec![
                Vault::Deposit::SIGNATURE_HASH,
                Vault::Withdraw::SIGNATURE_HASH,
                Vault::Transfer::SIGNATURE_HASH,
            ])
            .from_block(start)
            .to_block(end);
        let logs = timed("eth_getLogs", provider.get_logs(&filter)).await?;
        for log in &logs {
            let Some(at) = position(log) else { continue };
            match log.topic0() {
                Some(&Vault::Deposit::SIGNATURE_HASH) => {
                    let event = log
                        .log_decode::<Vault::Deposit>()
                        .map_err(|e| bad_log(at, &e))?
                        .inner
                        .data;
                    deposits.push(DepositLog {
                        at,
                        sender: event.sender,
                        owner: event.owner,
                        assets: Qty::from_units(event.assets),
                        shares: Qty::from_units(event.shares),
                        id: event.id,
                        tag: tag(&event.receiptInformation),
                    });
                }
                Some(&Vault::Withdraw::SIGNATURE_HASH) => {
                    let event = log
                        .log_decode::<Vault::Withdraw>()
                        .map_err(|e| bad_log(at, &e))?
                        .inner
                        .data;
                    withdraws.push(WithdrawLog {
                        at,
                        sender: event.sender,
                        receiver: event.receiver,
                        owner: event.owner,
                        assets: Qty::from_units(event.assets),
                        shares: Qty::from_units(event.shares),
                        id: event.id,
                        tag: tag(&event.receiptInformation),
                    });
                }
                Some(&Vault::Transfer::SIGNATURE_HASH) => {
                    let event = log
                        .log_decode::<Vault::Transfer>()
                        .map_err(|e| bad_log(at, &e))?
                        .inner
                        .data;
                    if event.from == bot || event.to == bot {
                        let inbound = event.to == bot && event.from != Address::ZERO;
                        let index_in_tx = if inbound {
                            Some(
                                chain
                                    .index_in_transaction(log, at.tx_hash)
                                    .await
                                    .map_err(|e| ReportError::Chain(e.to_string()))?,
                            )
                        } else {
                            None
                        };
                        transfers.push(TransferLog {
                            at,
                            from: event.from,
                            to: event.to,
                            value: Qty::from_units(event.value),
                            index_in_tx,
                        });
                    }
                }
                _ => {}
            }
        }
        bar.inc(end - start + 1);
        start = end + 1;
    }

    let block = BlockId::number(at_block);
    let vault = Vault::new(spec.vault, provider.clone());
    let total_supply = timed(
        "totalSupply",
        vault.totalSupply().block(block).call().into_future(),
    )
    .await?;
    let bot_shares = timed(
        "balanceOf",
        vault.balanceOf(bot).block(block).call().into_future(),
    )
    .await?;
    let receipt_address =
        timed("receipt", vault.receipt().block(block).call().into_future()).await?;
    let receipt = Receipt::new(receipt_address, provider.clone());
    let ids: Vec<U256> = deposits
        .iter()
        .map(|d| d.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut receipts = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(RECEIPT_BATCH_MAX) {
        let balances = timed(
            "balanceOfBatch",
            receipt
                .balanceOfBatch(vec![bot; chunk.len()], chunk.to_vec())
                .block(block)
                .call()
                .into_future(),
        )
        .await?;
        if balances.len() != chunk.len() {
            return Err(ReportError::Chain(format!(
                "balanceOfBatch answered {} balances for {} ids",
                balances.len(),
                chunk.len()
            )));
        }
        receipts.extend(
            chunk
                .iter()
                .zip(balances)
                .map(|(id, balance)| ReceiptHolding {
                    id: *id,
                    balance: Qty::from_units(balance),
                }),
        );
    }

    Ok(AssetInput {
        underlying: spec.underlying.clone(),
        token: spec.token.clone(),
        network: spec.network.clone(),
        vault: spec.vault,
        bot,
        deploy_block: spec.deploy_block,
        total_supply: Qty::from_units(total_supply),
        bot_shares: Qty::from_units(bot_shares),
        deposits,
        withdraws,
        transfers,
        receipts,
    })
}

/// A mined log's position; a log without one (pending) is not part of any block's book.
fn position(log: &Log) -> Option<LogPos> {
    Some(LogPos {
        block: log.block_number?,
        log_index: log.log_index?,
        tx_hash: log.transaction_hash?,
    })
}

fn bad_log(at: LogPos, e: &impl std::fmt::Display) -> ReportError {
    ReportError::Chain(format!(
        "log {} #{} in block {} does not decode: {e}",
        at.tx_hash, at.log_index, at.block
    ))
}

fn tag(bytes: &[u8]) -> Tag {
    match meta::decode(bytes) {
        Ok(info) => Tag::Ours(info),
        Err(e) => Tag::Foreign {
            detail: e.to_string(),
        },
    }
}

fn alpaca_request(r: TokenizationRequest) -> AlpacaRequest {
    AlpacaRequest {
        id: r.id,
        issuer_request_id: r.issuer_request_id,
        kind: match r.kind {
            RequestType::Mint => RequestKind::Mint,
            RequestType::Redeem => RequestKind::Redeem,
        },
        status: match r.status {
            WireStatus::Pending => RequestStatus::Pending,
            WireStatus::Completed => RequestStatus::Completed,
            WireStatus::Rejected => RequestStatus::Rejected,
        },
        underlying: r.underlying_symbol,
        token: r.token_symbol,
        network: r.network,
        qty: r.qty,
        wallet: r.wallet_address,
        tx_hash: r.tx_hash,
    }
}
