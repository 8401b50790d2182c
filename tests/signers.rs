//! The bot's key held elsewhere: AWS KMS (moto's KMS server, started here) and Fireblocks raw
//! signing (our simulator, which checks every request's RS256 JWT). Mints and burns on anvil are
//! signed by each; Fireblocks faults (rejection, 5xx, slow completion, a lost answer) are each a
//! clear error on that action and never a second signature for a nonce while the first is alive;
//! a bot without its vault roles is reported not ready, naming the role.
//!
//! The KMS tests need `pip install 'moto[server]'`; `ISSUER_SKIP_KMS_TESTS=1` skips them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use common::process::{spawn_issuer_with, wait_healthy};
use common::remote::{skip_kms, FireblocksHarness, KmsEmulator, KMS_REGION};
use common::stack::{eventually, Issuer, World};
use common::STRANGER_KEY;
use issuer::chain::fireblocks::FireblocksSigner;
use issuer::chain::signer::SigningFor;
use issuer::chain::{BotSigner, Chain};
use issuer::fireblocks_sim::FireblocksFaults;
use reconciler::{IssuerRequestId, Policy};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const E18: u128 = 1_000_000_000_000_000_000;
/// Half the secp256k1 group order: Ethereum accepts only signatures with `s` at most this.
const HALF_N: U256 = alloy::primitives::uint!(
    0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256
);

async fn sender_of(world: &World, tx: B256) -> Address {
    let provider: RootProvider =
        ProviderBuilder::default().connect_http(world.rpc().parse().unwrap());
    provider
        .get_transaction_by_hash(tx)
        .await
        .unwrap()
        .unwrap()
        .inner
        .signer()
}

/// Mints 1.5 through the Alpaca simulator, then redeems 1 sent back to `bot`; checks both
/// transactions were sent by `bot` and the balances moved.
async fn mint_and_burn(world: &World, issuer_url: &str, bot: Address, trid: &str) {
    world.minted(issuer_url, trid, "1.5").await;
    assert_eq!(
        world.balance(world.ap_wallet).await,
        U256::from(3 * E18 / 2)
    );
    let chain = Chain::connect(&world.rpc(), common::bot()).await.unwrap();
    let head = chain.head().await.unwrap();
    let (deposits, _) = chain
        .scan_deposits(world.deployed.vault, 0, head)
        .await
        .unwrap();
    let deposit = deposits
        .iter()
        .find(|d| d.tokenization_request_id.as_str() == trid)
        .expect("the tagged deposit");
    assert_eq!(
        sender_of(world, deposit.tx_hash).await,
        bot,
        "the mint is the bot's"
    );

    let sent = world.transfer(STRANGER_KEY, bot, U256::from(E18)).await;
    let id = IssuerRequestId::for_redemption(sent, 0);
    let started = std::time::Instant::now();
    let burn_tx = loop {
        let head = chain.head().await.unwrap();
        let burns = chain
            .scan_burns(world.deployed.vault, 0, head)
            .await
            .unwrap();
        if let Some(burn) = burns.iter().find(|b| b.redemption_id == id) {
            break burn.tx_hash;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for the burn"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sender_of(world, burn_tx).await,
        bot,
        "the burn is the bot's"
    );
    assert_eq!(world.balance(world.ap_wallet).await, U256::from(E18 / 2));
    assert_eq!(world.total_supply().await, U256::from(E18 / 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kms_key_signs_low_s_signatures_that_recover_to_its_address() {
    if skip_kms() {
        return;
    }
    let kms = KmsEmulator::start().await;
    let key_id = kms.create_key().await;
    let signer = BotSigner::Kms(Arc::new(kms.signer(&key_id).await));
    for i in 0..8u8 {
        let hash = B256::repeat_byte(i + 1);
        let sig = signer
            .sign_hash_for(&hash, SigningFor::Message)
            .await
            .unwrap();
        assert!(sig.s() <= HALF_N, "low-s");
        assert_eq!(
            sig.recover_address_from_prehash(&hash).unwrap(),
            signer.address()
        );
    }
    assert!(
        !format!("{signer:?}").contains("test"),
        "no credentials in Debug"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_binary_mints_and_burns_with_an_aws_kms_key() {
    if skip_kms() {
        return;
    }
    let kms = KmsEmulator::start().await;
    let key_id = kms.create_key().await;
    let bot = kms.signer(&key_id).await.address();
    let world = World::start(None).await;
    world.enlist(bot).await;
    let args: Vec<String> = [
        "--signer",
        "aws-kms",
        "--aws-kms-key-id",
        &key_id,
        "--aws-kms-endpoint",
        &kms.url,
        "--aws-region",
        KMS_REGION,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let process = spawn_issuer_with(
        &world,
        None,
        &args,
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    wait_healthy(&process).await;
    mint_and_burn(&world, &process.url, bot, "tr-kms-1").await;
    let ready = reqwest::get(format!("{}/readyz", process.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn fireblocks_signs_a_mint_and_a_burn_and_the_simulator_checks_every_jwt() {
    let fireblocks = FireblocksHarness::start();
    // High-s answers: the signer must normalise them (anvil refuses high-s transactions).
    fireblocks.sim.set_faults(FireblocksFaults {
        high_s: true,
        ..FireblocksFaults::default()
    });
    let signer = fireblocks.signer().await;
    let bot = signer.address();
    assert_eq!(bot, fireblocks.sim.address());
    let world = World::start(None).await;
    world.enlist(bot).await;
    let issuer = Issuer::start_with_signer(
        &world,
        Policy::default(),
        BotSigner::Fireblocks(Arc::new(signer)),
    )
    .await;
    mint_and_burn(&world, &issuer.url, bot, "tr-fb-1").await;
    issuer.stop().await;

    let state = fireblocks.sim.snapshot();
    assert!(state.auth_refusals.is_empty(), "{:?}", state.auth_refusals);
    assert!(state.signatures >= 2, "a mint and a burn");
    assert_no_overlap(&fireblocks);
}

/// No signing request was made for a nonce while another for it was alive, and no two requests
/// share an externalTxId.
fn assert_no_overlap(fireblocks: &FireblocksHarness) {
    let state = fireblocks.sim.snapshot();
    let mut per_nonce: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for s in &state.signings {
        let (base, _attempt) = s.external_tx_id.rsplit_once('-').unwrap();
        per_nonce
            .entry(base.to_owned())
            .or_default()
            .push(s.clone());
    }
    for (base, signings) in per_nonce {
        let alive = signings
            .iter()
            .filter(|s| s.status == "PENDING_SIGNATURE")
            .count();
        assert!(alive <= 1, "two live requests for {base}: {signings:?}");
        let mut ids: Vec<_> = signings.iter().map(|s| &s.external_tx_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), signings.len());
    }
    assert_eq!(
        state.overlapping_creates, 0,
        "a request made while another for its nonce lived"
    );
}

fn tx(nonce: u64) -> SigningFor {
    SigningFor::Transaction {
        chain_id: 31_337,
        nonce,
    }
}

fn signings_for_nonce(fireblocks: &FireblocksHarness, nonce: u64) -> usize {
    fireblocks
        .sim
        .snapshot()
        .signings
        .iter()
        .filter(|s| s.external_tx_id.contains(&format!("-{nonce}-")))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn fireblocks_faults_are_clear_errors_and_never_a_second_live_signature() {
    let fireblocks = FireblocksHarness::start();
    let signer = BotSigner::Fireblocks(Arc::new(
        FireblocksSigner::connect(
            fireblocks.settings_with("api_user_test.key", Duration::from_millis(400)),
        )
        .await
        .unwrap(),
    ));
    let sim = &fireblocks.sim;

    // Rejected by policy: a clear error; the dead request frees the next attempt.
    sim.set_faults(FireblocksFaults {
        reject_next: 1,
        ..FireblocksFaults::default()
    });
    let hash = B256::repeat_byte(1);
    let err = signer
        .sign_hash_for(&hash, tx(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused") && err.contains("REJECTED"), "{err}");
    let sig = signer.sign_hash_for(&hash, tx(1)).await.unwrap();
    assert_eq!(
        sig.recover_address_from_prehash(&hash).unwrap(),
        signer.address()
    );
    assert_eq!(signings_for_nonce(&fireblocks, 1), 2);

    // A 5xx: a clear error naming the call; the next try signs once.
    sim.set_faults(FireblocksFaults {
        fail_next: 1,
        ..FireblocksFaults::default()
    });
    let err = signer
        .sign_hash_for(&B256::repeat_byte(2), tx(2))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 503"), "{err}");
    signer
        .sign_hash_for(&B256::repeat_byte(2), tx(2))
        .await
        .unwrap();
    assert_eq!(signings_for_nonce(&fireblocks, 2), 1);

    // The answer to the request is lost: the next try finds it by externalTxId and adopts it.
    sim.set_faults(FireblocksFaults {
        lose_next_create_answers: 1,
        ..FireblocksFaults::default()
    });
    let err = signer
        .sign_hash_for(&B256::repeat_byte(3), tx(3))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 503"), "{err}");
    signer
        .sign_hash_for(&B256::repeat_byte(3), tx(3))
        .await
        .unwrap();
    assert_eq!(
        signings_for_nonce(&fireblocks, 3),
        1,
        "adopted, not asked again"
    );

    // Slow completion past the timeout: an error saying it will be looked up, not re-sent; a
    // different transaction for that nonce waits for it; once done, the first is adopted.
    sim.set_faults(FireblocksFaults {
        complete_after_ms: 1_500,
        ..FireblocksFaults::default()
    });
    let first = B256::repeat_byte(4);
    let err = signer
        .sign_hash_for(&first, tx(4))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("still PENDING_SIGNATURE") && err.contains("not re-sent"),
        "{err}"
    );
    let err = signer
        .sign_hash_for(&B256::repeat_byte(5), tx(4))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("waiting for it"), "{err}");
    assert_eq!(signings_for_nonce(&fireblocks, 4), 1);
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    sim.set_faults(FireblocksFaults::default());
    let sig = signer.sign_hash_for(&first, tx(4)).await.unwrap();
    assert_eq!(
        sig.recover_address_from_prehash(&first).unwrap(),
        signer.address()
    );
    assert_eq!(
        signings_for_nonce(&fireblocks, 4),
        1,
        "adopted, not asked again"
    );
    // A replacement at that nonce (new fees, new hash) is a new attempt once the first is done.
    signer
        .sign_hash_for(&B256::repeat_byte(6), tx(4))
        .await
        .unwrap();
    assert_eq!(signings_for_nonce(&fireblocks, 4), 2);

    assert!(sim.snapshot().auth_refusals.is_empty());
    assert_no_overlap(&fireblocks);
}

#[tokio::test(flavor = "multi_thread")]
async fn fireblocks_refuses_a_wrong_api_key_or_a_jwt_signed_by_another_key() {
    let fireblocks = FireblocksHarness::start();
    let mut wrong_key = fireblocks.settings();
    wrong_key.api_key = issuer::config::Secret::new("not-the-key");
    let err = FireblocksSigner::connect(wrong_key)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("X-API-Key"), "{err}");
    assert!(!err.contains("not-the-key"), "the key is not echoed: {err}");

    let stranger = fireblocks.settings_with("stranger_test.key", Duration::from_secs(5));
    let err = FireblocksSigner::connect(stranger)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("JWT refused"), "{err}");
    assert_eq!(
        fireblocks
            .sim
            .snapshot()
            .auth_refusals
            .values()
            .sum::<u64>(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_and_a_lost_answer_delay_a_mint_but_sign_its_nonce_once() {
    let fireblocks = FireblocksHarness::start();
    let signer = FireblocksSigner::connect(
        fireblocks.settings_with("api_user_test.key", Duration::from_millis(300)),
    )
    .await
    .unwrap();
    let bot = signer.address();
    let world = World::start(None).await;
    world.enlist(bot).await;
    fireblocks.sim.set_faults(FireblocksFaults {
        fail_next: 2,
        lose_next_create_answers: 1,
        complete_after_ms: 700,
        ..FireblocksFaults::default()
    });
    let issuer = Issuer::start_with_signer(
        &world,
        Policy::default(),
        BotSigner::Fireblocks(Arc::new(signer)),
    )
    .await;
    world.minted(&issuer.url, "tr-fb-slow", "2").await;
    issuer.stop().await;
    assert_eq!(world.balance(world.ap_wallet).await, U256::from(2 * E18));
    let chain = Chain::connect(&world.rpc(), common::bot()).await.unwrap();
    let head = chain.head().await.unwrap();
    let (deposits, _) = chain
        .scan_deposits(world.deployed.vault, 0, head)
        .await
        .unwrap();
    let minted = deposits
        .iter()
        .filter(|d| d.tokenization_request_id.as_str() == "tr-fb-slow")
        .count();
    assert_eq!(minted, 1, "one deposit");
    assert_no_overlap(&fireblocks);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bot_without_its_vault_roles_is_not_ready_and_says_which() {
    let fireblocks = FireblocksHarness::start();
    let world = World::start(None).await;
    let process = spawn_issuer_with(
        &world,
        None,
        &fireblocks.serve_args(),
        &[("FIREBLOCKS_API_KEY", common::remote::FIREBLOCKS_API_KEY)],
    );
    wait_healthy(&process).await;
    let url = format!("{}/readyz", process.url);
    let started = std::time::Instant::now();
    let body = loop {
        let reply = reqwest::get(&url).await.unwrap();
        let status = reply.status();
        let body = reply.text().await.unwrap();
        if status == 503 && body.contains("DEPOSIT and WITHDRAW") {
            break body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "readyz: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("fireblocks"), "{body}");
    assert!(
        body.contains(&format!("{:#x}", fireblocks.sim.address())),
        "{body}"
    );

    world.enlist(fireblocks.sim.address()).await;
    eventually(
        Duration::from_secs(20),
        "ready once the roles are granted",
        || async { reqwest::get(&url).await.unwrap().status() == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signer_settings_are_checked_and_credentials_stay_out_of_help() {
    let issuer = env!("CARGO_BIN_EXE_issuer");
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let out = std::process::Command::new(issuer)
            .args(args)
            .envs(envs.iter().copied())
            .env_remove("BOT_SIGNER")
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = run(&["serve", "--signer", "aws-kms"], &[]);
    assert!(!ok && text.contains("AWS_KMS_KEY_ID"), "{text}");
    let (ok, text) = run(&["serve", "--signer", "fireblocks"], &[]);
    assert!(!ok && text.contains("FIREBLOCKS_API_KEY"), "{text}");
    let (ok, text) = run(&["serve"], &[("AWS_KMS_KEY_ID", "alias/bot")]);
    assert!(
        !ok && text.contains("AWS_KMS_KEY_ID is set but BOT_SIGNER is local"),
        "{text}"
    );
    let (ok, text) = run(
        &["serve", "--help"],
        &[("FIREBLOCKS_API_KEY", "very-secret-fb-key")],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("FIREBLOCKS_API_KEY") && text.contains("BOT_SIGNER"),
        "{text}"
    );
    assert!(!text.contains("very-secret-fb-key"), "{text}");
}
