//! Write jobs of [`super::RedbStore`] that are more than a lookup: the reorg rewind and the
//! issuance with its refusal rules, each run inside one write transaction.

use super::records::{
    Account, Asset, IssuanceCheck, IssuanceOutcome, IssuanceRefusal, MintRecord, TxRecord,
};
use super::redb_index::{
    active_redemptions_in, drop_burns_from, drop_deposits_from, put_mint, put_tx,
    remove_redemption, vaults_on,
};
use super::redb_tables::{
    addr_key, asset_key, decode, get_json, ACCOUNTS, ASSETS, BLOCKS, CURSORS, MINTS, MINT_BY_TRID,
    TXS, WALLETS,
};
use super::StoreError;
use reconciler::{Network, RedemptionState};
use redb::{ReadableTable, WriteTransaction};
use std::collections::BTreeSet;

/// Forgets `network`'s observations and block hashes from `block_number` on and pulls its
/// cursors back below it, so the range is scanned again. Our transactions on it settled in those
/// blocks are tracked again: a reorg deeper than the confirmations must re-observe them, not plan
/// their actions anew. Another network is untouched, except that a vault at the same address
/// there (the same deployer and nonce on two chains) has its cursor pulled back too: its
/// observations share the dropped rows, so it scans them again rather than lose them.
pub(super) fn drop_from(
    txn: &WriteTransaction,
    network: &Network,
    block_number: u64,
) -> Result<(), StoreError> {
    let net = network.as_str();
    {
        let mut unsettled = Vec::new();
        {
            let txs = txn.open_table(TXS)?;
            for entry in txs.range((net, 0)..=(net, u64::MAX))? {
                let (k, v) = entry?;
                let mut tx: TxRecord = decode(&format!("{net}/{}", k.value().1), v.value())?;
                if tx
                    .settled
                    .as_ref()
                    .is_some_and(|s| s.mined_block.is_some_and(|b| b >= block_number))
                {
                    tx.settled = None;
                    unsettled.push(tx);
                }
            }
        }
        for tx in unsettled {
            put_tx(txn, network, &tx)?;
        }
    }
    let vaults = vaults_on(txn, network)?;
    drop_deposits_from(txn, block_number, &vaults)?;
    drop_burns_from(txn, block_number, &vaults)?;
    // A transfer in a dropped block that nothing was done for yet is forgotten and found again if
    // it is still on chain; one Alpaca already has is kept (and logged by the caller). Only an
    // active redemption can still be `Detected`. A record that does not decode stops the rewind:
    // forgetting it, or keeping it without knowing what it is, could both lose a redemption.
    for r in active_redemptions_in(txn)? {
        if r.network == *network
            && r.block_number >= block_number
            && r.state == RedemptionState::Detected
        {
            remove_redemption(txn, r.id.as_str())?;
        }
    }
    {
        let mut blocks = txn.open_table(BLOCKS)?;
        let numbers = blocks
            .range((net, block_number)..=(net, u64::MAX))?
            .map(|entry| entry.map(|(k, _)| k.value().1))
            .collect::<Result<Vec<u64>, _>>()?;
        for n in numbers {
            blocks.remove((net, n))?;
        }
    }
    let vault_keys: BTreeSet<String> = vaults.iter().map(|v| addr_key(*v)).collect();
    let mut cursors = txn.open_table(CURSORS)?;
    let mut moved = Vec::new();
    for entry in cursors.iter()? {
        let (k, v) = entry?;
        let (cursor_net, vault) = k.value();
        if (cursor_net == net || vault_keys.contains(vault)) && v.value() >= block_number {
            moved.push((
                (cursor_net.to_owned(), vault.to_owned()),
                block_number.saturating_sub(1),
            ));
        }
    }
    for ((cursor_net, vault), value) in moved {
        cursors.insert((cursor_net.as_str(), vault.as_str()), value)?;
    }
    Ok(())
}

/// Records an issuance unless its tokenization_request_id is taken: then a repeat or a conflict.
pub(super) fn issuance_job(
    txn: &WriteTransaction,
    record: &MintRecord,
    check: Option<&IssuanceCheck>,
) -> Result<IssuanceOutcome, StoreError> {
    let trid = record.intent.tokenization_request_id.as_str().to_owned();
    let existing = {
        let index = txn.open_table(MINT_BY_TRID)?;
        let found = index.get(trid.as_str())?.map(|v| v.value().to_owned());
        found
    };
    if let Some(irid) = existing {
        // An index entry pointing nowhere is an error, not a conflict: a 409 is final for Alpaca.
        let old: MintRecord = get_json(txn, MINTS, &irid)?.ok_or_else(|| StoreError::Decode {
            key: trid.clone(),
            detail: format!("the request id index points to no mint ({irid})"),
        })?;
        return Ok(if old.fingerprint == record.fingerprint {
            IssuanceOutcome::Repeat(old.intent.issuer_request_id)
        } else {
            IssuanceOutcome::Conflict
        });
    }
    if let Some(refusal) = check.map(|c| refused_in_txn(txn, c)).transpose()?.flatten() {
        return Ok(IssuanceOutcome::Refused(refusal));
    }
    let irid = record.intent.issuer_request_id.clone();
    put_mint(txn, record)?;
    txn.open_table(MINT_BY_TRID)?
        .insert(trid.as_str(), irid.as_str())?;
    Ok(IssuanceOutcome::Created(irid))
}

/// The refusal-table rules (token, eligibility, wallet, frozen) read inside the write
/// transaction: what the handler checked on its snapshot, now on the state being committed.
pub(super) fn refused_in_txn(
    txn: &WriteTransaction,
    check: &IssuanceCheck,
) -> Result<Option<IssuanceRefusal>, StoreError> {
    let asset: Option<Asset> =
        get_json(txn, ASSETS, &asset_key(&check.underlying, &check.network))?;
    let Some(asset) = asset.filter(|a| a.token == check.token && a.vault == check.vault) else {
        return Ok(Some(IssuanceRefusal::InvalidToken));
    };
    let account: Option<Account> = get_json(txn, ACCOUNTS, check.client_id.as_str())?;
    if !account.is_some_and(|a| a.linked()) {
        return Ok(Some(IssuanceRefusal::NotEligible));
    }
    let owner = {
        let wallets = txn.open_table(WALLETS)?;
        let found = wallets
            .get(addr_key(check.wallet).as_str())?
            .map(|v| v.value().to_owned());
        found
    };
    // A stored owner that does not parse is an error, not a refusal (which is final).
    let owner = owner
        .map(|o| {
            reconciler::ClientId::parse(&o).map_err(|e| StoreError::Decode {
                key: addr_key(check.wallet),
                detail: e.to_string(),
            })
        })
        .transpose()?;
    if owner.as_ref() != Some(&check.client_id) {
        return Ok(Some(IssuanceRefusal::InvalidWallet));
    }
    if asset.frozen {
        return Ok(Some(IssuanceRefusal::Frozen));
    }
    Ok(None)
}
