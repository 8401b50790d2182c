//! Observe for an audit: the vaults' logs up to the block (in bounded ranges), supply and
//! balances *at* that block, and Alpaca's request lists. Reads nothing from the cache.

use super::{AssetSpec, ReportError};
use crate::alpaca::{
    Broker, RequestFilter, RequestStatus as WireStatus, RequestType, TokenizationRequest,
};
use crate::chain::{At, Chain, ChainError, LogQuery, VaultEvent, VaultLog, LOG_RANGE_BLOCKS_MAX};
use alloy::primitives::{Address, B256, U256};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reconciler::audit::{
    AlpacaRequest, AssetInput, AuditInput, DepositLog, LogPos, ReceiptHolding, RequestKind,
    RequestStatus, Tag, TransferLog, TxBlock, WithdrawLog,
};
use reconciler::{meta, Qty};
use std::collections::{BTreeSet, VecDeque};
use std::io::IsTerminal;
use tokio::task::JoinHandle;

/// Receipt ids asked for in one `balanceOfBatch`: keeps each call's calldata and gas small.
const RECEIPT_BATCH_MAX: usize = 500;
/// `balanceOfBatch` calls in flight at once.
const RECEIPT_BATCHES_IN_FLIGHT: usize = 4;
/// Blocks in a scan's first log request: small, so that a dense history's first answer is small
/// too; a sparse history doubles it on every answer up to the node's range.
const LOG_RANGE_FIRST_BLOCKS: u64 = 16;
/// Logs one answer aims at (about 4 MB of JSON at the vault's ~840 bytes a log).
const LOGS_PER_ANSWER: u64 = 5_000;
/// Log requests in flight: the node builds the next answer while this one is decoded.
const LOG_REQUESTS_IN_FLIGHT: usize = 2;
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
    // Alpaca's lists do not depend on the chain: they are read while the logs are.
    let chain_side = async {
        let mut inputs = Vec::with_capacity(assets.len());
        for spec in assets {
            bar.set_message(format!("{} logs", spec.underlying));
            inputs.push(observe_asset(chain, spec, bot, at_block, &bar).await?);
        }
        bar.finish_and_clear();
        Ok(inputs)
    };
    let (inputs, alpaca) = tokio::try_join!(chain_side, alpaca_requests(broker))?;

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
    let mut inbound = Vec::new();
    let mut scan = LogScan::new(chain, spec.vault, spec.deploy_block, at_block);
    while let Some((blocks, logs)) = scan.next().await? {
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
                    if event.to == bot && event.from != Address::ZERO {
                        // Its place in its transaction is read below, each block once.
                        inbound.push((transfers.len(), log.at));
                    }
                    transfers.push(TransferLog {
                        at,
                        from: event.from,
                        to: event.to,
                        value: Qty::from_units(event.value),
                        index_in_tx: None,
                    });
                }
                VaultEvent::Transfer(_) => {}
                VaultEvent::Undecodable { detail } => return Err(bad_log(at, detail)),
            }
        }
        bar.inc(blocks);
    }
    let ats: Vec<_> = inbound.iter().map(|(_, at)| *at).collect();
    let indexes = node
        .indexes_in_transactions(&ats)
        .await
        .map_err(chain_error)?;
    for ((i, _), index) in inbound.into_iter().zip(indexes) {
        transfers[i].index_in_tx = Some(index);
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
    let mut batches = futures::stream::iter(ids.chunks(RECEIPT_BATCH_MAX))
        .map(|chunk| async move {
            let balances = node.receipt_balances(receipt, bot, chunk, block).await;
            balances.map(|b| (chunk, b))
        })
        .buffered(RECEIPT_BATCHES_IN_FLIGHT);
    while let Some(batch) = batches.next().await {
        let (chunk, balances) = batch.map_err(chain_error)?;
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

/// Alpaca's mint and redeem requests, every page.
async fn alpaca_requests<B: Broker>(broker: &B) -> Result<Vec<AlpacaRequest>, ReportError> {
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
    Ok(alpaca)
}

/// One range's `eth_getLogs`, running on its own task.
type LogRequest = JoinHandle<Result<Vec<VaultLog>, ChainError>>;

/// A vault's logs from its deploy block to the report's block, in chain order, asked in ranges
/// sized to the history's density: an answer aims at [`LOGS_PER_ANSWER`] logs, so a dense history
/// is read in pieces of a few MB (one answer of 300,000 logs is 250 MB) and a sparse one in the
/// node's widest ranges. The next range is asked while this one is decoded.
struct LogScan<'a> {
    chain: &'a Chain,
    vault: Address,
    /// The first block not yet asked for.
    next: u64,
    last: u64,
    range_blocks: u64,
    /// Ranges asked and not yet read, oldest first; aborted if the scan is dropped early.
    ahead: VecDeque<(u64, LogRequest)>,
}

impl<'a> LogScan<'a> {
    fn new(chain: &'a Chain, vault: Address, first: u64, last: u64) -> LogScan<'a> {
        LogScan {
            chain,
            vault,
            next: first,
            last,
            range_blocks: LOG_RANGE_FIRST_BLOCKS,
            ahead: VecDeque::new(),
        }
    }

    /// The next range's block count and logs; `None` once the last block is read.
    async fn next(&mut self) -> Result<Option<(u64, Vec<VaultLog>)>, ReportError> {
        while self.ahead.len() < LOG_REQUESTS_IN_FLIGHT && self.next <= self.last {
            let start = self.next;
            let end = self
                .last
                .min(start.saturating_add(self.range_blocks.saturating_sub(1)));
            let chain = self.chain.clone();
            let vault = self.vault;
            let request = tokio::spawn(async move {
                chain
                    .node()
                    .vault_logs(vault, LogQuery::All, start, end)
                    .await
            });
            self.ahead.push_back((end - start + 1, request));
            match end.checked_add(1) {
                Some(next) => self.next = next,
                None => break,
            }
        }
        let Some((blocks, request)) = self.ahead.front_mut() else {
            return Ok(None);
        };
        let blocks = *blocks;
        let answer = request
            .await
            .map_err(|e| ReportError::Chain(format!("log request stopped: {e}")));
        self.ahead.pop_front();
        let logs = answer?.map_err(chain_error)?;
        self.range_blocks = next_range_blocks(self.range_blocks, logs.len(), blocks);
        Ok(Some((blocks, logs)))
    }
}

impl Drop for LogScan<'_> {
    fn drop(&mut self) {
        for (_, request) in &self.ahead {
            request.abort();
        }
    }
}

/// The next range's size, from the last answer's: as many blocks as should hold
/// [`LOGS_PER_ANSWER`] logs at that answer's density, at most twice the current size and within
/// `[1, LOG_RANGE_BLOCKS_MAX]`. `answered_blocks` is the size the answer was asked at (the range
/// ahead may already use another).
fn next_range_blocks(current: u64, logs: usize, answered_blocks: u64) -> u64 {
    let logs = u64::try_from(logs).unwrap_or(u64::MAX);
    let grown = current.saturating_mul(2);
    let fitted = match logs {
        0 => grown,
        _ => answered_blocks.saturating_mul(LOGS_PER_ANSWER) / logs,
    };
    fitted.min(grown).clamp(1, LOG_RANGE_BLOCKS_MAX)
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

#[cfg(test)]
mod tests {
    use super::{next_range_blocks, LOGS_PER_ANSWER, LOG_RANGE_BLOCKS_MAX};

    #[test]
    fn an_empty_or_sparse_answer_doubles_the_range_up_to_the_nodes() {
        assert_eq!(next_range_blocks(16, 0, 16), 32);
        assert_eq!(next_range_blocks(16, 3, 16), 32);
        assert_eq!(next_range_blocks(1_500, 0, 1_500), LOG_RANGE_BLOCKS_MAX);
        assert_eq!(
            next_range_blocks(LOG_RANGE_BLOCKS_MAX, 0, LOG_RANGE_BLOCKS_MAX),
            LOG_RANGE_BLOCKS_MAX
        );
    }

    #[test]
    fn a_dense_answer_shrinks_the_range_to_the_target_and_never_below_one_block() {
        let logs = usize::try_from(LOGS_PER_ANSWER * 4).unwrap();
        assert_eq!(next_range_blocks(64, logs, 64), 16);
        // A single block can hold more than the target: the range stays one block.
        assert_eq!(next_range_blocks(1, logs, 1), 1);
        assert_eq!(next_range_blocks(2, usize::MAX, 2), 1);
    }

    #[test]
    fn the_size_follows_the_answered_range_not_the_one_already_ahead() {
        // The answer came from a 100-block range; the range ahead is already 200 blocks.
        let logs = usize::try_from(LOGS_PER_ANSWER).unwrap();
        assert_eq!(next_range_blocks(200, logs, 100), 100);
    }
}
