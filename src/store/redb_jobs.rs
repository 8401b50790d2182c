//! The operations of [`super::RedbStore`] that are more than one lookup, each run inside one
//! transaction: the directory's writes, the issuance with its refusal rules, the scan's advance
//! and the reorg rewind.

use super::records::{
    Account, AttachOutcome, ConfirmOutcome, IssuanceCheck, IssuanceOutcome, IssuanceRefusal,
    MintRecord, ReturnOutcome, Scan,
};
use super::redb_index::{
    active_redemptions, drop_burns_from, drop_deposits_from, link_mint, mint_for_trid, mint_taken,
    put_burn, put_deposit, put_mint, put_redemption, put_tx, remove_redemption,
};
use super::redb_tables::{
    addr_key, asset_key, link, new_client_id, normalise_email, set_link, wallet_owner, Snapshot,
    ACCOUNTS, ACCOUNT_BY_EMAIL, ASSETS, BLOCKS, BLOCK_WINDOW, CURSORS, MINTS, REDEMPTIONS, TXS,
    WALLETS,
};
use super::{AccountKey, StoreError};
use alloy::primitives::{Address, B256};
use reconciler::{
    AlpacaAccountId, ClientId, IssuerRequestId, Journal, Network, RedemptionState,
    TokenizationRequestId,
};
use redb::{ReadableTable, WriteTransaction};
use std::collections::BTreeSet;

/// The account `key` names, read in `txn`. An index entry (email) pointing to no account is an
/// error; a wallet whose owner has no account names none.
pub(super) fn account(
    txn: &impl Snapshot,
    key: AccountKey<'_>,
) -> Result<Option<Account>, StoreError> {
    match key {
        AccountKey::Client(id) => ACCOUNTS.get(txn, id.as_str()),
        AccountKey::Email(email) => link(txn, ACCOUNT_BY_EMAIL, &normalise_email(email))?
            .map(|id| ACCOUNTS.expect(txn, &id))
            .transpose(),
        // Accounts are few (one per AP): a scan keeps the UUID without an index table older
        // files lack.
        AccountKey::Alpaca(uuid) => Ok(ACCOUNTS
            .all(txn)?
            .into_iter()
            .find(|a| a.alpaca_account_id.as_ref() == Some(uuid))),
        AccountKey::Wallet(wallet) => match wallet_owner(txn, wallet)? {
            Some(owner) => ACCOUNTS.get(txn, owner.as_str()),
            None => Ok(None),
        },
    }
}

/// Registers `email` (normalised by the caller), or finds its account.
pub(super) fn register(txn: &WriteTransaction, email: &str) -> Result<Account, StoreError> {
    if let Some(account) = account(txn, AccountKey::Email(email))? {
        return Ok(account);
    }
    let client_id = ClientId::parse(&new_client_id()).map_err(|e| StoreError::Decode {
        key: email.to_owned(),
        detail: e.to_string(),
    })?;
    let account = Account {
        client_id,
        email: email.to_owned(),
        account_number: None,
        alpaca_account_id: None,
    };
    ACCOUNTS.put(txn, account.client_id.as_str(), &account)?;
    set_link(txn, ACCOUNT_BY_EMAIL, email, account.client_id.as_str())?;
    Ok(account)
}

/// Links the account of `email` to Alpaca's account number, unless it is linked already.
pub(super) fn link_account(
    txn: &WriteTransaction,
    email: &str,
    account_number: String,
) -> Result<Option<(Account, bool)>, StoreError> {
    let Some(mut account) = account(txn, AccountKey::Email(email))? else {
        return Ok(None);
    };
    if account.linked() {
        return Ok(Some((account, false)));
    }
    account.account_number = Some(account_number);
    ACCOUNTS.put(txn, account.client_id.as_str(), &account)?;
    Ok(Some((account, true)))
}

/// Attaches `wanted` to `client_id` unless another client has it or the client has another.
pub(super) fn attach_alpaca_account(
    txn: &WriteTransaction,
    client_id: &ClientId,
    wanted: AlpacaAccountId,
) -> Result<AttachOutcome, StoreError> {
    let accounts = ACCOUNTS.all(txn)?;
    if let Some(owner) = accounts
        .iter()
        .find(|a| a.alpaca_account_id.as_ref() == Some(&wanted) && a.client_id != *client_id)
    {
        return Ok(AttachOutcome::TakenBy(owner.client_id.clone()));
    }
    let Some(mut account) = accounts.into_iter().find(|a| a.client_id == *client_id) else {
        return Ok(AttachOutcome::UnknownClient);
    };
    match &account.alpaca_account_id {
        Some(existing) if *existing == wanted => Ok(AttachOutcome::Attached(account)),
        Some(other) => Ok(AttachOutcome::HasOther(other.clone())),
        None => {
            account.alpaca_account_id = Some(wanted);
            ACCOUNTS.put(txn, account.client_id.as_str(), &account)?;
            Ok(AttachOutcome::Attached(account))
        }
    }
}

/// Whitelists `wallet` for `client` (as stored: the owner's id text); `false` if another owns it.
pub(super) fn add_wallet(
    txn: &WriteTransaction,
    client: &str,
    wallet: Address,
) -> Result<bool, StoreError> {
    let key = addr_key(wallet);
    if let Some(owner) = link(txn, WALLETS, &key)? {
        return Ok(owner == client);
    }
    set_link(txn, WALLETS, &key, client)?;
    Ok(true)
}

/// Takes `wallet` off `client`'s whitelist; `false` if it was not theirs.
pub(super) fn remove_wallet(
    txn: &WriteTransaction,
    client: &str,
    wallet: Address,
) -> Result<bool, StoreError> {
    let key = addr_key(wallet);
    if link(txn, WALLETS, &key)?.as_deref() != Some(client) {
        return Ok(false);
    }
    txn.open_table(WALLETS)?.remove(key.as_str())?;
    Ok(true)
}

/// Freezes or unfreezes every asset of `underlying`; how many.
pub(super) fn set_frozen(
    txn: &WriteTransaction,
    underlying: &reconciler::Symbol,
    frozen: bool,
) -> Result<usize, StoreError> {
    let mut changed = Vec::new();
    ASSETS.each(txn, |key, mut asset| {
        if asset.underlying == *underlying {
            asset.frozen = frozen;
            changed.push((key.to_owned(), asset));
        }
        Ok(())
    })?;
    for (key, asset) in &changed {
        ASSETS.put(txn, key, asset)?;
    }
    Ok(changed.len())
}

/// Records an issuance unless its tokenization_request_id is taken: then a repeat or a conflict.
pub(super) fn submit_issuance(
    txn: &WriteTransaction,
    record: &MintRecord,
    check: Option<&IssuanceCheck>,
) -> Result<IssuanceOutcome, StoreError> {
    // An index entry pointing nowhere is an error, not a conflict: a 409 is final for Alpaca.
    if let Some(old) = mint_for_trid(txn, &record.intent.tokenization_request_id)? {
        return Ok(if old.fingerprint == record.fingerprint {
            IssuanceOutcome::Repeat(old.intent.issuer_request_id)
        } else {
            IssuanceOutcome::Conflict
        });
    }
    if let Some(refusal) = check.map(|c| refused(txn, c)).transpose()?.flatten() {
        return Ok(IssuanceOutcome::Refused(refusal));
    }
    let irid = record.intent.issuer_request_id.clone();
    put_mint(txn, record)?;
    link_mint(txn, record)?;
    Ok(IssuanceOutcome::Created(irid))
}

/// The refusal-table rules (token, eligibility, wallet, frozen) read inside the write
/// transaction: what the handler checked on its snapshot, now on the state being committed.
fn refused(
    txn: &WriteTransaction,
    check: &IssuanceCheck,
) -> Result<Option<IssuanceRefusal>, StoreError> {
    let asset = ASSETS.get(txn, &asset_key(&check.underlying, &check.network))?;
    let Some(asset) = asset.filter(|a| a.token == check.token && a.vault == check.vault) else {
        return Ok(Some(IssuanceRefusal::InvalidToken));
    };
    let account = ACCOUNTS.get(txn, check.client_id.as_str())?;
    if !account.is_some_and(|a| a.linked()) {
        return Ok(Some(IssuanceRefusal::NotEligible));
    }
    // A stored owner that does not parse is an error, not a refusal (which is final).
    if wallet_owner(txn, check.wallet)?.as_ref() != Some(&check.client_id) {
        return Ok(Some(IssuanceRefusal::InvalidWallet));
    }
    if asset.frozen {
        return Ok(Some(IssuanceRefusal::Frozen));
    }
    Ok(None)
}

/// Records a mint rebuilt from the chain and Alpaca unless its tokenization_request_id or its
/// issuer_request_id is already there.
pub(super) fn insert_mint_if_absent(
    txn: &WriteTransaction,
    record: &MintRecord,
) -> Result<bool, StoreError> {
    let intent = &record.intent;
    if mint_taken(
        txn,
        &intent.tokenization_request_id,
        &intent.issuer_request_id,
    )? {
        return Ok(false);
    }
    put_mint(txn, record)?;
    link_mint(txn, record)?;
    Ok(true)
}

/// Records Alpaca's journal outcome, unless it contradicts the one recorded.
pub(super) fn confirm_issuance(
    txn: &WriteTransaction,
    trid: &TokenizationRequestId,
    irid: &IssuerRequestId,
    journal: Journal,
    reason: Option<String>,
    confirmed_at_ms: u64,
) -> Result<ConfirmOutcome, StoreError> {
    let Some(mut record) = MINTS.get(txn, irid.as_str())? else {
        return Ok(ConfirmOutcome::Unknown);
    };
    if record.intent.tokenization_request_id != *trid {
        return Ok(ConfirmOutcome::Mismatch);
    }
    match (record.intent.journal, journal) {
        (current, wanted) if current == wanted => Ok(ConfirmOutcome::Recorded),
        (Journal::Pending, wanted) => {
            record.intent.journal = wanted;
            record.reject_reason = reason;
            record.confirmed_at_ms = (wanted == Journal::Completed).then_some(confirmed_at_ms);
            put_mint(txn, &record)?;
            Ok(ConfirmOutcome::Recorded)
        }
        _ => Ok(ConfirmOutcome::Conflict),
    }
}

/// Marks a flagged redemption for return, unless returning could pay twice.
pub(super) fn request_return(
    txn: &WriteTransaction,
    id: &IssuerRequestId,
) -> Result<ReturnOutcome, StoreError> {
    let Some(mut r) = REDEMPTIONS.get(txn, id.as_str())? else {
        return Ok(ReturnOutcome::Unknown);
    };
    match &mut r.state {
        RedemptionState::Flagged { anomaly, .. } if !anomaly.returnable() => {
            Ok(ReturnOutcome::NotReturnable(anomaly.clone()))
        }
        RedemptionState::Flagged {
            return_requested, ..
        } => {
            if !*return_requested {
                // An operator asking again starts the attempts afresh.
                *return_requested = true;
                r.failed_attempts = 0;
                put_redemption(txn, &r)?;
            }
            Ok(ReturnOutcome::Requested)
        }
        other => Ok(ReturnOutcome::NotFlagged(other.clone())),
    }
}

/// Records a vault's scan: its observations, the block hashes seen (keeping the newest
/// [`BLOCK_WINDOW`]) and the cursor.
pub(super) fn advance(
    txn: &WriteTransaction,
    network: &Network,
    vault: Address,
    block_number: u64,
    scan: &Scan,
    hashes: &[(u64, B256)],
) -> Result<(), StoreError> {
    let net = network.as_str();
    for d in &scan.deposits {
        put_deposit(txn, d)?;
    }
    for b in &scan.burns {
        put_burn(txn, b)?;
    }
    for r in &scan.redemptions {
        if !REDEMPTIONS.contains(txn, r.id.as_str())? {
            put_redemption(txn, r)?;
        }
    }
    let mut blocks = txn.open_table(BLOCKS)?;
    for (number, hash) in hashes {
        blocks.insert((net, *number), hash.as_slice())?;
    }
    let newest = blocks
        .range((net, 0)..=(net, u64::MAX))?
        .next_back()
        .transpose()?
        .map(|(k, _)| k.value().1);
    if let Some(newest) = newest {
        let floor = newest.saturating_sub(BLOCK_WINDOW);
        let old = blocks
            .range((net, 0)..(net, floor))?
            .map(|entry| entry.map(|(k, _)| k.value().1))
            .collect::<Result<Vec<u64>, _>>()?;
        for number in old {
            blocks.remove((net, number))?;
        }
    }
    txn.open_table(CURSORS)?
        .insert((net, addr_key(vault).as_str()), block_number)?;
    Ok(())
}

/// Forgets `network`'s observations and block hashes from `block_number` on and pulls its
/// cursors back below it, so the range is scanned again. Our transactions on it settled in those
/// blocks are tracked again: a reorg deeper than the confirmations must re-observe them, not plan
/// their actions anew. Another network is untouched, except that a vault at the same address
/// there (the same deployer and nonce on two chains) has its cursor pulled back too: its
/// observations share the dropped rows, so it scans them again rather than lose them.
pub(super) fn rewind(
    txn: &WriteTransaction,
    network: &Network,
    block_number: u64,
) -> Result<(), StoreError> {
    let net = network.as_str();
    let mut unsettled = TXS.range(txn, (net, 0)..=(net, u64::MAX))?;
    unsettled.retain(|tx| {
        tx.settled
            .as_ref()
            .is_some_and(|s| s.mined_block.is_some_and(|b| b >= block_number))
    });
    for mut tx in unsettled {
        tx.settled = None;
        put_tx(txn, network, &tx)?;
    }
    let vaults: BTreeSet<Address> = ASSETS
        .all(txn)?
        .into_iter()
        .filter(|a| a.network == *network)
        .map(|a| a.vault)
        .collect();
    drop_deposits_from(txn, block_number, &vaults)?;
    drop_burns_from(txn, block_number, &vaults)?;
    // A transfer in a dropped block that nothing was done for yet is forgotten and found again if
    // it is still on chain; one Alpaca already has is kept (and logged by the caller). Only an
    // active redemption can still be `Detected`. A record that does not decode stops the rewind.
    for r in active_redemptions(txn)? {
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
