// The API from ESM, against the sockcheck binary. Run: node --test npm/sockcheck/tests/
// Resources: 127.94.1X.0/24, ports 45310-45311 and 45391 (wildcard), a temp state dir.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as api from 'sockcheck';
import helpers from './helpers.cjs';

const { acquire, release, check, scan, waitFree, run, SockcheckError, Lease } = api;
const {
  resources, setupBinary, requireHolder, startHolder, killAll, killChild, killPid, tempDir, alive, hungBinary, runNode,
  LEASE_CHILD,
} = helpers;

const { net: NET, ports: PORTS, wildcardPort } = resources('api');
const bin = setupBinary(api);
const hold = requireHolder();
const skipBin = bin.skip || false;
const skipHolder = bin.skip || hold.skip || false;
const ASYNC_DISPOSE = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');

let stateDir;
let scratch;
const opts = (extra) => ({ ports: PORTS, stateDir, ...extra });

before(() => {
  stateDir = tempDir('api-state');
  scratch = tempDir('api');
  if (bin.skip) console.log(`# skipping binary tests: ${bin.skip}`);
  if (hold.skip) console.log(`# skipping holder tests: ${hold.skip}`);
});

after(async () => {
  await killAll();
  for (const d of [stateDir, scratch]) if (d) fs.rmSync(d, { recursive: true, force: true });
});

test('the binary is used, and found where expected', { skip: skipBin }, () => {
  const b = api.resolveBackend();
  assert.equal(b.source, 'sockcheck');
  assert.ok(b.bin);
});

test('acquire, use and release a lease (ESM)', { skip: skipBin }, async () => {
  const lease = await acquire(opts({ pool: `${NET}.1-${NET}.2` }));
  assert.ok(lease instanceof Lease);
  assert.equal(lease.source, 'sockcheck');
  assert.match(lease.address, new RegExp(`^${NET.replace(/\./g, '\\.')}\\.[12]$`));
  assert.deepEqual(lease.ports, PORTS);
  assert.equal(lease.owner.pid, process.pid);
  assert.equal(String(lease), lease.address);
  // Use it: a server on the leased address and port.
  const server = net.createServer((s) => s.end('hi'));
  await new Promise((resolve, reject) => server.once('error', reject).listen(PORTS[0], lease.address, resolve));
  const report = await check(lease.address, { ports: PORTS });
  assert.equal(report.addresses[0].verdict, 'busy');
  assert.equal(report.free, false);
  assert.equal(report.source, 'sockcheck');
  const owners = report.addresses[0].ports[0].listeners.flatMap((l) => l.owners.map((o) => o.pid));
  assert.ok(owners.includes(process.pid), `owners ${owners} include this process`);
  await new Promise((resolve) => server.close(resolve));
  await lease.release();
  assert.equal(lease.released, true);
  await lease.release(); // safe twice
  const again = await acquire(opts({ pool: lease.address }));
  assert.equal(again.address, lease.address);
  await again.release();
});

test('[Symbol.asyncDispose] releases the lease', { skip: skipBin }, async () => {
  const pool = `${NET}.3`;
  const lease = await acquire(opts({ pool }));
  assert.equal(typeof lease[ASYNC_DISPOSE], 'function');
  assert.equal(typeof lease[Symbol.for('nodejs.asyncDispose')], 'function');
  await assert.rejects(acquire(opts({ pool })), { code: 'SOCKCHECK_NO_FREE_ADDRESS' });
  await lease[ASYNC_DISPOSE]();
  assert.equal(lease.released, true);
  const again = await acquire(opts({ pool }));
  await again[ASYNC_DISPOSE]();
  await again.release();
});

test('release: not leased rejects SOCKCHECK_NOT_LEASED', { skip: skipBin }, async () => {
  await assert.rejects(release(`${NET}.4`, { stateDir }), (e) => {
    assert.ok(e instanceof SockcheckError);
    assert.equal(e.code, 'SOCKCHECK_NOT_LEASED');
    assert.equal(e.exitStatus, 1);
    return true;
  });
});

test('no free address: the error lists each address, its reason, verdict and holder pid', { skip: skipHolder }, async () => {
  const busy = `${NET}.10`;
  const leased = `${NET}.11`;
  const holder = await startHolder(hold.holder, 'plain', busy, PORTS[1]);
  const owner = (await import('node:child_process')).spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  helpers.children.add(owner);
  try {
    const other = await acquire(opts({ pool: leased, owner: owner.pid }));
    assert.equal(other.owner.pid, owner.pid);
    await assert.rejects(acquire(opts({ pool: `${busy}-${leased}` })), (e) => {
      assert.ok(e instanceof SockcheckError);
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.exitStatus, 1);
      assert.equal(e.hopeless, false);
      assert.match(e.message, /no free address/);
      assert.deepEqual(e.candidates, e.skipped);
      const byAddress = Object.fromEntries(e.candidates.map((c) => [c.address, c]));
      assert.equal(byAddress[busy].reason, 'busy');
      assert.equal(byAddress[busy].verdict, 'busy');
      assert.deepEqual(byAddress[busy].pids, [holder.pid]);
      assert.equal(byAddress[leased].reason, 'leased');
      assert.deepEqual(byAddress[leased].pids, [owner.pid]);
      // ...and in the message, without -v from the caller.
      assert.match(e.message, new RegExp(`${busy.replace(/\./g, '\\.')}\\s+busy\\s+pid ${holder.pid}`));
      assert.match(e.message, new RegExp(`${leased.replace(/\./g, '\\.')}\\s+leased\\s+pid ${owner.pid}`));
      return true;
    });
  } finally {
    await killChild(owner);
    await killChild(holder);
  }
});

test('every address foreign: acquire fails at once (hopeless), with the wildcard holder', { skip: skipHolder }, async () => {
  const holder = await startHolder(hold.holder, 'wildcard', '-', wildcardPort);
  try {
    const t0 = Date.now();
    await assert.rejects(acquire({ stateDir, ports: [wildcardPort], pool: `${NET}.20-${NET}.21`, wait: '20s' }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.candidates.length, 2);
      for (const c of e.candidates) {
        assert.equal(c.reason, 'foreign');
        assert.deepEqual(c.pids, [holder.pid]);
      }
      assert.equal(e.hopeless, true);
      return true;
    });
    assert.ok(Date.now() - t0 < 10000, 'did not wait out --wait');
  } finally {
    await killChild(holder);
  }
});

test('allowForeign keeps waiting on foreign addresses', { skip: skipHolder }, async (t) => {
  const holder = await startHolder(hold.holder, 'wildcard', '-', wildcardPort);
  try {
    const t0 = Date.now();
    let unsupported = false;
    await assert.rejects(acquire({ stateDir, ports: [wildcardPort], pool: `${NET}.22`, wait: 600, allowForeign: true }), (e) => {
      if (e.code === 'SOCKCHECK_USAGE' && /allow-foreign/.test(e.stderr)) {
        unsupported = true;
        return true;
      }
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.hopeless, false);
      return true;
    });
    if (unsupported) t.skip('this sockcheck has no acquire --allow-foreign yet');
    else assert.ok(Date.now() - t0 >= 500, 'waited');
  } finally {
    await killChild(holder);
  }
});

test('bad input rejects SOCKCHECK_USAGE with sockcheck\'s message', { skip: skipBin }, async () => {
  await assert.rejects(acquire(opts({ pool: '127.94.0.256' })), (e) => {
    assert.equal(e.code, 'SOCKCHECK_USAGE');
    assert.equal(e.exitStatus, 2);
    assert.match(e.message, /bad usage: .*127\.94\.0\.256/);
    return true;
  });
  await assert.rejects(acquire(opts({ pool: `${NET}.1`, wait: 'soon' })), { code: 'SOCKCHECK_USAGE' });
  await assert.rejects(check([], {}), { code: 'SOCKCHECK_USAGE' });
  await assert.rejects(check(`${NET}.1`, { ports: [0] }), { code: 'SOCKCHECK_USAGE' });
});

test('check: free and busy addresses, exit 1 is not an error', { skip: skipHolder }, async () => {
  const holder = await startHolder(hold.holder, 'group', `${NET}.30`, PORTS[0], 2);
  try {
    const report = await check([`${NET}.30`, `${NET}.31`], { ports: PORTS });
    assert.equal(report.schema, 1);
    assert.equal(report.source, 'sockcheck');
    assert.equal(report.free, false);
    assert.deepEqual(report.addresses.map((a) => a.verdict), ['busy', 'free']);
    const listeners = report.addresses[0].ports[0].listeners;
    assert.equal(listeners.length, 2);
    assert.equal(listeners[0].reuseport, true);
    assert.deepEqual([...new Set(listeners.flatMap((l) => l.owners.map((o) => o.pid)))], [holder.pid]);
    const free = await check(`${NET}.31`, { ports: PORTS });
    assert.equal(free.free, true);
    const pool = await scan(`${NET}.30-${NET}.31`, { ports: PORTS });
    assert.deepEqual(pool.addresses.map((a) => a.verdict), ['busy', 'free']);
  } finally {
    await killChild(holder);
  }
});

test('waitFree resolves once the holder is gone; times out with the holder named', { skip: skipHolder }, async () => {
  const address = `${NET}.40`;
  const holder = await startHolder(hold.holder, 'plain', address, PORTS[0]);
  try {
    await assert.rejects(waitFree(address, { ports: PORTS, timeout: 300 }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_TIMEOUT');
      assert.equal(e.exitStatus, 1);
      assert.equal(e.verdict, 'busy');
      assert.match(e.message, new RegExp(`pid ${holder.pid}`));
      return true;
    });
    setTimeout(() => killPid(holder.pid), 300);
    const t0 = Date.now();
    const report = await waitFree(address, { ports: PORTS, timeout: '10s' });
    assert.equal(report.addresses[0].verdict, 'free');
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    await killChild(holder);
  }
});

test('waitFree on a foreign address fails at once with SOCKCHECK_FOREIGN', { skip: skipHolder }, async () => {
  const holder = await startHolder(hold.holder, 'wildcard', '-', wildcardPort);
  try {
    await assert.rejects(waitFree(`${NET}.41`, { ports: [wildcardPort], timeout: '20s' }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_FOREIGN');
      assert.equal(e.verdict, 'foreign');
      return true;
    });
  } finally {
    await killChild(holder);
  }
});

test('run: the command gets SOCKCHECK_ADDR and SOCKCHECK_PORTS; its status comes back', { skip: skipBin }, async () => {
  const result = await run(`${NET}.50-${NET}.51`, ['sh', '-c', 'echo "$SOCKCHECK_ADDR $SOCKCHECK_PORTS"; exit 3'],
    { ports: PORTS, stateDir, linger: 200, stdio: 'pipe' });
  assert.equal(result.status, 3);
  assert.equal(result.ok, false);
  assert.equal(result.lingering, false);
  assert.equal(result.source, 'sockcheck');
  assert.match(result.address, new RegExp(`^${NET.replace(/\./g, '\\.')}\\.5[01]$`));
  assert.equal(result.stdout.trim(), `${result.address} ${PORTS.join(',')}`);
  const ok = await run(`${NET}.50`, 'true', { ports: PORTS, stateDir, linger: 100, stdio: 'pipe' });
  assert.equal(ok.status, 0);
  assert.equal(ok.ok, true);
});

test('run: a lingering holder gives status 4 and a JSON report naming it; --reap kills it', { skip: skipHolder }, async () => {
  const pidFile = path.join(scratch, 'holder.pid');
  const reportPath = path.join(scratch, 'lingering.json');
  const cmd = `"${hold.holder}" plain "$SOCKCHECK_ADDR" ${PORTS[0]} >/dev/null & echo $! > "${pidFile}"; sleep 0.3`;
  try {
    const result = await run(`${NET}.52`, cmd, {
      ports: PORTS, stateDir, linger: 300, report: reportPath, reap: true, grace: 200, stdio: 'pipe',
    });
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    assert.equal(result.status, 4);
    assert.equal(result.lingering, true);
    assert.equal(result.address, `${NET}.52`);
    assert.equal(result.reportPath, reportPath);
    assert.ok(result.report, 'the JSON report is parsed');
    assert.deepEqual(result.report.holders.map((h) => h.pid), [pid]);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(alive(pid), false, 'reaped');
  } finally {
    if (fs.existsSync(pidFile)) killPid(Number(fs.readFileSync(pidFile, 'utf8')));
  }
});

test('run: no address rejects SOCKCHECK_NO_FREE_ADDRESS and never runs the command', { skip: skipBin }, async () => {
  const lease = await acquire(opts({ pool: `${NET}.53` }));
  const marker = path.join(scratch, 'ran');
  try {
    await assert.rejects(run(`${NET}.53`, ['touch', marker], { ports: PORTS, stateDir, stdio: 'pipe' }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.exitStatus, 5);
      return true;
    });
    assert.equal(fs.existsSync(marker), false);
  } finally {
    await lease.release();
  }
});

test('run --wait waits for an address', { skip: skipBin }, async (t) => {
  const lease = await acquire(opts({ pool: `${NET}.54` }));
  setTimeout(() => lease.release(), 300);
  let result;
  try {
    result = await run(`${NET}.54`, 'true', { ports: PORTS, stateDir, wait: '10s', linger: 100, stdio: 'pipe' });
  } catch (e) {
    if (e.code === 'SOCKCHECK_USAGE' && /--wait/.test(e.stderr)) return t.skip('this sockcheck has no run --wait yet');
    throw e;
  } finally {
    await lease.release();
  }
  assert.equal(result.status, 0);
  assert.equal(result.address, `${NET}.54`);
});

test('a hung sockcheck is killed after processTimeout (SOCKCHECK_TIMEOUT)', async () => {
  const hung = hungBinary(scratch);
  const t0 = Date.now();
  for (const call of [
    () => acquire({ bin: hung, pool: `${NET}.60`, processTimeout: 300 }),
    () => check(`${NET}.60`, { bin: hung, processTimeout: '300ms' }),
    () => waitFree(`${NET}.60`, { bin: hung, timeout: 100, processTimeout: 300 }),
    () => release(`${NET}.60`, { bin: hung, processTimeout: 300 }),
    () => run(`${NET}.60`, 'true', { bin: hung, processTimeout: 300, stdio: 'pipe', linger: 0, grace: 0 }),
  ]) {
    await assert.rejects(call(), (e) => {
      assert.ok(e instanceof SockcheckError);
      assert.equal(e.code, 'SOCKCHECK_TIMEOUT');
      assert.equal(typeof e.pid, 'number');
      assert.equal(alive(e.pid), false, 'the hung process is gone');
      return true;
    });
  }
  assert.ok(Date.now() - t0 < 15000);
});

test('an AbortSignal kills the child and rejects SOCKCHECK_ABORTED', async () => {
  const hung = hungBinary(scratch);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 200);
  await assert.rejects(acquire({ bin: hung, pool: `${NET}.61`, signal: ac.signal }), (e) => {
    assert.equal(e.code, 'SOCKCHECK_ABORTED');
    assert.equal(alive(e.pid), false);
    return true;
  });
  // Already aborted: nothing is started.
  await assert.rejects(check(`${NET}.61`, { bin: hung, signal: AbortSignal.abort() }), { code: 'SOCKCHECK_ABORTED' });
  await assert.rejects(waitFree(`${NET}.61`, { bin: hung, signal: AbortSignal.abort() }), { code: 'SOCKCHECK_ABORTED' });
});

test('aborting a real waitFree stops sockcheck wait', { skip: skipHolder }, async () => {
  const holder = await startHolder(hold.holder, 'plain', `${NET}.62`, PORTS[0]);
  try {
    const t0 = Date.now();
    await assert.rejects(waitFree(`${NET}.62`, { ports: PORTS, timeout: '30s', signal: AbortSignal.timeout(300) }),
      { code: 'SOCKCHECK_ABORTED' });
    assert.ok(Date.now() - t0 < 5000);
  } finally {
    await killChild(holder);
  }
});

test('a missing binary rejects SOCKCHECK_NOT_RUN', async () => {
  await assert.rejects(check('127.0.0.1', { bin: path.join(scratch, 'nope') }), { code: 'SOCKCHECK_NOT_RUN' });
});

test('ESM and CommonJS share one module: one SockcheckError, one Lease', () => {
  const require = createRequire(import.meta.url);
  const cjs = require('sockcheck');
  assert.equal(cjs.SockcheckError, SockcheckError);
  assert.equal(cjs.Lease, Lease);
  assert.equal(cjs.acquire, acquire);
});

test('concurrent processes never hold the same lease (binary)', { skip: skipBin }, async () => {
  const pool = `${NET}.70-${NET}.72`;
  const startAt = Date.now() + 700;
  const results = await Promise.all(Array.from({ length: 6 }, () => runNode([LEASE_CHILD], {
    env: { POOL: pool, PORTS: PORTS.join(','), STATE_DIR: stateDir, START_AT: String(startAt), HOLD_MS: '1500' },
  })));
  const docs = results.map((r) => JSON.parse(r.stdout.trim().split('\n').pop()));
  const leased = docs.filter((d) => d.address).map((d) => d.address);
  assert.equal(leased.length, 3, JSON.stringify(docs));
  assert.equal(new Set(leased).size, 3, `distinct: ${leased}`);
  for (const d of docs.filter((x) => x.error)) assert.equal(d.error, 'SOCKCHECK_NO_FREE_ADDRESS');
});

test('an older sockcheck without the failure JSON: candidates from its -v lines', async () => {
  const file = path.join(scratch, 'old-sockcheck');
  fs.writeFileSync(file, `#!/bin/sh
echo "sockcheck: skip 127.0.0.2: leased to pid 4242" >&2
echo "sockcheck: skip 127.0.0.3: busy (pid 5151 (node) holds 127.0.0.3:9926)" >&2
echo "sockcheck: skip 127.0.0.4: foreign (pid 6161 (nginx) holds 0.0.0.0:9926)" >&2
echo "sockcheck: no free address in the pool (3 addresses)" >&2
exit 1
`, { mode: 0o755 });
  await assert.rejects(acquire({ bin: file, pool: '127.0.0.2-127.0.0.4' }), (e) => {
    assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
    assert.deepEqual(e.candidates.map((c) => [c.address, c.reason, c.verdict, c.pids]), [
      ['127.0.0.2', 'leased', null, [4242]],
      ['127.0.0.3', 'busy', 'busy', [5151]],
      ['127.0.0.4', 'foreign', 'foreign', [6161]],
    ]);
    assert.equal(e.hopeless, false);
    assert.match(e.message, /^sockcheck acquire: no free address in the pool \(3 addresses\)\n/);
    assert.match(e.message, /127\.0\.0\.3\s+busy\s+pid 5151: pid 5151 \(node\) holds 127\.0\.0\.3:9926/);
    return true;
  });
});

test('exit 3 naming the state directory is SOCKCHECK_STATE; other exit 3 stays SOCKCHECK_INSPECTION_FAILED', async () => {
  const fake = (name, status, line) => {
    const file = path.join(scratch, name);
    fs.writeFileSync(file, `#!/bin/sh\necho '${line}' >&2\nexit ${status}\n`, { mode: 0o755 });
    return file;
  };
  const state = fake('state-3', 3, 'sockcheck: state directory /x/sockcheck: cannot create it: Permission denied (os error 13)');
  const older = fake('state-2', 2, 'sockcheck: state directory /x/sockcheck: Not a directory (os error 20)');
  const inspection = fake('inspection-3', 3, 'sockcheck: netlink sock_diag dump for AF_INET port 9925 failed: EPERM');
  const calls = (bin) => [
    ['acquire', () => acquire({ bin, pool: `${NET}.9` })],
    ['release', () => release(`${NET}.9`, { bin })],
    ['run', () => run(`${NET}.9`, ['true'], { bin, stdio: 'pipe' })],
  ];
  for (const [bin, code, status] of [[state, 'SOCKCHECK_STATE', 3], [older, 'SOCKCHECK_STATE', 2], [inspection, 'SOCKCHECK_INSPECTION_FAILED', 3]]) {
    for (const [sub, call] of calls(bin)) {
      await assert.rejects(call(), (e) => {
        assert.equal(e.code, code, `${sub} via ${path.basename(bin)}: ${e.message}`);
        assert.equal(e.exitStatus, status);
        assert.match(e.message, new RegExp(`^sockcheck ${sub}: `));
        return true;
      });
    }
  }
});

test('a state directory sockcheck cannot use rejects SOCKCHECK_STATE (the binary)', { skip: skipBin }, async () => {
  const file = path.join(scratch, 'not-a-directory');
  fs.writeFileSync(file, '');
  await assert.rejects(acquire({ pool: `${NET}.9`, ports: PORTS, stateDir: path.join(file, 'state') }), (e) => {
    assert.equal(e.code, 'SOCKCHECK_STATE', e.message);
    assert.match(e.message, /state directory/);
    return true;
  });
});
