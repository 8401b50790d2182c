//! Several networks in one issuer (issue 14), end to end: two real anvils with different chain
//! ids (the vault at the same address on both, as the same deployer and nonce give), the
//! Alpaca simulator as an HTTP server, and `issuer serve` as a real process configured with
//! `--networks`. Guards: mints and redemptions on both networks at once, each once on its own
//! chain; one network's RPC stalled leaves the other's mint latency as it was; a reorg on one
//! network is re-observed there and changes nothing on the other; a deleted cache neither mints
//! nor calls back twice on either network; a wrong chain id refuses to start; `issuer report`
//! audits both networks (a section each, a total per underlying) and `--network` picks one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{ProviderBuilder, RootProvider};
use common::process::{wait_healthy, Process};
use common::stack::{alpaca_flags, eventually, AP_WALLET, SIM_ACCOUNT, SIM_KEY, SIM_SECRET};
use common::{anvil_with, bot, deploy_vault, loopback_listener, LocalAnvil, STRANGER_KEY};
use issuer::chain::deploy::Deployed;
use issuer::chain::{Chain, Vault};
use issuer::cli::LOCAL_API_KEY;
use issuer::sim::{Sim, SimConfig};
use issuer::store::{Asset, RedbStore, Store};
use reconciler::{ClientId, Network, Symbol};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const E18: u128 = 1_000_000_000_000_000_000;

/// One network: its anvil and the vault deployed on it.
struct Net {
    name: &'static str,
    chain_id: u64,
    anvil: LocalAnvil,
    deployed: Deployed,
}

impl Net {
    async fn start(name: &'static str, chain_id: u64) -> Net {
        let anvil = anvil_with(|builder| builder.chain_id(chain_id));
        let deployed = deploy_vault(&anvil.endpoint()).await;
        Net {
            name,
            chain_id,
            anvil,
            deployed,
        }
    }

    fn rpc(&self) -> String {
        self.anvil.endpoint()
    }

    fn asset(&self) -> Asset {
        Asset {
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: Network::parse(self.name).unwrap(),
            vault: self.deployed.vault,
            receipt: self.deployed.receipt,
            authorizer: self.deployed.authorizer,
            deploy_block: self.deployed.deploy_block,
            frozen: false,
            mint_qty_max: None,
        }
    }

    async fn balance(&self, wallet: Address) -> U256 {
        let provider: RootProvider =
            ProviderBuilder::default().connect_http(self.rpc().parse().unwrap());
        Vault::new(self.deployed.vault, provider)
            .balanceOf(wallet)
            .call()
            .await
            .unwrap()
    }

    async fn supply(&self) -> U256 {
        let provider: RootProvider =
            ProviderBuilder::default().connect_http(self.rpc().parse().unwrap());
        Vault::new(self.deployed.vault, provider)
            .totalSupply()
            .call()
            .await
            .unwrap()
    }

    /// Tagged deposits for `irid` on this chain.
    async fn deposits_for(&self, irid: &str) -> usize {
        let chain = Chain::connect(&self.rpc(), bot()).await.unwrap();
        let head = chain.head().await.unwrap();
        let (ours, _) = chain
            .scan_deposits(self.deployed.vault, 0, head)
            .await
            .unwrap();
        ours.iter()
            .filter(|d| d.issuer_request_id.as_str() == irid)
            .count()
    }

    /// The AP sends `units` shares to the bot on this chain; the transaction's hash.
    async fn send_back(&self, units: U256) -> B256 {
        let signer = issuer::chain::EthersSigner::from_private_key(STRANGER_KEY).unwrap();
        let provider = ProviderBuilder::new()
            .wallet(alloy::network::EthereumWallet::new(signer))
            .connect_http(self.rpc().parse().unwrap());
        let receipt = Vault::new(self.deployed.vault, provider)
            .transfer(bot().address(), units)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status(), "transfer reverted");
        receipt.transaction_hash
    }

    async fn rpc_call(&self, method: &str, params: Value) -> Value {
        let answer: Value = reqwest::Client::new()
            .post(self.rpc())
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// SIGSTOP / SIGCONT the anvil: its RPC accepts connections and never answers (a stalled
    /// node, worse for a client than a refused connection).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.anvil.child().id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Two networks, one store, the simulator.
struct Two {
    base: Net,
    eth: Net,
    _dir: tempfile::TempDir,
    db_path: PathBuf,
    sim: Sim,
    sim_url: String,
    client_id: ClientId,
    _sim_stop: watch::Sender<bool>,
}

impl Two {
    async fn start() -> Two {
        let (base, eth) = tokio::join!(
            Net::start("base", 84_532),
            Net::start("ethereum", 11_155_111)
        );
        assert_eq!(
            base.deployed.vault, eth.deployed.vault,
            "the same deployer and nonce: the same vault address on both chains"
        );
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("issuer.redb");
        let client_id = Self::seed_store(&db_path, &[&base, &eth]);
        let sim = Sim::new(SimConfig {
            account_id: SIM_ACCOUNT.into(),
            api_key: SIM_KEY.into(),
            api_secret: SIM_SECRET.into(),
            seed: Some(7),
        });
        let listener = loopback_listener();
        let sim_url = format!("http://{}", listener.local_addr().unwrap());
        let (sim_stop, rx) = watch::channel(false);
        tokio::spawn(issuer::sim::serve(listener, sim.clone(), async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        }));
        Two {
            base,
            eth,
            _dir: dir,
            db_path,
            sim,
            sim_url,
            client_id,
            _sim_stop: sim_stop,
        }
    }

    /// The assets (they live nowhere else), one linked AP and its wallet.
    fn seed_store(path: &std::path::Path, nets: &[&Net]) -> ClientId {
        let store = RedbStore::open(path).unwrap();
        for net in nets {
            store.put_asset(&net.asset()).unwrap();
        }
        let account = store.register_account("ap@example.com").unwrap();
        store.link_account("ap@example.com", "ALP-123").unwrap();
        assert!(store
            .add_wallet(&account.client_id, AP_WALLET.parse().unwrap())
            .unwrap());
        store.close();
        account.client_id
    }

    fn networks_setting(&self, base_confirmations: u64) -> String {
        format!(
            "name=base,rpc={},chain-id={},confirmations={base_confirmations};name=ethereum,rpc={},chain-id={}",
            self.base.rpc(),
            self.base.chain_id,
            self.eth.rpc(),
            self.eth.chain_id
        )
    }

    /// `issuer serve` with both networks.
    fn spawn_issuer(&self, networks: &str) -> Process {
        let port = loopback_listener().local_addr().unwrap().port();
        let child = Command::new(env!("CARGO_BIN_EXE_issuer"))
            .arg("serve")
            .args(["--db", self.db_path.to_str().unwrap()])
            .args(["--networks", networks])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--alpaca-base-url", &self.sim_url])
            .args(["--alpaca-account-id", SIM_ACCOUNT])
            .args(["--alpaca-api-key", SIM_KEY])
            .args(["--alpaca-api-secret", SIM_SECRET])
            .args(["--reconcile-interval-ms", "150"])
            .env_remove("ISSUER_CRASH_AT")
            .env_remove("RPC_URL")
            .env_remove("ISSUER_NETWORK")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Process {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Plays Alpaca's side of a mint on `net`: issuance, then confirm; the issuer_request_id.
    async fn mint(&self, issuer_url: &str, net: &Net, trid: &str, qty: &str) -> String {
        let body = json!({
            "issuer_url": issuer_url,
            "issuer_api_key": LOCAL_API_KEY,
            "tokenization_request_id": trid,
            "qty": qty,
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "network": net.name,
            "client": { "client_external_account_id": self.client_id.as_str() },
            "wallet_address": AP_WALLET,
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
        value["issuer_request_id"].as_str().unwrap().to_owned()
    }

    /// Mints on `net` and waits for its callback; the time from Alpaca's confirm to it.
    async fn timed_mint(&self, issuer_url: &str, net: &Net, trid: &str) -> Duration {
        let started = Instant::now();
        self.mint(issuer_url, net, trid, "1").await;
        let what = format!("{trid} called back");
        eventually(Duration::from_secs(30), &what, || async {
            self.sim.mint_callback_count(trid) >= 1
        })
        .await;
        started.elapsed()
    }
}

impl Two {
    /// Runs `issuer report` over both networks with `extra` flags; (exit code, stdout).
    async fn report(&self, issuer_url: &str, extra: &[&str]) -> (i32, String) {
        let mut args: Vec<String> = vec![
            "report".into(),
            "--networks".into(),
            self.networks_setting(1),
            "--db".into(),
            self.db_path.to_str().unwrap().into(),
            "--issuer-url".into(),
            issuer_url.into(),
        ];
        args.extend(alpaca_flags(&self.sim_url));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let output = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_issuer"))
                .args(&args)
                .env_remove("BOT_PRIVATE_KEY")
                .env_remove("ISSUER_NETWORK")
                .env_remove("CONFIRMATIONS")
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            output.status.code().is_some(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let code = output.status.code().unwrap_or(-1);
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(
            !text.is_empty(),
            "report wrote nothing: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (code, text)
    }
}

fn ap() -> Address {
    AP_WALLET.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mints_and_redemptions_on_both_networks_at_once() {
    let started = Instant::now();
    let two = Two::start().await;
    let issuer = two.spawn_issuer(&two.networks_setting(1));
    wait_healthy(&issuer).await;

    // The token list groups the networks per underlying; a network the asset is not on, or one
    // this issuer does not serve, is refused with the guide's message.
    let tokens: Value = reqwest::Client::new()
        .get(format!("{}/tokenization/tokens", issuer.url))
        .header("X-API-KEY", LOCAL_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tokens,
        json!({"tokens": [{"underlying": "AAPL", "token": "tAAPL", "networks": ["base", "ethereum"]}]}),
    );
    for network in ["arbitrum", "anvil"] {
        let refused = reqwest::Client::new()
            .post(format!("{}/tokenization/mint", issuer.url))
            .header("X-API-KEY", LOCAL_API_KEY)
            .json(&json!({
                "tokenization_request_id": format!("tr-{network}"),
                "qty": "1",
                "underlying_symbol": "AAPL",
                "token_symbol": "tAAPL",
                "network": network,
                "client_external_account_id": two.client_id.as_str(),
                "wallet_address": AP_WALLET,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 400, "{network}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body,
            json!({"error": "Invalid Token: Token not available on the network"}),
            "{network}"
        );
    }

    let (on_base, on_eth) = tokio::join!(
        two.mint(&issuer.url, &two.base, "tr-base", "2"),
        two.mint(&issuer.url, &two.eth, "tr-eth", "3"),
    );
    eventually(
        Duration::from_secs(30),
        "both mints called back",
        || async {
            two.sim.mint_callback_count("tr-base") >= 1
                && two.sim.mint_callback_count("tr-eth") >= 1
        },
    )
    .await;
    assert_eq!(two.base.balance(ap()).await, U256::from(2 * E18));
    assert_eq!(two.eth.balance(ap()).await, U256::from(3 * E18));
    assert_eq!(two.base.deposits_for(&on_base).await, 1);
    assert_eq!(
        two.base.deposits_for(&on_eth).await,
        0,
        "ethereum's mint not on base"
    );
    assert_eq!(two.eth.deposits_for(&on_eth).await, 1);
    assert_eq!(
        two.eth.deposits_for(&on_base).await,
        0,
        "base's mint not on ethereum"
    );

    // The AP redeems on both chains at once.
    let (tx_base, tx_eth) = tokio::join!(
        two.base.send_back(U256::from(E18)),
        two.eth.send_back(U256::from(2 * E18)),
    );
    eventually(
        Duration::from_secs(40),
        "both redemptions burned",
        || async {
            two.base.supply().await == U256::from(E18) && two.eth.supply().await == U256::from(E18)
        },
    )
    .await;
    issuer.more_passes(6).await;
    let snapshot = two.sim.snapshot();
    for (net, hash) in [(&two.base, tx_base), (&two.eth, tx_eth)] {
        let id = reconciler::IssuerRequestId::for_redemption(hash, 0);
        let requests: Vec<_> = snapshot
            .requests
            .iter()
            .filter(|r| r.issuer_request_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(requests.len(), 1, "{}: one redeem request", net.name);
        assert_eq!(
            requests[0].network, net.name,
            "requested with its own network's name"
        );
    }
    assert_eq!(
        two.base.supply().await,
        U256::from(E18),
        "burned once on base"
    );
    assert_eq!(
        two.eth.supply().await,
        U256::from(E18),
        "burned once on ethereum"
    );
    assert_eq!(two.sim.mint_callback_count("tr-base"), 1);
    assert_eq!(two.sim.mint_callback_count("tr-eth"), 1);
    // The audit, from the two chains and Alpaca alone: balanced on each network and in total.
    let (code, text) = two.report(&issuer.url, &["--check"]).await;
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(code, 0, "balanced with nothing to look at: {report:#}");
    assert_eq!(report["verdict"], "balanced");
    let sections: Vec<(&str, u64)> = report["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["network"].as_str().unwrap(),
                n["chain_id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        sections,
        [("base", two.base.chain_id), ("ethereum", two.eth.chain_id)]
    );
    for section in report["networks"].as_array().unwrap() {
        let asset = &section["report"]["assets"][0];
        assert_eq!(asset["network"], section["network"]);
        assert_eq!(asset["totals"]["total_supply"], "1", "{section:#}");
        assert_eq!(asset["difference"], "0");
    }
    assert_eq!(
        report["totals"],
        json!([{
            "underlying": "AAPL",
            "networks": ["base", "ethereum"],
            "supply": "2",
            "journaled": "2",
            "difference": "0"
        }])
    );
    // --network selects one: the single-network report of old.
    let (code, text) = two.report(&issuer.url, &["--network", "ethereum"]).await;
    assert_eq!(code, 0);
    let one: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(one["assets"].as_array().unwrap().len(), 1);
    assert_eq!(one["assets"][0]["network"], "ethereum");
    assert_eq!(one["assets"][0]["totals"]["alpaca_journaled"], "1");
    let (_, markdown) = two.report(&issuer.url, &["--format", "markdown"]).await;
    assert!(
        markdown.contains("| AAPL | base, ethereum | 2 | 2 | 0 |"),
        "{markdown}"
    );
    assert!(markdown.contains("## Network base") && markdown.contains("## Network ethereum"));

    eprintln!(
        "mints_and_redemptions_on_both_networks_at_once: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_rpc_on_one_network_leaves_the_others_mint_latency_as_it_was() {
    let two = Two::start().await;
    let issuer = two.spawn_issuer(&two.networks_setting(1));
    wait_healthy(&issuer).await;
    // Usual latency on ethereum, both networks up (the first mint warms up the path).
    two.timed_mint(&issuer.url, &two.eth, "tr-warm").await;
    let mut usual = Duration::ZERO;
    for i in 0..3 {
        usual = usual.max(
            two.timed_mint(&issuer.url, &two.eth, &format!("tr-usual-{i}"))
                .await,
        );
    }

    // Base's node stops answering; a mint on base waits, mints on ethereum do not.
    two.base.signal("-STOP");
    let on_base = two
        .mint(&issuer.url, &two.base, "tr-base-stalled", "1")
        .await;
    let mut stalled = Duration::ZERO;
    for i in 0..3 {
        stalled = stalled.max(
            two.timed_mint(&issuer.url, &two.eth, &format!("tr-stalled-{i}"))
                .await,
        );
    }
    eprintln!(
        "ethereum mint latency: usual (max of 3) {usual:?}, base stalled (max of 3) {stalled:?}"
    );
    assert!(
        stalled <= usual * 2 + Duration::from_secs(1),
        "ethereum slowed by base's stall: {stalled:?} against {usual:?}"
    );
    assert_eq!(two.sim.mint_callback_count("tr-base-stalled"), 0);

    // Base's node answers again: its mint completes, once.
    two.base.signal("-CONT");
    eventually(
        Duration::from_secs(60),
        "base's mint after its node is back",
        || async { two.sim.mint_callback_count("tr-base-stalled") >= 1 },
    )
    .await;
    issuer.more_passes(4).await;
    assert_eq!(two.base.deposits_for(&on_base).await, 1);
    assert_eq!(two.sim.mint_callback_count("tr-base-stalled"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reorg_on_one_network_is_re_observed_there_and_nothing_moves_on_the_other() {
    let two = Two::start().await;
    // Three confirmations on base, so its deposit is seen but not acted on when the reorg comes.
    let issuer = two.spawn_issuer(&two.networks_setting(3));
    wait_healthy(&issuer).await;
    let snapshot = two.base.rpc_call("evm_snapshot", json!([])).await;
    let on_base = two.mint(&issuer.url, &two.base, "tr-reorg", "2").await;
    let on_eth = two.mint(&issuer.url, &two.eth, "tr-calm", "1").await;
    eventually(Duration::from_secs(20), "base's deposit mined", || async {
        two.base.deposits_for(&on_base).await == 1
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "ethereum's mint called back",
        || async { two.sim.mint_callback_count("tr-calm") >= 1 },
    )
    .await;
    assert_eq!(
        two.sim.mint_callback_count("tr-reorg"),
        0,
        "not before 3 confirmations"
    );

    // Base's block with the deposit disappears; a longer chain without it takes its place.
    assert_eq!(
        two.base.rpc_call("evm_revert", json!([snapshot])).await,
        json!(true)
    );
    two.base.rpc_call("anvil_mine", json!(["0x5"])).await;
    assert_eq!(
        two.base.deposits_for(&on_base).await,
        0,
        "the reorg removed it"
    );
    two.base.rpc_call("evm_setIntervalMining", json!([1])).await;
    eventually(
        Duration::from_secs(40),
        "base minted again and called back",
        || async { two.sim.mint_callback_count("tr-reorg") >= 1 },
    )
    .await;
    issuer.more_passes(5).await;
    assert_eq!(
        two.base.deposits_for(&on_base).await,
        1,
        "once on the surviving chain"
    );
    assert_eq!(two.base.balance(ap()).await, U256::from(2 * E18));
    assert_eq!(two.sim.mint_callback_count("tr-reorg"), 1);
    assert_eq!(two.eth.deposits_for(&on_eth).await, 1, "ethereum untouched");
    assert_eq!(two.eth.balance(ap()).await, U256::from(E18));
    assert_eq!(two.sim.mint_callback_count("tr-calm"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_cache_mints_and_calls_back_once_on_both_networks() {
    let two = Two::start().await;
    let issuer = two.spawn_issuer(&two.networks_setting(1));
    wait_healthy(&issuer).await;
    let on_base = two.mint(&issuer.url, &two.base, "tr-cache-base", "2").await;
    let on_eth = two.mint(&issuer.url, &two.eth, "tr-cache-eth", "3").await;
    eventually(Duration::from_secs(30), "both called back", || async {
        two.sim.mint_callback_count("tr-cache-base") >= 1
            && two.sim.mint_callback_count("tr-cache-eth") >= 1
    })
    .await;
    drop(issuer);

    // The cache is gone; an operator re-adds what lives nowhere else and restarts.
    std::fs::remove_file(&two.db_path).unwrap();
    Two::seed_store(&two.db_path, &[&two.base, &two.eth]);
    let issuer = two.spawn_issuer(&two.networks_setting(1));
    wait_healthy(&issuer).await;
    let rebuilt = || async {
        let answer: Value = reqwest::Client::new()
            .get(format!("{}/operator/mints", issuer.url))
            .header("X-OPERATOR-KEY", issuer::cli::LOCAL_OPERATOR_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["mints"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| !m["tx_hash"].is_null())
            .map(|m| {
                (
                    m["issuer_request_id"].as_str().unwrap().to_owned(),
                    m["network"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    eventually(
        Duration::from_secs(30),
        "both mints rebuilt from the chains and Alpaca, acknowledged",
        || async { rebuilt().await.len() == 2 },
    )
    .await;
    assert_eq!(
        rebuilt().await,
        [
            (on_base.clone(), "base".to_owned()),
            (on_eth.clone(), "ethereum".to_owned())
        ]
        .into_iter()
        .collect(),
        "each rebuilt on its own network"
    );
    issuer.more_passes(5).await;
    assert_eq!(two.base.deposits_for(&on_base).await, 1);
    assert_eq!(two.eth.deposits_for(&on_eth).await, 1);
    assert_eq!(two.base.deposits_for(&on_eth).await, 0);
    assert_eq!(two.eth.deposits_for(&on_base).await, 0);
    assert_eq!(two.sim.mint_callback_count("tr-cache-base"), 1);
    assert_eq!(two.sim.mint_callback_count("tr-cache-eth"), 1);
    assert_eq!(two.base.balance(ap()).await, U256::from(2 * E18));
    assert_eq!(two.eth.balance(ap()).await, U256::from(3 * E18));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_network_answering_another_chain_id_refuses_to_start() {
    let two = Two::start().await;
    let wrong = format!(
        "name=base,rpc={},chain-id=1;name=ethereum,rpc={},chain-id={}",
        two.base.rpc(),
        two.eth.rpc(),
        two.eth.chain_id
    );
    let mut issuer = two.spawn_issuer(&wrong);
    let status = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(status) = issuer.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the issuer exits");
    assert!(!status.success(), "a wrong chain id must not start");
    assert!(
        reqwest::get(format!("{}/health", issuer.url))
            .await
            .is_err(),
        "nothing listens"
    );
}
