//! The Alpaca simulator: a real HTTP server (tide) speaking the Broker API the issuer calls, with
//! switchable faults, and able to play Alpaca's side of a mint against the issuer's endpoints.
//!
//! - [`serve`]: runs it on a listener the caller bound, until a shutdown future resolves.
//! - [`Sim`]: the shared state handle; tests inspect and steer it directly or over `/sim/...`.
//! - [`SimArgs`] / [`run`]: the `issuer alpaca-sim` command line (serve, mint, state).
//!
//! Broker API: `/v1/accounts/:account_id/tokenization/...` with HTTP Basic auth.
//! Control, no auth, loopback callers only: `GET /sim/state`, `GET|POST /sim/faults`,
//! `POST /sim/reset`, `POST /sim/mint`, `POST /sim/mint-request`,
//! `POST /sim/requests/:id/complete`, `POST /sim/requests/:id/reject`.

mod cli;
mod faults;
mod mint;
mod server;
mod state;

use std::sync::{Arc, Mutex, PoisonError};

pub use cli::{run, MintArgs, ServeArgs, SimArgs, SimCommand, StateArgs};
pub use mint::{Confirm, MintScript};
pub use server::serve;
pub use state::{
    Faults, FaultsPatch, NewMint, PendingTxHash, ReceivedMintCallback, ReceivedRedeemCall,
    RedeemOutcome, Refusal, SimClient, SimConfig, SimRequest, SimSnapshot, IDEMPOTENCY_KEY_LEN_MAX,
};

use crate::alpaca::wire::RequestStatus;
use state::State;

/// A cheap-to-clone handle on the simulator's state, shared by the server and the test holding it.
///
/// A std `Mutex`, not an async one: every critical section is a few map operations with no
/// `.await` inside, so the lock is never held across a suspension point and never blocks an
/// executor thread for long (the reasoning of mini-redis's `Db`). A poisoned lock is entered
/// anyway: the state is plain data, each mutation small, and a simulator that keeps answering is
/// more useful to a failing test than one that panics too.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl Sim {
    pub fn new(config: SimConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(State::new(config))),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Everything the simulator knows (what `GET /sim/state` answers).
    pub fn snapshot(&self) -> SimSnapshot {
        self.with(|state| state.snapshot())
    }

    /// `callback/mint` calls answered 200 so far: a cheap poll (no copy of the state) for a
    /// caller waiting for a run's callbacks.
    pub fn mint_callbacks_accepted(&self) -> usize {
        self.with(|state| state.mint_callbacks_accepted())
    }

    /// One recorded request by Alpaca's id, without counting as a poll.
    pub fn request(&self, tokenization_request_id: &str) -> Option<SimRequest> {
        self.with(|state| state.request(tokenization_request_id).cloned())
    }

    /// `callback/mint` calls received for this request, answered or refused.
    pub fn mint_callback_count(&self, tokenization_request_id: &str) -> u64 {
        self.snapshot()
            .mint_callback_counts
            .get(tokenization_request_id)
            .copied()
            .unwrap_or(0)
    }

    /// Broker API hits on a route (`"POST callback/redeem"`, `"GET requests/{id}"`,
    /// `"GET requests:by_issuer_request_id"`, `"GET requests"`, `"POST callback/mint"`).
    pub fn hits(&self, route: &str) -> u64 {
        self.snapshot().hits.get(route).copied().unwrap_or(0)
    }

    pub fn faults(&self) -> Faults {
        self.with(|state| state.faults.clone())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.with(|state| state.faults = faults);
    }

    /// Changes only the fields given; refuses rates outside 0..=1.
    pub fn patch_faults(&self, patch: &FaultsPatch) -> Result<Faults, String> {
        self.with(|state| {
            let faults = state.faults.patched(patch)?;
            state.faults = faults.clone();
            Ok(faults)
        })
    }

    /// Records a pending mint request, as Alpaca does when an AP asks to mint, without calling the
    /// issuer. Refuses an id already in use.
    pub fn add_mint_request(&self, mint: NewMint) -> Result<SimRequest, String> {
        self.with(|state| state.add_mint(mint))
    }

    /// Completes a pending request by hand (the `manual` journal outcome).
    pub fn complete(&self, tokenization_request_id: &str) -> Result<SimRequest, String> {
        self.settle(tokenization_request_id, RequestStatus::Completed)
    }

    /// Rejects a pending request by hand.
    pub fn reject(&self, tokenization_request_id: &str) -> Result<SimRequest, String> {
        self.settle(tokenization_request_id, RequestStatus::Rejected)
    }

    fn settle(&self, id: &str, status: RequestStatus) -> Result<SimRequest, String> {
        self.with(|state| {
            let reply = state.settle(id, status);
            if reply.status == 200 {
                state
                    .request(id)
                    .cloned()
                    .ok_or_else(|| format!("request {id} vanished"))
            } else {
                Err(reply.body.to_string())
            }
        })
    }

    /// Forgets all requests, calls, hits and faults.
    pub fn reset(&self) {
        self.with(State::reset);
    }
}

/// The simulator as a [`crate::alpaca::Transport`]: the Broker API in the same process, with its
/// faults (latency on tokio's clock, 5xx, 429, answers lost after the call took effect), for
/// [`crate::alpaca::BrokerClient::with_transport`] in tests that run under a paused clock.
#[derive(Debug, Clone)]
pub struct SimTransport {
    pub sim: Sim,
}

#[async_trait::async_trait]
impl crate::alpaca::Transport for SimTransport {
    async fn exchange(
        &self,
        call: &crate::alpaca::Exchange<'_>,
    ) -> Result<crate::alpaca::Answer, String> {
        let route = server::Route::parse(call.method.as_str(), call.path);
        let (latency_ms, injected) = server::before_call(&self.sim, &route);
        if latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(latency_ms)).await;
        }
        let reply = if let Some(reply) = injected {
            reply
        } else {
            let query: Vec<(String, String)> = call
                .query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let reply = server::serve_call(
                &self.sim,
                &route,
                call.idempotency_key,
                &query,
                call.body.unwrap_or_default(),
            );
            if self.sim.with(state::State::roll_drop) {
                return Err("simulated dropped connection".into());
            }
            reply
        };
        Ok(crate::alpaca::Answer {
            status: reqwest::StatusCode::from_u16(reply.status)
                .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
            retry_after: reply.retry_after_secs.map(std::time::Duration::from_secs),
            body: reply.body.to_string().into_bytes(),
        })
    }
}
