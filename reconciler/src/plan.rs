//! `plan`: the same observations and intents always give the same actions, whatever woke the pass.

use crate::ids::IssuerRequestId;
use crate::mint::{Callback, Journal, MintIntent, ObservedDeposit, TrackedTx, TxPurpose, TxStatus};
use crate::qty::Qty;
use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Knobs of the plan, all in blocks or counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// A log counts once it has this many blocks (its own included).
    pub confirmations_min: u64,
    /// A pending transaction this old is re-sent as is.
    pub rebroadcast_after_blocks: u64,
    /// A pending transaction this old is replaced at the same nonce with a higher fee.
    pub replace_after_blocks: u64,
    /// At most this many mints share one multicall.
    pub mints_per_tx_max: usize,
    /// After this many reverted or displaced transactions a mint waits for an operator.
    pub mint_attempts_max: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            confirmations_min: 1,
            rebroadcast_after_blocks: 2,
            replace_after_blocks: 6,
            mints_per_tx_max: 40,
            mint_attempts_max: 3,
        }
    }
}

/// Everything a pass observed, plus the intents from the cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    /// Latest block number of the chain when observed.
    pub head_block: u64,
    /// Mint intents not yet finished (a finished one is acknowledged by Alpaca).
    pub mints: Vec<MintIntent>,
    /// Every tagged deposit seen on our vaults for those intents, or without an intent.
    pub deposits: Vec<ObservedDeposit>,
    /// Our transactions that are not yet settled.
    pub txs: Vec<TrackedTx>,
}

/// One item of a mint multicall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintItem {
    pub issuer_request_id: IssuerRequestId,
    pub receiver: Address,
    pub qty: Qty,
}

/// What the shell must do to converge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Sign and store, then broadcast, one `multicall([deposit, transfer]...)` on `vault`.
    Mint { vault: Address, items: Vec<MintItem> },
    /// Re-send the stored bytes of this nonce's newest variant.
    Rebroadcast { nonce: u64 },
    /// Sign a fee-bumped variant at the same nonce, store it, broadcast it.
    Replace { nonce: u64 },
    /// Stop tracking this nonce. `failed` lists mints whose transaction reverted or lost its nonce,
    /// each of which has one more failed attempt.
    Settle { nonce: u64, failed: Vec<IssuerRequestId> },
    /// Tell Alpaca the mint is on chain. `ask_first`: a send may already have reached Alpaca,
    /// so look the request up and only send if Alpaca does not show it.
    MintCallback { issuer_request_id: IssuerRequestId, tx_hash: B256, ask_first: bool },
    /// A confirmed tagged deposit with no intent in the cache (a lost cache, or another writer):
    /// ask Alpaca for the request by `issuer_request_id` and rebuild the intent from its answer.
    RecoverMint { deposit: ObservedDeposit },
    /// Something an operator must see: logged and listed as stuck work; the plan acts no further.
    Flag { issuer_request_id: IssuerRequestId, problem: Problem },
}

/// Why a mint needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "problem")]
pub enum Problem {
    /// More than one tagged deposit: a double mint. Reported; never "fixed" silently.
    DuplicateDeposits { tx_hashes: Vec<B256> },
    /// The deposit does not match the intent (vault, amount).
    DepositMismatch { tx_hash: B256 },
    /// Our transactions for it failed `attempts` times; no more will be sent.
    AttemptsExhausted { attempts: u32 },
}

fn confirmations(head_block: u64, block_number: u64) -> u64 {
    (head_block + 1).saturating_sub(block_number)
}

/// Decides the actions that move the world toward every intent being done exactly once.
pub fn plan(world: &World, policy: &Policy) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut settled: BTreeSet<u64> = BTreeSet::new();

    // Our transactions first: what is settled frees its intents within this same plan.
    let mut in_flight: BTreeSet<&IssuerRequestId> = BTreeSet::new();
    for tx in &world.txs {
        let covered: &[IssuerRequestId] = match &tx.purpose {
            TxPurpose::Mint { issuer_request_ids, .. } => issuer_request_ids,
            TxPurpose::Other { .. } => &[],
        };
        match tx.status {
            TxStatus::Pending { age_blocks } => {
                in_flight.extend(covered);
                if age_blocks >= policy.replace_after_blocks {
                    actions.push(Action::Replace { nonce: tx.nonce });
                } else if age_blocks >= policy.rebroadcast_after_blocks {
                    actions.push(Action::Rebroadcast { nonce: tx.nonce });
                }
            }
            TxStatus::Mined { block_number, success } => {
                if confirmations(world.head_block, block_number) < policy.confirmations_min {
                    // A reorg could still undo it either way: wait.
                    in_flight.extend(covered);
                    continue;
                }
                // A successful transaction counts only through its tagged logs: whatever the
                // receipt says, a mint without a Deposit did not happen.
                let failed = covered
                    .iter()
                    .filter(|id| !success || !world.deposits.iter().any(|d| &d.issuer_request_id == *id))
                    .cloned()
                    .collect();
                settled.insert(tx.nonce);
                actions.push(Action::Settle { nonce: tx.nonce, failed });
            }
            TxStatus::NonceTaken => {
                settled.insert(tx.nonce);
                let failed = covered
                    .iter()
                    .filter(|id| !world.deposits.iter().any(|d| &d.issuer_request_id == *id))
                    .cloned()
                    .collect();
                actions.push(Action::Settle { nonce: tx.nonce, failed });
            }
        }
    }

    let mut deposits_by_id: BTreeMap<&IssuerRequestId, Vec<&ObservedDeposit>> = BTreeMap::new();
    for deposit in &world.deposits {
        deposits_by_id.entry(&deposit.issuer_request_id).or_default().push(deposit);
    }

    let mut to_mint: BTreeMap<Address, Vec<MintItem>> = BTreeMap::new();
    for intent in &world.mints {
        let id = &intent.issuer_request_id;
        let deposits = deposits_by_id.get(id).map(Vec::as_slice).unwrap_or_default();
        if let [first, rest @ ..] = deposits {
            if !rest.is_empty() {
                let tx_hashes = deposits.iter().map(|d| d.tx_hash).collect();
                actions.push(Action::Flag {
                    issuer_request_id: id.clone(),
                    problem: Problem::DuplicateDeposits { tx_hashes },
                });
            }
            if first.vault != intent.vault || first.assets != intent.qty.units() {
                actions.push(Action::Flag {
                    issuer_request_id: id.clone(),
                    problem: Problem::DepositMismatch { tx_hash: first.tx_hash },
                });
                continue;
            }
            let confirmed =
                confirmations(world.head_block, first.block_number) >= policy.confirmations_min;
            match &intent.callback {
                Callback::Acked { .. } => {}
                _ if !confirmed => {}
                Callback::NotSent | Callback::Attempted => actions.push(Action::MintCallback {
                    issuer_request_id: id.clone(),
                    tx_hash: first.tx_hash,
                    ask_first: intent.callback == Callback::Attempted,
                }),
            }
            continue;
        }
        if intent.journal != Journal::Completed || in_flight.contains(id) {
            continue;
        }
        // Failures settled in this very plan count too.
        let failed_now = actions
            .iter()
            .filter(|a| matches!(a, Action::Settle { failed, .. } if failed.contains(id)))
            .count();
        let attempts = intent
            .failed_attempts
            .saturating_add(u32::try_from(failed_now).unwrap_or(u32::MAX));
        if attempts >= policy.mint_attempts_max {
            actions.push(Action::Flag {
                issuer_request_id: id.clone(),
                problem: Problem::AttemptsExhausted { attempts },
            });
            continue;
        }
        to_mint.entry(intent.vault).or_default().push(MintItem {
            issuer_request_id: id.clone(),
            receiver: intent.wallet,
            qty: intent.qty,
        });
    }
    for (vault, items) in to_mint {
        for chunk in items.chunks(policy.mints_per_tx_max.max(1)) {
            actions.push(Action::Mint { vault, items: chunk.to_vec() });
        }
    }

    // Tagged deposits the cache knows nothing of: rebuild from Alpaca once they are confirmed.
    let known: BTreeSet<&IssuerRequestId> = world.mints.iter().map(|m| &m.issuer_request_id).collect();
    for (id, deposits) in &deposits_by_id {
        if known.contains(id) {
            continue;
        }
        if let Some(first) = deposits.first() {
            if confirmations(world.head_block, first.block_number) >= policy.confirmations_min {
                actions.push(Action::RecoverMint { deposit: (*first).clone() });
            }
        }
    }
    let _ = settled;
    actions
}
