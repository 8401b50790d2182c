//! Act: carry out the plan's actions and record each one, writing before any outside effect that
//! could be repeated (a signed transaction is stored before it is broadcast; a callback is marked
//! attempted before it is sent).

use super::crash::{maybe_crash, CrashPoint};
use super::{PassError, PassSummary, Reconciler};
use crate::alpaca::{Broker, BrokerError, MintCallback, RedeemRequest, RequestType};
use crate::chain::{burn_calldata, mint_calldata, return_calldata, Chain, Fees};
use crate::store::{MintRecord, Settled, Store, TxRecord, TxVariant};
use alloy::primitives::{B256, U256};
use reconciler::meta::{self, ReceiptInfo};
use reconciler::refusal::{callback_outcome, redeem_refusal, CallbackOutcome, RedeemRefusal};
use reconciler::{
    Action, Anomaly, Callback, IssuerRequestId, Journal, MintIntent, MintItem, RedemptionState,
    TxPurpose, World,
};
use std::collections::BTreeMap;

pub async fn act<B: Broker>(
    r: &Reconciler<B>,
    world: &World,
    actions: Vec<Action>,
    summary: &mut PassSummary,
) -> Result<(), PassError> {
    let intents: BTreeMap<&IssuerRequestId, &MintIntent> = world
        .mints
        .iter()
        .map(|m| (&m.issuer_request_id, m))
        .collect();
    let mut callbacks = Vec::new();
    for action in actions {
        if let Action::MintCallback {
            issuer_request_id,
            tx_hash,
            ask_first,
        } = action
        {
            callbacks.push((issuer_request_id, tx_hash, ask_first));
            continue;
        }
        // Each action stands alone: one that fails (a node refusing a broadcast, Alpaca down)
        // is logged with its ids and planned again next pass; it never stops the others.
        let what = action_label(&action);
        if let Err(e) = act_one(r, world, action, &intents, summary).await {
            tracing::warn!(action = what, error = %e, "action failed; the next pass plans it again");
        }
    }
    // Callbacks are independent of each other: send them concurrently.
    let results = futures::future::join_all(callbacks.into_iter().map(
        |(id, tx_hash, ask_first)| async move {
            let outcome = callback(r, id.clone(), tx_hash, ask_first).await;
            (id, outcome)
        },
    ))
    .await;
    for (id, result) in results {
        match result {
            Ok(true) => summary.callbacks_acked += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(issuer_request_id = %id, error = %e, "mint callback not acknowledged; retried next pass");
            }
        }
    }
    Ok(())
}

/// Carries out one action of the plan.
async fn act_one<B: Broker>(
    r: &Reconciler<B>,
    world: &World,
    action: Action,
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
    summary: &mut PassSummary,
) -> Result<(), PassError> {
    match action {
        Action::Mint { vault, items } => {
            send_mint(r, world.head_block, vault, &items, intents).await?;
            summary.mints_sent += items.len();
        }
        Action::Rebroadcast { nonce } => {
            if let Some(tx) = r.store.tx(nonce)? {
                if let Some(v) = tx.variants.last() {
                    r.chain.broadcast(&v.raw).await?;
                }
            }
        }
        Action::Replace { nonce } => replace(r, world.head_block, nonce).await?,
        Action::Settle { nonce, failed } => settle(r, nonce, &failed, world)?,
        // Gathered by `act` and sent together.
        Action::MintCallback { .. } => {}
        Action::RecoverMint { deposit } => {
            // Asked with backoff: a deposit Alpaca does not know stays unknown for a while.
            if r.polls.due(&deposit.issuer_request_id) {
                recover(r, &deposit).await?;
            }
        }
        Action::RedeemCall {
            redemption_id,
            ask_first,
        } if ask_first && !r.polls.due(&redemption_id) => {}
        Action::RedeemCall {
            redemption_id,
            ask_first,
        } => redeem_call(r, &redemption_id, ask_first).await?,
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
            let text = format!("{problem:?}");
            let known = r.store.mint(&issuer_request_id)?.and_then(|m| m.problem);
            if known.as_deref() != Some(text.as_str()) {
                tracing::error!(%issuer_request_id, problem = %text, "mint needs an operator");
                r.store.update_mint(
                    &issuer_request_id,
                    Box::new(move |m| m.problem = Some(text)),
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn next_nonce(store: &dyn Store, chain: &Chain) -> Result<u64, PassError> {
    let chain_nonce = chain.nonce_latest().await?;
    let stored = store.highest_nonce()?.map_or(0, |n| n + 1);
    Ok(chain_nonce.max(stored))
}

async fn send_mint<B: Broker>(
    r: &Reconciler<B>,
    head: u64,
    vault: alloy::primitives::Address,
    items: &[MintItem],
    intents: &BTreeMap<&IssuerRequestId, &MintIntent>,
) -> Result<(), PassError> {
    let now = unix_now();
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
    let input = mint_calldata(r.chain.bot(), &calls);
    // Estimated here, before a nonce is taken: one item that reverts must not hold back the
    // others in its batch, so a reverting batch is sent again item by item.
    let gas_limit = match r.chain.estimate_gas(vault, &input).await {
        Ok(gas) => gas,
        Err(e) if items.len() > 1 => {
            tracing::warn!(error = %e, %vault, mints = items.len(), "batch estimation failed; sending its mints one by one");
            for item in items {
                if let Err(e) = Box::pin(send_mint(
                    r,
                    head,
                    vault,
                    std::slice::from_ref(item),
                    intents,
                ))
                .await
                {
                    tracing::warn!(issuer_request_id = %item.issuer_request_id, error = %e, "mint not sent");
                }
            }
            return Ok(());
        }
        Err(e) => {
            // Shown to operators; tried again every pass (nothing is spent until it estimates).
            let text = format!("mint transaction does not estimate: {e}");
            if let Some(item) = items.first() {
                r.store.update_mint(
                    &item.issuer_request_id,
                    Box::new(move |m| m.problem = Some(text)),
                )?;
            }
            return Err(e.into());
        }
    };
    let purpose = TxPurpose::Mint {
        vault,
        issuer_request_ids: items.iter().map(|i| i.issuer_request_id.clone()).collect(),
    };
    send_estimated(r, head, vault, input, purpose, gas_limit).await
}

/// Estimates, signs, stores, then broadcasts one transaction from the bot.
async fn send_tx<B: Broker>(
    r: &Reconciler<B>,
    head: u64,
    to: alloy::primitives::Address,
    input: alloy::primitives::Bytes,
    purpose: TxPurpose,
) -> Result<(), PassError> {
    let gas_limit = r.chain.estimate_gas(to, &input).await?;
    send_estimated(r, head, to, input, purpose, gas_limit).await
}

/// Signs, stores, then broadcasts one transaction whose gas is known.
async fn send_estimated<B: Broker>(
    r: &Reconciler<B>,
    head: u64,
    to: alloy::primitives::Address,
    input: alloy::primitives::Bytes,
    purpose: TxPurpose,
    gas_limit: u64,
) -> Result<(), PassError> {
    let fees = r.chain.fees().await?;
    let nonce = next_nonce(r.store.as_ref(), &r.chain).await?;
    let (hash, raw) = r.chain.sign(nonce, to, input.clone(), gas_limit, fees)?;
    let is_burn = matches!(purpose, TxPurpose::Burn { .. });
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
    r.store.put_tx(&record)?;
    maybe_crash(r.config.crash_at, CrashPoint::AfterSign);
    tracing::info!(nonce, %hash, %to, purpose = ?record.purpose, "transaction stored; broadcasting");
    r.chain.broadcast(&raw).await?;
    maybe_crash(r.config.crash_at, CrashPoint::AfterBroadcast);
    if is_burn {
        maybe_crash(r.config.crash_at, CrashPoint::AfterBurnBroadcast);
    }
    Ok(())
}

async fn send_burn<B: Broker>(
    r: &Reconciler<B>,
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
        timestamp: unix_now(),
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

/// Asks Alpaca to journal a redemption's shares back, exactly once: the call is marked before it
/// goes out, carries an Idempotency-Key derived from the redemption id, and a "this
/// issuer_request_id exists" answer is resolved by looking the request up.
async fn redeem_call<B: Broker>(
    r: &Reconciler<B>,
    id: &IssuerRequestId,
    ask_first: bool,
) -> Result<(), PassError> {
    let Some(mut redemption) = r.store.redemption(id)? else {
        return Ok(());
    };
    let Some(client) = redemption.client_ref() else {
        return Ok(());
    };
    if ask_first {
        if let Some(request) = r.broker.request_by_issuer_id(id).await? {
            let state = RedemptionState::Requested {
                tokenization_request_id: request.id,
            };
            r.store
                .update_redemption(id, Box::new(move |r| r.state = state))?;
            return Ok(());
        }
    }
    if redemption.state == RedemptionState::Detected {
        redemption.state = RedemptionState::Requesting;
        r.store
            .update_redemption(id, Box::new(|r| r.state = RedemptionState::Requesting))?;
    }
    let (kept, _) = redemption.split();
    let request = RedeemRequest {
        issuer_request_id: id.clone(),
        underlying_symbol: redemption.underlying.clone(),
        token_symbol: redemption.token.clone(),
        client,
        qty: kept,
        network: redemption.network.clone(),
        wallet_address: redemption.sender,
        tx_hash: redemption.tx_hash,
    };
    let answer = match r.broker.redeem(&request, &id.idempotency_key()).await {
        Ok(answer) => answer,
        Err(BrokerError::Status {
            status,
            code,
            message,
        }) if (400..500).contains(&status) && status != 429 => {
            // A final refusal: Alpaca may hold the request anyway (our earlier call went through,
            // or this was a replay), so it is looked up before anything is decided.
            let found = r.broker.request_by_issuer_id(id).await?;
            match (redeem_refusal(status, &message, found.is_some()), found) {
                (RedeemRefusal::Adopt, Some(found)) => found,
                (RedeemRefusal::AskLater, _) | (RedeemRefusal::Adopt, None) => {
                    // Alpaca has it but cannot show it yet (a 404 right after creation can be
                    // transient). Not a refusal: it may still journal, so nothing may be
                    // returned; ask again later, with backoff.
                    r.polls.wait_more(id);
                    tracing::warn!(redemption = %id, answer = %message,
                        "Alpaca says the redeem request exists but cannot show it yet");
                    return Ok(());
                }
                (RedeemRefusal::Stop, _) => {
                    return stop_redemption(r, id, status, code.as_deref(), &message);
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    maybe_crash(r.config.crash_at, CrashPoint::AfterRedeemCall);
    tracing::info!(redemption = %id, tokenization_request_id = %answer.id, qty = %kept, "Alpaca has the redeem request");
    let state = RedemptionState::Requested {
        tokenization_request_id: answer.id,
    };
    r.store
        .update_redemption(id, Box::new(move |r| r.state = state))?;
    Ok(())
}

/// Re-signs a stuck nonce with fees at least 25% higher (nodes want 10%), same calldata.
async fn replace<B: Broker>(r: &Reconciler<B>, head: u64, nonce: u64) -> Result<(), PassError> {
    let Some(mut tx) = r.store.tx(nonce)? else {
        return Ok(());
    };
    let Some(last) = tx.variants.last() else {
        return Ok(());
    };
    let bump = |fee: u128| fee.saturating_add(fee / 4).saturating_add(1);
    let now = r.chain.fees().await?;
    let cap = r.config.max_fee_per_gas_wei;
    if last.max_fee_per_gas >= cap {
        // At the ceiling an operator decides; re-sending keeps it in the node's pool meanwhile.
        tracing::error!(
            nonce,
            max_fee = last.max_fee_per_gas,
            cap,
            "stuck transaction already at the fee cap; not replacing"
        );
        return Ok(r.chain.broadcast(&last.raw).await?);
    }
    let max_fee_per_gas = bump(last.max_fee_per_gas).max(now.max_fee_per_gas).min(cap);
    // Nodes take a replacement only 10% above the fee it replaces: below that (squeezed by the
    // cap) a new variant would be refused and could strand the nonce; re-send the last instead.
    if max_fee_per_gas
        < last
            .max_fee_per_gas
            .saturating_add(last.max_fee_per_gas / 10)
    {
        tracing::error!(
            nonce,
            cap,
            "a replacement under the fee cap would not be accepted; re-sending"
        );
        return Ok(r.chain.broadcast(&last.raw).await?);
    }
    let fees = Fees {
        max_fee_per_gas,
        max_priority_fee_per_gas: bump(last.max_priority_fee_per_gas)
            .max(now.max_priority_fee_per_gas)
            .min(max_fee_per_gas),
    };
    let (hash, raw) = r
        .chain
        .sign(nonce, tx.to, tx.input.clone(), tx.gas_limit, fees)?;
    tracing::warn!(nonce, %hash, max_fee = fees.max_fee_per_gas, "replacing a stuck transaction at the same nonce");
    tx.variants.push(TxVariant {
        hash,
        raw: raw.clone(),
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        signed_at_block: head,
    });
    r.store.put_tx(&tx)?;
    r.chain.broadcast(&raw).await?;
    Ok(())
}

fn settle<B: Broker>(
    r: &Reconciler<B>,
    nonce: u64,
    failed: &[IssuerRequestId],
    world: &World,
) -> Result<(), PassError> {
    let Some(mut tx) = r.store.tx(nonce)? else {
        return Ok(());
    };
    // The block, status and hash observed this pass: no second lookup that could disagree.
    let mined = world
        .txs
        .iter()
        .find(|t| t.nonce == nonce)
        .and_then(|t| match t.status {
            reconciler::TxStatus::Mined {
                block_number,
                success,
                hash,
            } => Some((block_number, success, hash)),
            _ => None,
        });
    let hash = mined.map(|(_, _, h)| h);
    tx.settled = Some(Settled {
        mined_block: mined.map(|(b, _, _)| b),
        hash,
        success: mined.is_some_and(|(_, s, _)| s),
    });
    if let (TxPurpose::Return { redemption_id, .. }, Some(hash), true) =
        (&tx.purpose, hash, mined.is_some_and(|(_, s, _)| s))
    {
        tracing::info!(redemption = %redemption_id, %hash, "tokens returned to the sender");
        r.store.update_redemption(
            redemption_id,
            Box::new(move |r| r.state = RedemptionState::Returned { tx_hash: hash }),
        )?;
    }
    r.store.put_tx(&tx)?;
    for id in failed {
        let updated = r.store.update_mint(
            id,
            Box::new(|m| m.intent.failed_attempts = m.intent.failed_attempts.saturating_add(1)),
        )?;
        if let Some(record) = updated {
            tracing::warn!(issuer_request_id = %id, nonce, attempts = record.intent.failed_attempts,
                "mint transaction settled without a Deposit for this request; it will be planned again");
        }
    }
    Ok(())
}

/// Sends one mint callback; `Ok(true)` once Alpaca has it.
async fn callback<B: Broker>(
    r: &Reconciler<B>,
    id: IssuerRequestId,
    tx_hash: B256,
    ask_first: bool,
) -> Result<bool, PassError> {
    let Some(record) = r.store.mint(&id)? else {
        return Ok(false);
    };
    if ask_first {
        if let Some(request) = r.broker.request_by_issuer_id(&id).await? {
            if let Some(known) = request.tx_hash {
                r.store.update_mint(
                    &id,
                    Box::new(move |m| m.intent.callback = Callback::Acked { tx_hash: known }),
                )?;
                tracing::info!(issuer_request_id = %id, "Alpaca already has the mint callback; recorded");
                return Ok(true);
            }
        }
    }
    if record.intent.callback == Callback::NotSent {
        // Marked before it goes out: after a crash the next attempt asks Alpaca first.
        r.store.update_mint(
            &id,
            Box::new(|m| {
                if m.intent.callback == Callback::NotSent {
                    m.intent.callback = Callback::Attempted;
                }
            }),
        )?;
    }
    let intent = &record.intent;
    let sent = r
        .broker
        .mint_callback(&MintCallback {
            tokenization_request_id: intent.tokenization_request_id.clone(),
            client: intent.client.clone(),
            wallet_address: intent.wallet,
            tx_hash,
            network: intent.network.clone(),
        })
        .await;
    if let Err(BrokerError::Status {
        status,
        code,
        message,
    }) = &sent
    {
        match callback_outcome(*status) {
            // Ambiguous (a gateway may answer after Alpaca acted): the next pass asks first.
            // Busy: nothing happened; the next pass tries again.
            CallbackOutcome::Ambiguous | CallbackOutcome::Later => {
                sent?;
                return Ok(false);
            }
            CallbackOutcome::Refused => {
                let text = format!("mint callback refused: {status} {message}");
                let refused = Callback::Refused {
                    status: *status,
                    code: code.clone(),
                    message: message.clone(),
                };
                r.store.update_mint(
                    &id,
                    Box::new(move |m| {
                        // An acknowledgement recorded meanwhile stands.
                        if !matches!(m.intent.callback, Callback::Acked { .. }) {
                            m.intent.callback = refused;
                            m.problem = Some(text);
                        }
                    }),
                )?;
                tracing::error!(issuer_request_id = %id, status, code = code.as_deref().unwrap_or(""), message = %message,
                    "Alpaca refused the mint callback; stopped until an operator retries it (issuer operator retry-mint ID)");
                return Ok(false);
            }
        }
    }
    sent?;
    maybe_crash(r.config.crash_at, CrashPoint::AfterCallback);
    r.store.update_mint(
        &id,
        Box::new(move |m| {
            m.intent.callback = Callback::Acked { tx_hash };
            m.problem = None;
        }),
    )?;
    tracing::info!(issuer_request_id = %id, %tx_hash, "mint callback acknowledged");
    Ok(true)
}

/// Alpaca refused the redeem call for good: the redemption stops, flagged with Alpaca's status,
/// code and message, and is not called again until an operator retries it.
fn stop_redemption<B: Broker>(
    r: &Reconciler<B>,
    id: &IssuerRequestId,
    status: u16,
    code: Option<&str>,
    message: &str,
) -> Result<(), PassError> {
    let anomaly = Anomaly::RedeemRefused {
        status,
        code: code.map(str::to_owned),
        message: message.to_owned(),
    };
    r.store.update_redemption(
        id,
        Box::new(move |r| {
            // Only a redemption still waiting for the call: a concurrent operator action wins.
            if matches!(
                r.state,
                RedemptionState::Detected | RedemptionState::Requesting
            ) {
                r.state = RedemptionState::Flagged {
                    anomaly,
                    return_requested: false,
                    tokenization_request_id: None,
                };
            }
        }),
    )?;
    tracing::error!(redemption = %id, status, code = code.unwrap_or(""), message = %message,
        "Alpaca refused the redeem call; stopped until an operator retries it (issuer redemption retry ID)");
    Ok(())
}

/// Rebuilds a mint intent from Alpaca for a tagged deposit the cache does not know.
async fn recover<B: Broker>(
    r: &Reconciler<B>,
    deposit: &reconciler::ObservedDeposit,
) -> Result<(), PassError> {
    let id = &deposit.issuer_request_id;
    let Some(request) = r.broker.request_by_issuer_id(id).await? else {
        r.polls.wait_more(id);
        tracing::error!(issuer_request_id = %id, tx = %deposit.tx_hash, vault = %deposit.vault,
            "tagged deposit unknown to the cache and to Alpaca: anomaly, nothing done");
        return Ok(());
    };
    let (Some(client), RequestType::Mint) = (request.client(), request.kind) else {
        tracing::error!(issuer_request_id = %id, "Alpaca's request for a tagged deposit is not a mint with a client");
        return Ok(());
    };
    let intent = MintIntent {
        issuer_request_id: id.clone(),
        tokenization_request_id: request.id.clone(),
        client,
        wallet: request.wallet_address,
        underlying: request.underlying_symbol.clone(),
        token: request.token_symbol.clone(),
        network: request.network.clone(),
        qty: request.qty,
        vault: deposit.vault,
        journal: Journal::Completed,
        // Whether a callback was sent is unknown: the next one asks Alpaca first.
        callback: Callback::Attempted,
        failed_attempts: 0,
        accepted_at: unix_now(),
    };
    // The same fingerprint the HTTP intake computes: an identical retry from Alpaca is a repeat.
    let fingerprint = intent.fingerprint();
    let inserted = r.store.insert_mint_if_absent(MintRecord {
        intent,
        fingerprint,
        reject_reason: None,
        problem: None,
    })?;
    if inserted {
        tracing::warn!(issuer_request_id = %id, tx = %deposit.tx_hash, "rebuilt a mint intent from the chain and Alpaca");
    }
    Ok(())
}

/// After a restart, re-sends every stored unsettled transaction once: one may have been signed
/// and stored but never broadcast.
pub async fn rebroadcast_all(store: &dyn Store, chain: &Chain) -> Result<(), PassError> {
    for tx in store.unsettled_txs()? {
        if let Some(v) = tx.variants.last() {
            chain.broadcast(&v.raw).await?;
        }
    }
    Ok(())
}
