// SPDX-License-Identifier: MIT
pragma solidity ^0.8.25;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {IERC1155Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";

import {IAuthorizeV1, Roles, Unauthorized} from "./Authorizer.sol";
import {CertificationExpired, ICertifiable, Receipt} from "./Receipt.sol";

/// Share token backed by assets held off chain. Every deposit mints fungible shares plus a receipt
/// under a fresh id; a burn must name a receipt id the owner holds, so each redemption points at
/// the deposit it unwinds. No on-chain asset moves in either direction.
contract OffchainAssetReceiptVault is ERC20, Multicall, ICertifiable, IERC1155Errors {
    /// Fixed 1:1 share ratio (18 decimals): the off-chain custodian, not the chain, prices assets.
    uint256 internal constant SHARE_RATIO = 1e18;

    // No indexed fields: log consumers decode these from data, matching the vault we mirror.
    event Deposit(address sender, address owner, uint256 assets, uint256 shares, uint256 id, bytes receiptInformation);
    event Withdraw(
        address sender,
        address receiver,
        address owner,
        uint256 assets,
        uint256 shares,
        uint256 id,
        bytes receiptInformation
    );
    event Certify(address sender, uint256 certifyUntil, bool forceUntil, bytes data);
    event AuthorizerSet(address sender, address authorizer);

    error ZeroAssetsAmount();
    error ZeroReceiver();
    error ZeroOwner();
    error ZeroSharesAmount();
    error InvalidId(uint256 id);
    error MinShareRatio(uint256 minShareRatio, uint256 actualShareRatio);
    error NotAdmin(address caller);

    Receipt public immutable receipt;
    /// The only account that may swap the authorizer; deliberately not transferable.
    address public immutable admin;

    IAuthorizeV1 public authorizer;
    /// Last receipt id issued; ids start at 1 so 0 can mean "none".
    uint256 public highwaterId;
    /// Unix time until which share transfers are open to everyone.
    uint256 public certifiedUntil;

    constructor(string memory name_, string memory symbol_, address receipt_, address admin_) ERC20(name_, symbol_) {
        receipt = Receipt(receipt_);
        admin = admin_;
    }

    /// Unknown selectors succeed silently, as on the vault we mirror, so callers never rely on a revert.
    fallback() external payable {}

    receive() external payable {}

    function setAuthorizer(address newAuthorizer) external {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        authorizer = IAuthorizeV1(newAuthorizer);
        emit AuthorizerSet(msg.sender, newAuthorizer);
    }

    function totalAssets() external view returns (uint256) {
        return totalSupply();
    }

    /// Payable (not view) to keep the mirrored ABI; query it with eth_call.
    function previewDeposit(uint256 assets, uint256 minShareRatio) external payable returns (uint256 shares) {
        _checkMinShareRatio(minShareRatio);
        return assets;
    }

    function deposit(uint256 assets, address receiver, uint256 depositMinShareRatio, bytes calldata receiptInformation)
        external
        payable
        returns (uint256 shares)
    {
        // A vault without an authorizer must not mint, whatever its certification state.
        _requireAuthorizer(Roles.DEPOSIT);
        if (assets == 0) revert ZeroAssetsAmount();
        if (receiver == address(0)) revert ZeroReceiver();
        _checkMinShareRatio(depositMinShareRatio);

        shares = assets;
        uint256 id = highwaterId + 1;
        highwaterId = id;

        // Order matters to log readers: Deposit, Transfer, ReceiptInformation, TransferSingle.
        emit Deposit(msg.sender, receiver, assets, shares, id, receiptInformation);
        _mint(receiver, shares);
        receipt.managerMint(msg.sender, receiver, id, shares, receiptInformation);

        // Checked last so the authorizer sees the finished state (and it can only revert, not alter it).
        authorizer.authorize(msg.sender, Roles.DEPOSIT, abi.encode(receiver, assets, shares, id));
    }

    function redeem(uint256 shares, address receiver, address owner, uint256 id, bytes calldata receiptInformation)
        external
        returns (uint256 assets)
    {
        if (shares == 0) revert ZeroSharesAmount();
        assets = shares;
        _withdraw(assets, shares, receiver, owner, id, receiptInformation);
    }

    function withdraw(uint256 assets, address receiver, address owner, uint256 id, bytes calldata receiptInformation)
        external
        returns (uint256 shares)
    {
        if (assets == 0) revert ZeroAssetsAmount();
        shares = assets;
        _withdraw(assets, shares, receiver, owner, id, receiptInformation);
    }

    /// `forceUntil` lets a certifier shorten certification (e.g. after a failed audit); otherwise
    /// it only ever extends, so a stale certifier cannot cut a newer one short by accident.
    function certify(uint256 certifyUntil, bool forceUntil, bytes calldata data) external {
        _requireAuthorizer(Roles.CERTIFY);
        authorizer.authorize(msg.sender, Roles.CERTIFY, abi.encode(certifyUntil, forceUntil, data));
        if (forceUntil || certifyUntil > certifiedUntil) certifiedUntil = certifyUntil;
        emit Certify(msg.sender, certifyUntil, forceUntil, data);
    }

    function isCertificationExpired() public view returns (bool) {
        return block.timestamp > certifiedUntil;
    }

    function _withdraw(
        uint256 assets,
        uint256 shares,
        address receiver,
        address owner,
        uint256 id,
        bytes calldata receiptInformation
    ) internal {
        _requireAuthorizer(Roles.WITHDRAW);
        if (receiver == address(0)) revert ZeroReceiver();
        if (owner == address(0)) revert ZeroOwner();
        if (id == 0 || id > highwaterId) revert InvalidId(id);

        // Burning for someone else needs both their shares allowance and their receipt approval,
        // since the two tokens are approved independently.
        if (msg.sender != owner) {
            _spendAllowance(owner, msg.sender, shares);
            if (!receipt.isApprovedForAll(owner, msg.sender)) revert ERC1155MissingApprovalForAll(msg.sender, owner);
        }

        receipt.managerBurn(msg.sender, owner, id, shares, receiptInformation);
        _burn(owner, shares);
        emit Withdraw(msg.sender, receiver, owner, assets, shares, id, receiptInformation);

        authorizer.authorize(msg.sender, Roles.WITHDRAW, abi.encode(receiver, owner, assets, shares, id));
    }

    /// Certification gate: while expired only role holders may mint (to themselves) or burn (from
    /// themselves); ordinary transfers freeze until someone with CERTIFY vouches for the backing again.
    function _update(address from, address to, uint256 value) internal override {
        if (isCertificationExpired()) {
            bool allowed = (from == address(0) && _hasRole(Roles.DEPOSIT, to))
                || (to == address(0) && _hasRole(Roles.WITHDRAW, from));
            if (!allowed) revert CertificationExpired(from, to);
        }
        super._update(from, to, value);
    }

    /// With no authorizer set nobody holds a role (calling address(0) would revert without a reason).
    function _hasRole(bytes32 role, address account) internal view returns (bool) {
        address a = address(authorizer);
        return a != address(0) && IAccessControl(a).hasRole(role, account);
    }

    function _requireAuthorizer(bytes32 permission) internal view {
        if (address(authorizer) == address(0)) revert Unauthorized(msg.sender, permission, "");
    }

    function _checkMinShareRatio(uint256 minShareRatio) internal pure {
        if (minShareRatio > SHARE_RATIO) revert MinShareRatio(minShareRatio, SHARE_RATIO);
    }
}
