// The fallback (no binary), forced on Linux with SOCKCHECK_FALLBACK=1, against
// real listeners. Run: node --test npm/sockcheck/tests/
// Resources: 127.94.3X.0/24, TCP ports 45330-45331 and 45392 (wildcard), UDP
// lease port 45339 (off Linux; on Linux leases are abstract unix tokens).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import helpers from './helpers.cjs';

const R = helpers.resources('fallback');
// Before any call: every call of this process (and of its children) uses the fallback.
process.env.SOCKCHECK_FALLBACK = '1';
process.env.SOCKCHECK_LEASE_PORT = String(R.leasePort);
delete process.env.SOCKCHECK_STATE_DIR;

const api = await import('sockcheck');
const { acquire, release, check, waitFree, run, SockcheckError } = api;
const { requireHolder, startHolder, killAll, killChild, killPid, runNode, LEASE_CHILD } = helpers;
const { net: NET, ports: PORTS, wildcardPort } = R;
const hold = requireHolder();
const skipHolder = hold.skip || false;
const ASYNC_DISPOSE = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');
const warnings = [];
process.on('warning', (w) => warnings.push(w));

before(() => {
  if (hold.skip) console.log(`# skipping holder tests: ${hold.skip}`);
});
after(killAll);

test('the fallback is used, and says so once', async () => {
  assert.equal(api.resolveBackend().source, 'fallback');
  const a = await check(`${NET}.1`, { ports: PORTS });
  const b = await check(`${NET}.1`, { ports: PORTS });
  assert.equal(a.source, 'fallback');
  assert.equal(b.source, 'fallback');
  assert.equal(a.addresses[0].verdict, 'free');
  assert.equal(a.free, true);
  await new Promise((r) => setImmediate(r));
  const ours = warnings.filter((w) => w.name === 'SockcheckFallbackWarning' && w.code === 'SOCKCHECK_FALLBACK');
  assert.equal(ours.length, 1, 'one warning');
  assert.match(ours[0].message, /no owners/);
  assert.match(ours[0].message, /no SO_REUSEPORT evidence/);
  assert.match(ours[0].message, /no lingering-worker report/);
  assert.match(ours[0].message, /SOCKCHECK_FALLBACK=1/);
  if (process.platform === 'linux') {
    // Said plainly: which leases it honours, and what it cannot see.
    assert.match(ours[0].message, /fallback and binary leases share one lease space \(abstract unix tokens/);
    assert.match(ours[0].message, /cannot see: the owners of listeners .*SO_REUSEPORT .*lingering workers/);
  }
});

test('check: plain, reuseport group and wildcard listeners are not free', { skip: skipHolder }, async () => {
  const plain = await startHolder(hold.holder, 'plain', `${NET}.2`, PORTS[0]);
  const group = await startHolder(hold.holder, 'group', `${NET}.3`, PORTS[1], 3);
  const wildcard = await startHolder(hold.holder, 'wildcard', '-', wildcardPort);
  try {
    const report = await check([`${NET}.2`, `${NET}.3`, `${NET}.4`], { ports: PORTS });
    assert.deepEqual(report.addresses.map((a) => a.verdict), ['busy', 'busy', 'free']);
    assert.equal(report.free, false);
    assert.equal(report.addresses[0].ports[0].canary.result, 'EADDRINUSE');
    assert.equal(report.addresses[0].ports[0].connect.result, 'connected');
    assert.deepEqual(report.addresses[0].ports[0].listeners, [], 'the fallback names no listeners');
    const foreign = await check(`${NET}.4`, { ports: [PORTS[0], wildcardPort] });
    assert.equal(foreign.addresses[0].verdict, 'foreign');
    assert.equal(foreign.addresses[0].reasons[0].code, 'wildcard');
  } finally {
    await Promise.all([plain, group, wildcard].map(killChild));
  }
});

test('acquire never hands out an address held by a plain, reuseport or wildcard listener', { skip: skipHolder }, async () => {
  const plain = await startHolder(hold.holder, 'plain', `${NET}.10`, PORTS[0]);
  const group = await startHolder(hold.holder, 'group', `${NET}.11`, PORTS[1], 2);
  const single = await startHolder(hold.holder, 'reuseport', `${NET}.12`, PORTS[0]);
  const leases = [];
  try {
    const pool = `${NET}.10-${NET}.15`;
    for (let i = 0; i < 3; i++) leases.push(await acquire({ pool, ports: PORTS }));
    assert.deepEqual(leases.map((l) => l.address), [`${NET}.13`, `${NET}.14`, `${NET}.15`]);
    for (const l of leases) {
      assert.equal(l.source, 'fallback');
      assert.deepEqual(l.ports, PORTS);
      if (process.platform === 'linux') {
        assert.equal(l.token, `@sockcheck/v1/lease/${l.address}`);
        assert.equal(l.leasePort, undefined, 'SOCKCHECK_LEASE_PORT is accepted and ignored on Linux');
      } else {
        assert.equal(l.leasePort, R.leasePort);
      }
    }
    await assert.rejects(acquire({ pool, ports: PORTS }), (e) => {
      assert.ok(e instanceof SockcheckError);
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.source, 'fallback');
      assert.deepEqual(e.candidates.map((c) => c.reason), ['busy', 'busy', 'busy', 'leased', 'leased', 'leased']);
      assert.equal(e.hopeless, false);
      assert.match(e.message, new RegExp(`${NET.replace(/\./g, '\\.')}\\.10\\s+busy`));
      return true;
    });
    // A wildcard listener on one of the ports makes every address foreign: fail at once.
    const wildcard = await startHolder(hold.holder, 'wildcard', '-', wildcardPort);
    try {
      const t0 = Date.now();
      await assert.rejects(acquire({ pool: `${NET}.16-${NET}.17`, ports: [PORTS[0], wildcardPort], wait: '20s' }), (e) => {
        assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
        assert.equal(e.hopeless, true);
        assert.deepEqual(e.candidates.map((c) => c.reason), ['foreign', 'foreign']);
        return true;
      });
      assert.ok(Date.now() - t0 < 5000, 'failed at once');
      await assert.rejects(acquire({ pool: `${NET}.16`, ports: [wildcardPort], wait: 300, allowForeign: true }),
        (e) => e.code === 'SOCKCHECK_NO_FREE_ADDRESS' && e.hopeless === false);
    } finally {
      await killChild(wildcard);
    }
  } finally {
    for (const l of leases) await l.release();
    await Promise.all([plain, group, single].map(killChild));
  }
});

test('release is safe twice; [Symbol.asyncDispose] releases; release() of a foreign lease rejects', async () => {
  const pool = `${NET}.20`;
  const lease = await acquire({ pool, ports: PORTS });
  await assert.rejects(acquire({ pool, ports: PORTS }), (e) => e.candidates[0].reason === 'leased');
  await lease.release();
  await lease.release();
  assert.equal(lease.released, true);
  const again = await acquire({ pool, ports: PORTS });
  await again[ASYNC_DISPOSE]();
  assert.equal(again.released, true);
  const third = await acquire({ pool, ports: PORTS });
  await release(pool); // the module-level release finds this process's lease
  await third.release();
  await assert.rejects(release(`${NET}.21`), { code: 'SOCKCHECK_NOT_LEASED' });
});

test('a lease is exclusive across processes, and a killed owner\'s lease is free within a second', async () => {
  const pool = `${NET}.30`;
  const child = await new Promise((resolve, reject) => {
    const c = (async () => {
      const { spawn } = await import('node:child_process');
      const p = spawn(process.execPath, [LEASE_CHILD], {
        env: { ...process.env, POOL: pool, PORTS: PORTS.join(','), HOLD_MS: 'forever' }, stdio: ['ignore', 'pipe', 'inherit'],
      });
      helpers.children.add(p);
      let out = '';
      p.stdout.on('data', (d) => {
        out += d;
        if (out.includes('\n')) resolve({ p, doc: JSON.parse(out.split('\n')[0]) });
      });
      p.once('exit', (code) => reject(new Error(`lease child exited ${code}: ${out}`)));
    })();
    c.catch(reject);
  });
  try {
    assert.equal(child.doc.address, pool);
    assert.equal(child.doc.source, 'fallback');
    await assert.rejects(acquire({ pool, ports: PORTS }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.candidates[0].reason, 'leased');
      if (process.platform === 'linux') {
        assert.equal(e.candidates[0].message, `leased to pid ${child.p.pid} (uid ${process.getuid()}, npm fallback)`);
        assert.deepEqual(e.candidates[0].pids, [child.p.pid]);
      } else {
        assert.match(e.candidates[0].message, /another process/);
      }
      return true;
    });
    const killedAt = Date.now();
    process.kill(child.p.pid, 'SIGKILL');
    const lease = await acquire({ pool, ports: PORTS, wait: 1000 });
    const took = Date.now() - killedAt;
    assert.equal(lease.address, pool);
    assert.ok(took < 1000, `free again after ${took}ms`);
    await lease.release();
  } finally {
    await killChild(child.p);
  }
});

test('concurrent processes never hold the same lease (fallback)', async () => {
  const pool = `${NET}.40-${NET}.42`;
  const startAt = Date.now() + 700;
  const results = await Promise.all(Array.from({ length: 6 }, () => runNode([LEASE_CHILD], {
    env: { POOL: pool, PORTS: PORTS.join(','), START_AT: String(startAt), HOLD_MS: '1500' },
  })));
  const docs = results.map((r) => JSON.parse(r.stdout.trim().split('\n').pop()));
  const leased = docs.filter((d) => d.address).map((d) => d.address);
  assert.equal(leased.length, 3, JSON.stringify(docs));
  assert.equal(new Set(leased).size, 3, `distinct: ${leased}`);
  for (const d of docs) if (d.address) assert.equal(d.source, 'fallback');
  for (const d of docs.filter((x) => x.error)) assert.equal(d.error, 'SOCKCHECK_NO_FREE_ADDRESS');
});

test('a lease holds the address against other fallback users, not against servers on it', async () => {
  // The lease token is a unix socket (a UDP one off Linux): the leaseholder's
  // own TCP server binds the address freely.
  const lease = await acquire({ pool: `${NET}.50`, ports: PORTS });
  const server = net.createServer();
  await new Promise((resolve, reject) => server.once('error', reject).listen(PORTS[0], lease.address, resolve));
  const report = await check(lease.address, { ports: PORTS });
  assert.equal(report.addresses[0].verdict, 'busy');
  await new Promise((r) => server.close(r));
  await lease.release();
});

test('waitFree polls the canary until the holder is gone; times out naming the verdict', { skip: skipHolder }, async () => {
  const address = `${NET}.60`;
  const holder = await startHolder(hold.holder, 'plain', address, PORTS[0]);
  try {
    await assert.rejects(waitFree(address, { ports: PORTS, timeout: 300 }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_TIMEOUT');
      assert.equal(e.verdict, 'busy');
      assert.equal(e.source, 'fallback');
      return true;
    });
    setTimeout(() => killPid(holder.pid), 300);
    const t0 = Date.now();
    const report = await waitFree(address, { ports: PORTS, timeout: '10s' });
    assert.equal(report.source, 'fallback');
    assert.equal(report.addresses[0].verdict, 'free');
    assert.ok(Date.now() - t0 < 3000);
    await assert.rejects(waitFree(address, { ports: PORTS, signal: AbortSignal.abort() }), { code: 'SOCKCHECK_ABORTED' });
  } finally {
    await killChild(holder);
  }
});

test('waitFree on a wildcard-covered address fails at once with SOCKCHECK_FOREIGN', { skip: skipHolder }, async () => {
  const wildcard = await startHolder(hold.holder, 'wildcard', '-', wildcardPort);
  try {
    await assert.rejects(waitFree(`${NET}.61`, { ports: [wildcardPort], timeout: '20s' }), { code: 'SOCKCHECK_FOREIGN' });
  } finally {
    await killChild(wildcard);
  }
});

test('run: the command gets SOCKCHECK_ADDR and SOCKCHECK_PORTS; no lingering report', async () => {
  const pool = `${NET}.70`;
  const result = await run(pool, ['sh', '-c', 'echo "$SOCKCHECK_ADDR $SOCKCHECK_PORTS"; exit 7'],
    { ports: PORTS, stdio: 'pipe', linger: '1s', report: 'ignored.json' });
  assert.equal(result.status, 7);
  assert.equal(result.source, 'fallback');
  assert.equal(result.address, pool);
  assert.equal(result.lingering, null);
  assert.equal(result.report, null);
  assert.equal(result.stdout.trim(), `${pool} ${PORTS.join(',')}`);
  // The lease is given back after the command.
  const lease = await acquire({ pool, ports: PORTS });
  await lease.release();
  const killed = await run(pool, ['sh', '-c', 'kill -TERM $$'], { ports: PORTS, stdio: 'pipe' });
  assert.equal(killed.signal, 'SIGTERM');
  assert.equal(killed.status, 143);
  await assert.rejects(run(pool, ['sleep', '30'], { ports: PORTS, stdio: 'pipe', signal: AbortSignal.timeout(200) }),
    { code: 'SOCKCHECK_ABORTED' });
  const after = await acquire({ pool, ports: PORTS });
  await after.release();
});

test('bad input: SOCKCHECK_USAGE', async () => {
  await assert.rejects(acquire({ pool: '127.94.0.256', ports: PORTS }), { code: 'SOCKCHECK_USAGE' });
  await assert.rejects(acquire({ pool: `${NET}.1`, ports: [70000] }), { code: 'SOCKCHECK_USAGE' });
  await assert.rejects(check('localhost:80'), { code: 'SOCKCHECK_USAGE' });
});
