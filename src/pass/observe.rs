//! Observe: the head, reorgs, our transactions, tagged deposits; then the world the plan sees.

use super::crash::{maybe_crash, CrashPoint};
use super::{alpaca_jobs, PassError, Reconciler};
use crate::alpaca::Broker;
use crate::chain::{Chain, ChainError};
use crate::store::Store;
use crate::store::{MintRecord, Scan};
use alloy::primitives::U256;
use reconciler::{
    AlpacaView, IssuerRequestId, Qty, ReceiptBalance, Redemption, RedemptionState, TrackedTx,
    TxStatus, World,
};
use std::collections::BTreeSet;

pub async fn observe<B: Broker + Clone + 'static>(r: &Reconciler<B>) -> Result<World, PassError> {
    let store = r.store.as_ref();
    let chain = &r.chain;
    let head = chain.head().await?;
    // The head's hash is fixed before any scan and checked after: logs from a block replaced
    // while we read would otherwise be recorded beside the new block's hash and never re-checked.
    let head_hash = chain.block_hash(head).await?.ok_or(ChainError::Rpc {
        call: "eth_getBlockByNumber",
        detail: format!("head block {head} not found"),
    })?;
    detect_reorg(store, chain).await?;

    // Nonce before receipts: a variant mined after the nonce was read still shows its receipt, so
    // a nonce is never taken for "someone else's" while our own transaction used it. The nonce
    // is read one block below the confirmation depth, so a reorg at the tip cannot make our own
    // transaction look displaced (and its action be sent again under another nonce).
    let unsettled = store.unsettled_txs()?;
    let mut txs = Vec::with_capacity(unsettled.len());
    let mut receipt_deposits = Vec::new();
    let mut receipt_burns = Vec::new();
    if !unsettled.is_empty() {
        let settled_nonce = chain
            .nonce_at(head.saturating_sub(r.config.policy.confirmations_min))
            .await?;
        for tx in unsettled {
            let mut status = None;
            for variant in tx.variants.iter().rev() {
                if let Some(mined) = chain.mined(variant.hash).await? {
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
            });
        }
    }

    // Tagged deposits after our transactions, so one mined in between is seen as a deposit.
    let mut scans = Vec::new();
    for asset in store.assets()? {
        let from = match store.cursor(asset.vault)? {
            Some(cursor) => cursor + 1,
            None => asset.deploy_block,
        };
        if from > head {
            continue;
        }
        let (ours, foreign) = chain.scan_deposits(asset.vault, from, head).await?;
        for f in foreign {
            tracing::warn!(vault = %f.vault, tx = %f.tx_hash, block = f.block_number, assets = %f.assets,
                detail = %f.detail, "deposit on our vault without our tag: reported as an anomaly");
        }
        if !ours.is_empty() {
            maybe_crash(r.config.crash_at, CrashPoint::AfterDepositSeen);
        }
        let burns = chain.scan_burns(asset.vault, from, head).await?;
        if !burns.is_empty() {
            maybe_crash(r.config.crash_at, CrashPoint::AfterBurnSeen);
        }
        let mut redemptions = Vec::new();
        for (sender, value, block_number, tx_hash, log_index) in
            chain.scan_transfers_to_bot(asset.vault, from, head).await?
        {
            let account = match store.wallet_owner(sender)? {
                Some(client) => store
                    .account(&client)?
                    .filter(crate::store::Account::linked),
                None => None,
            };
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
    if chain.block_hash(head).await? != Some(head_hash) {
        return Err(ChainError::Rpc {
            call: "eth_getBlockByNumber",
            detail: format!("block {head} changed while it was scanned; scanning again next pass"),
        }
        .into());
    }
    // What our own receipts showed is recorded even if a log query missed it.
    if !receipt_deposits.is_empty() {
        store.put_deposits(receipt_deposits)?;
    }
    if !receipt_burns.is_empty() {
        store.put_burns(receipt_burns)?;
    }
    for (vault, scan) in scans {
        store.advance(vault, head, scan, vec![(head, head_hash)])?;
    }

    let redemptions: Vec<Redemption> = store
        .redemptions()?
        .into_iter()
        .filter(|r| !r.state.is_final())
        .collect();
    let live: BTreeSet<_> = redemptions.iter().map(|r| r.id.clone()).collect();
    let burns = store
        .burns()?
        .into_iter()
        .filter(|b| live.contains(&b.redemption_id))
        .collect();
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
    for asset in store
        .assets()?
        .into_iter()
        .filter(|a| burning.contains(&a.vault))
    {
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

    let all = store.all_mints()?;
    let known: BTreeSet<_> = all
        .iter()
        .map(|m| m.intent.issuer_request_id.clone())
        .collect();
    // One read of the mints serves both sets (each pass decodes them all: O(history)).
    let mints: Vec<_> = all
        .into_iter()
        .filter(MintRecord::is_active)
        .map(|m| m.intent)
        .collect();
    let active: BTreeSet<_> = mints.iter().map(|m| m.issuer_request_id.clone()).collect();
    let deposits = store
        .deposits()?
        .into_iter()
        .filter(|d| active.contains(&d.issuer_request_id) || !known.contains(&d.issuer_request_id))
        .collect();
    Ok(World {
        head_block: head,
        mints,
        deposits,
        txs,
        redemptions,
        burns,
        alpaca,
        receipts,
    })
}

/// The poll answers Alpaca jobs gathered since the last pass, for redemptions still waiting on
/// them; and a poll job started for each requested redemption that is due. Never waits on Alpaca:
/// an answer that is not in yet is simply absent, and the plan waits.
fn alpaca_views<B: Broker + Clone + 'static>(
    r: &Reconciler<B>,
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
        r.alpaca
            .submit(&redemption.id.clone(), "poll", &r.polls, async move {
                alpaca_jobs::poll(&ctx, &work, &redemption, &trid).await
            });
    }
    views
}

/// Compares the newest block hash we recorded with the chain's; on a mismatch walks back to the
/// newest block that still matches and forgets everything above it, so it is scanned again.
async fn detect_reorg(store: &dyn Store, chain: &Chain) -> Result<(), PassError> {
    let hashes = store.block_hashes()?;
    let Some(&(newest, newest_hash)) = hashes.last() else {
        return Ok(());
    };
    match chain.block_hash(newest).await? {
        Some(hash) if hash == newest_hash => return Ok(()),
        Some(_) => {}
        // A node that does not have a block we saw is behind, not reorged: wait for it.
        None => {
            return Err(ChainError::Rpc {
                call: "eth_getBlockByNumber",
                detail: format!("the node does not have block {newest} we saw; it is behind"),
            }
            .into())
        }
    }
    let mut fork = hashes.first().map_or(newest, |(n, _)| *n);
    for &(number, hash) in hashes.iter().rev().skip(1) {
        if chain.block_hash(number).await? == Some(hash) {
            fork = number + 1;
            break;
        }
    }
    tracing::error!(
        newest_recorded = newest,
        re_observe_from = fork,
        "REORG: a recorded block hash no longer matches the chain; forgetting observations from the fork and scanning again"
    );
    store.drop_observations_from(fork)?;
    Ok(())
}
