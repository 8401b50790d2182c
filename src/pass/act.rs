//! Act: carry out the plan's actions and record each one, writing before any outside effect that
//! could be repeated (a signed transaction is stored before it is broadcast; a callback is marked
//! attempted before it is sent).

use super::alpaca_jobs::{self, AfterJob};
use super::crash::{maybe_crash, CrashPoint};
use super::gas_shapes::{covers, receivers};
use super::resend::{rebroadcast, replace, settle, REBROADCASTS_AT_ONCE};
use super::{PassError, PassSummary, ReconcileLoop};
use crate::alpaca::Broker;
use crate::chain::{burn_calldata, mint_calldata, return_calldata, Chain, Fees};
use crate::store::{Store, TxRecord, TxVariant};
use alloy::primitives::U256;
use reconciler::meta::{self, ReceiptInfo};
use reconciler::{
    Action, IssuerRequestId, MintIntent, MintItem, RedemptionState, TxPurpose, World,
};
use std::collections::BTreeMap;

pub async fn act<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    world: &World,
    actions: Vec<Action>,
    summary: &mut PassSummary,
) -> Result<(), PassError> {
    let intents: BTreeMap<&IssuerRequestId, &MintIntent> = world
        .mints
        .iter()
        .map(|m| (&m.issuer_request_id, m))
        .collect();
    // First sends of callbacks first: they are handed to jobs (never awaited), depend on nothing
    // else the pass does, and must not wait behind its chain work. Callbacks that ask Alpaca
    // first (after a restart or a failover, up to every active mint's) go after the chain work:
    // their jobs would otherwise share the cores with the mints' estimates and signatures just
    // when a new leader's first sends decide how long the failover took. Then the settlements,
    // in one commit.
    let (callbacks, actions): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::MintCallback { .. }));
    let (asking, first_sends): (Vec<Action>, Vec<Action>) = callbacks.into_iter().partition(|a| {
        matches!(
            a,
            Action::MintCallback {
                ask_first: true,
                ..
            }
        )
    });
    if r.stop.is_set() || !r.fence.holds() {
        return Ok(());
    }
    alpaca_jobs::submit_callbacks(r, first_sends, summary);
    let (settles, actions): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Settle { .. }));
    let settles: Vec<(u64, Vec<IssuerRequestId>)> = settles
        .into_iter()
        .filter_map(|a| match a {
            Action::Settle { nonce, failed } => Some((nonce, failed)),
            _ => None,
        })
        .collect();
    if settles.iter().any(|(_, failed)| !failed.is_empty()) {
        // A transaction of ours failed: its gas limit may have been a remembered one that no
        // longer fits. Every batch is estimated again until a pass learns new limits.
        r.gas_shapes.forget();
    }
    if !settles.is_empty() {
        if let Err(e) = settle(r, &settles, world) {
            let nonces: Vec<u64> = settles.iter().map(|(nonce, _)| *nonce).collect();
            tracing::warn!(?nonces, error = %e, "settling failed; the next pass plans it again");
        }
    }
    let mut actions = actions.into_iter().peekable();
    // Re-sends of stored bytes wait until the pass's other work is done and then go out side by
    // side: with a block's worth of transactions queued behind the next, one after another they
    // would hold back the callbacks planned after them.
    let mut rebroadcasts = Vec::new();
    while let Some(action) = actions.next() {
        if r.stop.is_set() || !r.fence.holds() {
            // Shutting down, or (HA) the lease is lost: the rest is planned again after the
            // restart, or by the next leader.
            break;
        }
        if let Action::Rebroadcast { nonce } = action {
            rebroadcasts.push(nonce);
            continue;
        }
        if let Action::Mint { vault, items } = action {
            // The plan's mint batches come together: estimated side by side, then sent with
            // consecutive nonces, instead of one estimate after another.
            let mut batches = vec![(vault, items)];
            while let Some(Action::Mint { .. }) = actions.peek() {
                if let Some(Action::Mint { vault, items }) = actions.next() {
                    batches.push((vault, items));
                }
            }
            if let Err(e) = send_mints(r, world.head_block, batches, &intents, summary).await {
                tracing::warn!(error = %e, "mint transactions not sent; the next pass plans them again");
            }
            continue;
        }
        // Each action stands alone: one that fails (a node refusing a broadcast) is logged with
        // its ids and planned again next pass; it never stops the others.
        let what = action_label(&action);
        if let Err(e) = act_one(r, world, action, &intents, summary).await {
            tracing::warn!(action = what, error = %e, "action failed; the next pass plans it again");
        }
    }
    if !asking.is_empty() && !r.stop.is_set() && r.fence.holds() {
        alpaca_jobs::submit_callbacks(r, asking, summary);
    }
    let head = world.head_block;
    for chunk in r
        .resent
        .due(head, &rebroadcasts)
        .chunks(REBROADCASTS_AT_ONCE)
    {
        if r.stop.is_set() || !r.fence.holds() {
            break;
        }
        let sent =
            futures::future::join_all(chunk.iter().map(|&nonce| rebroadcast(r, nonce))).await;
        for (&nonce, outcome) in chunk.iter().zip(sent) {
            match outcome {
                Ok(()) => r.resent.record(nonce, head),
                Err(e) => {
                    tracing::warn!(nonce, error = %e, "rebroadcast failed; the next pass plans it again");
                }
            }
        }
    }
    Ok(())
}

/// Carries out one action of the plan.
async fn act_one<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    world: &World,
    action: Action,
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
    summary: &mut PassSummary,
) -> Result<(), PassError> {
    match action {
        Action::Mint { vault, items } => {
            send_mints(r, world.head_block, vec![(vault, items)], intents, summary).await?;
        }
        Action::Rebroadcast { nonce } => rebroadcast(r, nonce).await?,
        Action::Replace { nonce } => replace(r, world.head_block, nonce).await?,
        Action::Settle { nonce, failed } => settle(r, &[(nonce, failed)], world)?,
        // Alpaca's work runs as jobs beside the pass (never awaited here): a slow or
        // rate-limited Alpaca must not hold back the chain work after it.
        Action::MintCallback { .. } => alpaca_jobs::submit_callbacks(r, vec![action], summary),
        Action::RecoverMint { deposit } => {
            let ctx = r.job_ctx();
            let id = deposit.issuer_request_id.clone();
            r.alpaca
                .submit(&id, "recover", AfterJob::Pass, &r.polls, async move {
                    alpaca_jobs::recover(&ctx, &deposit).await
                });
        }
        Action::RedeemCall {
            redemption_id,
            ask_first: _,
        } => {
            let ctx = r.job_ctx();
            let id = redemption_id.clone();
            r.alpaca.submit(
                &redemption_id,
                "redeem",
                AfterJob::Pass,
                &r.polls,
                async move { alpaca_jobs::redeem_call(&ctx, &id).await },
            );
        }
        Action::Burn {
            vault,
            redemption_id,
            receiver,
            allocations,
            dust,
        } => {
            send_burn(
                r,
                world.head_block,
                vault,
                &redemption_id,
                receiver,
                &allocations,
                dust,
            )
            .await?;
        }
        Action::Return {
            vault,
            redemption_id,
            to,
            qty,
        } => {
            let purpose = TxPurpose::Return {
                vault,
                redemption_id: redemption_id.clone(),
            };
            tracing::warn!(redemption = %redemption_id, %to, %qty, "returning a flagged redemption's tokens to its sender");
            send_tx(
                r,
                world.head_block,
                vault,
                return_calldata(to, qty.units()),
                purpose,
            )
            .await?;
        }
        Action::RedemptionTxFailed { redemption_id } => {
            let updated = r.store.update_redemption(
                &redemption_id,
                Box::new(|r| r.failed_attempts = r.failed_attempts.saturating_add(1)),
            )?;
            if let Some(redemption) = updated {
                tracing::warn!(redemption = %redemption_id, attempts = redemption.failed_attempts,
                        "burn or return transaction settled without doing it");
            }
        }
        Action::SetRedemption {
            redemption_id,
            state,
        } => {
            if matches!(state, RedemptionState::Journaled { .. }) {
                maybe_crash(r.config.crash_at, CrashPoint::AfterJournalSeen);
            }
            let flagged = matches!(state, RedemptionState::Flagged { .. });
            let shown = format!("{state:?}");
            // Attempts count per phase: refused calls before the journal do not shorten the
            // burns after it.
            let journaled = matches!(state, RedemptionState::Journaled { .. });
            let updated = r.store.update_redemption(
                &redemption_id,
                Box::new(move |r| {
                    r.state = state;
                    if journaled {
                        r.failed_attempts = 0;
                    }
                }),
            )?;
            if let Some(redemption) = updated {
                if flagged {
                    tracing::error!(redemption = %redemption_id, state = %shown, sender = %redemption.sender,
                            qty = %redemption.qty, "redemption needs an operator (issuer redemption return ID)");
                } else {
                    tracing::info!(redemption = %redemption_id, state = %shown, "redemption");
                }
            }
        }
        Action::Flag {
            issuer_request_id,
            problem,
        } => {
            let typed = crate::store::MintProblem::Plan { plan: problem };
            let known = r.store.mint(&issuer_request_id)?.and_then(|m| m.problem);
            if known.as_ref() != Some(&typed) {
                tracing::error!(%issuer_request_id, problem = %typed, "mint needs an operator");
                r.store.update_mint(
                    &issuer_request_id,
                    Box::new(move |m| m.problem = Some(typed)),
                )?;
            }
        }
    }
    Ok(())
}

/// A short name of an action with its id, for logs.
fn action_label(action: &Action) -> String {
    match action {
        Action::Mint { vault, items } => format!("mint {} on {vault}", items.len()),
        Action::Rebroadcast { nonce } => format!("rebroadcast nonce {nonce}"),
        Action::Replace { nonce } => format!("replace nonce {nonce}"),
        Action::Settle { nonce, .. } => format!("settle nonce {nonce}"),
        Action::MintCallback {
            issuer_request_id, ..
        } => format!("mint callback {issuer_request_id}"),
        Action::RecoverMint { deposit } => format!("recover mint {}", deposit.issuer_request_id),
        Action::Flag {
            issuer_request_id, ..
        } => format!("flag {issuer_request_id}"),
        Action::RedeemCall { redemption_id, .. } => format!("redeem call {redemption_id}"),
        Action::Burn { redemption_id, .. } => format!("burn {redemption_id}"),
        Action::Return { redemption_id, .. } => format!("return {redemption_id}"),
        Action::RedemptionTxFailed { redemption_id } => format!("count failure {redemption_id}"),
        Action::SetRedemption { redemption_id, .. } => format!("record {redemption_id}"),
    }
}

/// Where the bot's next transaction goes: its nonce, and the least gas limit it may carry.
struct NextSend {
    nonce: u64,
    /// The highest limit among our transactions signed and not yet mined. A node building a
    /// block skips one of ours whose limit does not fit the room left; anvil then refuses a
    /// later, smaller one as "nonce too high" and drops it from its pool, and every nonce after
    /// it waits for a re-send and a block more (five of thirty 2,000-mint bench runs took six
    /// or seven blocks instead of five). With limits that never fall along our nonces, nothing
    /// behind a skipped transaction fits where it did not. It costs no fee (gas used is paid,
    /// not the limit), and such a transaction could not be mined before the one it waits
    /// behind anyway.
    gas_floor: u64,
}

async fn next_send(
    store: &dyn Store,
    network: &reconciler::Network,
    chain: &Chain,
) -> Result<NextSend, PassError> {
    let mined = chain.nonce_latest().await?;
    let stored = store.highest_nonce(network)?.map_or(0, |n| n + 1);
    let gas_floor = store
        .unsettled_txs(network)?
        .iter()
        .filter(|tx| tx.nonce >= mined)
        .map(|tx| tx.gas_limit)
        .max()
        .unwrap_or(0);
    Ok(NextSend {
        nonce: mined.max(stored),
        gas_floor,
    })
}

/// Most mint batches estimated at once: enough to hide the node's round trips, few enough not to
/// crowd out the node's other callers.
const ESTIMATES_AT_ONCE: usize = 8;

/// A transaction ready to sign: its calldata, what it is for and its gas limit.
struct Prepared {
    to: alloy::primitives::Address,
    input: alloy::primitives::Bytes,
    purpose: TxPurpose,
    gas_limit: u64,
}

/// Sends a pass's mint batches. A batch is estimated unless an earlier batch of this pass
/// covers it ([`covers`]: same vault, no bigger, every receiver among its receivers, no mint that
/// failed before), whose gas limit it then reuses: one `eth_estimateGas` per shape instead of
/// one per transaction. The estimates run side by side ([`ESTIMATES_AT_ONCE`] at a time); then
/// every transaction is signed, stored and broadcast in the plan's order with consecutive
/// nonces at one fee. Each is stored before its broadcast; a broadcast that fails stops the
/// rest (planned again next pass), so we leave no gap of our own before a nonce.
async fn send_mints<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    batches: Vec<(alloy::primitives::Address, Vec<MintItem>)>,
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
    summary: &mut PassSummary,
) -> Result<(), PassError> {
    let started = std::time::Instant::now();
    // Which batches reuse a limit an earlier pass estimated, which are estimated, and which
    // reuse the estimate of which.
    let mut remembered: Vec<Option<u64>> = Vec::with_capacity(batches.len());
    let mut estimated: Vec<usize> = Vec::new();
    let mut reuses: Vec<Option<usize>> = Vec::with_capacity(batches.len());
    for (i, (vault, items)) in batches.iter().enumerate() {
        let known = r.gas_shapes.limit_for(head, *vault, items, intents);
        remembered.push(known);
        if known.is_some() {
            reuses.push(None);
            continue;
        }
        let shape = estimated.iter().copied().find(|&e| {
            let (shape_vault, shape_items) = &batches[e];
            shape_vault == vault
                && covers(&receivers(shape_items), shape_items.len(), items, intents)
        });
        if shape.is_none() {
            estimated.push(i);
        }
        reuses.push(shape);
    }
    let mut prepared_by_batch: BTreeMap<usize, Vec<Prepared>> = BTreeMap::new();
    for chunk in estimated.chunks(ESTIMATES_AT_ONCE) {
        let outcomes = futures::future::join_all(chunk.iter().map(|&i| {
            let (vault, items) = &batches[i];
            prepare_mint(r, *vault, items, intents)
        }))
        .await;
        for (outcome, &i) in outcomes.into_iter().zip(chunk) {
            match outcome {
                Ok(ready) => {
                    prepared_by_batch.insert(i, ready);
                }
                Err(e) => {
                    let (vault, items) = &batches[i];
                    tracing::warn!(error = %e, %vault, mints = items.len(), "mint batch not sent; planned again next pass");
                }
            }
        }
    }
    // A shape's gas limit, where it estimated whole as one transaction; one that had to be split
    // gives nothing to reuse, and the batches it covers are estimated themselves.
    let shape_gas: BTreeMap<usize, u64> = prepared_by_batch
        .iter()
        .filter_map(|(&i, ready)| match ready.as_slice() {
            [one] if purpose_len(&one.purpose) == batches[i].1.len() => Some((i, one.gas_limit)),
            _ => None,
        })
        .collect();
    for (&i, &gas_limit) in &shape_gas {
        let (vault, items) = &batches[i];
        r.gas_shapes.learn(head, *vault, items, gas_limit);
    }
    let mut prepared = Vec::new();
    for (i, (vault, items)) in batches.iter().enumerate() {
        // A limit remembered from an earlier pass, or this pass's estimate of a covering shape.
        let known = remembered[i].or_else(|| reuses[i].and_then(|s| shape_gas.get(&s).copied()));
        if let Some(gas_limit) = known {
            prepared.push(Prepared {
                to: *vault,
                input: mint_input(r, items, intents),
                purpose: mint_purpose(*vault, items),
                gas_limit,
            });
            continue;
        }
        if reuses[i].is_none() {
            prepared.extend(prepared_by_batch.remove(&i).unwrap_or_default());
            continue;
        }
        match prepare_mint(r, *vault, items, intents).await {
            Ok(ready) => prepared.extend(ready),
            Err(e) => {
                tracing::warn!(error = %e, %vault, mints = items.len(), "mint batch not sent; planned again next pass");
            }
        }
    }
    if prepared.is_empty() || r.stop.is_set() || !r.fence.holds() {
        return Ok(());
    }
    let estimated_at = started.elapsed();
    // Fees and the first nonce are read once; the transactions after it count up from there.
    r.fence.check("sign").await?;
    let fees = r.chain.fees().await?;
    let NextSend {
        nonce: first,
        gas_floor,
    } = next_send(r.store.as_ref(), &r.network, &r.chain).await?;
    if unknown_pending(r, first).await? {
        return Ok(());
    }
    let mut floor = gas_floor;
    for tx in &mut prepared {
        tx.gas_limit = tx.gas_limit.max(floor);
        floor = tx.gas_limit;
    }
    let nonce_at = started.elapsed();
    let mut signed = Vec::with_capacity(prepared.len());
    for (nonce, tx) in (first..).zip(prepared) {
        signed.push(sign(r, head, nonce, fees, tx).await?);
    }
    let signed_at = started.elapsed();
    // One commit for the pass's transactions, before any is broadcast: all are stored or none,
    // so a crash or a failed write never leaves a gap below a transaction the node has.
    let records: Vec<TxRecord> = signed.iter().map(|(record, _)| record.clone()).collect();
    r.store.put_txs(&r.network, &records)?;
    let stored_at = started.elapsed();
    maybe_crash(r.config.crash_at, CrashPoint::AfterSign);
    for (record, raw) in signed {
        if r.stop.is_set() || !r.fence.holds() {
            // Stored: re-sent at start-up, or by the next leader, which imports them.
            return Ok(());
        }
        let mints = purpose_len(&record.purpose);
        // A broadcast that fails stops the rest: they are stored, and re-sent in order once the
        // plan sees them waiting.
        broadcast_stored(r, &record, &raw).await?;
        summary.mints_sent += mints;
    }
    let ms = |d: std::time::Duration| d.as_millis();
    tracing::debug!(
        txs = records.len(),
        estimates = estimated.len(),
        estimated_ms = ms(estimated_at),
        nonce_ms = ms(nonce_at),
        signed_ms = ms(signed_at),
        stored_ms = ms(stored_at),
        broadcast_ms = ms(started.elapsed()),
        "mint batches sent"
    );
    Ok(())
}

fn mint_purpose(vault: alloy::primitives::Address, items: &[MintItem]) -> TxPurpose {
    TxPurpose::Mint {
        vault,
        issuer_request_ids: items.iter().map(|i| i.issuer_request_id.clone()).collect(),
    }
}

/// How many mints a transaction carries.
fn purpose_len(purpose: &TxPurpose) -> usize {
    match purpose {
        TxPurpose::Mint {
            issuer_request_ids, ..
        } => issuer_request_ids.len(),
        _ => 0,
    }
}

/// Estimates one mint batch. One item that cannot be estimated (a receiver that reverts) must
/// neither hold back the others in its batch nor break them up: each item is then estimated
/// alone, the ones that fail wait (shown to operators), and the rest go out together as one
/// transaction (or one each, if each fits alone but not together).
async fn prepare_mint<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    vault: alloy::primitives::Address,
    items: &[MintItem],
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
) -> Result<Vec<Prepared>, PassError> {
    let input = mint_input(r, items, intents);
    match r.chain.estimate_gas(vault, &input).await {
        Ok(gas_limit) => Ok(vec![Prepared {
            to: vault,
            input,
            purpose: mint_purpose(vault, items),
            gas_limit,
        }]),
        Err(e) if items.len() > 1 => {
            tracing::warn!(error = %e, %vault, mints = items.len(), "batch estimation failed; estimating its mints one by one");
            let alone = futures::future::join_all(items.iter().map(|item| async move {
                let one = mint_input(r, std::slice::from_ref(item), intents);
                (item, r.chain.estimate_gas(vault, &one).await)
            }))
            .await;
            let mut fits_alone = Vec::with_capacity(items.len());
            for (item, estimate) in alone {
                if let Err(e) = &estimate {
                    flag_unestimable(r, item, e)?;
                }
                fits_alone.push(estimate.is_ok());
            }
            let split = reconciler::pacing::split_after_estimates(items, &fits_alone);
            let mut out = Vec::new();
            // Each fits alone but not together (the batch's gas): one transaction each.
            for item in &split.one_by_one {
                match Box::pin(prepare_mint(r, vault, std::slice::from_ref(item), intents)).await {
                    Ok(prepared) => out.extend(prepared),
                    Err(e) => {
                        tracing::warn!(issuer_request_id = %item.issuer_request_id, error = %e, "mint not sent");
                    }
                }
            }
            if !split.together.is_empty() {
                match Box::pin(prepare_mint(r, vault, &split.together, intents)).await {
                    Ok(prepared) => out.extend(prepared),
                    Err(e) => {
                        tracing::warn!(%vault, mints = split.together.len(), error = %e, "mints not sent");
                    }
                }
            }
            Ok(out)
        }
        Err(e) => {
            if let Some(item) = items.first() {
                flag_unestimable(r, item, &e)?;
            }
            Err(e.into())
        }
    }
}

/// The multicall of `[deposit, transfer]` pairs for `items`, each tagged with its ids.
fn mint_input<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    items: &[MintItem],
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
) -> alloy::primitives::Bytes {
    let now = r.clock.unix_secs();
    let mut calls = Vec::with_capacity(items.len());
    for item in items {
        let Some(intent) = intents.get(&item.issuer_request_id) else {
            continue;
        };
        let info = meta::encode(&ReceiptInfo {
            tokenization_request_id: intent.tokenization_request_id.to_string(),
            issuer_request_id: intent.issuer_request_id.to_string(),
            underlying: intent.underlying.to_string(),
            quantity: intent.qty.to_decimal(),
            timestamp: now,
            notes: String::new(),
        });
        calls.push((item.receiver, item.qty.units(), info));
    }
    mint_calldata(r.chain.bot(), &calls)
}

/// Shows operators why a mint waits: its transaction does not estimate. Tried again every pass
/// (nothing is spent until it estimates). The node's text is escaped: it may carry raw bytes.
fn flag_unestimable<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    item: &MintItem,
    e: &crate::chain::ChainError,
) -> Result<(), PassError> {
    let problem = crate::store::MintProblem::DoesNotEstimate {
        does_not_estimate: crate::config::sanitise_for_log(&e.to_string()),
    };
    let changed = r.store.update_mint(
        &item.issuer_request_id,
        Box::new(move |m| {
            if m.problem.as_ref() != Some(&problem) {
                m.problem = Some(problem);
            }
        }),
    )?;
    if let Some(problem) = changed.and_then(|record| record.problem) {
        tracing::warn!(issuer_request_id = %item.issuer_request_id, %problem, "mint waits: it does not estimate");
    }
    Ok(())
}

/// Estimates, signs, stores, then broadcasts one transaction from the bot.
async fn send_tx<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    to: alloy::primitives::Address,
    input: alloy::primitives::Bytes,
    purpose: TxPurpose,
) -> Result<(), PassError> {
    let gas_limit = r.chain.estimate_gas(to, &input).await?;
    send_estimated(r, head, to, input, purpose, gas_limit).await
}

/// Signs, stores, then broadcasts one transaction whose gas is known.
async fn send_estimated<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    to: alloy::primitives::Address,
    input: alloy::primitives::Bytes,
    purpose: TxPurpose,
    gas_limit: u64,
) -> Result<(), PassError> {
    r.fence.check("sign").await?;
    let fees = r.chain.fees().await?;
    let NextSend { nonce, gas_floor } = next_send(r.store.as_ref(), &r.network, &r.chain).await?;
    if unknown_pending(r, nonce).await? {
        return Ok(());
    }
    let tx = Prepared {
        to,
        input,
        purpose,
        gas_limit: gas_limit.max(gas_floor),
    };
    sign_store_broadcast(r, head, nonce, fees, tx).await
}

/// HA mode: a transaction of the bot this store does not know is pending (a previous leader's):
/// wait until it is mined and observed rather than do its work a second time.
async fn unknown_pending<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    nonce: u64,
) -> Result<bool, PassError> {
    if !r.fence.is_ha() {
        return Ok(false);
    }
    let pending = r.chain.nonce_pending().await?;
    if pending > nonce {
        tracing::warn!(
            nonce,
            pending,
            "a transaction unknown to this leader is pending; not sending until it is mined"
        );
        return Ok(true);
    }
    Ok(false)
}

/// Signs `tx` at `nonce`, stores it, then broadcasts it: the crash-safety order (a stored
/// transaction is re-sent after a restart; an unstored one could be signed again at another
/// nonce).
async fn sign_store_broadcast<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    nonce: u64,
    fees: Fees,
    tx: Prepared,
) -> Result<(), PassError> {
    let (record, raw) = sign(r, head, nonce, fees, tx).await?;
    r.store.put_tx(&r.network, &record)?;
    maybe_crash(r.config.crash_at, CrashPoint::AfterSign);
    broadcast_stored(r, &record, &raw).await
}

/// Signs `tx` at `nonce` (fenced): the record to store before the raw bytes go out.
async fn sign<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    nonce: u64,
    fees: Fees,
    tx: Prepared,
) -> Result<(TxRecord, alloy::primitives::Bytes), PassError> {
    let Prepared {
        to,
        input,
        purpose,
        gas_limit,
    } = tx;
    r.fence.check("sign").await?;
    let (hash, raw) = r
        .chain
        .sign(nonce, to, input.clone(), gas_limit, fees)
        .await?;
    let record = TxRecord {
        nonce,
        from: r.chain.bot(),
        to,
        purpose,
        input,
        gas_limit,
        variants: vec![TxVariant {
            hash,
            raw: raw.clone(),
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            signed_at_block: head,
        }],
        settled: None,
    };
    Ok((record, raw))
}

/// Broadcasts a transaction already stored (fenced).
async fn broadcast_stored<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    record: &TxRecord,
    raw: &alloy::primitives::Bytes,
) -> Result<(), PassError> {
    let Some(hash) = record.variants.last().map(|v| v.hash) else {
        return Ok(());
    };
    tracing::info!(nonce = record.nonce, %hash, to = %record.to, purpose = ?record.purpose, "transaction stored; broadcasting");
    r.fence.check(&format!("broadcast {hash}")).await?;
    r.chain.broadcast(raw).await?;
    maybe_crash(r.config.crash_at, CrashPoint::AfterBroadcast);
    if matches!(record.purpose, TxPurpose::Burn { .. }) {
        maybe_crash(r.config.crash_at, CrashPoint::AfterBurnBroadcast);
    }
    Ok(())
}

async fn send_burn<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    vault: alloy::primitives::Address,
    id: &IssuerRequestId,
    receiver: alloy::primitives::Address,
    allocations: &[(U256, U256)],
    dust: U256,
) -> Result<(), PassError> {
    let Some(redemption) = r.store.redemption(id)? else {
        return Ok(());
    };
    let RedemptionState::Journaled {
        tokenization_request_id,
    } = &redemption.state
    else {
        return Ok(());
    };
    let (kept, _) = redemption.split();
    let info = meta::encode(&ReceiptInfo {
        tokenization_request_id: tokenization_request_id.to_string(),
        issuer_request_id: id.to_string(),
        underlying: redemption.underlying.to_string(),
        quantity: kept.to_decimal(),
        timestamp: r.clock.unix_secs(),
        notes: String::from("redeem"),
    });
    let input = burn_calldata(r.chain.bot(), receiver, allocations, dust, &info);
    let purpose = TxPurpose::Burn {
        vault,
        redemption_id: id.clone(),
        allocations: allocations.to_vec(),
    };
    send_tx(r, head, vault, input, purpose).await
}
