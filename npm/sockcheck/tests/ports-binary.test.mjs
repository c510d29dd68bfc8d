// acquirePort through the binary (`sockcheck acquire-port --owner PID --json`),
// and port leases shared between the binary and the fallback (one token per
// port, docs/leases.md). Run: node --test npm/sockcheck/tests/
// Resources: 127.85.4X.1, TCP ports 46860-46879, a temp state dir.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import helpers from './helpers.cjs';

delete process.env.SOCKCHECK_FALLBACK;
const api = await import('sockcheck');
const { acquirePort, releasePort, PortLease, SockcheckError } = api;
const { net: NET, from: P } = helpers.resources('portsBinary');
const HOST = `${NET}.1`;
const stateDir = helpers.tempDir('ports-binary-state');
process.env.SOCKCHECK_STATE_DIR = stateDir;

const bin = helpers.setupBinary(api);
let skip = bin.skip || false;
if (!skip) {
  const help = spawnSync(bin.backend.bin, ['acquire-port', '--help'], { encoding: 'utf8' });
  if (help.status !== 0) {
    skip = `${bin.backend.bin} has no acquire-port`;
    if (helpers.STRICT) throw new Error(skip);
  }
}

before(() => { if (skip) console.log(`# skipping: ${skip}`); });
after(async () => {
  await helpers.killAll();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

const portRows = () => {
  const r = spawnSync(bin.backend.bin, ['leases', '--json', '--state-dir', stateDir], { encoding: 'utf8' });
  return JSON.parse(r.stdout).leases.filter((l) => l.kind === 'port' && l.port >= P && l.port <= P + 19);
};

test('acquirePort runs acquire-port --owner PID --json, and release gives the ports back', { skip }, async () => {
  const lease = await acquirePort({ range: `${P}-${P + 4}`, host: HOST, count: 2 });
  try {
    assert.ok(lease instanceof PortLease);
    assert.equal(lease.source, 'sockcheck');
    assert.equal(lease.ports.length, 2);
    assert.equal(lease.port, lease.ports[0]);
    assert.ok(lease.ports.every((p) => p >= P && p <= P + 4));
    assert.equal(lease.host, HOST);
    assert.equal(lease.owner.pid, process.pid);
    assert.equal(lease.stateDir, stateDir);
    // The binary lists them as port leases of this process.
    const rows = portRows();
    assert.deepEqual(rows.map((r) => r.port).sort(), lease.ports.slice().sort());
    assert.ok(rows.every((r) => r.address === HOST && r.owner.pid === process.pid), JSON.stringify(rows));
    const server = net.createServer();
    await new Promise((resolve, reject) => server.once('error', reject).listen(lease.port, HOST, resolve));
    await new Promise((r) => server.close(r));
  } finally {
    await lease.release();
  }
  assert.deepEqual(portRows(), []);
  await lease.release(); // safe twice
  await assert.rejects(releasePort(lease.ports, { host: HOST }), (e) => e instanceof SockcheckError && e.code === 'SOCKCHECK_NOT_LEASED');
});

test('not enough free ports: SOCKCHECK_NO_FREE_PORT with each port, why and its holder', { skip }, async () => {
  const lease = await acquirePort({ range: P + 5, host: HOST });
  try {
    await assert.rejects(acquirePort({ range: P + 5, host: HOST }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_PORT');
      assert.equal(e.exitStatus, 1);
      assert.equal(e.skipped[0].port, P + 5);
      assert.equal(e.skipped[0].reason, 'leased');
      assert.deepEqual(e.skipped[0].pids, [process.pid]);
      assert.match(e.message, /leased to pid/);
      return true;
    });
    await assert.rejects(acquirePort({ range: `${P + 6}-${P + 5}`, host: HOST }), { code: 'SOCKCHECK_USAGE' });
  } finally {
    await lease.release();
  }
});

test('binary and fallback skip each other\'s port leases', { skip }, async () => {
  // A fallback lease (another process): the binary does not hand its port out.
  const fb = await helpers.startPortChild({ RANGE: String(P + 7), HOST, SOCKCHECK_FALLBACK: '1', HOLD_MS: 'forever' });
  assert.equal(fb.line.source, 'fallback');
  try {
    await assert.rejects(acquirePort({ range: P + 7, host: HOST }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_PORT');
      assert.equal(e.skipped[0].reason, 'leased');
      assert.deepEqual(e.skipped[0].pids, [fb.child.pid]);
      return true;
    });
    const next = await acquirePort({ range: `${P + 7}-${P + 8}`, host: HOST });
    assert.equal(next.port, P + 8);
    // ...and a binary lease: the fallback does not hand its port out.
    const other = await helpers.startPortChild({ RANGE: `${P + 7}-${P + 8}`, HOST, SOCKCHECK_FALLBACK: '1' });
    assert.equal(other.line.error, 'SOCKCHECK_NO_FREE_PORT', JSON.stringify(other.line));
    assert.deepEqual(other.line.skipped.map((s) => [s.port, s.reason]), [[P + 7, 'leased'], [P + 8, 'leased']]);
    assert.match(other.line.skipped[1].message, new RegExp(`^leased to pid ${process.pid} \\(uid \\d+, sockcheck binary`));
    await next.release();
  } finally {
    await helpers.killChild(fb.child);
  }
  // Gone with its process: the binary takes it now.
  const lease = await acquirePort({ range: P + 7, host: HOST, wait: '5s' });
  await lease.release();
});

test('a binary port lease ends with its owner', { skip }, async () => {
  const holder = await helpers.startPortChild({ RANGE: String(P + 9), HOST, HOLD_MS: 'forever' });
  assert.equal(holder.line.source, 'sockcheck');
  await helpers.killChild(holder.child);
  const t0 = Date.now();
  const lease = await acquirePort({ range: P + 9, host: HOST, wait: '10s' });
  assert.ok(Date.now() - t0 < 5000, `${Date.now() - t0}ms`);
  await lease.release();
});
