#!/usr/bin/env node
// Benchmark (not a CI gate): the port storm of npm/sockcheck/tests/port-storm.test.mjs
// run with the real get-port package, beside sockcheck's acquirePort, and
// what each ends with: EADDRINUSE collisions and cross-talk.
//
// Usage: node npm/bench/get-port-storm.mjs [--runs N] [--workers N] [--leases N]
//          [--get-port VERSION] [--bin PATH] [--no-sockcheck]
//   32 workers, 2,000 leases, 3 runs of each by default; get-port 7.2.0.
//   get-port is installed from the npm registry into a temp dir at run time
//   (never a dependency of this repository); --bin is the sockcheck binary for
//   the binary rows (default: $SOCKCHECK_BIN, else target/release/sockcheck;
//   skipped when it has no acquire-port).
// Resources: 127.85.250.1, TCP ports 46800-46815 (the storm tests' range: do
// not run it beside `node --test npm/sockcheck/tests/`).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { storm } from '../sockcheck/tests/fixtures/port-storm.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const pkgDir = path.join(root, 'npm/sockcheck');
const { values: o } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    workers: { type: 'string', default: '32' },
    leases: { type: 'string', default: '2000' },
    'get-port': { type: 'string', default: '7.2.0' },
    bin: { type: 'string' },
    'no-sockcheck': { type: 'boolean', default: false },
  },
});
const runs = Number(o.runs);
const workers = Number(o.workers);
const leases = Number(o.leases);
const RANGE = '46800-46815';
const HOST = '127.85.250.1';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockcheck-get-port-bench-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
console.error(`installing get-port@${o['get-port']} into ${tmp}`);
fs.writeFileSync(path.join(tmp, 'package.json'), '{"private":true}\n');
execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `get-port@${o['get-port']}`], { cwd: tmp, stdio: 'inherit' });
const gpDir = path.join(tmp, 'node_modules/get-port');
const gpVersion = JSON.parse(fs.readFileSync(path.join(gpDir, 'package.json'), 'utf8')).version;
const GET_PORT = pathToFileURL(path.join(gpDir, 'index.js')).href;

const bin = o.bin ?? process.env.SOCKCHECK_BIN ?? path.join(root, 'target/release/sockcheck');
const binHasPorts = fs.existsSync(bin)
  && spawnSync(bin, ['acquire-port', '--help'], { encoding: 'utf8' }).status === 0;

const rows = [[`get-port ${gpVersion}`, 'get-port', { NODE_NO_WARNINGS: '1' }]];
if (!o['no-sockcheck']) {
  rows.push(['sockcheck acquirePort (fallback)', 'sockcheck', { SOCKCHECK_FALLBACK: '1', NODE_NO_WARNINGS: '1' }]);
  if (binHasPorts) rows.push(['sockcheck acquirePort (binary)', 'sockcheck', { SOCKCHECK_BIN: bin, SOCKCHECK_FALLBACK: '', NODE_NO_WARNINGS: '1' }]);
  else console.error(`no binary rows: ${bin} has no acquire-port`);
}

const results = [];
for (const [name, mode, env] of rows) {
  for (let i = 0; i < runs; i++) {
    const r = await storm({ workers, leases, range: RANGE, host: HOST, mode, env: { ...env, GET_PORT }, cwd: pkgDir, timeoutMs: 600_000 });
    results.push({ name, ...r });
    console.error(`${name} run ${i + 1}: ${r.leases} leases, ${r.eaddrinuse} EADDRINUSE, ${r.crosstalk} cross-talk, ` +
      `${r.outOfRange} out-of-range answers, ${r.errors.length} errors, ${r.seconds.toFixed(1)} s`);
    if (r.errors.length) console.error(`  first error: ${r.errors[0]}`);
  }
}

const lines = ['| implementation | run | leases | EADDRINUSE | cross-talk | out-of-range | errors | seconds |', '|---|---|---|---|---|---|---|---|'];
let n = 0;
let last = '';
for (const r of results) {
  n = r.name === last ? n + 1 : 1;
  last = r.name;
  lines.push(`| ${r.name} | ${n} | ${r.leases} | ${r.eaddrinuse} | ${r.crosstalk} | ${r.outOfRange} | ${r.errors.length} | ${r.seconds.toFixed(1)} |`);
}
console.log(lines.join('\n'));
console.log(`\n${workers} workers, ${leases} leases a run, range ${RANGE} on ${HOST}; ${os.cpus().length} CPUs, node ${process.version}, ${os.release()}, ${new Date().toISOString().slice(0, 10)}`);
