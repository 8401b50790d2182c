//! The reconciler's calls to Alpaca, run as jobs beside the passes so that a slow or
//! rate-limited Alpaca never holds back chain work: a pass submits them and goes on; each job
//! reads the item's state afresh from the store, calls Alpaca, records the answer, and wakes the
//! loop. At most one job per item is in flight, a bounded number run at once, and each has a
//! deadline. A job that fails backs its item off (the poll schedule), so a failing Alpaca is not
//! called in a tight loop; a `Retry-After` closes the client's gate for every call instead of
//! being slept inside one.

use super::crash::{maybe_crash, CrashPoint};
use super::{PassError, PassSummary, PollSchedule, ReconcileLoop};
use crate::alpaca::{
    Broker, BrokerError, MintCallback, RedeemRequest, RequestStatus, RequestType,
    TokenizationRequest,
};
use crate::store::{MintRecord, Store};
use alloy::primitives::B256;
use reconciler::refusal::{callback_outcome, redeem_refusal, CallbackOutcome, RedeemRefusal};
use reconciler::{
    Action, AlpacaView, Anomaly, Callback, IssuerRequestId, Journal, JournalStatus, MintIntent,
    Redemption, RedemptionState, TokenizationRequestId,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Most Alpaca jobs running at once.
const JOBS_AT_ONCE: usize = 128;
/// Longest a job may take, retries included; then it is dropped (every job is safe to cut at any
/// point: what it marks before calling makes the next attempt ask Alpaca first).
const JOB_DEADLINE: Duration = Duration::from_secs(60);

/// Whether a job that succeeded starts a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterJob {
    /// Its outcome gives the plan chain work (a redemption to burn, a mint to send): a pass runs
    /// at once.
    Pass,
    /// Its outcome ends its item (a mint callback): nothing follows, and the next head or timer
    /// pass is soon enough. A block's worth of callbacks finishing one after another would
    /// otherwise run a pass each, every one reading the whole active set.
    Nothing,
}

/// What a job needs: owned handles, so it can outlive the pass that submitted it.
pub(super) struct JobCtx<B> {
    pub store: Arc<dyn Store>,
    pub broker: B,
    pub polls: PollSchedule,
    pub crash_at: Option<CrashPoint>,
    pub clock: Arc<dyn crate::clock::Clock>,
    pub fence: crate::ha::Fence,
    /// The network of the loop that started the job.
    pub network: reconciler::Network,
}

/// The Alpaca jobs in flight and what the finished polls saw. Cheap to clone.
#[derive(Clone)]
pub struct AlpacaWork {
    inner: Arc<Inner>,
}

struct Inner {
    in_flight: Mutex<HashSet<String>>,
    /// The latest poll answer per redemption, taken by the next pass's observe.
    views: Mutex<HashMap<IssuerRequestId, AlpacaView>>,
    permits: Arc<Semaphore>,
    /// Fired when a job changed something, so the loop runs a pass without waiting its timer.
    done: Notify,
}

impl Default for AlpacaWork {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                in_flight: Mutex::new(HashSet::new()),
                views: Mutex::new(HashMap::new()),
                permits: Arc::new(Semaphore::new(JOBS_AT_ONCE)),
                done: Notify::new(),
            }),
        }
    }
}

impl std::fmt::Debug for AlpacaWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlpacaWork")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl AlpacaWork {
    /// Starts `job` for `item` unless one is already in flight for it. Never waits.
    ///
    /// On failure the item is backed off in `polls`: the plan keeps asking for it every pass,
    /// but it is submitted again only once due. On success the loop runs a pass at once if
    /// `after` says the job's outcome gives a pass work.
    pub(super) fn submit<F>(
        &self,
        item: &IssuerRequestId,
        what: &'static str,
        after: AfterJob,
        polls: &PollSchedule,
        job: F,
    ) where
        F: Future<Output = Result<(), PassError>> + Send + 'static,
    {
        let key = format!("{what}:{item}");
        if !self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            return;
        }
        let inner = self.inner.clone();
        let polls = polls.clone();
        let item = item.clone();
        tokio::spawn(async move {
            let permit = inner.permits.clone().acquire_owned().await;
            let outcome = tokio::time::timeout(JOB_DEADLINE, job).await;
            drop(permit);
            inner
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            match outcome {
                Ok(Ok(())) => {
                    if after == AfterJob::Pass {
                        inner.done.notify_one();
                    }
                }
                Ok(Err(e)) => {
                    polls.wait_more(&item);
                    tracing::warn!(job = what, item = %item, error = %e, "Alpaca job failed; tried again later");
                }
                Err(_) => {
                    polls.wait_more(&item);
                    tracing::warn!(job = what, item = %item, deadline_s = JOB_DEADLINE.as_secs(),
                        "Alpaca job cut at its deadline; tried again later");
                }
            }
        });
    }

    /// Jobs not yet finished.
    pub fn in_flight(&self) -> usize {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Resolves when a job finished having changed something.
    pub async fn changed(&self) {
        self.inner.done.notified().await;
    }

    /// The poll answers gathered since the last call.
    pub(super) fn take_views(&self) -> Vec<AlpacaView> {
        let mut views = self
            .inner
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        views.drain().map(|(_, v)| v).collect()
    }

    fn put_view(&self, view: AlpacaView) {
        self.inner
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(view.redemption_id.clone(), view);
    }
}

/// Polls Alpaca for one requested redemption; the answer waits in `work` for the next pass.
/// Nothing found or a failure leaves no answer: the plan waits.
pub(super) async fn poll<B: Broker>(
    d: &JobCtx<B>,
    work: &AlpacaWork,
    redemption: &Redemption,
    tokenization_request_id: &TokenizationRequestId,
) -> Result<(), PassError> {
    match d.broker.request(tokenization_request_id).await? {
        Some(request) => {
            let status = match request.status {
                RequestStatus::Pending => JournalStatus::Pending,
                RequestStatus::Completed => JournalStatus::Completed,
                RequestStatus::Rejected => JournalStatus::Rejected,
            };
            if status == JournalStatus::Pending {
                d.polls.wait_more(&redemption.id);
            } else {
                d.polls.forget(&redemption.id);
            }
            work.put_view(AlpacaView {
                redemption_id: redemption.id.clone(),
                status,
                mismatches: echo_mismatches(redemption, &request),
            });
        }
        None => d.polls.wait_more(&redemption.id),
    }
    Ok(())
}

/// Fields of Alpaca's request that differ from what we sent: each is a reason not to burn.
pub fn echo_mismatches(redemption: &Redemption, request: &TokenizationRequest) -> Vec<String> {
    let (kept, _) = redemption.split();
    let mut out = Vec::new();
    if request.issuer_request_id.as_ref() != Some(&redemption.id) {
        out.push(format!(
            "issuer_request_id {:?} != {}",
            request.issuer_request_id, redemption.id
        ));
    }
    if request.qty != kept {
        out.push(format!("qty {} != {}", request.qty, kept));
    }
    if request.wallet_address != redemption.sender {
        out.push(format!(
            "wallet_address {} != {}",
            request.wallet_address, redemption.sender
        ));
    }
    if request.underlying_symbol != redemption.underlying {
        out.push(format!(
            "underlying_symbol {} != {}",
            request.underlying_symbol, redemption.underlying
        ));
    }
    if request.token_symbol != redemption.token {
        out.push(format!(
            "token_symbol {} != {}",
            request.token_symbol, redemption.token
        ));
    }
    if request.network != redemption.network {
        out.push(format!(
            "network {} != {}",
            request.network, redemption.network
        ));
    }
    if request.kind != RequestType::Redeem {
        out.push("type is not redeem".to_owned());
    }
    out
}

/// Asks Alpaca to journal a redemption's shares back, exactly once: the call is marked before it
/// goes out, carries an Idempotency-Key derived from the redemption id, and a "this
/// issuer_request_id exists" answer is resolved by looking the request up.
pub(super) async fn redeem_call<B: Broker>(
    d: &JobCtx<B>,
    id: &IssuerRequestId,
) -> Result<(), PassError> {
    let Some(mut redemption) = d.store.redemption(id)? else {
        return Ok(());
    };
    // Decided on the state read now, not on the plan's older copy: a call that went out since
    // (in another job) makes this one ask first, and one already answered makes it a no-op.
    let ask_first = match redemption.state {
        RedemptionState::Detected => false,
        RedemptionState::Requesting => true,
        _ => return Ok(()),
    };
    let Some(client) = redemption.client_ref() else {
        return Ok(());
    };
    if ask_first {
        if let Some(request) = d.broker.request_by_issuer_id(id).await? {
            let state = RedemptionState::Requested {
                tokenization_request_id: request.id,
            };
            d.store
                .update_redemption(id, Box::new(move |r| r.state = state))?;
            return Ok(());
        }
    }
    if redemption.state == RedemptionState::Detected {
        redemption.state = RedemptionState::Requesting;
        d.store
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
    d.fence.check(&format!("redeem call {id}")).await?;
    let answer = match d.broker.redeem(&request, &id.idempotency_key()).await {
        Ok(answer) => answer,
        Err(BrokerError::Status {
            status,
            code,
            message,
        }) if (400..500).contains(&status) && status != 429 => {
            // A final refusal: Alpaca may hold the request anyway (our earlier call went through,
            // or this was a replay), so it is looked up before anything is decided.
            let found = d.broker.request_by_issuer_id(id).await?;
            match (redeem_refusal(status, &message, found.is_some()), found) {
                (RedeemRefusal::Adopt, Some(found)) => found,
                (RedeemRefusal::AskLater, _) | (RedeemRefusal::Adopt, None) => {
                    // Alpaca has it but cannot show it yet (a 404 right after creation can be
                    // transient). Not a refusal: it may still journal, so nothing may be
                    // returned; ask again later, with backoff.
                    d.polls.wait_more(id);
                    tracing::warn!(redemption = %id, answer = %message,
                        "Alpaca says the redeem request exists but cannot show it yet");
                    return Ok(());
                }
                (RedeemRefusal::Stop, _) => {
                    return stop_redemption(d, id, status, code.as_deref(), &message);
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    maybe_crash(d.crash_at, CrashPoint::AfterRedeemCall);
    tracing::info!(redemption = %id, tokenization_request_id = %answer.id, qty = %kept, "Alpaca has the redeem request");
    let state = RedemptionState::Requested {
        tokenization_request_id: answer.id,
    };
    d.store
        .update_redemption(id, Box::new(move |r| r.state = state))?;
    Ok(())
}

/// Changes one stored mint from a job, off the runtime's worker threads. A write waits for its
/// group commit; on a small runtime (two cores) a worker blocked in it would hold back every
/// other job's write, so commits would go one by one instead of together.
async fn update_mint_off_thread<B>(
    d: &JobCtx<B>,
    id: &IssuerRequestId,
    change: crate::store::MintChange,
) -> Result<Option<MintRecord>, PassError> {
    let store = d.store.clone();
    let id = id.clone();
    match tokio::task::spawn_blocking(move || store.update_mint(&id, change)).await {
        Ok(written) => Ok(written?),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(crate::store::StoreError::WriterGone.into()),
    }
}

/// Sends one mint callback; `Ok(true)` once Alpaca has it. `marked_now`: the pass that
/// submitted this job marked the callback attempted itself, from "not sent", so no earlier
/// attempt can have reached Alpaca.
pub(super) async fn callback<B: Broker>(
    d: &JobCtx<B>,
    id: IssuerRequestId,
    tx_hash: B256,
    marked_now: bool,
) -> Result<bool, PassError> {
    let Some(record) = d.store.mint(&id)? else {
        return Ok(false);
    };
    // Decided on the record read now, not on the plan's older copy.
    let ask_first = match record.intent.callback {
        Callback::NotSent => false,
        Callback::Attempted => !marked_now,
        Callback::Acked { .. } | Callback::Refused { .. } => return Ok(false),
    };
    if ask_first {
        if let Some(request) = d.broker.request_by_issuer_id(&id).await? {
            if let Some(known) = request.tx_hash {
                update_mint_off_thread(
                    d,
                    &id,
                    Box::new(move |m| m.intent.callback = Callback::Acked { tx_hash: known }),
                )
                .await?;
                tracing::info!(issuer_request_id = %id, "Alpaca already has the mint callback; recorded");
                return Ok(true);
            }
        }
    }
    if record.intent.callback == Callback::NotSent {
        // Marked before it goes out: after a crash the next attempt asks Alpaca first.
        update_mint_off_thread(
            d,
            &id,
            Box::new(|m| {
                if m.intent.callback == Callback::NotSent {
                    m.intent.callback = Callback::Attempted;
                }
            }),
        )
        .await?;
    }
    let intent = &record.intent;
    d.fence.check(&format!("mint callback {id}")).await?;
    let sent = d
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
                let text = crate::store::MintProblem::CallbackRefused {
                    callback_refused: crate::store::CallbackRefusal {
                        status: *status,
                        code: code.clone(),
                        message: message.clone(),
                    },
                };
                let refused = Callback::Refused {
                    status: *status,
                    code: code.clone(),
                    message: message.clone(),
                };
                update_mint_off_thread(
                    d,
                    &id,
                    Box::new(move |m| {
                        // An acknowledgement recorded meanwhile stands.
                        if !matches!(m.intent.callback, Callback::Acked { .. }) {
                            m.intent.callback = refused;
                            m.problem = Some(text);
                        }
                    }),
                )
                .await?;
                tracing::error!(issuer_request_id = %id, status, code = code.as_deref().unwrap_or(""), message = %message,
                    "Alpaca refused the mint callback; stopped until an operator retries it (issuer operator retry-mint ID)");
                return Ok(false);
            }
        }
    }
    sent?;
    maybe_crash(d.crash_at, CrashPoint::AfterCallback);
    let acked = update_mint_off_thread(
        d,
        &id,
        Box::new(move |m| {
            m.intent.callback = Callback::Acked { tx_hash };
            m.problem = None;
        }),
    )
    .await?;
    if let Some(confirmed) = acked.and_then(|m| m.confirmed_at_ms) {
        let now_ms = d.clock.unix_ms();
        #[allow(clippy::cast_precision_loss)] // milliseconds to seconds for a histogram
        let seconds = now_ms.saturating_sub(confirmed) as f64 / 1000.0;
        crate::metrics::metrics()
            .confirm_to_callback
            .observe(seconds);
    }
    tracing::info!(issuer_request_id = %id, %tx_hash, "mint callback acknowledged");
    Ok(true)
}

/// Alpaca refused the redeem call for good: the redemption stops, flagged with Alpaca's status,
/// code and message, and is not called again until an operator retries it.
fn stop_redemption<B: Broker>(
    d: &JobCtx<B>,
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
    d.store.update_redemption(
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
pub(super) async fn recover<B: Broker>(
    d: &JobCtx<B>,
    deposit: &reconciler::ObservedDeposit,
) -> Result<(), PassError> {
    let id = &deposit.issuer_request_id;
    let Some(request) = d.broker.request_by_issuer_id(id).await? else {
        d.polls.wait_more(id);
        tracing::error!(issuer_request_id = %id, tx = %deposit.tx_hash, vault = %deposit.vault,
            "tagged deposit unknown to the cache and to Alpaca: anomaly, nothing done");
        return Ok(());
    };
    let (Some(client), RequestType::Mint) = (request.client(), request.kind) else {
        tracing::error!(issuer_request_id = %id, "Alpaca's request for a tagged deposit is not a mint with a client");
        return Ok(());
    };
    if request.network != d.network {
        // A vault at the same address on another network (same deployer, same nonce): that
        // network's loop rebuilds the intent from its own chain.
        tracing::debug!(issuer_request_id = %id, network = %request.network, loop_network = %d.network,
            "tagged deposit belongs to another network's mint; left to that network's loop");
        return Ok(());
    }
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
        accepted_at: d.clock.unix_secs(),
    };
    // The same fingerprint the HTTP intake computes: an identical retry from Alpaca is a repeat.
    let fingerprint = intent.fingerprint();
    let inserted = d.store.insert_mint_if_absent(MintRecord {
        intent,
        fingerprint,
        reject_reason: None,
        problem: None,
        confirmed_at_ms: None,
    })?;
    if inserted {
        tracing::warn!(issuer_request_id = %id, tx = %deposit.tx_hash, "rebuilt a mint intent from the chain and Alpaca");
    }
    Ok(())
}

/// Hands the pass's mint callbacks to Alpaca jobs. The first sends are marked attempted
/// together, in one commit, before any job starts (a job marks its own only when the pass could
/// not): after a crash the next attempt asks Alpaca first.
pub(super) fn submit_callbacks<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    callbacks: Vec<Action>,
    summary: &mut PassSummary,
) {
    let first_sends: Vec<IssuerRequestId> = callbacks
        .iter()
        .filter_map(|a| match a {
            Action::MintCallback {
                issuer_request_id,
                ask_first: false,
                ..
            } => Some(issuer_request_id.clone()),
            _ => None,
        })
        .collect();
    let marked: std::collections::BTreeSet<IssuerRequestId> = if first_sends.is_empty() {
        std::collections::BTreeSet::new()
    } else {
        match r.store.mark_callbacks_attempted(&first_sends) {
            Ok(marked) => {
                maybe_crash(r.config.crash_at, CrashPoint::AfterCallbacksMarked);
                marked.into_iter().collect()
            }
            // Each job then marks its own before sending, as it does when the pass could not.
            Err(e) => {
                tracing::warn!(callbacks = first_sends.len(), first = %first_sends[0], error = %e,
                    "marking callbacks attempted failed; each job marks its own");
                std::collections::BTreeSet::new()
            }
        }
    };
    for action in callbacks {
        // The job reads the record afresh to know whether to ask first; the plan already held
        // back a retry that is not due.
        if let Action::MintCallback {
            issuer_request_id,
            tx_hash,
            ask_first: _,
        } = action
        {
            let ctx = r.job_ctx();
            let marked_now = marked.contains(&issuer_request_id);
            let id = issuer_request_id.clone();
            r.alpaca.submit(
                &issuer_request_id,
                "callback",
                AfterJob::Nothing,
                &r.polls,
                async move { callback(&ctx, id, tx_hash, marked_now).await.map(|_| ()) },
            );
            summary.callbacks_submitted += 1;
        }
    }
}
