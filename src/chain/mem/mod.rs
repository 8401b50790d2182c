//! [`MemNode`]: an in-memory EVM node with our vault's behaviour, for the pass test tier. It
//! takes the same signed bytes a real node takes (decoded and their signer recovered), keeps a
//! pool, mines only when the test says so, and can reorg, lose broadcasts, stall below a base fee,
//! refuse receivers or go down. Every block keeps the ledger after it, so reads `At::Block(n)` and
//! reorgs are exact.
//!
//! The vault is written from the interface, not from Rain's code: `deposit` mints shares one to
//! one and a new receipt id to the receiver, `redeem` burns an owner's shares of one receipt id,
//! `transfer` moves shares, `multicall` runs its calls all or nothing.

use super::node::{At, BlockHead, Fees, LogAt, LogQuery, Node, NodeReceipt, VaultEvent, VaultLog};
use super::{ChainError, Vault};
use alloy::consensus::{Transaction as _, TxEnvelope};
use alloy::eips::eip2718::Decodable2718;
use alloy::primitives::{keccak256, Address, Bytes, B256, U256};
use alloy::sol_types::SolCall;
mod vault;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use vault::execute;

/// Gas a block holds.
pub const BLOCK_GAS_LIMIT: u64 = 30_000_000;

/// Faults a test switches on.
#[derive(Debug, Clone, Default)]
pub struct MemFaults {
    /// Every call fails as if the node were unreachable.
    pub down: bool,
    /// This many next broadcasts are answered OK and lost.
    pub lose_broadcasts: u32,
    /// Transfers to these addresses revert (a receiver contract that refuses).
    pub reverting_receivers: BTreeSet<Address>,
    /// Roles the bot lacks (its deposits or redeems revert).
    pub missing_roles: Vec<&'static str>,
    /// `totalSupply` answers only after this long (a slow or far node).
    pub supply_delay: Option<std::time::Duration>,
    /// A transaction count asked at the head block is answered this many blocks below it (a
    /// load-balanced RPC whose backends disagree).
    pub head_nonce_lag: u64,
}

#[derive(Debug, Clone, Default)]
struct VaultBook {
    receipt: Address,
    authorizer: Address,
    shares: HashMap<Address, U256>,
    supply: U256,
    receipts: HashMap<(Address, U256), U256>,
    next_id: u64,
}

#[derive(Debug, Clone, Default)]
struct Ledger {
    vaults: BTreeMap<Address, VaultBook>,
    nonces: HashMap<Address, u64>,
}

impl Ledger {
    fn nonce(&self, account: Address) -> u64 {
        self.nonces.get(&account).copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
struct MinedTx {
    hash: B256,
    success: bool,
}

#[derive(Debug, Clone)]
struct Block {
    hash: B256,
    /// The gas limit less what the block's transactions reserved (this node counts a
    /// transaction's gas limit, as a block builder checks it).
    gas_room: u64,
    ledger: Ledger,
    txs: Vec<MinedTx>,
    logs: Vec<VaultLog>,
    /// Every transaction of the block, to put back into the pool on a reorg.
    included: Vec<Pooled>,
}

#[derive(Debug, Clone)]
struct Pooled {
    hash: B256,
    from: Address,
    nonce: u64,
    max_fee_per_gas: u128,
    max_priority_fee_per_gas: u128,
    gas_limit: u64,
    to: Address,
    input: Bytes,
}

#[derive(Debug)]
struct State {
    blocks: Vec<Block>,
    pool: Vec<Pooled>,
    base_fee: u128,
    faults: MemFaults,
    /// Makes re-mined blocks' hashes differ from the ones they replace.
    salt: u64,
    broadcasts: u64,
    estimates: u64,
    receipts: u64,
    next_address: u64,
}

/// An in-memory node. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemNode {
    chain_id: u64,
    state: Mutex<State>,
}

impl MemNode {
    /// A chain with its genesis block, a 1 gwei base fee and nothing deployed.
    pub fn new(chain_id: u64) -> MemNode {
        let genesis = Block {
            hash: keccak256(format!("genesis {chain_id}")),
            gas_room: BLOCK_GAS_LIMIT,
            ledger: Ledger::default(),
            txs: Vec::new(),
            logs: Vec::new(),
            included: Vec::new(),
        };
        MemNode {
            chain_id,
            state: Mutex::new(State {
                blocks: vec![genesis],
                pool: Vec::new(),
                base_fee: 1_000_000_000,
                faults: MemFaults::default(),
                salt: 0,
                broadcasts: 0,
                estimates: 0,
                receipts: 0,
                next_address: 0x1000,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Deploys a vault with its receipt and authorizer in a new block: `(vault, receipt,
    /// authorizer, block)`.
    pub fn deploy_vault(&self) -> (Address, Address, Address, u64) {
        let (vault, receipt, authorizer) = self.with(|s| {
            let mut next = || {
                s.next_address += 1;
                Address::left_padding_from(&s.next_address.to_be_bytes())
            };
            let (vault, receipt, authorizer) = (next(), next(), next());
            let ledger = &mut s.blocks.last_mut().map(|b| &mut b.ledger);
            if let Some(ledger) = ledger {
                ledger.vaults.insert(
                    vault,
                    VaultBook {
                        receipt,
                        authorizer,
                        ..VaultBook::default()
                    },
                );
            }
            (vault, receipt, authorizer)
        });
        let block = self.mine();
        (vault, receipt, authorizer, block)
    }

    /// Mines one block from the pool (each sender's transactions in nonce order, those paying the
    /// base fee, while gas is left); returns its number.
    pub fn mine(&self) -> u64 {
        self.with(State::mine)
    }

    /// Mines `n` blocks; returns the last one's number.
    pub fn mine_blocks(&self, n: u64) -> u64 {
        (0..n).fold(self.head_now(), |_, _| self.mine())
    }

    pub fn head_now(&self) -> u64 {
        self.with(|s| s.head())
    }

    /// A user's share transfer, pooled unsigned (users' keys are not the test's concern): mined
    /// by the next [`Self::mine`]. Returns its hash.
    pub fn transfer(&self, vault: Address, from: Address, to: Address, value: U256) -> B256 {
        self.with(|s| {
            let pooled_ahead = s.pool.iter().filter(|p| p.from == from).count();
            let nonce = s.latest().nonce(from) + u64::try_from(pooled_ahead).unwrap_or(0);
            let input: Bytes = Vault::transferCall { to, value }.abi_encode().into();
            let hash = keccak256([from.as_slice(), &nonce.to_be_bytes(), &input].concat());
            s.pool.push(Pooled {
                hash,
                from,
                nonce,
                max_fee_per_gas: u128::MAX / 4,
                max_priority_fee_per_gas: 1,
                gas_limit: 100_000,
                to: vault,
                input,
            });
            hash
        })
    }

    /// Gives `to` shares of `vault` out of thin air (a foreign mint), mined at once.
    pub fn mint_foreign(&self, vault: Address, to: Address, value: U256) -> u64 {
        self.with(|s| {
            if let Some(book) = s
                .blocks
                .last_mut()
                .and_then(|b| b.ledger.vaults.get_mut(&vault))
            {
                *book.shares.entry(to).or_default() += value;
                book.supply += value;
            }
        });
        self.mine()
    }

    /// Replaces the newest `depth` blocks with as many new ones (and one more, so the chain
    /// grows). With `keep_txs`, their transactions go back to the pool and are mined again in the
    /// new blocks; without, the node forgets them (as a node that reorged and dropped them).
    pub fn reorg(&self, depth: u64, keep_txs: bool) -> u64 {
        let replayed = self.with(|s| {
            let keep = s
                .blocks
                .len()
                .saturating_sub(usize::try_from(depth).unwrap_or(0))
                .max(1);
            let dropped: Vec<Block> = s.blocks.drain(keep..).collect();
            s.salt += 1;
            if keep_txs {
                let back: Vec<Pooled> = dropped.into_iter().flat_map(|b| b.included).collect();
                s.pool.extend(back);
            }
            depth
        });
        for _ in 0..replayed {
            self.mine();
        }
        self.mine()
    }

    pub fn set_base_fee(&self, wei: u128) {
        self.with(|s| s.base_fee = wei);
    }

    pub fn faults(&self, change: impl FnOnce(&mut MemFaults)) {
        self.with(|s| change(&mut s.faults));
    }

    /// Broadcasts received (including lost and refused ones).
    pub fn broadcasts(&self) -> u64 {
        self.with(|s| s.broadcasts)
    }

    /// `eth_estimateGas` calls answered (failed ones included).
    pub fn estimates(&self) -> u64 {
        self.with(|s| s.estimates)
    }

    /// `eth_getTransactionReceipt` calls answered (for mined and unknown hashes alike).
    pub fn receipts(&self) -> u64 {
        self.with(|s| s.receipts)
    }

    /// Transactions waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.with(|s| s.pool.len())
    }

    pub fn balance(&self, vault: Address, owner: Address) -> U256 {
        self.with(|s| {
            s.latest()
                .vaults
                .get(&vault)
                .and_then(|v| v.shares.get(&owner).copied())
                .unwrap_or_default()
        })
    }

    pub fn supply(&self, vault: Address) -> U256 {
        self.with(|s| {
            s.latest()
                .vaults
                .get(&vault)
                .map(|v| v.supply)
                .unwrap_or_default()
        })
    }

    /// Every log of `vault` so far, in chain order.
    pub fn logs(&self, vault: Address) -> Vec<VaultLog> {
        self.with(|s| {
            s.blocks
                .iter()
                .flat_map(|b| b.logs.iter().filter(|l| l.address == vault).cloned())
                .collect()
        })
    }

    fn check(&self, call: &'static str) -> Result<(), ChainError> {
        if self.with(|s| s.faults.down) {
            return Err(ChainError::Rpc {
                call,
                detail: "connection refused (the in-memory node is down)".into(),
            });
        }
        Ok(())
    }

    fn ledger_at(&self, at: At) -> Ledger {
        self.with(|s| match at {
            At::Block(n) => usize::try_from(n)
                .ok()
                .and_then(|n| s.blocks.get(n))
                .map_or_else(Ledger::default, |b| b.ledger.clone()),
            At::Latest | At::Pending => s.latest().clone(),
        })
    }
}

impl State {
    fn head(&self) -> u64 {
        u64::try_from(self.blocks.len()).unwrap_or(u64::MAX) - 1
    }

    fn latest(&self) -> &Ledger {
        &self.blocks[self.blocks.len() - 1].ledger
    }

    fn mine(&mut self) -> u64 {
        let number = self.head() + 1;
        let hash = keccak256(format!("block {number} salt {}", self.salt));
        let mut ledger = self.latest().clone();
        let mut gas_left = BLOCK_GAS_LIMIT;
        let mut txs = Vec::new();
        let mut logs = Vec::new();
        let mut included = Vec::new();
        loop {
            let next = self.pool.iter().position(|p| {
                p.nonce == ledger.nonce(p.from)
                    && p.max_fee_per_gas >= self.base_fee
                    && p.gas_limit <= gas_left
            });
            let Some(i) = next else { break };
            let tx = self.pool.remove(i);
            gas_left -= tx.gas_limit;
            *ledger.nonces.entry(tx.from).or_default() += 1;
            let mut trial = ledger.clone();
            let outcome = execute(&mut trial, &self.faults, tx.from, tx.to, &tx.input);
            let success = match outcome {
                Ok((events, gas)) if gas <= tx.gas_limit => {
                    ledger = trial;
                    for (address, event) in events {
                        let log_index = u64::try_from(logs.len()).unwrap_or(u64::MAX);
                        logs.push(VaultLog {
                            address,
                            at: LogAt {
                                block_number: number,
                                block_hash: hash,
                                tx_hash: tx.hash,
                                log_index,
                            },
                            event,
                        });
                    }
                    true
                }
                _ => false,
            };
            txs.push(MinedTx {
                hash: tx.hash,
                success,
            });
            included.push(tx);
        }
        // Variants of nonces now used can never be mined.
        self.pool.retain(|p| p.nonce >= ledger.nonce(p.from));
        self.blocks.push(Block {
            hash,
            gas_room: gas_left,
            ledger,
            txs,
            logs,
            included,
        });
        number
    }
}

fn matches(log: &VaultLog, vault: Address, query: LogQuery) -> bool {
    if log.address != vault {
        return false;
    }
    match (query, &log.event) {
        (LogQuery::All, _)
        | (LogQuery::Deposits, VaultEvent::Deposit(_))
        | (LogQuery::Withdrawals, VaultEvent::Withdraw(_)) => true,
        (LogQuery::TransfersTo(to), VaultEvent::Transfer(t)) => t.to == to,
        _ => false,
    }
}

#[async_trait::async_trait]
impl Node for MemNode {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    async fn head(&self) -> Result<u64, ChainError> {
        self.check("eth_blockNumber")?;
        Ok(self.head_now())
    }

    async fn block_head(&self, number: u64) -> Result<Option<BlockHead>, ChainError> {
        self.check("eth_getBlockByNumber")?;
        Ok(self.with(|s| {
            usize::try_from(number)
                .ok()
                .and_then(|n| s.blocks.get(n))
                .map(|b| BlockHead {
                    hash: b.hash,
                    gas_room: b.gas_room,
                })
        }))
    }

    async fn nonce(&self, account: Address, at: At) -> Result<u64, ChainError> {
        self.check("eth_getTransactionCount")?;
        let at = match at {
            At::Block(n) => self.with(|s| {
                At::Block(if n == s.head() {
                    n.saturating_sub(s.faults.head_nonce_lag)
                } else {
                    n
                })
            }),
            other => other,
        };
        let mined = self.ledger_at(at).nonce(account);
        if at != At::Pending {
            return Ok(mined);
        }
        Ok(self.with(|s| {
            let mut next = mined;
            while s.pool.iter().any(|p| p.from == account && p.nonce == next) {
                next += 1;
            }
            next
        }))
    }

    async fn code(&self, address: Address) -> Result<Bytes, ChainError> {
        self.check("eth_getCode")?;
        let deployed = self.with(|s| {
            s.latest()
                .vaults
                .values()
                .any(|v| v.receipt == address || v.authorizer == address)
                || s.latest().vaults.contains_key(&address)
        });
        Ok(if deployed {
            Bytes::from_static(&[0x60, 0x80])
        } else {
            Bytes::new()
        })
    }

    async fn vault_logs(
        &self,
        vault: Address,
        query: LogQuery,
        from: u64,
        to: u64,
    ) -> Result<Vec<VaultLog>, ChainError> {
        self.check("eth_getLogs")?;
        Ok(self.with(|s| {
            s.blocks
                .iter()
                .enumerate()
                .filter(|(n, _)| (from..=to).contains(&(*n as u64)))
                .flat_map(|(_, b)| b.logs.iter().filter(|l| matches(l, vault, query)).cloned())
                .collect()
        }))
    }

    async fn index_in_transaction(&self, at: &LogAt) -> Result<u64, ChainError> {
        self.check("eth_getLogs")?;
        Ok(self.with(|s| {
            s.blocks
                .iter()
                .find(|b| b.hash == at.block_hash)
                .map_or(0, |b| {
                    let before = b
                        .logs
                        .iter()
                        .filter(|l| l.at.tx_hash == at.tx_hash && l.at.log_index < at.log_index)
                        .count();
                    u64::try_from(before).unwrap_or(u64::MAX)
                })
        }))
    }

    async fn receipt(&self, hash: B256) -> Result<Option<NodeReceipt>, ChainError> {
        self.check("eth_getTransactionReceipt")?;
        Ok(self.with(|s| {
            s.receipts += 1;
            s.blocks.iter().enumerate().find_map(|(n, b)| {
                let tx = b.txs.iter().find(|t| t.hash == hash)?;
                Some(NodeReceipt {
                    block_number: n as u64,
                    success: tx.success,
                    logs: b
                        .logs
                        .iter()
                        .filter(|l| l.at.tx_hash == hash)
                        .cloned()
                        .collect(),
                })
            })
        }))
    }

    async fn total_supply(&self, vault: Address, at: At) -> Result<U256, ChainError> {
        self.check("totalSupply")?;
        if let Some(delay) = self.with(|s| s.faults.supply_delay) {
            tokio::time::sleep(delay).await;
        }
        Ok(self
            .ledger_at(at)
            .vaults
            .get(&vault)
            .map(|v| v.supply)
            .unwrap_or_default())
    }

    async fn share_balance(
        &self,
        vault: Address,
        owner: Address,
        at: At,
    ) -> Result<U256, ChainError> {
        self.check("balanceOf")?;
        Ok(self
            .ledger_at(at)
            .vaults
            .get(&vault)
            .and_then(|v| v.shares.get(&owner).copied())
            .unwrap_or_default())
    }

    async fn receipt_contract(&self, vault: Address, at: At) -> Result<Address, ChainError> {
        self.check("receipt")?;
        self.ledger_at(at)
            .vaults
            .get(&vault)
            .map(|v| v.receipt)
            .ok_or(ChainError::Rpc {
                call: "receipt",
                detail: format!("no vault at {vault}"),
            })
    }

    async fn receipt_balances(
        &self,
        receipt: Address,
        owner: Address,
        ids: &[U256],
        at: At,
    ) -> Result<Vec<U256>, ChainError> {
        self.check("balanceOfBatch")?;
        let ledger = self.ledger_at(at);
        let book = ledger.vaults.values().find(|v| v.receipt == receipt);
        Ok(ids
            .iter()
            .map(|id| {
                book.and_then(|b| b.receipts.get(&(owner, *id)).copied())
                    .unwrap_or_default()
            })
            .collect())
    }

    async fn missing_roles(
        &self,
        _authorizer: Address,
        _account: Address,
    ) -> Result<Vec<&'static str>, ChainError> {
        self.check("hasRole")?;
        Ok(self.with(|s| s.faults.missing_roles.clone()))
    }

    async fn fees(&self) -> Result<Fees, ChainError> {
        self.check("eth_feeHistory")?;
        let base = self.with(|s| s.base_fee);
        let tip = 1_000_000_000;
        Ok(Fees {
            max_fee_per_gas: base.saturating_mul(2).saturating_add(tip),
            max_priority_fee_per_gas: tip,
        })
    }

    async fn estimate_gas(
        &self,
        from: Address,
        to: Address,
        input: &Bytes,
    ) -> Result<u64, ChainError> {
        self.check("eth_estimateGas")?;
        self.with(|s| {
            s.estimates += 1;
            let mut ledger = s.latest().clone();
            execute(&mut ledger, &s.faults, from, to, input)
                .map(|(_, gas)| gas)
                .map_err(|why| ChainError::Rpc {
                    call: "eth_estimateGas",
                    detail: format!("execution reverted: {why}"),
                })
        })
    }

    async fn broadcast(&self, raw: &Bytes) -> Result<(), ChainError> {
        self.check("eth_sendRawTransaction")?;
        let bad = |detail: String| ChainError::Rpc {
            call: "eth_sendRawTransaction",
            detail,
        };
        let envelope = TxEnvelope::decode_2718(&mut raw.as_ref())
            .map_err(|e| bad(format!("invalid transaction: {e}")))?;
        let TxEnvelope::Eip1559(signed) = &envelope else {
            return Err(bad("only EIP-1559 transactions here".into()));
        };
        if signed.tx().chain_id != self.chain_id {
            return Err(bad("invalid chain id".into()));
        }
        let from = signed
            .signature()
            .recover_address_from_prehash(&signed.signature_hash())
            .map_err(|e| bad(format!("invalid signature: {e}")))?;
        let tx = signed.tx();
        let to = tx.to().ok_or_else(|| bad("contract creation".into()))?;
        let pooled = Pooled {
            hash: *signed.hash(),
            from,
            nonce: tx.nonce,
            max_fee_per_gas: tx.max_fee_per_gas,
            max_priority_fee_per_gas: tx.max_priority_fee_per_gas,
            gas_limit: tx.gas_limit,
            to,
            input: tx.input.clone(),
        };
        self.with(|s| {
            s.broadcasts += 1;
            let known = s.pool.iter().any(|p| p.hash == pooled.hash)
                || s.blocks
                    .iter()
                    .any(|b| b.txs.iter().any(|t| t.hash == pooled.hash));
            if known {
                return Err(ChainError::AlreadyKnown);
            }
            if pooled.nonce < s.latest().nonce(from) {
                return Err(ChainError::NonceTooLow);
            }
            if let Some(i) = s
                .pool
                .iter()
                .position(|p| p.from == from && p.nonce == pooled.nonce)
            {
                let old = &s.pool[i];
                let enough = |new: u128, old: u128| new >= old.saturating_add(old / 10);
                if !enough(pooled.max_fee_per_gas, old.max_fee_per_gas)
                    || !enough(
                        pooled.max_priority_fee_per_gas,
                        old.max_priority_fee_per_gas,
                    )
                {
                    return Err(ChainError::Underpriced);
                }
                s.pool.remove(i);
            }
            if s.faults.lose_broadcasts > 0 {
                s.faults.lose_broadcasts -= 1;
                return Ok(());
            }
            s.pool.push(pooled);
            Ok(())
        })
    }
}
