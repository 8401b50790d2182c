//! A whole local stack for end-to-end tests: anvil, a deployed vault, the Alpaca simulator, the
//! issuer's HTTP server and reconciler, all real and all on 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::{anvil, bot, deploy_vault, loopback_listener};
use alloy::primitives::{Address, U256};
use alloy::providers::{ProviderBuilder, RootProvider};
use issuer::alpaca::{BrokerClient, BrokerConfig, RetryPolicy};
use issuer::chain::{deploy::Deployed, Chain, Vault};
use issuer::cli::{LOCAL_API_KEY, LOCAL_OPERATOR_KEY};
use issuer::config::{parse_cidrs, Secret};
use issuer::http::{AlpacaAuth, HttpConfig};
use issuer::pass::{PassConfig, ReconcileLoop};
use issuer::sim::{Sim, SimConfig};
use issuer::store::{Asset, RedbStore, Store};
use reconciler::{ClientId, Network, Policy, Symbol};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const AP_WALLET: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
pub const SIM_ACCOUNT: &str = "issuer-test";
pub const SIM_KEY: &str = "sim-key";
pub const SIM_SECRET: &str = "sim-secret";

/// `issuer`'s flags for the simulator at `sim_url`: its base URL and the test account's id, key
/// and secret.
pub fn alpaca_flags(sim_url: &str) -> Vec<String> {
    [
        "--alpaca-base-url",
        sim_url,
        "--alpaca-account-id",
        SIM_ACCOUNT,
        "--alpaca-api-key",
        SIM_KEY,
        "--alpaca-api-secret",
        SIM_SECRET,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The chain, the vault and the simulator: what survives issuer restarts.
pub struct World {
    pub anvil: super::LocalAnvil,
    pub deployed: Deployed,
    pub dir: tempfile::TempDir,
    pub db_path: PathBuf,
    pub sim: Sim,
    pub sim_url: String,
    pub client_id: ClientId,
    pub ap_wallet: Address,
    sim_stop: watch::Sender<bool>,
}

fn stopper(rx: watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx;
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl World {
    /// `issuer report`'s flags for this world's one asset: its vault, AAPL, tAAPL and the block
    /// the vault was deployed in.
    pub fn vault_flags(&self) -> Vec<String> {
        vec![
            "--vault".into(),
            format!("{:#x}", self.deployed.vault),
            "--underlying".into(),
            "AAPL".into(),
            "--token".into(),
            "tAAPL".into(),
            "--deploy-block".into(),
            self.deployed.deploy_block.to_string(),
        ]
    }

    /// A pending mint request at Alpaca for `qty` AAPL on anvil to the AP wallet, under `trid`
    /// (and `irid` when the issuer's id is known), as the AP's client asks it.
    pub fn new_mint(&self, trid: &str, irid: Option<String>, qty: &str) -> issuer::sim::NewMint {
        issuer::sim::NewMint {
            tokenization_request_id: Some(trid.to_owned()),
            issuer_request_id: irid,
            qty: qty.to_owned(),
            underlying_symbol: "AAPL".into(),
            token_symbol: "tAAPL".into(),
            network: "anvil".into(),
            client: issuer::sim::SimClient::ClientExternalAccountId(self.client_id.to_string()),
            wallet_address: AP_WALLET.into(),
        }
    }

    /// anvil (automine when `block_time` is None), the AAPL vault recorded in a fresh store with one
    /// linked AP and its whitelisted wallet, and the simulator serving.
    pub async fn start(block_time: Option<u64>) -> World {
        let anvil = anvil(block_time);
        let deployed = deploy_vault(&anvil.endpoint()).await;
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("issuer.redb");
        let ap_wallet: Address = AP_WALLET.parse().unwrap();
        let client_id = {
            let store = RedbStore::open(&db_path).unwrap();
            store.put_asset(&asset(&deployed)).unwrap();
            let account = store.register_account("ap@example.com").unwrap();
            store.link_account("ap@example.com", "ALP-123").unwrap();
            assert!(store.add_wallet(&account.client_id, ap_wallet).unwrap());
            account.client_id
        };
        let sim = Sim::new(SimConfig {
            account_id: SIM_ACCOUNT.into(),
            api_key: SIM_KEY.into(),
            api_secret: SIM_SECRET.into(),
            seed: Some(7),
        });
        let listener = loopback_listener();
        let sim_url = format!("http://{}", listener.local_addr().unwrap());
        let (sim_stop, rx) = watch::channel(false);
        tokio::spawn(issuer::sim::serve(listener, sim.clone(), stopper(rx)));
        World {
            anvil,
            deployed,
            dir,
            db_path,
            sim,
            sim_url,
            client_id,
            ap_wallet,
            sim_stop,
        }
    }

    /// The cache is lost: the store file is deleted, and an operator re-adds the asset (it lives
    /// nowhere else) before the issuer restarts.
    pub fn lose_cache(&self) {
        std::fs::remove_file(&self.db_path).unwrap();
        RedbStore::open(&self.db_path)
            .unwrap()
            .put_asset(&asset(&self.deployed))
            .unwrap();
    }

    pub fn rpc(&self) -> String {
        self.anvil.endpoint()
    }

    pub async fn balance(&self, wallet: Address) -> U256 {
        let provider: RootProvider =
            ProviderBuilder::default().connect_http(self.rpc().parse().unwrap());
        Vault::new(self.deployed.vault, provider)
            .balanceOf(wallet)
            .call()
            .await
            .unwrap()
    }

    /// Number of `Deposit` logs on the vault tagged with `issuer_request_id`.
    pub async fn deposits_for(&self, issuer_request_id: &str) -> usize {
        let chain = Chain::connect(&self.rpc(), bot()).await.unwrap();
        let head = chain.head().await.unwrap();
        let (ours, _) = chain
            .scan_deposits(self.deployed.vault, 0, head)
            .await
            .unwrap();
        ours.iter()
            .filter(|d| d.issuer_request_id.as_str() == issuer_request_id)
            .count()
    }

    /// Plays Alpaca's side of a mint against `issuer_url`: issuance, then confirm (completed).
    pub async fn mint(&self, issuer_url: &str, trid: &str, qty: &str) -> Value {
        let client = json!({ "client_external_account_id": self.client_id.as_str() });
        self.mint_as(issuer_url, trid, qty, client).await
    }

    /// [`Self::mint`] naming the client as `client` (`{"client_account_id": "..."}` or
    /// `{"client_external_account_id": "..."}`).
    pub async fn mint_as(&self, issuer_url: &str, trid: &str, qty: &str, client: Value) -> Value {
        self.mint_as_to(issuer_url, trid, qty, client, AP_WALLET)
            .await
    }

    /// Plays Alpaca's side of each `(tokenization_request_id, wallet)` mint (qty 1) against the
    /// issuer's HTTP server alone, with no reconcile loop: the first pass of an issuer started
    /// afterwards finds them all confirmed at once, in this order.
    pub async fn confirm_before_any_pass(&self, mints: &[(&str, &str)]) {
        let store = RedbStore::open(&self.db_path).unwrap();
        let listener = loopback_listener();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, rx) = watch::channel(false);
        let shared: Arc<dyn Store> = Arc::new(store.clone());
        let serving = tokio::spawn(issuer::http::serve(
            listener,
            shared,
            Arc::new(tokio::sync::Notify::new()),
            http_config(),
            stopper(rx),
        ));
        for (trid, wallet) in mints {
            self.mint_to(&url, trid, "1", wallet).await;
        }
        let _ = stop.send(true);
        let _ = serving.await;
        store.close();
    }

    /// [`Self::mint`] into `wallet` (one of the AP's whitelisted wallets).
    pub async fn mint_to(&self, issuer_url: &str, trid: &str, qty: &str, wallet: &str) -> Value {
        let client = json!({ "client_external_account_id": self.client_id.as_str() });
        self.mint_as_to(issuer_url, trid, qty, client, wallet).await
    }

    async fn mint_as_to(
        &self,
        issuer_url: &str,
        trid: &str,
        qty: &str,
        client: Value,
        wallet: &str,
    ) -> Value {
        let body = json!({
            "issuer_url": issuer_url,
            "issuer_api_key": LOCAL_API_KEY,
            "tokenization_request_id": trid,
            "qty": qty,
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "network": "anvil",
            "client": client,
            "wallet_address": wallet,
        });
        let reply = reqwest::Client::new()
            .post(format!("{}/sim/mint", self.sim_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = reply.status();
        let value: Value = reply.json().await.unwrap();
        assert!(status.is_success(), "sim mint failed: {status} {value}");
        value
    }
}

pub fn asset(deployed: &Deployed) -> Asset {
    Asset {
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("anvil").unwrap(),
        vault: deployed.vault,
        receipt: deployed.receipt,
        authorizer: deployed.authorizer,
        deploy_block: deployed.deploy_block,
        frozen: false,
        mint_qty_max: None,
    }
}

pub fn http_config() -> HttpConfig {
    HttpConfig {
        alpaca_auth: AlpacaAuth::ApiKey(Secret::new(LOCAL_API_KEY)),
        alpaca_allow: parse_cidrs("127.0.0.1/32").unwrap(),
        operator_api_key: Secret::new(LOCAL_OPERATOR_KEY),
        operator_allow: parse_cidrs("127.0.0.1/32").unwrap(),
        body_limit_bytes: 64 * 1024,
        failed_auth_per_minute_max: 10,
        custody_account_id: "custody-test".into(),
        local_networks: vec![Network::parse("anvil").unwrap()],
        served_networks: vec![],
        issuer_addresses: vec![bot().address()],
    }
}

/// The issuer in this process: HTTP server and reconcile loop over the world's store.
pub struct Issuer {
    pub url: String,
    pub store: Arc<dyn Store>,
    /// The same store, to close its file when the issuer stops.
    file: RedbStore,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    passes: issuer::pass::PassCount,
}

impl Issuer {
    pub async fn start(world: &World, policy: Policy) -> Issuer {
        Self::start_with(world, policy, bot().into(), Duration::from_millis(200)).await
    }

    /// [`Issuer::start`] with passes every `interval` when nothing wakes the loop.
    pub async fn start_with_interval(world: &World, policy: Policy, interval: Duration) -> Issuer {
        Self::start_with(world, policy, bot().into(), interval).await
    }

    /// [`Self::start`] with the bot's key held by `signer` (a KMS or Fireblocks signer).
    pub async fn start_with_signer(
        world: &World,
        policy: Policy,
        signer: issuer::chain::BotSigner,
    ) -> Issuer {
        Self::start_with(world, policy, signer, Duration::from_millis(200)).await
    }

    /// [`Self::start_with_signer`] with passes on the shipped timer
    /// ([`issuer::serve::RECONCILE_INTERVAL_MS_DEFAULT`], not the tests' 200 ms): what the
    /// bench measures.
    pub async fn start_as_shipped(
        world: &World,
        policy: Policy,
        signer: issuer::chain::BotSigner,
    ) -> Issuer {
        let interval = Duration::from_millis(issuer::serve::RECONCILE_INTERVAL_MS_DEFAULT);
        Self::start_with(world, policy, signer, interval).await
    }

    /// [`Self::start`] reading and writing the chain through `rpc` (a node in front of anvil).
    pub async fn start_through(world: &World, rpc: &str, policy: Policy) -> Issuer {
        let interval = Duration::from_millis(200);
        Self::start_on(world, rpc, policy, bot().into(), interval).await
    }

    async fn start_with(
        world: &World,
        policy: Policy,
        signer: issuer::chain::BotSigner,
        interval: Duration,
    ) -> Issuer {
        Self::start_on(world, &world.rpc(), policy, signer, interval).await
    }

    async fn start_on(
        world: &World,
        rpc: &str,
        policy: Policy,
        signer: issuer::chain::BotSigner,
        interval: Duration,
    ) -> Issuer {
        let file = RedbStore::open(&world.db_path).unwrap();
        let store: Arc<dyn Store> = Arc::new(file.clone());
        let chain = Chain::connect(rpc, signer).await.unwrap();
        let broker = BrokerClient::new(BrokerConfig {
            base_url: world.sim_url.clone(),
            account_id: SIM_ACCOUNT.into(),
            api_key: SIM_KEY.into(),
            api_secret: SIM_SECRET.into(),
            retry: RetryPolicy::for_reconciler(),
        })
        .unwrap();
        let listener = loopback_listener();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let wake = Arc::new(tokio::sync::Notify::new());
        let (stop, rx) = watch::channel(false);
        let passes = issuer::pass::PassCount::default();
        let reconciler = ReconcileLoop {
            store: store.clone(),
            network: Network::parse("anvil").unwrap(),
            chain,
            broker,
            config: PassConfig {
                interval,
                head_poll: Duration::from_millis(50),
                backoff_max: Duration::from_secs(2),
                policy,
                crash_at: None,
                max_fee_per_gas_wei: 500_000_000_000,
            },
            polls: issuer::pass::PollSchedule::default(),
            alpaca: issuer::pass::AlpacaWork::default(),
            stop: issuer::pass::StopFlag::default(),
            clock: issuer::clock::system(),
            passes: passes.clone(),
            fence: issuer::ha::Fence::single(),
            gas_shapes: issuer::pass::GasShapes::default(),
            resent: issuer::pass::Resent::default(),
        };
        let looping = tokio::spawn(reconciler.run(wake.clone(), stopper(rx.clone())));
        let serving = tokio::spawn({
            let store = store.clone();
            let rx = rx.clone();
            async move {
                let _ =
                    issuer::http::serve(listener, store, wake, http_config(), stopper(rx)).await;
            }
        });
        Issuer {
            url,
            store,
            file,
            stop,
            tasks: vec![looping, serving],
            passes,
        }
    }

    /// Waits until the loop has run `n` more whole passes: "nothing more happened" is then
    /// shown by what those passes did not do, not by a fixed sleep.
    pub async fn more_passes(&self, n: u64) {
        tokio::time::timeout(Duration::from_secs(60), self.passes.more(n))
            .await
            .expect("the loop keeps passing");
    }

    /// Stops both tasks and waits for them, releasing the redb file.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.file.close();
    }
}

/// Polls `check` every 100 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {limit:?} waiting for: {what}");
}

impl World {
    /// Makes `bot` able to run as the issuer's bot: 10 ETH for gas from anvil's first account,
    /// and DEPOSIT and WITHDRAW on the vault's authorizer granted by its admin.
    pub async fn enlist(&self, bot: Address) {
        use alloy::providers::Provider;
        let admin = self.as_key(super::BOT_KEY);
        let funded = admin
            .send_transaction(
                alloy::rpc::types::TransactionRequest::default()
                    .to(bot)
                    .value(U256::from(10u128 * 1_000_000_000_000_000_000)),
            )
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(funded.status());
        let authorizer = issuer::chain::Authorizer::new(self.deployed.authorizer, admin);
        for role in [
            authorizer.DEPOSIT().call().await.unwrap(),
            authorizer.WITHDRAW().call().await.unwrap(),
        ] {
            let granted = authorizer
                .grantRole(role, bot)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert!(granted.status());
        }
    }

    /// A provider signing as `key` (an anvil dev key).
    pub fn as_key(&self, key: &str) -> impl alloy::providers::Provider + Clone {
        let signer = issuer::chain::EthersSigner::from_private_key(key).unwrap();
        ProviderBuilder::new()
            .wallet(alloy::network::EthereumWallet::new(signer))
            .connect_http(self.rpc().parse().unwrap())
    }

    /// `holder` (by key) sends `units` shares to `to` with a plain ERC-20 transfer; returns the tx hash.
    pub async fn transfer(&self, key: &str, to: Address, units: U256) -> alloy::primitives::B256 {
        let vault = Vault::new(self.deployed.vault, self.as_key(key));
        let receipt = vault
            .transfer(to, units)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "transfer reverted");
        receipt.transaction_hash
    }

    /// Redeem requests the simulator holds for our `issuer_request_id`.
    pub fn redeem_requests_for(&self, issuer_request_id: &str) -> Vec<issuer::sim::SimRequest> {
        self.sim
            .snapshot()
            .requests
            .into_iter()
            .filter(|r| {
                r.issuer_request_id.as_deref() == Some(issuer_request_id)
                    && r.kind == issuer::alpaca::RequestType::Redeem
            })
            .collect()
    }

    /// The bot's receipt balance of `id`.
    pub async fn bot_receipt(&self, id: u64) -> U256 {
        let provider: RootProvider =
            ProviderBuilder::default().connect_http(self.rpc().parse().unwrap());
        issuer::chain::Receipt::new(self.deployed.receipt, provider)
            .balanceOf(bot().address(), U256::from(id))
            .call()
            .await
            .unwrap()
    }

    pub async fn total_supply(&self) -> U256 {
        let provider: RootProvider =
            ProviderBuilder::default().connect_http(self.rpc().parse().unwrap());
        Vault::new(self.deployed.vault, provider)
            .totalSupply()
            .call()
            .await
            .unwrap()
    }

    /// Mints through the simulator and waits until the callback is acknowledged.
    pub async fn minted(&self, issuer_url: &str, trid: &str, qty: &str) {
        self.mint(issuer_url, trid, qty).await;
        eventually(Duration::from_secs(30), "mint callback", || async {
            self.sim.mint_callback_count(trid) >= 1
        })
        .await;
    }
}
