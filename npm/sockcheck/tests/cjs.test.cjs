'use strict';
// The API from CommonJS (require('sockcheck') through the "require" export
// condition), against the sockcheck binary. Run: node --test npm/sockcheck/tests/
// Resources: 127.94.2X.0/24, ports 45320-45321, a temp state dir.
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const sockcheck = require('sockcheck');
const helpers = require('./helpers.cjs');

const { acquire, check, release, SockcheckError, Lease } = sockcheck;
const { net: NET, ports: PORTS } = helpers.resources('cjs');
const bin = helpers.setupBinary(sockcheck);
const skip = bin.skip || false;
let stateDir;

before(() => {
  stateDir = helpers.tempDir('cjs-state');
  if (bin.skip) console.log(`# skipping: ${bin.skip}`);
});
after(async () => {
  await helpers.killAll();
  if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
});

test('require() gives the CommonJS entry with the whole API', () => {
  assert.equal(require.resolve('sockcheck').endsWith('lib/sockcheck.cjs'), true);
  for (const name of ['acquire', 'release', 'check', 'scan', 'waitFree', 'run', 'resolveBinary', 'resolveBackend']) {
    assert.equal(typeof sockcheck[name], 'function', name);
  }
  assert.equal(typeof SockcheckError, 'function');
  assert.equal(sockcheck.version, require('sockcheck/package.json').version);
});

test('acquire, use and release a lease (CommonJS)', { skip }, async () => {
  const pool = `${NET}.1-${NET}.2`;
  const lease = await acquire({ pool, ports: PORTS, stateDir, wait: '5s' });
  assert.ok(lease instanceof Lease);
  assert.equal(lease.source, 'sockcheck');
  assert.ok([`${NET}.1`, `${NET}.2`].includes(lease.address));
  assert.deepEqual(lease.ports, PORTS);
  assert.equal(lease.stateDir, stateDir);
  // Use it: a server that a client reaches on the leased address.
  const server = net.createServer((s) => s.end('pong'));
  await new Promise((resolve, reject) => server.once('error', reject).listen(PORTS[0], lease.address, resolve));
  const reply = await new Promise((resolve, reject) => {
    let data = '';
    net.connect(PORTS[0], lease.address).on('data', (d) => { data += d; }).on('end', () => resolve(data)).on('error', reject);
  });
  assert.equal(reply, 'pong');
  const report = await check(lease.address, { ports: PORTS });
  assert.equal(report.addresses[0].verdict, 'busy');
  await new Promise((resolve) => server.close(resolve));
  await lease.release();
  await lease.release();
  await assert.rejects(release(lease.address, { stateDir }), (e) => e instanceof SockcheckError && e.code === 'SOCKCHECK_NOT_LEASED');
});

test('no free address: SockcheckError with the candidates', { skip }, async () => {
  const pool = `${NET}.3`;
  const lease = await acquire({ pool, ports: PORTS, stateDir });
  try {
    await assert.rejects(acquire({ pool, ports: PORTS, stateDir }), (e) => {
      assert.ok(e instanceof SockcheckError);
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.candidates.length, 1);
      assert.equal(e.candidates[0].address, pool);
      assert.equal(e.candidates[0].reason, 'leased');
      assert.deepEqual(e.candidates[0].pids, [process.pid]);
      return true;
    });
  } finally {
    await lease.release();
  }
});
