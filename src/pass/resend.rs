//! What happens to a transaction after it is sent: re-sent as it is, replaced at its nonce with
//! higher fees ([`reconciler::pacing::replacement`] decides them), and settled once mined or
//! displaced.

use super::{PassError, ReconcileLoop};
use crate::alpaca::Broker;
use crate::chain::{Chain, Fees};
use crate::store::{Settled, Store, TxVariant};
use reconciler::pacing::Replacement;
use reconciler::{IssuerRequestId, RedemptionState, TxPurpose, World};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Most re-sends in flight at once.
pub(super) const REBROADCASTS_AT_ONCE: usize = 16;

/// The head at which each pending nonce was last re-sent. A nonce is re-sent at most once per
/// block: a pass runs on every head and on every timer tick, and with a queue of full batches
/// behind a busy block every pass used to re-send each of them (a block of 470 mints left about
/// 40 transactions of 10 KB each re-sent five times a block). Memory only: empty at start-up
/// (which re-sends every unsettled transaction anyway) and in a new leader. Cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct Resent(Arc<Mutex<BTreeMap<u64, u64>>>);

impl Resent {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Of the nonces the plan would re-send at `head`, those not already re-sent at it. What
    /// the plan no longer re-sends (mined, replaced) is forgotten.
    pub(super) fn due(&self, head: u64, planned: &[u64]) -> Vec<u64> {
        let mut resent = self.lock();
        resent.retain(|nonce, _| planned.contains(nonce));
        planned
            .iter()
            .copied()
            .filter(|nonce| resent.get(nonce) != Some(&head))
            .collect()
    }

    /// `nonce` went out again at `head`.
    pub(super) fn record(&self, nonce: u64, head: u64) {
        self.lock().insert(nonce, head);
    }
}

/// Re-sends the stored bytes of this nonce's newest variant.
pub(super) async fn rebroadcast<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    nonce: u64,
) -> Result<(), PassError> {
    if let Some(tx) = r.store.tx(&r.network, nonce)? {
        if let Some(v) = tx.variants.last() {
            r.fence.check(&format!("broadcast {}", v.hash)).await?;
            r.chain.broadcast(&v.raw).await?;
            crate::metrics::metrics().txs_resent.inc();
        }
    }
    Ok(())
}

/// Re-signs a stuck nonce with fees at least 25% higher (nodes want 10%), same calldata.
pub(super) async fn replace<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    head: u64,
    nonce: u64,
) -> Result<(), PassError> {
    let Some(mut tx) = r.store.tx(&r.network, nonce)? else {
        return Ok(());
    };
    let Some(last) = tx.variants.last() else {
        return Ok(());
    };
    let market = r.chain.fees().await?;
    let cap = r.config.max_fee_per_gas_wei;
    let last_bid = Fees {
        max_fee_per_gas: last.max_fee_per_gas,
        max_priority_fee_per_gas: last.max_priority_fee_per_gas,
    };
    let fees = match reconciler::pacing::replacement(last_bid, market, cap) {
        Replacement::Bid(fees) => fees,
        // At the ceiling an operator decides; re-sending keeps it in the node's pool meanwhile.
        Replacement::ResendAtCap => {
            tracing::error!(
                nonce,
                max_fee = last.max_fee_per_gas,
                cap,
                "stuck transaction already at the fee cap; not replacing"
            );
            r.fence.check(&format!("broadcast {}", last.hash)).await?;
            return Ok(r.chain.broadcast(&last.raw).await?);
        }
        Replacement::ResendNoRoom => {
            tracing::error!(
                nonce,
                cap,
                "a replacement under the fee cap would not be accepted; re-sending"
            );
            r.fence.check(&format!("broadcast {}", last.hash)).await?;
            return Ok(r.chain.broadcast(&last.raw).await?);
        }
    };
    r.fence.check("sign").await?;
    let (hash, raw) = r
        .chain
        .sign(nonce, tx.to, tx.input.clone(), tx.gas_limit, fees)
        .await?;
    tracing::warn!(nonce, %hash, max_fee = fees.max_fee_per_gas, "replacing a stuck transaction at the same nonce");
    tx.variants.push(TxVariant {
        hash,
        raw: raw.clone(),
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        signed_at_block: head,
    });
    r.store.put_tx(&r.network, &tx)?;
    r.fence.check(&format!("broadcast {hash}")).await?;
    r.chain.broadcast(&raw).await?;
    Ok(())
}

/// Records the pass's settled transactions (mined and confirmed, or their nonce taken) in one
/// commit, after what each one's settlement implies elsewhere: a return recorded as done before
/// its transaction stops being looked at, so a crash between the two repeats the first.
pub(super) fn settle<B: Broker + Clone + 'static>(
    r: &ReconcileLoop<B>,
    settles: &[(u64, Vec<IssuerRequestId>)],
    world: &World,
) -> Result<(), PassError> {
    let mut records = Vec::with_capacity(settles.len());
    for (nonce, _) in settles {
        let Some(mut tx) = r.store.tx(&r.network, *nonce)? else {
            continue;
        };
        // The block, status and hash observed this pass: no second lookup that could disagree.
        let mined = world
            .txs
            .iter()
            .find(|t| t.nonce == *nonce)
            .and_then(|t| match t.status {
                reconciler::TxStatus::Mined {
                    block_number,
                    success,
                    hash,
                } => Some((block_number, success, hash)),
                _ => None,
            });
        let hash = mined.map(|(_, _, h)| h);
        tx.settled = Some(Settled {
            mined_block: mined.map(|(b, _, _)| b),
            hash,
            success: mined.is_some_and(|(_, s, _)| s),
        });
        if let (TxPurpose::Return { redemption_id, .. }, Some(hash), true) =
            (&tx.purpose, hash, mined.is_some_and(|(_, s, _)| s))
        {
            tracing::info!(redemption = %redemption_id, %hash, "tokens returned to the sender");
            r.store.update_redemption(
                redemption_id,
                Box::new(move |r| r.state = RedemptionState::Returned { tx_hash: hash }),
            )?;
        }
        records.push(tx);
    }
    r.store.put_txs(&r.network, &records)?;
    for (nonce, failed) in settles {
        for id in failed {
            let updated = r.store.update_mint(
                id,
                Box::new(|m| m.intent.failed_attempts = m.intent.failed_attempts.saturating_add(1)),
            )?;
            if let Some(record) = updated {
                tracing::warn!(issuer_request_id = %id, nonce, attempts = record.intent.failed_attempts,
                    "mint transaction settled without a Deposit for this request; it will be planned again");
            }
        }
    }
    Ok(())
}

/// After a restart, re-sends every stored unsettled transaction on `network` once: one may have been signed
/// and stored but never broadcast.
pub async fn rebroadcast_all(
    store: &dyn Store,
    network: &reconciler::Network,
    chain: &Chain,
    fence: &crate::ha::Fence,
) -> Result<(), PassError> {
    for tx in store.unsettled_txs(network)? {
        if let Some(v) = tx.variants.last() {
            fence.check(&format!("broadcast {}", v.hash)).await?;
            chain.broadcast(&v.raw).await?;
        }
    }
    Ok(())
}
