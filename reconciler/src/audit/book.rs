//! The book of one asset: items, totals and chart events collected while mints and redemptions
//! are matched, and the builders of an [`Item`].

use super::{
    AlpacaRequest, AssetInput, AuditError, Item, ItemKind, LogPos, SignedQty, Tag, Totals,
};
use crate::qty::Qty;
use alloy_primitives::{Address, B256};
use std::collections::BTreeMap;

pub(super) fn add(a: Qty, b: Qty, what: &'static str) -> Result<Qty, AuditError> {
    a.checked_add(b).ok_or(AuditError::Overflow(what))
}

pub(super) fn sadd(
    a: SignedQty,
    b: SignedQty,
    what: &'static str,
) -> Result<SignedQty, AuditError> {
    a.checked_add(b).ok_or(AuditError::Overflow(what))
}

/// Collects items, totals and chart events of one asset while the matching runs.
pub(super) struct Book<'a> {
    pub(super) asset: &'a AssetInput,
    pub(super) at_block: u64,
    pub(super) tx_blocks: &'a BTreeMap<B256, u64>,
    pub(super) totals: Totals,
    pub(super) items: Vec<Item>,
    /// (block, change of supply, change of journaled).
    pub(super) events: Vec<(u64, SignedQty, SignedQty)>,
}

impl Book<'_> {
    pub(super) fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// Where Alpaca's transaction was mined, when it is not among the observed logs.
    pub(super) fn anchor(&self, tx_hash: Option<B256>) -> Option<u64> {
        tx_hash.and_then(|h| self.tx_blocks.get(&h).copied())
    }

    pub(super) fn after_block(&self, tx_hash: Option<B256>) -> bool {
        self.anchor(tx_hash).is_some_and(|b| b > self.at_block)
    }

    pub(super) fn journal(&mut self, block: Option<u64>, change: SignedQty) {
        if let Some(block) = block {
            self.events.push((block, SignedQty::ZERO, change));
        }
    }
}

impl Item {
    pub(super) fn new(
        kind: ItemKind,
        at: Option<LogPos>,
        qty: Qty,
        effect: SignedQty,
        detail: String,
    ) -> Item {
        Item {
            kind,
            at,
            tokenization_request_id: None,
            issuer_request_id: None,
            wallet: None,
            qty,
            effect,
            detail,
        }
    }

    /// Names Alpaca's request: its ids and the AP wallet.
    pub(super) fn request(mut self, req: &AlpacaRequest) -> Item {
        self.tokenization_request_id = Some(req.id.to_string());
        self.issuer_request_id = req.issuer_request_id.as_ref().map(ToString::to_string);
        self.wallet = Some(req.wallet);
        self
    }

    /// Names the ids a tag carries.
    pub(super) fn tag(mut self, tag: &Tag) -> Item {
        if let Tag::Ours(info) = tag {
            self.tokenization_request_id = Some(info.tokenization_request_id.clone());
            self.issuer_request_id = Some(info.issuer_request_id.clone());
        }
        self
    }

    pub(super) fn wallet(mut self, wallet: Address) -> Item {
        self.wallet = Some(wallet);
        self
    }
}
