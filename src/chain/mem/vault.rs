//! The vault's behaviour in [`super::MemNode`], written from the interface: `deposit` mints
//! shares one to one and a new receipt id to the receiver, `redeem` burns an owner's shares of one
//! receipt id, `transfer` moves shares, `multicall` runs its calls all or nothing.

use super::{Ledger, MemFaults};
use crate::chain::{Vault, VaultEvent};
use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;

/// Gas our vault's calls cost here: near what the real vault spends, so batch sizes and block
/// limits behave alike.
const GAS_TX: u64 = 21_000;
const GAS_DEPOSIT: u64 = 45_000;
const GAS_TRANSFER: u64 = 15_000;
const GAS_REDEEM: u64 = 40_000;

fn revert(why: impl Into<String>) -> String {
    why.into()
}

/// Runs one transaction on `ledger`: the events it emits (by address) and the gas it used, or
/// why it reverted (`ledger` is then to be thrown away).
pub(super) fn execute(
    ledger: &mut Ledger,
    faults: &MemFaults,
    from: Address,
    to: Address,
    input: &[u8],
) -> Result<(Vec<(Address, VaultEvent)>, u64), String> {
    if !ledger.vaults.contains_key(&to) {
        return Err(revert(format!("no contract at {to}")));
    }
    let mut events = Vec::new();
    let mut gas = GAS_TX;
    if let Ok(multicall) = Vault::multicallCall::abi_decode(input) {
        for call in &multicall.data {
            gas += vault_call(ledger, faults, to, from, call, &mut events)?;
        }
    } else {
        gas += vault_call(ledger, faults, to, from, input, &mut events)?;
    }
    Ok((events, gas))
}

fn vault_call(
    ledger: &mut Ledger,
    faults: &MemFaults,
    vault: Address,
    from: Address,
    data: &[u8],
    events: &mut Vec<(Address, VaultEvent)>,
) -> Result<u64, String> {
    let book = ledger
        .vaults
        .get_mut(&vault)
        .ok_or_else(|| revert("no vault"))?;
    let selector: [u8; 4] = data
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| revert("no selector"))?;
    match selector {
        Vault::depositCall::SELECTOR => {
            let call = Vault::depositCall::abi_decode(data).map_err(|e| e.to_string())?;
            if faults.missing_roles.contains(&"DEPOSIT") {
                return Err(revert("Unauthorized: DEPOSIT"));
            }
            if call.assets.is_zero() {
                return Err(revert("ZeroAssetsAmount"));
            }
            book.next_id += 1;
            let id = U256::from(book.next_id);
            *book.shares.entry(call.receiver).or_default() += call.assets;
            book.supply += call.assets;
            *book.receipts.entry((call.receiver, id)).or_default() += call.assets;
            events.push((
                vault,
                VaultEvent::Deposit(Vault::Deposit {
                    sender: from,
                    owner: call.receiver,
                    assets: call.assets,
                    shares: call.assets,
                    id,
                    receiptInformation: call.receiptInformation,
                }),
            ));
            events.push((
                vault,
                VaultEvent::Transfer(Vault::Transfer {
                    from: Address::ZERO,
                    to: call.receiver,
                    value: call.assets,
                }),
            ));
            Ok(GAS_DEPOSIT)
        }
        Vault::transferCall::SELECTOR => {
            let call = Vault::transferCall::abi_decode(data).map_err(|e| e.to_string())?;
            if faults.reverting_receivers.contains(&call.to) {
                return Err(revert(format!("receiver {} refuses", call.to)));
            }
            let held = book.shares.entry(from).or_default();
            if *held < call.value {
                return Err(revert("ERC20InsufficientBalance"));
            }
            *held -= call.value;
            *book.shares.entry(call.to).or_default() += call.value;
            events.push((
                vault,
                VaultEvent::Transfer(Vault::Transfer {
                    from,
                    to: call.to,
                    value: call.value,
                }),
            ));
            Ok(GAS_TRANSFER)
        }
        Vault::redeemCall::SELECTOR => {
            let call = Vault::redeemCall::abi_decode(data).map_err(|e| e.to_string())?;
            if faults.missing_roles.contains(&"WITHDRAW") {
                return Err(revert("Unauthorized: WITHDRAW"));
            }
            if call.owner != from {
                return Err(revert("only the owner redeems here"));
            }
            let receipt = book.receipts.entry((call.owner, call.id)).or_default();
            if *receipt < call.shares {
                return Err(revert("ERC1155InsufficientBalance"));
            }
            let held = book.shares.entry(call.owner).or_default();
            if *held < call.shares {
                return Err(revert("ERC20InsufficientBalance"));
            }
            *receipt -= call.shares;
            *held -= call.shares;
            book.supply -= call.shares;
            events.push((
                vault,
                VaultEvent::Withdraw(Vault::Withdraw {
                    sender: from,
                    receiver: call.receiver,
                    owner: call.owner,
                    assets: call.shares,
                    shares: call.shares,
                    id: call.id,
                    receiptInformation: call.receiptInformation,
                }),
            ));
            events.push((
                vault,
                VaultEvent::Transfer(Vault::Transfer {
                    from: call.owner,
                    to: Address::ZERO,
                    value: call.shares,
                }),
            ));
            Ok(GAS_REDEEM)
        }
        _ => Err(revert("unknown selector")),
    }
}
