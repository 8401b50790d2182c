//! The decision core of the issuer, with no I/O: domain types, quantities, the receipt tag, and
//! `plan`, which turns observations and intents into the actions that converge them.
//!
//! The shell (`src/` of the `issuer` package) observes the chain and Alpaca, calls [`plan`], acts
//! and records. Nothing in this crate can touch a network, a disk or a clock: its Cargo.toml has
//! no dependency that could.

pub mod audit;
pub mod ids;
pub mod meta;
pub mod mint;
pub mod pacing;
pub mod plan;
pub mod qty;
pub mod redeem;
pub mod refusal;

pub use ids::{
    parse_address, AlpacaAccountId, ClientId, ClientRef, IdError, IssuerRequestId, Network, Symbol,
    TokenizationRequestId,
};
pub use mint::{Callback, Journal, MintIntent, ObservedDeposit, TrackedTx, TxPurpose, TxStatus};
pub use plan::{plan, Action, MintItem, Policy, Problem, World};
pub use qty::{Qty, QtyError};
pub use redeem::{
    AlpacaView, Anomaly, JournalStatus, ObservedBurn, ReceiptBalance, Redemption, RedemptionState,
};
