//! The Alpaca Broker API client: the calls the issuer makes to Alpaca, behind the [`Broker`] trait.
//!
//! - [`wire`]: the JSON bodies as Alpaca spells them.
//! - [`BrokerClient`]: reqwest, HTTP Basic auth, per-attempt timeout and the [`RetryPolicy`].
//! - [`BrokerError`]: everything that can go wrong at this boundary.
//!
//! Tests and the demo point the client at the simulator in [`crate::sim`].

mod client;
mod error;
mod retry;
pub mod wire;

use reconciler::ids::{IssuerRequestId, TokenizationRequestId};
use std::future::Future;

pub use client::{
    Answer, BrokerClient, BrokerConfig, Exchange, Transport, IDEMPOTENCY_KEY_LEN_MAX,
};
pub use error::BrokerError;
pub use retry::{AttemptFailure, RetryPolicy};
pub use wire::{
    ApiError, MintCallback, RedeemRequest, RequestFilter, RequestStatus, RequestType,
    TokenizationRequest,
};

/// What the issuer needs from Alpaca. Small on purpose, so a faulty or crashing double is a short
/// test type; [`BrokerClient`] is the real one.
pub trait Broker: Send + Sync {
    /// Tells Alpaca the tokens of a mint are on chain. `Ok` only on a 200. 5xx and 429 are retried;
    /// a lost answer is returned as [`BrokerError::Transport`] at once, for the caller to ask Alpaca
    /// whether it arrived before sending again.
    fn mint_callback(
        &self,
        callback: &MintCallback,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Asks Alpaca to journal shares back for a redemption. The same `idempotency_key` and body
    /// give the same answer; every final refusal (an `issuer_request_id` already used among
    /// them) is [`BrokerError::Status`] with Alpaca's code and message.
    fn redeem(
        &self,
        request: &RedeemRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<TokenizationRequest, BrokerError>> + Send;

    /// One request by Alpaca's id; `None` on 404 (which can be transient right after creation).
    fn request(
        &self,
        id: &TokenizationRequestId,
    ) -> impl Future<Output = Result<Option<TokenizationRequest>, BrokerError>> + Send;

    /// One request by our id: the recovery lookup after a lost redeem answer. `None` on 404.
    fn request_by_issuer_id(
        &self,
        id: &IssuerRequestId,
    ) -> impl Future<Output = Result<Option<TokenizationRequest>, BrokerError>> + Send;

    /// Requests matching the filter. Old requests can drop out of this list at Alpaca.
    fn list_requests(
        &self,
        filter: &RequestFilter,
    ) -> impl Future<Output = Result<Vec<TokenizationRequest>, BrokerError>> + Send;
}
