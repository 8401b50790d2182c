//! Our vault behaves as Rain's OffchainAssetReceiptVault does at its interface: the same
//! selectors and event topics, ids from highwaterId + 1, a 1e18 share ratio, burns that need
//! both shares and receipts, roles checked on the caller, certification gating transfers, and a
//! fallback that silently accepts unknown calls. Each behaviour runs on a real anvil.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, Bytes, FixedBytes, U256};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::{SolCall, SolError, SolEvent};
use issuer::chain::{mint_calldata, Authorizer, EthersSigner, Receipt, Vault, SHARE_RATIO};

fn selector(hex: &str) -> FixedBytes<4> {
    hex.parse().unwrap()
}

#[test]
fn selectors_and_topics_match_rains_vault() {
    assert_eq!(Vault::depositCall::SELECTOR, selector("0x1423feba").0);
    assert_eq!(Vault::redeemCall::SELECTOR, selector("0x921a4c42").0);
    assert_eq!(Vault::withdrawCall::SELECTOR, selector("0xae57de0c").0);
    assert_eq!(
        Vault::previewDepositCall::SELECTOR,
        selector("0x7a7af70d").0
    );
    assert_eq!(Vault::multicallCall::SELECTOR, selector("0xac9650d8").0);
    assert_eq!(Vault::certifyCall::SELECTOR, selector("0xe70689f5").0);
    assert_eq!(
        Vault::Deposit::SIGNATURE_HASH,
        "0x3377bcbed49a0c0005e53931cd8fe7334b5371523e5de784c0d0d3d01089cfea"
            .parse::<FixedBytes<32>>()
            .unwrap()
    );
    assert_eq!(
        Vault::Withdraw::SIGNATURE_HASH,
        "0x2845b9458bcc357e1abfe8de7f6832dfe7220596a053496b33d0deb6577d8d2a"
            .parse::<FixedBytes<32>>()
            .unwrap()
    );
    assert_eq!(
        Receipt::CertificationExpired::SELECTOR,
        selector("0xfe720f78").0
    );
    assert_eq!(Authorizer::Unauthorized::SELECTOR, selector("0x3ae4063b").0);
}

fn wallet_provider(rpc: &str, signer: &EthersSigner) -> impl Provider + Clone {
    ProviderBuilder::new()
        .wallet(EthereumWallet::new(signer.clone()))
        .connect_http(rpc.parse().unwrap())
}

/// The 4-byte selector of a revert, from a failed call or send.
fn revert_selector(err: &alloy::contract::Error) -> Option<[u8; 4]> {
    let data = err.as_revert_data()?;
    data.get(..4).map(|s| [s[0], s[1], s[2], s[3]])
}

#[tokio::test(flavor = "multi_thread")]
async fn deposit_burn_roles_and_certification() {
    let anvil = common::anvil(None);
    let rpc = anvil.endpoint();
    let bot = common::bot();
    let deployed = common::deploy_vault(&rpc).await;
    let provider = wallet_provider(&rpc, &bot);
    let vault = Vault::new(deployed.vault, provider.clone());
    let receipt = Receipt::new(deployed.receipt, provider.clone());
    let ap: Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
        .parse()
        .unwrap();

    // Deployed, wired, certified, bot authorised.
    assert!(!provider
        .get_code_at(deployed.vault)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(vault.receipt().call().await.unwrap(), deployed.receipt);
    assert_eq!(
        vault.authorizer().call().await.unwrap(),
        deployed.authorizer
    );
    assert!(!vault.isCertificationExpired().call().await.unwrap());
    assert_eq!(vault.decimals().call().await.unwrap(), 18);
    assert_eq!(vault.highwaterId().call().await.unwrap(), U256::ZERO);

    // A mint: multicall([deposit, transfer]). Log order: Deposit, Transfer, ReceiptInformation, TransferSingle.
    let assets = U256::from(1_500_000_000_000_000_000u128);
    let input = mint_calldata(bot.address(), &[(ap, assets, b"info-1".to_vec())]);
    let tx = TransactionRequest::default()
        .to(deployed.vault)
        .input(input.into());
    let mined = provider
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(mined.status());
    let topics: Vec<_> = mined.inner.logs().iter().map(|l| l.topics()[0]).collect();
    assert_eq!(topics[0], Vault::Deposit::SIGNATURE_HASH);
    assert_eq!(topics[1], Vault::Transfer::SIGNATURE_HASH);
    assert_eq!(topics[2], Receipt::ReceiptInformation::SIGNATURE_HASH);
    assert_eq!(topics[3], Receipt::TransferSingle::SIGNATURE_HASH);
    let deposit = mined.inner.logs()[0]
        .log_decode::<Vault::Deposit>()
        .unwrap()
        .inner
        .data;
    assert_eq!(
        deposit.sender,
        bot.address(),
        "inside multicall the sender is still the bot"
    );
    assert_eq!(deposit.owner, bot.address());
    assert_eq!(
        deposit.shares, assets,
        "1e18 share ratio: one share per asset"
    );
    assert_eq!(deposit.id, U256::from(1), "ids start at highwaterId + 1");
    assert!(
        mined.inner.logs()[0].topics().len() == 1,
        "no indexed fields"
    );
    assert_eq!(vault.balanceOf(ap).call().await.unwrap(), assets);
    assert_eq!(
        vault.balanceOf(bot.address()).call().await.unwrap(),
        U256::ZERO
    );
    assert_eq!(
        receipt
            .balanceOf(bot.address(), U256::from(1))
            .call()
            .await
            .unwrap(),
        assets
    );
    assert_eq!(
        vault.totalSupply().call().await.unwrap(),
        vault.totalAssets().call().await.unwrap()
    );

    // The next deposit gets id 2.
    let second = vault
        .deposit(U256::from(5u64), bot.address(), SHARE_RATIO, Bytes::new())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let d2 = second.inner.logs()[0]
        .log_decode::<Vault::Deposit>()
        .unwrap()
        .inner
        .data;
    assert_eq!(d2.id, U256::from(2));
    assert_eq!(vault.highwaterId().call().await.unwrap(), U256::from(2));

    // Zero amounts, zero receivers, and a share ratio above 1e18 revert.
    let zero = vault
        .deposit(U256::ZERO, bot.address(), SHARE_RATIO, Bytes::new())
        .call()
        .await
        .unwrap_err();
    assert_eq!(
        revert_selector(&zero),
        Some(Vault::ZeroAssetsAmount::SELECTOR)
    );
    let nobody = vault
        .deposit(U256::from(1), Address::ZERO, SHARE_RATIO, Bytes::new())
        .call()
        .await
        .unwrap_err();
    assert_eq!(
        revert_selector(&nobody),
        Some(Vault::ZeroReceiver::SELECTOR)
    );
    let ratio = vault
        .deposit(
            U256::from(1),
            bot.address(),
            SHARE_RATIO + U256::from(1),
            Bytes::new(),
        )
        .call()
        .await
        .unwrap_err();
    assert_eq!(
        revert_selector(&ratio),
        Some(Vault::MinShareRatio::SELECTOR)
    );
    // A floor of 0 is accepted.
    vault
        .deposit(U256::from(1), bot.address(), U256::ZERO, Bytes::new())
        .call()
        .await
        .unwrap();

    // Someone without DEPOSIT cannot deposit; without WITHDRAW cannot redeem.
    let stranger = common::stranger();
    let as_stranger = Vault::new(deployed.vault, wallet_provider(&rpc, &stranger));
    let denied = as_stranger
        .deposit(U256::from(1), stranger.address(), SHARE_RATIO, Bytes::new())
        .call()
        .await
        .unwrap_err();
    assert_eq!(
        revert_selector(&denied),
        Some(Authorizer::Unauthorized::SELECTOR)
    );

    // Burning needs the receipt: the bot holds shares of id 2 only (5 units); id 1 is with the bot
    // as a receipt but its shares went to the AP.
    let no_shares = vault
        .redeem(
            U256::from(10u64),
            bot.address(),
            bot.address(),
            U256::from(1),
            Bytes::new(),
        )
        .call()
        .await
        .unwrap_err();
    assert!(
        no_shares.as_revert_data().is_some(),
        "shares missing: reverts"
    );
    let wrong_receipt = vault
        .redeem(
            U256::from(5u64),
            bot.address(),
            bot.address(),
            U256::from(3),
            Bytes::new(),
        )
        .call()
        .await
        .unwrap_err();
    assert!(
        wrong_receipt.as_revert_data().is_some(),
        "receipt id not held: reverts"
    );
    let burned = vault
        .redeem(
            U256::from(5u64),
            bot.address(),
            bot.address(),
            U256::from(2),
            b"burn".to_vec().into(),
        )
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let withdraw = burned
        .inner
        .logs()
        .iter()
        .find(|l| l.topics()[0] == Vault::Withdraw::SIGNATURE_HASH)
        .unwrap()
        .log_decode::<Vault::Withdraw>()
        .unwrap()
        .inner
        .data;
    assert_eq!(
        (withdraw.shares, withdraw.id),
        (U256::from(5u64), U256::from(2))
    );
    assert_eq!(
        receipt
            .balanceOf(bot.address(), U256::from(2))
            .call()
            .await
            .unwrap(),
        U256::ZERO
    );
    let ap_as_stranger = as_stranger
        .redeem(
            U256::from(1u64),
            stranger.address(),
            stranger.address(),
            U256::from(1),
            Bytes::new(),
        )
        .call()
        .await
        .unwrap_err();
    assert!(ap_as_stranger.as_revert_data().is_some());

    // An unknown selector succeeds silently (Rain's payable fallback): status 1, no logs.
    let unknown = TransactionRequest::default()
        .to(deployed.vault)
        .input(Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]).into());
    let silent = provider
        .send_transaction(unknown)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(silent.status());
    assert!(silent.inner.logs().is_empty());

    // Expired certification: plain share transfers revert CertificationExpired; minting to the
    // bot (which holds DEPOSIT) still works.
    vault
        .certify(U256::from(1), true, Bytes::new())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(vault.isCertificationExpired().call().await.unwrap());
    let ap_vault = Vault::new(deployed.vault, wallet_provider(&rpc, &common::stranger()));
    let _ = ap_vault; // the AP's key is anvil's second account: the same as `stranger`'s address below.
    vault
        .deposit(U256::from(7u64), bot.address(), SHARE_RATIO, Bytes::new())
        .send()
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let blocked = vault
        .transfer(ap, U256::from(1u64))
        .call()
        .await
        .unwrap_err();
    assert_eq!(
        revert_selector(&blocked),
        Some(Receipt::CertificationExpired::SELECTOR)
    );
    let not_certifier = as_stranger
        .certify(U256::from(u64::MAX), false, Bytes::new())
        .call()
        .await
        .unwrap_err();
    assert_eq!(
        revert_selector(&not_certifier),
        Some(Authorizer::Unauthorized::SELECTOR)
    );
}

/// Past a few hundred blocks anvil writes old states to disk; the harness's anvil keeps them in
/// its own directory and deletes them when the test drops it (killed anvils never do).
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_anvil_leaves_no_states_on_disk() {
    let anvil = common::anvil(None);
    let provider = ProviderBuilder::new().connect_http(anvil.endpoint().parse().unwrap());
    let _: serde_json::Value = provider
        .raw_request("anvil_mine".into(), ("0x4b0",))
        .await
        .unwrap();
    let states = anvil.states_dir().to_path_buf();
    let written = || std::fs::read_dir(&states).map_or(0, Iterator::count);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while written() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        written() > 0,
        "1,200 blocks persisted nothing under {}",
        states.display()
    );

    drop(anvil);
    assert!(!states.exists(), "{} outlived its anvil", states.display());
}
