//! The issuer as a real process (`issuer serve`) over a test [`World`], for crash and chaos
//! tests: killed for real, restarted on the same redb file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::stack::{eventually, World, SIM_ACCOUNT, SIM_KEY, SIM_SECRET};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `issuer serve`; SIGKILLed when dropped.
pub struct Process {
    pub child: Child,
    pub url: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `issuer serve` on a free loopback port; `crash_at` arms `ISSUER_CRASH_AT`.
pub fn spawn_issuer(world: &World, crash_at: Option<&str>) -> Process {
    spawn_issuer_with(world, crash_at, &[], &[])
}

/// [`spawn_issuer`] with extra arguments and environment (another signer, say).
pub fn spawn_issuer_with(
    world: &World,
    crash_at: Option<&str>,
    args: &[String],
    envs: &[(&str, &str)],
) -> Process {
    let port = super::loopback_listener().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_issuer"));
    cmd.arg("serve")
        .args(["--db", world.db_path.to_str().unwrap()])
        .args(["--rpc-url", &world.rpc()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--alpaca-base-url", &world.sim_url])
        .args(["--alpaca-account-id", SIM_ACCOUNT])
        .args(["--alpaca-api-key", SIM_KEY])
        .args(["--alpaca-api-secret", SIM_SECRET])
        .args(["--reconcile-interval-ms", "150"])
        .env_remove("ISSUER_CRASH_AT")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(point) = crash_at {
        cmd.env("ISSUER_CRASH_AT", point);
    }
    cmd.args(args).envs(envs.iter().copied());
    let child = cmd.spawn().unwrap();
    Process {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// Waits until the process answers `/health`.
pub async fn wait_healthy(process: &Process) {
    let url = format!("{}/health", process.url);
    eventually(Duration::from_secs(30), "issuer /health", || {
        let url = url.clone();
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
}

impl Process {
    /// Passes the process has run, from its `/metrics`.
    pub async fn passes(&self) -> u64 {
        let Ok(answer) = reqwest::get(format!("{}/metrics", self.url)).await else {
            return 0;
        };
        let text = answer.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with("issuer_passes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.split('.').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until the process has run `n` more whole passes.
    pub async fn more_passes(&self, n: u64) {
        let target = self.passes().await + n;
        let what = format!("{n} more passes");
        let process = self;
        eventually(Duration::from_secs(60), &what, || async move {
            process.passes().await >= target
        })
        .await;
    }
}
