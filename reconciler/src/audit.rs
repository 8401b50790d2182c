//! `audit`: the auditor's question — is every token on chain explained by a completed journal at
//! Alpaca, and is every journal reflected on chain? — answered from observations alone.
//!
//! The shell reads the chain (vault logs, `totalSupply`, receipt balances, all at one block) and
//! Alpaca (its mint and redeem requests), hands them over as an [`AuditInput`], and renders the
//! [`AuditReport`]. No cache is read, so the same chain and the same Alpaca give the same report.
//!
//! # The difference
//!
//! For each asset, at block `N`:
//!
//! ```text
//! difference = total_supply(N) − alpaca_minted + alpaca_redeemed
//! ```
//!
//! - `total_supply(N)`: the vault's `totalSupply()` at `N`: every share in existence, wherever it
//!   sits (AP wallets, the bot's wallet waiting for a redemption, anywhere else).
//! - `alpaca_minted`: the sum of Alpaca's **completed** mint requests for the asset. Alpaca
//!   completes a mint when we call back with the deposit transaction, so each should be one
//!   tagged `Deposit` of exactly that quantity.
//! - `alpaca_redeemed`: the sum of Alpaca's **completed** redeem requests: shares journaled back
//!   to an AP, whose tokens should have been burned.
//!
//! Alpaca answers only for "now". A request is attributed to block `N` through its on-chain anchor:
//! a completed mint through its deposit transaction, a redeem through the transfer that started it.
//! A request whose anchor was mined after `N` is left out (counted in `alpaca_after_block`).
//!
//! Why this is exactly zero for a clean book: shares come into existence only by `Deposit` and
//! leave only by `Withdraw`. A clean mint is one tagged deposit of the completed quantity (+q on
//! both sides). A redemption moves tokens to the bot (supply unchanged, nothing journaled); while
//! it waits, is pending at Alpaca, is rejected or is returned by an operator, neither side moves.
//! When Alpaca completes it, `q` is journaled back and the bot burns exactly `q` (the part below
//! 9 decimals goes back to the AP as dust and stays in supply: Alpaca never journaled it).
//!
//! Every way the book can deviate is an [`Item`] whose `effect` is its exact contribution to the
//! difference, so `explained` (the sum of effects) equals `difference` and `unexplained` is zero
//! whenever the audit understands every log. Items with a zero effect (a transfer waiting, a
//! redemption pending at Alpaca, an unknown sender) do not move the difference but still need a
//! person's attention, so they are listed too.

use crate::ids::{IssuerRequestId, Network, Symbol, TokenizationRequestId};
use crate::meta::ReceiptInfo;
use crate::qty::{Qty, ALPACA_DECIMALS};
use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Version of the [`AuditReport`] JSON. Bumped on any change a reader could notice: a renamed or
/// removed field, a changed meaning. Adding an [`ItemKind`] also bumps it.
pub const AUDIT_SCHEMA_VERSION: u32 = 1;

/// The chart is for a person's eye: more points than this are thinned (the last point of each
/// stretch is kept, and the final point always is).
pub const SERIES_POINTS_MAX: usize = 200;

/// Why an audit could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A sum left the range of a uint256: the observations cannot come from one real vault.
    #[error("quantity overflow while summing {0}")]
    Overflow(&'static str),
}

// ---------------------------------------------------------------------------------------------
// Signed quantities
// ---------------------------------------------------------------------------------------------

/// A quantity with a sign: a difference or an effect on it. Zero is never negative, so equal
/// values compare and print equal. Serialized as a decimal string (`"-1.5"`, `"0"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SignedQty {
    negative: bool,
    magnitude: Qty,
}

impl SignedQty {
    pub const ZERO: SignedQty = SignedQty {
        negative: false,
        magnitude: Qty::ZERO,
    };

    pub fn positive(magnitude: Qty) -> Self {
        SignedQty {
            negative: false,
            magnitude,
        }
    }

    pub fn negative(magnitude: Qty) -> Self {
        SignedQty {
            negative: !magnitude.is_zero(),
            magnitude,
        }
    }

    pub fn is_zero(self) -> bool {
        self.magnitude.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.negative
    }

    pub fn magnitude(self) -> Qty {
        self.magnitude
    }

    #[must_use]
    pub fn negated(self) -> Self {
        if self.negative {
            Self::positive(self.magnitude)
        } else {
            Self::negative(self.magnitude)
        }
    }

    pub fn checked_add(self, other: SignedQty) -> Option<SignedQty> {
        if self.negative == other.negative {
            let magnitude = self.magnitude.checked_add(other.magnitude)?;
            return Some(if self.negative {
                Self::negative(magnitude)
            } else {
                Self::positive(magnitude)
            });
        }
        // Opposite signs: the larger magnitude wins the sign.
        let (big, small) = if self.magnitude >= other.magnitude {
            (self, other)
        } else {
            (other, self)
        };
        let magnitude = big.magnitude.checked_sub(small.magnitude)?;
        Some(if big.negative {
            Self::negative(magnitude)
        } else {
            Self::positive(magnitude)
        })
    }

    pub fn checked_sub(self, other: SignedQty) -> Option<SignedQty> {
        self.checked_add(other.negated())
    }

    /// `a − b` of two unsigned quantities.
    pub fn diff(a: Qty, b: Qty) -> SignedQty {
        match a.checked_sub(b) {
            Some(up) => Self::positive(up),
            None => Self::negative(b.checked_sub(a).unwrap_or_default()),
        }
    }
}

impl fmt::Display for SignedQty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.magnitude.to_decimal())
    }
}

impl fmt::Debug for SignedQty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedQty({self})")
    }
}

impl TryFrom<String> for SignedQty {
    type Error = crate::qty::QtyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.strip_prefix('-') {
            Some(rest) => Qty::parse(rest).map(Self::negative),
            None => Qty::parse(&value).map(Self::positive),
        }
    }
}

impl From<SignedQty> for String {
    fn from(value: SignedQty) -> Self {
        value.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// Where a log sits on chain. The field order is the report's order: block, then log index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LogPos {
    pub block: u64,
    pub log_index: u64,
    pub tx_hash: B256,
}

/// What a `receiptInformation` said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Tag {
    /// It decoded as our receipt information.
    Ours(ReceiptInfo),
    /// It did not: someone else's deposit or burn, or bytes we cannot read. Never trusted.
    Foreign { detail: String },
}

/// A vault `Deposit` log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositLog {
    pub at: LogPos,
    pub sender: Address,
    pub owner: Address,
    pub assets: Qty,
    /// What the deposit added to the supply.
    pub shares: Qty,
    /// The ERC-1155 receipt id it created.
    pub id: U256,
    pub tag: Tag,
}

/// A vault `Withdraw` log (a burn, whether by `redeem` or `withdraw`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawLog {
    pub at: LogPos,
    pub sender: Address,
    pub receiver: Address,
    pub owner: Address,
    pub assets: Qty,
    /// What the burn removed from the supply.
    pub shares: Qty,
    pub id: U256,
    pub tag: Tag,
}

/// A vault ERC-20 `Transfer` log to or from the bot (mints from and burns to zero included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLog {
    pub at: LogPos,
    pub from: Address,
    pub to: Address,
    pub value: Qty,
    /// The log's place within its own transaction: what a redemption id is made of (the
    /// block-wide index can change when a reorg re-mines the transaction). Absent: `at.log_index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_in_tx: Option<u64>,
}

/// The bot's balance of one receipt id at the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptHolding {
    pub id: U256,
    pub balance: Qty,
}

/// Whether an Alpaca request moves shares into tokens or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Mint,
    Redeem,
}

/// Where Alpaca's journal of a request stands, as Alpaca says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Completed,
    Rejected,
}

/// One of Alpaca's tokenization requests, as listed by Alpaca.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlpacaRequest {
    pub id: TokenizationRequestId,
    pub issuer_request_id: Option<IssuerRequestId>,
    pub kind: RequestKind,
    pub status: RequestStatus,
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub qty: Qty,
    /// The AP wallet: receiver of a mint, sender of a redemption.
    pub wallet: Address,
    /// A mint's deposit transaction; a redeem's inbound transfer transaction.
    pub tx_hash: Option<B256>,
}

/// Block of a transaction Alpaca names that is not among the observed logs up to the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBlock {
    pub tx_hash: B256,
    pub block: u64,
}

/// One asset's observations, all at [`AuditInput::at_block`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetInput {
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub vault: Address,
    /// The issuer's wallet: deposits for, holds receipts, receives redemptions, burns.
    pub bot: Address,
    pub deploy_block: u64,
    /// `totalSupply()` at the block.
    pub total_supply: Qty,
    /// `balanceOf(bot)` at the block.
    pub bot_shares: Qty,
    pub deposits: Vec<DepositLog>,
    pub withdraws: Vec<WithdrawLog>,
    pub transfers: Vec<TransferLog>,
    pub receipts: Vec<ReceiptHolding>,
}

/// Everything one audit looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditInput {
    /// The block the report is at; logs after it are ignored.
    pub at_block: u64,
    /// The bot's transactions sent and not yet mined (pending nonce − latest nonce), now.
    pub in_flight: u64,
    pub assets: Vec<AssetInput>,
    /// Every mint and redeem request Alpaca lists, for all assets.
    pub alpaca: Vec<AlpacaRequest>,
    /// Where the transactions Alpaca names were mined, for those not among the observed logs;
    /// a hash missing here is not on the chain (never mined, or reorged out).
    #[serde(default)]
    pub tx_blocks: Vec<TxBlock>,
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// Why a line of the report needs a person's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// `totalSupply()` differs from what the vault's logs add up to. Effect: the gap.
    SupplyNotFromLogs,
    /// A deposit whose receipt information is not ours. Effect: +shares.
    UntaggedDeposit,
    /// A tagged deposit for a request Alpaca does not list for this asset. Effect: +shares.
    DepositWithoutRequest,
    /// Minted while Alpaca still shows the request pending (callback not yet acknowledged).
    /// Effect: +shares.
    MintNotCalledBack,
    /// Minted although Alpaca rejected the journal. Effect: +shares.
    MintedAfterRejection,
    /// A second (or later) deposit for one request. Effect: +shares.
    DoubleMint,
    /// Alpaca shows the mint completed and no deposit for it is on the chain. Effect: −qty.
    MissingMint,
    /// Alpaca shows the mint pending and nothing is minted: informational. Effect: 0.
    MintPending,
    /// Chain and Alpaca disagree on a quantity, an id, a transaction or a delivery.
    /// Effect: the quantity gap, if any.
    Mismatch,
    /// Tokens a known AP sent to the bot, not yet handed to Alpaca. Effect: 0.
    TransferWaiting,
    /// Tokens sent to the bot from a wallet Alpaca never named. Effect: 0.
    UnknownSender,
    /// Alpaca's redeem journal is pending; the tokens wait in the bot's wallet. Effect: 0.
    RedemptionPending,
    /// Alpaca rejected the redemption; the tokens wait for an operator return. Effect: 0.
    RedemptionRejected,
    /// Alpaca journaled the shares back; the burn is not on chain yet. Effect: +qty.
    BurnPending,
    /// A burn for a redemption Alpaca did not complete. Effect: −shares.
    BurnWithoutJournal,
    /// A redemption burned in more than one transaction. Effect: journaled − burned.
    DoubleBurn,
    /// A burn whose tag names no transfer to the bot. Effect: −shares.
    BurnUnknownRedemption,
    /// A burn whose receipt information is not ours. Effect: −shares.
    UntaggedBurn,
    /// Alpaca lists a redeem with no transfer to the bot behind it. Effect: +qty if completed.
    RedeemWithoutTransfer,
    /// The bot sent tokens out with no mint, burn or return behind it. Effect: 0.
    UnexplainedOutflow,
    /// The bot has transactions sent and not mined: the next blocks may change the book. Effect: 0.
    InFlight,
}

impl ItemKind {
    /// The snake_case name, as in JSON and CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SupplyNotFromLogs => "supply_not_from_logs",
            Self::UntaggedDeposit => "untagged_deposit",
            Self::DepositWithoutRequest => "deposit_without_request",
            Self::MintNotCalledBack => "mint_not_called_back",
            Self::MintedAfterRejection => "minted_after_rejection",
            Self::DoubleMint => "double_mint",
            Self::MissingMint => "missing_mint",
            Self::MintPending => "mint_pending",
            Self::Mismatch => "mismatch",
            Self::TransferWaiting => "transfer_waiting",
            Self::UnknownSender => "unknown_sender",
            Self::RedemptionPending => "redemption_pending",
            Self::RedemptionRejected => "redemption_rejected",
            Self::BurnPending => "burn_pending",
            Self::BurnWithoutJournal => "burn_without_journal",
            Self::DoubleBurn => "double_burn",
            Self::BurnUnknownRedemption => "burn_unknown_redemption",
            Self::UntaggedBurn => "untagged_burn",
            Self::RedeemWithoutTransfer => "redeem_without_transfer",
            Self::UnexplainedOutflow => "unexplained_outflow",
            Self::InFlight => "in_flight",
        }
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line that explains (part of) a difference or needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub kind: ItemKind,
    /// The log it is about; `None` for what is only at Alpaca (a missing mint) or bot-wide.
    pub at: Option<LogPos>,
    pub tokenization_request_id: Option<String>,
    pub issuer_request_id: Option<String>,
    /// The AP wallet or sender concerned.
    pub wallet: Option<Address>,
    /// The quantity concerned (shares on chain, or Alpaca's qty).
    pub qty: Qty,
    /// Exact contribution to the asset's difference.
    pub effect: SignedQty,
    pub detail: String,
}

/// Sums of one asset at the block.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// `totalSupply()` at the block.
    pub total_supply: Qty,
    /// Σ deposit shares − Σ withdraw shares, from the logs.
    pub supply_from_logs: SignedQty,
    /// Shares of deposits carrying our tag.
    pub minted: Qty,
    /// Shares of deposits without our tag.
    pub minted_untagged: Qty,
    /// Shares of every burn.
    pub burned: Qty,
    /// Transfers to the bot sent back whole by an operator.
    pub returned: Qty,
    /// Parts below 9 decimals sent back to the AP with a burn.
    pub dust_returned: Qty,
    /// Transfers to the bot neither burned nor returned yet.
    pub waiting_in_bot: Qty,
    /// The bot's share balance.
    pub bot_shares: Qty,
    /// Σ of Alpaca's completed mints attributed to the block.
    pub alpaca_minted: Qty,
    /// Σ of Alpaca's completed redeems attributed to the block.
    pub alpaca_redeemed: Qty,
    /// `alpaca_minted − alpaca_redeemed`: the shares Alpaca holds for the tokens.
    pub alpaca_journaled: SignedQty,
    /// Alpaca requests whose on-chain anchor is after the block, left out.
    pub alpaca_after_block: u64,
    pub deposits: u64,
    pub withdraws: u64,
    pub redemptions: u64,
}

/// A receipt the bot holds, with the request it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRow {
    pub id: U256,
    pub balance: Qty,
    pub tokenization_request_id: Option<String>,
    pub issuer_request_id: Option<String>,
    pub deposit_block: Option<u64>,
}

/// One point of the supply-versus-journal chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    pub block: u64,
    /// Supply from the logs after this block.
    pub supply: SignedQty,
    /// Alpaca's journaled quantity attributed up to this block.
    pub journaled: SignedQty,
}

/// One asset's audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetReport {
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub vault: Address,
    pub bot: Address,
    pub deploy_block: u64,
    pub totals: Totals,
    /// `total_supply − alpaca_minted + alpaca_redeemed`; zero for a clean book.
    pub difference: SignedQty,
    /// Σ of the items' effects.
    pub explained: SignedQty,
    /// `difference − explained`: zero unless a log escaped the audit's understanding.
    pub unexplained: SignedQty,
    pub receipts: Vec<ReceiptRow>,
    /// Ordered by block and log index; items with no log last.
    pub items: Vec<Item>,
    pub series: Vec<Point>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    pub schema_version: u32,
    pub at_block: u64,
    /// True when every asset's difference and unexplained part are zero.
    pub balanced: bool,
    /// What an auditor reads first: balanced and clean, balanced with items to look at, or not
    /// balanced. A zero difference with an unknown sender's transfer waiting is not "clean".
    pub verdict: Verdict,
    /// Items (per asset and bot-wide) that need someone's attention.
    pub attention: usize,
    pub in_flight: u64,
    pub assets: Vec<AssetReport>,
    /// Bot-wide items (in-flight transactions).
    pub notices: Vec<Item>,
}

/// The report's verdict, in one word for machines and the exit code of `issuer report --check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The difference is zero and nothing needs attention (exit 0).
    Balanced,
    /// The difference is zero but items need attention (exit 1).
    BalancedWithAttention,
    /// Supply and journals differ (exit 2).
    NotBalanced,
}

impl Verdict {
    /// `issuer report --check`'s exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Self::Balanced => 0,
            Self::BalancedWithAttention => 1,
            Self::NotBalanced => 2,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The audit
// ---------------------------------------------------------------------------------------------

/// Audits every asset of `input` at `input.at_block`. Pure: the same input gives the same report.
pub fn audit(input: &AuditInput) -> Result<AuditReport, AuditError> {
    let known_wallets: BTreeSet<Address> = input.alpaca.iter().map(|r| r.wallet).collect();
    let tx_blocks: BTreeMap<B256, u64> = input
        .tx_blocks
        .iter()
        .map(|t| (t.tx_hash, t.block))
        .collect();
    let mut assets = Vec::with_capacity(input.assets.len());
    for asset in &input.assets {
        assets.push(audit_asset(asset, input, &known_wallets, &tx_blocks)?);
    }
    let balanced = assets
        .iter()
        .all(|a| a.difference.is_zero() && a.unexplained.is_zero());
    let mut notices = Vec::new();
    if input.in_flight > 0 {
        notices.push(Item {
            kind: ItemKind::InFlight,
            at: None,
            tokenization_request_id: None,
            issuer_request_id: None,
            wallet: assets.first().map(|a| a.bot),
            qty: Qty::ZERO,
            effect: SignedQty::ZERO,
            detail: format!(
                "{} bot transaction(s) sent and not yet mined: the next blocks may mint or burn",
                input.in_flight
            ),
        });
    }
    let attention = assets.iter().map(|a| a.items.len()).sum::<usize>() + notices.len();
    let verdict = match (balanced, attention) {
        (true, 0) => Verdict::Balanced,
        (true, _) => Verdict::BalancedWithAttention,
        (false, _) => Verdict::NotBalanced,
    };
    Ok(AuditReport {
        schema_version: AUDIT_SCHEMA_VERSION,
        at_block: input.at_block,
        balanced,
        verdict,
        attention,
        in_flight: input.in_flight,
        assets,
        notices,
    })
}

fn add(a: Qty, b: Qty, what: &'static str) -> Result<Qty, AuditError> {
    a.checked_add(b).ok_or(AuditError::Overflow(what))
}

fn sadd(a: SignedQty, b: SignedQty, what: &'static str) -> Result<SignedQty, AuditError> {
    a.checked_add(b).ok_or(AuditError::Overflow(what))
}

/// Collects items, totals and chart events of one asset while the matching runs.
struct Book<'a> {
    asset: &'a AssetInput,
    at_block: u64,
    tx_blocks: &'a BTreeMap<B256, u64>,
    totals: Totals,
    items: Vec<Item>,
    /// (block, change of supply, change of journaled).
    events: Vec<(u64, SignedQty, SignedQty)>,
}

impl Book<'_> {
    fn push(&mut self, item: Item) {
        self.items.push(item);
    }

    /// Where Alpaca's transaction was mined, when it is not among the observed logs.
    fn anchor(&self, tx_hash: Option<B256>) -> Option<u64> {
        tx_hash.and_then(|h| self.tx_blocks.get(&h).copied())
    }

    fn after_block(&self, tx_hash: Option<B256>) -> bool {
        self.anchor(tx_hash).is_some_and(|b| b > self.at_block)
    }

    fn journal(&mut self, block: Option<u64>, change: SignedQty) {
        if let Some(block) = block {
            self.events.push((block, SignedQty::ZERO, change));
        }
    }
}

impl Item {
    fn new(
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
    fn request(mut self, req: &AlpacaRequest) -> Item {
        self.tokenization_request_id = Some(req.id.to_string());
        self.issuer_request_id = req.issuer_request_id.as_ref().map(ToString::to_string);
        self.wallet = Some(req.wallet);
        self
    }

    /// Names the ids a tag carries.
    fn tag(mut self, tag: &Tag) -> Item {
        if let Tag::Ours(info) = tag {
            self.tokenization_request_id = Some(info.tokenization_request_id.clone());
            self.issuer_request_id = Some(info.issuer_request_id.clone());
        }
        self
    }

    fn wallet(mut self, wallet: Address) -> Item {
        self.wallet = Some(wallet);
        self
    }
}

fn audit_asset(
    asset: &AssetInput,
    input: &AuditInput,
    known_wallets: &BTreeSet<Address>,
    tx_blocks: &BTreeMap<B256, u64>,
) -> Result<AssetReport, AuditError> {
    let n = input.at_block;
    let mut deposits: Vec<&DepositLog> =
        asset.deposits.iter().filter(|d| d.at.block <= n).collect();
    deposits.sort_by_key(|d| d.at);
    let mut withdraws: Vec<&WithdrawLog> =
        asset.withdraws.iter().filter(|w| w.at.block <= n).collect();
    withdraws.sort_by_key(|w| w.at);
    let mut transfers: Vec<&TransferLog> =
        asset.transfers.iter().filter(|t| t.at.block <= n).collect();
    transfers.sort_by_key(|t| t.at);
    let mut requests: Vec<&AlpacaRequest> = input
        .alpaca
        .iter()
        .filter(|r| r.underlying == asset.underlying && r.network == asset.network)
        .collect();
    requests.sort_by(|a, b| a.id.cmp(&b.id));

    // Where each transaction sits: Alpaca's list plus every log of the asset, also those after
    // the block (a mint completed at Alpaca after the block is anchored there, not missing).
    let mut tx_index = tx_blocks.clone();
    let all_logs = asset
        .deposits
        .iter()
        .map(|d| d.at)
        .chain(asset.withdraws.iter().map(|w| w.at));
    for at in all_logs.chain(asset.transfers.iter().map(|t| t.at)) {
        tx_index.entry(at.tx_hash).or_insert(at.block);
    }
    let mut book = Book {
        asset,
        at_block: n,
        tx_blocks: &tx_index,
        totals: Totals {
            total_supply: asset.total_supply,
            bot_shares: asset.bot_shares,
            ..Totals::default()
        },
        items: Vec::new(),
        events: Vec::new(),
    };

    // Supply from the logs, and the plain sums.
    let mut supply_logs = SignedQty::ZERO;
    for d in &deposits {
        supply_logs = sadd(supply_logs, SignedQty::positive(d.shares), "supply")?;
        book.events
            .push((d.at.block, SignedQty::positive(d.shares), SignedQty::ZERO));
        match d.tag {
            Tag::Ours(_) => book.totals.minted = add(book.totals.minted, d.shares, "minted")?,
            Tag::Foreign { .. } => {
                book.totals.minted_untagged =
                    add(book.totals.minted_untagged, d.shares, "minted_untagged")?;
            }
        }
    }
    for w in &withdraws {
        supply_logs = sadd(supply_logs, SignedQty::negative(w.shares), "supply")?;
        book.events
            .push((w.at.block, SignedQty::negative(w.shares), SignedQty::ZERO));
        book.totals.burned = add(book.totals.burned, w.shares, "burned")?;
    }
    book.totals.supply_from_logs = supply_logs;
    book.totals.deposits = deposits.len() as u64;
    book.totals.withdraws = withdraws.len() as u64;
    let gap = sadd(
        SignedQty::positive(asset.total_supply),
        supply_logs.negated(),
        "supply gap",
    )?;
    if !gap.is_zero() {
        book.push(Item::new(
            ItemKind::SupplyNotFromLogs,
            None,
            gap.magnitude(),
            gap,
            format!(
                "totalSupply {} but the vault's logs add up to {supply_logs}",
                asset.total_supply
            ),
        ));
    }

    audit_mints(&mut book, &deposits, &transfers, &requests)?;
    audit_redemptions(
        &mut book,
        &withdraws,
        &transfers,
        &deposits,
        &requests,
        known_wallets,
    )?;

    let totals = &mut book.totals;
    totals.alpaca_journaled = SignedQty::diff(totals.alpaca_minted, totals.alpaca_redeemed);
    let difference = sadd(
        SignedQty::positive(totals.total_supply),
        totals.alpaca_journaled.negated(),
        "difference",
    )?;
    let mut explained = SignedQty::ZERO;
    for item in &book.items {
        explained = sadd(explained, item.effect, "explained")?;
    }
    let unexplained = sadd(difference, explained.negated(), "unexplained")?;

    let mut items = book.items;
    items.sort_by(|a, b| item_key(a).cmp(&item_key(b)));
    let receipts = receipt_rows(asset, &deposits);
    let series = series(book.events)?;
    Ok(AssetReport {
        underlying: asset.underlying.clone(),
        token: asset.token.clone(),
        network: asset.network.clone(),
        vault: asset.vault,
        bot: asset.bot,
        deploy_block: asset.deploy_block,
        totals: book.totals,
        difference,
        explained,
        unexplained,
        receipts,
        items,
        series,
    })
}

/// Block and log index first (items with no log last), then kind and ids, so equal inputs give
/// equal order whatever order they came in.
fn item_key(item: &Item) -> (u64, u64, ItemKind, Option<&str>, Option<&str>) {
    let (block, index) = item
        .at
        .map_or((u64::MAX, u64::MAX), |at| (at.block, at.log_index));
    (
        block,
        index,
        item.kind,
        item.tokenization_request_id.as_deref(),
        item.issuer_request_id.as_deref(),
    )
}

fn audit_mints(
    book: &mut Book<'_>,
    deposits: &[&DepositLog],
    transfers: &[&TransferLog],
    requests: &[&AlpacaRequest],
) -> Result<(), AuditError> {
    let bot = book.asset.bot;
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
                check_mint(book, primary, req, transfers, bot);
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
/// tokens delivered to the AP's wallet in that transaction.
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

fn audit_redemptions(
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

    let mut redeems: BTreeMap<&str, &AlpacaRequest> = BTreeMap::new();
    for req in requests.iter().filter(|r| r.kind == RequestKind::Redeem) {
        if let Some(irid) = &req.issuer_request_id {
            redeems.entry(irid.as_str()).or_insert(req);
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
            book.push(
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
                .wallet(out.to),
            );
        }
    }

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

    for (_, req) in redeems {
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
            "Alpaca lists a {} redeem with no transfer to the bot behind it up to this block",
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

fn receipt_rows(asset: &AssetInput, deposits: &[&DepositLog]) -> Vec<ReceiptRow> {
    let mut rows: Vec<ReceiptRow> = asset
        .receipts
        .iter()
        .filter(|r| !r.balance.is_zero())
        .map(|r| {
            let origin = deposits.iter().find(|d| d.id == r.id);
            let info = origin.and_then(|d| match &d.tag {
                Tag::Ours(info) => Some(info),
                Tag::Foreign { .. } => None,
            });
            ReceiptRow {
                id: r.id,
                balance: r.balance,
                tokenization_request_id: info.map(|i| i.tokenization_request_id.clone()),
                issuer_request_id: info.map(|i| i.issuer_request_id.clone()),
                deposit_block: origin.map(|d| d.at.block),
            }
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    rows
}

/// Cumulative supply and journal per block, thinned to at most [`SERIES_POINTS_MAX`] points.
fn series(mut events: Vec<(u64, SignedQty, SignedQty)>) -> Result<Vec<Point>, AuditError> {
    events.sort_by_key(|(block, _, _)| *block);
    let mut points: Vec<Point> = Vec::new();
    let mut supply = SignedQty::ZERO;
    let mut journaled = SignedQty::ZERO;
    for (block, d_supply, d_journal) in events {
        supply = sadd(supply, d_supply, "series")?;
        journaled = sadd(journaled, d_journal, "series")?;
        match points.last_mut() {
            Some(last) if last.block == block => {
                last.supply = supply;
                last.journaled = journaled;
            }
            _ => points.push(Point {
                block,
                supply,
                journaled,
            }),
        }
    }
    if points.len() <= SERIES_POINTS_MAX {
        return Ok(points);
    }
    let len = points.len();
    let thinned = (1..=SERIES_POINTS_MAX)
        .filter_map(|k| {
            points
                .get((k * len).div_ceil(SERIES_POINTS_MAX).saturating_sub(1))
                .copied()
        })
        .collect();
    Ok(thinned)
}
