//! Tokens sent back to the bot become one redeem request at Alpaca and, once Alpaca completes the
//! journal, exactly one burn against our receipts (largest first) with any dust below 9 decimals
//! returned in the same transaction. What is not a clean redemption (unknown sender, rejected
//! journal) is flagged, and the operator's return sends the tokens back exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use common::stack::{eventually, Issuer, World};
use common::STRANGER_KEY;
use issuer::chain::Chain;
use issuer::chain::Vault;
use issuer::sim::{FaultsPatch, RedeemOutcome};

use reconciler::{IssuerRequestId, Policy, RedemptionState};
use std::time::Duration;

const E18: u128 = 1_000_000_000_000_000_000;
/// anvil's third dev key: a wallet nobody whitelisted.
const OUTSIDER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

fn bot() -> Address {
    common::bot().address()
}

fn redemption_state(issuer: &Issuer, id: &IssuerRequestId) -> Option<RedemptionState> {
    issuer.store.redemption(id).unwrap().map(|r| r.state)
}

async fn wait_state(
    issuer: &Issuer,
    id: &IssuerRequestId,
    what: &str,
    pred: impl Fn(&RedemptionState) -> bool,
) {
    eventually(Duration::from_secs(40), what, || async {
        redemption_state(issuer, id).is_some_and(|s| pred(&s))
    })
    .await;
}

async fn burns_for(world: &World, id: &IssuerRequestId) -> Vec<(U256, U256)> {
    let chain = Chain::connect(&world.rpc(), common::bot()).await.unwrap();
    let head = chain.head().await.unwrap();
    chain
        .scan_burns(world.deployed.vault, 0, head)
        .await
        .unwrap()
        .into_iter()
        .filter(|b| &b.redemption_id == id)
        .map(|b| (b.receipt_id, b.shares))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_redemption_burns_once_after_alpaca_completes() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-r1", "1.5").await;

    let tx = world.transfer(STRANGER_KEY, bot(), U256::from(E18)).await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_state(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;

    let requests = world.redeem_requests_for(id.as_str());
    assert_eq!(requests.len(), 1, "one redeem request at Alpaca");
    assert_eq!(requests[0].qty, "1");
    assert_eq!(
        requests[0].wallet_address.to_lowercase(),
        common::stack::AP_WALLET.to_lowercase()
    );
    assert_eq!(
        burns_for(&world, &id).await,
        vec![(U256::from(1), U256::from(E18))]
    );
    assert_eq!(world.total_supply().await, U256::from(E18 / 2));
    assert_eq!(world.balance(world.ap_wallet).await, U256::from(E18 / 2));
    assert_eq!(world.balance(bot()).await, U256::ZERO);
    assert_eq!(world.bot_receipt(1).await, U256::from(E18 / 2));

    issuer.more_passes(5).await;
    assert_eq!(world.redeem_requests_for(id.as_str()).len(), 1);
    assert_eq!(burns_for(&world, &id).await.len(), 1);
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dust_below_nine_decimals_goes_back_in_the_burn() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-dust", "1").await;

    let sent = U256::from(450_574_852_280_275_235u128);
    let tx = world.transfer(STRANGER_KEY, bot(), sent).await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_state(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;

    let requests = world.redeem_requests_for(id.as_str());
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].qty, "0.450574852");
    assert_eq!(
        burns_for(&world, &id).await,
        vec![(U256::from(1), U256::from(450_574_852_000_000_000u128))]
    );
    // The AP keeps 1 - sent, and gets the 280275235 wei of dust back.
    assert_eq!(
        world.balance(world.ap_wallet).await,
        U256::from(E18) - sent + U256::from(280_275_235u64)
    );
    assert_eq!(world.balance(bot()).await, U256::ZERO);
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redemption_spans_two_receipts_largest_first() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-small", "0.5").await;
    world.minted(&issuer.url, "tr-large", "1.5").await;

    let tx = world
        .transfer(STRANGER_KEY, bot(), U256::from(2 * E18))
        .await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_state(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;
    // Receipt 2 (1.5, the largest) first, then receipt 1 (0.5).
    assert_eq!(
        burns_for(&world, &id).await,
        vec![
            (U256::from(2), U256::from(3 * E18 / 2)),
            (U256::from(1), U256::from(E18 / 2))
        ]
    );
    assert_eq!(world.total_supply().await, U256::ZERO);
    assert_eq!(world.bot_receipt(1).await, U256::ZERO);
    assert_eq!(world.bot_receipt(2).await, U256::ZERO);
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_transfers_in_one_transaction_are_two_redemptions() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-two", "3").await;

    // The AP sends twice in one multicall (delegatecall keeps the AP as msg.sender).
    let calls = vec![
        Vault::transferCall {
            to: bot(),
            value: U256::from(E18),
        }
        .abi_encode()
        .into(),
        Vault::transferCall {
            to: bot(),
            value: U256::from(E18 / 4),
        }
        .abi_encode()
        .into(),
    ];
    let vault = Vault::new(world.deployed.vault, world.as_key(STRANGER_KEY));
    let receipt = vault
        .multicall(calls)
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let logs = receipt.inner.logs();
    let first =
        IssuerRequestId::for_redemption(receipt.transaction_hash, logs[0].log_index.unwrap());
    let second =
        IssuerRequestId::for_redemption(receipt.transaction_hash, logs[1].log_index.unwrap());
    assert_ne!(first, second);
    for id in [&first, &second] {
        wait_state(&issuer, id, "burned", |s| {
            matches!(s, RedemptionState::Burned { .. })
        })
        .await;
        assert_eq!(world.redeem_requests_for(id.as_str()).len(), 1);
        assert_eq!(burns_for(&world, id).await.len(), 1);
    }
    assert_eq!(
        world.total_supply().await,
        U256::from(3 * E18 - E18 - E18 / 4)
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transfers_made_while_down_are_found_on_start() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-down", "2").await;
    issuer.stop().await;

    let tx = world.transfer(STRANGER_KEY, bot(), U256::from(E18)).await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    let issuer = Issuer::start(&world, Policy::default()).await;
    wait_state(&issuer, &id, "burned", |s| {
        matches!(s, RedemptionState::Burned { .. })
    })
    .await;
    assert_eq!(world.redeem_requests_for(id.as_str()).len(), 1);
    assert_eq!(world.total_supply().await, U256::from(E18));
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_journal_is_flagged_then_returned_once() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-rej", "1").await;
    world
        .sim
        .patch_faults(&FaultsPatch {
            redeem_outcome: Some(RedeemOutcome::Rejected),
            ..FaultsPatch::default()
        })
        .unwrap();

    let tx = world
        .transfer(STRANGER_KEY, bot(), U256::from(E18 / 2))
        .await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_state(&issuer, &id, "flagged", |s| {
        matches!(s, RedemptionState::Flagged { .. })
    })
    .await;
    assert_eq!(
        world.balance(bot()).await,
        U256::from(E18 / 2),
        "tokens wait in the bot wallet"
    );
    assert!(burns_for(&world, &id).await.is_empty());

    // The operator returns them (twice, to prove it is exactly-once).
    for _ in 0..2 {
        let answer = reqwest::Client::new()
            .post(format!("{}/operator/redemptions/{}/return", issuer.url, id))
            .header("X-OPERATOR-KEY", issuer::cli::LOCAL_OPERATOR_KEY)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success() || answer.status() == 409,
            "{}",
            answer.status()
        );
    }
    wait_state(&issuer, &id, "returned", |s| {
        matches!(s, RedemptionState::Returned { .. })
    })
    .await;
    issuer.more_passes(5).await;
    assert_eq!(world.balance(world.ap_wallet).await, U256::from(E18));
    assert_eq!(world.balance(bot()).await, U256::ZERO);
    assert_eq!(
        world.total_supply().await,
        U256::from(E18),
        "nothing burned"
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_sender_is_flagged_not_redeemed_and_can_be_returned() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-unknown", "1").await;
    let outsider = issuer::chain::EthersSigner::from_private_key(OUTSIDER_KEY)
        .unwrap()
        .address();
    world
        .transfer(STRANGER_KEY, outsider, U256::from(E18 / 4))
        .await;

    let tx = world
        .transfer(OUTSIDER_KEY, bot(), U256::from(E18 / 4))
        .await;
    let id = IssuerRequestId::for_redemption(tx, 0);
    wait_state(&issuer, &id, "flagged as unknown sender", |s| {
        matches!(
            s,
            RedemptionState::Flagged {
                anomaly: reconciler::Anomaly::UnknownSender,
                ..
            }
        )
    })
    .await;
    assert!(
        world.redeem_requests_for(id.as_str()).is_empty(),
        "Alpaca is never asked for an unknown sender"
    );

    // A return on something not flagged is refused; the flagged one is accepted.
    let refused = reqwest::Client::new()
        .post(format!(
            "{}/operator/redemptions/red-nope-0/return",
            issuer.url
        ))
        .header("X-OPERATOR-KEY", issuer::cli::LOCAL_OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let accepted = reqwest::Client::new()
        .post(format!("{}/operator/redemptions/{}/return", issuer.url, id))
        .header("X-OPERATOR-KEY", issuer::cli::LOCAL_OPERATOR_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    wait_state(&issuer, &id, "returned", |s| {
        matches!(s, RedemptionState::Returned { .. })
    })
    .await;
    assert_eq!(world.balance(outsider).await, U256::from(E18 / 4));
    assert_eq!(world.balance(bot()).await, U256::ZERO);
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redemption_ids_use_the_log_place_within_its_own_transaction() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    world.minted(&issuer.url, "tr-same-block", "2").await;

    // Two transfers from two transactions in one block: the second's log is the block's second
    // log but the first of its own transaction, and its id says 0.
    let rpc = |method: &'static str, params: serde_json::Value| {
        let url = world.rpc();
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    rpc("evm_setAutomine", serde_json::json!([false])).await;
    let vault = Vault::new(world.deployed.vault, world.as_key(STRANGER_KEY));
    let first = vault
        .transfer(bot(), U256::from(E18 / 2))
        .send()
        .await
        .unwrap();
    let second = vault
        .transfer(bot(), U256::from(E18 / 4))
        .send()
        .await
        .unwrap();
    rpc("anvil_mine", serde_json::json!(["0x1"])).await;
    rpc("evm_setAutomine", serde_json::json!([true])).await;
    let first = first.get_receipt().await.unwrap();
    let second = second.get_receipt().await.unwrap();
    assert_eq!(first.block_number, second.block_number, "same block");
    assert_eq!(
        second.inner.logs()[0].log_index,
        Some(1),
        "block-wide it is the second log"
    );

    for (receipt, qty) in [(&first, "0.5"), (&second, "0.25")] {
        let id = IssuerRequestId::for_redemption(receipt.transaction_hash, 0);
        wait_state(&issuer, &id, "burned", |s| {
            matches!(s, RedemptionState::Burned { .. })
        })
        .await;
        let requests = world.redeem_requests_for(id.as_str());
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].qty, qty);
    }
    assert_eq!(
        world.total_supply().await,
        U256::from(2 * E18 - E18 / 2 - E18 / 4)
    );
    issuer.stop().await;
}

/// A redemption's id rests on its transfer's place among its own transaction's logs. Read for
/// many transfers at once (each block once), the places are those of the transactions' own
/// receipts: a block holding the bot's mint (a deposit's logs first), the AP's multicall of three
/// transfers and a plain transfer, then a block with one more transfer.
#[tokio::test(flavor = "multi_thread")]
async fn each_transfers_place_in_its_transaction_is_read_once_per_block_as_its_receipt_says() {
    use alloy::providers::Provider as _;
    let world = World::start(None).await;
    let bot_key = common::bot();
    let as_bot = world.as_key(common::BOT_KEY);
    let as_ap = world.as_key(STRANGER_KEY);
    let info = reconciler::meta::encode(&reconciler::meta::ReceiptInfo {
        tokenization_request_id: "places".into(),
        issuer_request_id: "mint-places".into(),
        underlying: "AAPL".into(),
        quantity: "10".into(),
        timestamp: 1_700_000_000,
        notes: String::new(),
    });
    let mint = |assets: u128| {
        alloy::rpc::types::TransactionRequest::default()
            .to(world.deployed.vault)
            .input(
                issuer::chain::mint_calldata(
                    bot(),
                    &[(world.ap_wallet, U256::from(assets), info.clone())],
                )
                .into(),
            )
    };
    let transfer = |value: u128| -> alloy::primitives::Bytes {
        Vault::transferCall {
            to: bot(),
            value: U256::from(value),
        }
        .abi_encode()
        .into()
    };
    let to_vault = |input: alloy::primitives::Bytes| {
        alloy::rpc::types::TransactionRequest::default()
            .to(world.deployed.vault)
            .input(input.into())
    };
    as_bot
        .send_transaction(mint(10 * E18))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();

    let _: serde_json::Value = as_bot
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();
    let sent = vec![
        as_bot.send_transaction(mint(E18)).await.unwrap(),
        as_ap
            .send_transaction(to_vault(
                Vault::multicallCall {
                    data: vec![transfer(E18), transfer(E18 / 2), transfer(E18 / 4)],
                }
                .abi_encode()
                .into(),
            ))
            .await
            .unwrap(),
        as_ap
            .send_transaction(to_vault(transfer(E18 / 8)))
            .await
            .unwrap(),
    ];
    let _: serde_json::Value = as_bot.raw_request("evm_mine".into(), ()).await.unwrap();
    let _: serde_json::Value = as_bot
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .unwrap();
    let mut receipts = Vec::new();
    for pending in sent {
        receipts.push(pending.get_receipt().await.unwrap());
    }
    receipts.push(
        as_ap
            .send_transaction(to_vault(transfer(E18 / 16)))
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap(),
    );
    assert!(receipts
        .iter()
        .all(alloy::rpc::types::TransactionReceipt::status));
    assert_eq!(
        receipts[0].block_number, receipts[2].block_number,
        "the mint, the multicall and the transfer share a block"
    );

    // The oracle: each inbound transfer's position among its own receipt's logs.
    let mut expected = Vec::new();
    for receipt in &receipts {
        for (position, log) in receipt.inner.logs().iter().enumerate() {
            let Ok(event) = log.log_decode::<Vault::Transfer>() else {
                continue;
            };
            let event = event.inner.data;
            if event.to == bot() && event.from == world.ap_wallet {
                expected.push((receipt.transaction_hash, position as u64, event.value));
            }
        }
    }
    assert_eq!(expected.len(), 5);

    let chain = Chain::connect(&world.rpc(), bot_key).await.unwrap();
    let head = chain.head().await.unwrap();
    let found = chain
        .scan_transfers_to_bot(world.deployed.vault, world.deployed.deploy_block, head)
        .await
        .unwrap();
    let mut found: Vec<_> = found
        .iter()
        .map(|t| (t.tx_hash, t.index_in_tx, t.value))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    let mut places: Vec<u64> = found.iter().map(|(_, i, _)| *i).collect();
    places.sort_unstable();
    assert_eq!(
        places,
        vec![0, 0, 0, 1, 2],
        "the multicall's three transfers are its logs 0, 1 and 2; each other transfer its 0"
    );
}
