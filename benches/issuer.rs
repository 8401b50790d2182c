//! `just bench`: prints the numbers the issues set targets for.
//!
//! 1. Intake: durable `POST /inkind/issuance` at 64 concurrent clients (requests per second, p50
//!    and p99 latency), then every answered request is checked on disk. Each client is one
//!    keep-alive connection written and read by hand ([`KeepAlive`]): the clients share the
//!    issuer's two cores, and reqwest's own work per request was a fifth of the CPU.
//! 2. Mints: 200, 1,000 and 2,000 confirmed mints through the simulator on an anvil with
//!    1-second blocks (30M gas): first confirm to last callback, mints per second against the gas
//!    bound (block gas limit / gas used per mint), confirm-to-callback and block-to-callback
//!    latency (from the bench first seeing the deposit's block, polled every 10 ms, to the
//!    simulator receiving the callback); every mint checked deposited once and called back once.
//!    Intake runs again during the 2,000 (goal 5), into a store of its own in the same process;
//!    then once more into the minting issuer itself (one store and writer, as in production).
//!    Then 20 mints one transaction at a time.
//! 3. The same 200 mints signed by an AWS KMS key (moto's KMS server, as in `tests/signers.rs`)
//!    beside the local key: one KMS signature per transaction, however many mints it carries.
//!    Skipped with a line saying so when moto is not installed.
//! 4. Goal 4: one pass's store reads with 10,000 and 100,000 finished mints and redemptions in
//!    the store.
//!
//! At the end, one `goal N:` line per goal of issue 16, the measured figure first.
//!
//! `BENCH_ONLY=store|intake|signers|mints|2000|report` runs a part (`intake`: the store alone
//! and intake; `store`: the store alone, a pass's reads over 100,000 finished items and `issuer
//! serve`'s memory on them; `mints`: the three mint runs and the goals; `2000`: the 2,000 mints
//! alone and with intake; `report`: `issuer report` over 100,000 mints, or
//! `BENCH_REPORT_MINTS`). `BENCH_LOG=1` shows the issuer's logs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)]

/// The allocator the binary ships with (`src/main.rs`), so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/common/mod.rs"]
mod common;

use common::stack::{alpaca_flags, http_config, Issuer, World, AP_WALLET};
use issuer::store::{RedbStore, Select, Store};
use reconciler::Policy;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Intake's clients, and the issuances each sends.
const INTAKE_CLIENTS: usize = 64;
const INTAKE_PER_CLIENT: usize = 160;

/// Requests per intake client: [`INTAKE_PER_CLIENT`], or `BENCH_INTAKE_PER_CLIENT` to measure
/// over a longer window (640 spans about four blocks of the 2,000 mints, where p99 varies less
/// from run to run).
fn intake_per_client() -> usize {
    std::env::var("BENCH_INTAKE_PER_CLIENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(INTAKE_PER_CLIENT)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Intake's requests per second and p99 latency.
async fn intake() -> (f64, Duration) {
    intake_with_assets(1).await
}

/// [`intake`] with `listed` assets in the store (the requests name the first): what the number
/// of listed assets costs each request.
async fn intake_with_assets(listed: usize) -> (f64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.redb");
    let store = RedbStore::open(&path).unwrap();
    let asset = issuer::store::Asset {
        underlying: reconciler::Symbol::parse("AAPL").unwrap(),
        token: reconciler::Symbol::parse("tAAPL").unwrap(),
        network: reconciler::Network::parse("anvil").unwrap(),
        vault: alloy::primitives::Address::repeat_byte(1),
        receipt: alloy::primitives::Address::repeat_byte(2),
        authorizer: alloy::primitives::Address::repeat_byte(3),
        deploy_block: 0,
        frozen: false,
        mint_qty_max: None,
    };
    store.put_asset(&asset).unwrap();
    for i in 1..listed {
        let byte = |n: usize| u8::try_from(n % 251).unwrap();
        store
            .put_asset(&issuer::store::Asset {
                underlying: reconciler::Symbol::parse(&format!("S{i}")).unwrap(),
                token: reconciler::Symbol::parse(&format!("tS{i}")).unwrap(),
                vault: alloy::primitives::Address::repeat_byte(byte(3 * i + 10)),
                receipt: alloy::primitives::Address::repeat_byte(byte(3 * i + 11)),
                authorizer: alloy::primitives::Address::repeat_byte(byte(3 * i + 12)),
                ..asset.clone()
            })
            .unwrap();
    }
    let account = store.register_account("bench@example.com").unwrap();
    store.link_account("bench@example.com", "ALP-1").unwrap();
    store
        .add_wallet(&account.client_id, AP_WALLET.parse().unwrap())
        .unwrap();
    let store = Arc::new(store);
    let listener = common::loopback_listener();
    let listener_addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(issuer::http::serve(
        listener,
        store.clone(),
        Arc::new(tokio::sync::Notify::new()),
        http_config(),
        async move {
            let mut rx = rx;
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let metrics = issuer::metrics::metrics();
    let commits_before = (metrics.store_commits.get(), metrics.store_writes.get());
    let (mut latencies, elapsed) =
        issuance_load(listener_addr, account.client_id.to_string(), "bench").await;
    let commits = metrics.store_commits.get() - commits_before.0;
    let writes = metrics.store_writes.get() - commits_before.1;
    latencies.sort();
    let total = latencies.len();
    let _ = stop.send(true);
    let _ = server.await;
    store.close();
    let reopened = RedbStore::open(&path).unwrap();
    let on_disk = reopened.mints(Select::All).unwrap().len();
    println!("intake: {total} durable POST /inkind/issuance, {INTAKE_CLIENTS} concurrent clients, {listed} asset(s) listed");
    println!(
        "  {:.0} requests/s over {:.2} s",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    if commits > 0 {
        println!(
            "  {commits} group commits in the process meanwhile, {:.1} writes each",
            writes as f64 / commits as f64
        );
    }
    println!("  on disk after reopen: {on_disk} of {total}");
    assert_eq!(on_disk, total, "every answered request must be on disk");
    (
        total as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.99),
    )
}

/// 64 clients, each one keep-alive connection, sending 160 new issuances ([`intake_per_client`]) one after another
/// (ids `{prefix}-{client}-{n}`) for `client_id`'s wallet on AAPL: each request's latency, and
/// the time from the first to the last answer. Every answer must be 200.
///
/// The clients run on a runtime of their own, on threads of their own: on the bench's runtime
/// they queued behind the minting issuer's passes and the simulator, and that wait was counted
/// as the issuer's latency (Alpaca's clients do not share the issuer's task queues).
async fn issuance_load(
    addr: std::net::SocketAddr,
    client_id: String,
    prefix: &str,
) -> (Vec<Duration>, Duration) {
    let prefix = prefix.to_owned();
    let (tell, answer) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-clients".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bench-client")
                .enable_all()
                .build()
                .unwrap();
            let _ = tell.send(runtime.block_on(issuance_load_here(addr, client_id, &prefix)));
        })
        .unwrap();
    answer.await.unwrap()
}

/// [`issuance_load`] on the current runtime.
async fn issuance_load_here(
    addr: std::net::SocketAddr,
    client_id: String,
    prefix: &str,
) -> (Vec<Duration>, Duration) {
    let per_client = intake_per_client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..INTAKE_CLIENTS {
        let (client_id, prefix) = (client_id.clone(), prefix.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut connection = KeepAlive::connect(addr).await;
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let body = json!({
                    "tokenization_request_id": format!("{prefix}-{c}-{i}"),
                    "qty": "1.5",
                    "underlying_symbol": "AAPL",
                    "token_symbol": "tAAPL",
                    "network": "anvil",
                    "client_external_account_id": client_id,
                    "wallet_address": AP_WALLET,
                })
                .to_string();
                let t = Instant::now();
                let (status, _) = connection
                    .post("/inkind/issuance", issuer::cli::LOCAL_API_KEY, &body)
                    .await;
                assert_eq!(status, 200);
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(INTAKE_CLIENTS * per_client);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    (latencies, started.elapsed())
}

/// Intake with metrics recorded and not, alternately three times each: what `/metrics` costs
/// (the target: within 5 %).
async fn metrics_overhead() {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        issuer::metrics::set_enabled(false);
        without.push(intake().await.0);
        issuer::metrics::set_enabled(true);
        with.push(intake().await.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (with, without) = (median(&mut with), median(&mut without));
    println!(
        "metrics overhead on intake: {:.0} requests/s with metrics, {:.0} without: {:+.1} % (target within 5 %)",
        with,
        without,
        (with / without - 1.0) * 100.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn mints(label: &str, count: usize, policy: Policy) -> MintRun {
    mints_signed_by(label, count, policy, None, During::Nothing).await
}

/// What one mint run measured.
#[derive(Debug, Clone, Default)]
struct MintRun {
    count: usize,
    /// First confirm answered to last callback received.
    span: Duration,
    confirm_to_callback_p50: Duration,
    confirm_to_callback_p99: Duration,
    /// From the bench first seeing the block that holds a mint's deposit to its callback.
    block_to_callback_p50: Duration,
    block_to_callback_p95: Duration,
    /// Gas used by the mint transactions, per mint.
    gas_per_mint: f64,
    block_gas_limit: u64,
    transactions: u64,
    /// Pending transactions the issuer sent again during the run.
    resent: u64,
    /// Blocks that held at least one of the mints.
    blocks: usize,
}

impl MintRun {
    fn rate(&self) -> f64 {
        self.count as f64 / self.span.as_secs_f64()
    }

    /// Mints per second the gas allows at 1-second blocks: block gas limit / gas per mint.
    fn bound(&self) -> f64 {
        self.block_gas_limit as f64 / self.gas_per_mint
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ms_between(from: u64, to: u64) -> Duration {
    Duration::from_millis(to.saturating_sub(from))
}

async fn mints_signed_by(
    label: &str,
    count: usize,
    policy: Policy,
    signer: Option<issuer::chain::BotSigner>,
    during: During,
) -> MintRun {
    use alloy::providers::Provider;
    let world = World::start(Some(1)).await;
    let signer = signer.unwrap_or_else(|| common::bot().into());
    let bot = signer.address();
    if bot != common::bot().address() {
        world.enlist(bot).await;
    }
    let chain = issuer::chain::Chain::connect(&world.rpc(), signer.clone())
        .await
        .unwrap();
    let nonce_before = chain.nonce_latest().await.unwrap();
    let resent_before = issuer::metrics::metrics().txs_resent.get();
    // When each block was first seen here, polled every 10 ms (anvil's timestamps are whole
    // seconds): where block->callback latency starts.
    let seen_blocks = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, u64>::new()));
    let (watch_stop, watch_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn({
        let chain = chain.clone();
        let seen = seen_blocks.clone();
        async move {
            let mut last = chain.head().await.unwrap_or(0);
            while !*watch_rx.borrow() {
                if let Ok(head) = chain.head().await {
                    let now = unix_ms();
                    let mut seen = seen.lock().unwrap();
                    for n in last + 1..=head {
                        seen.entry(n).or_insert(now);
                    }
                    last = last.max(head);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let issuer = Issuer::start_as_shipped(&world, policy, signer.clone()).await;
    let client = reqwest::Client::new();
    // Confirm every mint as fast as Alpaca could, recording when each confirm was answered.
    let mut confirms = Vec::new();
    // At most 64 of Alpaca's mint conversations at once: 200 at once open more connections to
    // the issuer than its bound (200), which then closes the oldest and the run fails instead of
    // measuring.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..count {
        let client = client.clone();
        let in_flight = in_flight.clone();
        let sim = world.sim_url.clone();
        let id = format!("bench-{label}-{i}");
        let body = json!({
            "issuer_url": issuer.url,
            "issuer_api_key": issuer::cli::LOCAL_API_KEY,
            "tokenization_request_id": id,
            "qty": "1",
            "underlying_symbol": "AAPL",
            "token_symbol": "tAAPL",
            "network": "anvil",
            "client": { "client_external_account_id": world.client_id.as_str() },
            "wallet_address": AP_WALLET,
        });
        confirms.push(tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await.unwrap();
            let answer = client
                .post(format!("{sim}/sim/mint"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = answer.status();
            assert!(
                status.is_success(),
                "sim mint {status}: {}",
                answer.text().await.unwrap_or_default()
            );
            (id, unix_ms())
        }));
    }
    let mut confirmed: BTreeMap<String, u64> = BTreeMap::new();
    for c in confirms {
        let (id, at) = c.await.unwrap();
        confirmed.insert(id, at);
    }
    let load = match during {
        During::Nothing => None,
        During::Tell(tell) => {
            let _ = tell.send(());
            None
        }
        During::IntakeIntoIssuer => {
            let addr = issuer.url.trim_start_matches("http://").parse().unwrap();
            let client_id = world.client_id.to_string();
            Some(tokio::spawn(async move {
                issuance_load(addr, client_id, "beside").await
            }))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    // Polled by count (a copy of the simulator's state every 50 ms would cost the run it
    // measures); the world is this run's own, so every accepted callback is one of its mints.
    while Instant::now() < deadline && world.sim.mint_callbacks_accepted() < count {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let callbacks = world.sim.snapshot().mint_callbacks;
    if let Some(load) = load {
        let (mut latencies, elapsed) = load.await.unwrap();
        latencies.sort();
        println!(
            "intake into the minting issuer itself (its HTTP server, store and writer) during the run: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap())
        );
    }
    let _ = watch_stop.send(true);
    let _ = watcher.await;
    // Exactly once: one callback and one tagged deposit per mint.
    let mut called_back: BTreeMap<String, u64> = BTreeMap::new();
    for c in &callbacks {
        assert!(
            called_back
                .insert(c.tokenization_request_id.clone(), c.received_unix_ms)
                .is_none(),
            "{} called back twice",
            c.tokenization_request_id
        );
    }
    assert_eq!(called_back.len(), count, "every mint called back");
    let head = chain.head().await.unwrap();
    let (deposits, _) = chain
        .scan_deposits(world.deployed.vault, 0, head)
        .await
        .unwrap();
    let mut deposit_block: BTreeMap<String, u64> = BTreeMap::new();
    let mut txs = std::collections::BTreeSet::new();
    for d in &deposits {
        assert!(
            deposit_block
                .insert(d.tokenization_request_id.to_string(), d.block_number)
                .is_none(),
            "{} deposited twice",
            d.tokenization_request_id
        );
        txs.insert(d.tx_hash);
    }
    assert_eq!(deposit_block.len(), count, "every mint deposited once");
    let provider: alloy::providers::RootProvider =
        alloy::providers::ProviderBuilder::default().connect_http(world.rpc().parse().unwrap());
    let mut gas_used = 0u64;
    for hash in &txs {
        let receipt = provider
            .get_transaction_receipt(*hash)
            .await
            .unwrap()
            .unwrap();
        gas_used += receipt.gas_used;
    }
    let block_gas_limit = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .gas_limit;
    let seen = seen_blocks.lock().unwrap().clone();
    let first_confirm = confirmed.values().copied().min().unwrap();
    let last_callback = called_back.values().copied().max().unwrap();
    let mut confirm_to_callback: Vec<Duration> = called_back
        .iter()
        .map(|(id, at)| ms_between(confirmed[id], *at))
        .collect();
    confirm_to_callback.sort();
    let mut block_to_callback: Vec<Duration> = called_back
        .iter()
        .map(|(id, at)| ms_between(seen[&deposit_block[id]], *at))
        .collect();
    block_to_callback.sort();
    let mut per_block: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    for (id, at) in &called_back {
        let block = deposit_block[id];
        let slot = per_block.entry(block).or_default();
        slot.0 += 1;
        slot.1 = slot.1.max(at.saturating_sub(seen[&block]));
    }
    let run = MintRun {
        count,
        span: ms_between(first_confirm, last_callback),
        confirm_to_callback_p50: percentile(&confirm_to_callback, 0.5),
        confirm_to_callback_p99: percentile(&confirm_to_callback, 0.99),
        block_to_callback_p50: percentile(&block_to_callback, 0.5),
        block_to_callback_p95: percentile(&block_to_callback, 0.95),
        gas_per_mint: gas_used as f64 / count as f64,
        block_gas_limit,
        transactions: chain.nonce_latest().await.unwrap() - nonce_before,
        resent: issuer::metrics::metrics().txs_resent.get() - resent_before,
        blocks: deposit_block
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
    };
    println!(
        "mints ({label}): {count} confirmed mints, each deposited once and called back once, anvil 1-second blocks"
    );
    println!(
        "  first confirm to last callback {:.2} s, {:.1} mints/s; gas bound {:.0} mints/s ({} gas per block / {:.0} gas per mint): {:.0} %",
        run.span.as_secs_f64(),
        run.rate(),
        run.bound(),
        run.block_gas_limit,
        run.gas_per_mint,
        run.rate() / run.bound() * 100.0
    );
    println!(
        "  confirm-to-callback median {:.0} ms, p99 {:.0} ms; block-to-callback median {:.0} ms, p95 {:.0} ms",
        ms(run.confirm_to_callback_p50),
        ms(run.confirm_to_callback_p99),
        ms(run.block_to_callback_p50),
        ms(run.block_to_callback_p95),
    );
    println!(
        "  {} transactions signed by the {} signer (one signature each), {} re-sent, deposits in {} blocks",
        run.transactions,
        signer.kind(),
        run.resent,
        run.blocks
    );
    println!(
        "  per block (mints, slowest block-to-callback ms): {}",
        per_block
            .values()
            .map(|(n, slowest)| format!("({n}, {slowest})"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    issuer.stop().await;
    run
}

/// The batched mints again, signed by a KMS key in moto's KMS server; skipped without moto.
async fn mints_with_kms(count: usize) {
    if !common::remote::KmsEmulator::available() {
        println!("mints (aws-kms): skipped: moto is not installed (python3 -m pip install 'moto[server]')");
        return;
    }
    let kms = common::remote::KmsEmulator::start().await;
    let key_id = kms.create_key().await;
    let signer = issuer::chain::BotSigner::Kms(Arc::new(kms.signer(&key_id).await));
    mints_signed_by(
        "aws-kms",
        count,
        Policy::default(),
        Some(signer),
        During::Nothing,
    )
    .await;
}

/// A mint record of 1 share for `trid`, in the given journal and callback states.
fn mint_record(
    trid: reconciler::TokenizationRequestId,
    journal: reconciler::Journal,
    callback: reconciler::Callback,
) -> issuer::store::MintRecord {
    issuer::store::MintRecord {
        intent: reconciler::MintIntent {
            issuer_request_id: reconciler::IssuerRequestId::for_mint(&trid),
            tokenization_request_id: trid,
            client: reconciler::ClientRef::ClientExternalAccountId(
                reconciler::ClientId::parse("c").unwrap(),
            ),
            wallet: AP_WALLET.parse().unwrap(),
            underlying: reconciler::Symbol::parse("AAPL").unwrap(),
            token: reconciler::Symbol::parse("tAAPL").unwrap(),
            network: reconciler::Network::parse("anvil").unwrap(),
            qty: reconciler::Qty::parse("1").unwrap(),
            vault: alloy::primitives::Address::ZERO,
            journal,
            callback,
            failed_attempts: 0,
            accepted_at: 0,
        },
        fingerprint: String::new(),
        reject_reason: None,
        problem: None,
        confirmed_at_ms: None,
    }
}

/// The store alone: 64 threads submitting issuances, to tell commit cost from HTTP cost.
fn store_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    let metrics = issuer::metrics::metrics();
    let before = (metrics.store_commits.get(), metrics.store_writes.get());
    let started = Instant::now();
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let trid =
                        reconciler::TokenizationRequestId::parse(&format!("s-{t}-{i}")).unwrap();
                    let record = mint_record(
                        trid,
                        reconciler::Journal::Pending,
                        reconciler::Callback::NotSent,
                    );
                    store.submit_issuance(record).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    let commits = metrics.store_commits.get() - before.0;
    let writes = metrics.store_writes.get() - before.1;
    println!(
        "store alone: 6400 group-committed issuances from 64 threads: {:.0}/s, {commits} commits of {:.1} writes each",
        6400.0 / elapsed.as_secs_f64(),
        writes as f64 / commits.max(1) as f64
    );
}

/// Adds finished history with numbers `from..to`: a mint acknowledged by Alpaca with its
/// deposit, a burned redemption with its burn, and our settled transactions (one per 40 mints,
/// one per burn), written in chunks as a long-running issuer would have.
fn add_history(store: &RedbStore, from: u64, to: u64) {
    use alloy::primitives::{Address, Bytes, B256, U256};
    const CHUNK: u64 = 10_000;
    let mut at = from;
    while at < to {
        let end = (at + CHUNK).min(to);
        let (mut mints, mut deposits, mut redemptions, mut burns) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in at..end {
            let trid = reconciler::TokenizationRequestId::parse(&format!("h-{i}")).unwrap();
            let irid = reconciler::IssuerRequestId::for_mint(&trid);
            let tx_hash = B256::from(U256::from(i + 1));
            deposits.push(reconciler::ObservedDeposit {
                vault: Address::ZERO,
                issuer_request_id: irid.clone(),
                tokenization_request_id: trid.clone(),
                owner: Address::ZERO,
                assets: U256::from(1u64),
                receipt_id: U256::from(i + 1),
                block_number: i,
                block_hash: tx_hash,
                tx_hash,
                log_index: 0,
            });
            mints.push(mint_record(
                trid,
                reconciler::Journal::Completed,
                reconciler::Callback::Acked { tx_hash },
            ));
            let transfer = B256::from(U256::from(u64::MAX - i));
            let redemption = redemption_record(
                transfer,
                i,
                reconciler::RedemptionState::Burned {
                    tokenization_request_id: reconciler::TokenizationRequestId::parse(&format!(
                        "r-{i}"
                    ))
                    .unwrap(),
                    tx_hash: transfer,
                },
            );
            burns.push(reconciler::ObservedBurn {
                vault: Address::ZERO,
                redemption_id: redemption.id.clone(),
                shares: U256::from(1u64),
                receipt_id: U256::from(i + 1),
                block_number: i + 1,
                tx_hash: transfer,
                log_index: 1,
            });
            redemptions.push(redemption);
        }
        store.put_mints(mints).unwrap();
        store.put_redemptions(redemptions).unwrap();
        store.record_receipts(deposits, burns).unwrap();
        for i in at..end {
            // A burn per redemption, a mint multicall per 40 mints: nonces 2i and 2i+1.
            for nonce in [2 * i, 2 * i + 1] {
                if nonce % 2 == 0 && i % 40 != 0 {
                    continue;
                }
                store
                    .put_tx(
                        &bench_network(),
                        &issuer::store::TxRecord {
                            nonce,
                            from: Address::ZERO,
                            to: Address::ZERO,
                            purpose: reconciler::TxPurpose::Other {
                                label: "history".into(),
                            },
                            input: Bytes::from(vec![0u8; 200]),
                            gas_limit: 100_000,
                            variants: Vec::new(),
                            settled: Some(issuer::store::Settled {
                                mined_block: Some(i),
                                hash: Some(B256::from(U256::from(nonce))),
                                success: true,
                            }),
                        },
                    )
                    .unwrap();
            }
        }
        at = end;
    }
}

fn redemption_record(
    tx_hash: alloy::primitives::B256,
    block_number: u64,
    state: reconciler::RedemptionState,
) -> reconciler::Redemption {
    reconciler::Redemption {
        id: reconciler::IssuerRequestId::for_redemption(tx_hash, 0),
        vault: alloy::primitives::Address::ZERO,
        underlying: reconciler::Symbol::parse("AAPL").unwrap(),
        token: reconciler::Symbol::parse("tAAPL").unwrap(),
        network: reconciler::Network::parse("anvil").unwrap(),
        sender: AP_WALLET.parse().unwrap(),
        client_id: None,
        client_account_id: None,
        qty: reconciler::Qty::parse("1").unwrap(),
        tx_hash,
        log_index: 0,
        block_number,
        state,
        failed_attempts: 0,
    }
}

/// What a pass reads from the store, as `observe` reads it: our unsettled transactions, the
/// assets and their cursors, the block hashes, and the live items. Milliseconds per pass, after
/// one pass to warm the cache, and the share of `pass_view` in it.
fn pass_reads(store: &RedbStore, live: (usize, usize)) -> (f64, f64) {
    let rounds = 200;
    let mut view_time = Duration::ZERO;
    let mut total = Duration::ZERO;
    for round in 0..=rounds {
        let started = Instant::now();
        let unsettled = store.unsettled_txs(&bench_network()).unwrap();
        for asset in store.assets().unwrap() {
            let _ = store.cursor(&asset.network, asset.vault).unwrap();
        }
        let _ = store.block_hashes(&bench_network()).unwrap();
        let view_started = Instant::now();
        let view = store.pass_view().unwrap();
        if round > 0 {
            view_time += view_started.elapsed();
            total += started.elapsed();
        }
        assert_eq!((view.mints.len(), view.redemptions.len()), live);
        assert_eq!((view.deposits.len(), view.burns.len()), (1, 1));
        assert_eq!(unsettled.len(), 1);
    }
    (
        ms(total) / f64::from(rounds),
        ms(view_time) / f64::from(rounds),
    )
}

/// The reads a pass made before the indexes: every mint, deposit, redemption and burn.
fn full_scans(store: &RedbStore) -> f64 {
    let rounds = 3;
    let started = Instant::now();
    for _ in 0..rounds {
        let _ = store.mints(Select::All).unwrap();
        let _ = store.deposits().unwrap();
        let _ = store.redemptions(Select::All).unwrap();
        let _ = store.burns().unwrap();
    }
    ms(started.elapsed()) / f64::from(rounds)
}

/// Peak resident memory of this process in MiB (`VmHWM`), where Linux reports it.
fn peak_rss_mib() -> Option<f64> {
    peak_rss_mib_of("/proc/self/status")
}

/// Peak resident memory in MiB (`VmHWM`) from a `/proc/<pid>/status` file.
fn peak_rss_mib_of(status: &str) -> Option<f64> {
    let status = std::fs::read_to_string(status).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Goal 4: one pass's store reads do not grow with history. A store with a few live items (40
/// active mints, one with a deposit; 10 open redemptions, one with a burn; one unsettled
/// transaction) under 10,000 and then 100,000 finished mints and finished redemptions.
fn pass_reads_at_history() -> (f64, tempfile::TempDir) {
    use alloy::primitives::{B256, U256};
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("h.redb")).unwrap();
    let mut active = Vec::new();
    for i in 0..40u64 {
        let trid = reconciler::TokenizationRequestId::parse(&format!("a-{i}")).unwrap();
        active.push(mint_record(
            trid,
            reconciler::Journal::Completed,
            reconciler::Callback::NotSent,
        ));
    }
    store.put_mints(active).unwrap();
    store
        .put_redemptions(
            (0..10u64)
                .map(|i| {
                    redemption_record(
                        B256::from(U256::from(1_000_000_000 + i)),
                        i,
                        reconciler::RedemptionState::Detected,
                    )
                })
                .collect(),
        )
        .unwrap();
    store
        .put_tx(
            &bench_network(),
            &issuer::store::TxRecord {
                nonce: u64::MAX / 2,
                from: alloy::primitives::Address::ZERO,
                to: alloy::primitives::Address::ZERO,
                purpose: reconciler::TxPurpose::Other {
                    label: "live".into(),
                },
                input: alloy::primitives::Bytes::new(),
                gas_limit: 21_000,
                variants: Vec::new(),
                settled: None,
            },
        )
        .unwrap();
    let live = (40, 10);
    let first = reconciler::TokenizationRequestId::parse("a-0").unwrap();
    store
        .record_receipts(
            vec![reconciler::ObservedDeposit {
                vault: alloy::primitives::Address::ZERO,
                issuer_request_id: reconciler::IssuerRequestId::for_mint(&first),
                tokenization_request_id: first,
                owner: alloy::primitives::Address::ZERO,
                assets: U256::from(1u64),
                receipt_id: U256::from(u64::MAX),
                block_number: 5,
                block_hash: B256::repeat_byte(5),
                tx_hash: B256::repeat_byte(5),
                log_index: 7,
            }],
            vec![reconciler::ObservedBurn {
                vault: alloy::primitives::Address::ZERO,
                redemption_id: reconciler::IssuerRequestId::for_redemption(
                    B256::from(U256::from(1_000_000_000u64)),
                    0,
                ),
                shares: U256::from(1u64),
                receipt_id: U256::from(u64::MAX),
                block_number: 6,
                tx_hash: B256::repeat_byte(6),
                log_index: 7,
            }],
        )
        .unwrap();

    add_history(&store, 0, 10_000);
    let ((reads_small, view_small), scans_small) = (pass_reads(&store, live), full_scans(&store));
    add_history(&store, 10_000, 100_000);
    let ((reads_large, view_large), scans_large) = (pass_reads(&store, live), full_scans(&store));
    println!(
        "goal 4: {reads_large:.2} ms per pass's store reads at 100,000 finished mints and redemptions (target < 5 ms; {reads_small:.2} ms at 10,000)"
    );
    println!(
        "goal 4: of which pass_view (40 active mints, 10 open redemptions) {view_large:.2} ms at 100,000, {view_small:.2} ms at 10,000"
    );
    println!(
        "goal 4: {scans_large:.0} ms for the full scans a pass made before the indexes at 100,000 ({scans_small:.0} ms at 10,000)"
    );
    if let Some(peak) = peak_rss_mib() {
        println!("goal 4: {peak:.0} MiB peak RSS of the bench process (history built in memory in chunks of 10,000)");
    }
    store.close();
    (reads_large, dir)
}

/// Goal 4's memory: the peak RSS of `issuer serve` (the release binary, its own process) on the
/// store [`pass_reads_at_history`] left (100,000 finished mints and redemptions, 40 active
/// mints), against anvil and the simulator, after about 30 passes at a 100 ms interval.
async fn serve_rss_at_history(history: &std::path::Path) -> Option<f64> {
    let world = World::start(Some(1)).await;
    let port = common::loopback_listener().local_addr().ok()?.port();
    let db = history.join("h.redb");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .arg("serve")
        .args(["--db", db.to_str()?])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--rpc-url", &world.rpc()])
        .args(["--alpaca-base-url", &world.sim_url])
        .args(["--reconcile-interval-ms", "100"])
        .env("RUST_LOG", "error")
        .env_remove("ISSUER_NETWORKS")
        .env_remove("ISSUER_NETWORK")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let live = format!("http://127.0.0.1:{port}/livez");
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut up = false;
    while started.elapsed() < Duration::from_secs(30) && !up {
        up = client
            .get(&live)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut passes = String::new();
    if up {
        tokio::time::sleep(Duration::from_secs(3)).await;
        if let Ok(answer) = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        {
            passes = answer
                .text()
                .await
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("issuer_passes_total"))
                .collect::<Vec<_>>()
                .join(", ");
        }
    }
    let peak = peak_rss_mib_of(&format!("/proc/{}/status", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    if !up {
        println!("goal 4: issuer serve did not come up on the history store within 30 s");
        return None;
    }
    println!("issuer serve on the history store after 3 s: {passes}");
    peak
}

/// Mints per seeding multicall in [`report_over_mints`]: about 9M gas, under the 15M a 30M
/// block targets, so the base fee falls instead of compounding over hundreds of full blocks
/// (which priced the bot out and left the seeding unmined).
const SEED_MINTS_PER_TX: usize = 120;
/// Redemptions added to goal 4's history for a second report (printed, not a goal).
const REPORT_REDEMPTIONS: usize = 20_000;

/// Goal 4's audit: the seconds `issuer report` (the release binary, its own process) takes over
/// `count` mints: `count` deposits on anvil, made by the bot as the issuer makes them (multicalls
/// of [`SEED_MINTS_PER_TX`], each tagged with its request ids), and Alpaca's `count` completed
/// mint requests in the simulator. `None` (and a line saying why) when the report fails or
/// does not account for every mint.
async fn report_over_mints(count: usize, redemptions: usize) -> Option<f64> {
    use reconciler::meta::{self, ReceiptInfo};
    let world = World::start(None).await;
    let signer: issuer::chain::BotSigner = common::bot().into();
    let chain = issuer::chain::Chain::connect(&world.rpc(), signer)
        .await
        .ok()?;
    let receiver: alloy::primitives::Address = AP_WALLET.parse().ok()?;
    let units = reconciler::Qty::parse("1").ok()?.units();
    let seeded = std::time::Instant::now();
    let mut nonce = chain.nonce_latest().await.ok()?;
    let ids: Vec<(String, String)> = (0..count)
        .map(|i| {
            let trid = format!("audit-{i}");
            let irid = reconciler::IssuerRequestId::for_mint(
                &reconciler::TokenizationRequestId::parse(&trid).unwrap(),
            );
            (trid, irid.to_string())
        })
        .collect();
    for (trid, irid) in &ids {
        world
            .sim
            .add_mint_request(world.new_mint(trid, Some(irid.clone()), "1"))
            .ok()?;
        world.sim.complete(trid).ok()?;
    }
    let mut hashes = Vec::new();
    let mut gas: Option<(usize, u64)> = None;
    for chunk in ids.chunks(SEED_MINTS_PER_TX) {
        let items: Vec<_> = chunk
            .iter()
            .map(|(trid, irid)| {
                let info = meta::encode(&ReceiptInfo {
                    tokenization_request_id: trid.clone(),
                    issuer_request_id: irid.clone(),
                    underlying: "AAPL".into(),
                    quantity: "1".into(),
                    timestamp: 0,
                    notes: String::new(),
                });
                (receiver, units, info)
            })
            .collect();
        let input = issuer::chain::mint_calldata(chain.bot(), &items);
        // One estimate per size: every full chunk costs the same.
        if gas.is_none_or(|(size, _)| size != items.len()) {
            gas = Some((
                items.len(),
                chain
                    .estimate_gas(world.deployed.vault, &input)
                    .await
                    .ok()?,
            ));
        }
        let gas_limit = gas.map_or(0, |(_, limit)| limit);
        let fees = chain.fees().await.ok()?;
        let (hash, raw) = chain
            .sign(nonce, world.deployed.vault, input, gas_limit, fees)
            .await
            .ok()?;
        hashes.push(hash);
        chain.broadcast(&raw).await.ok()?;
        nonce += 1;
    }
    let waiting = std::time::Instant::now();
    while chain.nonce_latest().await.ok()? < nonce {
        if waiting.elapsed() > Duration::from_secs(120) {
            println!(
                "report over {count} mints: the seeding transactions were not all mined in 120 s"
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = chain.head().await.ok()?;
    println!(
        "report over {count} mints: seeded in {:.1} s ({} transactions, {} blocks)",
        seeded.elapsed().as_secs_f64(),
        hashes.len(),
        head.saturating_sub(world.deployed.deploy_block),
    );
    let (seconds, report) = run_report(&world, head).await?;
    let deposits = report.pointer("/assets/0/totals/deposits").cloned();
    let balanced = report.get("balanced").cloned();
    println!(
        "report over {count} mints: {seconds:.2} s, deposits {deposits:?}, balanced {balanced:?}"
    );
    let complete = deposits.and_then(|d| d.as_u64()) == u64::try_from(count).ok()
        && balanced == Some(serde_json::Value::Bool(true));
    if redemptions > 0 {
        redemptions_then_report(&world, &chain, redemptions).await;
    }
    complete.then_some(seconds)
}

/// The same history and `redemptions` more: the AP's wallet sends shares back to the bot in
/// multicalls of [`SEED_MINTS_PER_TX`] transfers, and the report reads each one's place in its
/// transaction. Printed, not a goal.
async fn redemptions_then_report(world: &World, chain: &issuer::chain::Chain, redemptions: usize) {
    use alloy::providers::Provider as _;
    use alloy::sol_types::SolCall as _;
    let ap = world.as_key(common::STRANGER_KEY);
    let units = reconciler::Qty::parse("1").unwrap().units();
    let seeded = std::time::Instant::now();
    let mut pending = Vec::new();
    for start in (0..redemptions).step_by(SEED_MINTS_PER_TX) {
        let calls: Vec<alloy::primitives::Bytes> = (start
            ..redemptions.min(start + SEED_MINTS_PER_TX))
            .map(|_| {
                issuer::chain::Vault::transferCall {
                    to: chain.bot(),
                    value: units,
                }
                .abi_encode()
                .into()
            })
            .collect();
        let input = issuer::chain::Vault::multicallCall { data: calls }.abi_encode();
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(world.deployed.vault)
            .input(input.into());
        match ap.send_transaction(tx).await {
            Ok(sent) => pending.push(sent),
            Err(e) => {
                println!("report over redemptions: a transfer batch was refused: {e}");
                return;
            }
        }
    }
    for sent in pending {
        if !sent.get_receipt().await.is_ok_and(|r| r.status()) {
            println!("report over redemptions: a transfer batch failed");
            return;
        }
    }
    let Ok(head) = chain.head().await else {
        return;
    };
    println!(
        "report over {redemptions} more redemptions: seeded in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    if let Some((seconds, report)) = run_report(world, head).await {
        let counted = report.pointer("/assets/0/totals/redemptions").cloned();
        println!(
            "report over the mints and {redemptions} redemptions: {seconds:.2} s, redemptions {counted:?}{}",
            if counted.as_ref().and_then(serde_json::Value::as_u64) == u64::try_from(redemptions).ok() {
                ""
            } else {
                " (NOT every redemption counted)"
            }
        );
    }
}

/// `issuer report` (the release binary, its own process) at `head` of `world`: its seconds and
/// its JSON, and its log lines that say where the time went. `None` (and a line saying why) when
/// it fails or takes more than 120 s.
async fn run_report(world: &World, head: u64) -> Option<(f64, serde_json::Value)> {
    let mut args: Vec<String> = vec![
        "report".into(),
        "--rpc-url".into(),
        world.rpc(),
        "--at-block".into(),
        head.to_string(),
    ];
    args.extend(world.vault_flags());
    args.extend(alpaca_flags(&world.sim_url));
    let started = std::time::Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
        .args(&args)
        .env_remove("BOT_PRIVATE_KEY")
        .env_remove("ISSUER_DB")
        .env_remove("CONFIRMATIONS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let pid = child.id();
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    let Ok(done) = waited else {
        // The report is its own process: stop it rather than hang the bench.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
        println!("report at block {head}: no answer in 120 s");
        return None;
    };
    let output = done.ok()?.ok()?;
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&output.stdout);
    println!(
        "report at block {head}: {seconds:.2} s, exit {:?}, {} KB of JSON",
        output.status.code(),
        text.len() / 1024,
    );
    for line in String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("report: "))
    {
        println!("  {line}");
    }
    if !output.status.success() {
        return None;
    }
    serde_json::from_str(&text).ok().map(|json| (seconds, json))
}

/// Goal 5's figures: intake at 64 clients while the 2,000 mints are minted, and the run itself.
async fn mints_with_intake(count: usize) -> (MintRun, (f64, Duration)) {
    let (tell, confirmed_all) = tokio::sync::oneshot::channel();
    let intake_during = tokio::spawn(async move {
        let _ = confirmed_all.await;
        intake().await
    });
    let run = mints_signed_by(
        &format!("{count}-with-intake"),
        count,
        Policy::default(),
        None,
        During::Tell(tell),
    )
    .await;
    (run, intake_during.await.unwrap())
}

/// Intake into the minting issuer itself while it mints `count`: the shape of production, where
/// the passes' records and Alpaca's requests share one store and its writer (goal 5 measures
/// intake into a store of its own in the same process).
async fn mints_with_intake_into_issuer(count: usize) -> MintRun {
    mints_signed_by(
        &format!("{count}-with-intake-into-the-issuer"),
        count,
        Policy::default(),
        None,
        During::IntakeIntoIssuer,
    )
    .await
}

/// What runs beside a mint run once every mint is confirmed.
enum During {
    Nothing,
    /// The caller is told, and starts intake into a store of its own ([`mints_with_intake`]).
    Tell(tokio::sync::oneshot::Sender<()>),
    /// Intake into the minting issuer itself, as in production: the same HTTP server, store and
    /// writer as the passes' records, its requests queued behind theirs.
    IntakeIntoIssuer,
}

/// `(target ...)` or `(target ...: MISSED)`.
fn target(text: &str, met: bool) -> String {
    if met {
        format!("(target {text})")
    } else {
        format!("(target {text}: MISSED)")
    }
}

/// One line per goal of issue 16, the measured figure first.
fn print_goals(
    store_reads_ms: f64,
    serve_rss: Option<f64>,
    report_s: Option<f64>,
    m200: &MintRun,
    m1000: &MintRun,
    m2000: &MintRun,
    intake: (f64, Duration),
) {
    let ratio = m2000.rate() / m2000.bound();
    println!(
        "goal 1: {:.2} of the gas bound at 2000 mints ({:.0} mints/s of {:.0}: {} gas per block / {:.0} gas per mint at 1-second blocks) {}",
        ratio,
        m2000.rate(),
        m2000.bound(),
        m2000.block_gas_limit,
        m2000.gas_per_mint,
        target(">= 0.80", ratio >= 0.8)
    );
    for run in [m200, m2000] {
        let p95 = run.block_to_callback_p95.as_secs_f64();
        println!(
            "goal 2: {p95:.2} s block->callback p95 at {} mints {}",
            run.count,
            target("< 0.3 s", p95 < 0.3)
        );
    }
    for (run, limit) in [(m200, 1.0), (m1000, 2.0)] {
        let p50 = run.confirm_to_callback_p50.as_secs_f64();
        println!(
            "goal 3: {p50:.2} s confirm->callback p50 at {} mints {}",
            run.count,
            target(&format!("< {limit:.1} s"), p50 < limit)
        );
    }
    println!(
        "goal 4: {store_reads_ms:.2} ms per pass's store reads at 100,000 finished items {}",
        target("< 5 ms", store_reads_ms < 5.0)
    );
    match serve_rss {
        Some(mib) => println!(
            "goal 4: {mib:.1} MiB peak RSS of issuer serve on 100,000 finished mints and redemptions {}",
            target("< 64 MB", mib * 1_048_576.0 < 64_000_000.0)
        ),
        None => println!("goal 4: peak RSS of issuer serve not measured: MISSED"),
    }
    match report_s {
        Some(seconds) => println!(
            "goal 4: {seconds:.1} s for issuer report over 100,000 mints {}",
            target("< 10 s", seconds < 10.0)
        ),
        None => println!("goal 4: issuer report over 100,000 mints not measured (BENCH_ONLY=report measures it): MISSED"),
    }
    let (rps, p99) = intake;
    println!(
        "goal 5: {rps:.0} durable issuances/s at 64 clients, p99 {:.1} ms, while 2000 mints were minted (own store, same process) {}",
        ms(p99),
        target(">= 10000/s, p99 < 20 ms", rps >= 10_000.0 && ms(p99) < 20.0)
    );
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmarks run with `just bench` (cargo bench)");
        return;
    }
    // `BENCH_LOG=1`: the issuer's logs on stderr (`RUST_LOG` filters), e.g. each pass's timings.
    if std::env::var_os("BENCH_LOG").is_some() {
        issuer::telemetry::init(issuer::telemetry::LogFormat::Human);
    }
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let mut store_reads_ms = f64::NAN;
    let mut history = None;
    if !matches!(only.as_str(), "signers" | "mints" | "2000" | "report") {
        store_only();
        if only != "intake" {
            let (reads, dir) = pass_reads_at_history();
            store_reads_ms = reads;
            history = Some(dir);
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let serve_rss = match &history {
            Some(dir) => serve_rss_at_history(dir.path()).await,
            None => None,
        };
        if let Some(mib) = serve_rss {
            println!("issuer serve on the store of 100,000 finished mints and redemptions: peak RSS {mib:.1} MiB");
        }
        if only == "store" {
            return;
        }
        if only == "report" {
            let count = std::env::var("BENCH_REPORT_MINTS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(100_000);
            let redemptions = std::env::var("BENCH_REPORT_REDEMPTIONS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(REPORT_REDEMPTIONS);
            report_over_mints(count, redemptions).await;
            return;
        }
        if std::env::var("BENCH_ONLY").as_deref() == Ok("signers") {
            mints("batched", 200, Policy::default()).await;
            mints_with_kms(200).await;
            return;
        }
        if only != "mints" {
            metrics_overhead().await;
            // Listed assets must not cost each request: 500 listed, against one above.
            intake_with_assets(500).await;
        }
        if only == "intake" {
            return;
        }
        if only == "2000" {
            mints("2000", 2000, Policy::default()).await;
            mints_with_intake(2000).await;
            mints_with_intake_into_issuer(2000).await;
            return;
        }
        let m200 = mints("200", 200, Policy::default()).await;
        let m1000 = mints("1000", 1000, Policy::default()).await;
        let m2000 = mints("2000", 2000, Policy::default()).await;
        let (_, intake_during) = mints_with_intake(2000).await;
        mints_with_intake_into_issuer(2000).await;
        if only == "mints" {
            print_goals(
                store_reads_ms,
                serve_rss,
                None,
                &m200,
                &m1000,
                &m2000,
                intake_during,
            );
            return;
        }
        mints(
            "one-at-a-time",
            20,
            Policy {
                mints_per_tx_max: 1,
                txs_in_flight_max: 1,
                ..Policy::default()
            },
        )
        .await;
        mints_with_kms(200).await;
        let report_s = report_over_mints(100_000, REPORT_REDEMPTIONS).await;
        print_goals(
            store_reads_ms,
            serve_rss,
            report_s,
            &m200,
            &m1000,
            &m2000,
            intake_during,
        );
    });
}

/// The one network the bench's store serves.
fn bench_network() -> reconciler::Network {
    reconciler::Network::parse("anvil").unwrap()
}

/// One keep-alive HTTP/1.1 connection, as lean as a load generator can be: the bench runs on the
/// issuer's two cores, and every microsecond the client spends is one the server does not get.
/// It writes each request in one `write` and reads the answer's head and its `Content-Length`
/// body; anything else (chunked bodies, a closed connection) fails the bench.
struct KeepAlive {
    stream: tokio::net::TcpStream,
    host: String,
    buffer: Vec<u8>,
}

impl KeepAlive {
    async fn connect(addr: std::net::SocketAddr) -> KeepAlive {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        KeepAlive {
            stream,
            host: addr.to_string(),
            buffer: Vec::with_capacity(4096),
        }
    }

    /// `POST path` with a JSON body and the Alpaca key: the status and the body.
    async fn post(&mut self, path: &str, key: &str, body: &str) -> (u16, Vec<u8>) {
        use tokio::io::AsyncWriteExt;
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await.unwrap();
        self.buffer.clear();
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.read_more().await;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).unwrap();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a Content-Length answer");
        while self.buffer.len() < head_end + length {
            self.read_more().await;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        assert_eq!(
            self.buffer.len(),
            head_end + length,
            "one answer per request"
        );
        (status, body)
    }

    async fn read_more(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
    }
}
