// A Node test harness on sockcheck: lease an address for the test server,
// start the server on it, test, and give the address back.
//
// In a project: `npm install sockcheck`, then `import { acquire } from 'sockcheck'`.
// Here the package is imported from the repo, and the binary is
// $SOCKCHECK_BIN, else the release build (cargo build --release).
// Resources: 127.94.0.0/24-127.94.9.0/24 and ports 45300-45301, like pool.test.js.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquire, check } from '../../npm/sockcheck/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
process.env.SOCKCHECK_BIN ||= path.resolve(here, '../../target/release/sockcheck');
const NET = `127.94.${process.pid % 10}`;
const PORTS = [45300, 45301];
const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockcheck-harness-'));

let lease;
let server;

before(async () => {
  // One address per test server; wait up to 30 s for one to come free.
  lease = await acquire({ pool: `${NET}.100-${NET}.120`, ports: PORTS, wait: '30s', stateDir });
  server = http.createServer((req, res) => res.end(`hello from ${lease.address}\n`));
  await new Promise((resolve) => server.listen(PORTS[1], lease.address, resolve));
});

after(async () => {
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  await lease?.release(); // or: `await using lease = await acquire(...)` in TypeScript / Node 24
  fs.rmSync(stateDir, { recursive: true, force: true });
});

test('the server answers on its leased address', async () => {
  const res = await fetch(`http://${lease.address}:${PORTS[1]}/`);
  assert.equal(await res.text(), `hello from ${lease.address}\n`);
});

test('sockcheck sees the server as the address\'s holder', async () => {
  const report = await check(lease.address, { ports: PORTS });
  const a = report.addresses[0];
  assert.equal(a.verdict, 'busy');
  const port = a.ports.find((p) => p.port === PORTS[1]);
  assert.deepEqual(port.listeners[0].owners.map((o) => o.pid), [process.pid]);
});
