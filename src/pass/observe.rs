//! Observe: the head, reorgs, our transactions, tagged deposits; then the world the plan sees.

use super::alpaca_jobs::{self, AfterJob};
use super::crash::{maybe_crash, CrashPoint};
use super::{PassError, ReconcileLoop};
use crate::alpaca::Broker;
use crate::chain::{Chain, ChainError};
use crate::store::{AccountKey, Scan, Store};
use alloy::primitives::{Address, U256};
use reconciler::{
    AlpacaView, IssuerRequestId, ObservedBurn, ObservedDeposit, Qty, ReceiptBalance, Redemption,
    RedemptionState, TrackedTx, TxStatus, World,
};
use std::collections::{BTreeSet, HashSet};

pub async fn observe<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
) -> Result<World, PassError> {
    let store = r.store.as_ref();
    let chain = &r.chain;
    let head = chain.head().await?;
    // The head's hash is fixed before any scan and checked after: logs from a block replaced
    // while we read would otherwise be recorded beside the new block's hash and never re-checked.
    // Reorg detection compares stored blocks with the chain's: independent of it, side by side.
    let (head_block, ()) = tokio::try_join!(
        async {
            chain
                .block_head(head)
                .await?
                .ok_or(PassError::from(ChainError::NodeBehind { block: head }))
        },
        detect_reorg(store, &r.network, chain),
    )?;
    let head_hash = head_block.hash;
    // This loop's network alone: another network's assets are another loop's, on another chain.
    let assets: Vec<_> = store
        .assets()?
        .into_iter()
        .filter(|a| a.network == r.network)
        .collect();
    let our_vaults: BTreeSet<_> = assets.iter().map(|a| a.vault).collect();

    // Our transactions' statuses and the vaults' logs go out side by side: both stop at `head`
    // (a receipt from a later block counts as pending, a log query ends at `head`), `head`'s hash
    // is checked after both, and a deposit or burn our receipts show is recorded below even if
    // a log query missed it; neither needs the other's answer first.
    let ((txs, mut receipt_deposits, mut receipt_burns), mut scans) =
        tokio::try_join!(our_transactions(r, head), scan_vaults(r, &assets, head))?;
    if chain.block_hash(head).await? != Some(head_hash) {
        return Err(ChainError::HeadChanged { block: head }.into());
    }
    // What our own receipts showed is recorded even if a log query missed it: with its vault's
    // scan, in the same commit, where that vault was scanned this pass.
    // A log both showed is written once.
    for (vault, scan) in &mut scans {
        move_new_logs(*vault, &mut receipt_deposits, &mut scan.deposits, |d| {
            (d.vault, d.tx_hash, d.log_index)
        });
        move_new_logs(*vault, &mut receipt_burns, &mut scan.burns, |b| {
            (b.vault, b.tx_hash, b.log_index)
        });
    }
    if !receipt_deposits.is_empty() || !receipt_burns.is_empty() {
        store.record_receipts(receipt_deposits, receipt_burns)?;
    }
    for (vault, scan) in scans {
        store.advance(&r.network, vault, head, scan, vec![(head, head_hash)])?;
        crate::metrics::metrics().scanned(&format!("{vault:#x}"), head, head);
    }

    // One snapshot of the live items, through the store's indexes: what it costs follows what is
    // in flight, not the history.
    let view = scoped(store.pass_view()?, &r.network, &our_vaults);
    let redemptions = view.redemptions;
    let burns = view.burns;
    let alpaca = alpaca_views(r, &redemptions);
    // Receipt balances after our transactions' statuses: a burn mined in between is counted both
    // as in flight and as spent, which can only make the plan wait, never over-spend.
    // Only a journaled redemption needs them; reading every receipt id each pass would not scale.
    let mut receipts = Vec::new();
    let burning: BTreeSet<_> = redemptions
        .iter()
        .filter(|r| matches!(r.state, RedemptionState::Journaled { .. }))
        .map(|r| r.vault)
        .collect();
    let deposits_all = if burning.is_empty() {
        Vec::new()
    } else {
        store.deposits()?
    };
    for asset in assets.iter().filter(|a| burning.contains(&a.vault)) {
        let mut ids: Vec<U256> = deposits_all
            .iter()
            .filter(|d| d.vault == asset.vault && d.owner == chain.bot())
            .map(|d| d.receipt_id)
            .collect();
        ids.sort();
        ids.dedup();
        let balances = chain.receipt_balances(asset.receipt, &ids).await?;
        receipts.extend(
            ids.into_iter()
                .zip(balances)
                .filter(|(_, balance)| !balance.is_zero())
                .map(|(id, balance)| ReceiptBalance {
                    vault: asset.vault,
                    id,
                    balance,
                }),
        );
    }

    // Stuck: an active mint with a problem (a finished one needs nobody).
    let stuck_mints = view.mints.iter().filter(|m| m.problem.is_some()).count();
    let mints = view.mints.into_iter().map(|m| m.intent).collect();
    let deposits = view.deposits;
    let world = World {
        head_block: head,
        head_gas_room: Some(head_block.gas_room),
        mints,
        deposits,
        txs,
        redemptions,
        burns,
        alpaca,
        receipts,
        now_ms: r.polls.now_ms(),
        alpaca_due_at_ms: r.polls.due_times(),
    };
    record_metrics(r, &world, &assets, stuck_mints);
    Ok(world)
}

/// Moves `vault`'s logs from `receipts` into `scanned`, leaving out those `scanned` already has
/// (`log` names an item's vault, transaction and log index).
fn move_new_logs<T>(
    vault: Address,
    receipts: &mut Vec<T>,
    scanned: &mut Vec<T>,
    log: impl Fn(&T) -> (Address, alloy::primitives::B256, u64),
) {
    let (ours, others): (Vec<_>, Vec<_>) = std::mem::take(receipts)
        .into_iter()
        .partition(|item| log(item).0 == vault);
    *receipts = others;
    let seen: HashSet<_> = scanned
        .iter()
        .map(|item| {
            let (_, tx, index) = log(item);
            (tx, index)
        })
        .collect();
    scanned.extend(ours.into_iter().filter(|item| {
        let (_, tx, index) = log(item);
        !seen.contains(&(tx, index))
    }));
}

/// Our unsettled transactions' statuses as of `head`, with the deposits and burns their receipts
/// show.
async fn our_transactions<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
) -> Result<(Vec<TrackedTx>, Vec<ObservedDeposit>, Vec<ObservedBurn>), PassError> {
    let store = r.store.as_ref();
    let chain = &r.chain;
    // Nonce before receipts: a variant mined after the nonce was read still shows its receipt, so
    // a nonce is never taken for "someone else's" while our own transaction used it. The nonce
    // is read one block below the confirmation depth, so a reorg at the tip cannot make our own
    // transaction look displaced (and its action be sent again under another nonce).
    let unsettled = store.unsettled_txs(&r.network)?;
    let mut txs = Vec::with_capacity(unsettled.len());
    let mut receipt_deposits = Vec::new();
    let mut receipt_burns = Vec::new();
    if !unsettled.is_empty() {
        // A nonce at or above the head's count is mined in no block up to the head: its
        // receipts are not asked for (a block's worth of transactions queued behind a full
        // block cost a receipt call each, every pass). Every nonce below the settled count is
        // asked for even so: a node whose head count lags it (backends that disagree) must
        // never make our own mined transaction look displaced.
        let (settled_nonce, mined_nonce) = tokio::try_join!(
            chain.nonce_at(head.saturating_sub(r.config.policy.confirmations_min)),
            chain.nonce_at(head),
        )?;
        let asked_below = mined_nonce.max(settled_nonce);
        let hashes: Vec<_> = unsettled
            .iter()
            .filter(|tx| tx.nonce < asked_below)
            .flat_map(|tx| tx.variants.iter().map(|v| v.hash))
            .collect();
        let mut mined_by_hash: std::collections::HashMap<_, _> = hashes
            .iter()
            .copied()
            .zip(chain.mined_many(&hashes).await?)
            .collect();
        for tx in unsettled {
            let mut status = None;
            for variant in tx.variants.iter().rev() {
                if let Some(mined) = mined_by_hash.remove(&variant.hash).flatten() {
                    if mined.block_number > head {
                        // Mined after the head was read: its block's hash is not checked this
                        // pass, so neither it nor its logs count yet.
                        status = Some(TxStatus::Pending { age_blocks: 0 });
                        break;
                    }
                    status = Some(TxStatus::Mined {
                        block_number: mined.block_number,
                        success: mined.success,
                        hash: variant.hash,
                    });
                    receipt_deposits.extend(mined.deposits);
                    receipt_burns.extend(mined.burns);
                    break;
                }
            }
            let status = match status {
                Some(s) => s,
                None if settled_nonce > tx.nonce => TxStatus::NonceTaken,
                None => {
                    let signed_at = tx.variants.last().map_or(head, |v| v.signed_at_block);
                    TxStatus::Pending {
                        age_blocks: head.saturating_sub(signed_at),
                    }
                }
            };
            txs.push(TrackedTx {
                nonce: tx.nonce,
                purpose: tx.purpose.clone(),
                status,
                gas_limit: Some(tx.gas_limit),
            });
        }
    }

    Ok((txs, receipt_deposits, receipt_burns))
}

/// Each asset's vault scanned from its cursor to `head`: our tagged deposits, burns and the
/// transfers to the redemption wallet (as detected redemptions).
async fn scan_vaults<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    assets: &[crate::store::Asset],
    head: u64,
) -> Result<Vec<(Address, Scan)>, PassError> {
    let store = r.store.as_ref();
    let chain = &r.chain;
    let mut scans = Vec::new();
    for asset in assets {
        let from = match store.cursor(&r.network, asset.vault)? {
            Some(cursor) => cursor + 1,
            None => asset.deploy_block,
        };
        if from > head {
            continue;
        }
        // The three log queries of the range go out side by side: one round trip, not three.
        let ((ours, foreign), burns, transfers) = tokio::try_join!(
            chain.scan_deposits(asset.vault, from, head),
            chain.scan_burns(asset.vault, from, head),
            chain.scan_transfers_to_bot(asset.vault, from, head),
        )?;
        for f in foreign {
            tracing::warn!(vault = %f.vault, tx = %f.tx_hash, block = f.block_number, assets = %f.assets,
                detail = %f.detail, "deposit on our vault without our tag: reported as an anomaly");
        }
        if !ours.is_empty() {
            maybe_crash(r.config.crash_at, CrashPoint::AfterDepositSeen);
        }
        if !burns.is_empty() {
            maybe_crash(r.config.crash_at, CrashPoint::AfterBurnSeen);
        }
        let mut redemptions = Vec::new();
        for transfer in transfers {
            let crate::chain::TransferIn {
                from: sender,
                value,
                block_number,
                tx_hash,
                index_in_tx: log_index,
            } = transfer;
            let account = store
                .account(AccountKey::Wallet(sender))?
                .filter(crate::store::Account::linked);
            let client_id = account.as_ref().map(|a| a.client_id.clone());
            let client_account_id = account.and_then(|a| a.alpaca_account_id);
            redemptions.push(Redemption {
                id: IssuerRequestId::for_redemption(tx_hash, log_index),
                vault: asset.vault,
                underlying: asset.underlying.clone(),
                token: asset.token.clone(),
                network: asset.network.clone(),
                sender,
                client_id,
                client_account_id,
                qty: Qty::from_units(value),
                tx_hash,
                log_index,
                block_number,
                state: RedemptionState::Detected,
                failed_attempts: 0,
            });
        }
        scans.push((
            asset.vault,
            Scan {
                deposits: ours,
                redemptions,
                burns,
            },
        ));
    }
    Ok(scans)
}

/// The part of the store's pass view that is `network`'s: its mints and redemptions, and the
/// deposits and burns on its vaults that no other network's item claims (a vault at the same
/// address on two chains is two vaults).
fn scoped(
    view: crate::store::PassView,
    network: &reconciler::Network,
    vaults: &BTreeSet<alloy::primitives::Address>,
) -> crate::store::PassView {
    let (mints, other_mints): (Vec<_>, Vec<_>) = view
        .mints
        .into_iter()
        .partition(|m| m.intent.network == *network);
    let (redemptions, other_redemptions): (Vec<_>, Vec<_>) = view
        .redemptions
        .into_iter()
        .partition(|r| r.network == *network);
    let other_mints: BTreeSet<_> = other_mints
        .into_iter()
        .map(|m| m.intent.issuer_request_id)
        .collect();
    let other_redemptions: BTreeSet<_> = other_redemptions.into_iter().map(|r| r.id).collect();
    crate::store::PassView {
        deposits: view
            .deposits
            .into_iter()
            .filter(|d| vaults.contains(&d.vault) && !other_mints.contains(&d.issuer_request_id))
            .collect(),
        burns: view
            .burns
            .into_iter()
            .filter(|b| vaults.contains(&b.vault) && !other_redemptions.contains(&b.redemption_id))
            .collect(),
        mints,
        redemptions,
    }
}

/// What this pass saw, for `/metrics`: the head, our transactions, items by state and stuck, and
/// (every [`SUPPLY_EVERY`], read off the pass) the supply of each of `assets` (this network's, as
/// the pass read them).
fn record_metrics<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    world: &World,
    assets: &[crate::store::Asset],
    stuck_mints: usize,
) {
    use crate::metrics::{metrics, AssetLabels, KindLabels, Metrics};
    use reconciler::{Callback, Journal};
    let m = metrics();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.chain_head
        .set(i64::try_from(world.head_block).unwrap_or(i64::MAX));
    let unsettled = world
        .txs
        .iter()
        .filter(|t| !matches!(t.status, TxStatus::NonceTaken));
    m.txs_in_flight.set(count(unsettled.clone().count()));
    let oldest = unsettled
        .filter_map(|t| match t.status {
            TxStatus::Pending { age_blocks } => Some(age_blocks),
            TxStatus::Mined { block_number, .. } => {
                Some(world.head_block.saturating_sub(block_number))
            }
            TxStatus::NonceTaken => None,
        })
        .max()
        .unwrap_or(0);
    m.tx_oldest_age
        .set(i64::try_from(oldest).unwrap_or(i64::MAX));

    let deposited: BTreeSet<_> = world
        .deposits
        .iter()
        .map(|d| &d.issuer_request_id)
        .collect();
    let mut mints = [
        ("pending_journal", 0i64),
        ("to_mint", 0),
        ("awaiting_callback", 0),
        ("callback_refused", 0),
    ];
    for intent in &world.mints {
        let slot = match (&intent.journal, &intent.callback) {
            (_, Callback::Refused { .. }) => 3,
            (Journal::Pending, _) => 0,
            _ if deposited.contains(&intent.issuer_request_id) => 2,
            _ => 1,
        };
        mints[slot].1 += 1;
    }
    Metrics::set_states(&m.mints, &mints);
    let mut redemptions = [
        ("detected", 0i64),
        ("requesting", 0),
        ("requested", 0),
        ("journaled", 0),
        ("flagged", 0),
    ];
    let mut flagged = 0;
    for redemption in &world.redemptions {
        let slot = match redemption.state {
            RedemptionState::Detected => 0,
            RedemptionState::Requesting => 1,
            RedemptionState::Requested { .. } => 2,
            RedemptionState::Journaled { .. } => 3,
            RedemptionState::Flagged { .. } => {
                flagged += 1;
                4
            }
            RedemptionState::Burned { .. } | RedemptionState::Returned { .. } => continue,
        };
        redemptions[slot].1 += 1;
    }
    Metrics::set_states(&m.redemptions, &redemptions);
    for (kind, n) in [
        ("mint", stuck_mints),
        ("redemption", flagged),
        ("transaction_stuck", world.txs.iter().filter(|t| matches!(t.status, TxStatus::Pending { age_blocks } if age_blocks >= r.config.policy.replace_after_blocks)).count()),
    ] {
        m.stuck
            .get_or_create(&KindLabels { kind: kind.to_owned() })
            .set(count(n));
    }

    let Some(done) = supply_due(&r.network) else {
        return;
    };
    // Off the pass: one read per asset, a few at a time, never awaited here (with many assets or
    // a far node they would hold every callback of the pass behind a dashboard figure).
    let chain = r.chain.clone();
    let assets = assets.to_vec();
    tokio::spawn(async move {
        use futures::StreamExt;
        let m = metrics();
        let mut reads = futures::stream::iter(assets)
            .map(|asset| {
                let chain = chain.clone();
                async move { (chain.total_supply(asset.vault).await, asset) }
            })
            .buffer_unordered(SUPPLY_READS_AT_ONCE);
        while let Some((read, asset)) = reads.next().await {
            match read {
                Ok(units) => {
                    #[allow(clippy::cast_precision_loss)] // a dashboard figure; the report is exact
                    let shares = f64::from(units) / 1e18;
                    m.supply
                        .get_or_create(&AssetLabels {
                            underlying: asset.underlying.to_string(),
                            network: asset.network.to_string(),
                        })
                        .set(shares);
                }
                Err(e) => {
                    tracing::debug!(vault = %asset.vault, error = %e, "supply for metrics not read");
                }
            }
        }
        drop(done);
    });
}

/// Most supply reads for `/metrics` in flight at once.
const SUPPLY_READS_AT_ONCE: usize = 8;

/// How often the vaults' supply is read for `/metrics`.
const SUPPLY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `network`'s supply is due again: at most every [`SUPPLY_EVERY`] across passes (each
/// network's loop on its own clock, so one never starves another's figure), and not while the
/// last reads are still out. `Some` holds the network's slot until dropped.
fn supply_due(network: &reconciler::Network) -> Option<SupplySlot> {
    let mut last = SUPPLY_LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let due = last
        .get(network)
        .is_none_or(|(at, reading)| !reading && at.elapsed() >= SUPPLY_EVERY);
    if !due {
        return None;
    }
    last.insert(network.clone(), (tokio::time::Instant::now(), true));
    Some(SupplySlot(network.clone()))
}

type SupplyLast = std::collections::BTreeMap<reconciler::Network, (tokio::time::Instant, bool)>;
/// When each network's supply reads last started, and whether they are still out.
static SUPPLY_LAST: std::sync::Mutex<SupplyLast> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// A network's supply reads in flight; dropped (finished, failed or cancelled), the next are due
/// [`SUPPLY_EVERY`] after these started.
struct SupplySlot(reconciler::Network);

impl Drop for SupplySlot {
    fn drop(&mut self) {
        let mut last = SUPPLY_LAST
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, reading)) = last.get_mut(&self.0) {
            *reading = false;
        }
    }
}

/// The poll answers Alpaca jobs gathered since the last pass, for redemptions still waiting on
/// them; and a poll job started for each requested redemption that is due. Never waits on Alpaca:
/// an answer that is not in yet is simply absent, and the plan waits.
fn alpaca_views<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    redemptions: &[Redemption],
) -> Vec<AlpacaView> {
    let mut views = r.alpaca.take_views();
    views.retain(|v| {
        redemptions.iter().any(|x| {
            x.id == v.redemption_id && matches!(x.state, RedemptionState::Requested { .. })
        })
    });
    for redemption in redemptions {
        let RedemptionState::Requested {
            tokenization_request_id,
        } = &redemption.state
        else {
            continue;
        };
        if views.iter().any(|v| v.redemption_id == redemption.id) || !r.polls.due(&redemption.id) {
            continue;
        }
        let ctx = r.job_ctx();
        let work = r.alpaca.clone();
        let (redemption, trid) = (redemption.clone(), tokenization_request_id.clone());
        r.alpaca.submit(
            &redemption.id.clone(),
            "poll",
            AfterJob::Pass,
            &r.polls,
            async move { alpaca_jobs::poll(&ctx, &work, &redemption, &trid).await },
        );
    }
    views
}

/// Compares the newest block hash we recorded with the chain's; on a mismatch walks back to the
/// newest block that still matches and forgets everything above it, so it is scanned again.
async fn detect_reorg(
    store: &dyn Store,
    network: &reconciler::Network,
    chain: &Chain,
) -> Result<(), PassError> {
    let hashes = store.block_hashes(network)?;
    let Some(&(newest, newest_hash)) = hashes.last() else {
        return Ok(());
    };
    match chain.block_hash(newest).await? {
        Some(hash) if hash == newest_hash => return Ok(()),
        Some(_) => {}
        // A node that does not have a block we saw is behind, not reorged: wait for it.
        None => return Err(ChainError::NodeBehind { block: newest }.into()),
    }
    let mut fork = hashes.first().map_or(newest, |(n, _)| *n);
    for &(number, hash) in hashes.iter().rev().skip(1) {
        if chain.block_hash(number).await? == Some(hash) {
            fork = number + 1;
            break;
        }
    }
    tracing::error!(
        %network,
        newest_recorded = newest,
        re_observe_from = fork,
        "REORG: a recorded block hash no longer matches the chain; forgetting observations from the fork and scanning again"
    );
    store.rewind(network, fork)?;
    Ok(())
}
