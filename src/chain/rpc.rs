//! [`RpcNode`]: the [`Node`] trait over JSON-RPC with alloy. The one place that reads a node's
//! wire: every call is bounded in time, logs are asked in ranges providers accept, and the error
//! texts nodes use for "already have it", "nonce used" and "fee too low" become typed errors.

use super::node::{At, BlockHead, Fees, LogAt, LogQuery, Node, NodeReceipt, VaultEvent, VaultLog};
use super::{Authorizer, ChainError, Receipt, Vault};
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::Ethereum;
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::client::ClientBuilder;
use alloy::rpc::types::{Filter, Log, TransactionRequest};
use alloy::sol_types::SolEvent;
use alloy::transports::layers::{RateLimitRetryPolicy, RetryBackoffLayer, RetryPolicy};
use alloy::transports::TransportError;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::Duration;

/// Most blocks asked for in one `eth_getLogs`: providers cap ranges, and a bounded range keeps a
/// long catch-up scan interruptible.
pub const LOG_RANGE_BLOCKS_MAX: u64 = 2_000;
/// Blocks whose logs [`RpcNode::indexes_in_transactions`] asks for at once.
const BLOCK_LOGS_IN_FLIGHT: usize = 4;
/// Every RPC call gives up after this; the pass retries later.
const RPC_TIMEOUT: Duration = Duration::from_secs(20);

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

/// Retries of a call a node refused for its rate, each after the node's hint (Retry-After,
/// "try again in 4ms") or [`RATE_LIMIT_BACKOFF_MS`]; all within the call's [`RPC_TIMEOUT`].
const RATE_LIMIT_RETRIES: u32 = 10;
const RATE_LIMIT_BACKOFF_MS: u64 = 500;

/// A hosted node's refusal for rate (HTTP 429 or 503, Infura's -32005 "limit exceeded", Alchemy's
/// 429, QuickNode's "request limit reached") is retried; a refusal of an answer as too large
/// ([`answer_too_large`]), which some send with the same -32005, is not: it is asked again in
/// smaller ranges.
#[derive(Debug, Clone, Copy)]
struct RateLimited;

impl RetryPolicy for RateLimited {
    fn should_retry(&self, error: &TransportError) -> bool {
        RateLimitRetryPolicy::default().should_retry(error) && !answer_too_large(&error.to_string())
    }

    fn backoff_hint(&self, error: &TransportError) -> Option<Duration> {
        RateLimitRetryPolicy::default().backoff_hint(error)
    }
}

/// A node over HTTP JSON-RPC.
#[derive(Clone, Debug)]
pub struct RpcNode {
    provider: RootProvider<Ethereum>,
    chain_id: u64,
    /// Most blocks one `eth_getLogs` asks for (providers cap it differently per network).
    log_range_blocks: u64,
}

impl RpcNode {
    pub async fn connect(rpc_url: &str) -> Result<RpcNode, ChainError> {
        RpcNode::connect_with(rpc_url, LOG_RANGE_BLOCKS_MAX).await
    }

    /// [`RpcNode::connect`] with this network's log range (at least 1 block).
    pub async fn connect_with(rpc_url: &str, log_range_blocks: u64) -> Result<RpcNode, ChainError> {
        let url = rpc_url
            .parse()
            .map_err(|_| ChainError::BadUrl(crate::config::redact_url(rpc_url)))?;
        let retrying = RetryBackoffLayer::new_with_policy(
            RATE_LIMIT_RETRIES,
            RATE_LIMIT_BACKOFF_MS,
            // No compute-unit budget of our own: the node's refusals and hints pace the retries.
            u64::MAX,
            RateLimited,
        );
        let provider =
            RootProvider::<Ethereum>::new(ClientBuilder::default().layer(retrying).http(url));
        let chain_id = timed("eth_chainId", provider.get_chain_id()).await?;
        Ok(RpcNode {
            provider,
            chain_id,
            log_range_blocks: log_range_blocks.max(1),
        })
    }
}

fn block_id(at: At) -> BlockId {
    match at {
        At::Latest => BlockId::latest(),
        At::Block(n) => BlockId::number(n),
        At::Pending => BlockId::pending(),
    }
}

/// A mined log's position; `None` for a pending one, which is never acted on.
fn log_at(log: &Log) -> Option<LogAt> {
    Some(LogAt {
        block_number: log.block_number?,
        block_hash: log.block_hash?,
        tx_hash: log.transaction_hash?,
        log_index: log.log_index?,
    })
}

/// How many of `at`'s transaction's logs come before it among its block's logs.
fn index_among(block_logs: &[Log], at: &LogAt) -> u64 {
    let before = block_logs
        .iter()
        .filter(|l| {
            l.transaction_hash == Some(at.tx_hash) && l.log_index.is_some_and(|i| i < at.log_index)
        })
        .count();
    u64::try_from(before).unwrap_or(u64::MAX)
}

/// Decodes one of our three vault events; `None` for any other topic.
fn vault_log(log: &Log) -> Option<VaultLog> {
    let at = log_at(log)?;
    let undecodable = |e: &dyn std::fmt::Display| VaultEvent::Undecodable {
        detail: e.to_string(),
    };
    let event = match *log.topic0()? {
        Vault::Deposit::SIGNATURE_HASH => log
            .log_decode::<Vault::Deposit>()
            .map_or_else(|e| undecodable(&e), |d| VaultEvent::Deposit(d.inner.data)),
        Vault::Withdraw::SIGNATURE_HASH => log
            .log_decode::<Vault::Withdraw>()
            .map_or_else(|e| undecodable(&e), |d| VaultEvent::Withdraw(d.inner.data)),
        Vault::Transfer::SIGNATURE_HASH => log
            .log_decode::<Vault::Transfer>()
            .map_or_else(|e| undecodable(&e), |d| VaultEvent::Transfer(d.inner.data)),
        _ => return None,
    };
    Some(VaultLog {
        address: log.address(),
        at,
        event,
    })
}

fn filter(vault: Address, query: LogQuery) -> Filter {
    let base = Filter::new().address(vault);
    match query {
        LogQuery::Deposits => base.event_signature(Vault::Deposit::SIGNATURE_HASH),
        LogQuery::Withdrawals => base.event_signature(Vault::Withdraw::SIGNATURE_HASH),
        LogQuery::TransfersTo(to) => base
            .event_signature(Vault::Transfer::SIGNATURE_HASH)
            .topic2(to.into_word()),
        LogQuery::All => base.event_signature(vec![
            Vault::Deposit::SIGNATURE_HASH,
            Vault::Withdraw::SIGNATURE_HASH,
            Vault::Transfer::SIGNATURE_HASH,
        ]),
    }
}

/// What a node's refusal of `eth_sendRawTransaction` means, from the texts geth, anvil, reth and
/// erigon use. Anything else stays [`ChainError::Rpc`].
fn classify_broadcast_error(error: ChainError) -> ChainError {
    let ChainError::Rpc { detail, .. } = &error else {
        return error;
    };
    let lower = detail.to_lowercase();
    if lower.contains("already known") || lower.contains("already imported") {
        ChainError::AlreadyKnown
    } else if lower.contains("nonce too low") {
        ChainError::NonceTooLow
    } else if lower.contains("replacement transaction underpriced") {
        ChainError::Underpriced
    } else {
        error
    }
}

/// Whether a node refused an `eth_getLogs` for the size of its answer or of its block range (a
/// hosted provider's cap: geth and Infura "query returned more than 10000 results", Alchemy "Log
/// response size exceeded", reth "query exceeds max results", others "block range is too wide",
/// "exceed maximum block range"), which a smaller range is answered under. A rate limit is not:
/// a smaller range is no cheaper to a node counting requests.
fn answer_too_large(detail: &str) -> bool {
    let lower = detail.to_lowercase();
    if lower.contains("rate limit") || lower.contains("too many requests") {
        return false;
    }
    [
        "returned more than",
        "response size",
        "max results",
        "too many logs",
        "too many results",
        "block range is too",
        "block range too",
        "range too large",
        "range too wide",
        "maximum block range",
        "max block range",
    ]
    .iter()
    .any(|refusal| lower.contains(refusal))
}

impl RpcNode {
    /// Appends `from..=to`'s logs to `out` in chain order. A range the node refuses as too large
    /// an answer ([`answer_too_large`]) is asked again in halves, down to single blocks; a block
    /// whose logs alone are refused is an error naming it.
    async fn logs_in(
        &self,
        filter: &Filter,
        from: u64,
        to: u64,
        out: &mut Vec<VaultLog>,
    ) -> Result<(), ChainError> {
        // The next range to ask is the last pushed: halves go on in reverse, so chain order holds.
        let mut ranges = vec![(from, to)];
        while let Some((start, end)) = ranges.pop() {
            let asked = filter.clone().from_block(start).to_block(end);
            match timed("eth_getLogs", self.provider.get_logs(&asked)).await {
                Ok(logs) => out.extend(logs.iter().filter_map(vault_log)),
                Err(ChainError::Rpc { call, detail }) if answer_too_large(&detail) => {
                    if start == end {
                        return Err(ChainError::Rpc {
                            call,
                            detail: format!(
                                "block {start}'s logs alone are more than the node answers: {detail}"
                            ),
                        });
                    }
                    let middle = start + (end - start) / 2;
                    tracing::debug!(start, end, %detail, "eth_getLogs refused as too large; asking in halves");
                    ranges.push((middle + 1, end));
                    ranges.push((start, middle));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Node for RpcNode {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    async fn head(&self) -> Result<u64, ChainError> {
        timed("eth_blockNumber", self.provider.get_block_number()).await
    }

    async fn block_head(&self, number: u64) -> Result<Option<BlockHead>, ChainError> {
        let block = timed(
            "eth_getBlockByNumber",
            self.provider
                .get_block_by_number(BlockNumberOrTag::Number(number))
                .into_future(),
        )
        .await?;
        Ok(block.map(|b| BlockHead {
            hash: b.header.hash,
            gas_room: b.header.gas_limit.saturating_sub(b.header.gas_used),
        }))
    }

    async fn nonce(&self, account: Address, at: At) -> Result<u64, ChainError> {
        timed(
            "eth_getTransactionCount",
            self.provider
                .get_transaction_count(account)
                .block_id(block_id(at))
                .into_future(),
        )
        .await
    }

    async fn code(&self, address: Address) -> Result<Bytes, ChainError> {
        timed(
            "eth_getCode",
            self.provider.get_code_at(address).into_future(),
        )
        .await
    }

    async fn vault_logs(
        &self,
        vault: Address,
        query: LogQuery,
        from: u64,
        to: u64,
    ) -> Result<Vec<VaultLog>, ChainError> {
        let filter = filter(vault, query);
        let mut out = Vec::new();
        let mut start = from;
        while start <= to {
            let end = to.min(start.saturating_add(self.log_range_blocks - 1));
            self.logs_in(&filter, start, end, &mut out).await?;
            start = end + 1;
        }
        Ok(out)
    }

    /// Read from the block's logs (every node keeps them), not from a receipt lookup that pruned
    /// nodes refuse for old transactions.
    async fn index_in_transaction(&self, at: &LogAt) -> Result<u64, ChainError> {
        let block_logs = timed(
            "eth_getLogs",
            self.provider
                .get_logs(&Filter::new().at_block_hash(at.block_hash)),
        )
        .await?;
        Ok(index_among(&block_logs, at))
    }

    /// Each block read once, a few at a time; only the counts are kept, not the blocks' logs.
    async fn indexes_in_transactions(&self, ats: &[LogAt]) -> Result<Vec<u64>, ChainError> {
        let mut by_block: BTreeMap<B256, Vec<usize>> = BTreeMap::new();
        for (i, at) in ats.iter().enumerate() {
            by_block.entry(at.block_hash).or_default().push(i);
        }
        let mut out = vec![0; ats.len()];
        let mut blocks = futures::stream::iter(by_block)
            .map(|(hash, positions)| async move {
                let filter = Filter::new().at_block_hash(hash);
                let block_logs = timed("eth_getLogs", self.provider.get_logs(&filter)).await?;
                Ok::<_, ChainError>(
                    positions
                        .into_iter()
                        .map(|i| (i, index_among(&block_logs, &ats[i])))
                        .collect::<Vec<_>>(),
                )
            })
            .buffer_unordered(BLOCK_LOGS_IN_FLIGHT);
        while let Some(block) = blocks.next().await {
            for (i, index) in block? {
                out[i] = index;
            }
        }
        Ok(out)
    }

    async fn receipt(&self, hash: B256) -> Result<Option<NodeReceipt>, ChainError> {
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
        let logs = receipt.inner.logs().iter().filter_map(vault_log).collect();
        Ok(Some(NodeReceipt {
            block_number,
            success: receipt.status(),
            logs,
        }))
    }

    async fn total_supply(&self, vault: Address, at: At) -> Result<U256, ChainError> {
        let contract = Vault::new(vault, &self.provider);
        timed(
            "totalSupply",
            contract
                .totalSupply()
                .block(block_id(at))
                .call()
                .into_future(),
        )
        .await
    }

    async fn share_balance(
        &self,
        vault: Address,
        owner: Address,
        at: At,
    ) -> Result<U256, ChainError> {
        let contract = Vault::new(vault, &self.provider);
        timed(
            "balanceOf",
            contract
                .balanceOf(owner)
                .block(block_id(at))
                .call()
                .into_future(),
        )
        .await
    }

    async fn receipt_contract(&self, vault: Address, at: At) -> Result<Address, ChainError> {
        let contract = Vault::new(vault, &self.provider);
        timed(
            "receipt",
            contract.receipt().block(block_id(at)).call().into_future(),
        )
        .await
    }

    async fn receipt_balances(
        &self,
        receipt: Address,
        owner: Address,
        ids: &[U256],
        at: At,
    ) -> Result<Vec<U256>, ChainError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let contract = Receipt::new(receipt, &self.provider);
        let balances = timed(
            "balanceOfBatch",
            contract
                .balanceOfBatch(vec![owner; ids.len()], ids.to_vec())
                .block(block_id(at))
                .call()
                .into_future(),
        )
        .await?;
        if balances.len() != ids.len() {
            return Err(ChainError::Rpc {
                call: "balanceOfBatch",
                detail: format!("{} balances for {} ids", balances.len(), ids.len()),
            });
        }
        Ok(balances)
    }

    async fn missing_roles(
        &self,
        authorizer: Address,
        account: Address,
    ) -> Result<Vec<&'static str>, ChainError> {
        let contract = Authorizer::new(authorizer, &self.provider);
        let mut missing = Vec::new();
        for name in super::deploy::ROLES_TO_RUN {
            let role = match name {
                "DEPOSIT" => timed("DEPOSIT", contract.DEPOSIT().call().into_future()).await?,
                _ => timed("WITHDRAW", contract.WITHDRAW().call().into_future()).await?,
            };
            let held = timed(
                "hasRole",
                contract.hasRole(role, account).call().into_future(),
            )
            .await?;
            if !held {
                missing.push(name);
            }
        }
        Ok(missing)
    }

    async fn fees(&self) -> Result<Fees, ChainError> {
        let estimate = timed("eth_feeHistory", self.provider.estimate_eip1559_fees()).await?;
        Ok(Fees {
            max_fee_per_gas: estimate.max_fee_per_gas,
            max_priority_fee_per_gas: estimate.max_priority_fee_per_gas,
        })
    }

    async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
    ) -> Result<u64, ChainError> {
        let request = TransactionRequest::default()
            .from(from)
            .to(to)
            .input(input.clone().into());
        timed(
            "eth_estimateGas",
            self.provider.estimate_gas(request).into_future(),
        )
        .await
    }

    async fn broadcast(&self, raw: &Bytes) -> Result<(), ChainError> {
        timed(
            "eth_sendRawTransaction",
            self.provider.send_raw_transaction(raw),
        )
        .await
        .map(drop)
        .map_err(classify_broadcast_error)
    }
}

#[cfg(test)]
mod tests {
    use super::{answer_too_large, RateLimited};
    use alloy::rpc::json_rpc::{ErrorPayload, RpcError};
    use alloy::transports::layers::RetryPolicy;
    use alloy::transports::TransportErrorKind;

    fn refusal(code: i64, message: &'static str) -> RpcError<TransportErrorKind> {
        RpcError::ErrorResp(ErrorPayload {
            code,
            message: message.into(),
            data: None,
        })
    }

    #[test]
    fn a_refusal_for_rate_is_retried_and_one_for_size_under_the_same_code_is_not() {
        assert!(RateLimited.should_retry(&refusal(-32005, "project ID request rate exceeded")));
        assert!(RateLimited.should_retry(&refusal(429, "Too Many Requests")));
        assert!(
            !RateLimited.should_retry(&refusal(-32005, "query returned more than 10000 results"))
        );
        assert!(!RateLimited.should_retry(&refusal(-32000, "execution reverted")));
    }

    #[test]
    fn providers_refusals_of_large_answers_are_told_from_other_errors() {
        for refusal in [
            "server returned an error response: error code -32005: query returned more than 10000 results",
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response.",
            "query exceeds max results 20000, retry with the range 100-180",
            "block range is too wide",
            "exceed maximum block range: 5000",
            "eth_getLogs block range too large, range: 10001, max: 10000",
        ] {
            assert!(answer_too_large(refusal), "{refusal}");
        }
        for other in [
            "error sending request for url: connection refused",
            "HTTP error 429 with body: Too Many Requests",
            "rate limit exceeded: more than 100 results per second",
            "invalid params: fromBlock is after toBlock",
            "header not found",
        ] {
            assert!(!answer_too_large(other), "{other}");
        }
    }
}
