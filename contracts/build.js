#!/usr/bin/env node
// Compiles src/*.sol with solc-js (standard JSON) into foundry-style artifacts in out/,
// which the Rust `alloy::sol!` macro reads. Exits 1 on any compile error or oversized contract.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = __dirname;
const SRC = path.join(ROOT, 'src');
const OUT = path.join(ROOT, 'out');
const NODE_MODULES = path.join(ROOT, 'node_modules');
const MAX_DEPLOYED_SIZE = 24576; // EIP-170

// artifact name -> [source unit, contract name]
const ARTIFACTS = {
  Vault: ['src/OffchainAssetReceiptVault.sol', 'OffchainAssetReceiptVault'],
  Receipt: ['src/Receipt.sol', 'Receipt'],
  Authorizer: ['src/Authorizer.sol', 'Authorizer'],
};

function fail(msg) {
  console.error(`build.js: ${msg}`);
  process.exit(1);
}

// Source unit names are kept relative ("src/...", "@openzeppelin/...") so the metadata hash
// embedded in the bytecode does not depend on where the repo is checked out.
const sources = {};
for (const file of fs.readdirSync(SRC).filter((f) => f.endsWith('.sol')).sort()) {
  const unit = `src/${file}`;
  sources[unit] = { content: fs.readFileSync(path.join(SRC, file), 'utf8') };
}

function findImports(importPath) {
  const candidates = importPath.startsWith('@')
    ? [path.join(NODE_MODULES, importPath)]
    : [path.join(ROOT, importPath)];
  for (const candidate of candidates) {
    // Refuse anything that escapes the contracts directory.
    if (!path.resolve(candidate).startsWith(ROOT + path.sep)) continue;
    if (fs.existsSync(candidate)) return { contents: fs.readFileSync(candidate, 'utf8') };
  }
  return { error: `File not found: ${importPath}` };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    outputSelection: {
      '*': {
        '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'evm.methodIdentifiers'],
      },
    },
  },
};

console.log(`solc ${solc.version()}`);
const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

let errors = 0;
for (const diag of output.errors || []) {
  const text = diag.formattedMessage || diag.message;
  if (diag.severity === 'error') {
    errors += 1;
    console.error(text);
  } else {
    console.warn(text);
  }
}
if (errors > 0) fail(`${errors} compile error(s)`);

fs.mkdirSync(OUT, { recursive: true });
let oversized = false;
const methodIdentifiers = {};
for (const [artifact, [unit, name]] of Object.entries(ARTIFACTS)) {
  const contract = output.contracts && output.contracts[unit] && output.contracts[unit][name];
  if (!contract) fail(`missing contract ${unit}:${name} in solc output`);
  const bytecode = contract.evm.bytecode.object;
  const deployed = contract.evm.deployedBytecode.object;
  if (!bytecode || !deployed) fail(`${name} has no bytecode (abstract?)`);

  const json = {
    abi: contract.abi,
    bytecode: { object: `0x${bytecode}` },
    deployedBytecode: { object: `0x${deployed}` },
  };
  fs.writeFileSync(path.join(OUT, `${artifact}.json`), `${JSON.stringify(json, null, 2)}\n`);

  const size = deployed.length / 2;
  const flag = size > MAX_DEPLOYED_SIZE ? '  OVER LIMIT' : '';
  console.log(`out/${artifact}.json  ${name}: deployed ${size} bytes, initcode ${bytecode.length / 2} bytes${flag}`);
  if (size > MAX_DEPLOYED_SIZE) oversized = true;
  methodIdentifiers[artifact] = contract.evm.methodIdentifiers;
}
if (oversized) fail(`deployed bytecode over ${MAX_DEPLOYED_SIZE} bytes`);

if (process.argv.includes('--ids')) console.log(JSON.stringify(methodIdentifiers, null, 2));

// The ABI assertions run on the artifacts just written.
require('./check.js').run(methodIdentifiers);
