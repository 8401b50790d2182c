//! Deploying one asset's contracts: receipt, vault and authorizer, wired, roles granted to the
//! bot, certified. Each step is checked by reading the state back, because a vault with a
//! payable fallback "succeeds" at calls it does not implement.

use super::{Authorizer, BotSigner, ChainError, Receipt, Vault};
use alloy::network::EthereumWallet;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{Provider, ProviderBuilder};

/// Where one asset's contracts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployed {
    pub vault: Address,
    pub receipt: Address,
    pub authorizer: Address,
    /// Block of the vault's deployment: scans start here.
    pub deploy_block: u64,
}

fn step(what: &'static str) -> impl Fn(alloy::contract::Error) -> ChainError {
    move |e| ChainError::Deploy(crate::config::sanitise_for_log(&format!("{what}: {e}")))
}

/// Waits for a sent transaction's receipt and insists it succeeded: a reverted step is an error
/// naming it, not something only the read-back notices.
async fn mined(
    what: &'static str,
    sent: Result<
        alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
        alloy::contract::Error,
    >,
) -> Result<(), ChainError> {
    let receipt = sent
        .map_err(step(what))?
        .get_receipt()
        .await
        .map_err(pending(what))?;
    if receipt.status() {
        Ok(())
    } else {
        Err(ChainError::Deploy(format!(
            "{what}: transaction {} reverted",
            receipt.transaction_hash
        )))
    }
}

fn pending(what: &'static str) -> impl Fn(alloy::providers::PendingTransactionError) -> ChainError {
    move |e| ChainError::Deploy(crate::config::sanitise_for_log(&format!("{what}: {e}")))
}

/// Deploys a fresh set of contracts for one asset and makes the bot able to mint and burn.
pub async fn deploy(
    rpc_url: &str,
    signer: &BotSigner,
    name: &str,
    symbol: &str,
    certify_until: u64,
) -> Result<Deployed, ChainError> {
    let url = rpc_url
        .parse()
        .map_err(|_| ChainError::BadUrl(crate::config::redact_url(rpc_url)))?;
    let bot = signer.address();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::new(signer.clone()))
        .connect_http(url);

    let receipt = Receipt::deploy(&provider)
        .await
        .map_err(step("deploy Receipt"))?;
    let vault = Vault::deploy(
        &provider,
        name.to_owned(),
        symbol.to_owned(),
        *receipt.address(),
        bot,
    )
    .await
    .map_err(step("deploy Vault"))?;
    let deploy_block = provider
        .get_block_number()
        .await
        .map_err(|e| ChainError::Rpc {
            call: "eth_blockNumber",
            detail: crate::config::sanitise_for_log(&e.to_string()),
        })?;
    let authorizer = Authorizer::deploy(&provider, bot)
        .await
        .map_err(step("deploy Authorizer"))?;

    mined(
        "transferManager",
        receipt.transferManager(*vault.address()).send().await,
    )
    .await?;
    mined(
        "setAuthorizer",
        vault.setAuthorizer(*authorizer.address()).send().await,
    )
    .await?;

    let deployed = Deployed {
        vault: *vault.address(),
        receipt: *receipt.address(),
        authorizer: *authorizer.address(),
        deploy_block,
    };
    ensure_ready(rpc_url, signer, deployed, certify_until).await?;
    Ok(deployed)
}

/// Grants the bot DEPOSIT, WITHDRAW and CERTIFY and certifies the vault until `certify_until`,
/// doing only what is missing. Safe to run any number of times.
pub async fn ensure_ready(
    rpc_url: &str,
    signer: &BotSigner,
    deployed: Deployed,
    certify_until: u64,
) -> Result<(), ChainError> {
    let url = rpc_url
        .parse()
        .map_err(|_| ChainError::BadUrl(crate::config::redact_url(rpc_url)))?;
    let bot = signer.address();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::new(signer.clone()))
        .connect_http(url);
    let vault = Vault::new(deployed.vault, &provider);
    let receipt = Receipt::new(deployed.receipt, &provider);
    let authorizer = Authorizer::new(deployed.authorizer, &provider);

    let manager = receipt
        .manager()
        .call()
        .await
        .map_err(step("read manager"))?;
    if manager != deployed.vault {
        return Err(ChainError::Deploy(format!(
            "receipt manager is {manager}, not the vault"
        )));
    }
    let wired = vault
        .authorizer()
        .call()
        .await
        .map_err(step("read authorizer"))?;
    if wired != deployed.authorizer {
        return Err(ChainError::Deploy(format!(
            "vault authorizer is {wired}, not {}",
            deployed.authorizer
        )));
    }

    for (name, role) in [
        (
            "DEPOSIT",
            authorizer
                .DEPOSIT()
                .call()
                .await
                .map_err(step("read DEPOSIT"))?,
        ),
        (
            "WITHDRAW",
            authorizer
                .WITHDRAW()
                .call()
                .await
                .map_err(step("read WITHDRAW"))?,
        ),
        (
            "CERTIFY",
            authorizer
                .CERTIFY()
                .call()
                .await
                .map_err(step("read CERTIFY"))?,
        ),
    ] {
        if !authorizer
            .hasRole(role, bot)
            .call()
            .await
            .map_err(step("read role"))?
        {
            mined("grantRole", authorizer.grantRole(role, bot).send().await).await?;
            if !authorizer
                .hasRole(role, bot)
                .call()
                .await
                .map_err(step("read role"))?
            {
                return Err(ChainError::Deploy(format!(
                    "bot still lacks {name} after grantRole"
                )));
            }
        }
    }

    let until = vault
        .certifiedUntil()
        .call()
        .await
        .map_err(step("read certifiedUntil"))?;
    if until < U256::from(certify_until) {
        mined(
            "certify",
            vault
                .certify(U256::from(certify_until), false, Bytes::new())
                .send()
                .await,
        )
        .await?;
    }
    if vault
        .isCertificationExpired()
        .call()
        .await
        .map_err(step("read certification"))?
    {
        return Err(ChainError::Deploy(
            "vault is still uncertified after certify".into(),
        ));
    }
    Ok(())
}

/// The roles the bot needs on a vault's authorizer to run: DEPOSIT to mint, WITHDRAW to burn.
/// (CERTIFY is needed only by `issuer deploy`, which grants and checks it itself.)
pub const ROLES_TO_RUN: [&str; 2] = ["DEPOSIT", "WITHDRAW"];
