//! `issuer report` answers from the chain and Alpaca alone: after mints converge the difference is
//! zero; deleting the cache gives the byte-identical report; a report at an earlier block leaves
//! later mints out; a deposit the bot made with no Alpaca request is an item; a signed report
//! verifies against the issuer's address and a tampered one fails with a non-zero exit.
//! Real anvil, the real binary and the Alpaca simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::network::EthereumWallet;
use alloy::primitives::U256;
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use common::capped_node::CappedNode;
use common::stack::{alpaca_flags, eventually, Issuer, World};
use reconciler::Policy;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

/// Runs `issuer report` against the world's chain and simulator with `extra` flags.
async fn report(world: &World, extra: Vec<String>) -> Output {
    report_via(world, world.rpc(), extra).await
}

/// [`report`] with the chain read through `rpc`.
async fn report_via(world: &World, rpc: String, extra: Vec<String>) -> Output {
    let mut args: Vec<String> = vec!["report".into(), "--rpc-url".into(), rpc];
    args.extend(alpaca_flags(&world.sim_url));
    args.extend(extra);
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
            .args(&args)
            .env_remove("BOT_PRIVATE_KEY")
            .env_remove("ISSUER_DB")
            .env_remove("CONFIRMATIONS")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "report failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn vault_flags(world: &World) -> Vec<String> {
    world.vault_flags()
}

fn at(block: u64) -> Vec<String> {
    vec!["--at-block".into(), block.to_string()]
}

async fn head(world: &World) -> u64 {
    let provider = ProviderBuilder::new().connect_http(world.rpc().parse().unwrap());
    provider.get_block_number().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn converged_mints_balance_and_the_cache_changes_nothing() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.mint(&issuer.url, "tr-report-1", "1.5").await;
    eventually(Duration::from_secs(30), "first callback", || async {
        world.sim.mint_callback_count("tr-report-1") >= 1
    })
    .await;
    let after_first = head(&world).await;
    world.mint(&issuer.url, "tr-report-2", "2.000000001").await;
    eventually(Duration::from_secs(30), "second callback", || async {
        world.sim.mint_callback_count("tr-report-2") >= 1
    })
    .await;
    issuer.stop().await;
    let block = head(&world).await;

    // From the store's asset list.
    let db = vec!["--db".to_owned(), world.db_path.display().to_string()];
    let with_cache = ok(&report(&world, [db.clone(), at(block)].concat()).await);
    let json: Value = serde_json::from_str(&with_cache).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["balanced"], true, "{json:#}");
    let asset = &json["assets"][0];
    assert_eq!(asset["difference"], "0");
    assert_eq!(asset["totals"]["total_supply"], "3.500000001");
    assert_eq!(asset["totals"]["alpaca_minted"], "3.500000001");
    assert_eq!(asset["totals"]["minted"], "3.500000001");
    assert_eq!(asset["items"].as_array().unwrap().len(), 0, "{json:#}");
    assert_eq!(asset["receipts"].as_array().unwrap().len(), 2);

    // The cache is gone: the same report, byte for byte, from the flags.
    std::fs::remove_file(&world.db_path).unwrap();
    let without_cache = ok(&report(&world, [vault_flags(&world), at(block)].concat()).await);
    assert_eq!(
        with_cache, without_cache,
        "deleting the cache must not change the report"
    );
    let missing = report(&world, [db, at(block)].concat()).await;
    assert!(
        !missing.status.success(),
        "no store and no --vault: a clear error, not an empty report"
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--vault"));

    // At the block of the first mint the second one does not exist yet, on either side.
    let earlier: Value = serde_json::from_str(&ok(&report(
        &world,
        [vault_flags(&world), at(after_first)].concat(),
    )
    .await))
    .unwrap();
    let asset = &earlier["assets"][0];
    assert_eq!(earlier["balanced"], true, "{earlier:#}");
    assert_eq!(asset["totals"]["total_supply"], "1.5");
    assert_eq!(asset["totals"]["alpaca_minted"], "1.5");
    assert_eq!(asset["totals"]["alpaca_after_block"], 1);

    // The other formats carry the same book.
    let markdown = ok(&report(
        &world,
        [
            vault_flags(&world),
            at(block),
            vec!["--format".into(), "markdown".into()],
        ]
        .concat(),
    )
    .await);
    assert!(markdown.contains("BALANCED"), "{markdown}");
    assert!(
        markdown.contains("| Total supply on chain | 3.500000001 |"),
        "{markdown}"
    );
    let html = ok(&report(
        &world,
        [
            vault_flags(&world),
            at(block),
            vec!["--format".into(), "html".into()],
        ]
        .concat(),
    )
    .await);
    assert!(
        html.starts_with("<!doctype html>")
            && html.contains("<svg")
            && html.contains("tr-report-2")
    );
    let csv = ok(&report(
        &world,
        [
            vault_flags(&world),
            at(block),
            vec!["--format".into(), "csv".into()],
        ]
        .concat(),
    )
    .await);
    assert_eq!(
        csv.lines().count(),
        2,
        "a clean book has only the header and the verdict: {csv}"
    );
    assert!(csv.lines().nth(1).unwrap().contains(",verdict,"), "{csv}");
    assert!(csv.contains("BALANCED: every token"), "{csv}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deposit_without_a_request_is_an_item() {
    let world = World::start(None).await;
    let receipt = deposit_without_request(&world, "made-up", 7).await;
    let block = head(&world).await;

    let json: Value = serde_json::from_str(&ok(&report(
        &world,
        [vault_flags(&world), at(block)].concat(),
    )
    .await))
    .unwrap();
    assert_eq!(json["balanced"], false);
    let asset = &json["assets"][0];
    assert_eq!(asset["difference"], "7");
    assert_eq!(asset["unexplained"], "0");
    let items = asset["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{json:#}");
    assert_eq!(items[0]["kind"], "deposit_without_request");
    assert_eq!(items[0]["tokenization_request_id"], "made-up");
    assert_eq!(items[0]["effect"], "7");
    assert_eq!(
        items[0]["at"]["tx_hash"],
        format!("{:#x}", receipt.transaction_hash)
    );

    let csv = ok(&report(
        &world,
        [
            vault_flags(&world),
            at(block),
            vec!["--format".into(), "csv".into()],
        ]
        .concat(),
    )
    .await);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .contains(",deposit_without_request,"),
        "{csv}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_report_verifies_and_a_tampered_one_does_not() {
    let world = World::start(None).await;
    let block = head(&world).await;
    let file = world.dir.path().join("signed.json");
    let out = vec![
        "--sign".to_owned(),
        "--out".to_owned(),
        file.display().to_string(),
    ];
    ok(&report(&world, [vault_flags(&world), at(block), out].concat()).await);
    let bot = format!("{:#x}", common::bot().address());

    let verify = |path: std::path::PathBuf, address: String| async move {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_issuer"))
                .args([
                    "report",
                    "verify",
                    &path.display().to_string(),
                    "--address",
                    &address,
                ])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let good = verify(file.clone(), bot.clone()).await;
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let stranger = format!("{:#x}", common::stranger().address());
    let wrong = verify(file.clone(), stranger).await;
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("signature check failed"));

    let text = std::fs::read_to_string(&file).unwrap();
    let tampered_text = text.replacen(
        &format!("\"at_block\": {block}"),
        &format!("\"at_block\": {}", block + 1),
        1,
    );
    assert_ne!(tampered_text, text);
    let tampered = world.dir.path().join("tampered.json");
    std::fs::write(&tampered, tampered_text).unwrap();
    let bad = verify(tampered, bot).await;
    assert!(!bad.status.success(), "a tampered report must not verify");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("altered"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// The report asks for logs in ranges that start at 16 blocks and grow on a sparse history; a
/// deposit on either side of a range's edge, one after an empty stretch longer than a node's
/// widest range, and one after the report's block: the first three are counted, each once,
/// and the last is not.
#[tokio::test(flavor = "multi_thread")]
async fn deposits_across_the_log_ranges_are_each_counted_once() {
    let world = World::start(None).await;
    let provider = ProviderBuilder::new().connect_http(world.rpc().parse().unwrap());
    let d = world.deployed.deploy_block;
    let mut deposits = Vec::new();
    for (n, block) in [
        (1u64, d + 15),
        (2, d + 16),
        (3, d + 16 + 2_500),
        (4, d + 16 + 2_510),
    ] {
        let now = provider.get_block_number().await.unwrap();
        assert!(now < block, "the chain is already at {now}, past {block}");
        if block - now > 1 {
            let _: Value = provider
                .raw_request("anvil_mine".into(), (format!("{:#x}", block - now - 1),))
                .await
                .unwrap();
        }
        let receipt = deposit_without_request(&world, &format!("spread-{n}"), n).await;
        assert_eq!(receipt.block_number, Some(block), "deposit {n}'s block");
        deposits.push(receipt.transaction_hash);
    }

    let json: Value = serde_json::from_str(&ok(&report(
        &world,
        [vault_flags(&world), at(d + 16 + 2_505)].concat(),
    )
    .await))
    .unwrap();
    let asset = &json["assets"][0];
    assert_eq!(asset["totals"]["deposits"], 3, "{asset:#}");
    assert_eq!(asset["difference"], "6", "1 + 2 + 3 shares with no request");
    let items: Vec<String> = asset["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["at"]["tx_hash"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = deposits[..3].iter().map(|h| format!("{h:#x}")).collect();
    assert_eq!(items, expected, "one item per deposit, in chain order");
}

/// The bot deposits `shares` to the AP's wallet, tagged as Alpaca's `trid` (`mint-{trid}`), with
/// no Alpaca request behind it (an item in the report); mined in its own block (automine).
async fn deposit_without_request(
    world: &World,
    trid: &str,
    shares: u64,
) -> alloy::rpc::types::TransactionReceipt {
    let bot = ProviderBuilder::new()
        .wallet(EthereumWallet::new(common::bot()))
        .connect_http(world.rpc().parse().unwrap());
    let info = reconciler::meta::ReceiptInfo {
        tokenization_request_id: trid.into(),
        issuer_request_id: format!("mint-{trid}"),
        underlying: "AAPL".into(),
        quantity: shares.to_string(),
        timestamp: 1_700_000_000,
        notes: "not from Alpaca".into(),
    };
    let assets = U256::from(shares) * U256::from(10u64).pow(U256::from(18u64));
    let calldata = issuer::chain::mint_calldata(
        common::bot().address(),
        &[(world.ap_wallet, assets, reconciler::meta::encode(&info))],
    );
    let receipt = bot
        .send_transaction(
            TransactionRequest::default()
                .to(world.deployed.vault)
                .input(calldata.into()),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status(), "deposit {trid}");
    receipt
}

/// A node that refuses `eth_getLogs` answers over a cap (hosted providers refuse more than 10,000
/// logs) is asked again in halves, and one that refuses calls for their rate is waited out: the
/// report through either is byte for byte the report made without it. A block whose logs alone
/// are over the cap fails the report, naming the block.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_caps_its_log_answers_is_asked_in_smaller_ranges() {
    let world = World::start(None).await;
    // Six blocks of two vault logs each (Deposit, Transfer).
    let mut blocks = Vec::new();
    for n in 1..=6 {
        let receipt = deposit_without_request(&world, &format!("capped-{n}"), n).await;
        blocks.push(receipt.block_number.unwrap());
    }
    let flags = [vault_flags(&world), at(head(&world).await)].concat();
    let direct = ok(&report(&world, flags.clone()).await);
    let json: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(json["assets"][0]["totals"]["deposits"], 6, "{json:#}");

    let capped = CappedNode::start(&world.rpc(), 3);
    let through = ok(&report_via(&world, capped.url.clone(), flags.clone()).await);
    assert_eq!(
        through, direct,
        "the same report through a node capping answers at 3 logs"
    );
    assert!(
        capped.refused() >= 1 && capped.answered() >= 6,
        "{} refused, {} answered",
        capped.refused(),
        capped.answered()
    );

    // A node refusing every third call for its rate (HTTP 429 and -32005 by turns) is waited out,
    // and its -32005 for an answer too large still splits the range, never retried as a rate.
    let limited = CappedNode::rate_limited(&world.rpc(), 3, 3);
    let through = ok(&report_via(&world, limited.url.clone(), flags.clone()).await);
    assert_eq!(
        through, direct,
        "the same report through a rate-limiting node"
    );
    assert!(
        limited.rate_limited_calls() >= 2 && limited.refused() >= 1,
        "{} refused for rate, {} for size",
        limited.rate_limited_calls(),
        limited.refused()
    );

    let tight = CappedNode::start(&world.rpc(), 1);
    let failed = report_via(&world, tight.url.clone(), flags).await;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(failed.stdout.is_empty(), "no partial report on stdout");
    assert!(
        stderr.contains(&format!(
            "block {}'s logs alone are more than the node answers",
            blocks[0]
        )) && stderr.contains("query returned more than 1 results"),
        "the error names the block and the node's refusal: {stderr}"
    );
}

/// Alpaca's lists are read beside the chain's logs. An Alpaca in an outage (503 to every call)
/// fails the report after the client's retries: a non-zero exit and a message that names Alpaca
/// and its status, not a hang and not a partial report. One that answers 429 to half the calls
/// (Retry-After 1 s) is waited out, and the report is the one made without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_alpaca_fails_the_report_clearly_and_a_rate_limiting_one_is_waited_out() {
    let world = World::start(None).await;
    let block = head(&world).await;
    let flags = [vault_flags(&world), at(block)].concat();
    let clean = ok(&report(&world, flags.clone()).await);

    world
        .sim
        .patch_faults(&issuer::sim::FaultsPatch {
            error_rate_5xx: Some(1.0),
            ..issuer::sim::FaultsPatch::default()
        })
        .unwrap();
    let started = std::time::Instant::now();
    let failed = report(&world, flags.clone()).await;
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "{stderr}");
    assert!(failed.stdout.is_empty(), "no partial report on stdout");
    assert!(
        stderr.contains("alpaca") && stderr.contains("503"),
        "the error names Alpaca and its status: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "gave up after the retries, not a hang: {:?}",
        started.elapsed()
    );

    world
        .sim
        .patch_faults(&issuer::sim::FaultsPatch {
            error_rate_5xx: Some(0.0),
            rate_429: Some(0.5),
            retry_after_secs: Some(1),
            ..issuer::sim::FaultsPatch::default()
        })
        .unwrap();
    assert_eq!(ok(&report(&world, flags).await), clean);
}

/// While the issuer runs (it holds the store), `issuer report` needs no flags beyond where the
/// chain and Alpaca are: it asks the running issuer for the asset list. `--check` exits 0 for a
/// clean balance and 1 when the difference is zero but an item needs attention (an unknown
/// sender's transfer), and every format says so in the same words.
#[tokio::test(flavor = "multi_thread")]
async fn the_report_works_beside_a_running_issuer_and_check_tells_attention_apart() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-check-1", "2").await;
    let running = vec![
        "--db".to_owned(),
        world.db_path.display().to_string(),
        "--issuer-url".to_owned(),
        issuer.url.clone(),
        "--check".to_owned(),
    ];
    let clean = report(&world, running.clone()).await;
    let text = ok(&clean);
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["verdict"], "balanced", "{json:#}");
    assert_eq!(json["attention"], 0);

    // Someone nobody whitelisted (anvil's third account) gets a token from the AP and sends it to
    // the bot: flagged, it waits for an operator, an item that needs attention.
    let outsider_key = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
    let outsider: alloy::primitives::Address = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc"
        .parse()
        .unwrap();
    let one = U256::from(10u64).pow(U256::from(18));
    world.transfer(common::STRANGER_KEY, outsider, one).await;
    world
        .transfer(outsider_key, common::bot().address(), one)
        .await;
    let attention = report(&world, running.clone()).await;
    assert_eq!(
        attention.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&attention.stderr)
    );
    let json: Value = serde_json::from_slice(&attention.stdout).unwrap();
    assert_eq!(json["verdict"], "balanced_with_attention", "{json:#}");
    let n = json["attention"].as_u64().unwrap();
    assert!(n >= 1, "{json:#}");
    let wanted = format!("BALANCED, {n} item(s) need attention");
    assert!(String::from_utf8_lossy(&attention.stderr).contains(&wanted));
    for format in ["markdown", "csv", "html"] {
        let out = report(
            &world,
            [running.clone(), vec!["--format".into(), format.into()]].concat(),
        )
        .await;
        assert_eq!(out.status.code(), Some(1), "{format}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&wanted),
            "{format} lacks the verdict"
        );
    }
    issuer.stop().await;
}
