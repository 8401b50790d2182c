//! What the store keeps, as plain serde types.

use alloy::primitives::{Address, Bytes, B256};
use reconciler::{
    AlpacaAccountId, ClientId, IssuerRequestId, MintIntent, Network, ObservedBurn, ObservedDeposit,
    Redemption, RedemptionState, Symbol, TxPurpose,
};
use serde::{Deserialize, Serialize};

/// Bumped when a table's layout changes; a file with a higher number is refused, not read.
/// 2: index tables for the pass (active mints, deposits by mint, unclaimed deposits, active
/// redemptions, burns by redemption, unsettled transactions), built once when a version 1 file
/// is opened. An older issuer refuses a version 2 file: its writes would not keep the indexes.
/// 3: cursors, block hashes and our transactions keyed by network (several networks in one
/// issuer); a version 2 file's rows move under the one network its assets are on.
/// 4: a mint stored under the id derived from Alpaca's id has no row in the request id index
/// (the index keeps the others alone). Nothing moves: a version 3 file's rows stay valid. An
/// issuer of version 3 refuses a version 4 file: it looks a request id up in the index alone, so
/// a duplicate racing past its first check would overwrite the mint.
/// 5: the active mints keyed by (order, id), the order kept at the end of each mint's row, so
/// an intake appends to the set instead of writing a random page of it; a version 4 file's
/// active mints move under order 0. An issuer of version 4 refuses a version 5 file: it would
/// keep a set that no longer exists.
pub const SCHEMA_VERSION: u32 = 5;

/// An Authorized Participant registered by an operator, linked by Alpaca.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub client_id: ClientId,
    /// Normalised: trimmed and lower case.
    pub email: String,
    /// Alpaca's account number, once Alpaca linked the account.
    pub account_number: Option<String>,
    /// The AP's Alpaca account UUID, attached by an operator: mints naming `client_account_id`
    /// resolve to this client, and its redemptions are requested under that field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpaca_account_id: Option<AlpacaAccountId>,
}

impl Account {
    pub fn linked(&self) -> bool {
        self.account_number.is_some()
    }
}

/// The facts operators and Alpaca keep in the store: accounts, the wallet whitelist and the
/// asset list. Serialised as HA shares it in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub accounts: Vec<Account>,
    /// (wallet, the client it is whitelisted for), in wallet order.
    pub wallets: Vec<(Address, ClientId)>,
    pub assets: Vec<Asset>,
}

/// One underlying on one network, with its vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    pub vault: Address,
    pub receipt: Address,
    pub authorizer: Address,
    /// First block worth scanning for the vault's logs.
    pub deploy_block: u64,
    /// Minting suspended by an operator.
    pub frozen: bool,
    /// Largest quantity one mint may ask for; `None`: [`MINT_QTY_MAX_DEFAULT`]. Bounds what
    /// could otherwise overflow the vault or be a typo by orders of magnitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint_qty_max: Option<reconciler::Qty>,
}

/// The largest mint of one asset unless an operator set another: a billion shares, above any
/// real creation and far below what the vault's 256-bit supply could hold.
pub const MINT_QTY_MAX_DEFAULT: u64 = 1_000_000_000;

impl Asset {
    /// The largest quantity one mint of this asset may ask for.
    pub fn mint_qty_max(&self) -> reconciler::Qty {
        self.mint_qty_max.unwrap_or_else(|| {
            reconciler::Qty::from_units(
                alloy::primitives::U256::from(MINT_QTY_MAX_DEFAULT)
                    * alloy::primitives::U256::from(10u64)
                        .pow(alloy::primitives::U256::from(18u64)),
            )
        })
    }
}

/// A mint as accepted from Alpaca, with what is needed to tell a repeat from a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintRecord {
    pub intent: MintIntent,
    /// Canonical form of the issuance body: same id + same fingerprint is a repeat.
    pub fingerprint: String,
    /// Alpaca's reason when it rejected the journal.
    pub reject_reason: Option<String>,
    /// Why the reconciler stopped on it, for operators (`stuck` lists these).
    pub problem: Option<MintProblem>,
    /// Unix milliseconds when Alpaca confirmed the journal completed (for the confirm-to-callback
    /// latency metric); absent in records written before it was kept, and in recovered ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at_ms: Option<u64>,
}

impl MintRecord {
    /// Still needs the reconciler: not rejected and not yet acknowledged by Alpaca.
    pub fn is_active(&self) -> bool {
        self.intent.journal != reconciler::Journal::Rejected
            && !matches!(self.intent.callback, reconciler::Callback::Acked { .. })
    }

    /// What the reconciler knows of this mint beyond the intent and Alpaca's journal outcome.
    pub fn progress(&self) -> MintProgress {
        MintProgress {
            callback: self.intent.callback.clone(),
            failed_attempts: self.intent.failed_attempts,
            problem: self.problem.clone(),
        }
    }

    /// Makes this record's reconciler part `progress`, leaving the intent and journal as they are.
    pub fn set_progress(&mut self, progress: MintProgress) {
        self.intent.callback = progress.callback;
        self.intent.failed_attempts = progress.failed_attempts;
        self.problem = progress.problem;
    }
}

/// The reconciler's part of a mint record: where its callback to Alpaca stands (what tells
/// whether sending it again could be a duplicate), its failed transactions, and why it waits for
/// an operator. In HA mode the leader shares it before acting on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintProgress {
    pub callback: reconciler::Callback,
    pub failed_attempts: u32,
    pub problem: Option<MintProblem>,
}

/// What must still hold when an issuance is written: checked again inside its write
/// transaction, so an operator's freeze or wallet removal committed between the handler's checks
/// and the write is never missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuanceCheck {
    /// The linked client the request resolved to.
    pub client_id: ClientId,
    pub wallet: Address,
    pub underlying: Symbol,
    pub token: Symbol,
    pub network: Network,
    /// The vault the intent mints on: the asset must still be on it.
    pub vault: Address,
}

/// Which rule of the refusal table an issuance failed inside its write transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuanceRefusal {
    /// The asset is gone from that network or moved to another vault.
    InvalidToken,
    /// The client is unknown or not linked.
    NotEligible,
    /// The wallet is not whitelisted for the client.
    InvalidWallet,
    /// Minting of the asset is frozen.
    Frozen,
}

/// Why a mint needs a person, stored typed (older records held only text, kept as `Note`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MintProblem {
    /// What the plan flagged (a double deposit, a mismatch, exhausted attempts, ...).
    Plan { plan: reconciler::Problem },
    /// Alpaca refused the mint callback with a final status.
    CallbackRefused { callback_refused: CallbackRefusal },
    /// Its transaction does not estimate (the node's reason, escaped).
    DoesNotEstimate { does_not_estimate: String },
    /// Text written by an older version.
    Note(String),
}

/// Alpaca's final answer to a mint callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRefusal {
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
}

impl std::fmt::Display for MintProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plan { plan } => match plan {
                reconciler::Problem::DuplicateDeposits { tx_hashes } => {
                    write!(
                        f,
                        "more than one tagged deposit (a double mint): {tx_hashes:?}"
                    )
                }
                reconciler::Problem::DepositMismatch { tx_hash } => {
                    write!(
                        f,
                        "the tagged deposit {tx_hash:#x} does not match the intent"
                    )
                }
                reconciler::Problem::DepositWithoutCompletedJournal { tx_hash } => write!(
                    f,
                    "tokens deposited in {tx_hash:#x} for a journal Alpaca did not complete"
                ),
                reconciler::Problem::AttemptsExhausted { attempts } => write!(
                    f,
                    "{attempts} mint transactions reverted or were displaced; none is sent again"
                ),
            },
            Self::CallbackRefused { callback_refused } => write!(
                f,
                "mint callback refused: {} {} (code {})",
                callback_refused.status,
                callback_refused.message,
                callback_refused.code.as_deref().unwrap_or("none")
            ),
            Self::DoesNotEstimate { does_not_estimate } => {
                write!(f, "mint transaction does not estimate: {does_not_estimate}")
            }
            Self::Note(text) => f.write_str(text),
        }
    }
}

/// Result of recording an issuance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuanceOutcome {
    /// A new intent is on disk.
    Created(IssuerRequestId),
    /// The same request was accepted before: same answer.
    Repeat(IssuerRequestId),
    /// The id was accepted before with a different body.
    Conflict,
    /// A rule no longer holds at the moment of writing: nothing was written.
    Refused(IssuanceRefusal),
}

/// Result of attaching an Alpaca account UUID to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutcome {
    /// Attached now, or attached before to the same client.
    Attached(Account),
    /// No such client.
    UnknownClient,
    /// The UUID belongs to another client (one Alpaca account, one AP).
    TakenBy(ClientId),
    /// The client already has another UUID; detach is not offered, so a typo cannot silently
    /// move an AP's mints.
    HasOther(AlpacaAccountId),
}

/// Result of recording a journal confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    /// Recorded now, or recorded before with the same status.
    Recorded,
    /// No mint with that issuer_request_id.
    Unknown,
    /// The issuer_request_id belongs to another tokenization_request_id.
    Mismatch,
    /// The journal already has the opposite final status.
    Conflict,
}

/// One signed variant of a transaction at a nonce (a replacement is a new variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxVariant {
    pub hash: B256,
    /// EIP-2718 bytes exactly as broadcast: a retry re-sends these.
    pub raw: Bytes,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub signed_at_block: u64,
}

/// One nonce of the bot's account and everything we signed for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    pub nonce: u64,
    pub from: Address,
    pub to: Address,
    pub purpose: TxPurpose,
    /// Calldata shared by every variant; only fees change on replacement.
    pub input: Bytes,
    pub gas_limit: u64,
    pub variants: Vec<TxVariant>,
    /// Set when the plan settled it: the block it was mined in, or `None` if its nonce was taken.
    pub settled: Option<Settled>,
}

/// How a nonce ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    pub mined_block: Option<u64>,
    pub hash: Option<B256>,
    pub success: bool,
}

/// What one reconcile pass reads from the cache: only live items, so its cost follows what is in
/// flight, not the history. Each list is in the order of its table's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassView {
    /// Mints not rejected and not yet acknowledged by Alpaca ([`MintRecord::is_active`]).
    pub mints: Vec<MintRecord>,
    /// Every deposit tagged with an active mint (a double deposit included), and every deposit
    /// whose issuer_request_id has no mint record at all (the plan recovers those), in block order.
    pub deposits: Vec<ObservedDeposit>,
    /// Redemptions whose state is not final.
    pub redemptions: Vec<Redemption>,
    /// Every burn tagged with one of those redemptions, in block order.
    pub burns: Vec<ObservedBurn>,
}

/// What one scan of a vault's logs produced, recorded with its cursor in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub deposits: Vec<ObservedDeposit>,
    /// New transfers to the bot. One already recorded keeps its state (a replayed scan is a no-op).
    pub redemptions: Vec<Redemption>,
    pub burns: Vec<ObservedBurn>,
}

/// Answer to an operator's return request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// Recorded (or recorded before): the reconciler sends the tokens back exactly once.
    Requested,
    /// The redemption is not flagged: returning it could undo a burn or a journal.
    NotFlagged(RedemptionState),
    /// Flagged for a reason after which Alpaca may have journaled the shares back: returning the
    /// tokens too could pay twice. Settle it with Alpaca first.
    NotReturnable(reconciler::Anomaly),
    Unknown,
}
