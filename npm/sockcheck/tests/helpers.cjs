'use strict';
// Shared by the package's tests (ESM and CommonJS).
//
// Test-only resources: addresses in 127.94.0.0/16 and ports 45300-45399 (each
// test file its own /24 block and ports, see BLOCKS; files added since issue
// 16 use 127.61.0.0/16 and ports 46100-46199, see BLOCKS_61; port leases
// use 127.85.0.0/16 and ports 46800-46899, see BLOCKS_85), and a private temp
// state dir per file. Binaries: $SOCKCHECK_BIN (else the installed platform
// package or PATH, else the repo's target/release/sockcheck) and
// $SOCKCHECK_HOLDER (else target/release/examples/sockcheck-holder, else
// target/release/sockcheck-holder). $SOCKCHECK_REPO names the repo when the
// tests run from a copy (npm/ci.sh). With SOCKCHECK_TEST_STRICT=1 (CI) a
// missing binary or holder fails the tests instead of skipping them.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const REPO = process.env.SOCKCHECK_REPO || path.resolve(__dirname, '../../..');
const STRICT = process.env.SOCKCHECK_TEST_STRICT === '1';

/**
 * Each test file's addresses (127.94.X.0/24, X = 10*block + pid % 10) and
 * ports. examples/node uses block 0 and ports 45300-45301.
 */
const BLOCKS = {
  api: { block: 1, ports: [45310, 45311], wildcardPort: 45391 },
  cjs: { block: 2, ports: [45320, 45321], wildcardPort: 45393 },
  fallback: { block: 3, ports: [45330, 45331], wildcardPort: 45392, leasePort: 45339 },
  launcher: { block: 4, ports: [45340], wildcardPort: null },
};

/** The same in 127.61.0.0/16 (127.61.X.0/24, X = 10*block + pid % 10), ports 46100-46199. */
const BLOCKS_61 = {
  token: { block: 1, ports: [46110, 46111] },
  wait: { block: 2, ports: [46120, 46121], wildcardPort: 46129 },
  defaults: { block: 3, ports: [46130] },
  pools: { block: 0, ports: [46199] },
};

/**
 * Port leases (issue 18): 127.85.0.0/16 (127.85.X.0/24, X = 10*block + pid % 10),
 * ports 46800-46899. The storms share 46800-46815 (they run one at a time).
 */
const BLOCKS_85 = {
  storm: { block: 1, from: 46800, to: 46815 },
  portsFallback: { block: 2, from: 46820, to: 46839 },
  getPort: { block: 3, from: 46840, to: 46859 },
  portsBinary: { block: 4, from: 46860, to: 46879 },
};

function resources(name) {
  const [b, prefix] = BLOCKS[name] ? [BLOCKS[name], '127.94']
    : BLOCKS_61[name] ? [BLOCKS_61[name], '127.61'] : [BLOCKS_85[name], '127.85'];
  return { ...b, net: `${prefix}.${b.block * 10 + (process.pid % 10)}` };
}

function firstExisting(paths) {
  return paths.find((p) => p && fs.existsSync(p)) || null;
}

/** The holder binary, or null. */
function holderPath() {
  if (process.env.SOCKCHECK_HOLDER) return process.env.SOCKCHECK_HOLDER;
  return firstExisting([
    path.join(REPO, 'target/release/examples/sockcheck-holder'),
    path.join(REPO, 'target/release/sockcheck-holder'),
  ]);
}

/**
 * Make sure the API finds a binary: keep $SOCKCHECK_BIN, the platform
 * package or PATH; else point SOCKCHECK_BIN at the repo's release build.
 * Returns the backend, or a skip reason.
 */
function setupBinary(api) {
  let b = api.resolveBackend();
  if (b.source !== 'sockcheck' && !process.env.SOCKCHECK_FALLBACK) {
    const built = firstExisting([path.join(REPO, 'target/release/sockcheck')]);
    if (built) {
      process.env.SOCKCHECK_BIN = built;
      b = api.resolveBackend();
    }
  }
  if (b.source !== 'sockcheck') {
    const why = `no sockcheck binary (${b.reason}): run cargo build --release, or set SOCKCHECK_BIN`;
    if (STRICT) throw new Error(why);
    return { skip: why };
  }
  const expected = process.env.SOCKCHECK_TEST_EXPECT_FROM;
  if (expected && b.from !== expected) {
    throw new Error(`the binary was found through ${b.from} (${b.bin}), expected ${expected}`);
  }
  return { backend: b };
}

/** The holder, or a skip reason (a failure with SOCKCHECK_TEST_STRICT=1). */
function requireHolder() {
  const h = holderPath();
  if (h && fs.existsSync(h)) return { holder: h };
  const why = 'no sockcheck-holder: run cargo build --release --examples, or set SOCKCHECK_HOLDER';
  if (STRICT) throw new Error(why);
  return { skip: why };
}

const children = new Set();

/**
 * Start `sockcheck-holder SHAPE ADDR PORT [N]`; resolves with the child once
 * it prints `ready`.
 */
function startHolder(holder, shape, address, port, n) {
  const args = [shape, address, String(port)];
  if (n != null) args.push(String(n));
  const child = spawn(holder, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`holder ${args.join(' ')} not ready after 5s: ${out}${err}`)), 5000);
    child.stdout.on('data', (d) => {
      out += d;
      if (/^ready\b/m.test(out)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`holder ${args.join(' ')} exited (${code ?? sig}) before ready: ${err.trim()}`));
    });
  });
}

/** Kill a child by pid and wait until it is gone. */
async function killChild(child) {
  if (!child || !child.pid || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  await gone;
}

/** Kill every child this file started (by pid). */
async function killAll() {
  await Promise.all([...children].map(killChild));
}

/** Kill a pid that is not our child (e.g. a holder a command left behind). */
function killPid(pid) {
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
}

function tempDir(name) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `sockcheck-npm-${name}-`));
}

/** Whether a pid runs (a zombie, waiting for a parent that does not reap, does not). */
function alive(pid) {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return process.platform !== 'linux';
  }
}

/** A script that stands in for a hung sockcheck. */
function hungBinary(dir) {
  const file = path.join(dir, 'hung-sockcheck');
  fs.writeFileSync(file, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
  return file;
}

/** Run a node script in a child; resolves {code, signal, stdout, stderr}. */
function runNode(args, { env, input, timeout = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, timeout);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr, pid: child.pid });
    });
    child.stdin.end(input ?? '');
  });
}

/** The path of the lease child script (a fixture). */
const LEASE_CHILD = path.join(__dirname, 'fixtures', 'lease-child.mjs');
/** The port lease child (a fixture). */
const PORT_CHILD = path.join(__dirname, 'fixtures', 'port-child.mjs');

/**
 * Start the port lease child; resolves {child, line (its first JSON line),
 * next()} once it printed its line. `next()` resolves its next line.
 */
function startPortChild(env) {
  const child = spawn(process.execPath, [PORT_CHILD], {
    env: { ...process.env, NODE_NO_WARNINGS: '1', ...env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const lines = [];
  const waiting = [];
  let buf = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      if (waiting.length) waiting.shift().resolve(line);
      else lines.push(line);
    }
  });
  child.once('exit', (code) => { for (const w of waiting.splice(0)) w.reject(new Error(`port child exited (${code}) before its line`)); });
  const next = () => (lines.length ? Promise.resolve(lines.shift())
    : new Promise((resolve, reject) => waiting.push({ resolve, reject })));
  return next().then((line) => ({ child, line, next }));
}

module.exports = {
  REPO, STRICT, resources, holderPath, setupBinary, requireHolder, startHolder, killChild, killAll, killPid,
  tempDir, alive, hungBinary, runNode, LEASE_CHILD, PORT_CHILD, startPortChild, children,
};
