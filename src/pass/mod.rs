//! The reconcile loop. Each pass observes the chain and the cache, asks [`reconciler::plan`] what
//! to do, does it and records it. A pass runs on a timer and whenever an intent arrives, never two
//! at once, and does not know which of those woke it: the same world gives the same plan.

mod act;
mod gas_shapes;
mod resend;
pub use gas_shapes::GasShapes;
pub use resend::{rebroadcast_all, Resent};
mod alpaca_jobs;
mod crash;
mod observe;

pub use alpaca_jobs::{echo_mismatches, AlpacaWork};
pub use crash::{panic_at_crash_points, CrashPoint};

use crate::alpaca::Broker;
use crate::chain::{Chain, ChainError};
use crate::store::{Store, StoreError};
use reconciler::Policy;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Why a pass stopped early. The loop logs it, backs off and tries again; nothing is lost
/// because every step re-derives its work from the chain and the cache.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("alpaca: {0}")]
    Broker(#[from] crate::alpaca::BrokerError),
    /// HA mode: this instance does not hold the lease (any more); nothing was sent.
    #[error(transparent)]
    Fenced(#[from] crate::ha::FenceError),
}

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct PassConfig {
    /// Time between passes when nothing wakes the loop.
    pub interval: Duration,
    /// How often the head is polled for a new block, which starts a pass (a fraction of the
    /// block time).
    pub head_poll: Duration,
    /// Longest wait after repeated failures.
    pub backoff_max: Duration,
    pub policy: Policy,
    /// Test hook: abort the process at this point (crash tests).
    pub crash_at: Option<CrashPoint>,
    /// Replacements never bid above this fee per gas (wei); a transaction still stuck there waits
    /// for an operator instead of paying without limit.
    pub max_fee_per_gas_wei: u128,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassSummary {
    pub head_block: u64,
    pub actions: usize,
    pub mints_sent: usize,
    /// Mint callbacks handed to Alpaca jobs (acknowledged later, beside the passes).
    pub callbacks_submitted: usize,
    /// How long observing took (head, receipts, logs, the store's view), in milliseconds.
    pub observe_ms: u64,
    /// How long acting took (sending, calls handed to jobs, records), in milliseconds.
    pub act_ms: u64,
}

/// Everything a pass needs.
pub struct ReconcileLoop<B> {
    pub store: Arc<dyn Store>,
    /// The one network this loop reconciles: it observes only this network's assets, mints,
    /// redemptions, cursors, block hashes and transactions, so another network's loop (with
    /// its own chain and signer) never waits on it.
    pub network: reconciler::Network,
    pub chain: Chain,
    pub broker: B,
    pub config: PassConfig,
    /// When each item is next due at Alpaca (polls, and calls that failed).
    pub polls: PollSchedule,
    /// Alpaca calls running beside the passes.
    pub alpaca: AlpacaWork,
    /// Set at shutdown: the pass in progress stops at the next action boundary.
    pub stop: StopFlag,
    /// Wall-clock time for what the pass records (receipt timestamps, acceptance times).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Passes run so far, for whoever waits on "a few more passes" (tests, the bench).
    pub passes: PassCount,
    /// Checked before every broadcast and every Alpaca call with side effects: in HA mode,
    /// that this instance still holds the lease ([`crate::ha`]); [`crate::ha::Fence::single`]
    /// otherwise, which always passes.
    pub fence: crate::ha::Fence,
    /// Gas limits recent passes estimated, reused for batches of the same shape.
    pub gas_shapes: GasShapes,
    /// The head at which each pending nonce was last re-sent (once per block at most).
    pub resent: Resent,
}

/// Counts finished passes and wakes whoever waits for more. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct PassCount(Arc<(std::sync::atomic::AtomicU64, Notify)>);

impl PassCount {
    pub fn get(&self) -> u64 {
        self.0 .0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn bump(&self) {
        self.0 .0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    /// Waits until `n` more passes have finished (ok or failed) after this call.
    pub async fn more(&self, n: u64) {
        let target = self.get().saturating_add(n);
        loop {
            let notified = self.0 .1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() >= target {
                return;
            }
            notified.await;
        }
    }
}

/// Asks a running pass to stop before its next action. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct StopFlag(Arc<std::sync::atomic::AtomicBool>);

impl StopFlag {
    pub fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Polls the chain's head every `every` and wakes the loop when it moves. A failing node is
/// simply polled again; the passes report it.
async fn watch_head(chain: Chain, wake: Arc<Notify>, every: Duration) {
    let mut last = None;
    loop {
        tokio::time::sleep(every).await;
        if let Ok(Ok(head)) = tokio::time::timeout(every * 10, chain.head()).await {
            if last.is_some_and(|l| l != head) {
                wake.notify_one();
            }
            last = Some(head);
        }
    }
}

/// When each item's next Alpaca call is due, after failures ([`reconciler::pacing`] decides how
/// long). In memory on purpose: after a restart every pending request is simply asked at once.
/// Times are milliseconds since the schedule was made, on tokio's clock (which a test can pause).
/// Cheap to clone (shared with Alpaca jobs).
#[derive(Debug, Clone)]
pub struct PollSchedule {
    epoch: tokio::time::Instant,
    next: Arc<std::sync::Mutex<std::collections::HashMap<reconciler::IssuerRequestId, (u64, u32)>>>,
}

impl Default for PollSchedule {
    fn default() -> Self {
        PollSchedule {
            epoch: tokio::time::Instant::now(),
            next: Arc::default(),
        }
    }
}

impl PollSchedule {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<reconciler::IssuerRequestId, (u64, u32)>>
    {
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Milliseconds since the schedule was made: the `now_ms` the plan compares due times with.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn due(&self, id: &reconciler::IssuerRequestId) -> bool {
        let now = self.now_ms();
        self.lock().get(id).is_none_or(|(at, _)| now >= *at)
    }

    /// The items still backing off and when each is due: what the plan sees. An item already
    /// due is left out (the plan takes an absent item as due), so what a pass copies follows
    /// what is failing now, not every item that ever failed.
    pub fn due_times(&self) -> std::collections::BTreeMap<reconciler::IssuerRequestId, u64> {
        let now = self.now_ms();
        self.lock()
            .iter()
            .filter(|(_, (at, _))| *at > now)
            .map(|(id, (at, _))| (id.clone(), *at))
            .collect()
    }

    /// One more failure for `id`: its next call waits longer.
    pub fn wait_more(&self, id: &reconciler::IssuerRequestId) {
        let now = self.now_ms();
        let mut next = self.lock();
        let failures = next.get(id).map_or(0, |(_, n)| *n).saturating_add(1);
        let at = now.saturating_add(reconciler::pacing::alpaca_backoff_ms(failures));
        next.insert(id.clone(), (at, failures));
    }

    pub fn forget(&self, id: &reconciler::IssuerRequestId) {
        self.lock().remove(id);
    }
}

impl<B: Broker + Clone + 'static> ReconcileLoop<B> {
    /// A loop on the system clock, with nothing in flight, whose fence always passes (the
    /// single instance); HA mode and tests set the fields they need afterwards.
    pub fn new(
        store: Arc<dyn Store>,
        network: reconciler::Network,
        chain: Chain,
        broker: B,
        config: PassConfig,
    ) -> Self {
        ReconcileLoop {
            store,
            network,
            chain,
            broker,
            config,
            polls: PollSchedule::default(),
            alpaca: AlpacaWork::default(),
            stop: StopFlag::default(),
            clock: crate::clock::system(),
            passes: PassCount::default(),
            fence: crate::ha::Fence::single(),
            gas_shapes: GasShapes::default(),
            resent: Resent::default(),
        }
    }

    /// What an Alpaca job needs, owned.
    fn job_ctx(&self) -> alpaca_jobs::JobCtx<B> {
        alpaca_jobs::JobCtx {
            store: self.store.clone(),
            broker: self.broker.clone(),
            polls: self.polls.clone(),
            crash_at: self.config.crash_at,
            clock: self.clock.clone(),
            fence: self.fence.clone(),
            network: self.network.clone(),
        }
    }

    /// One pass: observe, plan, act, record.
    pub async fn pass(&self) -> Result<PassSummary, PassError> {
        let started = tokio::time::Instant::now();
        let world = observe::observe(self).await?;
        let observed = tokio::time::Instant::now();
        let actions = reconciler::plan(&world, &self.config.policy);
        let mut summary = PassSummary {
            head_block: world.head_block,
            actions: actions.len(),
            observe_ms: millis(observed - started),
            ..PassSummary::default()
        };
        act::act(self, &world, actions, &mut summary).await?;
        summary.act_ms = millis(observed.elapsed());
        Ok(summary)
    }

    /// Runs passes until `shutdown` resolves: every `interval`, and at once when `wake` fires.
    /// Errors back off exponentially up to `backoff_max` and never end the loop.
    pub async fn run(self, wake: Arc<Notify>, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        // A new head starts a pass: what it confirmed is acted on without waiting for the timer.
        let watcher = tokio::spawn(watch_head(
            self.chain.clone(),
            wake.clone(),
            self.config.head_poll,
        ));
        if let Err(e) =
            resend::rebroadcast_all(self.store.as_ref(), &self.network, &self.chain, &self.fence)
                .await
        {
            tracing::warn!(error = %e, "start-up rebroadcast failed; passes will retry");
        }
        loop {
            let wait = if failures == 0 {
                self.config.interval
            } else {
                let exp = self
                    .config
                    .interval
                    .saturating_mul(1u32 << failures.min(10));
                exp.min(self.config.backoff_max)
            };
            crate::metrics::heartbeat();
            tokio::select! {
                () = &mut shutdown => break,
                () = wake.notified() => {}
                () = self.alpaca.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
            let started = std::time::Instant::now();
            // Shutdown during a pass lets it finish the action in progress and stop at the next
            // boundary (every action is durable on its own), instead of cutting it anywhere.
            let pass = self.pass();
            tokio::pin!(pass);
            let mut stopping = false;
            let outcome = tokio::select! {
                outcome = &mut pass => outcome,
                () = &mut shutdown => {
                    self.stop.set();
                    stopping = true;
                    pass.await
                }
            };
            self.passes.bump();
            let metrics = crate::metrics::metrics();
            metrics
                .pass_duration
                .observe(started.elapsed().as_secs_f64());
            metrics
                .passes
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: if outcome.is_ok() { "ok" } else { "failed" }.to_owned(),
                    reason: String::new(),
                })
                .inc();
            match outcome {
                Ok(summary) => {
                    failures = 0;
                    if summary.actions > 0 {
                        tracing::info!(
                            head = summary.head_block,
                            actions = summary.actions,
                            mints_sent = summary.mints_sent,
                            callbacks_submitted = summary.callbacks_submitted,
                            observe_ms = summary.observe_ms,
                            act_ms = summary.act_ms,
                            "pass"
                        );
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, failures, "pass failed; backing off");
                }
            }
            if stopping {
                tracing::info!("reconciler: stopped at an action boundary");
                break;
            }
        }
        watcher.abort();
    }
}
