//! The pass test tier: whole reconcile passes against an in-memory node ([`MemNode`]) and the
//! Alpaca simulator in the same process ([`SimTransport`] behind the real `BrokerClient`), over a
//! real redb file, under tokio's paused clock. Blocks are mined when a test says so, so "nothing
//! more happened" is proven by running more passes and blocks, never by sleeping.
//!
//! Crash points panic here instead of aborting (the pass or job they hit dies as a killed
//! process would), and a "restart" is a new loop over the same store file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{Address, U256};
use issuer::alpaca::{BrokerClient, RetryPolicy};
use issuer::chain::mem::MemNode;
use issuer::chain::{BotSigner, Chain, EthersSigner, VaultEvent};
use issuer::pass::{AlpacaWork, CrashPoint, PassConfig, PollSchedule, ReconcileLoop, StopFlag};
use issuer::sim::{
    Faults, NewMint, RedeemOutcome, Refusal, Sim, SimClient, SimConfig, SimTransport,
};
use issuer::store::{Asset, IssuanceOutcome, MintRecord, RedbStore, Store};
use reconciler::{
    Callback, ClientRef, IssuerRequestId, Journal, MintIntent, Network, Policy, Qty,
    RedemptionState, Symbol, TokenizationRequestId,
};
use std::sync::Arc;
use std::time::Duration;

const E18: u128 = 1_000_000_000_000_000_000;
const BOT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const CHAIN_ID: u64 = 31_337;

/// One issuer over an in-memory chain and an in-process Alpaca.
struct Rig {
    node: Arc<MemNode>,
    sim: Sim,
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    chain: Chain,
    vault: Address,
    ap_wallet: Address,
    client: ClientRef,
    policy: Policy,
    looping: ReconcileLoop<BrokerClient>,
}

fn signer() -> BotSigner {
    EthersSigner::from_private_key(BOT_KEY).unwrap().into()
}

fn broker(sim: &Sim) -> BrokerClient {
    let mut retry = RetryPolicy::for_reconciler();
    retry.attempt_timeout = Duration::from_secs(5);
    BrokerClient::with_transport(Arc::new(SimTransport { sim: sim.clone() }), retry)
}

fn new_loop(
    rig_store: &Arc<dyn Store>,
    chain: &Chain,
    sim: &Sim,
    policy: &Policy,
    crash_at: Option<CrashPoint>,
) -> ReconcileLoop<BrokerClient> {
    ReconcileLoop {
        store: rig_store.clone(),
        network: Network::parse("base").unwrap(),
        chain: chain.clone(),
        broker: broker(sim),
        config: PassConfig {
            interval: Duration::from_millis(500),
            head_poll: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            policy: *policy,
            crash_at,
            max_fee_per_gas_wei: 500_000_000_000,
        },
        polls: PollSchedule::default(),
        alpaca: AlpacaWork::default(),
        stop: StopFlag::default(),
        clock: Arc::new(issuer::clock::TokioClock::starting_at(1_800_000_000_000)),
        passes: issuer::pass::PassCount::default(),
        fence: issuer::ha::Fence::single(),
        gas_shapes: issuer::pass::GasShapes::default(),
        resent: issuer::pass::Resent::default(),
    }
}

impl Rig {
    fn new() -> Rig {
        Self::with_policy(Policy::default())
    }

    fn with_policy(policy: Policy) -> Rig {
        issuer::pass::panic_at_crash_points();
        let node = Arc::new(MemNode::new(CHAIN_ID));
        let (vault, receipt, authorizer, deploy_block) = node.deploy_vault();
        let sim = Sim::new(SimConfig {
            account_id: "acct".into(),
            api_key: "key".into(),
            api_secret: "secret".into(),
            seed: Some(7),
        });
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join("issuer.redb")).unwrap());
        store
            .put_asset(&Asset {
                underlying: Symbol::parse("AAPL").unwrap(),
                token: Symbol::parse("tAAPL").unwrap(),
                network: Network::parse("base").unwrap(),
                vault,
                receipt,
                authorizer,
                deploy_block,
                frozen: false,
                mint_qty_max: None,
            })
            .unwrap();
        let account = store.register_account("ap@example.com").unwrap();
        store.link_account("ap@example.com", "ACC-1").unwrap();
        let ap_wallet = Address::repeat_byte(0xa1);
        assert!(store.add_wallet(&account.client_id, ap_wallet).unwrap());
        let chain = Chain::new(node.clone(), signer());
        let looping = new_loop(&store, &chain, &sim, &policy, None);
        Rig {
            node,
            sim,
            dir,
            store,
            chain,
            vault,
            ap_wallet,
            client: ClientRef::ClientExternalAccountId(account.client_id),
            policy,
            looping,
        }
    }

    fn bot(&self) -> Address {
        self.chain.bot()
    }

    /// A new loop over the store file reopened, as after a restart: nothing in memory survives.
    async fn restart(&mut self, crash_at: Option<CrashPoint>) {
        settle().await;
        // Every handle on the old store goes first (redb opens a file once per process).
        let scratch: Arc<dyn Store> = Arc::new(
            RedbStore::open(
                &self
                    .dir
                    .path()
                    .join(format!("scratch-{}.redb", rand_suffix())),
            )
            .unwrap(),
        );
        self.looping = new_loop(&scratch, &self.chain, &self.sim, &self.policy, None);
        self.store = scratch;
        self.store = Arc::new(RedbStore::open(&self.dir.path().join("issuer.redb")).unwrap());
        self.looping = new_loop(&self.store, &self.chain, &self.sim, &self.policy, crash_at);
    }

    /// Alpaca records a mint request and the issuer accepts it (the store write intake makes).
    fn issue(&self, trid: &str, qty: &str) -> IssuerRequestId {
        let trid = TokenizationRequestId::parse(trid).unwrap();
        let irid = IssuerRequestId::for_mint(&trid);
        self.sim
            .add_mint_request(NewMint {
                tokenization_request_id: Some(trid.to_string()),
                issuer_request_id: Some(irid.to_string()),
                qty: qty.into(),
                underlying_symbol: "AAPL".into(),
                token_symbol: "tAAPL".into(),
                network: "base".into(),
                client: match &self.client {
                    ClientRef::ClientExternalAccountId(id) => {
                        SimClient::ClientExternalAccountId(id.to_string())
                    }
                    ClientRef::ClientAccountId(id) => SimClient::ClientAccountId(id.to_string()),
                },
                wallet_address: format!("{:#x}", self.ap_wallet),
            })
            .unwrap();
        let intent = MintIntent {
            issuer_request_id: irid.clone(),
            tokenization_request_id: trid,
            client: self.client.clone(),
            wallet: self.ap_wallet,
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: Network::parse("base").unwrap(),
            qty: Qty::parse_positive(qty).unwrap(),
            vault: self.vault,
            journal: Journal::Pending,
            callback: Callback::NotSent,
            failed_attempts: 0,
            accepted_at: 1_800_000_000,
        };
        let record = MintRecord {
            fingerprint: intent.fingerprint(),
            intent,
            reject_reason: None,
            problem: None,
            confirmed_at_ms: None,
        };
        let outcome = self.store.submit_issuance(record).unwrap();
        assert!(
            matches!(outcome, IssuanceOutcome::Created(_)),
            "{outcome:?}"
        );
        irid
    }

    /// Alpaca confirms the journal completed.
    fn confirm(&self, irid: &IssuerRequestId) {
        let mint = self.store.mint(irid).unwrap().unwrap();
        self.store
            .confirm_issuance(
                &mint.intent.tokenization_request_id,
                irid,
                Journal::Completed,
                None,
                self.looping.clock.unix_ms(),
            )
            .unwrap();
    }

    /// `count` mints of 1 share, `tr-0` to `tr-{count - 1}`, each issued and confirmed.
    fn issue_confirmed_each(&self, count: usize) -> Vec<IssuerRequestId> {
        (0..count)
            .map(|i| self.issue_confirmed(&format!("tr-{i}"), "1"))
            .collect()
    }

    fn issue_confirmed(&self, trid: &str, qty: &str) -> IssuerRequestId {
        let irid = self.issue(trid, qty);
        self.confirm(&irid);
        irid
    }

    /// One pass, then the Alpaca jobs it started run to their end (on the paused clock).
    async fn pass(&self) {
        let _ = self.looping.pass().await;
        settle().await;
    }

    /// One pass, and how much the node's `counter` grew during it.
    async fn pass_counting(&self, counter: fn(&MemNode) -> u64) -> u64 {
        let before = counter(&self.node);
        self.pass().await;
        counter(&self.node) - before
    }

    /// A pass that is expected to die at its crash point.
    async fn pass_crashing(&self) {
        let looping = &self.looping;
        let died =
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(looping.pass())).await;
        assert!(died.is_err(), "the pass should have crashed");
    }

    /// Passes and blocks, alternating, `n` times, a second of (paused) time apart.
    async fn run(&self, n: usize) {
        for _ in 0..n {
            self.pass().await;
            self.node.mine();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.pass().await;
    }

    fn deposits_for(&self, irid: &IssuerRequestId) -> usize {
        self.node
            .logs(self.vault)
            .iter()
            .filter(|l| match &l.event {
                VaultEvent::Deposit(d) => reconciler::meta::decode(&d.receiptInformation)
                    .is_ok_and(|info| info.issuer_request_id == irid.as_str()),
                _ => false,
            })
            .count()
    }

    fn withdrawals(&self) -> usize {
        self.node
            .logs(self.vault)
            .iter()
            .filter(|l| matches!(l.event, VaultEvent::Withdraw(_)))
            .count()
    }

    fn callbacks(&self, trid: &str) -> u64 {
        self.sim.mint_callback_count(trid)
    }

    fn acked(&self, irid: &IssuerRequestId) -> bool {
        matches!(
            self.store.mint(irid).unwrap().unwrap().intent.callback,
            Callback::Acked { .. }
        )
    }

    fn balance(&self, owner: Address) -> U256 {
        self.node.balance(self.vault, owner)
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Lets spawned Alpaca jobs run to their end: the paused clock jumps over their waits.
async fn settle() {
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn shares(whole: u128) -> U256 {
    U256::from(whole * E18)
}

/// Mints `qty` to the AP and sends `back` of it to the bot: the redemption's id.
async fn minted_then_sent_back(rig: &Rig, trid: &str, qty: u128, back: u128) -> IssuerRequestId {
    let irid = rig.issue_confirmed(trid, &qty.to_string());
    rig.run(3).await;
    assert!(rig.acked(&irid), "the mint finished first");
    let hash = rig
        .node
        .transfer(rig.vault, rig.ap_wallet, rig.bot(), shares(back));
    rig.node.mine();
    IssuerRequestId::for_redemption(hash, 0)
}

#[tokio::test(start_paused = true)]
async fn a_confirmed_mint_is_deposited_once_and_called_back_once() {
    let rig = Rig::new();
    let irid = rig.issue("tr-1", "2.5");
    rig.run(3).await;
    assert_eq!(
        rig.deposits_for(&irid),
        0,
        "nothing is minted before the journal completes"
    );

    rig.confirm(&irid);
    rig.run(3).await;
    assert_eq!(rig.balance(rig.ap_wallet), U256::from(5 * E18 / 2));
    assert_eq!(rig.deposits_for(&irid), 1);
    assert_eq!(rig.callbacks("tr-1"), 1);
    assert!(rig.acked(&irid));

    rig.run(10).await;
    assert_eq!(
        rig.deposits_for(&irid),
        1,
        "nothing more after ten passes and blocks"
    );
    assert_eq!(rig.callbacks("tr-1"), 1);
}

#[tokio::test(start_paused = true)]
async fn fifty_mints_confirmed_together_go_out_in_two_transactions() {
    let rig = Rig::new();
    let ids: Vec<_> = rig.issue_confirmed_each(50);
    let before = rig.node.broadcasts();
    rig.run(4).await;
    assert_eq!(rig.balance(rig.ap_wallet), shares(50));
    assert_eq!(
        rig.node.broadcasts() - before,
        2,
        "40 per transaction, the policy's batch"
    );
    for (i, irid) in ids.iter().enumerate() {
        assert_eq!(rig.deposits_for(irid), 1);
        assert_eq!(rig.callbacks(&format!("tr-{i}")), 1);
    }
}

/// Every crash point of the mint path: the pass (or job) dies there, a new loop over the same
/// store finishes the mint, and it is deposited once and called back once.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_point_of_a_mint_neither_loses_nor_repeats_it() {
    for point in [
        CrashPoint::AfterSign,
        CrashPoint::AfterBroadcast,
        CrashPoint::AfterDepositSeen,
        CrashPoint::AfterCallbacksMarked,
        CrashPoint::AfterCallback,
    ] {
        let mut rig = Rig::new();
        rig.restart(Some(point)).await;
        let irid = rig.issue_confirmed("tr-crash", "1");
        match point {
            CrashPoint::AfterSign | CrashPoint::AfterBroadcast => rig.pass_crashing().await,
            CrashPoint::AfterDepositSeen | CrashPoint::AfterCallbacksMarked => {
                rig.pass().await;
                rig.node.mine();
                rig.pass_crashing().await;
            }
            _ => {
                // The callback runs as a job: it dies there, the pass around it does not.
                rig.run(3).await;
                assert_eq!(
                    rig.callbacks("tr-crash"),
                    1,
                    "{point:?}: the callback reached Alpaca"
                );
                assert!(!rig.acked(&irid), "{point:?}: its answer was not recorded");
            }
        }
        rig.restart(None).await;
        rig.looping_rebroadcast().await;
        rig.run(6).await;
        assert_eq!(rig.deposits_for(&irid), 1, "{point:?}: deposited once");
        assert_eq!(rig.balance(rig.ap_wallet), shares(1), "{point:?}");
        assert!(rig.acked(&irid), "{point:?}: called back");
        let served = rig
            .sim
            .snapshot()
            .mint_callbacks
            .iter()
            .filter(|c| c.tokenization_request_id == "tr-crash" && c.status == 200)
            .count();
        assert_eq!(
            served, 1,
            "{point:?}: one callback completed the request at Alpaca"
        );
    }
}

impl Rig {
    /// Rounds of `(idle blocks mined first, mints issued and confirmed)`: how many estimates
    /// each round's first pass made (each round then runs two blocks), and the mints' ids.
    async fn estimates_per_round(
        &self,
        rounds: &[(usize, usize)],
    ) -> (Vec<u64>, Vec<IssuerRequestId>) {
        let (mut estimates, mut ids) = (Vec::new(), Vec::new());
        for (round, &(idle, count)) in rounds.iter().enumerate() {
            for _ in 0..idle {
                self.node.mine();
            }
            ids.extend((0..count).map(|i| self.issue_confirmed(&format!("tr-{round}-{i}"), "1")));
            let before = self.node.estimates();
            self.pass().await;
            estimates.push(self.node.estimates() - before);
            self.run(2).await;
        }
        (estimates, ids)
    }

    /// After three more blocks: each of `ids` deposited once and called back, and the AP holds
    /// one share for each.
    async fn assert_each_minted_once(&self, ids: &[IssuerRequestId]) {
        self.run(3).await;
        assert_eq!(self.balance(self.ap_wallet), shares(ids.len() as u128));
        for irid in ids {
            assert_eq!(self.deposits_for(irid), 1);
            assert!(self.acked(irid));
        }
    }

    /// 80 confirmed mints sent in two transactions, the first of which the node loses (so the
    /// second waits behind it), and a block mined without either.
    async fn two_batches_the_node_lost_the_first_of(&self) -> Vec<IssuerRequestId> {
        let ids: Vec<_> = self.issue_confirmed_each(80);
        self.node.faults(|f| f.lose_broadcasts = 1);
        self.pass().await;
        assert_eq!(
            self.node.pooled(),
            1,
            "nonce 0 lost, nonce 1 waits behind it"
        );
        self.node.mine();
        ids
    }

    /// What the loop does at start: re-sends every stored unsettled transaction.
    async fn looping_rebroadcast(&self) {
        issuer::pass::rebroadcast_all(
            self.store.as_ref(),
            &Network::parse("base").unwrap(),
            &self.chain,
            &issuer::ha::Fence::single(),
        )
        .await
        .unwrap();
    }
}

/// A burn signed while a batch of mints waits unmined at the node carries a gas limit no lower
/// than the batch's. A node that skips the batch for want of room must not find the smaller burn
/// behind it fitting: anvil drops such a one as "nonce too high", and every nonce after it waits
/// for a re-send (`tests/chain_faults.rs` shows it with mints on a real anvil).
#[tokio::test(start_paused = true)]
async fn a_burn_signed_behind_a_waiting_mint_batch_never_carries_a_smaller_gas_limit() {
    let rig = Rig::new();
    let id = minted_then_sent_back(&rig, "tr-r", 3, 2).await;
    let network = Network::parse("base").unwrap();
    rig.issue_confirmed_each(10);
    let mut burn = None;
    for _ in 0..10 {
        rig.pass().await;
        burn = rig
            .store
            .unsettled_txs(&network)
            .unwrap()
            .into_iter()
            .find(|tx| matches!(tx.purpose, reconciler::TxPurpose::Burn { .. }));
        if burn.is_some() {
            break;
        }
    }
    let burn = burn.expect("the burn was signed while no block came");
    let batch = rig
        .store
        .unsettled_txs(&network)
        .unwrap()
        .into_iter()
        .find(|tx| matches!(tx.purpose, reconciler::TxPurpose::Mint { .. }))
        .expect("the mint batch waits at the node");
    assert!(
        batch.nonce < burn.nonce,
        "the batch went out first: {} then {}",
        batch.nonce,
        burn.nonce
    );
    assert!(
        burn.gas_limit >= batch.gas_limit,
        "the burn's limit {} is below the batch's {} queued before it",
        burn.gas_limit,
        batch.gas_limit
    );
    rig.run(4).await;
    assert_eq!(rig.withdrawals(), 1, "burned once");
    assert!(matches!(
        rig.store.redemption(&id).unwrap().unwrap().state,
        RedemptionState::Burned { .. }
    ));
    assert_eq!(rig.balance(rig.ap_wallet), shares(1 + 10));
}

#[tokio::test(start_paused = true)]
async fn a_redemption_is_requested_journaled_and_burned_once() {
    let rig = Rig::new();
    let id = minted_then_sent_back(&rig, "tr-r", 3, 2).await;
    rig.run(6).await;
    let redemption = rig.store.redemption(&id).unwrap().expect("detected");
    assert!(
        matches!(redemption.state, RedemptionState::Burned { .. }),
        "{:?}",
        redemption.state
    );
    assert_eq!(rig.withdrawals(), 1);
    assert_eq!(rig.node.supply(rig.vault), shares(1));
    assert_eq!(rig.balance(rig.bot()), U256::ZERO);
    assert_eq!(rig.sim.snapshot().redeem_call_count, 1);
    rig.run(10).await;
    assert_eq!(
        rig.withdrawals(),
        1,
        "burned once after ten more passes and blocks"
    );
    assert_eq!(rig.sim.snapshot().redeem_call_count, 1);
}

#[tokio::test(start_paused = true)]
async fn a_crash_at_any_point_of_a_redemption_neither_loses_nor_repeats_it() {
    for point in [
        CrashPoint::AfterRedeemCall,
        CrashPoint::AfterJournalSeen,
        CrashPoint::AfterBurnBroadcast,
        CrashPoint::AfterBurnSeen,
    ] {
        let mut rig = Rig::new();
        let id = minted_then_sent_back(&rig, "tr-rc", 2, 2).await;
        rig.restart(Some(point)).await;
        // Passes until the crash point has fired (a job or the pass itself dies there).
        for _ in 0..8 {
            let looping = &rig.looping;
            let outcome =
                futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(looping.pass()))
                    .await;
            settle().await;
            rig.node.mine();
            if outcome.is_err() {
                break;
            }
        }
        rig.restart(None).await;
        rig.looping_rebroadcast().await;
        rig.run(8).await;
        let redemption = rig.store.redemption(&id).unwrap().expect("detected");
        assert!(
            matches!(redemption.state, RedemptionState::Burned { .. }),
            "{point:?}: {:?}",
            redemption.state
        );
        assert_eq!(rig.withdrawals(), 1, "{point:?}: burned once");
        assert_eq!(rig.node.supply(rig.vault), U256::ZERO, "{point:?}");
        let accepted: Vec<_> = rig
            .sim
            .snapshot()
            .redeem_calls
            .into_iter()
            .filter_map(|c| c.tokenization_request_id)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(
            accepted.len(),
            1,
            "{point:?}: one request at Alpaca, however often it was asked"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_transaction_stuck_below_the_base_fee_is_replaced_and_mined_once() {
    let rig = Rig::new();
    let irid = rig.issue_confirmed("tr-fee", "1");
    rig.pass().await;
    // The fee market jumps after we signed: our transaction stays in the pool.
    rig.node.set_base_fee(8_000_000_000);
    for _ in 0..=rig.policy.replace_after_blocks {
        rig.node.mine();
        rig.pass().await;
    }
    rig.run(8).await;
    assert_eq!(rig.deposits_for(&irid), 1);
    assert_eq!(rig.callbacks("tr-fee"), 1);
    let tx = rig
        .store
        .tx(&Network::parse("base").unwrap(), 0)
        .unwrap()
        .unwrap();
    assert!(
        tx.variants.len() >= 2,
        "replaced at the same nonce: {} variants",
        tx.variants.len()
    );
    assert!(tx
        .variants
        .windows(2)
        .all(|w| w[1].max_fee_per_gas > w[0].max_fee_per_gas));
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_the_node_lost_is_sent_again_and_mined_once() {
    let rig = Rig::new();
    rig.node.faults(|f| f.lose_broadcasts = 1);
    let irid = rig.issue_confirmed("tr-lost", "1");
    rig.pass().await;
    assert_eq!(rig.node.pooled(), 0, "the node lost it");
    rig.run(8).await;
    assert_eq!(rig.deposits_for(&irid), 1);
    assert!(rig.acked(&irid));
}

#[tokio::test(start_paused = true)]
async fn a_reorg_that_drops_a_mint_makes_it_mined_again_once() {
    let rig = Rig::with_policy(Policy {
        confirmations_min: 3,
        ..Policy::default()
    });
    let irid = rig.issue_confirmed("tr-reorg", "1");
    rig.pass().await;
    rig.node.mine();
    rig.pass().await;
    assert_eq!(rig.deposits_for(&irid), 1, "mined");
    assert_eq!(rig.callbacks("tr-reorg"), 0, "not confirmed yet");
    // The block with our mint is replaced and the node forgot the transaction.
    rig.node.reorg(1, false);
    assert_eq!(rig.deposits_for(&irid), 0);
    rig.run(10).await;
    assert_eq!(rig.deposits_for(&irid), 1, "mined again, once");
    assert_eq!(rig.callbacks("tr-reorg"), 1);
    assert_eq!(rig.balance(rig.ap_wallet), shares(1));
}

#[tokio::test(start_paused = true)]
async fn a_reorg_that_re_mines_a_mint_elsewhere_is_called_back_once() {
    let rig = Rig::new();
    let irid = rig.issue_confirmed("tr-moved", "1");
    rig.pass().await;
    rig.node.mine();
    rig.pass().await;
    rig.node.reorg(2, true);
    rig.run(6).await;
    assert_eq!(rig.deposits_for(&irid), 1);
    assert!(rig.callbacks("tr-moved") >= 1);
    assert!(rig.acked(&irid));
    assert_eq!(rig.balance(rig.ap_wallet), shares(1));
}

#[tokio::test(start_paused = true)]
async fn a_refused_mint_callback_is_sent_once_and_waits_for_an_operator() {
    let rig = Rig::new();
    rig.sim.set_faults(Faults {
        refuse_mint_callback: Some(Refusal {
            status: 404,
            message: "not found".into(),
        }),
        ..Faults::default()
    });
    let irid = rig.issue_confirmed("tr-refused", "1");
    rig.run(12).await;
    assert_eq!(rig.deposits_for(&irid), 1);
    assert_eq!(
        rig.callbacks("tr-refused"),
        1,
        "a final refusal is not repeated"
    );
    assert!(matches!(
        rig.store.mint(&irid).unwrap().unwrap().intent.callback,
        Callback::Refused { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn callbacks_through_outages_and_rate_limits_arrive_once() {
    let rig = Rig::new();
    rig.sim.set_faults(Faults {
        error_rate_5xx: 0.2,
        rate_429: 0.2,
        retry_after_secs: 2,
        ..Faults::default()
    });
    let ids: Vec<_> = (0..10)
        .map(|i| rig.issue_confirmed(&format!("tr-f{i}"), "1"))
        .collect();
    for _ in 0..600 {
        rig.pass().await;
        rig.node.mine();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ids.iter().all(|id| rig.acked(id)) {
            break;
        }
    }
    for (i, irid) in ids.iter().enumerate() {
        let record = rig.store.mint(irid).unwrap().unwrap();
        assert!(
            rig.acked(irid),
            "tr-f{i} called back: {:?} {:?}; hits {:?}; deposits {}",
            record.intent.callback,
            record.problem,
            rig.sim.snapshot().hits,
            rig.deposits_for(irid)
        );
        assert_eq!(rig.deposits_for(irid), 1);
        let trid = format!("tr-f{i}");
        let received = rig
            .sim
            .snapshot()
            .mint_callbacks
            .iter()
            .filter(|c| c.tokenization_request_id == trid && c.status == 200)
            .count();
        assert_eq!(received, 1, "{trid}: one callback served");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_redeem_call_flags_the_redemption_without_asking_again() {
    let rig = Rig::new();
    let id = minted_then_sent_back(&rig, "tr-rr", 1, 1).await;
    rig.sim.set_faults(Faults {
        refuse_redeem: Some(Refusal {
            status: 422,
            message: "wallet_address is not whitelisted".into(),
        }),
        ..Faults::default()
    });
    rig.run(12).await;
    let redemption = rig.store.redemption(&id).unwrap().unwrap();
    assert!(
        matches!(redemption.state, RedemptionState::Flagged { .. }),
        "{:?}",
        redemption.state
    );
    assert_eq!(rig.sim.snapshot().redeem_call_count, 1, "asked once");
    assert_eq!(rig.withdrawals(), 0, "nothing burned");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_redemption_is_not_burned() {
    let rig = Rig::new();
    rig.sim.set_faults(Faults {
        redeem_outcome: RedeemOutcome::Rejected,
        ..Faults::default()
    });
    let id = minted_then_sent_back(&rig, "tr-rj", 1, 1).await;
    rig.run(10).await;
    let redemption = rig.store.redemption(&id).unwrap().unwrap();
    assert!(
        matches!(redemption.state, RedemptionState::Flagged { .. }),
        "{:?}",
        redemption.state
    );
    assert_eq!(rig.withdrawals(), 0);
    assert_eq!(
        rig.balance(rig.bot()),
        shares(1),
        "the tokens wait with the bot"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_goes_down_mid_run_loses_nothing() {
    let rig = Rig::new();
    let first = rig.issue_confirmed("tr-d1", "1");
    rig.pass().await;
    rig.node.faults(|f| f.down = true);
    let second = rig.issue_confirmed("tr-d2", "1");
    for _ in 0..5 {
        assert!(
            rig.looping.pass().await.is_err(),
            "a pass against a down node fails"
        );
        rig.node.mine();
    }
    rig.node.faults(|f| f.down = false);
    rig.run(6).await;
    for (irid, trid) in [(&first, "tr-d1"), (&second, "tr-d2")] {
        assert_eq!(rig.deposits_for(irid), 1, "{trid}");
        assert_eq!(rig.callbacks(trid), 1, "{trid}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_mint_to_a_refusing_receiver_waits_and_the_rest_of_its_batch_goes_out() {
    let rig = Rig::new();
    let refusing = Address::repeat_byte(0xbe);
    let account = rig.store.register_account("other@example.com").unwrap();
    rig.store
        .link_account("other@example.com", "ACC-2")
        .unwrap();
    assert!(rig.store.add_wallet(&account.client_id, refusing).unwrap());
    rig.node.faults(|f| {
        f.reverting_receivers.insert(refusing);
    });
    let good: Vec<_> = (0..4)
        .map(|i| rig.issue_confirmed(&format!("tr-g{i}"), "1"))
        .collect();
    let bad =
        rig_clone_for(&rig, account.client_id.clone(), refusing).issue_confirmed("tr-bad", "1");
    let before = rig.node.broadcasts();
    rig.run(4).await;
    assert_eq!(
        rig.node.broadcasts() - before,
        1,
        "one transaction for the four good mints"
    );
    for irid in &good {
        assert_eq!(rig.deposits_for(irid), 1);
        assert!(rig.acked(irid));
    }
    assert_eq!(rig.deposits_for(&bad), 0);
    let problem = rig.store.mint(&bad).unwrap().unwrap().problem;
    assert!(
        problem.is_some_and(|p| p.to_string().contains("refuses")),
        "shown why it waits"
    );
}

/// The same rig, as another client with another wallet (shares the store, chain and Alpaca).
fn rig_clone_for(rig: &Rig, client_id: reconciler::ClientId, wallet: Address) -> Rig {
    Rig {
        node: rig.node.clone(),
        sim: rig.sim.clone(),
        dir: tempfile::tempdir().unwrap(),
        store: rig.store.clone(),
        chain: rig.chain.clone(),
        vault: rig.vault,
        ap_wallet: wallet,
        client: ClientRef::ClientExternalAccountId(client_id),
        policy: rig.policy,
        looping: new_loop(&rig.store, &rig.chain, &rig.sim, &rig.policy, None),
    }
}

#[tokio::test(start_paused = true)]
async fn callbacks_whose_answers_are_lost_reach_alpaca_once() {
    let rig = Rig::new();
    // Half of Alpaca's answers are cut after the call took effect.
    rig.sim.set_faults(Faults {
        drop_connections_rate: 0.5,
        ..Faults::default()
    });
    let ids: Vec<_> = (0..8)
        .map(|i| rig.issue_confirmed(&format!("tr-lost-{i}"), "1"))
        .collect();
    for _ in 0..300 {
        rig.pass().await;
        rig.node.mine();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if ids.iter().all(|id| rig.acked(id)) {
            break;
        }
    }
    let snapshot = rig.sim.snapshot();
    for (i, irid) in ids.iter().enumerate() {
        let trid = format!("tr-lost-{i}");
        assert!(rig.acked(irid), "{trid} acknowledged in the end");
        let sent = snapshot
            .mint_callbacks
            .iter()
            .filter(|c| c.tokenization_request_id == trid)
            .count();
        assert_eq!(
            sent, 1,
            "{trid}: a callback whose answer was lost is looked up, not sent again"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_reorg_that_drops_a_transfer_before_it_is_confirmed_asks_alpaca_nothing() {
    let rig = Rig::with_policy(Policy {
        confirmations_min: 3,
        ..Policy::default()
    });
    let irid = rig.issue_confirmed("tr-gone", "1");
    rig.run(6).await;
    assert!(rig.acked(&irid));
    let hash = rig
        .node
        .transfer(rig.vault, rig.ap_wallet, rig.bot(), shares(1));
    rig.node.mine();
    rig.pass().await;
    let id = IssuerRequestId::for_redemption(hash, 0);
    assert!(rig.store.redemption(&id).unwrap().is_some(), "detected");
    // The transfer's block is replaced and the transfer is gone with it.
    rig.node.reorg(1, false);
    rig.run(6).await;
    assert!(
        rig.store.redemption(&id).unwrap().is_none(),
        "forgotten: it is not on chain"
    );
    assert_eq!(
        rig.sim.snapshot().redeem_call_count,
        0,
        "Alpaca never asked"
    );
    assert_eq!(
        rig.balance(rig.ap_wallet),
        shares(1),
        "the AP kept its shares"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reorg_that_drops_a_burn_burns_again_once() {
    let rig = Rig::with_policy(Policy {
        confirmations_min: 3,
        ..Policy::default()
    });
    let id = minted_then_sent_back(&rig, "tr-reburn", 2, 2).await;
    // Until the burn is mined (but not yet confirmed).
    for _ in 0..12 {
        rig.pass().await;
        rig.node.mine();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if rig.withdrawals() == 1 {
            break;
        }
    }
    assert_eq!(rig.withdrawals(), 1, "burned");
    rig.node.reorg(1, false);
    assert_eq!(
        rig.withdrawals(),
        0,
        "the burn's block is gone, and the node forgot it"
    );
    rig.run(10).await;
    let redemption = rig.store.redemption(&id).unwrap().unwrap();
    assert!(
        matches!(redemption.state, RedemptionState::Burned { .. }),
        "{:?}",
        redemption.state
    );
    assert_eq!(rig.withdrawals(), 1, "burned again, once");
    assert_eq!(rig.node.supply(rig.vault), U256::ZERO);
    assert_eq!(rig.sim.snapshot().redeem_call_count, 1);
}

/// Issue 16: one pass sends all its batches (estimated side by side), with consecutive nonces,
/// each stored before it is broadcast; every mint goes out in exactly one of them.
#[tokio::test(start_paused = true)]
async fn many_batches_in_one_pass_get_consecutive_nonces_and_each_mint_is_deposited_once() {
    let rig = Rig::new();
    let ids: Vec<_> = rig.issue_confirmed_each(330);
    let (before, estimates_before) = (rig.node.broadcasts(), rig.node.estimates());
    rig.pass().await;
    assert_eq!(
        rig.node.broadcasts() - before,
        9,
        "330 mints at 40 per transaction, all sent by the first pass"
    );
    assert_eq!(
        rig.node.estimates() - estimates_before,
        1,
        "one estimate: eight batches of 40 to one wallet, and the batch of 10 reuses its limit"
    );
    assert_eq!(rig.node.pooled(), 9);
    let mut covered = std::collections::BTreeMap::new();
    for nonce in 0..9 {
        let tx = rig
            .store
            .tx(&Network::parse("base").unwrap(), nonce)
            .unwrap()
            .expect("consecutive nonces");
        let reconciler::TxPurpose::Mint {
            issuer_request_ids, ..
        } = tx.purpose
        else {
            panic!("nonce {nonce} is not a mint");
        };
        for id in issuer_request_ids {
            assert!(
                covered.insert(id, nonce).is_none(),
                "a mint in two transactions"
            );
        }
    }
    assert!(rig
        .store
        .tx(&Network::parse("base").unwrap(), 9)
        .unwrap()
        .is_none());
    assert_eq!(covered.len(), ids.len());
    rig.run(3).await;
    assert_eq!(rig.balance(rig.ap_wallet), shares(330));
    for (i, irid) in ids.iter().enumerate() {
        assert_eq!(rig.deposits_for(irid), 1);
        assert_eq!(rig.callbacks(&format!("tr-{i}")), 1);
    }
    rig.run(5).await;
    assert_eq!(rig.node.pooled(), 0);
    assert_eq!(
        rig.balance(rig.ap_wallet),
        shares(330),
        "nothing sent twice"
    );
}

/// Issue 16: a pass stores all its transactions in one commit before broadcasting any, so a
/// crash there leaves every one of them stored (none half-way, no nonce gap): the restarted
/// loop re-sends exactly those, at their nonces, and signs nothing new for their mints.
#[tokio::test(start_paused = true)]
async fn a_crash_after_a_pass_stored_its_transactions_loses_none_and_signs_none_again() {
    let mut rig = Rig::new();
    rig.restart(Some(CrashPoint::AfterSign)).await;
    let ids: Vec<_> = rig.issue_confirmed_each(330);
    let before = rig.node.broadcasts();
    rig.pass_crashing().await;
    assert_eq!(
        rig.node.broadcasts(),
        before,
        "nothing broadcast before the crash"
    );
    let base = Network::parse("base").unwrap();
    for nonce in 0..9 {
        assert!(
            rig.store.tx(&base, nonce).unwrap().is_some(),
            "nonce {nonce} stored with the others"
        );
    }
    rig.restart(None).await;
    rig.looping_rebroadcast().await;
    rig.run(6).await;
    assert_eq!(rig.balance(rig.ap_wallet), shares(330));
    for (i, irid) in ids.iter().enumerate() {
        assert_eq!(rig.deposits_for(irid), 1);
        assert_eq!(rig.callbacks(&format!("tr-{i}")), 1);
    }
    assert!(
        rig.store.tx(&base, 9).unwrap().is_none(),
        "no transaction signed again for mints already stored"
    );
}

/// Issue 16: a transaction the node lost (the block after it had room, and every nonce behind
/// it waits) is sent again by the next pass and mined one block late, not two.
#[tokio::test(start_paused = true)]
async fn a_nonce_a_block_left_out_is_recovered_in_one_block() {
    let rig = Rig::new();
    let ids = rig.two_batches_the_node_lost_the_first_of().await;
    assert_eq!(
        rig.balance(rig.ap_wallet),
        U256::ZERO,
        "a block with room left it out"
    );
    rig.pass().await;
    rig.node.mine();
    assert_eq!(
        rig.balance(rig.ap_wallet),
        shares(80),
        "both mined in the next block"
    );
    rig.run(4).await;
    for (i, irid) in ids.iter().enumerate() {
        assert_eq!(rig.deposits_for(irid), 1);
        assert_eq!(rig.callbacks(&format!("tr-{i}")), 1);
    }
}

/// Issue 16: a batch reuses another's estimate only if it has no receiver the other lacks (a
/// new holder costs more gas); otherwise it is estimated itself, and both are mined.
#[tokio::test(start_paused = true)]
async fn a_batch_with_a_receiver_the_estimated_one_lacks_is_estimated_itself() {
    let rig = Rig::new();
    let other = Address::repeat_byte(0xc2);
    let account = rig.store.register_account("second@example.com").unwrap();
    rig.store
        .link_account("second@example.com", "ACC-3")
        .unwrap();
    assert!(rig.store.add_wallet(&account.client_id, other).unwrap());
    let second = rig_clone_for(&rig, account.client_id.clone(), other);
    // The plan batches in issuer_request_id order: the first 40 ids go to one wallet, the next
    // 40 to the other, so each batch has a wallet the other lacks.
    let mut trids: Vec<String> = (0..80).map(|i| format!("tr-{i}")).collect();
    trids.sort_by_key(|t| IssuerRequestId::for_mint(&TokenizationRequestId::parse(t).unwrap()));
    let ids: Vec<_> = trids
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i < 40 {
                rig.issue_confirmed(t, "1")
            } else {
                second.issue_confirmed(t, "1")
            }
        })
        .collect();
    let estimates_before = rig.node.estimates();
    rig.pass().await;
    assert_eq!(
        rig.node.estimates() - estimates_before,
        2,
        "two batches of 40, each to a wallet the other lacks"
    );
    rig.run(3).await;
    assert_eq!(rig.balance(rig.ap_wallet), shares(40));
    assert_eq!(rig.balance(other), shares(40));
    for irid in &ids {
        assert_eq!(rig.deposits_for(irid), 1);
        assert!(rig.acked(irid));
    }
}

/// Issue 16: the supply gauge's reads (one `totalSupply` per asset, every two seconds) never
/// hold a pass: with the node taking a minute to answer them, a confirmed mint is deposited and
/// called back within seconds (virtual time), as with a fast node.
#[tokio::test(start_paused = true)]
async fn slow_supply_reads_never_hold_a_pass() {
    let rig = Rig::new();
    rig.node
        .faults(|f| f.supply_delay = Some(Duration::from_secs(60)));
    let started = tokio::time::Instant::now();
    let irid = rig.issue_confirmed("tr-slow-supply", "1");
    rig.run(3).await;
    assert_eq!(rig.deposits_for(&irid), 1);
    assert!(rig.acked(&irid));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the mint waited behind the supply reads: {:?}",
        started.elapsed()
    );
}

/// Issue 16: a batch with fewer mints than an estimated shape, to receivers the shape has, reuses
/// its gas limit (it needs less gas): the remainder a pass sends after its full batches costs no
/// `eth_estimateGas` of its own. A bigger batch is estimated. Every mint is deposited once, so no
/// reused limit ran out of gas.
#[tokio::test(start_paused = true)]
async fn a_smaller_batch_reuses_the_gas_limit_of_a_bigger_shape_and_a_bigger_one_is_estimated() {
    let rig = Rig::new();
    let (estimates, ids) = rig
        .estimates_per_round(&[(0, 13), (0, 40), (0, 13), (0, 7)])
        .await;
    assert_eq!(
        estimates,
        vec![1, 1, 0, 0],
        "13 estimated, 40 estimated (bigger), then 13 and 7 reuse the 40's limit"
    );
    rig.assert_each_minted_once(&ids).await;
}

/// Issue 16: a gas limit estimated for a batch's shape (vault, mint count, receivers) is reused
/// by the next passes' batches of that shape for ten blocks: no `eth_estimateGas` per pass
/// under a steady flow. After ten blocks the shape is estimated again, and every mint is still
/// deposited once.
#[tokio::test(start_paused = true)]
async fn a_shape_estimated_in_one_pass_is_reused_by_later_passes_for_ten_blocks() {
    let rig = Rig::new();
    // The third round comes past the reuse window: its batch is estimated again.
    let (estimates, ids) = rig.estimates_per_round(&[(0, 40), (0, 40), (10, 40)]).await;
    assert_eq!(
        estimates,
        vec![1, 0, 1],
        "estimated, reused a block later, estimated again ten blocks on"
    );
    rig.assert_each_minted_once(&ids).await;
}

/// Issue 16: a finished mint callback ends its mint and gives the chain nothing to do, so it
/// starts no pass. A block's worth of callbacks finishing one by one used to run a pass each,
/// every one reading the whole active set, while the issuer's intake waited for the CPU.
#[tokio::test(start_paused = true)]
async fn a_finished_mint_callback_starts_no_pass() {
    let rig = Rig::new();
    let irid = rig.issue_confirmed("tr-quiet", "1");
    let mut looping = new_loop(&rig.store, &rig.chain, &rig.sim, &rig.policy, None);
    // Passes come from the head and from the jobs alone: the timer never fires in this test.
    looping.config.interval = Duration::from_secs(3_600);
    let passes = looping.passes.clone();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(looping.run(wake.clone(), async move {
        let _ = stopped.await;
    }));
    // The head watcher's first look, so that it sees the first block move the head.
    tokio::time::sleep(Duration::from_millis(100)).await;
    wake.notify_one();
    passes.more(1).await;
    let mut blocks = 0;
    while !rig.acked(&irid) {
        assert!(blocks < 10, "the mint was never called back");
        rig.node.mine();
        blocks += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(rig.callbacks("tr-quiet"), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        passes.get(),
        1 + blocks,
        "one pass for the wake and one per block: the finished callback ran one more"
    );
    let _ = stop.send(());
    running.await.unwrap();
    assert_eq!(rig.deposits_for(&irid), 1);
    assert_eq!(rig.callbacks("tr-quiet"), 1);
}

/// Issue 16: a pending nonce is re-sent at most once per block, however many passes run at that
/// head (a pass runs on every head and every timer tick; with a queue of full batches behind a
/// busy block each pass re-sent all of them).
#[tokio::test(start_paused = true)]
async fn a_pending_nonce_is_re_sent_once_per_block_whatever_the_passes() {
    let rig = Rig::new();
    let ids = rig.two_batches_the_node_lost_the_first_of().await;
    let before = rig.node.broadcasts();
    let resent = issuer::metrics::metrics().txs_resent.get();
    for _ in 0..3 {
        rig.pass().await;
    }
    assert_eq!(
        rig.node.broadcasts() - before,
        2,
        "three passes at one head re-send each of the two pending nonces once"
    );
    // Other tests in this binary may re-send meanwhile: the counter grows by at least these two.
    assert!(issuer::metrics::metrics().txs_resent.get() - resent >= 2);
    rig.node.mine();
    assert_eq!(rig.balance(rig.ap_wallet), shares(80));
    rig.assert_each_minted_once(&ids).await;
}

/// Issue 16: transactions queued behind a full block only wait their turn. The pass after it
/// re-sends none of them (it used to re-send each one at every block); the next blocks mine
/// them, and every mint once.
#[tokio::test(start_paused = true)]
async fn transactions_queued_behind_a_full_block_are_not_re_sent() {
    let rig = Rig::new();
    // 12 batches of 40: the node's 30M-gas block has room for 9 of their gas limits.
    let ids: Vec<_> = rig.issue_confirmed_each(480);
    rig.pass().await;
    assert_eq!(rig.node.pooled(), 12, "all sent in one pass");
    rig.node.mine();
    let queued = rig.node.pooled();
    assert!(queued > 0, "the block had no room for the last batches");
    assert_eq!(
        rig.pass_counting(MemNode::broadcasts).await,
        0,
        "none of the {queued} queued transactions re-sent"
    );
    rig.node.mine();
    assert_eq!(rig.node.pooled(), 0, "the next block mined them");
    rig.assert_each_minted_once(&ids).await;
}

/// Issue 16: a transaction whose nonce the head has not reached is mined in no block up to it,
/// so its receipt is not asked for (each queued transaction cost a receipt call every pass).
/// Once mined, its receipt is read.
#[tokio::test(start_paused = true)]
async fn no_receipt_is_asked_for_a_nonce_the_head_has_not_reached() {
    let rig = Rig::new();
    let ids = rig.issue_confirmed_each(80);
    rig.pass().await;
    assert_eq!(rig.node.pooled(), 2, "two batches sent");
    assert_eq!(
        rig.pass_counting(MemNode::receipts).await,
        0,
        "neither is mined: no receipt asked"
    );
    rig.node.mine();
    assert_eq!(
        rig.pass_counting(MemNode::receipts).await,
        2,
        "both mined: both receipts read"
    );
    rig.assert_each_minted_once(&ids).await;
}

/// A node whose transaction count at the head lags the one a block below (a load-balanced RPC
/// whose backends disagree) must not make our mined transactions look displaced: every nonce
/// below either count has its receipt read, so both settle as mined in their block.
#[tokio::test(start_paused = true)]
async fn a_head_nonce_lagging_the_settled_one_never_takes_our_mined_nonces_for_displaced() {
    let rig = Rig::new();
    let ids = rig.issue_confirmed_each(80);
    rig.pass().await;
    let block = rig.node.mine();
    rig.node.mine();
    rig.node.faults(|f| f.head_nonce_lag = 2);
    rig.pass().await;
    for nonce in [0, 1] {
        let tx = rig
            .store
            .tx(&Network::parse("base").unwrap(), nonce)
            .unwrap()
            .unwrap();
        let settled = tx.settled.expect("settled");
        assert_eq!(
            settled.mined_block,
            Some(block),
            "nonce {nonce} settled as mined"
        );
    }
    rig.node.faults(|f| f.head_nonce_lag = 0);
    rig.assert_each_minted_once(&ids).await;
}
