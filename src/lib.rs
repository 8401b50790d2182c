//! # issuer
//!
//! The Issuer side of Alpaca's Instant Tokenization Network: Alpaca's requests arrive as intents,
//! a level-triggered reconciler turns them into mints and burns on an OffchainAssetReceiptVault and
//! tells Alpaca what happened. The chain and Alpaca are the sources of truth; redb is our cache.
//!
//! ## Layout
//!
//! - [`cli`]: subcommands and their wiring; `main.rs` only parses and calls [`cli::run`].
//! - [`settings`]: the chain and Alpaca settings several subcommands share.
//! - [`networks`]: the networks one issuer serves (RPC, chain id, confirmations, fees, signer).
//! - [`serve`]: `issuer serve`: settings checked before start, the server and loop wiring.
//! - [`clock`]: the one place wall-clock time is read.
//! - [`config`]: setting types and checks: secrets redacted in `Debug`, CIDR lists, URL checks.
//! - [`store`]: the redb file behind the [`store::Store`] trait: schema version, typed tables.
//! - [`chain`]: the vault bindings, the bot's signer (local key, keystore, AWS KMS, Fireblocks),
//!   deployment, log scans and our transactions.
//! - [`alpaca`]: the Broker API client (reqwest) behind the [`alpaca::Broker`] trait, with retries.
//! - [`http`]: the tide server Alpaca and operators call; handlers validate and record intents.
//! - [`metrics`]: the Prometheus registry `/metrics` serves, recorded into by every part.
//! - [`ha`]: HA mode: leadership, the fence and the shared facts in etcd (off by default).
//! - [`pass`]: the reconcile loop: observe, call [`reconciler::plan`], act, record.
//! - [`sim`]: the Alpaca simulator, a real HTTP server speaking the Broker API, with faults.
//! - [`fireblocks_sim`]: a Fireblocks simulator (raw signing, JWT auth checked), with faults.
//! - [`report`]: auditor reports rendered from the chain and Alpaca.
//! - [`telemetry`]: tracing to stderr, human or JSON.

pub mod alpaca;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod fireblocks_sim;
pub mod ha;
pub mod http;
pub mod metrics;
pub mod networks;
pub mod pass;
pub mod report;
pub mod serve;
pub mod settings;
pub mod sim;
pub mod store;
pub mod telemetry;
