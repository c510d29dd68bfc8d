// The port storm (issue 18): 32 processes each lease a port from a 16-port
// range, bind a real server on it, talk to it (the server answers with a
// token unique to its process and cycle, so an answer from any other server
// is cross-talk) and release it; 2,000 leases in all. It must end with 0
// EADDRINUSE and 0 cross-talk: through the fallback, through the binary, and
// with fallback and binary workers side by side (one lease space).
// Run: node --test npm/sockcheck/tests/
// Resources: 127.85.1X.1, TCP ports 46800-46815 (on 127.85.X.Y, so no
// client's ephemeral port on 127.0.0.1 can take a leased port meanwhile),
// a temp state dir. About 5 s through the fallback, more through the binary
// (two processes per lease).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import helpers from './helpers.cjs';
import { storm } from './fixtures/port-storm.mjs';

const api = await import('sockcheck');
const { net: NET, from, to } = helpers.resources('storm');
const RANGE = `${from}-${to}`;
const HOST = `${NET}.1`;
const WORKERS = 32;
const LEASES = 2000;
const here = path.dirname(fileURLToPath(import.meta.url));
const stateDir = helpers.tempDir('port-storm-state');

// The binary, when there is one and it knows acquire-port.
const bin = process.env.SOCKCHECK_FALLBACK ? { skip: 'SOCKCHECK_FALLBACK is set' } : helpers.setupBinary(api);
let skipBinary = bin.skip || false;
if (!skipBinary) {
  const help = spawnSync(bin.backend.bin, ['acquire-port', '--help'], { encoding: 'utf8' });
  if (help.status !== 0) {
    skipBinary = `${bin.backend.bin} has no acquire-port (${help.stderr.trim().split('\n')[0]})`;
    if (helpers.STRICT) throw new Error(skipBinary);
  }
}
if (skipBinary) console.log(`# skipping the binary storms: ${skipBinary}`);

after(async () => {
  await helpers.killAll();
  fs.rmSync(stateDir, { recursive: true, force: true });
});

const FALLBACK_ENV = { SOCKCHECK_FALLBACK: '1', NODE_NO_WARNINGS: '1' };
const BINARY_ENV = () => ({ SOCKCHECK_FALLBACK: '', SOCKCHECK_BIN: bin.backend.bin, SOCKCHECK_STATE_DIR: stateDir, NODE_NO_WARNINGS: '1' });

function assertClean(r, sources) {
  console.log(`# port storm (${sources.join('+')}): ${r.leases} leases by ${r.workers} processes on ${r.range} in ${r.seconds.toFixed(1)} s: ` +
    `${r.eaddrinuse} EADDRINUSE, ${r.crosstalk} cross-talk`);
  assert.deepEqual(r.errors, [], 'no worker failed');
  assert.equal(r.leases, LEASES);
  assert.equal(r.eaddrinuse, 0, 'no server bind failed with EADDRINUSE');
  assert.equal(r.crosstalk, 0, `every answer came from its own server: ${JSON.stringify(r.crosstalkSamples)}`);
  assert.deepEqual(r.sources.sort(), sources.slice().sort());
}

test(`port storm, fallback: ${WORKERS} processes, ${LEASES} leases of 16 ports, 0 EADDRINUSE, 0 cross-talk`, { timeout: 60_000 }, async () => {
  const r = await storm({ workers: WORKERS, leases: LEASES, range: RANGE, host: HOST, env: FALLBACK_ENV, children: helpers.children, cwd: here });
  assertClean(r, ['fallback']);
});

test(`port storm, binary: ${WORKERS} processes, ${LEASES} leases of 16 ports, 0 EADDRINUSE, 0 cross-talk`, { skip: skipBinary, timeout: 120_000 }, async () => {
  const r = await storm({ workers: WORKERS, leases: LEASES, range: RANGE, host: HOST, env: BINARY_ENV(), children: helpers.children, cwd: here });
  assertClean(r, ['sockcheck']);
});

test(`port storm, binary and fallback side by side: ${LEASES} leases, 0 EADDRINUSE, 0 cross-talk`, { skip: skipBinary, timeout: 120_000 }, async () => {
  const r = await storm({
    workers: WORKERS, leases: LEASES, range: RANGE, host: HOST, env: BINARY_ENV(),
    envFor: (i) => (i % 2 ? { SOCKCHECK_FALLBACK: '1' } : {}), children: helpers.children, cwd: here,
  });
  assertClean(r, ['sockcheck', 'fallback']);
});
