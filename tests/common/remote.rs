//! Remote signers for tests: moto's KMS server (a PyPI package the test starts, with the DIGEST
//! patch in `tests/support/kms_emulator.py`) and our Fireblocks simulator, both on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use issuer::chain::fireblocks::{FireblocksSettings, FireblocksSigner};
use issuer::chain::kms::KmsSigner;
use issuer::config::Secret;
use issuer::fireblocks_sim::{FireblocksSim, FireblocksSimConfig};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Set to `1` to skip the tests that need the KMS emulator (moto) instead of failing.
pub const SKIP_KMS_ENV: &str = "ISSUER_SKIP_KMS_TESTS";
pub const FIREBLOCKS_API_KEY: &str = "fb-test-api-key-2b0c2f7e";
pub const KMS_REGION: &str = "us-east-1";

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/fireblocks")
        .join(name)
}

/// Whether KMS tests are skipped by request; otherwise a missing moto fails loudly.
pub fn skip_kms() -> bool {
    if std::env::var(SKIP_KMS_ENV).is_ok_and(|v| v == "1") {
        eprintln!("skipped: {SKIP_KMS_ENV}=1");
        return true;
    }
    false
}

/// moto's KMS server on a free loopback port; killed when dropped.
pub struct KmsEmulator {
    child: Child,
    pub url: String,
}

impl Drop for KmsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl KmsEmulator {
    /// Whether python3 can import moto's server.
    pub fn available() -> bool {
        Command::new("python3")
            .args(["-c", "import moto.server, cryptography"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts it, or panics with how to install moto.
    pub async fn start() -> KmsEmulator {
        assert!(
            Self::available(),
            "the KMS tests need moto's server: python3 -m pip install 'moto[server]' \
             (or set {SKIP_KMS_ENV}=1 to skip them)"
        );
        let port = super::loopback_listener().local_addr().unwrap().port();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/kms_emulator.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the KMS emulator did not listen on {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        KmsEmulator { child, url }
    }

    /// A KMS client for the emulator with throwaway static credentials.
    pub fn client(&self) -> aws_sdk_kms::Client {
        let config = aws_sdk_kms::config::Builder::new()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(KMS_REGION))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .endpoint_url(&self.url)
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// A fresh secp256k1 signing key; its id.
    pub async fn create_key(&self) -> String {
        let created = self
            .client()
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::EccSecgP256K1)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .send()
            .await
            .unwrap();
        created.key_metadata().unwrap().key_id().to_owned()
    }

    pub async fn signer(&self, key_id: &str) -> KmsSigner {
        KmsSigner::with_client(self.client(), key_id).await.unwrap()
    }
}

/// Our Fireblocks simulator on a free loopback port, holding a fresh secp256k1 key.
pub struct FireblocksHarness {
    pub sim: FireblocksSim,
    pub url: String,
    stop: watch::Sender<bool>,
}

impl Drop for FireblocksHarness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl FireblocksHarness {
    pub fn start() -> FireblocksHarness {
        let signing_key = format!("0x{}", hex::encode(rand::random::<[u8; 32]>()));
        let sim = FireblocksSim::new(FireblocksSimConfig {
            api_key: FIREBLOCKS_API_KEY.into(),
            public_key_pem: std::fs::read_to_string(fixture("api_user_test.pub")).unwrap(),
            signing_key,
            vault_account_id: "7".into(),
            asset_id: "ETH_TEST".into(),
        })
        .unwrap();
        let listener = super::loopback_listener();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, mut rx) = watch::channel(false);
        tokio::spawn(issuer::fireblocks_sim::serve(
            listener,
            sim.clone(),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
        FireblocksHarness { sim, url, stop }
    }

    /// Settings of a signer for this simulator, signing JWTs with `key_file`.
    pub fn settings_with(&self, key_file: &str, sign_timeout: Duration) -> FireblocksSettings {
        FireblocksSettings {
            api_url: self.url.clone(),
            api_key: Secret::new(FIREBLOCKS_API_KEY),
            private_key_pem: Secret::new(std::fs::read_to_string(fixture(key_file)).unwrap()),
            vault_account_id: "7".into(),
            asset_id: "ETH_TEST".into(),
            sign_timeout,
        }
    }

    pub fn settings(&self) -> FireblocksSettings {
        self.settings_with("api_user_test.key", Duration::from_secs(10))
    }

    pub async fn signer(&self) -> FireblocksSigner {
        FireblocksSigner::connect(self.settings()).await.unwrap()
    }

    /// The `issuer serve` arguments that make the real binary sign through this simulator.
    pub fn serve_args(&self) -> Vec<String> {
        [
            "--signer",
            "fireblocks",
            "--fireblocks-api-url",
            &self.url,
            "--fireblocks-private-key-path",
            fixture("api_user_test.key").to_str().unwrap(),
            "--fireblocks-vault-account-id",
            "7",
            "--fireblocks-asset-id",
            "ETH_TEST",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}
