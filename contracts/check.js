#!/usr/bin/env node
// Asserts that the compiled artifacts in out/ expose exactly the selectors, topics and shapes the
// Rust side (and the vault we mirror) rely on. Run by build.js; also runnable alone.
'use strict';

const fs = require('fs');
const path = require('path');
const { keccak256 } = require('js-sha3');

const OUT = path.join(__dirname, 'out');

const FUNCTIONS = {
  Vault: {
    'deposit(uint256,address,uint256,bytes)': '1423feba',
    'redeem(uint256,address,address,uint256,bytes)': '921a4c42',
    'withdraw(uint256,address,address,uint256,bytes)': 'ae57de0c',
    'previewDeposit(uint256,uint256)': '7a7af70d',
    'multicall(bytes[])': 'ac9650d8',
    'certify(uint256,bool,bytes)': 'e70689f5',
    'highwaterId()': null,
    'receipt()': null,
    'authorizer()': null,
    'setAuthorizer(address)': null,
    'isCertificationExpired()': null,
    'certifiedUntil()': null,
    'totalAssets()': null,
    'admin()': null,
    'decimals()': null,
    'transfer(address,uint256)': 'a9059cbb',
    'approve(address,uint256)': '095ea7b3',
    'balanceOf(address)': '70a08231',
  },
  Receipt: {
    'manager()': null,
    'transferManager(address)': null,
    'managerMint(address,address,uint256,uint256,bytes)': null,
    'managerBurn(address,address,uint256,uint256,bytes)': null,
    'setApprovalForAll(address,bool)': 'a22cb465',
    'isApprovedForAll(address,address)': 'e985e9c5',
    'balanceOf(address,uint256)': '00fdd58e',
  },
  Authorizer: {
    'authorize(address,bytes32,bytes)': null,
    'hasRole(bytes32,address)': '91d14854',
    'grantRole(bytes32,address)': '2f2ff15d',
    'DEPOSIT()': null,
    'WITHDRAW()': null,
    'CERTIFY()': null,
  },
};

// Events whose fields must all be unindexed, with the topic0 where it is pinned.
const EVENTS = {
  Vault: {
    'Deposit(address,address,uint256,uint256,uint256,bytes)':
      '3377bcbed49a0c0005e53931cd8fe7334b5371523e5de784c0d0d3d01089cfea',
    'Withdraw(address,address,address,uint256,uint256,uint256,bytes)':
      '2845b9458bcc357e1abfe8de7f6832dfe7220596a053496b33d0deb6577d8d2a',
    'Certify(address,uint256,bool,bytes)': null,
  },
  Receipt: {
    'ReceiptInformation(address,uint256,bytes)': null,
  },
};

// Events that come from OpenZeppelin with their standard indexing.
const STANDARD_EVENTS = {
  Vault: {
    'Transfer(address,address,uint256)': 'ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef',
  },
  Receipt: {
    'TransferSingle(address,address,address,uint256,uint256)':
      'c3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62',
  },
};

const ERRORS = {
  Vault: {
    'ZeroAssetsAmount()': null,
    'ZeroReceiver()': null,
    'ZeroOwner()': null,
    'ZeroSharesAmount()': null,
    'InvalidId(uint256)': null,
    'MinShareRatio(uint256,uint256)': null,
    'CertificationExpired(address,address)': 'fe720f78',
    'NotAdmin(address)': null,
    'Unauthorized(address,bytes32,bytes)': '3ae4063b',
  },
  Receipt: {
    'CertificationExpired(address,address)': 'fe720f78',
  },
  Authorizer: {
    'Unauthorized(address,bytes32,bytes)': '3ae4063b',
  },
};

const CONSTRUCTORS = {
  Vault: ['string', 'string', 'address', 'address'],
  Receipt: [],
  Authorizer: ['address'],
};

const PAYABLE = ['deposit(uint256,address,uint256,bytes)', 'previewDeposit(uint256,uint256)'];

function canonicalType(param) {
  if (!param.type.startsWith('tuple')) return param.type;
  return `(${param.components.map(canonicalType).join(',')})${param.type.slice('tuple'.length)}`;
}

function signature(item) {
  return `${item.name}(${item.inputs.map(canonicalType).join(',')})`;
}

function run(solcMethodIdentifiers) {
  const failures = [];
  const check = (ok, msg) => {
    if (!ok) failures.push(msg);
  };

  for (const artifact of ['Vault', 'Receipt', 'Authorizer']) {
    const file = path.join(OUT, `${artifact}.json`);
    const json = JSON.parse(fs.readFileSync(file, 'utf8'));
    check(
      JSON.stringify(Object.keys(json)) === JSON.stringify(['abi', 'bytecode', 'deployedBytecode']),
      `${artifact}: artifact keys are ${Object.keys(json)}`,
    );
    check(/^0x[0-9a-f]+$/.test(json.bytecode.object), `${artifact}: bad bytecode`);
    check(/^0x[0-9a-f]+$/.test(json.deployedBytecode.object), `${artifact}: bad deployedBytecode`);
    const abi = json.abi;
    const byKind = (kind) => new Map(abi.filter((i) => i.type === kind).map((i) => [signature(i), i]));
    const functions = byKind('function');
    const events = byKind('event');
    const errors = byKind('error');

    for (const [sig, expected] of Object.entries(FUNCTIONS[artifact] || {})) {
      check(functions.has(sig), `${artifact}: missing function ${sig}`);
      const selector = keccak256(sig).slice(0, 8);
      if (expected) check(selector === expected, `${artifact}: ${sig} selector ${selector} != ${expected}`);
      const fromSolc = solcMethodIdentifiers && solcMethodIdentifiers[artifact] && solcMethodIdentifiers[artifact][sig];
      if (solcMethodIdentifiers) check(fromSolc === selector, `${artifact}: solc says ${sig} is ${fromSolc}, keccak ${selector}`);
    }

    for (const [sig, expected] of Object.entries(EVENTS[artifact] || {})) {
      const ev = events.get(sig);
      check(ev, `${artifact}: missing event ${sig}`);
      if (!ev) continue;
      check(ev.inputs.every((i) => !i.indexed), `${artifact}: event ${sig} has indexed fields`);
      check(!ev.anonymous, `${artifact}: event ${sig} is anonymous`);
      const topic = keccak256(sig);
      if (expected) check(topic === expected, `${artifact}: ${sig} topic0 ${topic} != ${expected}`);
    }

    for (const [sig, expected] of Object.entries(STANDARD_EVENTS[artifact] || {})) {
      check(events.has(sig), `${artifact}: missing event ${sig}`);
      check(keccak256(sig) === expected, `${artifact}: ${sig} topic0 mismatch`);
    }

    for (const [sig, expected] of Object.entries(ERRORS[artifact] || {})) {
      check(errors.has(sig), `${artifact}: missing error ${sig}`);
      const selector = keccak256(sig).slice(0, 8);
      if (expected) check(selector === expected, `${artifact}: error ${sig} selector ${selector} != ${expected}`);
    }

    const ctor = abi.find((i) => i.type === 'constructor');
    const ctorTypes = ctor ? ctor.inputs.map(canonicalType) : [];
    check(
      JSON.stringify(ctorTypes) === JSON.stringify(CONSTRUCTORS[artifact]),
      `${artifact}: constructor(${ctorTypes}) != constructor(${CONSTRUCTORS[artifact]})`,
    );

    if (artifact === 'Vault') {
      for (const sig of PAYABLE) {
        const fn = functions.get(sig);
        check(fn && fn.stateMutability === 'payable', `Vault: ${sig} must be payable`);
      }
      const fallback = abi.find((i) => i.type === 'fallback');
      check(fallback && fallback.stateMutability === 'payable', 'Vault: needs a payable fallback');
    }
  }

  if (failures.length > 0) {
    for (const f of failures) console.error(`check.js: ${f}`);
    console.error(`check.js: ${failures.length} check(s) failed`);
    process.exit(1);
  }
  console.log('check.js: all ABI checks passed');
}

module.exports = { run };

if (require.main === module) run(null);
