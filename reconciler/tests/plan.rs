//! `plan` decides every state of a mint and of a redemption the way a careful operator would: never
//! a second deposit or burn, never a partial burn, never a second return, nothing before its
//! confirmations, and the same world always gives the same plan.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy_primitives::{Address, B256, U256};
use insta::assert_json_snapshot;
use reconciler::{
    plan, Action, AlpacaView, Anomaly, Callback, ClientId, ClientRef, IssuerRequestId, Journal,
    JournalStatus, MintIntent, Network, ObservedBurn, ObservedDeposit, Policy, Problem, Qty,
    ReceiptBalance, Redemption, RedemptionState, Symbol, TokenizationRequestId, TrackedTx,
    TxPurpose, TxStatus, World,
};
use std::collections::BTreeSet;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The chain head of every scenario. With [`policy`], a log in block 98 or below is confirmed
/// (3 blocks, its own included), one in block 99 or 100 is not.
const HEAD: u64 = 100;
const CONFIRMED: u64 = 98;
const UNCONFIRMED: u64 = 99;

const VAULT_A: Address = Address::repeat_byte(0xaa);
const VAULT_B: Address = Address::repeat_byte(0xbb);
/// The AP's whitelisted wallet: receiver of mints, sender of redemptions.
const AP: Address = Address::repeat_byte(0x11);
/// A wallet nobody linked.
const STRANGER: Address = Address::repeat_byte(0x66);
const BOT: Address = Address::repeat_byte(0xb0);

fn policy() -> Policy {
    Policy {
        confirmations_min: 3,
        rebroadcast_after_blocks: 2,
        replace_after_blocks: 6,
        mints_per_tx_max: 40,
        mint_attempts_max: 3,
        redemption_attempts_max: 3,
        txs_in_flight_max: 64,
    }
}

fn id(text: &str) -> IssuerRequestId {
    IssuerRequestId::parse(text).unwrap()
}

fn trid(text: &str) -> TokenizationRequestId {
    TokenizationRequestId::parse(text).unwrap()
}

fn qty(text: &str) -> Qty {
    Qty::parse(text).unwrap()
}

/// Base units of a decimal quantity of shares.
fn units(text: &str) -> U256 {
    qty(text).units()
}

/// A readable transaction hash: `0x00..00<n>`.
fn hash(n: u64) -> B256 {
    B256::from(U256::from(n))
}

/// A mint intent for 10 shares on vault A to the AP, with no failed attempt.
fn mint_intent(issuer_request_id: &str, journal: Journal, callback: Callback) -> MintIntent {
    MintIntent {
        issuer_request_id: id(issuer_request_id),
        tokenization_request_id: trid(&format!("tr-{issuer_request_id}")),
        client: ClientRef::ClientExternalAccountId(ClientId::parse("client-1").unwrap()),
        wallet: AP,
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("anvil").unwrap(),
        qty: qty("10"),
        vault: VAULT_A,
        journal,
        callback,
        failed_attempts: 0,
        accepted_at: 1_700_000_000,
    }
}

/// A journal-completed intent whose callback was never sent: ready to mint.
fn ready(issuer_request_id: &str) -> MintIntent {
    mint_intent(issuer_request_id, Journal::Completed, Callback::NotSent)
}

/// The tagged deposit of a [`mint_intent`] (vault A, 10 shares) in `block`, tx hash `hash(block)`.
fn deposit(issuer_request_id: &str, block: u64) -> ObservedDeposit {
    ObservedDeposit {
        vault: VAULT_A,
        issuer_request_id: id(issuer_request_id),
        tokenization_request_id: trid(&format!("tr-{issuer_request_id}")),
        owner: BOT,
        assets: units("10"),
        receipt_id: U256::from(block),
        block_number: block,
        block_hash: hash(0xb10c_0000 + block),
        tx_hash: hash(block),
        log_index: 0,
    }
}

/// The gas limit every test transaction is signed with.
const TX_GAS_LIMIT: u64 = 3_000_000;

fn tx(nonce: u64, purpose: TxPurpose, status: TxStatus) -> TrackedTx {
    TrackedTx {
        nonce,
        purpose,
        status,
        gas_limit: Some(TX_GAS_LIMIT),
    }
}

fn minting(vault: Address, ids: &[&str]) -> TxPurpose {
    TxPurpose::Mint {
        vault,
        issuer_request_ids: ids.iter().map(|i| id(i)).collect(),
    }
}

fn burning(redemption_id: &str, allocations: &[(u64, &str)]) -> TxPurpose {
    TxPurpose::Burn {
        vault: VAULT_A,
        redemption_id: id(redemption_id),
        allocations: allocations
            .iter()
            .map(|(receipt, shares)| (U256::from(*receipt), units(shares)))
            .collect(),
    }
}

fn returning(redemption_id: &str) -> TxPurpose {
    TxPurpose::Return {
        vault: VAULT_A,
        redemption_id: id(redemption_id),
    }
}

fn pending(age_blocks: u64) -> TxStatus {
    TxStatus::Pending { age_blocks }
}

fn mined(block_number: u64, success: bool) -> TxStatus {
    TxStatus::Mined {
        block_number,
        success,
        hash: hash(0x7700 + block_number),
    }
}

/// A confirmed transfer of 5 shares to the bot on vault A, id `red-<n>`. `client`: the linked
/// client of the sender, `None` for a stranger.
fn redemption(n: u64, state: RedemptionState, client: Option<&str>) -> Redemption {
    Redemption {
        id: id(&format!("red-{n}")),
        vault: VAULT_A,
        underlying: Symbol::parse("AAPL").unwrap(),
        token: Symbol::parse("tAAPL").unwrap(),
        network: Network::parse("anvil").unwrap(),
        sender: if client.is_some() { AP } else { STRANGER },
        client_id: client.map(|c| ClientId::parse(c).unwrap()),
        client_account_id: None,
        qty: qty("5"),
        tx_hash: hash(0xe000 + n),
        log_index: n,
        block_number: CONFIRMED,
        state,
        failed_attempts: 0,
    }
}

fn requested(tokenization_request_id: &str) -> RedemptionState {
    RedemptionState::Requested {
        tokenization_request_id: trid(tokenization_request_id),
    }
}

fn journaled(tokenization_request_id: &str) -> RedemptionState {
    RedemptionState::Journaled {
        tokenization_request_id: trid(tokenization_request_id),
    }
}

fn flagged(anomaly: Anomaly, return_requested: bool) -> RedemptionState {
    RedemptionState::Flagged {
        anomaly,
        return_requested,
        tokenization_request_id: None,
    }
}

fn poll(redemption_id: &str, status: JournalStatus) -> AlpacaView {
    AlpacaView {
        redemption_id: id(redemption_id),
        status,
        mismatches: Vec::new(),
    }
}

/// The bot's balance of receipt `receipt` of vault A.
fn receipt(receipt: u64, balance: &str) -> ReceiptBalance {
    ReceiptBalance {
        vault: VAULT_A,
        id: U256::from(receipt),
        balance: units(balance),
    }
}

fn burn_log(redemption_id: &str, block: u64) -> ObservedBurn {
    ObservedBurn {
        vault: VAULT_A,
        redemption_id: id(redemption_id),
        shares: units("5"),
        receipt_id: U256::from(1),
        block_number: block,
        tx_hash: hash(0xd000 + block),
        log_index: 0,
    }
}

fn world() -> World {
    World {
        head_block: HEAD,
        ..World::default()
    }
}

fn minted_ids(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Mint { items, .. } => Some(items),
            _ => None,
        })
        .flatten()
        .map(|item| item.issuer_request_id.to_string())
        .collect()
}

fn burns(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Burn { .. }))
        .collect()
}

/// Burn allocations as (receipt id, decimal shares), for assertions a person can read.
fn allocations_of(action: &Action) -> (Vec<(u64, String)>, String) {
    let Action::Burn {
        allocations, dust, ..
    } = action
    else {
        panic!("not a burn: {action:?}");
    };
    let allocations = allocations
        .iter()
        .map(|(receipt, shares)| (receipt.to::<u64>(), Qty::from_units(*shares).to_decimal()))
        .collect();
    (allocations, Qty::from_units(*dust).to_decimal())
}

// ---------------------------------------------------------------------------------------------
// Mints: journal
// ---------------------------------------------------------------------------------------------

#[test]
fn mint_with_journal_pending_does_nothing() {
    // Given an issuance Alpaca has not confirmed yet
    let world = World {
        mints: vec![mint_intent("mint-1", Journal::Pending, Callback::NotSent)],
        ..world()
    };
    // When planned, then nothing is minted
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_journal_rejected_does_nothing() {
    let world = World {
        mints: vec![mint_intent("mint-1", Journal::Rejected, Callback::NotSent)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_completed_with_nothing_on_chain_mints() {
    // Given a completed journal, no deposit, no transaction
    let world = World {
        mints: vec![ready("mint-1")],
        ..world()
    };
    // Then one multicall on its vault to the AP
    let actions = plan(&world, &policy());
    assert_eq!(minted_ids(&actions), ["mint-1"]);
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Mints: our transaction
// ---------------------------------------------------------------------------------------------

#[test]
fn mint_with_young_pending_tx_does_nothing() {
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(7, minting(VAULT_A, &["mint-1"]), pending(1))],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_pending_tx_past_rebroadcast_after_rebroadcasts_it() {
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(7, minting(VAULT_A, &["mint-1"]), pending(2))],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(actions, [Action::Rebroadcast { nonce: 7 }]);
    assert_json_snapshot!(actions);
}

/// Mints m1 and m2 in transactions `first` and `first + 1`, both pending for `age` blocks, the
/// head block having left `head_gas_room` gas unused.
fn two_pending(first: u64, age: u64, head_gas_room: Option<u64>) -> World {
    World {
        mints: vec![ready("m1"), ready("m2")],
        txs: vec![
            tx(first, minting(VAULT_A, &["m1"]), pending(age)),
            tx(first + 1, minting(VAULT_A, &["m2"]), pending(age)),
        ],
        head_gas_room,
        ..world()
    }
}

/// Issue 16: behind a full block our queued transactions only wait their turn; re-sending them
/// every block loaded the node with a block's worth of 10 KB transactions.
#[test]
fn pending_txs_behind_a_head_block_without_room_for_the_lowest_are_not_re_sent() {
    let world = two_pending(7, 2, Some(TX_GAS_LIMIT - 1));
    assert_eq!(plan(&world, &policy()), []);
}

#[test]
fn pending_txs_are_re_sent_when_the_head_block_had_room_for_the_lowest_and_left_it_out() {
    let world = two_pending(7, 2, Some(TX_GAS_LIMIT));
    assert_eq!(
        plan(&world, &policy()),
        [
            Action::Rebroadcast { nonce: 7 },
            Action::Rebroadcast { nonce: 8 }
        ]
    );
}

#[test]
fn a_nonce_stuck_behind_full_blocks_is_still_repriced() {
    let world = two_pending(5, 10, Some(0));
    assert_eq!(plan(&world, &policy()), [Action::Replace { nonce: 5 }]);
}

#[test]
fn mint_with_pending_tx_past_replace_after_replaces_at_same_nonce() {
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(7, minting(VAULT_A, &["mint-1"]), pending(6))],
        ..world()
    };
    // Then a fee bump of nonce 7 and no new mint: only one of them can ever be mined
    let actions = plan(&world, &policy());
    assert_eq!(actions, [Action::Replace { nonce: 7 }]);
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_tx_mined_but_unconfirmed_waits() {
    // Given our transaction and its deposit in a block a reorg could still undo
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(
            7,
            minting(VAULT_A, &["mint-1"]),
            mined(UNCONFIRMED, true),
        )],
        deposits: vec![deposit("mint-1", UNCONFIRMED)],
        ..world()
    };
    // Then no settle, no callback, no new mint
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_tx_reverted_but_unconfirmed_waits() {
    // A revert in a block that could be reorged is not yet a failure: minting again now could
    // mint twice if the reorg includes the original successfully.
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(
            7,
            minting(VAULT_A, &["mint-1"]),
            mined(UNCONFIRMED, false),
        )],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_tx_mined_confirmed_and_deposit_settles_and_calls_back() {
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(7, minting(VAULT_A, &["mint-1"]), mined(CONFIRMED, true))],
        deposits: vec![deposit("mint-1", CONFIRMED)],
        ..world()
    };
    // Then nonce 7 settles with no failure and Alpaca hears of the deposit's transaction
    let actions = plan(&world, &policy());
    assert!(minted_ids(&actions).is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_tx_mined_successfully_but_no_deposit_settles_failed_and_mints_again() {
    // Given Rain's payable fallback: a call it did not understand succeeded silently, no Deposit
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(7, minting(VAULT_A, &["mint-1"]), mined(CONFIRMED, true))],
        ..world()
    };
    // Then the receipt's status does not count: the attempt failed, and the mint is sent again
    let actions = plan(&world, &policy());
    assert_eq!(minted_ids(&actions), ["mint-1"]);
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_tx_reverted_settles_failed_and_mints_again() {
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(
            7,
            minting(VAULT_A, &["mint-1"]),
            mined(CONFIRMED, false),
        )],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(minted_ids(&actions), ["mint-1"]);
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_nonce_taken_settles_failed_and_mints_again() {
    // Given our nonce was consumed by a transaction that is not ours
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![tx(7, minting(VAULT_A, &["mint-1"]), TxStatus::NonceTaken)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(minted_ids(&actions), ["mint-1"]);
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_failed_old_tx_and_live_new_tx_settles_old_and_does_not_mint() {
    // Given nonce 7 lost its slot and nonce 9, already sent for the same mint, is still pending
    let world = World {
        mints: vec![ready("mint-1")],
        txs: vec![
            tx(7, minting(VAULT_A, &["mint-1"]), TxStatus::NonceTaken),
            tx(9, minting(VAULT_A, &["mint-1"]), pending(0)),
        ],
        ..world()
    };
    // Then nonce 7 is settled as failed but no third transaction is sent while 9 lives
    let actions = plan(&world, &policy());
    assert!(minted_ids(&actions).is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_attempts_exhausted_is_flagged() {
    let world = World {
        mints: vec![MintIntent {
            failed_attempts: 3,
            ..ready("mint-1")
        }],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(minted_ids(&actions).is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_whose_last_attempt_fails_in_this_pass_is_flagged_not_minted() {
    // Given two failures recorded and a third one settling now
    let world = World {
        mints: vec![MintIntent {
            failed_attempts: 2,
            ..ready("mint-1")
        }],
        txs: vec![tx(
            7,
            minting(VAULT_A, &["mint-1"]),
            mined(CONFIRMED, false),
        )],
        ..world()
    };
    // Then the settle counts as the third attempt: flagged, no fourth transaction
    let actions = plan(&world, &policy());
    assert!(minted_ids(&actions).is_empty());
    assert!(actions.contains(&Action::Flag {
        issuer_request_id: id("mint-1"),
        problem: Problem::AttemptsExhausted { attempts: 3 },
    }));
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Mints: the deposit and the callback
// ---------------------------------------------------------------------------------------------

#[test]
fn mint_with_deposit_unconfirmed_does_nothing() {
    // Given the deposit is seen (our transaction already settled) but is not yet deep enough
    let world = World {
        mints: vec![ready("mint-1")],
        deposits: vec![deposit("mint-1", UNCONFIRMED)],
        ..world()
    };
    // Then no callback yet, and above all no second mint
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_confirmed_deposit_and_callback_not_sent_calls_back() {
    let world = World {
        mints: vec![ready("mint-1")],
        deposits: vec![deposit("mint-1", CONFIRMED)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::MintCallback {
            issuer_request_id: id("mint-1"),
            tx_hash: hash(CONFIRMED),
            ask_first: false,
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_confirmed_deposit_and_callback_attempted_asks_alpaca_first() {
    let world = World {
        mints: vec![mint_intent(
            "mint-1",
            Journal::Completed,
            Callback::Attempted,
        )],
        deposits: vec![deposit("mint-1", CONFIRMED)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(matches!(
        actions.as_slice(),
        [Action::MintCallback {
            ask_first: true,
            ..
        }]
    ));
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_callback_acked_does_nothing() {
    let world = World {
        mints: vec![mint_intent(
            "mint-1",
            Journal::Completed,
            Callback::Acked {
                tx_hash: hash(CONFIRMED),
            },
        )],
        deposits: vec![deposit("mint-1", CONFIRMED)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_two_deposits_is_flagged_duplicate_and_called_back_once() {
    // Given a double mint on chain (it must never happen; if it did, it is reported, not fixed)
    let world = World {
        mints: vec![ready("mint-1")],
        deposits: vec![deposit("mint-1", 90), deposit("mint-1", 95)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(minted_ids(&actions).is_empty());
    let callbacks = actions
        .iter()
        .filter(|a| matches!(a, Action::MintCallback { .. }))
        .count();
    assert_eq!(callbacks, 1);
    assert!(actions.contains(&Action::Flag {
        issuer_request_id: id("mint-1"),
        problem: Problem::DuplicateDeposits {
            tx_hashes: vec![hash(90), hash(95)],
        },
    }));
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_deposit_on_another_vault_is_flagged_mismatch() {
    let world = World {
        mints: vec![ready("mint-1")],
        deposits: vec![ObservedDeposit {
            vault: VAULT_B,
            ..deposit("mint-1", CONFIRMED)
        }],
        ..world()
    };
    // Then flagged; neither a callback for the wrong deposit nor a second mint
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::Flag {
            issuer_request_id: id("mint-1"),
            problem: Problem::DepositMismatch {
                tx_hash: hash(CONFIRMED)
            },
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn mint_with_deposit_of_another_amount_is_flagged_mismatch() {
    let world = World {
        mints: vec![ready("mint-1")],
        deposits: vec![ObservedDeposit {
            assets: units("9.999999999999999999"),
            ..deposit("mint-1", CONFIRMED)
        }],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::Flag {
            issuer_request_id: id("mint-1"),
            problem: Problem::DepositMismatch {
                tx_hash: hash(CONFIRMED)
            },
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn tagged_deposit_without_intent_is_recovered_only_once_confirmed() {
    // Given a deposit tagged for an id the cache does not know (a deleted cache)
    let unconfirmed = World {
        deposits: vec![deposit("mint-lost", UNCONFIRMED)],
        ..world()
    };
    let confirmed = World {
        deposits: vec![deposit("mint-lost", CONFIRMED)],
        ..world()
    };
    // Then nothing before its confirmations; afterwards, rebuild it from Alpaca (never re-mint)
    assert!(plan(&unconfirmed, &policy()).is_empty());
    let actions = plan(&confirmed, &policy());
    assert_eq!(
        actions,
        [Action::RecoverMint {
            deposit: deposit("mint-lost", CONFIRMED)
        }]
    );
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Mints: batching
// ---------------------------------------------------------------------------------------------

#[test]
fn five_ready_mints_with_two_per_tx_make_three_multicalls() {
    let world = World {
        mints: (1..=5).map(|n| ready(&format!("mint-{n}"))).collect(),
        ..world()
    };
    let policy = Policy {
        mints_per_tx_max: 2,
        ..policy()
    };
    let actions = plan(&world, &policy);
    let sizes: Vec<usize> = actions
        .iter()
        .map(|a| match a {
            Action::Mint { items, .. } => items.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_json_snapshot!(actions);
}

#[test]
fn ready_mints_on_several_vaults_are_grouped_per_vault() {
    // Given intents interleaved across two vaults, and one already in flight on vault B
    let on_b = |n: &str| MintIntent {
        vault: VAULT_B,
        ..ready(n)
    };
    let world = World {
        mints: vec![
            on_b("mint-b1"),
            ready("mint-a1"),
            on_b("mint-b2"),
            ready("mint-a2"),
            on_b("mint-b3"),
        ],
        txs: vec![tx(4, minting(VAULT_B, &["mint-b3"]), pending(0))],
        ..world()
    };
    // Then one multicall per vault, each holding only its own vault's mints
    let actions = plan(&world, &policy());
    for action in &actions {
        let Action::Mint { vault, items } = action else {
            panic!("unexpected {action:?}");
        };
        let expected = if *vault == VAULT_A {
            "mint-a"
        } else {
            "mint-b"
        };
        assert!(items
            .iter()
            .all(|i| i.issuer_request_id.as_str().starts_with(expected)));
    }
    assert_eq!(
        minted_ids(&actions),
        ["mint-a1", "mint-a2", "mint-b1", "mint-b2"]
    );
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Redemptions: detection and the redeem call
// ---------------------------------------------------------------------------------------------

#[test]
fn redemption_with_unconfirmed_transfer_does_nothing() {
    let world = World {
        redemptions: vec![Redemption {
            block_number: UNCONFIRMED,
            ..redemption(1, RedemptionState::Detected, Some("client-1"))
        }],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_from_unknown_sender_is_flagged() {
    let world = World {
        redemptions: vec![redemption(1, RedemptionState::Detected, None)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::SetRedemption {
            redemption_id: id("red-1"),
            state: flagged(Anomaly::UnknownSender, false),
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_below_alpaca_precision_is_flagged() {
    // Given 0.0000000001 shares: nothing left at 9 decimals, Alpaca cannot journal it
    let world = World {
        redemptions: vec![Redemption {
            qty: qty("0.0000000001"),
            ..redemption(1, RedemptionState::Detected, Some("client-1"))
        }],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::SetRedemption {
            redemption_id: id("red-1"),
            state: flagged(Anomaly::BelowAlpacaPrecision, false),
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_detected_from_known_client_calls_alpaca() {
    let world = World {
        redemptions: vec![redemption(1, RedemptionState::Detected, Some("client-1"))],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::RedeemCall {
            redemption_id: id("red-1"),
            ask_first: false,
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_requesting_asks_alpaca_before_calling_again() {
    let world = World {
        redemptions: vec![redemption(1, RedemptionState::Requesting, Some("client-1"))],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::RedeemCall {
            redemption_id: id("red-1"),
            ask_first: true,
        }]
    );
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Redemptions: Alpaca's journal
// ---------------------------------------------------------------------------------------------

#[test]
fn redemption_requested_without_a_poll_this_pass_does_nothing() {
    let world = World {
        redemptions: vec![redemption(1, requested("tr-r1"), Some("client-1"))],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_requested_and_pending_at_alpaca_does_nothing() {
    let world = World {
        redemptions: vec![redemption(1, requested("tr-r1"), Some("client-1"))],
        alpaca: vec![poll("red-1", JournalStatus::Pending)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_requested_and_completed_at_alpaca_is_journaled() {
    let world = World {
        redemptions: vec![redemption(1, requested("tr-r1"), Some("client-1"))],
        alpaca: vec![poll("red-1", JournalStatus::Completed)],
        receipts: vec![receipt(1, "100")],
        ..world()
    };
    // Then recorded as journaled; the burn is planned from that state, not in the same breath
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::SetRedemption {
            redemption_id: id("red-1"),
            state: journaled("tr-r1"),
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_requested_and_rejected_at_alpaca_is_flagged() {
    let world = World {
        redemptions: vec![redemption(1, requested("tr-r1"), Some("client-1"))],
        alpaca: vec![poll("red-1", JournalStatus::Rejected)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::SetRedemption {
            redemption_id: id("red-1"),
            state: RedemptionState::Flagged {
                anomaly: Anomaly::Rejected,
                return_requested: false,
                tokenization_request_id: Some(trid("tr-r1")),
            },
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn redemption_completed_at_alpaca_with_mismatched_echo_is_flagged_not_burned() {
    // Given Alpaca says completed, but its request echoes another quantity and wallet
    let world = World {
        redemptions: vec![redemption(1, requested("tr-r1"), Some("client-1"))],
        alpaca: vec![AlpacaView {
            mismatches: vec![
                "qty 4 != 5".to_owned(),
                "wallet_address 0x12 != 0x11".to_owned(),
            ],
            ..poll("red-1", JournalStatus::Completed)
        }],
        receipts: vec![receipt(1, "100")],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(burns(&actions).is_empty());
    assert!(matches!(
        actions.as_slice(),
        [Action::SetRedemption {
            state: RedemptionState::Flagged {
                anomaly: Anomaly::Mismatch { .. },
                ..
            },
            ..
        }]
    ));
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Redemptions: the burn
// ---------------------------------------------------------------------------------------------

#[test]
fn journaled_redemption_burns_largest_receipts_first_with_dust_back() {
    // Given 7.000000000123456789 shares journaled (Alpaca kept 7), receipts 4, 5 and 1 on vault A,
    // and a bigger receipt on vault B that must not be touched
    let world = World {
        redemptions: vec![Redemption {
            qty: qty("7.000000000123456789"),
            ..redemption(1, journaled("tr-r1"), Some("client-1"))
        }],
        receipts: vec![
            receipt(1, "4"),
            receipt(2, "5"),
            receipt(3, "1"),
            ReceiptBalance {
                vault: VAULT_B,
                ..receipt(9, "100")
            },
        ],
        ..world()
    };
    // Then one burn of 5 from receipt 2 and 2 from receipt 1, and the dust back to the sender
    let actions = plan(&world, &policy());
    let [burn] = burns(&actions)[..] else {
        panic!("expected one burn: {actions:?}");
    };
    assert_eq!(
        allocations_of(burn),
        (
            vec![(2, "5".to_owned()), (1, "2".to_owned())],
            "0.000000000123456789".to_owned()
        )
    );
    assert_json_snapshot!(actions);
}

#[test]
fn two_journaled_redemptions_never_plan_on_the_same_receipts() {
    // Given receipts 6 + 4 = 10, and redemptions of 6 and then 5 (11 in all)
    let world = World {
        redemptions: vec![
            Redemption {
                qty: qty("6"),
                ..redemption(1, journaled("tr-r1"), Some("client-1"))
            },
            redemption(2, journaled("tr-r2"), Some("client-1")),
        ],
        receipts: vec![receipt(1, "6"), receipt(2, "4")],
        ..world()
    };
    // Then the first takes receipt 1 whole; the second does not count on it and waits
    let actions = plan(&world, &policy());
    let [burn] = burns(&actions)[..] else {
        panic!("expected one burn: {actions:?}");
    };
    assert!(matches!(burn, Action::Burn { redemption_id, .. } if *redemption_id == id("red-1")));
    assert_eq!(allocations_of(burn).0, [(1, "6".to_owned())]);
    assert_json_snapshot!(actions);
}

#[test]
fn two_journaled_redemptions_that_both_fit_split_the_receipts() {
    // Given receipts 6 + 4 and two redemptions of 5
    let world = World {
        redemptions: vec![
            redemption(1, journaled("tr-r1"), Some("client-1")),
            redemption(2, journaled("tr-r2"), Some("client-1")),
        ],
        receipts: vec![receipt(1, "6"), receipt(2, "4")],
        ..world()
    };
    // Then 5 of receipt 1 for the first; the second sees 1 left of it and 4 of receipt 2
    let actions = plan(&world, &policy());
    let [first, second] = burns(&actions)[..] else {
        panic!("expected two burns: {actions:?}");
    };
    assert_eq!(allocations_of(first).0, [(1, "5".to_owned())]);
    assert_eq!(
        allocations_of(second).0,
        [(2, "4".to_owned()), (1, "1".to_owned())]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn live_burn_tx_reserves_its_receipts() {
    // Given red-1's burn of 6 from receipt 1 still pending, and red-2 journaled for 3
    let world = World {
        redemptions: vec![
            Redemption {
                qty: qty("6"),
                ..redemption(1, journaled("tr-r1"), Some("client-1"))
            },
            Redemption {
                qty: qty("3"),
                ..redemption(2, journaled("tr-r2"), Some("client-1"))
            },
        ],
        txs: vec![tx(11, burning("red-1", &[(1, "6")]), pending(0))],
        receipts: vec![receipt(1, "6"), receipt(2, "4")],
        ..world()
    };
    // Then red-1 is not burned twice, and red-2 burns from receipt 2 only
    let actions = plan(&world, &policy());
    let [burn] = burns(&actions)[..] else {
        panic!("expected one burn: {actions:?}");
    };
    assert!(matches!(burn, Action::Burn { redemption_id, .. } if *redemption_id == id("red-2")));
    assert_eq!(allocations_of(burn).0, [(2, "3".to_owned())]);
    assert_json_snapshot!(actions);
}

#[test]
fn journaled_redemption_with_burn_mined_but_unconfirmed_waits() {
    let world = World {
        redemptions: vec![redemption(1, journaled("tr-r1"), Some("client-1"))],
        txs: vec![tx(
            11,
            burning("red-1", &[(1, "5")]),
            mined(UNCONFIRMED, true),
        )],
        burns: vec![burn_log("red-1", UNCONFIRMED)],
        receipts: vec![receipt(1, "5")],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn journaled_redemption_without_enough_receipts_waits_never_burns_partially() {
    let world = World {
        redemptions: vec![redemption(1, journaled("tr-r1"), Some("client-1"))],
        receipts: vec![receipt(1, "3"), receipt(2, "1.999999999")],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn journaled_redemption_with_confirmed_tagged_burn_is_burned() {
    // Given our burn settled and its Withdraw is confirmed
    let world = World {
        redemptions: vec![redemption(1, journaled("tr-r1"), Some("client-1"))],
        burns: vec![burn_log("red-1", CONFIRMED)],
        receipts: vec![receipt(1, "100")],
        ..world()
    };
    // Then recorded as burned, never burned again
    let actions = plan(&world, &policy());
    assert!(burns(&actions).is_empty());
    assert_eq!(
        actions,
        [Action::SetRedemption {
            redemption_id: id("red-1"),
            state: RedemptionState::Burned {
                tokenization_request_id: trid("tr-r1"),
                tx_hash: hash(0xd000 + CONFIRMED),
            },
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn journaled_redemption_with_unconfirmed_tagged_burn_waits() {
    // Given the Withdraw is seen but the burn transaction is no longer tracked (settled earlier)
    let world = World {
        redemptions: vec![redemption(1, journaled("tr-r1"), Some("client-1"))],
        burns: vec![burn_log("red-1", UNCONFIRMED)],
        receipts: vec![receipt(1, "100")],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn journaled_redemption_whose_burn_reverted_settles_and_burns_again() {
    let world = World {
        redemptions: vec![redemption(1, journaled("tr-r1"), Some("client-1"))],
        txs: vec![tx(
            11,
            burning("red-1", &[(1, "5")]),
            mined(CONFIRMED, false),
        )],
        receipts: vec![receipt(1, "5")],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert_eq!(burns(&actions).len(), 1);
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Redemptions: returns and final states
// ---------------------------------------------------------------------------------------------

#[test]
fn flagged_redemption_with_return_requested_is_returned() {
    let world = World {
        redemptions: vec![Redemption {
            qty: qty("5.000000000000000001"),
            ..redemption(1, flagged(Anomaly::UnknownSender, true), None)
        }],
        ..world()
    };
    // Then every unit goes back to the sender, dust included
    let actions = plan(&world, &policy());
    assert_eq!(
        actions,
        [Action::Return {
            vault: VAULT_A,
            redemption_id: id("red-1"),
            to: STRANGER,
            qty: qty("5.000000000000000001"),
        }]
    );
    assert_json_snapshot!(actions);
}

#[test]
fn flagged_redemption_without_return_requested_waits_for_an_operator() {
    let world = World {
        redemptions: vec![redemption(1, flagged(Anomaly::UnknownSender, false), None)],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn flagged_redemption_with_return_pending_is_not_returned_again() {
    let world = World {
        redemptions: vec![redemption(1, flagged(Anomaly::UnknownSender, true), None)],
        txs: vec![tx(12, returning("red-1"), pending(0))],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn flagged_redemption_with_successful_return_mined_is_not_returned_again() {
    // Given the return transaction mined successfully (confirmed, not yet settled)
    let world = World {
        redemptions: vec![redemption(1, flagged(Anomaly::UnknownSender, true), None)],
        txs: vec![tx(12, returning("red-1"), mined(CONFIRMED, true))],
        ..world()
    };
    // Then it settles; no second return
    let actions = plan(&world, &policy());
    assert!(!actions.iter().any(|a| matches!(a, Action::Return { .. })));
    assert_json_snapshot!(actions);
}

#[test]
fn flagged_redemption_whose_return_reverted_settles_and_is_returned_again() {
    // Given the return transaction reverted: the tokens are still in the bot's wallet
    let world = World {
        redemptions: vec![redemption(1, flagged(Anomaly::UnknownSender, true), None)],
        txs: vec![tx(12, returning("red-1"), mined(CONFIRMED, false))],
        ..world()
    };
    let actions = plan(&world, &policy());
    let returns = actions
        .iter()
        .filter(|a| matches!(a, Action::Return { .. }))
        .count();
    assert_eq!(returns, 1);
    assert_json_snapshot!(actions);
}

#[test]
fn redetected_redemption_with_confirmed_burn_is_not_requested_again() {
    // Given a lost cache: the transfer is re-detected, and our tagged burn for it is on chain
    let world = World {
        redemptions: vec![redemption(1, RedemptionState::Detected, Some("client-1"))],
        burns: vec![burn_log("red-1", CONFIRMED)],
        receipts: vec![receipt(1, "100")],
        ..world()
    };
    // Then Alpaca is not asked a second time and nothing is burned again
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

#[test]
fn redemptions_in_final_states_do_nothing() {
    let world = World {
        redemptions: vec![
            redemption(
                1,
                RedemptionState::Burned {
                    tokenization_request_id: trid("tr-r1"),
                    tx_hash: hash(0xd000 + CONFIRMED),
                },
                Some("client-1"),
            ),
            redemption(
                2,
                RedemptionState::Returned {
                    tx_hash: hash(0xd001),
                },
                None,
            ),
        ],
        burns: vec![burn_log("red-1", CONFIRMED)],
        receipts: vec![receipt(1, "100")],
        ..world()
    };
    let actions = plan(&world, &policy());
    assert!(actions.is_empty());
    assert_json_snapshot!(actions);
}

// ---------------------------------------------------------------------------------------------
// Determinism
// ---------------------------------------------------------------------------------------------

/// A busy world: every kind of mint and redemption work at once.
fn busy_world() -> World {
    World {
        mints: vec![
            ready("mint-1"),
            ready("mint-2"),
            MintIntent {
                vault: VAULT_B,
                ..ready("mint-3")
            },
            ready("mint-4"),
            ready("mint-5"),
            mint_intent("mint-6", Journal::Pending, Callback::NotSent),
        ],
        deposits: vec![deposit("mint-5", CONFIRMED)],
        txs: vec![
            tx(1, minting(VAULT_A, &["mint-1"]), TxStatus::NonceTaken),
            tx(2, minting(VAULT_A, &["mint-2"]), pending(3)),
            tx(3, minting(VAULT_A, &["mint-4"]), mined(CONFIRMED, false)),
            tx(4, minting(VAULT_A, &["mint-5"]), mined(CONFIRMED, true)),
        ],
        redemptions: vec![
            redemption(1, RedemptionState::Detected, Some("client-1")),
            redemption(2, journaled("tr-r2"), Some("client-1")),
            redemption(3, RedemptionState::Detected, None),
        ],
        receipts: vec![receipt(1, "3"), receipt(2, "3")],
        ..world()
    }
}

#[test]
fn same_world_gives_same_plan_and_input_order_does_not_change_what_is_minted() {
    let world = busy_world();
    let first = plan(&world, &policy());
    assert_eq!(first, plan(&world, &policy()));

    let mut reordered = busy_world();
    reordered.mints.reverse();
    reordered.txs.reverse();
    let second = plan(&reordered, &policy());

    let set = |actions: &[Action]| minted_ids(actions).into_iter().collect::<BTreeSet<_>>();
    assert_eq!(set(&first), set(&second));
    assert_eq!(
        set(&first),
        ["mint-1", "mint-3", "mint-4"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    // The rest of the plan is the same set of actions too.
    let others = |actions: &[Action]| {
        let mut v: Vec<String> = actions
            .iter()
            .filter(|a| !matches!(a, Action::Mint { .. }))
            .map(|a| serde_json::to_string(a).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(others(&first), others(&second));
    assert_json_snapshot!(first);
}

// ---------------------------------------------------------------------------------------------
// Regressions found in review
// ---------------------------------------------------------------------------------------------

#[test]
fn a_deposit_for_a_journal_alpaca_did_not_complete_is_flagged_never_called_back() {
    for journal in [Journal::Rejected, Journal::Pending] {
        let world = World {
            head_block: HEAD,
            mints: vec![mint_intent("m1", journal, Callback::NotSent)],
            deposits: vec![deposit("m1", CONFIRMED)],
            ..World::default()
        };
        let actions = plan(&world, &policy());
        assert_eq!(
            actions,
            vec![Action::Flag {
                issuer_request_id: id("m1"),
                problem: Problem::DepositWithoutCompletedJournal {
                    tx_hash: hash(CONFIRMED)
                },
            }],
            "{journal:?}"
        );
    }
}

#[test]
fn the_earliest_deposit_is_the_one_called_back_whatever_the_input_order() {
    let early = deposit("m1", 90);
    let mut late = deposit("m1", 95);
    late.assets = units("3"); // the later one also mismatches
    for deposits in [
        vec![early.clone(), late.clone()],
        vec![late.clone(), early.clone()],
    ] {
        let world = World {
            head_block: HEAD,
            mints: vec![ready("m1")],
            deposits,
            ..World::default()
        };
        let actions = plan(&world, &policy());
        assert!(actions.contains(&Action::MintCallback {
            issuer_request_id: id("m1"),
            tx_hash: hash(90),
            ask_first: false,
        }));
        assert!(actions.contains(&Action::Flag {
            issuer_request_id: id("m1"),
            problem: Problem::DuplicateDeposits {
                tx_hashes: vec![hash(90), hash(95)]
            },
        }));
    }
}

#[test]
fn the_in_flight_cap_holds_new_mints_back() {
    let world = World {
        head_block: HEAD,
        mints: vec![ready("m1"), ready("m2")],
        txs: vec![tx(7, minting(VAULT_A, &["m1"]), pending(0))],
        ..World::default()
    };
    let one_at_a_time = Policy {
        txs_in_flight_max: 1,
        ..policy()
    };
    assert!(!plan(&world, &one_at_a_time)
        .iter()
        .any(|a| matches!(a, Action::Mint { .. })));
    let roomy = plan(&world, &policy());
    assert!(roomy.contains(&Action::Mint {
        vault: VAULT_A,
        items: vec![reconciler::MintItem {
            issuer_request_id: id("m2"),
            receiver: AP,
            qty: qty("10")
        }],
    }));
}

#[test]
fn a_settled_burn_does_not_reserve_receipts_beside_its_live_replacement() {
    let world = World {
        head_block: HEAD,
        redemptions: vec![
            redemption(
                1,
                RedemptionState::Journaled {
                    tokenization_request_id: trid("tr-r1"),
                },
                Some("client-1"),
            ),
            redemption(
                2,
                RedemptionState::Journaled {
                    tokenization_request_id: trid("tr-r2"),
                },
                Some("client-1"),
            ),
        ],
        receipts: vec![receipt(1, "10")],
        txs: vec![
            tx(3, burning("red-1", &[(1, "5")]), TxStatus::NonceTaken),
            tx(4, burning("red-1", &[(1, "5")]), pending(0)),
        ],
        ..World::default()
    };
    let actions = plan(&world, &policy());
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Burn { redemption_id, .. } if *redemption_id == id("red-2"))
        ),
        "{actions:?}"
    );
}

#[test]
fn burns_that_keep_failing_stop_and_flag_the_redemption() {
    let mut r = redemption(
        1,
        RedemptionState::Journaled {
            tokenization_request_id: trid("tr-r1"),
        },
        Some("client-1"),
    );
    r.failed_attempts = 2;
    let world = World {
        head_block: HEAD,
        redemptions: vec![r],
        receipts: vec![receipt(1, "10")],
        txs: vec![tx(
            9,
            burning("red-1", &[(1, "5")]),
            mined(CONFIRMED, false),
        )],
        ..World::default()
    };
    let actions = plan(&world, &policy());
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Burn { .. })),
        "{actions:?}"
    );
    assert!(actions.contains(&Action::SetRedemption {
        redemption_id: id("red-1"),
        state: RedemptionState::Flagged {
            anomaly: Anomaly::BurnFailed { attempts: 3 },
            return_requested: false,
            tokenization_request_id: Some(trid("tr-r1")),
        },
    }));
}

#[test]
fn returns_that_keep_failing_stop_until_the_operator_asks_again() {
    let mut r = redemption(
        1,
        RedemptionState::Flagged {
            anomaly: Anomaly::UnknownSender,
            return_requested: true,
            tokenization_request_id: None,
        },
        None,
    );
    r.failed_attempts = 3;
    let world = World {
        head_block: HEAD,
        redemptions: vec![r],
        ..World::default()
    };
    assert_eq!(
        plan(&world, &policy()),
        vec![Action::SetRedemption {
            redemption_id: id("red-1"),
            state: RedemptionState::Flagged {
                anomaly: Anomaly::UnknownSender,
                return_requested: false,
                tokenization_request_id: None,
            },
        }]
    );
}

#[test]
fn only_the_lowest_stuck_nonce_is_repriced_the_ones_behind_it_are_resent() {
    let world = World {
        head_block: HEAD,
        mints: vec![ready("m1"), ready("m2")],
        txs: vec![
            tx(5, minting(VAULT_A, &["m1"]), pending(10)),
            tx(6, minting(VAULT_A, &["m2"]), pending(10)),
        ],
        ..World::default()
    };
    assert_eq!(
        plan(&world, &policy()),
        vec![
            Action::Replace { nonce: 5 },
            Action::Rebroadcast { nonce: 6 }
        ]
    );
}

#[test]
fn a_redemption_stopped_by_a_refusal_is_not_called_again_and_can_be_returned() {
    // Given a redemption the shell flagged after Alpaca's final refusal of the redeem call,
    let refused = Anomaly::RedeemRefused {
        status: 422,
        code: Some("42210000".into()),
        message: "wallet_address is invalid".into(),
    };
    let flagged = RedemptionState::Flagged {
        anomaly: refused.clone(),
        return_requested: false,
        tokenization_request_id: None,
    };
    let world = World {
        head_block: HEAD,
        redemptions: vec![redemption(1, flagged, Some("client-1"))],
        ..World::default()
    };
    // when planned, then nothing is sent to Alpaca again: it waits for an operator,
    assert_eq!(plan(&world, &policy()), vec![]);
    // who may return the tokens (Alpaca never took the request).
    assert!(refused.returnable());
    assert!(
        !Anomaly::BurnFailed { attempts: 3 }.returnable(),
        "Alpaca may have journaled"
    );
    assert!(!Anomaly::Mismatch {
        detail: String::new()
    }
    .returnable());
}

#[test]
fn a_refused_mint_callback_is_not_sent_again() {
    // Given a confirmed deposit whose callback Alpaca refused with a final status,
    let refused = Callback::Refused {
        status: 404,
        code: Some("40410000".into()),
        message: "tokenization request not found".into(),
    };
    let world = World {
        head_block: HEAD,
        mints: vec![mint_intent("m1", Journal::Completed, refused)],
        deposits: vec![deposit("m1", CONFIRMED)],
        ..World::default()
    };
    // then the plan sends nothing: neither a callback nor a second mint.
    assert_eq!(plan(&world, &policy()), vec![]);
}

// ---------------------------------------------------------------------------------------------
// Backoff of Alpaca calls: the plan holds back a retry that is not due, never a first send.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_callback_retry_waits_for_its_due_time_and_a_first_callback_does_not() {
    // Given two confirmed mints, one never called back, one whose callback failed and backs off
    let waiting = IssuerRequestId::parse("mint-waiting").unwrap();
    let mut world = World {
        mints: vec![
            mint_intent("mint-first", Journal::Completed, Callback::NotSent),
            mint_intent("mint-waiting", Journal::Completed, Callback::Attempted),
        ],
        deposits: vec![
            deposit("mint-first", CONFIRMED),
            deposit("mint-waiting", CONFIRMED),
        ],
        now_ms: 1_000,
        ..world()
    };
    world.alpaca_due_at_ms.insert(waiting.clone(), 1_500);
    let callbacks = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::MintCallback {
                    issuer_request_id, ..
                } => Some(issuer_request_id.to_string()),
                _ => None,
            })
            .collect()
    };
    // When planned before the retry is due, then only the first callback goes out
    assert_eq!(callbacks(&plan(&world, &policy())), ["mint-first"]);
    // When planned once it is due, then the retry goes out too, asking Alpaca first
    world.now_ms = 1_500;
    let actions = plan(&world, &policy());
    assert_eq!(callbacks(&actions), ["mint-first", "mint-waiting"]);
    assert!(actions.iter().any(|a| matches!(a, Action::MintCallback { issuer_request_id, ask_first: true, .. } if *issuer_request_id == waiting)));
}

#[test]
fn a_recovery_lookup_backs_off_until_due() {
    // Given a confirmed tagged deposit the cache does not know, whose last lookup failed
    let orphan = IssuerRequestId::parse("mint-orphan").unwrap();
    let mut world = World {
        deposits: vec![deposit("mint-orphan", CONFIRMED)],
        now_ms: 10,
        ..world()
    };
    world.alpaca_due_at_ms.insert(orphan, 20);
    // When planned before due, then nobody asks Alpaca
    assert!(!plan(&world, &policy())
        .iter()
        .any(|a| matches!(a, Action::RecoverMint { .. })));
    // When due, then it is asked again
    world.now_ms = 20;
    assert!(plan(&world, &policy())
        .iter()
        .any(|a| matches!(a, Action::RecoverMint { .. })));
}
