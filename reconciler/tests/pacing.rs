//! What a stuck transaction's replacement bids, how Alpaca calls back off, and how a batch that
//! does not estimate is split: decided in `reconciler::pacing`, without a node or a clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::Address;
use reconciler::pacing::{
    alpaca_backoff_ms, replacement, split_after_estimates, FeeBid, Replacement,
    ALPACA_BACKOFF_CAP_MS,
};
use reconciler::{IssuerRequestId, MintItem, Qty};

const GWEI: u128 = 1_000_000_000;

fn bid(max_fee: u128, tip: u128) -> FeeBid {
    FeeBid {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
    }
}

#[test]
fn a_replacement_bids_a_quarter_more_than_the_last_variant() {
    // Given a variant at 10 gwei / 1 gwei and a market that did not move
    let last = bid(10 * GWEI, GWEI);
    // When replaced under a far cap
    let decided = replacement(last, bid(4 * GWEI, GWEI), 500 * GWEI);
    // Then both fees rise by a quarter (and one wei), above the 10% nodes require
    assert_eq!(
        decided,
        Replacement::Bid(bid(12_500_000_001, 1_250_000_001))
    );
}

#[test]
fn a_replacement_follows_a_market_that_moved_further() {
    // Given the market now asks far more than a quarter over the last variant
    let decided = replacement(bid(10 * GWEI, GWEI), bid(40 * GWEI, 3 * GWEI), 500 * GWEI);
    // Then the new variant bids the market
    assert_eq!(decided, Replacement::Bid(bid(40 * GWEI, 3 * GWEI)));
}

#[test]
fn a_replacement_never_bids_above_the_cap_and_its_tip_never_above_its_fee() {
    // Given a market above the cap
    let decided = replacement(
        bid(100 * GWEI, 90 * GWEI),
        bid(900 * GWEI, 200 * GWEI),
        120 * GWEI,
    );
    // Then the fee stops at the cap and the tip at the fee
    assert_eq!(decided, Replacement::Bid(bid(120 * GWEI, 120 * GWEI)));
}

#[test]
fn at_the_cap_the_last_variant_is_re_sent_not_replaced() {
    // Given a variant already at the cap
    assert_eq!(
        replacement(bid(120 * GWEI, GWEI), bid(300 * GWEI, GWEI), 120 * GWEI),
        Replacement::ResendAtCap
    );
    // Given a cap that leaves less than the 10% raise nodes accept
    assert_eq!(
        replacement(bid(100 * GWEI, GWEI), bid(300 * GWEI, GWEI), 105 * GWEI),
        Replacement::ResendNoRoom
    );
}

#[test]
fn alpaca_calls_back_off_doubling_to_a_cap() {
    // Given failures in a row, then each wait doubles from half a second up to the cap
    let waits: Vec<u64> = (0..=9).map(alpaca_backoff_ms).collect();
    assert_eq!(
        waits,
        [0, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
    );
    assert_eq!(alpaca_backoff_ms(u32::MAX), ALPACA_BACKOFF_CAP_MS);
}

fn item(id: &str) -> MintItem {
    MintItem {
        issuer_request_id: IssuerRequestId::parse(id).unwrap(),
        receiver: Address::repeat_byte(0x11),
        qty: Qty::parse_positive("1").unwrap(),
    }
}

#[test]
fn items_that_do_not_estimate_wait_and_the_rest_go_out_together() {
    // Given a batch of four where the second and fourth do not estimate alone
    let items = [item("a"), item("b"), item("c"), item("d")];
    // When split
    let split = split_after_estimates(&items, &[true, false, true, false]);
    // Then the two good ones go as one transaction and the others wait
    assert_eq!(split.together, [item("a"), item("c")]);
    assert!(split.one_by_one.is_empty());
    assert_eq!(split.waiting, [item("b"), item("d")]);
}

#[test]
fn a_batch_whose_items_all_fit_alone_goes_out_one_by_one() {
    // Given every item estimates alone (the batch's own gas was the problem)
    let items = [item("a"), item("b")];
    let split = split_after_estimates(&items, &[true, true]);
    // Then each goes as its own transaction
    assert!(split.together.is_empty());
    assert_eq!(split.one_by_one, items);
    assert!(split.waiting.is_empty());
}

#[test]
fn a_batch_where_nothing_estimates_sends_nothing() {
    let items = [item("a"), item("b")];
    let split = split_after_estimates(&items, &[false, false]);
    assert!(split.together.is_empty() && split.one_by_one.is_empty());
    assert_eq!(split.waiting, items);
}
