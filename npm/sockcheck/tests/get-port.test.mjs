// `sockcheck/get-port`: get-port v7's API (getPort({port, exclude, host}),
// portNumbers), each port a lease held until the process exits or
// release(port). Through whichever backend the package finds (the binary in
// CI, against the installed copy). Run: node --test npm/sockcheck/tests/
// Resources: 127.85.3X.1, TCP ports 46840-46859, a temp state dir.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import helpers from './helpers.cjs';

const stateDir = helpers.tempDir('get-port-state');
process.env.SOCKCHECK_STATE_DIR = stateDir;
process.env.NODE_NO_WARNINGS = '1';

const getPortModule = await import('sockcheck/get-port');
const { default: getPort, portNumbers, release, clearLockedPorts } = getPortModule;
const api = await import('sockcheck');
const require = createRequire(import.meta.url);
const { net: NET, from: P } = helpers.resources('getPort');
const host = `${NET}.1`;

after(async () => {
  await clearLockedPorts();
  await helpers.killAll();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test('the exports: getPort (default), portNumbers, release, clearLockedPorts; the same from require()', () => {
  assert.equal(typeof getPort, 'function');
  assert.equal(getPortModule.getPort, getPort);
  const cjs = require('sockcheck/get-port');
  assert.equal(cjs.default, getPort, 'one implementation for ESM and CommonJS');
  assert.equal(cjs.portNumbers, portNumbers);
  assert.equal(cjs.release, release);
  assert.ok(require.resolve('sockcheck/get-port').endsWith('lib/get-port.cjs'));
});

test('portNumbers(from, to): the ports in order; get-port\'s argument errors', () => {
  assert.deepEqual([...portNumbers(46840, 46843)], [46840, 46841, 46842, 46843]);
  assert.deepEqual([...portNumbers(65535, 65535)], [65535]);
  assert.throws(() => portNumbers(1.5, 2000), TypeError);
  assert.throws(() => portNumbers('1024', 2000), TypeError);
  assert.throws(() => portNumbers(1023, 2000), RangeError);
  assert.throws(() => portNumbers(2000, 65536), RangeError);
  assert.throws(() => portNumbers(2000, 1999), RangeError);
});

test('a preferred port is leased, and not handed out again until released', async () => {
  const a = await getPort({ port: P, host });
  assert.equal(a, P);
  // Leased: the next call (this process or any other) does not get it.
  const b = await getPort({ port: [P, P + 1], host });
  assert.equal(b, P + 1);
  const other = await helpers.startPortChild({ API: 'get-port', PREFERRED: `${P},${P + 1},${P + 2}`, HOST: host, HOLD_MS: '0' });
  assert.deepEqual(other.line.ports, [P + 2], JSON.stringify(other.line));
  await other.next();
  // The caller's server binds it.
  const server = net.createServer();
  await new Promise((resolve, reject) => server.once('error', reject).listen(a, host, resolve));
  await new Promise((r) => server.close(r));
  assert.equal(await release(a), true);
  assert.equal(await release(a), false, 'released already');
  const again = await helpers.startPortChild({ API: 'get-port', PREFERRED: String(P), HOST: host, HOLD_MS: '0' });
  assert.deepEqual(again.line.ports, [P]);
  await again.next();
  await release(b);
});

test('portNumbers as the preferred ports; exclude is never returned', async () => {
  const p = await getPort({ port: portNumbers(P + 3, P + 6), exclude: [P + 3, P + 4], host });
  assert.equal(p, P + 5);
  await release(p);
});

test('bad options are get-port\'s errors', async () => {
  await assert.rejects(getPort({ exclude: 5 }), TypeError);
  await assert.rejects(getPort({ exclude: ['46840'] }), TypeError);
  await assert.rejects(getPort({ port: 70000, host }), RangeError);
});

test('a preferred port that is busy falls back to the default range (never an excluded port)', async () => {
  const server = net.createServer();
  await new Promise((resolve, reject) => server.once('error', reject).listen({ port: P + 7, host, exclusive: true }, resolve));
  try {
    const range = api.defaultPortRange();
    const first = await getPort({ port: P + 7, host, exclude: [range[0], range[1]] });
    assert.notEqual(first, P + 7);
    assert.ok(range.includes(first), `${first} is in the default range`);
    assert.ok(first !== range[0] && first !== range[1], `${first} is not excluded`);
    const any = await getPort({ host });
    assert.ok(range.includes(any), `${any} is in the default range`);
    assert.notEqual(any, first);
    await release(first);
    await release(any);
  } finally {
    server.close();
  }
});
