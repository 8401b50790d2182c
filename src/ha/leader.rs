//! Leadership: the campaign for the election key, the lease's renewal, and the terms. A term
//! starts by rebuilding what only the previous leader knew (as after a lost cache), then runs the
//! reconcile loop until the lease is lost or the process stops.

use super::{timed, FenceError, HaError, HaSettings, Keys, SharedFacts};
use crate::alpaca::Broker;
use crate::chain::Chain;
use crate::http::Readiness;
use crate::pass::{PassConfig, ReconcileLoop};
use crate::store::{RedbStore, Select, Store};
use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use reconciler::{Callback, IssuerRequestId, Journal, RedemptionState};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// One won election: the lease, the election key's create revision (what the fence compares)
/// and how long the lease is known to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub lease: i64,
    pub create_revision: i64,
    /// The last renewal's send time plus the TTL etcd granted: etcd cannot have expired the
    /// lease before then (its clock started later), so this side errs on the safe side.
    valid_until: Instant,
}

/// This instance's standing in the election. Shared by the campaign, the keep-alive, the fence
/// and `/readyz`.
pub struct Leadership {
    client: etcd_client::Client,
    key: String,
    instance: String,
    settings: HaSettings,
    term: Mutex<Option<Term>>,
    /// The current term's create revision, `None` while not leading.
    changes: watch::Sender<Option<i64>>,
}

/// How often a standby looks whether the election key is free.
const CAMPAIGN_POLL: Duration = Duration::from_millis(100);
/// How often a new leader asks whether an earlier leader's transactions are mined: the first
/// pass waits on it, so a failover does too.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Longest a new leader waits for transactions it does not know (a previous leader's, still in
/// the node's pool) to be mined before its first pass; sends stay refused while any is pending.
const DRAIN_MAX: Duration = Duration::from_secs(30);

impl Leadership {
    pub fn new(client: etcd_client::Client, keys: &Keys, settings: HaSettings) -> Arc<Self> {
        let (changes, _) = watch::channel(None);
        Arc::new(Leadership {
            client,
            key: keys.leader(),
            instance: settings.instance.clone(),
            settings,
            term: Mutex::new(None),
            changes,
        })
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The fence of `term`: it passes only while that term is current.
    pub fn fence(self: &Arc<Self>, term: Term) -> super::Fence {
        super::Fence::leading(self.clone(), term.create_revision)
    }

    /// Margin kept before the lease's end: an action is not begun in it.
    fn margin(&self) -> Duration {
        self.settings.lease_ttl / 4
    }

    /// The current term if its lease is known to outlive `now` by the margin.
    pub(super) fn term_if_valid(&self, now: Instant) -> Option<Term> {
        let term = *self.term.lock().unwrap_or_else(PoisonError::into_inner);
        term.filter(|t| now + self.margin() < t.valid_until)
    }

    /// The fence's round trip: see [`super::Fence::check`].
    pub(super) async fn confirm(&self, term: i64, what: &str) -> Result<(), FenceError> {
        let Some(term) = self
            .term_if_valid(Instant::now())
            .filter(|t| t.create_revision == term)
        else {
            return Err(FenceError::NotLeader);
        };
        let txn = Txn::new()
            .when([
                Compare::create_revision(self.key.clone(), CompareOp::Equal, term.create_revision),
                Compare::value(self.key.clone(), CompareOp::Equal, self.instance.clone()),
            ])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let mut kv = self.client.kv_client();
        let answer = match timed(kv.txn(txn)).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(target: "issuer::ha::fence", term = term.create_revision, what, error = %e, "fence: etcd could not confirm the lease; not acting");
                return Err(FenceError::Unconfirmed(e.to_string()));
            }
        };
        if !answer.succeeded() {
            let holder = answer
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    etcd_client::TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                        format!(
                            "{} at revision {}",
                            String::from_utf8_lossy(kv.value()),
                            kv.create_revision()
                        )
                    }),
                    _ => None,
                })
                .unwrap_or_else(|| "absent".to_owned());
            self.lose(term, &format!("the election key is {holder}"));
            tracing::warn!(target: "issuer::ha::fence", term = term.create_revision, what, holder = %holder, "fence: lease lost; not acting");
            return Err(FenceError::Lost(holder));
        }
        // The answer is as old as its question: the lease must still be good now.
        if self.term_if_valid(Instant::now()) != Some(term) {
            tracing::warn!(target: "issuer::ha::fence", term = term.create_revision, what, "fence: lease too close to its end; not acting");
            return Err(FenceError::NotLeader);
        }
        let revision = answer
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        tracing::info!(target: "issuer::ha::fence", instance = %self.instance, term = term.create_revision, revision, what, "fence: lease confirmed");
        Ok(())
    }

    /// Ends `term` locally (if it is still the current one) and gives the lease back, so a
    /// standby need not wait out the TTL.
    fn lose(&self, term: Term, why: &str) {
        let ended = {
            let mut current = self.term.lock().unwrap_or_else(PoisonError::into_inner);
            if current.is_some_and(|t| t.create_revision == term.create_revision) {
                *current = None;
                true
            } else {
                false
            }
        };
        if ended {
            self.changes.send_replace(None);
            tracing::warn!(instance = %self.instance, term = term.create_revision, why, "ha: leadership lost; standing by");
            let mut leases = self.client.lease_client();
            tokio::spawn(async move {
                let _ = timed(leases.revoke(term.lease)).await;
            });
        }
    }

    /// Gives leadership up (shutdown): the lease is revoked, so a standby takes over at once.
    pub async fn resign(&self, term: Term) {
        {
            let mut current = self.term.lock().unwrap_or_else(PoisonError::into_inner);
            if current.is_some_and(|t| t.create_revision == term.create_revision) {
                *current = None;
            }
        }
        self.changes.send_replace(None);
        let mut leases = self.client.lease_client();
        match timed(leases.revoke(term.lease)).await {
            Ok(_) => {
                tracing::info!(instance = %self.instance, term = term.create_revision, "ha: resigned");
            }
            Err(e) => {
                tracing::warn!(error = %e, "ha: could not revoke the lease; it expires by itself");
            }
        }
    }

    /// Resolves once `term` is no longer current.
    pub async fn lost(&self, term: Term) {
        let mut rx = self.changes.subscribe();
        let _ = rx
            .wait_for(|current| *current != Some(term.create_revision))
            .await;
    }

    /// Campaigns until this instance holds the election key.
    pub async fn campaign(&self) -> Term {
        let mut quiet_until = Instant::now();
        loop {
            crate::metrics::heartbeat();
            match self.try_win().await {
                Ok(Some(term)) => return term,
                Ok(None) => {}
                Err(e) => {
                    if Instant::now() >= quiet_until {
                        tracing::warn!(error = %e, "ha: cannot campaign; etcd unreachable?");
                        quiet_until = Instant::now() + Duration::from_secs(5);
                    }
                }
            }
            tokio::time::sleep(CAMPAIGN_POLL).await;
        }
    }

    /// One attempt: if the election key is free, takes it under a new lease.
    async fn try_win(&self) -> Result<Option<Term>, HaError> {
        let mut kv = self.client.kv_client();
        if !timed(kv.get(self.key.clone(), None))
            .await?
            .kvs()
            .is_empty()
        {
            return Ok(None);
        }
        let mut leases = self.client.lease_client();
        let asked = Instant::now();
        let ttl = i64::try_from(self.settings.lease_ttl.as_secs()).unwrap_or(i64::MAX);
        let lease = timed(leases.grant(ttl, None)).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                self.key.clone(),
                self.instance.clone(),
                Some(PutOptions::new().with_lease(lease.id())),
            )]);
        let won = match timed(kv.txn(txn)).await {
            Ok(answer) if answer.succeeded() => {
                answer.header().map(etcd_client::ResponseHeader::revision)
            }
            other => {
                let _ = timed(leases.revoke(lease.id())).await;
                other?;
                return Ok(None);
            }
        };
        let Some(create_revision) = won else {
            let _ = timed(leases.revoke(lease.id())).await;
            return Ok(None);
        };
        let term = Term {
            lease: lease.id(),
            create_revision,
            valid_until: asked + Duration::from_secs(u64::try_from(lease.ttl()).unwrap_or(0)),
        };
        *self.term.lock().unwrap_or_else(PoisonError::into_inner) = Some(term);
        self.changes.send_replace(Some(create_revision));
        tracing::info!(target: "issuer::ha::fence", instance = %self.instance, term = create_revision, lease = lease.id(), "ha: leadership won");
        Ok(Some(term))
    }

    /// Renews `term`'s lease every `renew_every` until it is lost: etcd says it expired, or no
    /// renewal got through before the margin before its end (etcd unreachable, this process
    /// paused).
    pub async fn keep_alive(self: Arc<Self>, term: Term) {
        let mut leases = self.client.lease_client();
        let renew = self.settings.renew_every;
        loop {
            let current = *self.term.lock().unwrap_or_else(PoisonError::into_inner);
            if current.map(|t| t.create_revision) != Some(term.create_revision) {
                return;
            }
            if self.term_if_valid(Instant::now()).is_none() {
                self.lose(term, "no renewal got through in time");
                return;
            }
            let sent = Instant::now();
            let renewed = tokio::time::timeout(renew, async {
                let (mut keeper, mut stream) = leases.keep_alive(term.lease).await?;
                keeper.keep_alive().await?;
                stream.message().await
            })
            .await;
            match renewed {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    let until =
                        sent + Duration::from_secs(u64::try_from(answer.ttl()).unwrap_or(0));
                    let mut current = self.term.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(t) = current
                        .as_mut()
                        .filter(|t| t.create_revision == term.create_revision)
                    {
                        t.valid_until = t.valid_until.max(until);
                    }
                }
                Ok(Ok(Some(_))) => {
                    self.lose(term, "etcd says the lease expired");
                    return;
                }
                Ok(Ok(None) | Err(_)) | Err(_) => {
                    tracing::warn!(instance = %self.instance, "ha: lease renewal failed; retrying");
                }
            }
            tokio::time::sleep(renew.saturating_sub(sent.elapsed())).await;
        }
    }
}

/// What a term's reconcile loop is built from.
pub struct TermParts<B> {
    /// The store the loop reads and writes: the local redb, with every transaction it signs
    /// written through to etcd before the broadcast ([`super::HaStore`]).
    pub store: Arc<dyn Store>,
    /// The same redb, for what a new term rebuilds.
    pub local: RedbStore,
    /// The one network HA mode serves (several networks run in the single-instance mode only).
    pub network: reconciler::Network,
    pub chain: Chain,
    pub broker: B,
    pub config: PassConfig,
}

impl<B: Broker + Clone + 'static> TermParts<B> {
    /// The reconcile loop of one term: every broadcast and Alpaca call it makes is fenced by
    /// `fence`.
    pub fn reconcile_loop(&self, fence: super::Fence) -> ReconcileLoop<B> {
        let mut reconcile = ReconcileLoop::new(
            self.store.clone(),
            self.network.clone(),
            self.chain.clone(),
            self.broker.clone(),
            self.config.clone(),
        );
        reconcile.fence = fence;
        reconcile
    }
}

/// Standby, campaign, lead, repeat, until `shutdown`: the HA half of `serve`.
pub async fn run<B>(
    leadership: Arc<Leadership>,
    facts: Arc<SharedFacts>,
    parts: TermParts<B>,
    readiness: Readiness,
    wake: Arc<Notify>,
    shutdown: impl Future<Output = ()> + Send,
) where
    B: Broker + Clone + Send + Sync + 'static,
{
    tokio::pin!(shutdown);
    loop {
        readiness.set_role("standby");
        tracing::info!(instance = %leadership.instance(), "ha: standing by");
        let term = tokio::select! {
            () = &mut shutdown => break,
            term = leadership.campaign() => term,
        };
        let keeper = tokio::spawn(leadership.clone().keep_alive(term));
        readiness.set_role("leader");
        let fence = leadership.fence(term);
        let prepared = tokio::select! {
            () = &mut shutdown => {
                keeper.abort();
                leadership.resign(term).await;
                break;
            }
            () = leadership.lost(term) => Err(HaError::Contended("leadership")),
            prepared = prepare_term(&fence, &facts, &parts) => prepared,
        };
        if let Err(e) = prepared {
            tracing::warn!(error = %e, "ha: could not start the term; giving leadership up");
            keeper.abort();
            leadership.resign(term).await;
            tokio::time::sleep(CAMPAIGN_POLL * 5).await;
            continue;
        }
        tracing::info!(instance = %leadership.instance(), term = term.create_revision, "ha: leading; reconciler starting");
        let reconcile = parts.reconcile_loop(fence);
        // The term's first pass runs at once, not a tick or a block later: a failover's mints
        // resume as soon as the term is prepared.
        wake.notify_one();
        let shutting_down = AtomicBool::new(false);
        let until = async {
            tokio::select! {
                () = &mut shutdown => shutting_down.store(true, Ordering::SeqCst),
                () = leadership.lost(term) => {}
            }
        };
        reconcile.run(wake.clone(), until).await;
        keeper.abort();
        if shutting_down.load(Ordering::SeqCst) {
            leadership.resign(term).await;
            break;
        }
        tracing::warn!(instance = %leadership.instance(), term = term.create_revision, "ha: reconciler stopped: leadership lost");
    }
}

/// What a new leader does before its first pass: import every shared fact; wait until no
/// transaction of the bot it does not know is pending; import every transaction the leaders
/// signed (a previous leader's may still be queued at the node behind a nonce gap) and where each
/// callback and redemption stands; and make every callback and redeem call still not known to be
/// made ask Alpaca first (a mark lost in a crash between the local write and etcd's).
pub async fn prepare_term<B>(
    fence: &super::Fence,
    facts: &SharedFacts,
    parts: &TermParts<B>,
) -> Result<(), HaError> {
    let imported = facts.import_all().await?;
    let started = Instant::now();
    loop {
        let latest = parts.chain.nonce_latest().await;
        let pending = parts.chain.nonce_pending().await;
        match (latest, pending) {
            (Ok(latest), Ok(pending)) if pending <= latest => break,
            (Ok(latest), Ok(pending)) => {
                tracing::info!(
                    latest,
                    pending,
                    "ha: waiting for transactions of an earlier leader to be mined"
                );
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "ha: rpc failed while draining");
            }
        }
        if started.elapsed() > DRAIN_MAX {
            tracing::warn!("ha: transactions unknown to this leader are still pending; sends wait until they are mined");
            break;
        }
        if !fence.holds() {
            return Err(HaError::Contended("leadership"));
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let latest = parts
        .chain
        .nonce_latest()
        .await
        .map_err(|e| HaError::Store(crate::store::StoreError::Storage(e.to_string())))?;
    // Every transaction a leader signed is shared before it is broadcast. A previous leader's
    // that the node holds queued behind a nonce gap is invisible to the pending count above, and
    // would be mined as soon as anything filled the gap: importing them makes them this
    // leader's own, re-sent at their nonces (never their work again at new ones).
    let imported_txs = facts.import_txs(&parts.network).await?;
    // Where every callback and redeem call stood when the previous leader last recorded it
    // (shared before each call went out): one it made is asked about or left alone, never made
    // again as if new.
    let imported_progress = facts.import_progress().await?;
    let store = parts.store.as_ref();
    // A callback still "not sent" after the import was not sent by a leader of this version (the
    // mark is shared before the call). Still asked about first, all in one commit: an issuer of
    // an older version may have sent it, or a leader that died twice in a row.
    let unsent: Vec<IssuerRequestId> = store
        .mints(Select::Active)?
        .into_iter()
        .filter(|r| {
            r.intent.callback == Callback::NotSent && r.intent.journal == Journal::Completed
        })
        .map(|r| r.intent.issuer_request_id)
        .collect();
    let mut asking = store.mark_callbacks_attempted(&unsent)?.len();
    // Only a redemption not final can still be `Detected`.
    for redemption in store.redemptions(Select::Active)? {
        if redemption.state == RedemptionState::Detected {
            store.update_redemption(
                &redemption.id,
                Box::new(|r| {
                    if r.state == RedemptionState::Detected {
                        r.state = RedemptionState::Requesting;
                    }
                }),
            )?;
            asking += 1;
        }
    }
    tracing::info!(
        imported,
        imported_txs,
        imported_progress,
        asking_first = asking,
        nonce = latest,
        "ha: term prepared"
    );
    Ok(())
}
