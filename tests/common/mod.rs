//! Shared test harness: a real anvil from npm, deployed vaults, free loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use alloy::node_bindings::{Anvil, AnvilInstance};
use issuer::chain::{deploy, EthersSigner};
use std::path::PathBuf;

/// anvil's first dev key: the bot in tests.
pub const BOT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// anvil's second dev key: somebody without roles.
pub const STRANGER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

/// The anvil binary shipped by npm `@foundry-rs/anvil-linux-amd64` (installed by `just setup`),
/// or `ANVIL_BIN`.
pub fn anvil_bin() -> PathBuf {
    if let Ok(path) = std::env::var("ANVIL_BIN") {
        return PathBuf::from(path);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(
        path.exists(),
        "anvil not found at {}: run `just setup`",
        path.display()
    );
    path
}

/// A fresh anvil on a free loopback port, killed when dropped. `block_time` None = automine.
pub fn anvil(block_time: Option<u64>) -> AnvilInstance {
    let mut builder = Anvil::at(anvil_bin())
        .arg("--host")
        .arg("127.0.0.1")
        .timeout(20_000);
    if let Some(seconds) = block_time {
        builder = builder.block_time(seconds);
    }
    builder.spawn()
}

pub fn bot() -> EthersSigner {
    EthersSigner::from_private_key(BOT_KEY).unwrap()
}

pub fn stranger() -> EthersSigner {
    EthersSigner::from_private_key(STRANGER_KEY).unwrap()
}

/// Deploys one asset's contracts with the bot as admin, certified for a year.
pub async fn deploy_vault(rpc: &str) -> deploy::Deployed {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 365 * 86_400;
    deploy::deploy(rpc, &bot().into(), "tAAPL tokenized AAPL", "tAAPL", until)
        .await
        .unwrap()
}

/// A free port on 127.0.0.1 (bound then released).
pub fn loopback_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

pub mod etcd;
pub mod process;
pub mod remote;
pub mod stack;
