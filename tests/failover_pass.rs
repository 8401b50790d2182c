//! The failover drill's cases one at a time, in process and deterministic: two instances of one
//! signing key, each with its own store, shared facts and fence as `serve --ha-etcd` builds them
//! ([`HaParts::connect`], [`HaStore`]), over a real etcd, the in-memory chain ([`MemNode`]) and
//! the Alpaca simulator in the same process ([`SimTransport`]). The first leader is stopped at a
//! chosen point (a broadcast the node lost, a crash point), its lease ends, and the second starts
//! its term as `serve` does ([`prepare_term`], then the loop's start-up rebroadcast). Then what
//! users see must show every mint deposited and called back once, every redemption asked for
//! once and burned once.
//!
//! Guards: a new leader that signed its own transactions at the nonces of the old leader's
//! stored ones released the old ones queued behind a nonce gap, a double deposit (the drill, 2 of
//! 6 runs); a new leader that did not know what the old one had sent to Alpaca called it again.
//!
//! Real time, not tokio's paused clock: etcd is a real process, and the shared store blocks on it
//! from the runtime's workers. Blocks are mined only when a test says so, and each pass's Alpaca
//! jobs are waited for until none is left, so no test sleeps to prove that nothing happened.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, B256, U256};
use common::etcd::Etcd;
use issuer::alpaca::{BrokerClient, RetryPolicy};
use issuer::chain::mem::MemNode;
use issuer::chain::{BotSigner, Chain, EthersSigner, VaultEvent};
use issuer::ha::leader::{prepare_term, Term, TermParts};
use issuer::ha::{HaParts, HaSettings, HaStore, Leadership, SharedFacts};
use issuer::pass::{CrashPoint, PassConfig, ReconcileLoop};
use issuer::sim::{NewMint, Refusal, Sim, SimClient, SimConfig, SimTransport};
use issuer::store::{Asset, IssuanceOutcome, MintRecord, RedbStore, Store, TxRecord};
use reconciler::{
    Callback, ClientRef, IssuerRequestId, Journal, MintIntent, Network, Policy, Qty,
    RedemptionState, Symbol, TokenizationRequestId, TxPurpose,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const E18: u128 = 1_000_000_000_000_000_000;
const BOT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const CHAIN_ID: u64 = 31_337;
/// Long enough that no lease runs out by itself during a test: a leader's term ends when the
/// test ends it.
const LEASE_TTL: Duration = Duration::from_secs(20);

fn base() -> Network {
    Network::parse("base").unwrap()
}

fn signer() -> BotSigner {
    EthersSigner::from_private_key(BOT_KEY).unwrap().into()
}

fn shares(whole: u128) -> U256 {
    U256::from(whole * E18)
}

/// One `issuer serve --ha-etcd` as the library builds it, without its HTTP server.
struct Instance {
    facts: Arc<SharedFacts>,
    leadership: Arc<Leadership>,
    /// The store its handlers and its reconciler use: the local redb behind the shared facts.
    store: Arc<dyn Store>,
    parts: TermParts<BrokerClient>,
}

/// A term in progress: its loop, and the lease renewal running beside it.
struct Leading {
    term: Term,
    looping: ReconcileLoop<BrokerClient>,
    keeper: tokio::task::JoinHandle<()>,
}

/// Two instances of one signing key, one etcd, one chain, one Alpaca.
struct Pair {
    etcd: Etcd,
    _dir: tempfile::TempDir,
    node: Arc<MemNode>,
    sim: Sim,
    vault: Address,
    ap_wallet: Address,
    client: ClientRef,
    a: Instance,
    b: Instance,
}

impl Instance {
    async fn start(
        name: &str,
        etcd: &Etcd,
        dir: &std::path::Path,
        node: &Arc<MemNode>,
        sim: &Sim,
        crash_at: Option<CrashPoint>,
    ) -> Instance {
        let local = RedbStore::open(&dir.join(format!("{name}.redb"))).unwrap();
        let settings = HaSettings {
            endpoints: vec![etcd.endpoint()],
            lease_ttl: LEASE_TTL,
            renew_every: LEASE_TTL / 4,
            instance: name.to_owned(),
        };
        let chain = Chain::new(node.clone(), signer());
        let ha = HaParts::connect(settings, chain.bot(), local.clone())
            .await
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(HaStore::new(ha.facts.clone()));
        let mut retry = RetryPolicy::for_reconciler();
        retry.attempt_timeout = Duration::from_secs(5);
        let broker =
            BrokerClient::with_transport(Arc::new(SimTransport { sim: sim.clone() }), retry);
        let parts = TermParts {
            store: store.clone(),
            local: ha.local,
            network: base(),
            chain,
            broker,
            config: PassConfig {
                interval: Duration::from_millis(500),
                head_poll: Duration::from_millis(50),
                backoff_max: Duration::from_secs(2),
                policy: Policy::default(),
                crash_at,
                max_fee_per_gas_wei: 500_000_000_000,
            },
        };
        Instance {
            facts: ha.facts,
            leadership: ha.leadership,
            store,
            parts,
        }
    }

    /// Wins the election and starts the term as `serve` does: the term prepared (shared facts
    /// and transactions imported, calls not known to be done made to ask Alpaca first), then the
    /// loop's start-up re-send of every stored unsettled transaction.
    async fn lead(&self) -> Leading {
        let term = tokio::time::timeout(Duration::from_secs(10), self.leadership.campaign())
            .await
            .expect("the election key is free");
        let keeper = tokio::spawn(self.leadership.clone().keep_alive(term));
        let fence = self.leadership.fence(term);
        prepare_term(&fence, &self.facts, &self.parts)
            .await
            .unwrap();
        let looping = self.parts.reconcile_loop(fence);
        issuer::pass::rebroadcast_all(
            looping.store.as_ref(),
            &looping.network,
            &looping.chain,
            &looping.fence,
        )
        .await
        .unwrap();
        Leading {
            term,
            looping,
            keeper,
        }
    }

    fn mint(&self, irid: &IssuerRequestId) -> MintRecord {
        self.store.mint(irid).unwrap().expect("known mint")
    }
}

impl Leading {
    /// The leader dies, as after a SIGKILL: it acts no more, and its lease ends (revoked here
    /// rather than waited out: etcd then deletes the election key just as at expiry). `crashed`:
    /// its Alpaca jobs that died at the crash point (they never leave the in-flight set); every
    /// other job must have ended.
    async fn die(self, etcd: &Etcd, crashed: usize) {
        assert_eq!(
            self.looping.alpaca.in_flight(),
            crashed,
            "the old leader's Alpaca jobs ended"
        );
        self.keeper.abort();
        drop(self.looping);
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
            .await
            .unwrap();
        client.lease_revoke(self.term.lease).await.unwrap();
    }
}

impl Pair {
    async fn start(crash_at_a: Option<CrashPoint>) -> Pair {
        issuer::pass::panic_at_crash_points();
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(&dir.path().join("etcd"));
        etcd.wait_up().await;
        let node = Arc::new(MemNode::new(CHAIN_ID));
        let (vault, receipt, authorizer, deploy_block) = node.deploy_vault();
        let sim = Sim::new(SimConfig {
            account_id: "acct".into(),
            api_key: "key".into(),
            api_secret: "secret".into(),
            seed: Some(7),
        });
        let a = Instance::start("a", &etcd, dir.path(), &node, &sim, crash_at_a).await;
        let b = Instance::start("b", &etcd, dir.path(), &node, &sim, None).await;
        // The directory, through the first instance: shared in etcd, imported by the second.
        a.store
            .put_asset(&Asset {
                underlying: Symbol::parse("AAPL").unwrap(),
                token: Symbol::parse("tAAPL").unwrap(),
                network: base(),
                vault,
                receipt,
                authorizer,
                deploy_block,
                frozen: false,
                mint_qty_max: None,
            })
            .unwrap();
        let account = a.store.register_account("ap@example.com").unwrap();
        a.store.link_account("ap@example.com", "ACC-1").unwrap();
        let ap_wallet = Address::repeat_byte(0xa1);
        assert!(a.store.add_wallet(&account.client_id, ap_wallet).unwrap());
        Pair {
            etcd,
            _dir: dir,
            node,
            sim,
            vault,
            ap_wallet,
            client: ClientRef::ClientExternalAccountId(account.client_id),
            a,
            b,
        }
    }

    /// Alpaca records a mint request, `via`'s intake accepts it and Alpaca confirms the journal.
    async fn issue_confirmed(&self, via: &Instance, trid: &str, qty: &str) -> IssuerRequestId {
        let trid = TokenizationRequestId::parse(trid).unwrap();
        let irid = IssuerRequestId::for_mint(&trid);
        let ClientRef::ClientExternalAccountId(client_id) = &self.client else {
            unreachable!("the AP is named by our client id")
        };
        self.sim
            .add_mint_request(NewMint {
                tokenization_request_id: Some(trid.to_string()),
                issuer_request_id: Some(irid.to_string()),
                qty: qty.into(),
                underlying_symbol: "AAPL".into(),
                token_symbol: "tAAPL".into(),
                network: "base".into(),
                client: SimClient::ClientExternalAccountId(client_id.to_string()),
                wallet_address: format!("{:#x}", self.ap_wallet),
            })
            .unwrap();
        let intent = MintIntent {
            issuer_request_id: irid.clone(),
            tokenization_request_id: trid.clone(),
            client: self.client.clone(),
            wallet: self.ap_wallet,
            underlying: Symbol::parse("AAPL").unwrap(),
            token: Symbol::parse("tAAPL").unwrap(),
            network: base(),
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
        let outcome = via.store.submit_issuance_async(record, None).await.unwrap();
        assert!(
            matches!(outcome, IssuanceOutcome::Created(_)),
            "{outcome:?}"
        );
        via.store
            .confirm_issuance(&trid, &irid, Journal::Completed, None, 1_800_000_000_000)
            .unwrap();
        irid
    }

    /// One pass, then the Alpaca jobs it started run to their end.
    async fn pass(&self, leading: &Leading) {
        let _ = leading.looping.pass().await;
        let started = Instant::now();
        while leading.looping.alpaca.in_flight() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Alpaca jobs still running after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// One pass whose Alpaca job dies at the loop's crash point: waits until Alpaca shows the
    /// call the job made just before it (`reached`), not for the job, which never ends.
    async fn pass_to_crash(&self, leading: &Leading, what: &str, reached: impl Fn() -> bool) {
        let _ = leading.looping.pass().await;
        let started = Instant::now();
        while !reached() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{what}: not reached after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Passes and blocks, alternating, `n` times, then one more pass.
    async fn run(&self, leading: &Leading, n: usize) {
        for _ in 0..n {
            self.pass(leading).await;
            self.node.mine();
        }
        self.pass(leading).await;
    }

    /// The transactions whose Deposit logs carry `irid`'s tag.
    fn deposits_of(&self, irid: &IssuerRequestId) -> Vec<B256> {
        self.node
            .logs(self.vault)
            .iter()
            .filter_map(|l| match &l.event {
                VaultEvent::Deposit(d) => reconciler::meta::decode(&d.receiptInformation)
                    .ok()
                    .filter(|info| info.issuer_request_id == irid.as_str())
                    .map(|_| l.at.tx_hash),
                _ => None,
            })
            .collect()
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

    /// `callback/redeem` calls Alpaca received for one redemption, whatever it answered.
    fn redeem_calls(&self, id: &IssuerRequestId) -> usize {
        self.sim
            .snapshot()
            .redeem_calls
            .iter()
            .filter(|c| c.issuer_request_id.as_deref() == Some(id.as_str()))
            .count()
    }

    fn lookups(&self) -> u64 {
        self.sim.hits("GET requests:by_issuer_request_id")
    }

    fn balance(&self, owner: Address) -> U256 {
        self.node.balance(self.vault, owner)
    }
}

fn mint_ids(tx: &TxRecord) -> Vec<IssuerRequestId> {
    match &tx.purpose {
        TxPurpose::Mint {
            issuer_request_ids, ..
        } => issuer_request_ids.clone(),
        other => panic!("nonce {} is not a mint: {other:?}", tx.nonce),
    }
}

/// The drill's double deposit, made to happen: the old leader stored two transactions, the node
/// lost the first broadcast (so the second waits in its pool behind the gap), the leader died.
/// Mints kept arriving, so the next leader's own batches would differ from the stored ones. It
/// must send the stored transactions at their nonces, unchanged, and sign only for the new mints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_the_old_leader_stored_are_sent_by_the_next_at_their_nonces() {
    let started = Instant::now();
    let pair = Pair::start(None).await;
    let a = pair.a.lead().await;
    let mut first = Vec::new();
    for i in 0..80 {
        first.push(
            pair.issue_confirmed(&pair.a, &format!("tr-gap-{i:03}"), "1")
                .await,
        );
    }
    pair.node.faults(|f| f.lose_broadcasts = 1);
    pair.pass(&a).await;
    let stored: Vec<TxRecord> = (0..2)
        .map(|n| pair.a.store.tx(&base(), n).unwrap().expect("stored"))
        .collect();
    assert!(pair.a.store.tx(&base(), 2).unwrap().is_none());
    assert_eq!(
        pair.node.pooled(),
        1,
        "nonce 1 waits in the pool behind the lost nonce 0"
    );
    a.die(&pair.etcd, 0).await;

    let mut later = Vec::new();
    for i in 80..90 {
        later.push(
            pair.issue_confirmed(&pair.b, &format!("tr-gap-{i:03}"), "1")
                .await,
        );
    }
    let b = pair.b.lead().await;
    pair.run(&b, 6).await;

    for (i, irid) in first.iter().chain(&later).enumerate() {
        assert_eq!(
            pair.deposits_of(irid).len(),
            1,
            "tr-gap-{i:03}: exactly one Deposit"
        );
        assert_eq!(
            pair.callbacks(&format!("tr-gap-{i:03}")),
            1,
            "tr-gap-{i:03}: exactly one callback"
        );
    }
    assert_eq!(pair.balance(pair.ap_wallet), shares(90), "90 shares minted");
    // The old leader's transactions were mined as it signed them, at their nonces.
    for tx in &stored {
        let hash = tx.variants[0].hash;
        for irid in mint_ids(tx) {
            assert_eq!(
                pair.deposits_of(&irid),
                vec![hash],
                "{irid}: deposited by the old leader's nonce {}",
                tx.nonce
            );
        }
        let kept = pair.b.store.tx(&base(), tx.nonce).unwrap().unwrap();
        assert_eq!(
            kept.variants[0].hash, hash,
            "nonce {}: not signed again",
            tx.nonce
        );
    }
    // The new leader signed one transaction, for the ten mints that came after.
    let own = pair.b.store.tx(&base(), 2).unwrap().expect("nonce 2");
    let mut signed = mint_ids(&own);
    signed.sort();
    later.sort();
    assert_eq!(signed, later);
    assert!(pair.b.store.tx(&base(), 3).unwrap().is_none());
    assert_eq!(pair.node.pooled(), 0, "nothing left waiting in the pool");
    eprintln!("nonce-gap failover: {:?}", started.elapsed());
}

/// The old leader sent a mint callback and died before recording Alpaca's answer; it had
/// finished another mint's callback before. The next leader must not call Alpaca back again for
/// either, and needs to ask Alpaca only about the one whose answer was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_the_old_leader_sent_is_not_sent_again_by_the_next() {
    let started = Instant::now();
    let pair = Pair::start(Some(CrashPoint::AfterCallback)).await;
    let a = pair.a.lead().await;
    let sent = pair.issue_confirmed(&pair.a, "tr-sent", "1").await;
    pair.pass(&a).await;
    pair.node.mine();
    // Its callback job dies right after Alpaca answered (the crash point), before the record.
    pair.pass_to_crash(&a, "the callback", || pair.callbacks("tr-sent") == 1)
        .await;
    assert_eq!(pair.a.mint(&sent).intent.callback, Callback::Attempted);
    a.die(&pair.etcd, 1).await;

    let b = pair.b.lead().await;
    let lookups = pair.lookups();
    pair.run(&b, 4).await;
    assert_eq!(pair.deposits_of(&sent).len(), 1);
    assert_eq!(pair.balance(pair.ap_wallet), shares(1));
    assert_eq!(
        pair.callbacks("tr-sent"),
        1,
        "Alpaca got the callback once, from the old leader"
    );
    assert!(
        matches!(pair.b.mint(&sent).intent.callback, Callback::Acked { .. }),
        "the new leader recorded it done"
    );
    assert_eq!(
        pair.lookups() - lookups,
        1,
        "the new leader asked Alpaca once, about the callback whose answer was lost"
    );
    eprintln!("callback failover: {:?}", started.elapsed());
}

/// The old leader finished one mint's callback and Alpaca refused another's for good (the mint
/// then waits for an operator). After it died, the next leader must neither call Alpaca back for
/// the finished one nor send the refused one again, nor ask Alpaca about either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_the_old_leader_finished_or_alpaca_refused_are_left_alone_by_the_next() {
    let started = Instant::now();
    let pair = Pair::start(None).await;
    let a = pair.a.lead().await;
    let done = pair.issue_confirmed(&pair.a, "tr-done", "1").await;
    pair.run(&a, 2).await;
    assert!(matches!(
        pair.a.mint(&done).intent.callback,
        Callback::Acked { .. }
    ));
    pair.sim.set_faults(issuer::sim::Faults {
        refuse_mint_callback: Some(Refusal {
            status: 422,
            message: "wallet_address does not match the request".into(),
        }),
        ..pair.sim.faults()
    });
    let refused = pair.issue_confirmed(&pair.a, "tr-refused", "1").await;
    pair.run(&a, 2).await;
    assert_eq!(pair.callbacks("tr-refused"), 1);
    assert!(matches!(
        pair.a.mint(&refused).intent.callback,
        Callback::Refused { .. }
    ));
    a.die(&pair.etcd, 0).await;

    let b = pair.b.lead().await;
    let lookups = pair.lookups();
    pair.run(&b, 4).await;
    assert_eq!(pair.balance(pair.ap_wallet), shares(2));
    assert_eq!(pair.callbacks("tr-done"), 1, "tr-done: called back once");
    assert_eq!(
        pair.callbacks("tr-refused"),
        1,
        "tr-refused: not sent again until an operator retries it"
    );
    let stuck = pair.b.mint(&refused);
    assert!(
        matches!(stuck.intent.callback, Callback::Refused { .. }) && stuck.problem.is_some(),
        "the new leader shows the refused callback as stuck: {stuck:?}"
    );
    assert_eq!(
        pair.lookups() - lookups,
        0,
        "nothing to ask Alpaca: the old leader recorded both answers"
    );
    eprintln!("refused callback failover: {:?}", started.elapsed());
}

/// The old leader made a redemption's redeem call and died before recording Alpaca's answer.
/// The next leader must ask Alpaca instead of calling again, then burn once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeem_call_the_old_leader_made_is_not_made_again_by_the_next() {
    let started = Instant::now();
    let pair = Pair::start(Some(CrashPoint::AfterRedeemCall)).await;
    pair.sim.set_faults(issuer::sim::Faults {
        redeem_complete_after_polls: 0,
        ..pair.sim.faults()
    });
    let a = pair.a.lead().await;
    let minted = pair.issue_confirmed(&pair.a, "tr-r", "2").await;
    pair.run(&a, 2).await;
    assert!(matches!(
        pair.a.mint(&minted).intent.callback,
        Callback::Acked { .. }
    ));
    let bot = pair.a.parts.chain.bot();
    let hash = pair
        .node
        .transfer(pair.vault, pair.ap_wallet, bot, shares(2));
    pair.node.mine();
    let id = IssuerRequestId::for_redemption(hash, 0);
    // Its redeem job dies right after Alpaca answered (the crash point), before the record.
    pair.pass_to_crash(&a, "the redeem call", || pair.redeem_calls(&id) == 1)
        .await;
    assert_eq!(
        pair.a.store.redemption(&id).unwrap().unwrap().state,
        RedemptionState::Requesting
    );
    a.die(&pair.etcd, 1).await;

    let b = pair.b.lead().await;
    pair.run(&b, 6).await;
    let redemption = pair.b.store.redemption(&id).unwrap().expect("known");
    assert!(
        matches!(redemption.state, RedemptionState::Burned { .. }),
        "{:?}",
        redemption.state
    );
    assert_eq!(pair.withdrawals(), 1, "burned once");
    assert_eq!(pair.node.supply(pair.vault), U256::ZERO);
    assert_eq!(
        pair.redeem_calls(&id),
        1,
        "Alpaca got the redeem call once, from the old leader"
    );
    eprintln!("redeem call failover: {:?}", started.elapsed());
}

/// A leader marked a redeem call in its own store and died before etcd had the mark (simulated by
/// deleting the shared record: the crash window between the local write and etcd's). It led
/// again, asked Alpaca, made the call and died once more before recording the answer. The next
/// leader, which finds the transfer on chain by itself, must still ask Alpaca instead of calling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redeem_call_marked_only_in_one_store_is_shared_when_that_instance_leads_again() {
    let started = Instant::now();
    let pair = Pair::start(Some(CrashPoint::AfterRedeemCall)).await;
    let a = pair.a.lead().await;
    let minted = pair.issue_confirmed(&pair.a, "tr-r2", "2").await;
    pair.run(&a, 2).await;
    assert!(matches!(
        pair.a.mint(&minted).intent.callback,
        Callback::Acked { .. }
    ));
    let bot = pair.a.parts.chain.bot();
    let hash = pair
        .node
        .transfer(pair.vault, pair.ap_wallet, bot, shares(2));
    pair.node.mine();
    let id = IssuerRequestId::for_redemption(hash, 0);
    // Every Alpaca call fails: the redeem call is marked, and never reaches Alpaca.
    let healthy = pair.sim.faults();
    pair.sim.set_faults(issuer::sim::Faults {
        error_rate_5xx: 1.0,
        ..healthy.clone()
    });
    pair.pass(&a).await;
    assert_eq!(pair.redeem_calls(&id), 0);
    assert_eq!(
        pair.a.store.redemption(&id).unwrap().unwrap().state,
        RedemptionState::Requesting
    );
    a.die(&pair.etcd, 0).await;
    let mut client = etcd_client::Client::connect([pair.etcd.endpoint()], None)
        .await
        .unwrap();
    let key = issuer::ha::Keys::new(bot).redemption(&id);
    assert_eq!(client.delete(key, None).await.unwrap().deleted(), 1);

    pair.sim.set_faults(issuer::sim::Faults {
        redeem_complete_after_polls: 0,
        ..healthy
    });
    let a = pair.a.lead().await;
    pair.pass_to_crash(&a, "the redeem call", || pair.redeem_calls(&id) == 1)
        .await;
    a.die(&pair.etcd, 1).await;

    let b = pair.b.lead().await;
    pair.run(&b, 6).await;
    let redemption = pair.b.store.redemption(&id).unwrap().expect("known");
    assert!(
        matches!(redemption.state, RedemptionState::Burned { .. }),
        "{:?}",
        redemption.state
    );
    assert_eq!(pair.withdrawals(), 1, "burned once");
    assert_eq!(
        pair.redeem_calls(&id),
        1,
        "Alpaca got the redeem call once, from the first instance's second term"
    );
    eprintln!("unshared redeem mark failover: {:?}", started.elapsed());
}
