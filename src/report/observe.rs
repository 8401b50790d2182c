//! Observe for an audit: the vaults' logs up to the block (in bounded ranges), supply and
//! balances *at* that block, and Alpaca's request lists. Reads nothing from the cache.

use super::{AssetSpec, ReportError};
use crate::alpaca::{
    Broker, RequestFilter, RequestStatus as WireStatus, RequestType, TokenizationRequest,
};
use crate::chain::{At, Chain, ChainError, LogQuery, VaultEvent, LOG_RANGE_BLOCKS_MAX};
use alloy::primitives::{Address, B256, U256};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reconciler::audit::{
    AlpacaRequest, AssetInput, AuditInput, DepositLog, LogPos, ReceiptHolding, RequestKind,
    RequestStatus, Tag, TransferLog, TxBlock, WithdrawLog,
};
use reconciler::{meta, Qty};
use std::collections::BTreeSet;
use std::io::IsTerminal;

/// Receipt ids asked for in one `balanceOfBatch`: keeps each call's calldata and gas small.
const RECEIPT_BATCH_MAX: usize = 500;
#[allow(clippy::needless_pass_by_value)] // used as `map_err(chain_error)`
fn chain_error(e: ChainError) -> ReportError {
    ReportError::Chain(e.to_string())
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

    let started = std::time::Instant::now();
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
    tracing::info!(
        requests = alpaca.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "report: Alpaca's requests listed"
    );

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
    let node = chain.node();
    let mut tx_blocks = Vec::new();
    for tx_hash in named {
        if let Some(receipt) = node.receipt(tx_hash).await.map_err(chain_error)? {
            tx_blocks.push(TxBlock {
                tx_hash,
                block: receipt.block_number,
            });
        }
    }

    let latest = node.nonce(bot, At::Latest).await.map_err(chain_error)?;
    let pending = node.nonce(bot, At::Pending).await.map_err(chain_error)?;
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
    let node = chain.node();
    let started = std::time::Instant::now();
    let mut deposits = Vec::new();
    let mut withdraws = Vec::new();
    let mut transfers = Vec::new();
    // Asked in the node's own ranges, one range at a time, so the bar moves on a long history.
    let mut start = spec.deploy_block;
    while start <= at_block {
        let end = at_block.min(start.saturating_add(LOG_RANGE_BLOCKS_MAX - 1));
        let logs = node
            .vault_logs(spec.vault, LogQuery::All, start, end)
            .await
            .map_err(chain_error)?;
        for log in &logs {
            let at = LogPos {
                block: log.at.block_number,
                log_index: log.at.log_index,
                tx_hash: log.at.tx_hash,
            };
            match &log.event {
                VaultEvent::Deposit(event) => deposits.push(DepositLog {
                    at,
                    sender: event.sender,
                    owner: event.owner,
                    assets: Qty::from_units(event.assets),
                    shares: Qty::from_units(event.shares),
                    id: event.id,
                    tag: tag(&event.receiptInformation),
                }),
                VaultEvent::Withdraw(event) => withdraws.push(WithdrawLog {
                    at,
                    sender: event.sender,
                    receiver: event.receiver,
                    owner: event.owner,
                    assets: Qty::from_units(event.assets),
                    shares: Qty::from_units(event.shares),
                    id: event.id,
                    tag: tag(&event.receiptInformation),
                }),
                VaultEvent::Transfer(event) if event.from == bot || event.to == bot => {
                    let inbound = event.to == bot && event.from != Address::ZERO;
                    let index_in_tx = if inbound {
                        Some(
                            node.index_in_transaction(&log.at)
                                .await
                                .map_err(chain_error)?,
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
                VaultEvent::Transfer(_) => {}
                VaultEvent::Undecodable { detail } => return Err(bad_log(at, detail)),
            }
        }
        bar.inc(end - start + 1);
        start = end + 1;
    }

    tracing::info!(
        underlying = %spec.underlying,
        deposits = deposits.len(),
        withdraws = withdraws.len(),
        transfers = transfers.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "report: vault logs read"
    );
    let started = std::time::Instant::now();
    let block = At::Block(at_block);
    let total_supply = node
        .total_supply(spec.vault, block)
        .await
        .map_err(chain_error)?;
    let bot_shares = node
        .share_balance(spec.vault, bot, block)
        .await
        .map_err(chain_error)?;
    let receipt = node
        .receipt_contract(spec.vault, block)
        .await
        .map_err(chain_error)?;
    let ids: Vec<U256> = deposits
        .iter()
        .map(|d| d.id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut receipts = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(RECEIPT_BATCH_MAX) {
        let balances = node
            .receipt_balances(receipt, bot, chunk, block)
            .await
            .map_err(chain_error)?;
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
    tracing::info!(
        underlying = %spec.underlying,
        receipts = receipts.len(),
        elapsed_ms = started.elapsed().as_millis(),
        "report: supply and receipt balances read"
    );

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
