//! Shared test harness: a real anvil from npm, deployed vaults, free loopback ports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use alloy::node_bindings::{Anvil, AnvilInstance};
use issuer::chain::{deploy, EthersSigner};
use std::ops::Deref;
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

/// A running anvil whose persisted states live in a directory of its own, deleted with it.
///
/// Past its in-memory history (a few hundred blocks) anvil writes old states to disk, by default
/// under `~/.foundry/anvil/tmp`, and a killed anvil (as every test's is) never deletes them: a
/// long run there left 2 GB per anvil until the disk filled. Fields drop in order: the process
/// is killed first, then its states are deleted.
pub struct LocalAnvil {
    instance: AnvilInstance,
    states: tempfile::TempDir,
}

impl LocalAnvil {
    /// Where this anvil persists its old states (`--cache-path`).
    pub fn states_dir(&self) -> &std::path::Path {
        self.states.path()
    }
}

impl Deref for LocalAnvil {
    type Target = AnvilInstance;

    fn deref(&self) -> &AnvilInstance {
        &self.instance
    }
}

/// An anvil on 127.0.0.1 (a free port unless `configure` sets one), killed when dropped.
pub fn anvil_with(configure: impl FnOnce(Anvil) -> Anvil) -> LocalAnvil {
    let states = tempfile::tempdir().unwrap();
    let builder = Anvil::at(anvil_bin())
        .arg("--host")
        .arg("127.0.0.1")
        .arg("--cache-path")
        .arg(states.path().as_os_str())
        .timeout(20_000);
    LocalAnvil {
        instance: configure(builder).spawn(),
        states,
    }
}

/// A fresh anvil on a free loopback port, killed when dropped. `block_time` None = automine.
pub fn anvil(block_time: Option<u64>) -> LocalAnvil {
    anvil_with(|builder| match block_time {
        Some(seconds) => builder.block_time(seconds),
        None => builder,
    })
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

pub mod capped_node;
pub mod etcd;
pub mod process;
pub mod remote;
pub mod stack;
