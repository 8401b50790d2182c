//! Issue 17's drill: three `issuer serve --ha-etcd` processes on one signing key, a real etcd,
//! one anvil and the Alpaca simulator. While 200 mints and 20 redemptions are in progress the
//! leader is SIGKILLed, later the next leader is SIGSTOPped past its lease and resumed, and etcd
//! itself is restarted. Every answered intent must be minted exactly once and called back once,
//! every redemption requested once and burned once, and every transaction of the bot on chain
//! must have been preceded by a fence check that etcd confirmed inside the sending instance's
//! term (terms read back from etcd's own history of the election key). Mints must resume within
//! the lease TTL plus two blocks of the SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::consensus::Transaction as _;
use alloy::network::TransactionResponse as _;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use common::etcd::{free_port, Etcd};
use common::stack::{eventually, World, SIM_ACCOUNT, SIM_KEY, SIM_SECRET};
use issuer::cli::LOCAL_API_KEY;
use issuer::sim::{NewMint, SimClient};
use reconciler::{IssuerRequestId, TokenizationRequestId};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MINTS: usize = 200;
const REDEMPTIONS: usize = 20;
const LEASE_TTL_SECS: u64 = 3;
const BLOCK_SECS: u64 = 1;
const E18: u128 = 1_000_000_000_000_000_000;

/// One `issuer serve --ha-etcd` process, its JSON log in a file.
struct Instance {
    name: String,
    url: String,
    child: Child,
    log: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_instance(world: &World, etcd: &Etcd, name: &str, db: &Path, dir: &Path) -> Instance {
    let port = free_port();
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_issuer"))
        .arg("serve")
        .arg("--db")
        .arg(db)
        .args(["--rpc-url", &world.rpc()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--alpaca-base-url", &world.sim_url])
        .args(["--alpaca-account-id", SIM_ACCOUNT])
        .args(["--alpaca-api-key", SIM_KEY])
        .args(["--alpaca-api-secret", SIM_SECRET])
        .args(["--reconcile-interval-ms", "150"])
        .args(["--ha-etcd", &etcd.endpoint()])
        .args(["--ha-lease-ttl-secs", &LEASE_TTL_SECS.to_string()])
        .args(["--ha-instance", name])
        .env_remove("ISSUER_CRASH_AT")
        .env("RUST_LOG", "warn,issuer::ha=info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Instance {
        name: name.to_owned(),
        url: format!("http://127.0.0.1:{port}"),
        child,
        log,
    }
}

fn signal(child: &Child, which: &str) {
    let _ = Command::new("kill")
        .args([format!("-{which}"), child.id().to_string()])
        .status();
}

/// `/readyz`'s `role`, if the instance answers within a second.
async fn role(http: &reqwest::Client, instance: &Instance) -> Option<String> {
    let answer = http
        .get(format!("{}/readyz", instance.url))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    let body: Value = answer.json().await.ok()?;
    body["role"].as_str().map(str::to_owned)
}

async fn wait_leader(http: &reqwest::Client, instances: &[&Instance]) -> usize {
    let found = Arc::new(Mutex::new(None));
    eventually(Duration::from_secs(30), "a leader", || {
        let found = found.clone();
        async move {
            for (i, instance) in instances.iter().enumerate() {
                if role(http, instance).await.as_deref() == Some("leader") {
                    *found.lock().unwrap() = Some(i);
                    return true;
                }
            }
            false
        }
    })
    .await;
    let index = found.lock().unwrap().unwrap();
    index
}

/// Alpaca behind a load balancer: the same request to the next instance on a transport error,
/// a timeout or a 5xx, until one answers 200. Any 4xx fails the drill.
async fn post_any(http: &reqwest::Client, urls: &[String], path: &str, body: &Value) -> Value {
    let start = Instant::now();
    let mut at = rand_start(urls.len());
    loop {
        let url = &urls[at % urls.len()];
        at += 1;
        let sent = http
            .post(format!("{url}{path}"))
            .header("X-API-KEY", LOCAL_API_KEY)
            .timeout(Duration::from_secs(3))
            .json(body)
            .send()
            .await;
        if let Ok(answer) = sent {
            let status = answer.status();
            let value: Value = answer.json().await.unwrap_or(Value::Null);
            if status.is_success() {
                return value;
            }
            assert!(
                status.is_server_error(),
                "{path} answered {status}: {value}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{path}: no instance accepted it in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rand_start(n: usize) -> usize {
    usize::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
    )
    .unwrap()
        % n
}

/// Plays Alpaca's side of one mint through any instance; the issuer_request_id answered.
async fn mint(world: &World, http: &reqwest::Client, urls: &[String], trid: &str) -> String {
    let irid = IssuerRequestId::for_mint(&TokenizationRequestId::parse(trid).unwrap());
    world
        .sim
        .add_mint_request(NewMint {
            tokenization_request_id: Some(trid.to_owned()),
            issuer_request_id: Some(irid.as_str().to_owned()),
            qty: "1".into(),
            underlying_symbol: "AAPL".into(),
            token_symbol: "tAAPL".into(),
            network: "anvil".into(),
            client: SimClient::ClientExternalAccountId(world.client_id.as_str().to_owned()),
            wallet_address: common::stack::AP_WALLET.into(),
        })
        .unwrap();
    let issuance = json!({
        "tokenization_request_id": trid,
        "qty": "1",
        "underlying_symbol": "AAPL",
        "token_symbol": "tAAPL",
        "network": "anvil",
        "client_external_account_id": world.client_id.as_str(),
        "wallet_address": common::stack::AP_WALLET,
    });
    let answer = post_any(http, urls, "/tokenization/mint", &issuance).await;
    assert_eq!(answer["issuer_request_id"].as_str(), Some(irid.as_str()));
    let confirm = json!({
        "tokenization_request_id": trid,
        "issuer_request_id": irid.as_str(),
        "status": "completed",
    });
    post_any(http, urls, "/tokenization/mint/confirm", &confirm).await;
    irid.as_str().to_owned()
}

/// One fence confirmation from an instance's log.
#[derive(Debug, Clone)]
struct Confirmed {
    instance: String,
    term: i64,
    revision: i64,
    what: String,
}

fn fence_lines(log: &Path) -> Vec<Confirmed> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["fields"]["message"] == "fence: lease confirmed")
        .map(|v| Confirmed {
            instance: v["fields"]["instance"].as_str().unwrap_or("").to_owned(),
            term: v["fields"]["term"].as_i64().unwrap(),
            revision: v["fields"]["revision"].as_i64().unwrap(),
            what: v["fields"]["what"].as_str().unwrap_or("").to_owned(),
        })
        .collect()
}

/// Each term of the election key from etcd's history: create revision to (holder, end
/// revision), the end being `i64::MAX` for a term still running.
async fn terms(endpoint: &str, key: &str) -> BTreeMap<i64, (String, i64)> {
    let mut client = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let now = client
        .get(key, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let mut stream = client
        .watch(
            key,
            Some(etcd_client::WatchOptions::new().with_start_revision(1)),
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    let mut open: Option<(i64, String)> = None;
    let mut seen = 0;
    // The key's last change may be older than `now` (other keys moved the revision on): read
    // until the stream goes quiet.
    while seen < now {
        let Ok(Ok(Some(answer))) =
            tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        else {
            break;
        };
        for event in answer.events() {
            let kv = event.kv().unwrap();
            seen = seen.max(kv.mod_revision());
            match event.event_type() {
                etcd_client::EventType::Put => {
                    if kv.create_revision() == kv.mod_revision() {
                        open = Some((
                            kv.create_revision(),
                            String::from_utf8_lossy(kv.value()).into_owned(),
                        ));
                    }
                }
                etcd_client::EventType::Delete => {
                    if let Some((created, holder)) = open.take() {
                        out.insert(created, (holder, kv.mod_revision()));
                    }
                }
            }
        }
    }
    if let Some((created, holder)) = open {
        out.insert(created, (holder, i64::MAX));
    }
    out
}

/// The hashes of every transaction the bot sent in blocks `from..=head`.
async fn bot_txs(rpc: &str, bot: Address, from: u64) -> Vec<(B256, u64)> {
    let provider: RootProvider = ProviderBuilder::default().connect_http(rpc.parse().unwrap());
    let head = provider.get_block_number().await.unwrap();
    let mut out = Vec::new();
    for n in from..=head {
        let block = provider
            .get_block_by_number(n.into())
            .full()
            .await
            .unwrap()
            .unwrap();
        for tx in block.transactions.txns() {
            if tx.from() == bot {
                out.push((tx.tx_hash(), tx.nonce()));
            }
        }
    }
    out
}

async fn head(world: &World) -> u64 {
    let provider: RootProvider =
        ProviderBuilder::default().connect_http(world.rpc().parse().unwrap());
    provider.get_block_number().await.unwrap()
}

async fn nonce(world: &World, pending: bool) -> u64 {
    let provider: RootProvider =
        ProviderBuilder::default().connect_http(world.rpc().parse().unwrap());
    let ask = provider.get_transaction_count(common::bot().address());
    if pending {
        ask.pending().await.unwrap()
    } else {
        ask.latest().await.unwrap()
    }
}

async fn burns_of(world: &World, id: &IssuerRequestId) -> usize {
    let chain = issuer::chain::Chain::connect(&world.rpc(), common::bot())
        .await
        .unwrap();
    let head = chain.head().await.unwrap();
    chain
        .scan_burns(world.deployed.vault, 0, head)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| &b.redemption_id == id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_drill_mints_and_burns_exactly_once() {
    let started = Instant::now();
    let world = World::start(Some(BLOCK_SECS)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(&dir.path().join("etcd"));
    etcd.wait_up().await;
    let http = reqwest::Client::new();
    let bot = common::bot().address();
    let first_block = head(&world).await + 1;

    // The first instance holds the local stack's directory (asset, linked AP, wallet) and seeds
    // etcd with it; the others start on empty files and import it.
    let a = spawn_instance(&world, &etcd, "a", &world.db_path, dir.path());
    eventually(Duration::from_secs(30), "a seeds and leads", || async {
        role(&http, &a).await.as_deref() == Some("leader")
    })
    .await;
    let b = spawn_instance(&world, &etcd, "b", &dir.path().join("b.redb"), dir.path());
    let c = spawn_instance(&world, &etcd, "c", &dir.path().join("c.redb"), dir.path());
    for standby in [&b, &c] {
        eventually(Duration::from_secs(30), "standby ready", || async {
            let answer = http.get(format!("{}/readyz", standby.url)).send().await;
            match answer {
                Ok(answer) => {
                    let body: Value = answer.json().await.unwrap_or(Value::Null);
                    body["status"] == "standby"
                }
                Err(_) => false,
            }
        })
        .await;
    }
    let instances = [&a, &b, &c];
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();

    // The load: 200 mints, 8 at a time, each through whichever instance answers.
    let answered = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let world = Arc::new(world);
    let driver = {
        let (world, http, urls, answered, count) = (
            world.clone(),
            http.clone(),
            urls.clone(),
            answered.clone(),
            count.clone(),
        );
        tokio::spawn(async move {
            let jobs = (0..MINTS).map(|i| {
                let (world, http, urls, answered, count) = (
                    world.clone(),
                    http.clone(),
                    urls.clone(),
                    answered.clone(),
                    count.clone(),
                );
                async move {
                    let trid = format!("tr-drill-{i:03}");
                    let irid = mint(&world, &http, &urls, &trid).await;
                    answered.lock().unwrap().push((trid, irid));
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
            futures::stream::iter(jobs)
                .buffer_unordered(8)
                .collect::<Vec<()>>()
                .await;
        })
    };
    // The redemptions: the AP sends one share back twenty times, as its balance allows.
    let redeemer = {
        let world = world.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..REDEMPTIONS {
                eventually(Duration::from_secs(120), "a share to redeem", || async {
                    world.balance(world.ap_wallet).await >= U256::from(E18)
                })
                .await;
                let tx = world
                    .transfer(common::STRANGER_KEY, bot, U256::from(E18))
                    .await;
                ids.push(IssuerRequestId::for_redemption(tx, 0));
            }
            ids
        })
    };

    // 1. SIGKILL the leader once mints are flowing; time until the next leader's first mint.
    let leader = wait_leader(&http, &instances).await;
    eventually(Duration::from_secs(60), "mints flowing", || async {
        count.load(Ordering::SeqCst) >= 50
            && world.balance(world.ap_wallet).await >= U256::from(20 * E18)
    })
    .await;
    let killed_at = Instant::now();
    let mut victims = vec![instances[leader].name.clone()];
    {
        let killed = instances[leader];
        // SIGKILL: no goodbye, no resignation; the lease runs out on its own.
        let _ = Command::new("kill")
            .args(["-KILL", &killed.child.id().to_string()])
            .status();
    }
    let nonce_at_kill = nonce(&world, true).await;
    // Polled every 10 ms, not `eventually`'s 100 ms: the figure is the failover's, not the
    // checker's (at 100 ms a block mined at 4.95 s read as 5.0001 s and failed the limit).
    let deadline = Instant::now() + Duration::from_secs(LEASE_TTL_SECS + 30);
    while nonce(&world, false).await <= nonce_at_kill {
        assert!(
            Instant::now() < deadline,
            "no transaction of the next leader mined"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failover = killed_at.elapsed();
    eprintln!("failover: SIGKILL to the next leader's first mined transaction: {failover:?}");
    let alive: Vec<&Instance> = instances
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, inst)| *inst)
        .collect();

    // 2. SIGSTOP the next leader past its lease, let the third take over, then resume it.
    let second = alive[wait_leader(&http, &alive).await];
    let third = alive
        .iter()
        .find(|i| i.name != second.name)
        .copied()
        .unwrap();
    eventually(Duration::from_secs(60), "more mints answered", || async {
        count.load(Ordering::SeqCst) >= 110
    })
    .await;
    signal(&second.child, "STOP");
    victims.push(second.name.clone());
    eventually(
        Duration::from_secs(LEASE_TTL_SECS + 30),
        "the third instance leads",
        || async { role(&http, third).await.as_deref() == Some("leader") },
    )
    .await;
    let nonce_at_takeover = nonce(&world, true).await;
    eventually(
        Duration::from_secs(30),
        "the third leader's transaction mined",
        || async { nonce(&world, false).await > nonce_at_takeover },
    )
    .await;
    signal(&second.child, "CONT");
    eventually(
        Duration::from_secs(30),
        "the resumed instance stands by",
        || async { role(&http, second).await.as_deref() == Some("standby") },
    )
    .await;

    // 3. Restart etcd mid-run.
    eventually(Duration::from_secs(60), "more mints answered", || async {
        count.load(Ordering::SeqCst) >= 160
    })
    .await;
    etcd.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.spawn();
    etcd.wait_up().await;

    // Everything answered converges.
    driver.await.unwrap();
    let redemptions = redeemer.await.unwrap();
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.len(), MINTS);
    eventually(
        Duration::from_secs(120),
        "every mint called back, every redemption burned",
        || async {
            for (trid, _) in &answered {
                if world.sim.mint_callback_count(trid) < 1 {
                    return false;
                }
            }
            for id in &redemptions {
                if burns_of(&world, id).await < 1 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    // Let three more blocks pass before counting, so a late duplicate would be on chain.
    let settled = head(&world).await + 3;
    eventually(Duration::from_secs(30), "three more blocks", || async {
        head(&world).await >= settled
    })
    .await;

    // Exactly once, as a user sees it.
    let chain = issuer::chain::Chain::connect(&world.rpc(), common::bot())
        .await
        .unwrap();
    let head_now = chain.head().await.unwrap();
    let (deposits, _) = chain
        .scan_deposits(world.deployed.vault, 0, head_now)
        .await
        .unwrap();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for d in &deposits {
        *per_id
            .entry(d.issuer_request_id.as_str().to_owned())
            .or_default() += 1;
    }
    for (trid, irid) in &answered {
        assert_eq!(
            per_id.get(irid).copied(),
            Some(1),
            "{trid}: exactly one Deposit"
        );
        assert_eq!(
            world.sim.mint_callback_count(trid),
            1,
            "{trid}: exactly one callback"
        );
    }
    for id in &redemptions {
        assert_eq!(burns_of(&world, id).await, 1, "{id}: exactly one burn");
        assert_eq!(
            world.redeem_requests_for(id.as_str()).len(),
            1,
            "{id}: one redeem request"
        );
    }
    let burned = u128::try_from(REDEMPTIONS).unwrap();
    let minted = u128::try_from(MINTS).unwrap();
    assert_eq!(
        world.total_supply().await,
        U256::from((minted - burned) * E18)
    );

    // Only the lease holder acted: every bot transaction on chain since the instances started
    // was broadcast after a fence check etcd confirmed inside that instance's term, and every
    // fence confirmation (callbacks and redeem calls too) lies inside its term.
    let terms = terms(&etcd.endpoint(), &format!("/issuer/{bot:#x}/leader")).await;
    assert!(terms.len() >= 3, "at least three terms: {terms:?}");
    let mut by_hash: HashMap<String, Vec<Confirmed>> = HashMap::new();
    let mut all = Vec::new();
    for instance in &instances {
        for line in fence_lines(&instance.log) {
            assert_eq!(line.instance, instance.name);
            if let Some(hash) = line.what.strip_prefix("broadcast ") {
                by_hash
                    .entry(hash.to_owned())
                    .or_default()
                    .push(line.clone());
            }
            all.push(line);
        }
    }
    for line in &all {
        let (holder, ended) = terms
            .get(&line.term)
            .unwrap_or_else(|| panic!("fence confirmed for an unknown term: {line:?}"));
        assert_eq!(
            holder, &line.instance,
            "term {} belongs to {holder}",
            line.term
        );
        assert!(
            line.revision >= line.term && line.revision < *ended,
            "confirmed outside the term: {line:?}, term ended at {ended}"
        );
    }
    let sent = bot_txs(&world.rpc(), bot, first_block).await;
    assert!(sent.len() >= 5, "the bot sent transactions: {sent:?}");
    let mut nonces = BTreeSet::new();
    for (hash, nonce) in &sent {
        assert!(nonces.insert(*nonce));
        let shown = format!("{hash:#x}");
        assert!(
            by_hash.contains_key(&shown),
            "transaction {shown} (nonce {nonce}) was mined without a fence confirmation"
        );
    }
    eprintln!(
        "drill: {} mints, {} redemptions, {} bot transactions, {} terms, victims {victims:?}, failover {failover:?}, wall {:?}",
        answered.len(),
        redemptions.len(),
        sent.len(),
        terms.len(),
        started.elapsed()
    );
    assert!(
        failover <= Duration::from_secs(LEASE_TTL_SECS + 2 * BLOCK_SECS),
        "mints resumed {failover:?} after the SIGKILL: more than the lease TTL plus two blocks"
    );
}

use futures::StreamExt as _;
