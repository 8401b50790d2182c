//! `plan`: the same observations and intents always give the same actions, whatever woke the pass.

use crate::ids::IssuerRequestId;
use crate::mint::{Callback, Journal, MintIntent, ObservedDeposit, TrackedTx, TxPurpose, TxStatus};
use crate::qty::Qty;
use crate::redeem::{
    AlpacaView, Anomaly, JournalStatus, ObservedBurn, ReceiptBalance, Redemption, RedemptionState,
};
use alloy_primitives::U256;
use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Knobs of the plan, all in blocks or counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// A log counts once it has this many blocks (its own included).
    pub confirmations_min: u64,
    /// A pending transaction this old is re-sent as is. 1 by default: a transaction a block
    /// left out (the node lost it, so every nonce after it waits) is re-sent on the next pass
    /// and mined one block late, not two; a re-send the node already holds costs one refused
    /// call.
    pub rebroadcast_after_blocks: u64,
    /// A pending transaction this old is replaced at the same nonce with a higher fee.
    pub replace_after_blocks: u64,
    /// At most this many mints share one multicall.
    pub mints_per_tx_max: usize,
    /// After this many reverted or displaced transactions a mint waits for an operator.
    pub mint_attempts_max: u32,
    /// After this many burn or return transactions of a redemption failed, it waits for an
    /// operator (counted per phase: the burns after the journal, the returns after a flag).
    pub redemption_attempts_max: u32,
    /// Most of our transactions unresolved at once (pending, or mined but unconfirmed); new mint
    /// transactions wait beyond it. 1 is the one-transaction-at-a-time baseline of the benchmark.
    pub txs_in_flight_max: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            confirmations_min: 1,
            rebroadcast_after_blocks: 1,
            replace_after_blocks: 6,
            mints_per_tx_max: 40,
            mint_attempts_max: 3,
            redemption_attempts_max: 3,
            txs_in_flight_max: 64,
        }
    }
}

/// Everything a pass observed, plus the intents from the cache.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    /// Latest block number of the chain when observed.
    pub head_block: u64,
    /// The gas that head block left unused; `None` if not known. With it, a queued transaction
    /// is re-sent only if that block had room for our lowest pending one and left it out.
    #[serde(default)]
    pub head_gas_room: Option<u64>,
    /// Mint intents not yet finished (a finished one is acknowledged by Alpaca).
    pub mints: Vec<MintIntent>,
    /// Every tagged deposit seen on our vaults for those intents, or without an intent.
    pub deposits: Vec<ObservedDeposit>,
    /// Our transactions that are not yet settled.
    pub txs: Vec<TrackedTx>,
    /// Redemptions not yet final.
    pub redemptions: Vec<Redemption>,
    /// Tagged burns seen on our vaults for those redemptions.
    pub burns: Vec<ObservedBurn>,
    /// Alpaca's answers to this pass's polls of requested redemptions.
    pub alpaca: Vec<AlpacaView>,
    /// The bot's receipt balances, read after our transactions' statuses.
    pub receipts: Vec<ReceiptBalance>,
    /// Now, in milliseconds on the shell's monotonic clock (the one `alpaca_due_at_ms` uses).
    #[serde(default)]
    pub now_ms: u64,
    /// Items whose Alpaca calls back off after a failure: the next call is due at this time
    /// ([`crate::pacing::alpaca_backoff_ms`]). An item absent here is due now.
    #[serde(default)]
    pub alpaca_due_at_ms: BTreeMap<IssuerRequestId, u64>,
}

impl World {
    /// Whether an Alpaca call for `id` may go out now.
    pub fn alpaca_due(&self, id: &IssuerRequestId) -> bool {
        self.alpaca_due_at_ms
            .get(id)
            .is_none_or(|at| *at <= self.now_ms)
    }
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
    Mint {
        vault: Address,
        items: Vec<MintItem>,
    },
    /// Re-send the stored bytes of this nonce's newest variant.
    Rebroadcast { nonce: u64 },
    /// Sign a fee-bumped variant at the same nonce, store it, broadcast it.
    Replace { nonce: u64 },
    /// Stop tracking this nonce. `failed` lists mints whose transaction reverted or lost its nonce,
    /// each of which has one more failed attempt.
    Settle {
        nonce: u64,
        failed: Vec<IssuerRequestId>,
    },
    /// Tell Alpaca the mint is on chain. `ask_first`: a send may already have reached Alpaca,
    /// so look the request up and only send if Alpaca does not show it.
    MintCallback {
        issuer_request_id: IssuerRequestId,
        tx_hash: B256,
        ask_first: bool,
    },
    /// A confirmed tagged deposit with no intent in the cache (a lost cache, or another writer):
    /// ask Alpaca for the request by `issuer_request_id` and rebuild the intent from its answer.
    RecoverMint { deposit: ObservedDeposit },
    /// Something an operator must see: logged and listed as stuck work; the plan acts no further.
    Flag {
        issuer_request_id: IssuerRequestId,
        problem: Problem,
    },
    /// Ask Alpaca to journal the shares of a redemption back. `ask_first`: a call may already
    /// have reached Alpaca, look it up by issuer_request_id before sending.
    RedeemCall {
        redemption_id: IssuerRequestId,
        ask_first: bool,
    },
    /// Sign, store, broadcast one burn multicall for a journaled redemption.
    Burn {
        vault: Address,
        redemption_id: IssuerRequestId,
        receiver: Address,
        /// (receipt id, shares) chosen largest available balance first.
        allocations: Vec<(U256, U256)>,
        /// Below Alpaca's 9 decimals: transferred back to `receiver` in the same transaction.
        dust: U256,
    },
    /// Send a flagged redemption's tokens back to its sender (an operator asked).
    Return {
        vault: Address,
        redemption_id: IssuerRequestId,
        to: Address,
        qty: Qty,
    },
    /// A burn or return transaction for this redemption settled without doing it: one more
    /// failed attempt.
    RedemptionTxFailed { redemption_id: IssuerRequestId },
    /// Record a redemption's new state.
    SetRedemption {
        redemption_id: IssuerRequestId,
        state: RedemptionState,
    },
}

/// Why a mint needs a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "problem")]
pub enum Problem {
    /// More than one tagged deposit: a double mint. Reported; never "fixed" silently.
    DuplicateDeposits { tx_hashes: Vec<B256> },
    /// The deposit does not match the intent (vault, amount).
    DepositMismatch { tx_hash: B256 },
    /// A tagged deposit exists but Alpaca's journal is pending or rejected.
    DepositWithoutCompletedJournal { tx_hash: B256 },
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
    // Only the lowest pending nonce can be what holds the others back: it alone is re-priced;
    // the ones queued behind it are re-sent as they are.
    let lowest_pending = world
        .txs
        .iter()
        .filter(|tx| matches!(tx.status, TxStatus::Pending { .. }))
        .min_by_key(|tx| tx.nonce);
    // Behind a full block our transactions only wait their turn (a nonce cannot be mined before
    // the one below it): re-sending a block's worth of them loads the node for nothing. They go
    // out again when the head block had room for the lowest and still left it out (the node lost
    // it, or never had it), or when either figure is unknown.
    let head_left_ours_out =
        lowest_pending.is_some_and(|tx| match (world.head_gas_room, tx.gas_limit) {
            (Some(room), Some(limit)) => room >= limit,
            _ => true,
        });
    let lowest_pending = lowest_pending.map(|tx| tx.nonce);
    for tx in &world.txs {
        let covered: &[IssuerRequestId] = match &tx.purpose {
            TxPurpose::Mint {
                issuer_request_ids, ..
            } => issuer_request_ids,
            TxPurpose::Burn { .. } | TxPurpose::Return { .. } | TxPurpose::Other { .. } => &[],
        };
        match tx.status {
            TxStatus::Pending { age_blocks } => {
                in_flight.extend(covered);
                if age_blocks >= policy.replace_after_blocks && lowest_pending == Some(tx.nonce) {
                    actions.push(Action::Replace { nonce: tx.nonce });
                } else if age_blocks >= policy.rebroadcast_after_blocks && head_left_ours_out {
                    actions.push(Action::Rebroadcast { nonce: tx.nonce });
                }
            }
            TxStatus::Mined {
                block_number,
                success,
                ..
            } => {
                if confirmations(world.head_block, block_number) < policy.confirmations_min {
                    // A reorg could still undo it either way: wait.
                    in_flight.extend(covered);
                    continue;
                }
                // A successful transaction counts only through its tagged logs: whatever the
                // receipt says, a mint without a Deposit did not happen.
                let failed = covered
                    .iter()
                    .filter(|id| {
                        !success || !world.deposits.iter().any(|d| &d.issuer_request_id == *id)
                    })
                    .cloned()
                    .collect();
                settled.insert(tx.nonce);
                actions.push(Action::Settle {
                    nonce: tx.nonce,
                    failed,
                });
                if let Some(redemption_id) = redemption_tx_failed(world, tx, success) {
                    actions.push(Action::RedemptionTxFailed { redemption_id });
                }
            }
            TxStatus::NonceTaken => {
                settled.insert(tx.nonce);
                let failed = covered
                    .iter()
                    .filter(|id| !world.deposits.iter().any(|d| &d.issuer_request_id == *id))
                    .cloned()
                    .collect();
                actions.push(Action::Settle {
                    nonce: tx.nonce,
                    failed,
                });
                if let Some(redemption_id) = redemption_tx_failed(world, tx, false) {
                    actions.push(Action::RedemptionTxFailed { redemption_id });
                }
            }
        }
    }

    let mut deposits_by_id: BTreeMap<&IssuerRequestId, Vec<&ObservedDeposit>> = BTreeMap::new();
    for deposit in &world.deposits {
        deposits_by_id
            .entry(&deposit.issuer_request_id)
            .or_default()
            .push(deposit);
    }
    // The earliest deposit is "the" deposit, whatever order the observations came in.
    for deposits in deposits_by_id.values_mut() {
        deposits.sort_by_key(|d| (d.block_number, d.log_index));
    }

    let mut to_mint: BTreeMap<Address, Vec<MintItem>> = BTreeMap::new();
    for intent in &world.mints {
        let id = &intent.issuer_request_id;
        let deposits = deposits_by_id
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if let [first, rest @ ..] = deposits {
            if intent.journal != Journal::Completed {
                // Tokens on chain for a journal Alpaca did not complete: never tell Alpaca it
                // succeeded; an operator must look.
                actions.push(Action::Flag {
                    issuer_request_id: id.clone(),
                    problem: Problem::DepositWithoutCompletedJournal {
                        tx_hash: first.tx_hash,
                    },
                });
                continue;
            }
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
                    problem: Problem::DepositMismatch {
                        tx_hash: first.tx_hash,
                    },
                });
                continue;
            }
            let confirmed =
                confirmations(world.head_block, first.block_number) >= policy.confirmations_min;
            match &intent.callback {
                // Refused: Alpaca's final word; an operator retries it, the plan does not.
                Callback::Acked { .. } | Callback::Refused { .. } => {}
                _ if !confirmed => {}
                // A first send goes out at once; one after a failure waits its backoff.
                Callback::Attempted if !world.alpaca_due(id) => {}
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
    let unresolved = world
        .txs
        .iter()
        .filter(|tx| !settled.contains(&tx.nonce) && tx_is_live(world, policy, tx))
        .count();
    let mut room = policy.txs_in_flight_max.saturating_sub(unresolved);
    'vaults: for (vault, items) in to_mint {
        for chunk in items.chunks(policy.mints_per_tx_max.max(1)) {
            if room == 0 {
                break 'vaults;
            }
            room -= 1;
            actions.push(Action::Mint {
                vault,
                items: chunk.to_vec(),
            });
        }
    }

    // Tagged deposits the cache knows nothing of: rebuild from Alpaca once they are confirmed.
    let known: BTreeSet<&IssuerRequestId> =
        world.mints.iter().map(|m| &m.issuer_request_id).collect();
    for (id, deposits) in &deposits_by_id {
        if known.contains(id) {
            continue;
        }
        if let Some(first) = deposits.first() {
            // Asked with backoff: a deposit Alpaca does not know stays unknown for a while.
            if confirmations(world.head_block, first.block_number) >= policy.confirmations_min
                && world.alpaca_due(id)
            {
                actions.push(Action::RecoverMint {
                    deposit: (*first).clone(),
                });
            }
        }
    }
    let _ = settled;
    plan_redemptions(world, policy, &mut actions);
    actions
}

/// The redemption a settled burn or return transaction failed for, if it did: a burn counts only
/// through its tagged Withdraw, a return through its success.
fn redemption_tx_failed(world: &World, tx: &TrackedTx, success: bool) -> Option<IssuerRequestId> {
    match &tx.purpose {
        TxPurpose::Burn { redemption_id, .. } => {
            let burned = world
                .burns
                .iter()
                .any(|b| &b.redemption_id == redemption_id);
            (!success || !burned).then(|| redemption_id.clone())
        }
        TxPurpose::Return { redemption_id, .. } => (!success).then(|| redemption_id.clone()),
        TxPurpose::Mint { .. } | TxPurpose::Other { .. } => None,
    }
}

/// A transaction still counts while pending or mined but not yet confirmed.
fn tx_is_live(world: &World, policy: &Policy, tx: &TrackedTx) -> bool {
    match tx.status {
        TxStatus::Pending { .. } => true,
        TxStatus::Mined { block_number, .. } => {
            confirmations(world.head_block, block_number) < policy.confirmations_min
        }
        TxStatus::NonceTaken => false,
    }
}

/// A redemption's transaction still counts while pending or mined but not yet confirmed.
fn live_tx<'a>(world: &'a World, policy: &Policy, id: &IssuerRequestId) -> Option<&'a TrackedTx> {
    world.txs.iter().find(|tx| {
        let ours = match &tx.purpose {
            TxPurpose::Burn { redemption_id, .. } | TxPurpose::Return { redemption_id, .. } => {
                redemption_id == id
            }
            _ => false,
        };
        ours && tx_is_live(world, policy, tx)
    })
}

fn plan_redemptions(world: &World, policy: &Policy, actions: &mut Vec<Action>) {
    // Receipt balances still free: minus what burns in flight (pending or unconfirmed) reserved.
    let mut available: BTreeMap<(Address, U256), U256> = world
        .receipts
        .iter()
        .map(|r| ((r.vault, r.id), r.balance))
        .collect();
    for tx in &world.txs {
        if let TxPurpose::Burn {
            vault,
            redemption_id,
            allocations,
        } = &tx.purpose
        {
            // This transaction's own liveness: a settled sibling must not reserve twice.
            let _ = redemption_id;
            if tx_is_live(world, policy, tx) {
                for (id, shares) in allocations {
                    if let Some(free) = available.get_mut(&(*vault, *id)) {
                        *free = free.saturating_sub(*shares);
                    }
                }
            }
        }
    }

    for r in &world.redemptions {
        if r.state.is_final()
            || confirmations(world.head_block, r.block_number) < policy.confirmations_min
        {
            continue;
        }
        let set = |state: RedemptionState| Action::SetRedemption {
            redemption_id: r.id.clone(),
            state,
        };
        // The chain first: a confirmed tagged burn means done, whatever the cache says.
        if let Some(burn) = world.burns.iter().find(|b| b.redemption_id == r.id) {
            if confirmations(world.head_block, burn.block_number) >= policy.confirmations_min {
                let trid = match &r.state {
                    RedemptionState::Journaled {
                        tokenization_request_id,
                    }
                    | RedemptionState::Requested {
                        tokenization_request_id,
                    } => Some(tokenization_request_id.clone()),
                    RedemptionState::Flagged {
                        tokenization_request_id,
                        ..
                    } => tokenization_request_id.clone(),
                    _ => None,
                };
                if let Some(tokenization_request_id) = trid {
                    actions.push(set(RedemptionState::Burned {
                        tokenization_request_id,
                        tx_hash: burn.tx_hash,
                    }));
                }
            }
            continue;
        }
        if live_tx(world, policy, &r.id).is_some() {
            continue;
        }
        let (kept, dust) = r.split();
        let failed_now = actions
            .iter()
            .filter(|a| matches!(a, Action::RedemptionTxFailed { redemption_id } if *redemption_id == r.id))
            .count();
        let attempts = r
            .failed_attempts
            .saturating_add(u32::try_from(failed_now).unwrap_or(u32::MAX));
        let exhausted = attempts >= policy.redemption_attempts_max;
        match &r.state {
            RedemptionState::Detected | RedemptionState::Requesting => {
                if r.client_id.is_none() {
                    actions.push(set(RedemptionState::Flagged {
                        anomaly: Anomaly::UnknownSender,
                        return_requested: false,
                        tokenization_request_id: None,
                    }));
                } else if kept.is_zero() {
                    actions.push(set(RedemptionState::Flagged {
                        anomaly: Anomaly::BelowAlpacaPrecision,
                        return_requested: false,
                        tokenization_request_id: None,
                    }));
                } else if r.state == RedemptionState::Detected || world.alpaca_due(&r.id) {
                    actions.push(Action::RedeemCall {
                        redemption_id: r.id.clone(),
                        ask_first: r.state == RedemptionState::Requesting,
                    });
                }
            }
            RedemptionState::Requested {
                tokenization_request_id,
            } => {
                let Some(view) = world.alpaca.iter().find(|v| v.redemption_id == r.id) else {
                    continue;
                };
                let flag = |anomaly: Anomaly| RedemptionState::Flagged {
                    anomaly,
                    return_requested: false,
                    tokenization_request_id: Some(tokenization_request_id.clone()),
                };
                if !view.mismatches.is_empty() {
                    actions.push(set(flag(Anomaly::Mismatch {
                        detail: view.mismatches.join("; "),
                    })));
                    continue;
                }
                match view.status {
                    JournalStatus::Pending => {}
                    JournalStatus::Rejected => actions.push(set(flag(Anomaly::Rejected))),
                    JournalStatus::Completed => actions.push(set(RedemptionState::Journaled {
                        tokenization_request_id: tokenization_request_id.clone(),
                    })),
                }
            }
            RedemptionState::Journaled {
                tokenization_request_id,
            } if exhausted => {
                actions.push(set(RedemptionState::Flagged {
                    anomaly: Anomaly::BurnFailed { attempts },
                    return_requested: false,
                    tokenization_request_id: Some(tokenization_request_id.clone()),
                }));
            }
            RedemptionState::Journaled { .. } => {
                // Largest available balance first; ties by the lower id, so the plan is stable.
                let mut candidates: Vec<(U256, U256)> = available
                    .iter()
                    .filter(|((vault, _), free)| *vault == r.vault && !free.is_zero())
                    .map(|((_, id), free)| (*id, *free))
                    .collect();
                candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let mut remaining = kept.units();
                let mut allocations = Vec::new();
                for (id, free) in candidates {
                    if remaining.is_zero() {
                        break;
                    }
                    let take = free.min(remaining);
                    allocations.push((id, take));
                    remaining -= take;
                }
                if !remaining.is_zero() {
                    // Not enough free receipts now (others' burns in flight): wait, never partial.
                    continue;
                }
                for (id, take) in &allocations {
                    if let Some(free) = available.get_mut(&(r.vault, *id)) {
                        *free = free.saturating_sub(*take);
                    }
                }
                actions.push(Action::Burn {
                    vault: r.vault,
                    redemption_id: r.id.clone(),
                    receiver: r.sender,
                    allocations,
                    dust: dust.units(),
                });
            }
            RedemptionState::Flagged {
                anomaly,
                return_requested: true,
                tokenization_request_id,
            } if exhausted => {
                // The returns keep failing: stop and wait for the operator to ask again.
                actions.push(set(RedemptionState::Flagged {
                    anomaly: anomaly.clone(),
                    return_requested: false,
                    tokenization_request_id: tokenization_request_id.clone(),
                }));
            }
            RedemptionState::Flagged {
                return_requested: true,
                ..
            } => {
                // A mined, successful return is the return: the shell records it as Returned
                // when it settles the transaction; never send a second one.
                let returned = world.txs.iter().any(|tx| {
                    matches!(&tx.purpose, TxPurpose::Return { redemption_id, .. } if *redemption_id == r.id)
                        && matches!(tx.status, TxStatus::Mined { success: true, .. })
                });
                if returned {
                    continue;
                }
                actions.push(Action::Return {
                    vault: r.vault,
                    redemption_id: r.id.clone(),
                    to: r.sender,
                    qty: r.qty,
                });
            }
            RedemptionState::Flagged { .. }
            | RedemptionState::Burned { .. }
            | RedemptionState::Returned { .. } => {}
        }
    }
}
