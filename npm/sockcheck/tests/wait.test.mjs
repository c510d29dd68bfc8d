// The fallback against listeners that never accept: a wildcard one stays
// `foreign` however often it is probed, an exact one stays `busy`, and every
// wait ends within 250 ms of its deadline. Run: node --test npm/sockcheck/tests/
// Resources: 127.61.2X.0/24, TCP ports 46120 (exact) and 46129 (wildcard).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import helpers from './helpers.cjs';

process.env.SOCKCHECK_FALLBACK = '1';
delete process.env.SOCKCHECK_POOL;

const { acquire, check, waitFree } = await import('sockcheck');
const { net: NET, ports: [EXACT_PORT], wildcardPort: WILD_PORT } = helpers.resources('wait');
const NEVER_ACCEPTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'never-accepts.cjs');
// The sentinel that tells a wildcard from an exact listener is Linux's (all of 127/8 is local).
const skip = process.platform === 'linux' ? false : `the fallback's wildcard sentinel is Linux-only (${process.platform})`;
const SLACK_MS = 250;

/** Start a listener that never accepts, and fill its accept queue. */
async function neverAccepts(host, port) {
  const child = spawn(process.execPath, [NEVER_ACCEPTS, host, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  helpers.children.add(child);
  await new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; if (out.includes('ready\n')) resolve(); });
    child.stderr.on('data', (d) => { err += d; });
    child.once('exit', (code) => reject(new Error(`never-accepts ${host}:${port} exited ${code}: ${err}`)));
  });
  // Backlog 1 queues two connections; the third SYN is dropped. Closing ours
  // leaves them queued: from here on a connect times out, as it did for the
  // fallback's own probes after a few checks.
  const target = host === '0.0.0.0' ? `${NET}.250` : host;
  const results = [];
  for (let i = 0; i < 3; i++) {
    results.push(await new Promise((resolve) => {
      const s = net.connect({ host: target, port });
      const done = (r) => { clearTimeout(timer); s.destroy(); resolve(r); };
      const timer = setTimeout(() => done('timeout'), 300);
      s.once('connect', () => done('connected'));
      s.once('error', (e) => done(e.code));
    }));
  }
  assert.equal(results[2], 'timeout', `the accept queue of ${host}:${port} is full: ${results}`);
  return child;
}

let wildcard;
let exact;
before(async () => {
  if (skip) return;
  wildcard = await neverAccepts('0.0.0.0', WILD_PORT);
  exact = await neverAccepts(`${NET}.20`, EXACT_PORT);
});
after(helpers.killAll);

test('a wildcard listener that never accepts stays foreign, however often it is probed', { skip }, async () => {
  for (let i = 0; i < 3; i++) {
    const t0 = Date.now();
    const report = await check(`${NET}.1`, { ports: [WILD_PORT] });
    const a = report.addresses[0];
    assert.equal(a.verdict, 'foreign', JSON.stringify(a.reasons));
    assert.equal(a.reasons[0].code, 'wildcard');
    assert.ok(Date.now() - t0 < 1500, `check ${i} took ${Date.now() - t0}ms`);
  }
  // A pool asks the sentinel once per port, not once per address.
  const t0 = Date.now();
  await assert.rejects(acquire({ pool: `${NET}.1-${NET}.8`, ports: [WILD_PORT], wait: '5s' }), (e) => {
    assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
    assert.equal(e.hopeless, true);
    assert.deepEqual(new Set(e.candidates.map((c) => c.reason)), new Set(['foreign']));
    return true;
  });
  assert.ok(Date.now() - t0 < 1500, `acquire took ${Date.now() - t0}ms`);
  await assert.rejects(waitFree(`${NET}.1`, { ports: [WILD_PORT], timeout: '5s' }), { code: 'SOCKCHECK_FOREIGN' });
});

test('an exact listener that never accepts is busy, not conflict', { skip }, async () => {
  const report = await check(`${NET}.20`, { ports: [EXACT_PORT] });
  const a = report.addresses[0];
  assert.equal(a.verdict, 'busy', JSON.stringify(a.reasons));
  assert.equal(a.ports[0].connect.result, 'timeout');
  assert.match(a.reasons[0].message, /does not accept/);
});

test('every fallback wait ends within 250 ms of its deadline', { skip }, async () => {
  const within = async (what, deadlineMs, call, check) => {
    const t0 = Date.now();
    await assert.rejects(call(), check);
    const took = Date.now() - t0;
    assert.ok(took >= deadlineMs - 5 && took <= deadlineMs + SLACK_MS, `${what}: ${took}ms for a ${deadlineMs}ms deadline`);
  };
  await within('waitFree, foreign allowed', 1500,
    () => waitFree(`${NET}.2`, { ports: [WILD_PORT], timeout: 1500, allowForeign: true }),
    (e) => e.code === 'SOCKCHECK_TIMEOUT' && e.verdict === 'foreign');
  await within('waitFree, busy', 1500,
    () => waitFree(`${NET}.20`, { ports: [EXACT_PORT], timeout: 1500 }),
    (e) => e.code === 'SOCKCHECK_TIMEOUT' && e.verdict === 'busy');
  await within('acquire --wait, foreign allowed', 1500,
    () => acquire({ pool: `${NET}.2-${NET}.4`, ports: [WILD_PORT], wait: 1500, allowForeign: true }),
    (e) => e.code === 'SOCKCHECK_NO_FREE_ADDRESS' && e.hopeless === false);
  await within('acquire --wait, busy', 1500,
    () => acquire({ pool: `${NET}.20`, ports: [EXACT_PORT], wait: 1500 }),
    (e) => e.code === 'SOCKCHECK_NO_FREE_ADDRESS' && e.candidates[0].reason === 'busy');
});
