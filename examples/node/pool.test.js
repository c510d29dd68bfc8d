'use strict';
// The original examples/node tests, now against the npm package (CommonJS
// entry, required from the repo). Run: cargo build --release && node --test examples/node/
// Test-only resources: addresses in 127.94.0.0/16, ports 45300-45399, a private
// temp state dir. Binaries: $SOCKCHECK_BIN and $SOCKCHECK_HOLDER, else
// ../../target/release/ relative to this file.

const { test, before, after } = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { acquire, release, SockcheckError } = require('../../npm/sockcheck');

const RELEASE_DIR = path.resolve(__dirname, '../../target/release');
const BIN = process.env.SOCKCHECK_BIN || path.join(RELEASE_DIR, 'sockcheck');
const HOLDER = process.env.SOCKCHECK_HOLDER
  || [path.join(RELEASE_DIR, 'examples/sockcheck-holder'), path.join(RELEASE_DIR, 'sockcheck-holder')].find((p) => fs.existsSync(p))
  || path.join(RELEASE_DIR, 'examples/sockcheck-holder');
const PORTS = [45300, 45301];
// 127.94.0.0/24-127.94.9.0/24 (one /24 per run, so concurrent runs rarely
// meet); the npm package's own tests use 127.94.10.0 and up.
const NET = `127.94.${process.pid % 10}`;

let stateDir;
/** Options every call shares: our binary, ports and private state dir. */
const opts = (extra) => ({ bin: BIN, ports: PORTS, stateDir, ...extra });

before(() => {
  for (const bin of [BIN, HOLDER]) {
    assert.ok(fs.existsSync(bin), `${bin} not found: run cargo build --release, or set SOCKCHECK_BIN/SOCKCHECK_HOLDER`);
  }
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockcheck-node-test-'));
});

after(() => {
  // Leases belong to this process and die with it; the state dir goes now.
  if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
});

/** Start `sockcheck-holder plain ADDR PORT`; resolve once it prints `ready`. */
function startHolder(address, port) {
  const child = spawn(HOLDER, ['plain', address, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`holder not ready after 5s: ${out}${err}`)), 5000);
    child.stdout.on('data', (d) => {
      out += d;
      if (/^ready\b/m.test(out)) { clearTimeout(timer); resolve(); }
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`holder exited (${code ?? sig}) before ready: ${err.trim()}`));
    });
  });
  return { child, ready };
}

/** Kill a child by pid and wait until it is gone. */
async function killChild(child) {
  if (!child.pid || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  await gone;
}

test('two distinct addresses from a 2-address pool; a third acquire fails with "no free address"', async () => {
  const pool = `${NET}.1-${NET}.2`;
  const a = await acquire(opts({ pool }));
  const b = await acquire(opts({ pool }));
  try {
    assert.notStrictEqual(a.address, b.address);
    assert.deepStrictEqual([a.address, b.address].sort(), [`${NET}.1`, `${NET}.2`]);
    assert.deepStrictEqual(a.ports, PORTS);
    assert.strictEqual(a.owner.pid, process.pid, 'the lease belongs to the test runner');
    await assert.rejects(acquire(opts({ pool })), (e) => {
      assert.ok(e instanceof SockcheckError);
      assert.strictEqual(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.strictEqual(e.exitStatus, 1);
      assert.match(e.message, /no free address/);
      assert.match(e.stderr, /no free address/);
      return true;
    });
  } finally {
    await a.release();
    await b.release();
  }
});

test('release, then acquire again', async () => {
  const pool = `${NET}.3`;
  const first = await acquire(opts({ pool }));
  assert.strictEqual(first.address, pool);
  await assert.rejects(acquire(opts({ pool })), { code: 'SOCKCHECK_NO_FREE_ADDRESS', exitStatus: 1 });
  await first.release();
  await assert.rejects(release(pool, { bin: BIN, stateDir }), { code: 'SOCKCHECK_NOT_LEASED', exitStatus: 1 });
  const again = await acquire(opts({ pool }));
  assert.strictEqual(again.address, pool);
  await again.release();
});

test('a bad pool rejects with exit status 2 and sockcheck\'s message', async () => {
  await assert.rejects(acquire(opts({ pool: '127.94.0.256' })), (e) => {
    assert.ok(e instanceof SockcheckError);
    assert.strictEqual(e.code, 'SOCKCHECK_USAGE');
    assert.strictEqual(e.exitStatus, 2);
    assert.match(e.stderr, /127\.94\.0\.256/);
    assert.match(e.message, /bad usage: .*'127\.94\.0\.256'/);
    return true;
  });
});

test('an address held by a real listener is skipped', async () => {
  const held = `${NET}.10`;
  const { child, ready } = startHolder(held, PORTS[1]);
  try {
    await ready;
    const lease = await acquire(opts({ pool: `${NET}.10-${NET}.11` }));
    try {
      assert.strictEqual(lease.address, `${NET}.11`);
    } finally {
      await lease.release();
    }
    await assert.rejects(acquire(opts({ pool: held })), { code: 'SOCKCHECK_NO_FREE_ADDRESS', exitStatus: 1 });
  } finally {
    await killChild(child);
  }
});

test('a lease whose owner died is reclaimed', async () => {
  const pool = `${NET}.20`;
  const owner = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  try {
    const lease = await acquire(opts({ pool, owner: owner.pid }));
    assert.strictEqual(lease.owner.pid, owner.pid);
    await assert.rejects(acquire(opts({ pool })), { exitStatus: 1 });
  } finally {
    await killChild(owner);
  }
  const again = await acquire(opts({ pool }));
  assert.strictEqual(again.address, pool);
  await again.release();
});
