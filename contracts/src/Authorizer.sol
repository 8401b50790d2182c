// SPDX-License-Identifier: MIT
pragma solidity ^0.8.25;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// Role ids shared by the authorizer and the vault, so both hash the same names.
library Roles {
    bytes32 internal constant DEPOSIT = keccak256("DEPOSIT");
    bytes32 internal constant DEPOSIT_ADMIN = keccak256("DEPOSIT_ADMIN");
    bytes32 internal constant WITHDRAW = keccak256("WITHDRAW");
    bytes32 internal constant WITHDRAW_ADMIN = keccak256("WITHDRAW_ADMIN");
    bytes32 internal constant CERTIFY = keccak256("CERTIFY");
    bytes32 internal constant CERTIFY_ADMIN = keccak256("CERTIFY_ADMIN");
}

/// Raised by `authorize` (and by a vault with no authorizer) when `user` lacks `permission`.
error Unauthorized(address user, bytes32 permission, bytes data);

/// What the vault needs from an authorizer; kept separate so another policy can be swapped in.
interface IAuthorizeV1 {
    function authorize(address user, bytes32 permission, bytes calldata data) external view;
}

/// Role-based authorizer for the vault.
///
/// Admin model: each role R is administered by R_ADMIN, and each R_ADMIN administers itself, so an
/// admin can grant the role and also add or remove fellow admins. `admin` receives only the three
/// *_ADMIN roles and nobody holds DEFAULT_ADMIN_ROLE: an admin must grant itself a role (e.g. CERTIFY)
/// before using it, which is how the vault we mirror behaves, so nothing can come to rely on more.
contract Authorizer is AccessControl, IAuthorizeV1 {
    bytes32 public constant DEPOSIT = Roles.DEPOSIT;
    bytes32 public constant DEPOSIT_ADMIN = Roles.DEPOSIT_ADMIN;
    bytes32 public constant WITHDRAW = Roles.WITHDRAW;
    bytes32 public constant WITHDRAW_ADMIN = Roles.WITHDRAW_ADMIN;
    bytes32 public constant CERTIFY = Roles.CERTIFY;
    bytes32 public constant CERTIFY_ADMIN = Roles.CERTIFY_ADMIN;

    constructor(address admin) {
        _setRoleAdmin(DEPOSIT, DEPOSIT_ADMIN);
        _setRoleAdmin(DEPOSIT_ADMIN, DEPOSIT_ADMIN);
        _setRoleAdmin(WITHDRAW, WITHDRAW_ADMIN);
        _setRoleAdmin(WITHDRAW_ADMIN, WITHDRAW_ADMIN);
        _setRoleAdmin(CERTIFY, CERTIFY_ADMIN);
        _setRoleAdmin(CERTIFY_ADMIN, CERTIFY_ADMIN);

        _grantRole(DEPOSIT_ADMIN, admin);
        _grantRole(WITHDRAW_ADMIN, admin);
        _grantRole(CERTIFY_ADMIN, admin);
    }

    /// Reverts rather than returning a bool so the vault cannot forget to check the result.
    function authorize(address user, bytes32 permission, bytes calldata data) external view {
        if (!hasRole(permission, user)) revert Unauthorized(user, permission, data);
    }
}
