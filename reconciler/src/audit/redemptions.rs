//! Redemptions: every transfer to the bot against its burn, its return and Alpaca's redeem
//! request; burns and requests that name no transfer; tokens the bot sent out unexplained.

use super::book::{add, Book};
use super::{
    AlpacaRequest, AuditError, DepositLog, Item, ItemKind, LogPos, RequestKind, RequestStatus,
    SignedQty, Tag, TransferLog, WithdrawLog,
};
use crate::ids::IssuerRequestId;
use crate::qty::{Qty, ALPACA_DECIMALS};
use alloy_primitives::{Address, B256};
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn audit_redemptions(
    book: &mut Book<'_>,
    withdraws: &[&WithdrawLog],
    transfers: &[&TransferLog],
    deposits: &[&DepositLog],
    requests: &[&AlpacaRequest],
    known_wallets: &BTreeSet<Address>,
) -> Result<(), AuditError> {
    let bot = book.asset.bot;
    let deposit_txs: BTreeSet<B256> = deposits.iter().map(|d| d.at.tx_hash).collect();
    let withdraw_txs: BTreeSet<B256> = withdraws.iter().map(|w| w.at.tx_hash).collect();

    let mut burns: BTreeMap<&str, Vec<&WithdrawLog>> = BTreeMap::new();
    for w in withdraws {
        match &w.tag {
            Tag::Ours(info) => burns
                .entry(info.issuer_request_id.as_str())
                .or_default()
                .push(w),
            Tag::Foreign { detail } => {
                book.push(
                    Item::new(
                        ItemKind::UntaggedBurn,
                        Some(w.at),
                        w.shares,
                        SignedQty::negative(w.shares),
                        format!(
                            "burn by {} without our receipt information: {detail}",
                            w.sender
                        ),
                    )
                    .wallet(w.owner),
                );
            }
        }
    }

    // One request per redemption is matched with its transfer. The others no transfer can
    // claim: without an issuer id, or a second request for a redemption already named (a journal
    // Alpaca made twice). They still count: each completed one moved shares back.
    let mut redeems: BTreeMap<&str, &AlpacaRequest> = BTreeMap::new();
    let mut unclaimable: Vec<&AlpacaRequest> = Vec::new();
    for req in requests.iter().filter(|r| r.kind == RequestKind::Redeem) {
        match &req.issuer_request_id {
            Some(irid) if !redeems.contains_key(irid.as_str()) => {
                redeems.insert(irid.as_str(), req);
            }
            _ => unclaimable.push(req),
        }
    }

    // Transfers to the bot are redemptions; transfers out that are neither a mint delivery nor
    // dust with a burn are operator returns.
    let inbound: Vec<(&TransferLog, String)> = transfers
        .iter()
        .filter(|t| t.to == bot && t.from != Address::ZERO && t.from != bot)
        .map(|t| {
            (
                *t,
                IssuerRequestId::for_redemption(
                    t.at.tx_hash,
                    t.index_in_tx.unwrap_or(t.at.log_index),
                )
                .to_string(),
            )
        })
        .collect();
    book.totals.redemptions = inbound.len() as u64;
    let outbound: Vec<&TransferLog> = transfers
        .iter()
        .copied()
        .filter(|t| {
            t.from == bot
                && t.to != Address::ZERO
                && t.to != bot
                && !deposit_txs.contains(&t.at.tx_hash)
        })
        .collect();
    let mut returned: BTreeMap<LogPos, &TransferLog> = BTreeMap::new();
    for out in outbound
        .iter()
        .filter(|t| !withdraw_txs.contains(&t.at.tx_hash))
    {
        let matched = inbound.iter().find(|(i, id)| {
            i.from == out.to
                && i.value == out.value
                && i.at < out.at
                && !burns.contains_key(id.as_str())
                && !returned.contains_key(&i.at)
        });
        if let Some((i, _)) = matched {
            returned.insert(i.at, out);
            book.totals.returned = add(book.totals.returned, out.value, "returned")?;
        } else {
            book.push(unexplained_outflow(out));
        }
    }
    // Transfers out inside a burn are the dust of its redemption, back to the redeemer; any
    // other is unexplained (checked once every redemption has claimed its dust).
    let mut dust_logs: BTreeSet<LogPos> = BTreeSet::new();

    for (i, id) in &inbound {
        let req = redeems.remove(id.as_str());
        let burned_logs = burns.remove(id.as_str()).unwrap_or_default();
        if let Some(req) = req {
            let (journalable, _) = i.value.truncate_to(ALPACA_DECIMALS);
            if req.qty != journalable {
                book.push(
                    Item::new(
                        ItemKind::Mismatch,
                        Some(i.at),
                        i.value,
                        SignedQty::ZERO,
                        format!(
                            "transferred {} (journalable {journalable}), Alpaca's request says {}",
                            i.value, req.qty
                        ),
                    )
                    .request(req),
                );
            }
        }
        let completed = req.filter(|r| r.status == RequestStatus::Completed);
        if let Some(req) = completed {
            book.totals.alpaca_redeemed =
                add(book.totals.alpaca_redeemed, req.qty, "alpaca_redeemed")?;
            let anchor = burned_logs.first().map_or(i.at.block, |w| w.at.block);
            book.journal(Some(anchor), SignedQty::negative(req.qty));
        }
        let name = |mut item: Item| -> Item {
            item.issuer_request_id = Some(id.clone());
            item.wallet = Some(i.from);
            if let Some(req) = req {
                item.tokenization_request_id = Some(req.id.to_string());
            }
            item
        };

        if let Some(last_burn) = burned_logs.last() {
            let mut burned = Qty::ZERO;
            let mut burn_txs = BTreeSet::new();
            for w in &burned_logs {
                burned = add(burned, w.shares, "burned")?;
                burn_txs.insert(w.at.tx_hash);
            }
            let mut dust = Qty::ZERO;
            for t in outbound
                .iter()
                .filter(|t| burn_txs.contains(&t.at.tx_hash) && t.to == i.from)
            {
                dust = add(dust, t.value, "dust")?;
                dust_logs.insert(t.at);
            }
            book.totals.dust_returned = add(book.totals.dust_returned, dust, "dust_returned")?;
            let kept = i
                .value
                .checked_sub(burned)
                .and_then(|rest| rest.checked_sub(dust));
            match kept {
                Some(rest) if rest.is_zero() => {}
                Some(rest) => {
                    book.totals.waiting_in_bot = add(book.totals.waiting_in_bot, rest, "waiting")?;
                    book.push(name(Item::new(
                        ItemKind::Mismatch,
                        Some(last_burn.at),
                        rest,
                        SignedQty::ZERO,
                        format!("burned {burned} of {} and returned {dust}: {rest} stays in the bot's wallet", i.value),
                    )));
                }
                None => {
                    book.push(name(Item::new(
                        ItemKind::Mismatch,
                        Some(last_burn.at),
                        burned,
                        SignedQty::ZERO,
                        format!(
                            "burned {burned} and returned {dust}, more than the {} transferred",
                            i.value
                        ),
                    )));
                }
            }
            if let Some(req) = completed {
                let effect = SignedQty::diff(req.qty, burned);
                if burn_txs.len() > 1 {
                    book.push(name(Item::new(
                        ItemKind::DoubleBurn,
                        Some(last_burn.at),
                        burned,
                        effect,
                        format!(
                            "burned in {} transactions: {burned} against {} journaled",
                            burn_txs.len(),
                            req.qty
                        ),
                    )));
                } else if !effect.is_zero() {
                    book.push(name(Item::new(
                        ItemKind::Mismatch,
                        Some(last_burn.at),
                        burned,
                        effect,
                        format!("burned {burned}, Alpaca journaled {}", req.qty),
                    )));
                }
            } else {
                let status = req.map_or("no request at Alpaca".to_owned(), |r| {
                    format!("Alpaca shows it {:?}", r.status).to_lowercase()
                });
                book.push(name(Item::new(
                    ItemKind::BurnWithoutJournal,
                    Some(last_burn.at),
                    burned,
                    SignedQty::negative(burned),
                    format!("burned {burned}, but {status}"),
                )));
            }
            continue;
        }

        if let Some(back) = returned.get(&i.at) {
            if let Some(req) = completed {
                book.push(name(Item::new(
                    ItemKind::Mismatch,
                    Some(back.at),
                    req.qty,
                    SignedQty::positive(req.qty),
                    "Alpaca journaled the shares back and the tokens were also returned".to_owned(),
                )));
            } else if req.is_some_and(|r| r.status == RequestStatus::Pending) {
                book.push(name(Item::new(
                    ItemKind::Mismatch,
                    Some(back.at),
                    back.value,
                    SignedQty::ZERO,
                    "the tokens were returned while Alpaca's journal is still pending: if it completes, the AP has both".to_owned(),
                )));
            }
            continue;
        }

        book.totals.waiting_in_bot = add(book.totals.waiting_in_bot, i.value, "waiting")?;
        let (kind, effect, detail) = match req.map(|r| (r, r.status)) {
            None if known_wallets.contains(&i.from) => (
                ItemKind::TransferWaiting,
                SignedQty::ZERO,
                if i.value.truncate_to(ALPACA_DECIMALS).0.is_zero() {
                    "below Alpaca's 9 decimals: waits for an operator return".to_owned()
                } else {
                    "not yet requested at Alpaca".to_owned()
                },
            ),
            None => (
                ItemKind::UnknownSender,
                SignedQty::ZERO,
                format!(
                    "{} is not a wallet Alpaca ever named: waits for an operator return",
                    i.from
                ),
            ),
            Some((_, RequestStatus::Pending)) => (
                ItemKind::RedemptionPending,
                SignedQty::ZERO,
                "Alpaca's journal is pending".to_owned(),
            ),
            Some((_, RequestStatus::Rejected)) => (
                ItemKind::RedemptionRejected,
                SignedQty::ZERO,
                "Alpaca rejected the journal: waits for an operator return".to_owned(),
            ),
            Some((r, RequestStatus::Completed)) => (
                ItemKind::BurnPending,
                SignedQty::positive(r.qty),
                format!(
                    "Alpaca journaled {} back; the burn is not on chain yet",
                    r.qty
                ),
            ),
        };
        book.push(name(Item::new(kind, Some(i.at), i.value, effect, detail)));
    }

    for out in outbound
        .iter()
        .filter(|t| withdraw_txs.contains(&t.at.tx_hash) && !dust_logs.contains(&t.at))
    {
        book.push(unexplained_outflow(out));
    }

    for (id, found) in burns {
        let mut burned = Qty::ZERO;
        for w in &found {
            burned = add(burned, w.shares, "burned")?;
        }
        let Some(first) = found.first() else { continue };
        book.push(
            Item::new(
                ItemKind::BurnUnknownRedemption,
                Some(first.at),
                burned,
                SignedQty::negative(burned),
                format!("burn tagged {id}, which names no transfer to the bot up to this block"),
            )
            .tag(&first.tag),
        );
    }

    let unmatched = redeems.into_values().map(|req| {
        (
            req,
            "with no transfer to the bot behind it up to this block".to_owned(),
        )
    });
    let unclaimed = unclaimable.into_iter().map(|req| {
        let why = match &req.issuer_request_id {
            Some(irid) => format!("for {irid}, a redemption another of its requests already names"),
            None => {
                "without an issuer_request_id: no transfer to the bot can be behind it".to_owned()
            }
        };
        (req, why)
    });
    for (req, why) in unmatched.chain(unclaimed) {
        if book.after_block(req.tx_hash) {
            book.totals.alpaca_after_block += 1;
            continue;
        }
        let effect = if req.status == RequestStatus::Completed {
            book.totals.alpaca_redeemed =
                add(book.totals.alpaca_redeemed, req.qty, "alpaca_redeemed")?;
            let anchor = book.anchor(req.tx_hash);
            book.journal(anchor, SignedQty::negative(req.qty));
            SignedQty::positive(req.qty)
        } else {
            SignedQty::ZERO
        };
        let detail = format!(
            "Alpaca lists a {} redeem {why}",
            format!("{:?}", req.status).to_lowercase()
        );
        book.push(
            Item::new(
                ItemKind::RedeemWithoutTransfer,
                None,
                req.qty,
                effect,
                detail,
            )
            .request(req),
        );
    }
    Ok(())
}

fn unexplained_outflow(out: &TransferLog) -> Item {
    Item::new(
        ItemKind::UnexplainedOutflow,
        Some(out.at),
        out.value,
        SignedQty::ZERO,
        format!(
            "the bot sent {} to {} with no mint, burn or return behind it",
            out.value, out.to
        ),
    )
    .wallet(out.to)
}
