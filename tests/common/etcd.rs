//! A real etcd (Debian's etcd-server, or `ETCD_BIN`) on loopback ports of its own, over a data
//! directory the test owns: for the HA tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::stack::eventually;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One etcd member, killed when dropped, restartable on the same data directory.
pub struct Etcd {
    child: Option<Child>,
    data: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd over `data` (created if missing); [`Etcd::wait_up`] waits until it answers.
    pub fn start(data: &Path) -> Etcd {
        let mut etcd = Etcd {
            child: None,
            data: data.to_path_buf(),
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.spawn();
        etcd
    }

    /// Starts the process again on the same ports and data directory.
    pub fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(etcd_bin())
            .args(["--name", "drill"])
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("drill={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd: install Debian's etcd-server (or set ETCD_BIN)");
        self.child = Some(child);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub async fn wait_up(&self) {
        eventually(Duration::from_secs(30), "etcd answers", || async {
            match etcd_client::Client::connect([self.endpoint()], None).await {
                Ok(mut client) => client.status().await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn etcd_bin() -> PathBuf {
    std::env::var("ETCD_BIN").map_or_else(|_| PathBuf::from("/usr/bin/etcd"), PathBuf::from)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    super::loopback_listener().local_addr().unwrap().port()
}
