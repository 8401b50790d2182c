// SPDX-License-Identifier: MIT
pragma solidity ^0.8.25;

import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";

/// Raised by share and receipt transfers while the vault's certification has lapsed.
error CertificationExpired(address from, address to);

/// Implemented by the vault; the receipt asks it whether transfers are currently frozen.
interface ICertifiable {
    function isCertificationExpired() external view returns (bool);
}

/// ERC-1155 receipts: one id per deposit, so each mint can be traced to its off-chain backing.
/// Only the manager (the vault) mints and burns; holders may transfer while the vault is certified.
contract Receipt is ERC1155 {
    /// Emitted right before the TransferSingle of a mint or burn that carries information, so an
    /// indexer can attach the off-chain record to the receipt id.
    event ReceiptInformation(address sender, uint256 id, bytes information);
    event ManagerTransferred(address previousManager, address newManager);

    error NotManager(address caller);
    error ZeroManager();

    address public manager;

    modifier onlyManager() {
        if (msg.sender != manager) revert NotManager(msg.sender);
        _;
    }

    /// The deployer manages until the vault exists, then hands over with `transferManager`.
    constructor() ERC1155("") {
        manager = msg.sender;
    }

    function transferManager(address newManager) external onlyManager {
        if (newManager == address(0)) revert ZeroManager();
        emit ManagerTransferred(manager, newManager);
        manager = newManager;
    }

    /// `sender` is the vault's caller, recorded so the information event names who deposited.
    function managerMint(address sender, address account, uint256 id, uint256 amount, bytes calldata data)
        external
        onlyManager
    {
        if (data.length > 0) emit ReceiptInformation(sender, id, data);
        // Information travels in the event; the acceptance-check payload stays empty.
        _mint(account, id, amount, "");
    }

    function managerBurn(address sender, address account, uint256 id, uint256 amount, bytes calldata data)
        external
        onlyManager
    {
        if (data.length > 0) emit ReceiptInformation(sender, id, data);
        _burn(account, id, amount);
    }

    /// Mints and burns come only from the vault, which applies the role-based certification gate to
    /// the matching shares in the same call; so here only holder-to-holder transfers need freezing.
    function _update(address from, address to, uint256[] memory ids, uint256[] memory values)
        internal
        override
    {
        if (from != address(0) && to != address(0) && _certificationExpired()) {
            revert CertificationExpired(from, to);
        }
        super._update(from, to, ids, values);
    }

    /// Before the hand-over the manager is the deployer's account, which has nothing to ask.
    function _certificationExpired() internal view returns (bool) {
        address m = manager;
        if (m.code.length == 0) return false;
        return ICertifiable(m).isCertificationExpired();
    }
}
