// The `sockcheck` bin (npx sockcheck): finds the binary, passes arguments,
// stdio, the exit status and a killing signal through.
// Resources: 127.94.4X.0/24, port 45340.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as api from 'sockcheck';
import helpers from './helpers.cjs';

const require = createRequire(import.meta.url);
const LAUNCHER = path.join(path.dirname(require.resolve('sockcheck/package.json')), 'bin', 'sockcheck.cjs');
const { net: NET, ports: PORTS } = helpers.resources('launcher');
const bin = helpers.setupBinary(api);
const scratch = helpers.tempDir('launcher');
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

function fake(name, body) {
  const file = path.join(scratch, name);
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}
const launch = (args, env = {}) => spawnSync(process.execPath, [LAUNCHER, ...args], {
  encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30000,
});

test('--version and a verdict through the launcher', { skip: bin.skip || false }, () => {
  const version = launch(['--version']);
  assert.equal(version.status, 0, version.stderr);
  assert.equal(version.stdout.trim(), `sockcheck ${api.version}`);
  const verdict = launch(['--ports', String(PORTS[0]), `${NET}.1`]);
  assert.ok([0, 1].includes(verdict.status), verdict.stderr);
  assert.match(verdict.stdout, new RegExp(`${NET.replace(/\./g, '\\.')}\\.1\\s+free`));
});

test('arguments, stdout, stderr and the exit status pass through', () => {
  const f = fake('args', 'echo "out:$*"; echo "err" >&2; exit 7');
  const r = launch(['a b', 'c'], { SOCKCHECK_BIN: f });
  assert.equal(r.status, 7);
  assert.equal(r.stdout, 'out:a b c\n');
  assert.equal(r.stderr, 'err\n');
});

test('a signal that kills the binary kills the launcher the same way', () => {
  const f = fake('selfkill', 'kill -TERM $$; sleep 5');
  const r = launch([], { SOCKCHECK_BIN: f });
  assert.equal(r.signal, 'SIGTERM');
});

test('a signal sent to the launcher reaches the binary', async () => {
  const f = fake('trap', 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.05; done');
  const child = spawn(process.execPath, [LAUNCHER], { env: { ...process.env, SOCKCHECK_BIN: f }, stdio: ['ignore', 'pipe', 'inherit'] });
  helpers.children.add(child);
  let out = '';
  await new Promise((resolve) => child.stdout.on('data', (d) => { out += d; if (out.includes('ready')) resolve(); }));
  child.kill('SIGTERM');
  const [code] = await new Promise((resolve) => child.once('exit', (...a) => resolve(a)));
  assert.equal(code, 42);
  assert.match(out, /got-term/);
});

test('no binary anywhere: a clear message and exit 127', (t) => {
  const env = { ...process.env, PATH: path.dirname(process.execPath) };
  delete env.SOCKCHECK_BIN;
  const found = api.resolveBinary({ env });
  if (found) return t.skip(`a binary is installed (${found.source}: ${found.path})`);
  const r = spawnSync(process.execPath, [LAUNCHER, '--version'], { encoding: 'utf8', env });
  assert.equal(r.status, 127);
  assert.match(r.stderr, /cannot find the sockcheck binary/);
});

test('a sockcheck on PATH that is a node launcher is skipped', () => {
  const dir = path.join(scratch, 'pathbin');
  fs.mkdirSync(dir, { recursive: true });
  fs.symlinkSync(LAUNCHER, path.join(dir, 'sockcheck'));
  const found = api.resolveBinary({ env: { PATH: dir } });
  assert.ok(!found || found.source === 'package', `not the launcher: ${JSON.stringify(found)}`);
});
