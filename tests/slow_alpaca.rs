//! A slow or rate-limited Alpaca never holds back chain work: with every Broker API call answered
//! 429 + `Retry-After`, or answered after 10 s, a confirmed mint is still deposited within seconds
//! (the reconciler's Alpaca calls run beside the passes), `Retry-After` is honoured by not calling
//! until it passes (not by sleeping inside a pass), and once Alpaca recovers every callback
//! arrives exactly once per mint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::stack::{eventually, Issuer, World};
use issuer::sim::FaultsPatch;
use reconciler::{Callback, IssuerRequestId, Policy, TokenizationRequestId};
use std::time::{Duration, Instant};

fn mint_id(trid: &str) -> IssuerRequestId {
    IssuerRequestId::for_mint(&TokenizationRequestId::parse(trid).unwrap())
}

/// Seconds from the confirm of `trid` (the simulator's mint returns after it) to its deposit.
async fn confirm_to_deposit(world: &World, issuer: &Issuer, trid: &str) -> Duration {
    world.mint(&issuer.url, trid, "1").await;
    let confirmed = Instant::now();
    let id = mint_id(trid);
    eventually(Duration::from_secs(90), "deposit", || async {
        world.deposits_for(id.as_str()).await == 1
    })
    .await;
    confirmed.elapsed()
}

async fn acked(issuer: &Issuer, trid: &str) {
    let id = mint_id(trid);
    eventually(Duration::from_secs(30), "callback acknowledged", || async {
        matches!(
            issuer.store.mint(&id).unwrap().unwrap().intent.callback,
            Callback::Acked { .. }
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rate_limited_alpaca_does_not_hold_back_deposits() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-warm", "1").await;

    let hits_before = world.sim.hits("POST callback/mint");
    world
        .sim
        .patch_faults(&FaultsPatch {
            rate_429: Some(1.0),
            retry_after_secs: Some(4),
            ..FaultsPatch::default()
        })
        .unwrap();
    let first = confirm_to_deposit(&world, &issuer, "tr-429-a").await;
    // The first mint's callback met the 429; the next mint must not wait behind it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = confirm_to_deposit(&world, &issuer, "tr-429-b").await;
    assert!(
        first < Duration::from_secs(5) && second < Duration::from_secs(5),
        "confirm to deposit took {first:?} and {second:?} with Alpaca answering 429"
    );
    // While the Retry-After runs, callbacks are not sent again and again (the first met the
    // 429; the rest wait for the gate to open).
    let sent = world.sim.hits("POST callback/mint") - hits_before;
    assert!(
        (1..=2).contains(&sent),
        "{sent} callbacks sent inside one Retry-After"
    );

    world
        .sim
        .patch_faults(&FaultsPatch {
            rate_429: Some(0.0),
            ..FaultsPatch::default()
        })
        .unwrap();
    acked(&issuer, "tr-429-a").await;
    acked(&issuer, "tr-429-b").await;
    let state = world.sim.snapshot();
    for trid in ["tr-429-a", "tr-429-b"] {
        let accepted = state
            .mint_callbacks
            .iter()
            .filter(|c| c.tokenization_request_id == trid && c.status == 200)
            .count();
        assert_eq!(accepted, 1, "{trid}: one accepted callback");
        assert_eq!(world.deposits_for(mint_id(trid).as_str()).await, 1);
    }
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_alpaca_does_not_hold_back_deposits() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-warm", "1").await;

    world
        .sim
        .patch_faults(&FaultsPatch {
            latency_ms: Some(8_000),
            ..FaultsPatch::default()
        })
        .unwrap();
    let first = confirm_to_deposit(&world, &issuer, "tr-slow-a").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = confirm_to_deposit(&world, &issuer, "tr-slow-b").await;
    assert!(
        first < Duration::from_secs(4) && second < Duration::from_secs(4),
        "confirm to deposit took {first:?} and {second:?} with Alpaca answering after 8 s"
    );
    world
        .sim
        .patch_faults(&FaultsPatch {
            latency_ms: Some(0),
            ..FaultsPatch::default()
        })
        .unwrap();
    acked(&issuer, "tr-slow-a").await;
    acked(&issuer, "tr-slow-b").await;
    for trid in ["tr-slow-a", "tr-slow-b"] {
        assert_eq!(world.sim.mint_callback_count(trid), 1, "{trid}");
    }
    issuer.stop().await;
}
