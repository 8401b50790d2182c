//! Operator routes under `/operator/...`: the facts only an operator can establish (who is an AP,
//! which wallets are theirs, which vaults exist, what is frozen) and a view of stuck work.

use super::alpaca::{address_text, checked_email, whitelist};
use super::{blocking, body, json, AppState, HttpError, INVALID_PAYLOAD};
use crate::store::{Account, AccountKey, Asset, AttachOutcome, Directory, ReturnOutcome, Select};
use alloy::primitives::Address;
use reconciler::{
    parse_address, AlpacaAccountId, Callback, ClientId, IssuerRequestId, Journal, Network, Symbol,
    TxPurpose,
};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use tide::{Request, Response, StatusCode};

/// Work older than this without progress is listed by `stuck`: a healthy pass finishes in a few
/// seconds, so a minute means something is waiting on a fault.
const STUCK_AFTER_SECS: u64 = 60;

fn invalid() -> HttpError {
    HttpError::Unprocessable(INVALID_PAYLOAD.into())
}

fn nonzero_address(text: &str) -> Result<Address, HttpError> {
    parse_address(text)
        .ok()
        .filter(|a| !a.is_zero())
        .ok_or_else(invalid)
}

fn account_json(account: &Account, wallets: &BTreeMap<&str, Vec<String>>) -> serde_json::Value {
    json!({
        "client_id": account.client_id.as_str(),
        "email": account.email,
        "linked": account.linked(),
        "account_number": account.account_number,
        "alpaca_account_id": account.alpaca_account_id.as_ref().map(AlpacaAccountId::as_str),
        "wallets": wallets.get(account.client_id.as_str()).cloned().unwrap_or_default(),
    })
}

#[derive(Deserialize)]
struct RegisterBody {
    email: String,
}

/// `POST /operator/accounts {email}`: registers an AP (idempotent per normalised email) so
/// Alpaca can link it.
pub(super) async fn register_account(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let RegisterBody { email } = body(&mut req).await?;
    let email = checked_email(&email)?;
    let account = blocking(
        req.state(),
        move |store| Ok(store.register_account(&email)?),
    )
    .await?;
    Ok(json(
        StatusCode::Ok,
        &json!({ "client_id": account.client_id.as_str(), "email": account.email, "linked": account.linked() }),
    ))
}

/// `GET /operator/accounts`: every account with its whitelisted wallets.
pub(super) async fn accounts(req: Request<AppState>) -> Result<Response, HttpError> {
    let Directory {
        accounts, wallets, ..
    } = blocking(req.state(), |store| Ok(store.directory()?)).await?;
    let mut by_client: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (wallet, client) in &wallets {
        by_client
            .entry(client.as_str())
            .or_default()
            .push(address_text(*wallet));
    }
    let list: Vec<_> = accounts
        .iter()
        .map(|a| account_json(a, &by_client))
        .collect();
    Ok(json(StatusCode::Ok, &json!({ "accounts": list })))
}

#[derive(Deserialize)]
struct AlpacaAccountBody {
    alpaca_account_id: String,
}

/// `POST /operator/accounts/{client_id}/alpaca-account {alpaca_account_id}`: attaches the AP's
/// Alpaca account UUID to a registered client, so a mint naming `client_account_id` resolves to
/// it and its redemptions are requested under that field. Idempotent; 404 unknown client, 409
/// when the UUID belongs to another client or the client already has another UUID.
pub(super) async fn attach_alpaca_account(
    mut req: Request<AppState>,
) -> Result<Response, HttpError> {
    let AlpacaAccountBody { alpaca_account_id } = body(&mut req).await?;
    let uuid = AlpacaAccountId::parse(&alpaca_account_id).map_err(|_| invalid())?;
    let unknown = || HttpError::NotFound("unknown client".into());
    let client =
        ClientId::parse(req.param("client_id").unwrap_or_default()).map_err(|_| unknown())?;
    let (c, u) = (client.clone(), uuid.clone());
    let outcome = blocking(req.state(), move |store| {
        Ok(store.attach_alpaca_account(&c, &u)?)
    })
    .await?;
    match outcome {
        AttachOutcome::Attached(account) => {
            tracing::info!(client_id = %client, alpaca_account_id = %uuid, "http: Alpaca account attached");
            Ok(json(
                StatusCode::Ok,
                &json!({
                    "client_id": account.client_id.as_str(),
                    "alpaca_account_id": uuid.as_str(),
                    "linked": account.linked(),
                }),
            ))
        }
        AttachOutcome::UnknownClient => Err(unknown()),
        AttachOutcome::TakenBy(owner) => Err(HttpError::Conflict(format!(
            "alpaca_account_id is attached to another client ({owner})"
        ))),
        AttachOutcome::HasOther(other) => Err(HttpError::Conflict(format!(
            "client already has alpaca_account_id {other}"
        ))),
    }
}

#[derive(Deserialize)]
struct WalletBody {
    client_id: String,
    wallet: String,
}

fn parse_wallet_body(raw: &WalletBody) -> Result<(ClientId, Address), HttpError> {
    let client = ClientId::parse(&raw.client_id).map_err(|_| invalid())?;
    let wallet = parse_address(&raw.wallet).map_err(|_| invalid())?;
    Ok((client, wallet))
}

/// `POST /operator/wallets {client_id, wallet}`: whitelists a wallet (404 unknown client, 409
/// wallet of another client).
pub(super) async fn add_wallet(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let raw: WalletBody = body(&mut req).await?;
    let (client, wallet) = parse_wallet_body(&raw)?;
    let answer = json!({ "client_id": client.as_str(), "wallet": address_text(wallet), "whitelisted": true });
    let config = req.state().config().clone();
    blocking(req.state(), move |store| {
        whitelist(store, &config, &client, wallet)
    })
    .await?;
    Ok(json(StatusCode::Ok, &answer))
}

/// `DELETE /operator/wallets {client_id, wallet}`: un-whitelists a wallet. Idempotent:
/// `removed` says whether it was whitelisted for that client. Mints already accepted for it are
/// not touched; new ones are refused.
pub(super) async fn remove_wallet(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let raw: WalletBody = body(&mut req).await?;
    let (client, wallet) = parse_wallet_body(&raw)?;
    let c = client.clone();
    let removed = blocking(req.state(), move |store| {
        if store.account(AccountKey::Client(&c))?.is_none() {
            return Err(HttpError::NotFound("unknown client".into()));
        }
        Ok(store.remove_wallet(&c, wallet)?)
    })
    .await?;
    Ok(json(
        StatusCode::Ok,
        &json!({ "client_id": client.as_str(), "wallet": address_text(wallet), "removed": removed }),
    ))
}

#[derive(Deserialize)]
struct AssetBody {
    underlying: String,
    token: String,
    network: String,
    vault: String,
    receipt: String,
    authorizer: String,
    deploy_block: u64,
    /// Absent: a new asset starts unfrozen and a replaced one keeps its state, so redeploying a
    /// frozen asset's vault does not silently resume minting.
    frozen: Option<bool>,
    /// Largest quantity one mint may ask for (a positive decimal string). Absent: a new asset
    /// takes the default, a replaced one keeps its limit.
    mint_qty_max: Option<String>,
}

/// `POST /operator/assets`: adds or replaces the asset for (underlying, network).
pub(super) async fn put_asset(mut req: Request<AppState>) -> Result<Response, HttpError> {
    let raw: AssetBody = body(&mut req).await?;
    let underlying = Symbol::parse(&raw.underlying).map_err(|_| invalid())?;
    let token = Symbol::parse(&raw.token).map_err(|_| invalid())?;
    let network = Network::parse(&raw.network).map_err(|_| invalid())?;
    if !req.state().config().network_allowed(&network) {
        return Err(HttpError::Unprocessable(format!(
            "network {network} is neither one of Alpaca's ({}) nor a configured local network",
            super::ALPACA_NETWORKS.join(", ")
        )));
    }
    let vault = nonzero_address(&raw.vault)?;
    let receipt = nonzero_address(&raw.receipt)?;
    let authorizer = nonzero_address(&raw.authorizer)?;
    let mint_qty_max = raw
        .mint_qty_max
        .as_deref()
        .map(reconciler::Qty::parse_positive)
        .transpose()
        .map_err(|e| HttpError::Unprocessable(format!("mint_qty_max: {e}")))?;
    let (deploy_block, frozen) = (raw.deploy_block, raw.frozen);
    let asset = blocking(req.state(), move |store| {
        let existing = store.asset(&underlying, &network)?;
        let kept = existing.as_ref().is_some_and(|a| a.frozen);
        let kept_max = existing.and_then(|a| a.mint_qty_max);
        let asset = Asset {
            underlying,
            token,
            network,
            vault,
            receipt,
            authorizer,
            deploy_block,
            frozen: frozen.unwrap_or(kept),
            mint_qty_max: mint_qty_max.or(kept_max),
        };
        store.put_asset(&asset)?;
        Ok(asset)
    })
    .await?;
    tracing::info!(underlying = %asset.underlying, network = %asset.network, vault = %asset.vault, "http: asset recorded");
    Ok(json(StatusCode::Ok, &asset))
}

/// `GET /operator/assets`: every asset, with the vault's supply as last read for `/metrics`
/// (whole shares), what this issuer converged on it (acknowledged mints minus burned
/// redemptions, from the cache) and their difference. `issuer report` is the authority.
pub(super) async fn assets(req: Request<AppState>) -> Result<Response, HttpError> {
    let (assets, mints, redemptions) = blocking(req.state(), |store| {
        Ok((
            store.assets()?,
            store.mints(Select::All)?,
            store.redemptions(Select::All)?,
        ))
    })
    .await?;
    let listed: Vec<serde_json::Value> = assets
        .iter()
        .map(|asset| {
            let mut converged = reconciler::Qty::ZERO;
            for m in mints.iter().filter(|m| {
                m.intent.vault == asset.vault && matches!(m.intent.callback, Callback::Acked { .. })
            }) {
                converged = converged.checked_add(m.intent.qty).unwrap_or(converged);
            }
            for r in redemptions.iter().filter(|r| {
                r.vault == asset.vault
                    && matches!(r.state, reconciler::RedemptionState::Burned { .. })
            }) {
                converged = converged.checked_sub(r.split().0).unwrap_or(converged);
            }
            let supply = crate::metrics::metrics()
                .supply
                .get_or_create(&crate::metrics::AssetLabels {
                    underlying: asset.underlying.to_string(),
                    network: asset.network.to_string(),
                })
                .get();
            let converged_shares: f64 = converged.to_decimal().parse().unwrap_or(f64::NAN);
            let difference = supply - converged_shares;
            let mut value = serde_json::to_value(asset).unwrap_or_default();
            if let Some(fields) = value.as_object_mut() {
                fields.insert("supply".into(), json!(format!("{supply}")));
                fields.insert("converged".into(), json!(converged.to_decimal()));
                let shown = if difference.abs() < 1e-9 {
                    "0".to_owned()
                } else {
                    format!("{difference:.9}")
                };
                fields.insert("difference".into(), json!(shown));
            }
            value
        })
        .collect();
    Ok(json(StatusCode::Ok, &json!({ "assets": listed })))
}

/// `GET /operator/mints?limit=N`: the most recent mints (default 50, at most 1000), newest first,
/// with the deposit's transaction once Alpaca acknowledged it.
pub(super) async fn mints(req: Request<AppState>) -> Result<Response, HttpError> {
    let limit = req
        .url()
        .query_pairs()
        .find(|(k, _)| k == "limit")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(50)
        .min(1000);
    let mut all = blocking(req.state(), |store| Ok(store.mints(Select::All)?)).await?;
    all.sort_by_key(|m| std::cmp::Reverse(m.intent.accepted_at));
    let items: Vec<_> = all.iter().take(limit).map(mint_json).collect();
    Ok(json(StatusCode::Ok, &json!({ "mints": items })))
}

/// `POST /operator/assets/{underlying}/freeze`: suspends minting on every network.
pub(super) async fn freeze(req: Request<AppState>) -> Result<Response, HttpError> {
    set_frozen(req, true).await
}

/// `POST /operator/assets/{underlying}/unfreeze`.
pub(super) async fn unfreeze(req: Request<AppState>) -> Result<Response, HttpError> {
    set_frozen(req, false).await
}

async fn set_frozen(req: Request<AppState>, frozen: bool) -> Result<Response, HttpError> {
    let unknown = || HttpError::NotFound("unknown underlying".into());
    let underlying =
        Symbol::parse(req.param("underlying").unwrap_or_default()).map_err(|_| unknown())?;
    let u = underlying.clone();
    let changed = blocking(req.state(), move |store| Ok(store.set_frozen(&u, frozen)?)).await?;
    if changed == 0 {
        return Err(unknown());
    }
    tracing::info!(%underlying, frozen, "http: asset freeze changed");
    Ok(json(
        StatusCode::Ok,
        &json!({ "underlying": underlying.as_str(), "frozen": frozen, "assets_changed": changed }),
    ))
}

/// One mint as operators see it (the stuck list and the recent mints): its ids, state, problem
/// (as text, and typed) and the deposit's transaction once Alpaca acknowledged it.
fn mint_json(m: &crate::store::MintRecord) -> serde_json::Value {
    let tx_hash = match &m.intent.callback {
        Callback::Acked { tx_hash } => Some(format!("{tx_hash:#x}")),
        _ => None,
    };
    json!({
        "issuer_request_id": m.intent.issuer_request_id.as_str(),
        "tokenization_request_id": m.intent.tokenization_request_id.as_str(),
        "underlying": m.intent.underlying.as_str(),
        "network": m.intent.network.as_str(),
        "qty": m.intent.qty.to_decimal(),
        "journal": m.intent.journal,
        "callback": m.intent.callback,
        "failed_attempts": m.intent.failed_attempts,
        "accepted_at": m.intent.accepted_at,
        "problem": m.problem.as_ref().map(ToString::to_string),
        "problem_detail": m.problem,
        "tx_hash": tx_hash,
    })
}

/// `GET /operator/stuck`: work that is not converging, for a human to look at.
///
/// - `mints`: every mint with a `problem` (the reconciler stopped on it), and every mint whose
///   journal is completed but whose callback is not acknowledged although it was accepted more
///   than a minute ago (there is no confirmation timestamp, so the age is since acceptance).
/// - `transactions`: every unsettled transaction of ours, with its network. They carry no wall-clock time, only
///   the block they were signed at, so all are listed with that block.
pub(super) async fn stuck(req: Request<AppState>) -> Result<Response, HttpError> {
    let (mints, txs, redemptions) = blocking(req.state(), |store| {
        let networks: std::collections::BTreeSet<_> =
            store.assets()?.into_iter().map(|a| a.network).collect();
        let mut txs = Vec::new();
        for network in &networks {
            txs.extend(
                store
                    .unsettled_txs(network)?
                    .into_iter()
                    .map(|tx| (network.clone(), tx)),
            );
        }
        Ok((
            store.mints(Select::All)?,
            txs,
            store.redemptions(Select::All)?,
        ))
    })
    .await?;
    // Flagged redemptions wait for an operator; others that failed before may be heading there.
    let stuck_redemptions: Vec<_> = redemptions
        .iter()
        .filter(|r| {
            matches!(r.state, reconciler::RedemptionState::Flagged { .. })
                || (!r.state.is_final() && r.failed_attempts > 0)
        })
        .map(|r| {
            json!({
                "id": r.id.as_str(),
                "sender": address_text(r.sender),
                "qty": r.qty.to_decimal(),
                "state": r.state,
                "failed_attempts": r.failed_attempts,
                "tx_hash": format!("{:#x}", r.tx_hash),
            })
        })
        .collect();
    let now = req.state().clock().unix_secs();
    let stuck_mints: Vec<_> = mints
        .iter()
        .filter(|m| {
            let unacked = m.intent.journal == Journal::Completed
                && !matches!(m.intent.callback, Callback::Acked { .. });
            m.problem.is_some()
                || (unacked && now.saturating_sub(m.intent.accepted_at) > STUCK_AFTER_SECS)
        })
        .map(mint_json)
        .collect();
    let stuck_txs: Vec<_> = txs
        .iter()
        .map(|(network, tx)| {
            let label = match &tx.purpose {
                TxPurpose::Mint { issuer_request_ids, .. } => format!("mint of {} intents", issuer_request_ids.len()),
                TxPurpose::Burn { redemption_id, .. } => format!("burn for redemption {redemption_id}"),
                TxPurpose::Return { redemption_id, .. } => format!("return of redemption {redemption_id}"),
                TxPurpose::Other { label } => label.clone(),
            };
            json!({
                "network": network.as_str(),
                "nonce": tx.nonce,
                "to": address_text(tx.to),
                "purpose": label,
                "variants": tx.variants.iter().map(|v| format!("{:#x}", v.hash)).collect::<Vec<_>>(),
                "signed_at_block": tx.variants.last().map(|v| v.signed_at_block),
            })
        })
        .collect();
    Ok(json(
        StatusCode::Ok,
        &json!({ "mints": stuck_mints, "transactions": stuck_txs, "redemptions": stuck_redemptions }),
    ))
}

/// `GET /operator/redemptions`: every redemption with its state, newest first.
pub(super) async fn redemptions(req: Request<AppState>) -> Result<Response, HttpError> {
    let mut all = blocking(req.state(), |store| Ok(store.redemptions(Select::All)?)).await?;
    all.sort_by_key(|r| std::cmp::Reverse((r.block_number, r.log_index)));
    let items: Vec<_> = all
        .iter()
        .map(|r| {
            let (kept, dust) = r.split();
            json!({
                "id": r.id.as_str(),
                "vault": address_text(r.vault),
                "sender": address_text(r.sender),
                "client_id": r.client_id.as_ref().map(ClientId::as_str),
                "qty": r.qty.to_decimal(),
                "qty_journaled": kept.to_decimal(),
                "dust": dust.to_decimal(),
                "tx_hash": format!("{:#x}", r.tx_hash),
                "log_index": r.log_index,
                "block_number": r.block_number,
                "state": r.state,
            })
        })
        .collect();
    Ok(json(StatusCode::Ok, &json!({ "redemptions": items })))
}

/// `POST /operator/redemptions/{id}/return`: send a flagged redemption's tokens back to its
/// sender. Idempotent; the reconciler sends exactly one return transaction.
pub(super) async fn return_redemption(req: Request<AppState>) -> Result<Response, HttpError> {
    let unknown = || HttpError::NotFound("unknown redemption".into());
    let id = IssuerRequestId::parse(req.param("id").unwrap_or_default()).map_err(|_| unknown())?;
    let asked = id.clone();
    let outcome = blocking(req.state(), move |store| Ok(store.request_return(&asked)?)).await?;
    match outcome {
        ReturnOutcome::Requested => {
            req.state().wake();
            tracing::warn!(redemption = %id, "http: operator asked to return a redemption");
            Ok(json(
                StatusCode::Ok,
                &json!({ "id": id.as_str(), "return_requested": true }),
            ))
        }
        ReturnOutcome::NotFlagged(state) => Err(HttpError::Conflict(format!(
            "redemption is not flagged (state {}): only flagged redemptions can be returned",
            serde_json::to_value(&state)
                .ok()
                .and_then(|v| v.get("state").cloned())
                .unwrap_or_default()
        ))),
        ReturnOutcome::NotReturnable(anomaly) => Err(HttpError::Conflict(format!(
            "redemption is flagged as {anomaly:?}: Alpaca may have journaled the shares back, so \
             returning the tokens could pay twice; settle it with Alpaca first"
        ))),
        ReturnOutcome::Unknown => Err(unknown()),
    }
}

/// `POST /operator/mints/{id}/retry`: after an operator fixed what made a mint's transactions
/// fail (an expired certification, a missing role) or what made Alpaca refuse its callback, its
/// attempts start again. Nothing is sent
/// here; the reconciler still looks for the tagged deposit before minting.
pub(super) async fn retry_mint(req: Request<AppState>) -> Result<Response, HttpError> {
    let unknown = || HttpError::NotFound("unknown mint".into());
    let id = IssuerRequestId::parse(req.param("id").unwrap_or_default()).map_err(|_| unknown())?;
    let asked = id.clone();
    let updated = blocking(req.state(), move |store| {
        Ok(store.update_mint(
            &asked,
            Box::new(|m| {
                m.intent.failed_attempts = 0;
                m.problem = None;
                // A callback Alpaca refused is sent again, after asking Alpaca whether it has it.
                if matches!(m.intent.callback, Callback::Refused { .. }) {
                    m.intent.callback = Callback::Attempted;
                }
            }),
        )?)
    })
    .await?
    .ok_or_else(unknown)?;
    req.state().wake();
    tracing::warn!(issuer_request_id = %id, "http: operator retries a mint");
    Ok(json(
        StatusCode::Ok,
        &json!({ "issuer_request_id": id.as_str(), "failed_attempts": updated.intent.failed_attempts }),
    ))
}

/// `POST /operator/redemptions/{id}/retry`: a redemption flagged because its burns kept failing
/// goes back to burning (Alpaca has journaled it), with its attempts reset; one whose redeem call
/// Alpaca refused goes back to asking (Alpaca is looked up first, then called again).
pub(super) async fn retry_redemption(req: Request<AppState>) -> Result<Response, HttpError> {
    use reconciler::{Anomaly, RedemptionState};
    let unknown = || HttpError::NotFound("unknown redemption".into());
    let id = IssuerRequestId::parse(req.param("id").unwrap_or_default()).map_err(|_| unknown())?;
    let asked = id.clone();
    let current = blocking(req.state(), move |store| Ok(store.redemption(&asked)?))
        .await?
        .ok_or_else(unknown)?;
    let next = match &current.state {
        RedemptionState::Flagged {
            anomaly: Anomaly::BurnFailed { .. },
            tokenization_request_id: Some(trid),
            ..
        } => RedemptionState::Journaled {
            tokenization_request_id: trid.clone(),
        },
        RedemptionState::Flagged {
            anomaly: Anomaly::RedeemRefused { .. },
            return_requested: false,
            ..
        } => RedemptionState::Requesting,
        _ => {
            return Err(HttpError::Conflict(
                "only a redemption whose burns failed or whose redeem call Alpaca refused can be retried".into(),
            ))
        }
    };
    let shown = match next {
        RedemptionState::Requesting => "requesting",
        _ => "journaled",
    };
    let asked = id.clone();
    let expected = current.state.clone();
    let updated = blocking(req.state(), move |store| {
        Ok(store.update_redemption(
            &asked,
            Box::new(move |r| {
                // Re-checked inside the write: only if nothing changed it meanwhile.
                if r.state == expected {
                    r.failed_attempts = 0;
                    r.state = next;
                }
            }),
        )?)
    })
    .await?
    .ok_or_else(unknown)?;
    if updated.state == current.state {
        return Err(HttpError::Conflict(
            "the redemption changed meanwhile; look again".into(),
        ));
    }
    req.state().wake();
    tracing::warn!(redemption = %id, state = shown, "http: operator retries a redemption");
    Ok(json(
        StatusCode::Ok,
        &json!({ "id": id.as_str(), "state": shown }),
    ))
}
