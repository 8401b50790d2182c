//! Alpaca's routes (DESIGN §5 "Issuer endpoints"), in both spellings Alpaca uses.
//!
//! Each handler parses, checks in the documented order, records through the store, and answers.
//! A refused request writes nothing. The mint routes answer every refusal 400 with the message
//! Alpaca's guide lists, malformed bodies included (`Failed Validation: Invalid data payload`);
//! the account routes keep 422 for a malformed body.

use super::{blocking, body, json, AppState, HttpError, INVALID_PAYLOAD};
use crate::store::{
    AccountKey, Asset, ConfirmOutcome, IssuanceCheck, IssuanceOutcome, IssuanceRefusal, MintRecord,
    Store,
};
use alloy::primitives::Address;
use reconciler::{
    parse_address, AlpacaAccountId, Callback, ClientId, ClientRef, IssuerRequestId, Journal,
    MintIntent, Network, Qty, Symbol, TokenizationRequestId,
};
use serde::Deserialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tide::{Request, Response, StatusCode};

pub(super) const INVALID_TOKEN: &str = "Invalid Token: Token not available on the network";
pub(super) const NOT_ELIGIBLE: &str = "Insufficient Eligibility: Client not eligible";
pub(super) const INVALID_WALLET: &str = "Invalid Wallet: Wallet does not belong to client";
pub(super) const ASSET_FROZEN: &str = "Asset Frozen: Minting is suspended for this asset";

/// Longest account number or email we accept; longer is a malformed body, not a new account.
const TEXT_LEN_MAX: usize = 254;

fn invalid() -> HttpError {
    HttpError::Unprocessable(INVALID_PAYLOAD.into())
}

/// A malformed mint or confirm body: 400 with Alpaca's message (its guide lists 400 for every
/// mint refusal).
fn malformed() -> HttpError {
    HttpError::Refused(INVALID_PAYLOAD.into())
}

/// The body of a mint route; anything that does not parse is [`malformed`].
async fn mint_body<T: serde::de::DeserializeOwned>(
    req: &mut Request<AppState>,
) -> Result<T, HttpError> {
    body(req).await.map_err(|e| match e {
        HttpError::Unprocessable(_) => malformed(),
        other => other,
    })
}

/// Shared with the operator routes: a trimmed email with one `@` and something on both sides.
pub(super) fn checked_email(email: &str) -> Result<String, HttpError> {
    let email = email.trim();
    // Control characters (NUL, ESC, ...) and invisible format characters (zero-width spaces,
    // direction marks, BOM) would make two different stored emails look the same.
    let ok = email.len() <= TEXT_LEN_MAX
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || crate::config::is_invisible(c))
        && email.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && !host.is_empty() && !host.contains('@')
        });
    if ok {
        Ok(email.to_owned())
    } else {
        Err(invalid())
    }
}

fn checked_account_number(account: &str) -> Result<String, HttpError> {
    let ok = !account.is_empty()
        && account.len() <= TEXT_LEN_MAX
        && !account.chars().any(char::is_control);
    if ok {
        Ok(account.to_owned())
    } else {
        Err(invalid())
    }
}

/// Lower-case 0x hex, as stored and as fingerprinted.
pub(super) fn address_text(address: Address) -> String {
    format!("{address:#x}")
}

#[derive(Deserialize)]
struct ConnectBody {
    email: String,
    account: String,
}

#[derive(Deserialize)]
struct ConnectTokenizationBody {
    email: String,
    client_account_number: String,
}

/// `POST /accounts/connect`: links the operator-registered account of `email` to Alpaca's
/// account number. A retry of the same link answers the same `client_id` (Alpaca retries on
/// timeouts and would take a 409 as final); a link to a different account number is 409.
pub(super) async fn connect(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let ConnectBody { email, account } = body(&mut req).await?;
    let client_id = link(req.state(), &email, &account).await?;
    Ok(json(StatusCode::Ok, &json!({ "client_id": client_id })))
}

/// `POST /tokenization/accounts/connect`: the same as [`connect`] in Alpaca's newer spelling.
pub(super) async fn connect_tokenization(
    mut req: Request<AppState>,
) -> Result<Response, HttpError> {
    let ConnectTokenizationBody {
        email,
        client_account_number,
    } = body(&mut req).await?;
    let client_id = link(req.state(), &email, &client_account_number).await?;
    Ok(json(
        StatusCode::Ok,
        &json!({ "client_external_account_id": client_id }),
    ))
}

async fn link(state: &AppState, email: &str, account: &str) -> Result<ClientId, HttpError> {
    let email = checked_email(email)?;
    let account = checked_account_number(account)?;
    blocking(state, move |store| {
        match store.link_account(&email, &account)? {
            None => Err(HttpError::NotFound("unknown email".into())),
            Some((linked, true)) => {
                tracing::info!(client_id = %linked.client_id, "http: account linked");
                Ok(linked.client_id)
            }
            Some((linked, false)) if linked.account_number.as_deref() == Some(account.as_str()) => {
                Ok(linked.client_id)
            }
            Some(_) => Err(HttpError::Conflict("account already linked".into())),
        }
    })
    .await
}

#[derive(Deserialize)]
struct WalletBody {
    wallet: String,
}

/// `POST /accounts/{client_id}/wallets`: whitelists a wallet for a client. Idempotent; a wallet
/// whitelisted to another client is 409 (one wallet, one owner: redemptions are attributed by it).
pub(super) async fn add_wallet(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let WalletBody { wallet } = body(&mut req).await?;
    let wallet = parse_address(&wallet).map_err(|_| invalid())?;
    let client_id = ClientId::parse(req.param("client_id").unwrap_or_default())
        .map_err(|_| HttpError::NotFound("unknown client".into()))?;
    let answer = json!({ "client_id": client_id.as_str(), "wallet": address_text(wallet) });
    let config = req.state().config().clone();
    blocking(req.state(), move |store| {
        whitelist(store, &config, &client_id, wallet)
    })
    .await?;
    Ok(json(StatusCode::Ok, &answer))
}

/// Shared with the operator route: 404 unknown client, 409 wallet owned by another client, 422
/// an address of the issuer's own that tokens must never be minted to.
pub(super) fn whitelist(
    store: &dyn Store,
    config: &super::HttpConfig,
    client_id: &ClientId,
    wallet: Address,
) -> Result<(), HttpError> {
    if let Some(what) = issuer_address(store, config, wallet)? {
        return Err(HttpError::Unprocessable(format!(
            "wallet {} is {what}: it can never be an AP's wallet",
            address_text(wallet)
        )));
    }
    if store.account(AccountKey::Client(client_id))?.is_none() {
        return Err(HttpError::NotFound("unknown client".into()));
    }
    if store.add_wallet(client_id, wallet)? {
        Ok(())
    } else {
        Err(HttpError::Conflict(
            "wallet belongs to another client".into(),
        ))
    }
}

/// What `wallet` is if it is the zero address or one of the issuer's own (the bot, a vault, a
/// receipt, an authorizer): shares minted there could never reach an AP, or would come back as a
/// redemption nobody made.
pub(super) fn issuer_address(
    store: &dyn Store,
    config: &super::HttpConfig,
    wallet: Address,
) -> Result<Option<&'static str>, HttpError> {
    if wallet.is_zero() {
        return Ok(Some("the zero address"));
    }
    if config.issuer_addresses.contains(&wallet) {
        return Ok(Some("the issuer's bot"));
    }
    let ours = store.is_asset_contract(wallet)?;
    Ok(ours.then_some("a vault, receipt or authorizer contract of the issuer"))
}

/// `GET /tokenized-assets` and `GET /tokenization/tokens`: every (underlying, token) pair with
/// the networks it is on (those this issuer serves), frozen ones included (freezing suspends
/// minting, not the listing).
pub(super) async fn tokens(req: Request<AppState>) -> Result<Response, HttpError> {
    let mut assets = blocking(req.state(), |store| Ok(store.assets()?)).await?;
    assets.retain(|a| req.state().config().network_served(&a.network));
    Ok(json(
        StatusCode::Ok,
        &json!({ "tokens": token_list(&assets) }),
    ))
}

fn token_list(assets: &[Asset]) -> Vec<serde_json::Value> {
    let mut grouped: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for asset in assets {
        grouped
            .entry((asset.underlying.as_str(), asset.token.as_str()))
            .or_default()
            .insert(asset.network.as_str());
    }
    grouped
        .into_iter()
        .map(|((underlying, token), networks)| json!({ "underlying": underlying, "token": token, "networks": networks }))
        .collect()
}

/// `GET /tokenization/custody-accounts/{underlying_symbol}`: where Alpaca journals the shares.
pub(super) async fn custody_account(req: Request<AppState>) -> Result<Response, HttpError> {
    let unknown = || HttpError::NotFound("unknown underlying".into());
    let underlying =
        Symbol::parse(req.param("underlying_symbol").unwrap_or_default()).map_err(|_| unknown())?;
    let wanted = underlying.clone();
    let known = blocking(req.state(), move |store| {
        Ok(store.assets()?.iter().any(|a| a.underlying == wanted))
    })
    .await?;
    if !known {
        return Err(unknown());
    }
    let account_id = req.state().config().custody_account_id.clone();
    Ok(json(
        StatusCode::Ok,
        &json!({ "account_id": account_id, "underlying_symbol": underlying.as_str() }),
    ))
}

/// The issuance body in either spelling. Unknown fields are ignored: Alpaca may add some.
#[derive(Deserialize)]
struct IssuanceBody {
    tokenization_request_id: String,
    qty: String,
    underlying_symbol: String,
    token_symbol: String,
    network: String,
    wallet_address: String,
    /// Deprecated by Alpaca (2026-07-15) as an alias of `client_external_account_id`.
    client_id: Option<String>,
    client_external_account_id: Option<String>,
    client_account_id: Option<String>,
}

/// An issuance with every field parsed, before any rule is checked.
struct Issuance {
    trid: TokenizationRequestId,
    underlying: Symbol,
    token: Symbol,
    network: Network,
    client: ClientRef,
    wallet: Address,
}

impl IssuanceBody {
    /// Check 1 of the refusal table: every field present, of the right type and well formed.
    ///
    /// The client is named by exactly one of `client_external_account_id` (the id our connect
    /// endpoint answered; `client_id` is its deprecated alias and may come beside it only with
    /// the same value) or `client_account_id` (the AP's Alpaca account UUID).
    fn parse(&self) -> Result<Issuance, HttpError> {
        fn given(field: Option<&String>) -> Option<&str> {
            field.map(String::as_str).filter(|v| !v.is_empty())
        }
        let external = match (
            given(self.client_external_account_id.as_ref()),
            given(self.client_id.as_ref()),
        ) {
            (Some(a), Some(b)) if a != b => return Err(malformed()),
            (Some(id), _) => Some(id),
            (None, Some(id)) => {
                tracing::warn!(
                    "http: mint names its client by the deprecated client_id; echoing it as client_external_account_id"
                );
                Some(id)
            }
            (None, None) => None,
        };
        let client = match (external, given(self.client_account_id.as_ref())) {
            (Some(id), None) => {
                ClientRef::ClientExternalAccountId(ClientId::parse(id).map_err(|_| malformed())?)
            }
            (None, Some(id)) => {
                ClientRef::ClientAccountId(AlpacaAccountId::parse(id).map_err(|_| malformed())?)
            }
            _ => return Err(malformed()),
        };
        Ok(Issuance {
            trid: TokenizationRequestId::parse(&self.tokenization_request_id)
                .map_err(|_| malformed())?,
            underlying: Symbol::parse(&self.underlying_symbol).map_err(|_| malformed())?,
            token: Symbol::parse(&self.token_symbol).map_err(|_| malformed())?,
            network: Network::parse(&self.network).map_err(|_| malformed())?,
            client,
            wallet: parse_address(&self.wallet_address).map_err(|_| malformed())?,
        })
    }
}

impl Issuance {
    /// The canonical form of what defines the request: same id and same fingerprint is a repeat,
    /// same id and another fingerprint is a conflict. `|` and `=` cannot occur in the parsed ids.
    fn fingerprint(&self, qty: Qty) -> String {
        reconciler::mint::fingerprint(
            &self.trid,
            qty,
            &self.underlying,
            &self.token,
            &self.network,
            &self.client,
            self.wallet,
        )
    }
}

/// `POST /inkind/issuance` and `POST /tokenization/mint`: accepts a mint intent.
///
/// Checks run in the documented order (malformed, qty, token, eligibility, wallet, frozen), each
/// refusal a 400. A repeat of an accepted request (same id, same body) answers as the first time before
/// the rule checks, so a wallet removed or an asset frozen since cannot turn Alpaca's retry of an
/// accepted request into a final refusal.
pub(super) async fn issuance(req: Request<AppState>) -> Result<Response, HttpError> {
    let answered = accept_issuance(req).await;
    let metrics = crate::metrics::metrics();
    match &answered {
        Ok((_, repeat)) => metrics.intent("accepted", if *repeat { "repeat" } else { "created" }),
        Err(e) => metrics.intent("refused", refusal_reason(e)),
    }
    answered.map(|(id, _)| created(&id))
}

/// The metric label of a refused issuance: which rule, in a word.
fn refusal_reason(e: &HttpError) -> &'static str {
    match e {
        HttpError::Refused(m) if m == INVALID_TOKEN => "invalid_token",
        HttpError::Refused(m) if m == NOT_ELIGIBLE => "not_eligible",
        HttpError::Refused(m) if m == INVALID_WALLET => "invalid_wallet",
        HttpError::Refused(m) if m == ASSET_FROZEN => "asset_frozen",
        HttpError::Refused(_) | HttpError::Unprocessable(_) => "invalid_payload",
        HttpError::Conflict(_) => "conflict",
        HttpError::Store(_) => "store_failure",
        _ => "other",
    }
}

/// [`issuance`] without the answer's shape: the issuer_request_id, and whether it is a repeat.
async fn accept_issuance(mut req: Request<AppState>) -> Result<(IssuerRequestId, bool), HttpError> {
    let raw: IssuanceBody = mint_body(&mut req).await?;
    let issuance = raw.parse()?;
    let qty =
        Qty::parse_positive(&raw.qty).map_err(|_| HttpError::Refused(INVALID_PAYLOAD.into()))?;
    let fingerprint = issuance.fingerprint(qty);
    let issuer_request_id = IssuerRequestId::for_mint(&issuance.trid);
    let trid = issuance.trid.clone();
    let irid = issuer_request_id.clone();
    // Reads are microseconds on redb's MVCC snapshot: done inline. The write is queued for the
    // next group commit and awaited without parking a thread.
    let store = req.state().store();
    let pending = {
        if let Some(existing) = store.mint(&irid)? {
            if existing.intent.tokenization_request_id != trid {
                // A rebuilt mint under this id that names another request: an error, never the
                // final 409 (the store refuses the write the same way).
                return Err(crate::store::StoreError::Decode {
                    key: trid.to_string(),
                    detail: format!(
                        "the mint under this request id's derived id ({irid}) names another request ({})",
                        existing.intent.tokenization_request_id
                    ),
                }
                .into());
            }
            if existing.fingerprint == fingerprint {
                return Ok((existing.intent.issuer_request_id, true));
            }
            return Err(HttpError::Conflict(
                "tokenization_request_id already used with a different request".into(),
            ));
        }
        let (asset, client_id) = check_rules(store.as_ref(), req.state().config(), &issuance, qty)?;
        let check = IssuanceCheck {
            client_id,
            wallet: issuance.wallet,
            underlying: issuance.underlying.clone(),
            token: issuance.token.clone(),
            network: issuance.network.clone(),
            vault: asset.vault,
        };
        let record = MintRecord {
            intent: MintIntent {
                issuer_request_id: irid,
                tokenization_request_id: issuance.trid,
                client: issuance.client,
                wallet: issuance.wallet,
                underlying: issuance.underlying,
                token: issuance.token,
                network: issuance.network,
                qty,
                vault: asset.vault,
                journal: Journal::Pending,
                callback: Callback::NotSent,
                failed_attempts: 0,
                accepted_at: req.state().clock().unix_secs(),
            },
            fingerprint,
            reject_reason: None,
            problem: None,
            confirmed_at_ms: None,
        };
        store.submit_issuance_async(record, Some(check))
    };
    let outcome = pending.await?;
    match outcome {
        IssuanceOutcome::Created(id) => {
            tracing::info!(tokenization_request_id = %trid, issuer_request_id = %id, "http: issuance accepted");
            Ok((id, false))
        }
        IssuanceOutcome::Repeat(id) => Ok((id, true)),
        IssuanceOutcome::Conflict => Err(HttpError::Conflict(
            "tokenization_request_id already used with a different request".into(),
        )),
        // A freeze or a wallet removal committed between the checks above and the write.
        IssuanceOutcome::Refused(refusal) => Err(HttpError::Refused(
            match refusal {
                IssuanceRefusal::InvalidToken => INVALID_TOKEN,
                IssuanceRefusal::NotEligible => NOT_ELIGIBLE,
                IssuanceRefusal::InvalidWallet => INVALID_WALLET,
                IssuanceRefusal::Frozen => ASSET_FROZEN,
            }
            .into(),
        )),
    }
}

/// The answer to an accepted issuance, the first time and every repeat.
fn created(issuer_request_id: &IssuerRequestId) -> Response {
    json(
        StatusCode::Ok,
        &json!({ "issuer_request_id": issuer_request_id.as_str(), "status": "created" }),
    )
}

/// Checks 3 to 6 of the refusal table, in order; the asset to mint on and the client the
/// request resolved to if all pass. A network outside Alpaca's enum and the configured local ones
/// is an unknown token there; a quantity above the asset's limit is an invalid payload; a wallet
/// that is the issuer's own is not the client's.
fn check_rules(
    store: &dyn Store,
    config: &super::HttpConfig,
    issuance: &Issuance,
    qty: Qty,
) -> Result<(Asset, ClientId), HttpError> {
    if !config.network_allowed(&issuance.network) || !config.network_served(&issuance.network) {
        return Err(HttpError::Refused(INVALID_TOKEN.into()));
    }
    let asset = store
        .asset(&issuance.underlying, &issuance.network)?
        .filter(|a| a.token == issuance.token)
        .ok_or_else(|| HttpError::Refused(INVALID_TOKEN.into()))?;
    if qty > asset.mint_qty_max() {
        return Err(HttpError::Refused(INVALID_PAYLOAD.into()));
    }
    let account = match &issuance.client {
        ClientRef::ClientExternalAccountId(id) => store.account(AccountKey::Client(id))?,
        ClientRef::ClientAccountId(id) => store.account(AccountKey::Alpaca(id))?,
    };
    let Some(account) = account.filter(crate::store::Account::linked) else {
        return Err(HttpError::Refused(NOT_ELIGIBLE.into()));
    };
    if issuer_address(store, config, issuance.wallet)?.is_some()
        || store
            .account(AccountKey::Wallet(issuance.wallet))?
            .is_none_or(|owner| owner.client_id != account.client_id)
    {
        return Err(HttpError::Refused(INVALID_WALLET.into()));
    }
    if asset.frozen {
        return Err(HttpError::Refused(ASSET_FROZEN.into()));
    }
    Ok((asset, account.client_id))
}

#[derive(Deserialize)]
struct ConfirmBody {
    tokenization_request_id: String,
    issuer_request_id: String,
    status: String,
    reason: Option<String>,
}

/// `POST /inkind/issuance/confirm` and `POST /tokenization/mint/confirm`: records Alpaca's
/// journal outcome. The same confirmation always gets the same answer (Alpaca retries it); the
/// opposite final status is 409. `completed` wakes the reconciler, which mints.
pub(super) async fn confirm(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let raw: ConfirmBody = mint_body(&mut req).await?;
    let trid =
        TokenizationRequestId::parse(&raw.tokenization_request_id).map_err(|_| malformed())?;
    let irid = IssuerRequestId::parse(&raw.issuer_request_id).map_err(|_| malformed())?;
    let journal = match raw.status.as_str() {
        "completed" => Journal::Completed,
        "rejected" => Journal::Rejected,
        _ => return Err(malformed()),
    };
    let answer = json!({
        "tokenization_request_id": trid.as_str(),
        "issuer_request_id": irid.as_str(),
        "status": raw.status,
    });
    let reason = raw.reason;
    let (t, i) = (trid.clone(), irid.clone());
    let at_ms = req.state().clock().unix_ms();
    let outcome = blocking(req.state(), move |store| {
        Ok(store.confirm_issuance(&t, &i, journal, reason, at_ms)?)
    })
    .await?;
    match outcome {
        ConfirmOutcome::Recorded => {
            tracing::info!(tokenization_request_id = %trid, issuer_request_id = %irid, status = ?journal, "http: journal confirmed");
            if journal == Journal::Completed {
                req.state().wake();
            }
            Ok(json(StatusCode::Ok, &answer))
        }
        ConfirmOutcome::Unknown => Err(HttpError::NotFound("unknown issuer_request_id".into())),
        ConfirmOutcome::Mismatch => Err(HttpError::Refused(
            "issuer_request_id does not belong to tokenization_request_id".into(),
        )),
        ConfirmOutcome::Conflict => Err(HttpError::Conflict(
            "journal already has the opposite status".into(),
        )),
    }
}
