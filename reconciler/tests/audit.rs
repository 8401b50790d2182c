//! The auditor's report is a pure function of the chain and Alpaca: a clean book has a zero
//! difference and no items; every deviation (double mint, missing mint, pending or rejected
//! redemption, unknown sender, reorg, stray deposits) is an item whose effects add up exactly to
//! the difference; and the order the observations arrive in does not change the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reconciler::audit::{audit, AuditInput, AuditReport, ItemKind, SignedQty};
use reconciler::Qty;

fn fixture(name: &str) -> AuditInput {
    let path = format!(
        "{}/../fixtures/audit/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Audits a fixture and checks what must hold of every report.
fn audited(name: &str) -> AuditReport {
    let input = fixture(name);
    let report = audit(&input).unwrap();
    for asset in &report.assets {
        assert_eq!(
            asset.explained, asset.difference,
            "{name}: items must explain the difference exactly"
        );
        assert!(asset.unexplained.is_zero(), "{name}");
        let mut keys: Vec<_> = asset
            .items
            .iter()
            .map(|i| {
                i.at.map_or((u64::MAX, u64::MAX), |a| (a.block, a.log_index))
            })
            .collect();
        let sorted = {
            let mut k = keys.clone();
            k.sort_unstable();
            k
        };
        assert_eq!(keys, sorted, "{name}: items ordered by block and log index");
        keys.clear();
    }
    // Reversing every list changes nothing.
    let mut reversed = input.clone();
    reversed.alpaca.reverse();
    for asset in &mut reversed.assets {
        asset.deposits.reverse();
        asset.withdraws.reverse();
        asset.transfers.reverse();
        asset.receipts.reverse();
    }
    assert_eq!(
        audit(&reversed).unwrap(),
        report,
        "{name}: input order must not matter"
    );
    report
}

fn kinds(report: &AuditReport) -> Vec<ItemKind> {
    report
        .assets
        .iter()
        .flat_map(|a| a.items.iter().map(|i| i.kind))
        .collect()
}

fn q(text: &str) -> Qty {
    Qty::parse(text).unwrap()
}

#[test]
fn clean_book_is_exactly_zero() {
    let report = audited("clean_book");
    let asset = &report.assets[0];
    assert!(report.balanced);
    assert!(asset.difference.is_zero());
    assert!(asset.items.is_empty(), "{:#?}", asset.items);
    assert_eq!(asset.totals.alpaca_minted, q("3.5"));
    assert_eq!(asset.totals.alpaca_redeemed, q("0.5"));
    assert_eq!(asset.totals.returned, q("0.25"));
    assert_eq!(asset.totals.dust_returned, q("0.000000000123"));
    assert_eq!(asset.receipts.len(), 2);
    insta::assert_json_snapshot!("clean_book", report);
}

#[test]
fn double_mint_is_the_extra_deposit() {
    let report = audited("double_mint");
    assert!(!report.balanced);
    assert_eq!(kinds(&report), vec![ItemKind::DoubleMint]);
    assert_eq!(report.assets[0].difference, SignedQty::positive(q("1.5")));
    insta::assert_json_snapshot!("double_mint", report);
}

#[test]
fn missing_mint_is_negative() {
    let report = audited("missing_mint");
    assert_eq!(kinds(&report), vec![ItemKind::MissingMint]);
    assert_eq!(report.assets[0].difference, SignedQty::negative(q("4")));
    insta::assert_json_snapshot!("missing_mint", report);
}

#[test]
fn pending_redemption_waits_and_journaled_one_awaits_its_burn() {
    let report = audited("pending_redemption");
    assert_eq!(
        kinds(&report),
        vec![ItemKind::RedemptionPending, ItemKind::BurnPending]
    );
    assert_eq!(report.assets[0].difference, SignedQty::positive(q("2")));
    assert_eq!(report.assets[0].totals.waiting_in_bot, q("3"));
    insta::assert_json_snapshot!("pending_redemption", report);
}

#[test]
fn rejected_redemption_is_listed_without_moving_the_difference() {
    let report = audited("rejected_redemption");
    assert_eq!(kinds(&report), vec![ItemKind::RedemptionRejected]);
    assert!(report.assets[0].difference.is_zero());
    assert!(
        report.balanced,
        "nothing is unbalanced, but the item needs an operator"
    );
    insta::assert_json_snapshot!("rejected_redemption", report);
}

#[test]
fn unknown_sender_is_an_anomaly() {
    let report = audited("unknown_sender");
    assert_eq!(kinds(&report), vec![ItemKind::UnknownSender]);
    assert!(report.assets[0].difference.is_zero());
    insta::assert_json_snapshot!("unknown_sender", report);
}

#[test]
fn reorged_deposit_is_a_missing_mint_and_later_mints_are_left_out() {
    let report = audited("reorg");
    assert_eq!(kinds(&report), vec![ItemKind::MissingMint]);
    let asset = &report.assets[0];
    assert_eq!(asset.difference, SignedQty::negative(q("2")));
    assert!(asset.items[0].detail.contains("not on the observed chain"));
    assert_eq!(
        asset.totals.alpaca_after_block, 1,
        "tr-3 was minted after the block"
    );
    assert_eq!(asset.totals.alpaca_minted, q("3.5"));
    insta::assert_json_snapshot!("reorg", report);
}

#[test]
fn stray_deposits_and_in_flight_work_are_listed() {
    let report = audited("stray_deposits");
    assert_eq!(
        kinds(&report),
        vec![
            ItemKind::UntaggedDeposit,
            ItemKind::DepositWithoutRequest,
            ItemKind::MintNotCalledBack,
            ItemKind::MintPending
        ]
    );
    assert_eq!(report.assets[0].difference, SignedQty::positive(q("6")));
    assert_eq!(report.notices.len(), 1);
    assert_eq!(report.notices[0].kind, ItemKind::InFlight);
    insta::assert_json_snapshot!("stray_deposits", report);
}

#[test]
fn at_block_before_everything_is_empty_and_zero() {
    let mut input = fixture("clean_book");
    input.at_block = 5;
    input.assets[0].total_supply = Qty::ZERO;
    let report = audit(&input).unwrap();
    let asset = &report.assets[0];
    assert!(asset.difference.is_zero(), "{:#?}", asset.items);
    assert_eq!(
        asset.totals.alpaca_after_block, 4,
        "two mints and two redeems are after block 5"
    );
    assert!(asset.items.is_empty());
}

#[test]
fn signed_quantities_add_exactly() {
    let a = SignedQty::positive(q("1.5"));
    let b = SignedQty::negative(q("2"));
    assert_eq!(a.checked_add(b).unwrap().to_string(), "-0.5");
    assert_eq!(b.checked_add(a).unwrap().to_string(), "-0.5");
    assert_eq!(a.checked_sub(a).unwrap(), SignedQty::ZERO);
    assert!(
        !SignedQty::negative(Qty::ZERO).is_negative(),
        "zero has no sign"
    );
    let round: SignedQty = serde_json::from_str("\"-0.000000000000000001\"").unwrap();
    assert_eq!(
        serde_json::to_string(&round).unwrap(),
        "\"-0.000000000000000001\""
    );
    assert!(
        SignedQty::positive(Qty::from_units(alloy_primitives::U256::MAX))
            .checked_add(a)
            .is_none()
    );
}
