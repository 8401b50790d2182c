//! Observe: the head, reorgs, our transactions, tagged deposits; then the world the plan sees.

use super::crash::{maybe_crash, CrashPoint};
use super::{PassError, Reconciler};
use crate::chain::Chain;
use crate::store::Store;
use reconciler::{TrackedTx, TxStatus, World};
use std::collections::BTreeSet;

pub async fn observe<B>(r: &Reconciler<B>) -> Result<World, PassError> {
    let store = r.store.as_ref();
    let chain = &r.chain;
    let head = chain.head().await?;
    detect_reorg(store, chain).await?;

    // Nonce before receipts: a variant mined after the nonce was read still shows its receipt, so
    // a nonce is never taken for "someone else's" while our own transaction used it.
    let unsettled = store.unsettled_txs()?;
    let mut txs = Vec::with_capacity(unsettled.len());
    if !unsettled.is_empty() {
        let nonce_latest = chain.nonce_latest().await?;
        for tx in unsettled {
            let mut status = None;
            for variant in tx.variants.iter().rev() {
                if let Some((block_number, success)) = chain.receipt(variant.hash).await? {
                    status = Some(TxStatus::Mined { block_number, success });
                    break;
                }
            }
            let status = match status {
                Some(s) => s,
                None if nonce_latest > tx.nonce => TxStatus::NonceTaken,
                None => {
                    let signed_at = tx.variants.last().map_or(head, |v| v.signed_at_block);
                    TxStatus::Pending { age_blocks: head.saturating_sub(signed_at) }
                }
            };
            txs.push(TrackedTx { nonce: tx.nonce, purpose: tx.purpose.clone(), status });
        }
    }

    // Tagged deposits after our transactions, so one mined in between is seen as a deposit.
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
        let hashes = match chain.block_hash(head).await? {
            Some(hash) => vec![(head, hash)],
            None => Vec::new(),
        };
        store.advance(asset.vault, head, ours, hashes)?;
    }

    let all = store.all_mints()?;
    let known: BTreeSet<_> = all.iter().map(|m| m.intent.issuer_request_id.clone()).collect();
    let mints: Vec<_> = store.active_mints()?.into_iter().map(|m| m.intent).collect();
    let active: BTreeSet<_> = mints.iter().map(|m| m.issuer_request_id.clone()).collect();
    let deposits = store
        .deposits()?
        .into_iter()
        .filter(|d| active.contains(&d.issuer_request_id) || !known.contains(&d.issuer_request_id))
        .collect();
    Ok(World { head_block: head, mints, deposits, txs })
}

/// Compares the newest block hash we recorded with the chain's; on a mismatch walks back to the
/// newest block that still matches and forgets everything above it, so it is scanned again.
async fn detect_reorg(store: &dyn Store, chain: &Chain) -> Result<(), PassError> {
    let hashes = store.block_hashes()?;
    let Some(&(newest, newest_hash)) = hashes.last() else { return Ok(()) };
    if chain.block_hash(newest).await? == Some(newest_hash) {
        return Ok(());
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
