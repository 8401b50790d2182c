//! The Broker API's JSON bodies, spelled exactly as Alpaca spells them.
//!
//! Decoding is lenient where Alpaca is known to vary (`tx_hash` is `""`, `null` or absent while a
//! request is pending; unknown fields are ignored) and strict where a wrong value would be acted
//! on (ids, symbols, quantities, addresses are parsed into types). We send only Alpaca's current
//! names: the client as `client_external_account_id` or `client_account_id`, never the
//! deprecated `client_id`.

use alloy::primitives::{Address, B256};
use reconciler::ids::{
    AlpacaAccountId, ClientId, ClientRef, IssuerRequestId, Network, Symbol, TokenizationRequestId,
};
use reconciler::Qty;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt::Display;

/// Whether a tokenization request moves shares into tokens or back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestType {
    Mint,
    Redeem,
}

impl RequestType {
    /// The wire spelling, for query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mint => "mint",
            Self::Redeem => "redeem",
        }
    }
}

/// Where Alpaca's journal for a request stands. Any other value fails decoding on purpose: an
/// unknown state must not be mistaken for one we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Completed,
    Rejected,
}

impl RequestStatus {
    /// The wire spelling, for query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
        }
    }
}

/// One mint or redeem request as Alpaca reports it (`GET .../tokenization/requests/{id}` and the
/// answer to the redeem call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTokenizationRequest")]
pub struct TokenizationRequest {
    /// Alpaca's `tokenization_request_id`, as the current schema names it; the older `id` is
    /// still read (if both come they must agree).
    #[serde(rename = "tokenization_request_id")]
    pub id: TokenizationRequestId,
    /// Ours; absent on a mint Alpaca has not yet had an answer for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_request_id: Option<IssuerRequestId>,
    #[serde(rename = "type")]
    pub kind: RequestType,
    pub status: RequestStatus,
    pub underlying_symbol: Symbol,
    pub token_symbol: Symbol,
    /// A decimal string on the wire; at most 9 decimals at Alpaca.
    pub qty: Qty,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub network: Network,
    pub wallet_address: Address,
    /// `""`, `null` or absent while pending all decode to `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<B256>,
    /// Where the journal's securities transfer stands, when Alpaca reports it (free text, shown
    /// to operators, never acted on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_account_id: Option<AlpacaAccountId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_external_account_id: Option<ClientId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

impl TokenizationRequest {
    /// The client as Alpaca names it: our external id when Alpaca shows one (the id the AP is
    /// linked under), else the AP's Alpaca account.
    pub fn client(&self) -> Option<ClientRef> {
        self.client_external_account_id
            .clone()
            .map(ClientRef::ClientExternalAccountId)
            .or_else(|| {
                self.client_account_id
                    .clone()
                    .map(ClientRef::ClientAccountId)
            })
    }
}

/// [`TokenizationRequest`] as it comes off the wire, before the two spellings of its id are merged.
#[derive(Deserialize)]
struct RawTokenizationRequest {
    #[serde(default)]
    id: Option<TokenizationRequestId>,
    #[serde(default)]
    tokenization_request_id: Option<TokenizationRequestId>,
    #[serde(default, deserialize_with = "empty_as_none")]
    issuer_request_id: Option<IssuerRequestId>,
    #[serde(rename = "type")]
    kind: RequestType,
    status: RequestStatus,
    underlying_symbol: Symbol,
    token_symbol: Symbol,
    qty: Qty,
    #[serde(default)]
    issuer: Option<String>,
    network: Network,
    wallet_address: Address,
    #[serde(default, deserialize_with = "empty_as_none_hash")]
    tx_hash: Option<B256>,
    #[serde(default)]
    transfer_status: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    client_account_id: Option<AlpacaAccountId>,
    #[serde(default, deserialize_with = "empty_as_none")]
    client_external_account_id: Option<ClientId>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

impl TryFrom<RawTokenizationRequest> for TokenizationRequest {
    type Error = String;

    fn try_from(raw: RawTokenizationRequest) -> Result<Self, String> {
        let id = match (raw.id, raw.tokenization_request_id) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!("id {a} and tokenization_request_id {b} disagree"));
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => return Err("missing field `tokenization_request_id`".to_owned()),
        };
        Ok(Self {
            id,
            issuer_request_id: raw.issuer_request_id,
            kind: raw.kind,
            status: raw.status,
            underlying_symbol: raw.underlying_symbol,
            token_symbol: raw.token_symbol,
            qty: raw.qty,
            issuer: raw.issuer,
            network: raw.network,
            wallet_address: raw.wallet_address,
            tx_hash: raw.tx_hash,
            transfer_status: raw.transfer_status,
            client_account_id: raw.client_account_id,
            client_external_account_id: raw.client_external_account_id,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
        })
    }
}

/// Body of `POST .../tokenization/callback/mint`: the tokens are on chain at `tx_hash`. The client
/// goes out under the field the mint request used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MintCallback {
    pub tokenization_request_id: TokenizationRequestId,
    #[serde(flatten, serialize_with = "client_field")]
    pub client: ClientRef,
    pub wallet_address: Address,
    pub tx_hash: B256,
    pub network: Network,
}

/// Body of `POST .../tokenization/callback/redeem`: the AP sent `qty` tokens to our redemption
/// wallet in `tx_hash`; journal the shares back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedeemRequest {
    /// Derived from the transfer log, so a retry after a crash reuses it.
    pub issuer_request_id: IssuerRequestId,
    pub underlying_symbol: Symbol,
    pub token_symbol: Symbol,
    #[serde(flatten, serialize_with = "client_field")]
    pub client: ClientRef,
    /// At most 9 decimals (Alpaca's limit); the client refuses more before sending.
    pub qty: Qty,
    pub network: Network,
    pub wallet_address: Address,
    pub tx_hash: B256,
}

/// A [`ClientRef`] as the one field it names: `{"client_account_id": "..."}` or
/// `{"client_external_account_id": "..."}`.
fn client_field<S: Serializer>(client: &ClientRef, ser: S) -> Result<S::Ok, S::Error> {
    let mut map = ser.serialize_map(Some(1))?;
    map.serialize_entry(client.field(), client.value())?;
    map.end()
}

/// Filter of `GET .../tokenization/requests`; `None` fields are left out of the query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFilter {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<RequestType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RequestStatus>,
    /// RFC 3339 timestamp, passed through as Alpaca takes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// RFC 3339 timestamp, passed through as Alpaca takes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// Alpaca's error body. `code` is a number in Alpaca's answers; a string is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "code_as_string")]
    pub code: Option<String>,
    #[serde(default)]
    pub message: String,
}

fn code_as_string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(de)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text),
        Some(other) => Some(other.to_string()),
    })
}

/// `null`, absent and `""` are all "not there yet"; anything else must parse.
fn empty_as_none<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String>,
    T::Error: Display,
{
    match Option::<String>::deserialize(de)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => T::try_from(text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn empty_as_none_hash<'de, D: Deserializer<'de>>(de: D) -> Result<Option<B256>, D::Error> {
    match Option::<String>::deserialize(de)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => {
            let hex = text.strip_prefix("0x").ok_or_else(|| {
                serde::de::Error::custom(format!("tx_hash must be 0x-prefixed: {text:?}"))
            })?;
            hex.parse::<B256>()
                .map(Some)
                .map_err(serde::de::Error::custom)
        }
    }
}
