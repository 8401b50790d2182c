//! Mints: every tagged deposit against Alpaca's mint requests, and every completed request
//! against the deposit it names.

use super::book::{add, Book};
use super::{
    AlpacaRequest, AuditError, DepositLog, Item, ItemKind, RequestKind, RequestStatus, SignedQty,
    Tag, TransferLog,
};
use crate::qty::Qty;
use alloy_primitives::{Address, B256};
use std::collections::BTreeMap;

pub(super) fn audit_mints(
    book: &mut Book<'_>,
    deposits: &[&DepositLog],
    transfers: &[&TransferLog],
    requests: &[&AlpacaRequest],
) -> Result<(), AuditError> {
    let bot = book.asset.bot;
    // Each completed mint looks for its delivery among its own transaction's transfers: a scan
    // of every transfer per mint made a report over 100,000 mints take minutes.
    let mut transfers_by_tx: BTreeMap<B256, Vec<&TransferLog>> = BTreeMap::new();
    for t in transfers {
        transfers_by_tx.entry(t.at.tx_hash).or_default().push(t);
    }
    let mut by_trid: BTreeMap<&str, Vec<&DepositLog>> = BTreeMap::new();
    for d in deposits {
        match &d.tag {
            Tag::Ours(info) => by_trid
                .entry(info.tokenization_request_id.as_str())
                .or_default()
                .push(d),
            Tag::Foreign { detail } => {
                book.push(
                    Item::new(
                        ItemKind::UntaggedDeposit,
                        Some(d.at),
                        d.shares,
                        SignedQty::positive(d.shares),
                        format!(
                            "deposit by {} without our receipt information: {detail}",
                            d.sender
                        ),
                    )
                    .wallet(d.sender),
                );
            }
        }
    }

    for req in requests.iter().filter(|r| r.kind == RequestKind::Mint) {
        let found = by_trid.remove(req.id.as_str()).unwrap_or_default();
        match req.status {
            RequestStatus::Completed => {
                let Some(first) = found.first().copied() else {
                    if book.after_block(req.tx_hash) {
                        book.totals.alpaca_after_block += 1;
                        continue;
                    }
                    book.totals.alpaca_minted =
                        add(book.totals.alpaca_minted, req.qty, "alpaca_minted")?;
                    let anchor = book.anchor(req.tx_hash);
                    book.journal(anchor, SignedQty::positive(req.qty));
                    let detail = match (req.tx_hash, anchor) {
                        (None, _) => "Alpaca shows the mint completed without a transaction, and no deposit carries its id".to_owned(),
                        (Some(h), Some(b)) => format!("Alpaca names transaction {h} (block {b}), which holds no deposit tagged with this request"),
                        (Some(h), None) => format!("Alpaca names transaction {h}, which is not on the observed chain (reorged out or never mined)"),
                    };
                    book.push(
                        Item::new(
                            ItemKind::MissingMint,
                            None,
                            req.qty,
                            SignedQty::negative(req.qty),
                            detail,
                        )
                        .request(req),
                    );
                    continue;
                };
                book.totals.alpaca_minted =
                    add(book.totals.alpaca_minted, req.qty, "alpaca_minted")?;
                let primary = found
                    .iter()
                    .copied()
                    .find(|d| Some(d.at.tx_hash) == req.tx_hash)
                    .unwrap_or(first);
                book.journal(Some(primary.at.block), SignedQty::positive(req.qty));
                let in_tx = transfers_by_tx
                    .get(&primary.at.tx_hash)
                    .map_or(&[][..], Vec::as_slice);
                check_mint(book, primary, req, in_tx, bot);
                for extra in found.iter().filter(|d| d.at != primary.at) {
                    book.push(Item::new(
                        ItemKind::DoubleMint,
                        Some(extra.at),
                        extra.shares,
                        SignedQty::positive(extra.shares),
                        format!("another deposit for a request Alpaca completed once (first in block {})", primary.at.block),
                    ).request(req));
                }
            }
            RequestStatus::Pending => {
                if found.is_empty() {
                    book.push(
                        Item::new(
                            ItemKind::MintPending,
                            None,
                            req.qty,
                            SignedQty::ZERO,
                            "Alpaca shows the mint pending; nothing is minted for it".to_owned(),
                        )
                        .request(req),
                    );
                }
                for (i, d) in found.iter().enumerate() {
                    let (kind, detail) = if i == 0 {
                        (ItemKind::MintNotCalledBack, "minted; Alpaca still shows the request pending (callback not acknowledged yet)".to_owned())
                    } else {
                        (
                            ItemKind::DoubleMint,
                            "another deposit for a request Alpaca shows pending".to_owned(),
                        )
                    };
                    book.push(
                        Item::new(
                            kind,
                            Some(d.at),
                            d.shares,
                            SignedQty::positive(d.shares),
                            detail,
                        )
                        .request(req),
                    );
                }
            }
            RequestStatus::Rejected => {
                for d in &found {
                    book.push(
                        Item::new(
                            ItemKind::MintedAfterRejection,
                            Some(d.at),
                            d.shares,
                            SignedQty::positive(d.shares),
                            "minted although Alpaca rejected the journal".to_owned(),
                        )
                        .request(req),
                    );
                }
            }
        }
    }

    for (trid, found) in by_trid {
        for d in found {
            book.push(
                Item::new(
                    ItemKind::DepositWithoutRequest,
                    Some(d.at),
                    d.shares,
                    SignedQty::positive(d.shares),
                    format!(
                        "tagged deposit for request {trid}, which Alpaca does not list for {}",
                        book.asset.underlying
                    ),
                )
                .tag(&d.tag)
                .wallet(d.owner),
            );
        }
    }
    Ok(())
}

/// The deposit Alpaca's completed mint points at: same quantity, same ids, same transaction,
/// tokens delivered to the AP's wallet in that transaction (`transfers`: that transaction's).
fn check_mint(
    book: &mut Book<'_>,
    d: &DepositLog,
    req: &AlpacaRequest,
    transfers: &[&TransferLog],
    bot: Address,
) {
    let mut problems: Vec<(SignedQty, String)> = Vec::new();
    let gap = SignedQty::diff(d.shares, req.qty);
    if !gap.is_zero() {
        problems.push((
            gap,
            format!(
                "deposited {} shares, Alpaca journaled {}",
                d.shares, req.qty
            ),
        ));
    }
    if let Some(h) = req.tx_hash.filter(|h| *h != d.at.tx_hash) {
        problems.push((
            SignedQty::ZERO,
            format!(
                "Alpaca names transaction {h}, the deposit is in {}",
                d.at.tx_hash
            ),
        ));
    }
    if let Tag::Ours(info) = &d.tag {
        if let Some(irid) = req
            .issuer_request_id
            .as_ref()
            .filter(|i| i.as_str() != info.issuer_request_id)
        {
            problems.push((
                SignedQty::ZERO,
                format!(
                    "Alpaca's issuer_request_id {irid} differs from the deposit's {}",
                    info.issuer_request_id
                ),
            ));
        }
        if Qty::parse(&info.quantity).ok() != Some(d.assets) {
            problems.push((
                SignedQty::ZERO,
                format!(
                    "the receipt information says {} but the deposit is {}",
                    info.quantity, d.assets
                ),
            ));
        }
    }
    let delivered = transfers.iter().any(|t| {
        t.at.tx_hash == d.at.tx_hash && t.from == bot && t.to == req.wallet && t.value == d.shares
    });
    if !delivered {
        problems.push((
            SignedQty::ZERO,
            format!(
                "no transfer of {} to the AP wallet {} in the deposit transaction",
                d.shares, req.wallet
            ),
        ));
    }
    for (effect, detail) in problems {
        book.push(Item::new(ItemKind::Mismatch, Some(d.at), d.shares, effect, detail).request(req));
    }
}
