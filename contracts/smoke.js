#!/usr/bin/env node
// End-to-end smoke test of out/*.json on a throwaway anvil (127.0.0.1, random port, stopped by PID).
// Checks the on-chain behaviour the Rust side depends on: log order, roles, certification gate,
// fallback, revert selectors. No dependencies beyond js-sha3; prints 'N passed, N failed'.
'use strict';

const { spawn } = require('child_process');
const net = require('net');
const path = require('path');
const { keccak256 } = require('js-sha3');

const ANVIL = path.join(__dirname, 'node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil');
const art = (n) => require(path.join(__dirname, 'out', `${n}.json`));

// --- minimal ABI encoding (static words + dynamic bytes/string) ---
const hex = (b) => b.toString('hex');
const word = (v) => BigInt(v).toString(16).padStart(64, '0');
const addr = (a) => a.toLowerCase().replace(/^0x/, '').padStart(64, '0');
function enc(types, values) {
  let head = '';
  let tail = '';
  const headLen = 32 * types.length;
  types.forEach((t, i) => {
    const v = values[i];
    if (t === 'bytes' || t === 'string') {
      const buf = t === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v.replace(/^0x/, ''), 'hex');
      head += word(headLen + tail.length / 2);
      tail += word(buf.length) + hex(buf).padEnd(Math.ceil(buf.length / 32) * 64, '0');
    } else if (t === 'bytes[]') {
      head += word(headLen + tail.length / 2);
      const inner = enc(v.map(() => 'bytes'), v);
      tail += word(v.length) + inner;
    } else if (t === 'address') head += addr(v);
    else if (t === 'bool') head += word(v ? 1 : 0);
    else if (t === 'bytes32') head += v.replace(/^0x/, '');
    else head += word(v);
  });
  return head + tail;
}
const sel = (sig) => keccak256(sig).slice(0, 8);
const call = (sig, types, values) => `0x${sel(sig)}${enc(types, values)}`;
const topic = (sig) => `0x${keccak256(sig)}`;

let port;
let id = 0;
async function rpc(method, params = []) {
  const res = await fetch(`http://127.0.0.1:${port}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method, params }),
  });
  const j = await res.json();
  if (j.error) {
    const e = new Error(j.error.message);
    e.data = j.error.data;
    throw e;
  }
  return j.result;
}

async function send(from, to, data, value = 0) {
  const tx = { from, data, gas: '0x1c9c380', value: `0x${value.toString(16)}` };
  if (to) tx.to = to;
  const hash = await rpc('eth_sendTransaction', [tx]);
  return rpc('eth_getTransactionReceipt', [hash]);
}
async function deploy(from, name, ctorTypes, ctorValues) {
  const r = await send(from, null, art(name).bytecode.object + enc(ctorTypes, ctorValues));
  if (r.status !== '0x1') throw new Error(`deploy ${name} failed`);
  return r.contractAddress;
}
async function revertData(from, to, data) {
  try {
    await rpc('eth_call', [{ from, to, data }, 'latest']);
    return null;
  } catch (e) {
    return typeof e.data === 'string' ? e.data : e.data && e.data.data;
  }
}
const view = async (to, data) => rpc('eth_call', [{ to, data }, 'latest']);

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

let passed = 0;
let failed = 0;
function expect(ok, name) {
  if (ok) passed += 1;
  else {
    failed += 1;
    console.error(`FAIL ${name}`);
  }
}

async function main() {
  port = await freePort();
  const anvil = spawn(ANVIL, ['--host', '127.0.0.1', '--port', String(port), '--silent'], { stdio: 'ignore' });
  try {
    for (let i = 0; ; i++) {
      try {
        await rpc('eth_chainId');
        break;
      } catch (e) {
        if (i > 100) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const [admin, bot, user] = await rpc('eth_accounts');

    const receipt = await deploy(admin, 'Receipt', [], []);
    const vault = await deploy(admin, 'Vault', ['string', 'string', 'address', 'address'], ['Tok', 'TOK', receipt, admin]);
    const auth = await deploy(admin, 'Authorizer', ['address'], [admin]);
    await send(admin, receipt, call('transferManager(address)', ['address'], [vault]));

    const DEPOSIT = `0x${keccak256('DEPOSIT')}`;
    const WITHDRAW = `0x${keccak256('WITHDRAW')}`;
    const CERTIFY = `0x${keccak256('CERTIFY')}`;
    const depositCall = (amount, to, info = '0x') =>
      call('deposit(uint256,address,uint256,bytes)', ['uint256', 'address', 'uint256', 'bytes'], [amount, to, 10n ** 18n, info]);

    // Fresh vault: no authorizer -> Unauthorized.
    let rd = await revertData(bot, vault, depositCall(5, bot));
    expect(rd && rd.startsWith('0x3ae4063b'), 'deposit without authorizer reverts Unauthorized');
    rd = await revertData(bot, vault, call('setAuthorizer(address)', ['address'], [auth]));
    expect(rd && rd.startsWith(`0x${sel('NotAdmin(address)')}`), 'setAuthorizer by non-admin reverts NotAdmin');
    await send(admin, vault, call('setAuthorizer(address)', ['address'], [auth]));

    // Fallback accepts unknown selectors silently.
    expect((await view(vault, '0xdeadbeef')) === '0x', 'unknown selector returns 0x');

    // Admin holds only the admin roles.
    const hasRole = async (r, a) => BigInt(await view(auth, call('hasRole(bytes32,address)', ['bytes32', 'address'], [r, a]))) === 1n;
    expect(!(await hasRole(CERTIFY, admin)), 'admin lacks CERTIFY initially');
    rd = await revertData(admin, vault, call('certify(uint256,bool,bytes)', ['uint256', 'bool', 'bytes'], [2n ** 40n, false, '0x']));
    expect(rd && rd.startsWith('0x3ae4063b'), 'certify without CERTIFY reverts Unauthorized');

    // Uncertified: bot with DEPOSIT can mint to itself; minting to a non-holder fails.
    await send(admin, auth, call('grantRole(bytes32,address)', ['bytes32', 'address'], [DEPOSIT, bot]));
    await send(admin, auth, call('grantRole(bytes32,address)', ['bytes32', 'address'], [WITHDRAW, bot]));
    rd = await revertData(bot, vault, depositCall(5, user));
    expect(rd && rd.startsWith('0xfe720f78'), 'uncertified mint to non-DEPOSIT holder reverts CertificationExpired');
    let r = await send(bot, vault, depositCall(7, bot, '0xabcd'));
    expect(r.status === '0x1', 'uncertified mint to DEPOSIT holder works');
    const order = r.logs.map((l) => l.topics[0]);
    expect(
      JSON.stringify(order) ===
        JSON.stringify([
          topic('Deposit(address,address,uint256,uint256,uint256,bytes)'),
          topic('Transfer(address,address,uint256)'),
          topic('ReceiptInformation(address,uint256,bytes)'),
          topic('TransferSingle(address,address,address,uint256,uint256)'),
        ]),
      'deposit log order',
    );
    expect(r.logs[0].topics.length === 1 && r.logs[0].address === vault, 'Deposit has no indexed fields, from vault');
    console.log(`first deposit gas ${BigInt(r.gasUsed)}`);
    rd = await revertData(bot, vault, call('transfer(address,uint256)', ['address', 'uint256'], [user, 1]));
    expect(rd && rd.startsWith('0xfe720f78'), 'uncertified share transfer reverts');

    // Certify, then anyone can receive.
    await send(admin, auth, call('grantRole(bytes32,address)', ['bytes32', 'address'], [CERTIFY, admin]));
    r = await send(admin, vault, call('certify(uint256,bool,bytes)', ['uint256', 'bool', 'bytes'], [2n ** 40n, false, '0x']));
    expect(r.status === '0x1', 'certify works once CERTIFY granted');
    expect(BigInt(await view(vault, call('isCertificationExpired()', [], []))) === 0n, 'certified');
    r = await send(bot, vault, depositCall(10n ** 18n, user));
    expect(r.status === '0x1' && r.logs.length === 3, 'certified mint to user, no ReceiptInformation when info empty');
    console.log(`later deposit gas ${BigInt(r.gasUsed)}`);
    expect(BigInt(await view(vault, call('highwaterId()', [], []))) === 2n, 'highwaterId is 2');

    // multicall([deposit, transfer]) keeps msg.sender = bot.
    r = await send(bot, vault, call('multicall(bytes[])', ['bytes[]'], [[depositCall(3, bot), call('transfer(address,uint256)', ['address', 'uint256'], [user, 3])]]));
    expect(r.status === '0x1', 'multicall deposit+transfer');
    expect(r.logs[0].data.slice(2, 66) === addr(bot), 'Deposit.sender in multicall is the bot');
    console.log(`multicall deposit+transfer gas ${BigInt(r.gasUsed)}`);

    // Redeem: wrong id / too much fail; a correct one emits Withdraw.
    const redeemCall = (shares, owner, rid) =>
      call('redeem(uint256,address,address,uint256,bytes)', ['uint256', 'address', 'address', 'uint256', 'bytes'], [shares, bot, owner, rid, '0x']);
    rd = await revertData(bot, vault, redeemCall(1, bot, 99));
    expect(rd && rd.startsWith(`0x${sel('InvalidId(uint256)')}`), 'redeem bad id reverts InvalidId');
    rd = await revertData(bot, vault, redeemCall(8, bot, 1));
    expect(rd && rd.startsWith(`0x${sel('ERC1155InsufficientBalance(address,uint256,uint256,uint256)')}`), 'redeem over receipt balance reverts');
    r = await send(bot, vault, redeemCall(7, bot, 1));
    expect(r.status === '0x1' && r.logs[r.logs.length - 1].topics[0] === topic('Withdraw(address,address,address,uint256,uint256,uint256,bytes)'), 'redeem emits Withdraw last');
    console.log(`redeem gas ${BigInt(r.gasUsed)}`);
    rd = await revertData(user, vault, redeemCall(1, user, 2));
    expect(rd && rd.startsWith('0x3ae4063b'), 'redeem by non-WITHDRAW caller reverts Unauthorized');
    rd = await revertData(bot, vault, redeemCall(1, user, 2));
    expect(rd && rd.startsWith(`0x${sel('ERC20InsufficientAllowance(address,uint256,uint256)')}`), 'redeem for another owner needs allowance');

    // Receipt transfers freeze when certification is forced into the past.
    await send(admin, vault, call('certify(uint256,bool,bytes)', ['uint256', 'bool', 'bytes'], [1, true, '0x']));
    expect(BigInt(await view(vault, call('isCertificationExpired()', [], []))) === 1n, 'forced expiry');
    rd = await revertData(user, receipt, call('safeTransferFrom(address,address,uint256,uint256,bytes)', ['address', 'address', 'uint256', 'uint256', 'bytes'], [user, bot, 2, 1, '0x']));
    expect(rd && rd.startsWith('0xfe720f78'), 'expired receipt transfer reverts CertificationExpired');
    rd = await revertData(user, vault, call('transfer(address,uint256)', ['address', 'uint256'], [bot, 1]));
    expect(rd && rd.startsWith('0xfe720f78'), 'expired share transfer reverts CertificationExpired');
    rd = await revertData(bot, receipt, call('managerMint(address,address,uint256,uint256,bytes)', ['address', 'address', 'uint256', 'uint256', 'bytes'], [bot, bot, 1, 1, '0x']));
    expect(rd && rd.startsWith(`0x${sel('NotManager(address)')}`), 'managerMint by non-manager reverts');
  } finally {
    // Wait for the exit so no anvil outlives this script.
    const exited = new Promise((r) => anvil.once('exit', r));
    anvil.kill('SIGTERM');
    await exited;
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
