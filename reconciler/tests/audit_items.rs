//! Every kind of audit item comes out of the book that causes it, with its exact effect on the
//! difference, so the items of any report explain the difference to the last base unit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::{Address, B256, U256};
use reconciler::audit::{
    audit, AlpacaRequest, AssetInput, AssetReport, AuditInput, DepositLog, Item, ItemKind, LogPos,
    RequestKind, RequestStatus, SignedQty, Tag, TransferLog, WithdrawLog,
};
use reconciler::meta::ReceiptInfo;
use reconciler::{IssuerRequestId, Network, Qty, Symbol, TokenizationRequestId};
use RequestStatus::{Completed, Pending, Rejected};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The block every audit is at.
const AT_BLOCK: u64 = 100;

const VAULT: Address = Address::repeat_byte(0xaa);
const BOT: Address = Address::repeat_byte(0xb0);
/// The AP's wallet: receiver of mints, sender of redemptions, named by Alpaca.
const AP: Address = Address::repeat_byte(0x11);
/// A wallet Alpaca never named.
const STRANGER: Address = Address::repeat_byte(0x66);

fn q(text: &str) -> Qty {
    Qty::parse(text).unwrap()
}

fn plus(text: &str) -> SignedQty {
    SignedQty::positive(q(text))
}

fn minus(text: &str) -> SignedQty {
    SignedQty::negative(q(text))
}

/// A readable transaction hash: `0x00..00<n>`.
fn hash(n: u64) -> B256 {
    B256::from(U256::from(n))
}

fn at(block: u64, log_index: u64, tx: u64) -> LogPos {
    LogPos {
        block,
        log_index,
        tx_hash: hash(tx),
    }
}

/// The issuer id of the redemption started by the transfer at log 0 of transaction `tx`.
fn redemption_id(tx: u64) -> String {
    IssuerRequestId::for_redemption(hash(tx), 0).to_string()
}

fn ours(tokenization_request_id: &str, issuer_request_id: &str, quantity: &str) -> Tag {
    Tag::Ours(ReceiptInfo {
        tokenization_request_id: tokenization_request_id.to_owned(),
        issuer_request_id: issuer_request_id.to_owned(),
        underlying: "AAPL".to_owned(),
        quantity: quantity.to_owned(),
        timestamp: 1_700_000_000,
        notes: String::new(),
    })
}

fn foreign() -> Tag {
    Tag::Foreign {
        detail: "missing the Rain meta v1 prefix".to_owned(),
    }
}

/// The book of one AAPL vault, built observation by observation. `totalSupply` is what the logs
/// add up to unless [`Book::total_supply`] says otherwise.
struct Book {
    input: AuditInput,
    total_supply: Option<Qty>,
    next_receipt: u64,
}

/// An AAPL vault at [`AT_BLOCK`] with nothing on chain and nothing at Alpaca.
fn given() -> Book {
    Book {
        input: AuditInput {
            at_block: AT_BLOCK,
            in_flight: 0,
            assets: vec![AssetInput {
                underlying: Symbol::parse("AAPL").unwrap(),
                token: Symbol::parse("tAAPL").unwrap(),
                network: Network::parse("anvil").unwrap(),
                vault: VAULT,
                bot: BOT,
                deploy_block: 1,
                total_supply: Qty::ZERO,
                bot_shares: Qty::ZERO,
                deposits: Vec::new(),
                withdraws: Vec::new(),
                transfers: Vec::new(),
                receipts: Vec::new(),
            }],
            alpaca: Vec::new(),
            tx_blocks: Vec::new(),
        },
        total_supply: None,
        next_receipt: 1,
    }
}

/// A clean mint: 5 shares deposited for `tr-1` in block 10 and delivered to the AP, and Alpaca
/// shows `tr-1` completed. Also what makes the AP a wallet Alpaca named.
fn given_a_clean_mint() -> Book {
    given()
        .minted(10, 1, "tr-1", "5")
        .alpaca_mint("tr-1", "5", Completed, 1)
}

impl Book {
    fn asset(&mut self) -> &mut AssetInput {
        &mut self.input.assets[0]
    }

    fn deposit(mut self, block: u64, tx: u64, shares: &str, tag: Tag) -> Self {
        let id = U256::from(self.next_receipt);
        self.next_receipt += 1;
        let asset = self.asset();
        asset.deposits.push(DepositLog {
            at: at(block, 0, tx),
            sender: BOT,
            owner: BOT,
            assets: q(shares),
            shares: q(shares),
            id,
            tag,
        });
        asset.transfers.push(TransferLog {
            at: at(block, 1, tx),
            from: Address::ZERO,
            to: BOT,
            value: q(shares),
            index_in_tx: None,
        });
        self
    }

    /// Our mint in transaction `tx`: a deposit tagged for `trid` (issuer id `mint-<trid>`) and
    /// its shares delivered to the AP in the same transaction.
    fn minted(self, block: u64, tx: u64, trid: &str, shares: &str) -> Self {
        let tag = ours(trid, &format!("mint-{trid}"), shares);
        self.deposit(block, tx, shares, tag)
            .transfer(at(block, 4, tx), BOT, AP, shares)
    }

    fn transfer(mut self, at: LogPos, from: Address, to: Address, value: &str) -> Self {
        self.asset().transfers.push(TransferLog {
            at,
            from,
            to,
            value: q(value),
            index_in_tx: None,
        });
        self
    }

    /// `from` sends `value` to the bot at log 0 of transaction `tx`: the redemption
    /// [`redemption_id`]`(tx)`.
    fn sent_to_bot(self, block: u64, tx: u64, from: Address, value: &str) -> Self {
        self.transfer(at(block, 0, tx), from, BOT, value)
    }

    /// The bot sends `value` to `to` alone in transaction `tx`.
    fn sent_by_bot(self, block: u64, tx: u64, to: Address, value: &str) -> Self {
        self.transfer(at(block, 0, tx), BOT, to, value)
    }

    fn withdraw(mut self, block: u64, tx: u64, shares: &str, tag: Tag) -> Self {
        let asset = self.asset();
        asset.withdraws.push(WithdrawLog {
            at: at(block, 0, tx),
            sender: BOT,
            receiver: AP,
            owner: BOT,
            assets: q(shares),
            shares: q(shares),
            id: U256::from(1),
            tag,
        });
        asset.transfers.push(TransferLog {
            at: at(block, 1, tx),
            from: BOT,
            to: Address::ZERO,
            value: q(shares),
            index_in_tx: None,
        });
        self
    }

    /// The bot burns `shares` in transaction `tx`, tagged for the redemption `issuer_request_id`.
    fn burned(self, block: u64, tx: u64, issuer_request_id: &str, shares: &str) -> Self {
        let tag = ours("tr-redeem", issuer_request_id, shares);
        self.withdraw(block, tx, shares, tag)
    }

    /// Someone burns `shares` in transaction `tx` without our receipt information.
    fn burned_untagged(self, block: u64, tx: u64, shares: &str) -> Self {
        self.withdraw(block, tx, shares, foreign())
    }

    fn alpaca(
        mut self,
        kind: RequestKind,
        trid: &str,
        issuer_request_id: Option<String>,
        qty: &str,
        status: RequestStatus,
        tx: Option<u64>,
    ) -> Self {
        self.input.alpaca.push(AlpacaRequest {
            id: TokenizationRequestId::parse(trid).unwrap(),
            issuer_request_id: issuer_request_id.map(|i| IssuerRequestId::parse(&i).unwrap()),
            kind,
            status,
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: Network::parse("anvil").unwrap(),
            qty: q(qty),
            wallet: AP,
            tx_hash: tx.map(hash),
        });
        self
    }

    /// Alpaca lists the mint `trid` for the AP, naming deposit transaction `tx`.
    fn alpaca_mint(self, trid: &str, qty: &str, status: RequestStatus, tx: u64) -> Self {
        let irid = Some(format!("mint-{trid}"));
        self.alpaca(RequestKind::Mint, trid, irid, qty, status, Some(tx))
    }

    /// Alpaca lists the redeem `trid` of the redemption started by the transfer in `tx`.
    fn alpaca_redeem(self, trid: &str, qty: &str, status: RequestStatus, tx: u64) -> Self {
        let irid = Some(redemption_id(tx));
        self.alpaca(RequestKind::Redeem, trid, irid, qty, status, Some(tx))
    }

    fn total_supply(mut self, supply: &str) -> Self {
        self.total_supply = Some(q(supply));
        self
    }

    /// When audited: the asset's report, after checking what holds of every report (the items
    /// explain the difference exactly, and the order of the observations does not matter).
    fn audited(mut self) -> AssetReport {
        let from_logs = {
            let asset = self.asset();
            let mut supply = SignedQty::ZERO;
            for d in &asset.deposits {
                supply = supply.checked_add(SignedQty::positive(d.shares)).unwrap();
            }
            for w in &asset.withdraws {
                supply = supply.checked_add(SignedQty::negative(w.shares)).unwrap();
            }
            assert!(!supply.is_negative(), "the book burns more than it mints");
            supply.magnitude()
        };
        let supply = self.total_supply.unwrap_or(from_logs);
        self.asset().total_supply = supply;

        let report = audit(&self.input).unwrap();
        let mut reversed = self.input.clone();
        reversed.alpaca.reverse();
        for asset in &mut reversed.assets {
            asset.deposits.reverse();
            asset.withdraws.reverse();
            asset.transfers.reverse();
        }
        assert_eq!(
            audit(&reversed).unwrap(),
            report,
            "input order must not matter"
        );
        let asset = report.assets.into_iter().next().unwrap();
        assert_eq!(asset.explained, asset.difference, "{:#?}", asset.items);
        asset
    }
}

fn kinds(asset: &AssetReport) -> Vec<ItemKind> {
    asset.items.iter().map(|i| i.kind).collect()
}

/// The one item of `kind`.
fn the(asset: &AssetReport, kind: ItemKind) -> &Item {
    let found: Vec<&Item> = asset.items.iter().filter(|i| i.kind == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected: {:#?}", asset.items);
    found[0]
}

// ---------------------------------------------------------------------------------------------
// Supply
// ---------------------------------------------------------------------------------------------

#[test]
fn supply_above_the_logs_is_the_gap() {
    // Given a clean mint of 5, and a totalSupply of 6
    let asset = given_a_clean_mint().total_supply("6").audited();
    // Then the one share no log explains is the whole difference
    assert_eq!(kinds(&asset), [ItemKind::SupplyNotFromLogs]);
    assert_eq!(the(&asset, ItemKind::SupplyNotFromLogs).effect, plus("1"));
    assert_eq!(asset.difference, plus("1"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn supply_below_the_logs_is_a_negative_gap() {
    let asset = given_a_clean_mint().total_supply("4.5").audited();
    assert_eq!(kinds(&asset), [ItemKind::SupplyNotFromLogs]);
    assert_eq!(
        the(&asset, ItemKind::SupplyNotFromLogs).effect,
        minus("0.5")
    );
    assert_eq!(asset.difference, minus("0.5"));
    assert!(asset.unexplained.is_zero());
}

// ---------------------------------------------------------------------------------------------
// Mints
// ---------------------------------------------------------------------------------------------

#[test]
fn mint_alpaca_rejected_is_minted_after_rejection() {
    // Given 5 shares minted for tr-1, whose journal Alpaca rejected
    let asset = given()
        .minted(10, 1, "tr-1", "5")
        .alpaca_mint("tr-1", "5", Rejected, 1)
        .audited();
    // Then the 5 shares are backed by nothing
    assert_eq!(kinds(&asset), [ItemKind::MintedAfterRejection]);
    assert_eq!(
        the(&asset, ItemKind::MintedAfterRejection).effect,
        plus("5")
    );
    assert_eq!(asset.difference, plus("5"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn mint_of_more_than_alpaca_journaled_is_a_mismatch_of_the_gap() {
    // Given 5 shares deposited for tr-1, which Alpaca completed for 4
    let asset = given()
        .minted(10, 1, "tr-1", "5")
        .alpaca_mint("tr-1", "4", Completed, 1)
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::Mismatch]);
    assert_eq!(the(&asset, ItemKind::Mismatch).effect, plus("1"));
    assert_eq!(asset.difference, plus("1"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn mint_not_delivered_in_its_transaction_is_a_mismatch_without_effect() {
    // Given tr-1's deposit whose shares stayed with the bot
    let asset = given()
        .deposit(10, 1, "5", ours("tr-1", "mint-tr-1", "5"))
        .alpaca_mint("tr-1", "5", Completed, 1)
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::Mismatch]);
    let item = the(&asset, ItemKind::Mismatch);
    assert!(item.effect.is_zero());
    assert!(item.detail.contains("no transfer of 5 to the AP wallet"));
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

// ---------------------------------------------------------------------------------------------
// Redemptions: transfers to the bot
// ---------------------------------------------------------------------------------------------

#[test]
fn transfer_from_a_known_ap_not_yet_requested_waits() {
    // Given a clean mint, and the AP sending 2 back with no redeem at Alpaca yet
    let asset = given_a_clean_mint().sent_to_bot(20, 2, AP, "2").audited();
    // Then it waits, without moving the difference
    assert_eq!(kinds(&asset), [ItemKind::TransferWaiting]);
    let item = the(&asset, ItemKind::TransferWaiting);
    assert!(item.effect.is_zero());
    assert_eq!(item.issuer_request_id, Some(redemption_id(2)));
    assert_eq!(item.detail, "not yet requested at Alpaca");
    assert_eq!(asset.totals.waiting_in_bot, q("2"));
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

#[test]
fn transfer_below_alpaca_precision_waits_for_a_return() {
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "0.0000000001")
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::TransferWaiting]);
    let item = the(&asset, ItemKind::TransferWaiting);
    assert!(item.effect.is_zero());
    assert!(item.detail.contains("below Alpaca's 9 decimals"));
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

#[test]
fn redemption_journaled_and_also_returned_is_a_mismatch_of_the_journal() {
    // Given the AP's 2 journaled back by Alpaca, and the same 2 returned to the AP
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Completed, 2)
        .sent_by_bot(30, 3, AP, "2")
        .audited();
    // Then the AP has both its shares and its tokens
    assert_eq!(kinds(&asset), [ItemKind::Mismatch]);
    assert_eq!(the(&asset, ItemKind::Mismatch).effect, plus("2"));
    assert_eq!(asset.totals.returned, q("2"));
    assert_eq!(asset.difference, plus("2"));
    assert!(asset.unexplained.is_zero());
}

// ---------------------------------------------------------------------------------------------
// Redemptions: burns
// ---------------------------------------------------------------------------------------------

#[test]
fn burn_while_alpaca_is_pending_is_a_burn_without_journal() {
    // Given the AP's 2 burned while Alpaca's redeem is still pending
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Pending, 2)
        .burned(30, 3, &redemption_id(2), "2")
        .audited();
    // Then 2 tokens are gone while Alpaca still holds their shares for them
    assert_eq!(kinds(&asset), [ItemKind::BurnWithoutJournal]);
    let item = the(&asset, ItemKind::BurnWithoutJournal);
    assert_eq!(item.effect, minus("2"));
    assert!(
        item.detail.contains("alpaca shows it pending"),
        "{}",
        item.detail
    );
    assert_eq!(asset.difference, minus("2"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn burn_with_no_request_at_alpaca_is_a_burn_without_journal() {
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .burned(30, 3, &redemption_id(2), "2")
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::BurnWithoutJournal]);
    let item = the(&asset, ItemKind::BurnWithoutJournal);
    assert_eq!(item.effect, minus("2"));
    assert!(item.detail.contains("no request at Alpaca"));
    assert_eq!(asset.difference, minus("2"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn redemption_burned_twice_is_a_double_burn_of_the_extra() {
    // Given the AP's 2, journaled by Alpaca, burned in two transactions of 2 each
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Completed, 2)
        .burned(30, 3, &redemption_id(2), "2")
        .burned(31, 4, &redemption_id(2), "2")
        .audited();
    // Then the second 2 are missing from the supply, and more was burned than transferred
    assert_eq!(kinds(&asset), [ItemKind::Mismatch, ItemKind::DoubleBurn]);
    assert_eq!(the(&asset, ItemKind::DoubleBurn).effect, minus("2"));
    assert!(the(&asset, ItemKind::Mismatch).effect.is_zero());
    assert_eq!(asset.difference, minus("2"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn redemption_burned_in_two_halves_is_a_double_burn_without_effect() {
    // Given the AP's 2, journaled by Alpaca, burned as 1.5 and 0.5 in two transactions
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Completed, 2)
        .burned(30, 3, &redemption_id(2), "1.5")
        .burned(31, 4, &redemption_id(2), "0.5")
        .audited();
    // Then the book balances, but a burn the bot never plans needs a look
    assert_eq!(kinds(&asset), [ItemKind::DoubleBurn]);
    assert!(the(&asset, ItemKind::DoubleBurn).effect.is_zero());
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

#[test]
fn burn_of_less_than_journaled_is_a_mismatch_and_the_rest_waits() {
    // Given the AP's 2, journaled by Alpaca, of which only 1.5 is burned
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Completed, 2)
        .burned(30, 3, &redemption_id(2), "1.5")
        .audited();
    // Then 0.5 tokens are still in supply though Alpaca journaled their shares back
    assert_eq!(kinds(&asset), [ItemKind::Mismatch, ItemKind::Mismatch]);
    let effects: Vec<SignedQty> = asset.items.iter().map(|i| i.effect).collect();
    assert!(effects.contains(&plus("0.5")), "{effects:?}");
    assert!(effects.contains(&SignedQty::ZERO), "{effects:?}");
    assert_eq!(asset.totals.waiting_in_bot, q("0.5"));
    assert_eq!(asset.difference, plus("0.5"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn burn_tagged_for_no_transfer_is_a_burn_of_an_unknown_redemption() {
    // Given a burn of 1 tagged for a redemption no transfer to the bot started
    let asset = given_a_clean_mint()
        .burned(30, 3, &redemption_id(9), "1")
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::BurnUnknownRedemption]);
    let item = the(&asset, ItemKind::BurnUnknownRedemption);
    assert_eq!(item.effect, minus("1"));
    assert_eq!(item.issuer_request_id, Some(redemption_id(9)));
    assert_eq!(asset.difference, minus("1"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn burn_without_our_receipt_information_is_an_untagged_burn() {
    let asset = given_a_clean_mint().burned_untagged(30, 3, "1").audited();
    assert_eq!(kinds(&asset), [ItemKind::UntaggedBurn]);
    assert_eq!(the(&asset, ItemKind::UntaggedBurn).effect, minus("1"));
    assert_eq!(asset.difference, minus("1"));
    assert!(asset.unexplained.is_zero());
}

// ---------------------------------------------------------------------------------------------
// Redemptions: only at Alpaca, or only at the bot
// ---------------------------------------------------------------------------------------------

#[test]
fn completed_redeem_with_no_transfer_behind_it_is_its_quantity() {
    // Given Alpaca journaled 2 back for a redemption no transfer to the bot started
    let asset = given_a_clean_mint()
        .alpaca_redeem("tr-r", "2", Completed, 9)
        .audited();
    // Then the supply is 2 more than Alpaca backs
    assert_eq!(kinds(&asset), [ItemKind::RedeemWithoutTransfer]);
    assert_eq!(
        the(&asset, ItemKind::RedeemWithoutTransfer).effect,
        plus("2")
    );
    assert_eq!(asset.totals.alpaca_redeemed, q("2"));
    assert_eq!(asset.difference, plus("2"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn pending_redeem_with_no_transfer_behind_it_has_no_effect() {
    let asset = given_a_clean_mint()
        .alpaca_redeem("tr-r", "2", Pending, 9)
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::RedeemWithoutTransfer]);
    assert!(the(&asset, ItemKind::RedeemWithoutTransfer)
        .effect
        .is_zero());
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

#[test]
fn tokens_the_bot_sends_out_for_no_reason_are_an_unexplained_outflow() {
    // Given the bot sending 1 to a stranger, with no mint, burn or transfer in to return
    let asset = given_a_clean_mint()
        .sent_by_bot(30, 3, STRANGER, "1")
        .audited();
    // Then the supply does not move, but someone must look
    assert_eq!(kinds(&asset), [ItemKind::UnexplainedOutflow]);
    let item = the(&asset, ItemKind::UnexplainedOutflow);
    assert!(item.effect.is_zero());
    assert_eq!(item.wallet, Some(STRANGER));
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

#[test]
fn a_return_to_the_sender_is_not_an_outflow() {
    // Given a stranger's 1 sent back whole by an operator: the counterpart of the outflow above
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, STRANGER, "1")
        .sent_by_bot(30, 3, STRANGER, "1")
        .audited();
    assert!(asset.items.is_empty(), "{:#?}", asset.items);
    assert_eq!(asset.totals.returned, q("1"));
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

// ---------------------------------------------------------------------------------------------
// Alpaca journaling one redemption more than once
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_completed_redeem_for_one_redemption_is_counted_and_listed() {
    // Given the AP's 2 burned once, and Alpaca listing two completed redeems for that one
    // transfer (the bot asked twice): 4 shares journaled back for 2 tokens burned
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r1", "2", Completed, 2)
        .alpaca_redeem("tr-r2", "2", Completed, 2)
        .burned(30, 3, &redemption_id(2), "2")
        .audited();
    // Then both journals count, and the second one is the item that explains the difference
    assert_eq!(asset.totals.alpaca_redeemed, q("4"));
    assert_eq!(kinds(&asset), [ItemKind::RedeemWithoutTransfer]);
    let item = the(&asset, ItemKind::RedeemWithoutTransfer);
    assert_eq!(item.effect, plus("2"));
    assert_eq!(item.tokenization_request_id.as_deref(), Some("tr-r2"));
    assert_eq!(asset.difference, plus("2"));
    assert!(asset.unexplained.is_zero());
}

#[test]
fn a_completed_redeem_without_an_issuer_request_id_is_counted_and_listed() {
    // Given Alpaca listing a completed redeem of 2 that names no redemption of ours
    let asset = given_a_clean_mint()
        .alpaca(RequestKind::Redeem, "tr-r", None, "2", Completed, None)
        .audited();
    assert_eq!(asset.totals.alpaca_redeemed, q("2"));
    assert_eq!(kinds(&asset), [ItemKind::RedeemWithoutTransfer]);
    assert_eq!(
        the(&asset, ItemKind::RedeemWithoutTransfer).effect,
        plus("2")
    );
    assert_eq!(asset.difference, plus("2"));
    assert!(asset.unexplained.is_zero());
}

// ---------------------------------------------------------------------------------------------
// Returns and outflows that need a person even when the difference is zero
// ---------------------------------------------------------------------------------------------

#[test]
fn tokens_returned_while_alpaca_may_still_journal_them_need_attention() {
    // Given the AP's 2 pending at Alpaca, and an operator returning the 2 anyway
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Pending, 2)
        .sent_by_bot(30, 3, AP, "2")
        .audited();
    // Then nothing moved yet, but if Alpaca completes the journal the AP has both
    assert_eq!(kinds(&asset), [ItemKind::Mismatch]);
    let item = the(&asset, ItemKind::Mismatch);
    assert!(item.effect.is_zero());
    assert!(item.detail.contains("pending"), "{}", item.detail);
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}

#[test]
fn tokens_sent_to_a_stranger_inside_a_burn_are_an_unexplained_outflow() {
    // Given the AP's 2, journaled and burned, and in the burn's transaction 1 more sent to a
    // stranger
    let asset = given_a_clean_mint()
        .sent_to_bot(20, 2, AP, "2")
        .alpaca_redeem("tr-r", "2", Completed, 2)
        .burned(30, 3, &redemption_id(2), "2")
        .transfer(at(30, 5, 3), BOT, STRANGER, "1")
        .audited();
    assert_eq!(kinds(&asset), [ItemKind::UnexplainedOutflow]);
    let item = the(&asset, ItemKind::UnexplainedOutflow);
    assert!(item.effect.is_zero());
    assert_eq!(item.wallet, Some(STRANGER));
    assert!(asset.difference.is_zero());
    assert!(asset.unexplained.is_zero());
}
