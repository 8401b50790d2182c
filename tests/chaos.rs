//! Invariants under everything at once: Alpaca answers 5xx, 429 and loses answers after acting;
//! the issuer (the real binary) is SIGKILLed and restarted again and again while mints and
//! redemptions are in flight. In the end every mint has exactly one Deposit and one callback,
//! every redemption one redeem request and one burn, and supply matches what was journaled.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::process::{spawn_issuer, wait_healthy};
use common::stack::{eventually, World};
use issuer::sim::FaultsPatch;
use reconciler::IssuerRequestId;
use std::time::Duration;

const E18: u128 = 1_000_000_000_000_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn mints_and_redemptions_converge_exactly_once_through_faults_and_kills() {
    let world = World::start(None).await;
    let bot = common::bot().address();
    let mut issuer = spawn_issuer(&world, None);
    wait_healthy(&issuer).await;

    // Alpaca turns unreliable; the simulator's own side of the mints is never faulted.
    world
        .sim
        .patch_faults(&FaultsPatch {
            error_rate_5xx: Some(0.2),
            rate_429: Some(0.1),
            retry_after_secs: Some(1),
            drop_connections_rate: Some(0.2),
            ..FaultsPatch::default()
        })
        .unwrap();
    for i in 0..6 {
        world.mint(&issuer.url, &format!("tr-chaos-{i}"), "1").await;
    }

    // Kill and restart the issuer every ~1.2 s, five times; the AP redeems in between.
    let mut redemptions = Vec::new();
    for round in 0..5u64 {
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        if round < 3 && world.balance(world.ap_wallet).await >= U256::from(E18 / 4) {
            let tx = world
                .transfer(common::STRANGER_KEY, bot, U256::from(E18 / 4))
                .await;
            redemptions.push(IssuerRequestId::for_redemption(tx, 0));
        }
        drop(issuer);
        issuer = spawn_issuer(&world, None);
        wait_healthy(&issuer).await;
    }
    assert_eq!(
        redemptions.len(),
        3,
        "three redemptions sent while the issuer was killed"
    );
    world
        .sim
        .patch_faults(&FaultsPatch {
            drop_connections_rate: Some(0.0),
            ..FaultsPatch::default()
        })
        .unwrap();

    let chain = issuer::chain::Chain::connect(&world.rpc(), common::bot())
        .await
        .unwrap();
    let burns = || async {
        let head = chain.head().await.unwrap();
        chain
            .scan_burns(world.deployed.vault, 0, head)
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(90),
        "every mint called back and every redemption burned",
        || async {
            let minted =
                (0..6).all(|i| world.sim.mint_callback_count(&format!("tr-chaos-{i}")) >= 1);
            let all_burns = burns().await;
            let burned = redemptions
                .iter()
                .all(|id| all_burns.iter().any(|b| &b.redemption_id == id));
            minted && burned
        },
    )
    .await;
    issuer.more_passes(5).await;

    for i in 0..6 {
        let trid = reconciler::TokenizationRequestId::parse(&format!("tr-chaos-{i}")).unwrap();
        let irid = IssuerRequestId::for_mint(&trid);
        assert_eq!(
            world.deposits_for(irid.as_str()).await,
            1,
            "mint {i}: exactly one deposit"
        );
        assert_eq!(
            world.sim.mint_callback_count(trid.as_str()),
            1,
            "mint {i}: exactly one callback"
        );
    }
    let all_burns = burns().await;
    for id in &redemptions {
        assert_eq!(
            all_burns.iter().filter(|b| &b.redemption_id == id).count(),
            1,
            "{id}: one burn"
        );
        assert_eq!(
            world.redeem_requests_for(id.as_str()).len(),
            1,
            "{id}: one redeem request"
        );
    }
    let redeemed = U256::from(E18 / 4) * U256::from(redemptions.len());
    assert_eq!(world.total_supply().await, U256::from(6 * E18) - redeemed);
    assert_eq!(
        world.balance(bot).await,
        U256::ZERO,
        "nothing left in the bot wallet"
    );
    let hits = world.sim.snapshot().hits;
    eprintln!("Broker API hits under faults: {hits:?}");
    drop(issuer);
}
