//! The mint path under chain faults: a reorg that removes a mined deposit is detected (block hash
//! mismatch), the range is observed again and the mint lands exactly once; a transaction the node
//! dropped is replaced at the same nonce with a higher fee, and only one of the two is ever mined.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::U256;
use common::capped_node::CappedNode;
use common::stack::{eventually, Issuer, World};
use issuer::store::Store;
use reconciler::{IssuerRequestId, Policy};
use serde_json::{json, Value};
use std::time::Duration;

async fn anvil_rpc(world: &World, method: &str, params: Value) -> Value {
    let answer: Value = reqwest::Client::new()
        .post(world.rpc())
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("error").is_none(), "{method}: {answer}");
    answer["result"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reorged_out_mint_is_minted_again_exactly_once() {
    let world = World::start(None).await;
    // Three confirmations, so the deposit is seen but not yet acted on when the reorg comes.
    let issuer = Issuer::start(
        &world,
        Policy {
            confirmations_min: 3,
            ..Policy::default()
        },
    )
    .await;
    let snapshot = anvil_rpc(&world, "evm_snapshot", json!([])).await;

    let reply = world.mint(&issuer.url, "tr-reorg", "2").await;
    let irid = reply["issuer_request_id"].as_str().unwrap().to_owned();
    let id = IssuerRequestId::parse(&irid).unwrap();
    eventually(
        Duration::from_secs(20),
        "the deposit is observed",
        || async {
            issuer
                .store
                .deposits()
                .unwrap()
                .iter()
                .any(|d| d.issuer_request_id == id)
        },
    )
    .await;
    assert_eq!(
        world.sim.mint_callback_count("tr-reorg"),
        0,
        "not acted on before 3 confirmations"
    );

    // The block with the deposit disappears; a longer chain without it takes its place.
    assert_eq!(
        anvil_rpc(&world, "evm_revert", json!([snapshot])).await,
        json!(true)
    );
    anvil_rpc(&world, "anvil_mine", json!(["0x5"])).await;
    assert_eq!(
        world.deposits_for(&irid).await,
        0,
        "the reorg removed the deposit"
    );
    // Keep blocks coming so the re-sent transaction gathers confirmations.
    anvil_rpc(&world, "evm_setIntervalMining", json!([1])).await;

    eventually(
        Duration::from_secs(40),
        "minted again and called back",
        || async { world.sim.mint_callback_count("tr-reorg") >= 1 },
    )
    .await;
    issuer.more_passes(5).await;
    assert_eq!(
        world.deposits_for(&irid).await,
        1,
        "exactly one deposit on the surviving chain"
    );
    assert_eq!(world.sim.mint_callback_count("tr-reorg"), 1);
    assert_eq!(
        world.balance(world.ap_wallet).await,
        U256::from(2_000_000_000_000_000_000u128)
    );
    issuer.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_transaction_is_replaced_at_the_same_nonce() {
    let world = World::start(None).await;
    anvil_rpc(&world, "evm_setAutomine", json!([false])).await;
    let policy = Policy {
        rebroadcast_after_blocks: 1_000,
        replace_after_blocks: 2,
        ..Policy::default()
    };
    let issuer = Issuer::start(&world, policy).await;

    let reply = world.mint(&issuer.url, "tr-stuck", "1").await;
    let irid = reply["issuer_request_id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(20),
        "the mint transaction is stored",
        || async { !issuer.store.unsettled_txs(&anvil()).unwrap().is_empty() },
    )
    .await;
    let first = issuer.store.unsettled_txs(&anvil()).unwrap().remove(0);
    // The node forgets it; empty blocks go by.
    anvil_rpc(
        &world,
        "anvil_dropTransaction",
        json!([format!("{:#x}", first.variants[0].hash)]),
    )
    .await;
    anvil_rpc(&world, "evm_setIntervalMining", json!([1])).await;

    eventually(
        Duration::from_secs(40),
        "replaced, mined and called back",
        || async { world.sim.mint_callback_count("tr-stuck") >= 1 },
    )
    .await;
    let record = issuer.store.tx(&anvil(), first.nonce).unwrap().unwrap();
    assert!(
        record.variants.len() >= 2,
        "a replacement was signed: {:?}",
        record.variants.len()
    );
    assert!(record.variants[1].max_fee_per_gas > record.variants[0].max_fee_per_gas);
    assert_eq!(record.input, first.input, "same calldata");
    eventually(Duration::from_secs(20), "the nonce is settled", || async {
        issuer
            .store
            .tx(&anvil(), first.nonce)
            .unwrap()
            .unwrap()
            .settled
            .is_some()
    })
    .await;
    let settled = issuer
        .store
        .tx(&anvil(), first.nonce)
        .unwrap()
        .unwrap()
        .settled
        .unwrap();
    assert!(settled.success);
    assert!(settled.hash.is_some());
    assert_ne!(
        settled.hash,
        Some(record.variants[0].hash),
        "the dropped variant was never mined"
    );
    issuer.more_passes(5).await;
    assert_eq!(world.deposits_for(&irid).await, 1);
    assert_eq!(world.sim.mint_callback_count("tr-stuck"), 1);
    issuer.stop().await;
}

/// A block with room for a smaller transaction of ours but not for the one before it. anvil
/// skips a transaction whose gas limit does not fit the room left, then refuses a later, smaller
/// one of the same sender as "nonce too high" and drops it from its pool: every mint in it, and
/// every nonce after it, waited for a re-send and a block more (2,000-mint bench runs took six
/// or seven blocks instead of five, about one run in five). Nothing of ours may be lost there:
/// when the room comes, the next block holds every mint.
#[tokio::test(flavor = "multi_thread")]
async fn a_smaller_transaction_behind_one_a_block_had_no_room_for_is_not_lost() {
    let world = World::start(None).await;
    // A second whitelisted wallet: its mint cannot reuse the first wallet's batch estimate, so
    // it goes out last, in a transaction of its own with a smaller limit of its own.
    let other = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
    {
        let store = issuer::store::RedbStore::open(&world.db_path).unwrap();
        assert!(store
            .add_wallet(&world.client_id, other.parse().unwrap())
            .unwrap());
        store.close();
    }
    // A pass batches its mints in issuer_request_id order: the other wallet's id sorts last.
    let irid = |trid: &str| {
        IssuerRequestId::for_mint(&reconciler::TokenizationRequestId::parse(trid).unwrap())
    };
    let trids: Vec<String> = (0..8).map(|n| format!("tr-room-{n}")).collect();
    let last_of_first = trids.iter().map(|t| irid(t)).max().unwrap();
    let other_trid = (0..1_000)
        .map(|n| format!("tr-room-other-{n}"))
        .find(|t| irid(t) > last_of_first)
        .unwrap();
    let mut mints: Vec<(&str, &str)> = trids
        .iter()
        .map(|t| (t.as_str(), common::stack::AP_WALLET))
        .collect();
    mints.push((&other_trid, other));
    world.confirm_before_any_pass(&mints).await;

    anvil_rpc(&world, "evm_setAutomine", json!([false])).await;
    let issuer = Issuer::start(
        &world,
        Policy {
            mints_per_tx_max: 4,
            ..Policy::default()
        },
    )
    .await;
    // The pass stores its transactions in one commit before it broadcasts any: wait for the
    // node to hold all three, not for the store, or a block could come before the last arrives.
    eventually(
        Duration::from_secs(20),
        "the first pass sent every mint to the node",
        || async {
            issuer.store.unsettled_txs(&anvil()).unwrap().len() == 3
                && anvil_rpc(&world, "txpool_status", json!([])).await["pending"] == "0x3"
        },
    )
    .await;
    let mut txs = issuer.store.unsettled_txs(&anvil()).unwrap();
    txs.sort_by_key(|tx| tx.nonce);
    let covers = |tx: &issuer::store::TxRecord| match &tx.purpose {
        reconciler::TxPurpose::Mint {
            issuer_request_ids, ..
        } => issuer_request_ids.len(),
        _ => 0,
    };
    assert_eq!(
        txs.iter().map(covers).collect::<Vec<_>>(),
        [4, 4, 1],
        "two batches of four, then the other wallet's mint"
    );
    assert!(
        matches!(&txs[2].purpose, reconciler::TxPurpose::Mint { issuer_request_ids, .. }
            if issuer_request_ids == &[irid(&other_trid)]),
        "the last transaction is the other wallet's mint alone"
    );
    let biggest = txs.iter().map(|tx| tx.gas_limit).max().unwrap();

    // The next block has room for less than our first transaction takes.
    anvil_rpc(
        &world,
        "evm_setBlockGasLimit",
        json!([format!("{:#x}", biggest - 1)]),
    )
    .await;
    anvil_rpc(&world, "evm_mine", json!([])).await;
    let other_address: alloy::primitives::Address = other.parse().unwrap();
    let ap: alloy::primitives::Address = common::stack::AP_WALLET.parse().unwrap();
    assert_eq!(world.balance(ap).await, U256::ZERO, "nothing fitted");
    // Then a block with room for all of it.
    anvil_rpc(
        &world,
        "evm_setBlockGasLimit",
        json!([format!("{:#x}", 30_000_000u64)]),
    )
    .await;
    anvil_rpc(&world, "evm_mine", json!([])).await;
    let one = world.balance(ap).await / U256::from(8);
    assert!(one > U256::ZERO, "the batches of four were mined");
    assert_eq!(
        world.balance(other_address).await,
        one,
        "the other wallet's mint was mined in the same block, not dropped by the node"
    );
    issuer.stop().await;
}

fn anvil() -> reconciler::Network {
    reconciler::Network::parse("anvil").unwrap()
}

/// A lost cache rebuilt through a hosted provider that refuses every fourth call for its rate
/// (HTTP 429 and -32005 by turns) and every log answer over 2 logs: the four deposits, one per
/// block, are each found (refused ranges asked in halves, refusals for rate waited out), and
/// nothing is minted or called back twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_rebuilt_behind_a_rate_limiting_log_capping_node_mints_nothing_twice() {
    let world = World::start(None).await;
    let issuer = Issuer::start(&world, Policy::default()).await;
    let mut minted = Vec::new();
    for n in 0..4 {
        let trid = format!("tr-hosted-{n}");
        let reply = world.mint(&issuer.url, &trid, "1").await;
        minted.push((
            trid.clone(),
            reply["issuer_request_id"].as_str().unwrap().to_owned(),
        ));
        // One at a time: each deposit in a block of its own, under the node's cap.
        eventually(Duration::from_secs(30), "called back", || async {
            world.sim.mint_callback_count(&trid) >= 1
        })
        .await;
    }
    issuer.stop().await;

    world.lose_cache();
    let node = CappedNode::rate_limited(&world.rpc(), 2, 4);
    let issuer = Issuer::start_through(&world, &node.url, Policy::default()).await;
    eventually(
        Duration::from_secs(60),
        "every deposit recovered from the chain and Alpaca",
        || async {
            minted.iter().all(|(_, irid)| {
                issuer
                    .store
                    .mint(&IssuerRequestId::parse(irid).unwrap())
                    .unwrap()
                    .is_some_and(|m| {
                        matches!(m.intent.callback, reconciler::Callback::Acked { .. })
                    })
            })
        },
    )
    .await;
    issuer.more_passes(5).await;
    for (trid, irid) in &minted {
        assert_eq!(world.deposits_for(irid).await, 1, "{trid}: one deposit");
        assert_eq!(
            world.sim.mint_callback_count(trid),
            1,
            "{trid}: one callback"
        );
    }
    assert!(
        node.refused() >= 1 && node.rate_limited_calls() >= 1,
        "{} log answers refused as too large, {} calls for rate",
        node.refused(),
        node.rate_limited_calls()
    );
    issuer.stop().await;
}
