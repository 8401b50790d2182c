//! Several networks in one issuer (issue 14), at the pass tier: two in-memory chains with
//! different chain ids, one store, one loop per network, the Alpaca simulator in process, under
//! tokio's paused clock. Guards: each network mints and burns only its own work with its own
//! nonces (both chains' nonce 0 are two transactions); a vault at the same address on both
//! chains (same deployer, same nonce) is two vaults; one network down or reorged changes nothing
//! on the other; a redemption is requested with its own network's name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy::primitives::{Address, U256};
use issuer::alpaca::{BrokerClient, RetryPolicy};
use issuer::chain::mem::MemNode;
use issuer::chain::{BotSigner, Chain, EthersSigner, VaultEvent};
use issuer::pass::{AlpacaWork, PassConfig, PollSchedule, ReconcileLoop, StopFlag};
use issuer::sim::{NewMint, Sim, SimClient, SimConfig, SimTransport};
use issuer::store::{Asset, IssuanceOutcome, MintRecord, RedbStore, Store};
use reconciler::{
    Callback, ClientRef, IssuerRequestId, Journal, MintIntent, Network, Policy, Qty,
    RedemptionState, Symbol, TokenizationRequestId,
};
use std::sync::Arc;
use std::time::Duration;

const E18: u128 = 1_000_000_000_000_000_000;
const BOT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// One network: its chain, its vault, its loop.
struct Net {
    name: Network,
    node: Arc<MemNode>,
    vault: Address,
    looping: ReconcileLoop<BrokerClient>,
}

/// One issuer serving two networks over one store.
struct Rig {
    sim: Sim,
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    base: Net,
    eth: Net,
    ap_wallet: Address,
    client: ClientRef,
}

fn signer() -> BotSigner {
    EthersSigner::from_private_key(BOT_KEY).unwrap().into()
}

impl Rig {
    fn new() -> Rig {
        issuer::pass::panic_at_crash_points();
        let sim = Sim::new(SimConfig {
            account_id: "acct".into(),
            api_key: "key".into(),
            api_secret: "secret".into(),
            seed: Some(7),
        });
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(RedbStore::open(&dir.path().join("issuer.redb")).unwrap());
        let account = store.register_account("ap@example.com").unwrap();
        store.link_account("ap@example.com", "ACC-1").unwrap();
        let ap_wallet = Address::repeat_byte(0xa1);
        assert!(store.add_wallet(&account.client_id, ap_wallet).unwrap());
        let base = Self::network(&store, &sim, "base", 8453);
        let eth = Self::network(&store, &sim, "ethereum", 1);
        Rig {
            sim,
            _dir: dir,
            store,
            base,
            eth,
            ap_wallet,
            client: ClientRef::ClientExternalAccountId(account.client_id),
        }
    }

    fn network(store: &Arc<dyn Store>, sim: &Sim, name: &str, chain_id: u64) -> Net {
        let node = Arc::new(MemNode::new(chain_id));
        let (vault, receipt, authorizer, deploy_block) = node.deploy_vault();
        let name = Network::parse(name).unwrap();
        store
            .put_asset(&Asset {
                underlying: Symbol::parse("AAPL").unwrap(),
                token: Symbol::parse("tAAPL").unwrap(),
                network: name.clone(),
                vault,
                receipt,
                authorizer,
                deploy_block,
                frozen: false,
                mint_qty_max: None,
            })
            .unwrap();
        let mut retry = RetryPolicy::for_reconciler();
        retry.attempt_timeout = Duration::from_secs(5);
        let looping = ReconcileLoop {
            store: store.clone(),
            network: name.clone(),
            chain: Chain::new(node.clone(), signer()),
            broker: BrokerClient::with_transport(
                Arc::new(SimTransport { sim: sim.clone() }),
                retry,
            ),
            config: PassConfig {
                interval: Duration::from_millis(500),
                head_poll: Duration::from_millis(50),
                backoff_max: Duration::from_secs(2),
                policy: Policy::default(),
                crash_at: None,
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
        };
        Net {
            name,
            node,
            vault,
            looping,
        }
    }

    fn bot(&self) -> Address {
        self.base.looping.chain.bot()
    }

    /// Alpaca records a mint on `net` and the issuer accepts and sees it confirmed.
    fn issue_confirmed(&self, net: &Net, trid: &str, qty: &str) -> IssuerRequestId {
        let trid = TokenizationRequestId::parse(trid).unwrap();
        let irid = IssuerRequestId::for_mint(&trid);
        let ClientRef::ClientExternalAccountId(client) = &self.client else {
            unreachable!()
        };
        self.sim
            .add_mint_request(NewMint {
                tokenization_request_id: Some(trid.to_string()),
                issuer_request_id: Some(irid.to_string()),
                qty: qty.into(),
                underlying_symbol: "AAPL".into(),
                token_symbol: "tAAPL".into(),
                network: net.name.to_string(),
                client: SimClient::ClientExternalAccountId(client.to_string()),
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
            network: net.name.clone(),
            qty: Qty::parse_positive(qty).unwrap(),
            vault: net.vault,
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
        self.store
            .confirm_issuance(&trid, &irid, Journal::Completed, None, 1_800_000_000_000)
            .unwrap();
        irid
    }

    /// Passes on both networks and a block on each, `n` times, a second of paused time apart.
    async fn run(&self, n: usize) {
        for _ in 0..n {
            let _ = self.base.looping.pass().await;
            let _ = self.eth.looping.pass().await;
            settle().await;
            self.base.node.mine();
            self.eth.node.mine();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Passes and blocks on `net` alone (the other network is left as it is).
    async fn run_only(&self, net: &Net, n: usize) {
        for _ in 0..n {
            let _ = net.looping.pass().await;
            settle().await;
            net.node.mine();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn acked(&self, irid: &IssuerRequestId) -> bool {
        matches!(
            self.store.mint(irid).unwrap().unwrap().intent.callback,
            Callback::Acked { .. }
        )
    }
}

/// Tagged deposits for `irid` on `net`'s chain.
fn deposits_for(net: &Net, irid: &IssuerRequestId) -> usize {
    net.node
        .logs(net.vault)
        .iter()
        .filter(|l| match &l.event {
            VaultEvent::Deposit(d) => reconciler::meta::decode(&d.receiptInformation)
                .is_ok_and(|info| info.issuer_request_id == irid.as_str()),
            _ => false,
        })
        .count()
}

fn withdrawals(net: &Net) -> usize {
    net.node
        .logs(net.vault)
        .iter()
        .filter(|l| matches!(l.event, VaultEvent::Withdraw(_)))
        .count()
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

#[tokio::test(start_paused = true)]
async fn mints_and_redemptions_on_two_networks_each_happen_once_on_their_own_chain() {
    let rig = Rig::new();
    assert_eq!(
        rig.base.vault, rig.eth.vault,
        "the same deployer and nonce give the same vault address on both chains"
    );
    let on_base = rig.issue_confirmed(&rig.base, "tr-base", "2");
    let on_eth = rig.issue_confirmed(&rig.eth, "tr-eth", "3");
    rig.run(4).await;

    assert_eq!(deposits_for(&rig.base, &on_base), 1);
    assert_eq!(
        deposits_for(&rig.base, &on_eth),
        0,
        "nothing of ethereum's on base"
    );
    assert_eq!(deposits_for(&rig.eth, &on_eth), 1);
    assert_eq!(
        deposits_for(&rig.eth, &on_base),
        0,
        "nothing of base's on ethereum"
    );
    assert_eq!(
        rig.base.node.balance(rig.base.vault, rig.ap_wallet),
        shares(2)
    );
    assert_eq!(
        rig.eth.node.balance(rig.eth.vault, rig.ap_wallet),
        shares(3)
    );
    assert!(rig.acked(&on_base) && rig.acked(&on_eth));
    assert_eq!(rig.sim.mint_callback_count("tr-base"), 1);
    assert_eq!(rig.sim.mint_callback_count("tr-eth"), 1);
    // Each chain's first transaction is its own nonce 0.
    let tx_base = rig
        .store
        .tx(&rig.base.name, 0)
        .unwrap()
        .expect("base nonce 0");
    let tx_eth = rig
        .store
        .tx(&rig.eth.name, 0)
        .unwrap()
        .expect("ethereum nonce 0");
    assert_ne!(tx_base.variants[0].hash, tx_eth.variants[0].hash);

    // The AP sends shares back on both chains: two redemptions, each requested with its network.
    let back_base = rig
        .base
        .node
        .transfer(rig.base.vault, rig.ap_wallet, rig.bot(), shares(1));
    let back_eth = rig
        .eth
        .node
        .transfer(rig.eth.vault, rig.ap_wallet, rig.bot(), shares(2));
    rig.run(8).await;
    for (net, hash, left) in [(&rig.base, back_base, 1), (&rig.eth, back_eth, 1)] {
        let id = IssuerRequestId::for_redemption(hash, 0);
        let redemption = rig.store.redemption(&id).unwrap().expect("detected");
        assert_eq!(redemption.network, net.name);
        assert!(
            matches!(redemption.state, RedemptionState::Burned { .. }),
            "{}: {:?}",
            net.name,
            redemption.state
        );
        assert_eq!(withdrawals(net), 1, "{}: burned once", net.name);
        assert_eq!(net.node.supply(net.vault), shares(left), "{}", net.name);
    }
    let calls = rig.sim.snapshot().redeem_calls;
    let mut networks: Vec<_> = calls
        .iter()
        .filter(|c| c.status == 200)
        .map(|c| c.body["network"].as_str().unwrap_or_default().to_owned())
        .collect();
    networks.sort();
    networks.dedup();
    assert_eq!(networks, ["base", "ethereum"], "{calls:?}");

    rig.run(10).await;
    assert_eq!(
        deposits_for(&rig.base, &on_base),
        1,
        "still once after ten more passes"
    );
    assert_eq!(deposits_for(&rig.eth, &on_eth), 1);
    assert_eq!(withdrawals(&rig.base) + withdrawals(&rig.eth), 2);
}

#[tokio::test(start_paused = true)]
async fn one_network_down_holds_back_nothing_on_the_other() {
    let rig = Rig::new();
    rig.base.node.faults(|f| f.down = true);
    let on_base = rig.issue_confirmed(&rig.base, "tr-base", "1");
    let on_eth = rig.issue_confirmed(&rig.eth, "tr-eth", "1");
    rig.run(3).await;
    assert!(
        rig.acked(&on_eth),
        "ethereum minted and called back while base is down"
    );
    assert_eq!(deposits_for(&rig.eth, &on_eth), 1);
    assert_eq!(deposits_for(&rig.base, &on_base), 0);
    assert!(!rig.acked(&on_base));

    rig.base.node.faults(|f| f.down = false);
    rig.run(4).await;
    assert!(rig.acked(&on_base), "base catches up when its node is back");
    assert_eq!(deposits_for(&rig.base, &on_base), 1);
    assert_eq!(deposits_for(&rig.eth, &on_eth), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reorg_on_one_network_re_observes_only_that_network() {
    let rig = Rig::new();
    let on_base = rig.issue_confirmed(&rig.base, "tr-base", "1");
    let on_eth = rig.issue_confirmed(&rig.eth, "tr-eth", "1");
    rig.run(4).await;
    assert!(rig.acked(&on_base) && rig.acked(&on_eth));
    let eth_hashes = rig.store.block_hashes(&rig.eth.name).unwrap();
    assert!(!eth_hashes.is_empty());

    // Base reorgs deeper than its deposit, keeping the transactions (they are mined again).
    rig.base.node.reorg(5, true);
    rig.run_only(&rig.base, 4).await;
    assert_eq!(
        rig.store.block_hashes(&rig.eth.name).unwrap(),
        eth_hashes,
        "ethereum's reorg window is its own: base's reorg leaves it as it was"
    );
    // The vault has the same address on both chains, so ethereum's observations on it were
    // dropped with base's and its cursor pulled back: one ethereum pass scans them again.
    let _ = rig.eth.looping.pass().await;
    settle().await;
    assert!(
        rig.store
            .deposits()
            .unwrap()
            .iter()
            .any(|d| d.issuer_request_id == on_eth),
        "ethereum's deposit observed again"
    );
    rig.run(6).await;
    assert_eq!(
        deposits_for(&rig.base, &on_base),
        1,
        "base minted once across its reorg"
    );
    assert_eq!(deposits_for(&rig.eth, &on_eth), 1, "ethereum untouched");
    assert_eq!(rig.sim.mint_callback_count("tr-base"), 1);
    assert_eq!(rig.sim.mint_callback_count("tr-eth"), 1);
}
