#!/usr/bin/env node
// The CI-sharding storm of the lease stage (scripts/bench-leases.py, issue
// 16 item 5): SHARDS shard processes each run TESTS tests one after the
// other; a test leases an address, binds a real HTTP server on it (PORTS[1],
// two requests served) and a plain listener (PORTS[0]), does some "work"
// (100-300 ms), closes; every second test then leaves lingering
// SO_REUSEPORT workers on PORTS[0] (`sockcheck-holder lingering ADDR PORT
// 2`, killed by pid LINGER_MS later) and releases the address while they
// still hold it.
//
// Two pools in the same run, same pool size, same tests:
//   harper     an in-process JS pool with Harper 0.6.2's algorithm
//              (../shared/harper-pool.md): a JSON slot file and an O_EXCL
//              lock file, the canary outside the lock, 1 s sleeps when the
//              pool is exhausted. Pool 127.91.0.2 and up.
//   sockcheck  the npm package from this checkout (npm/sockcheck/index.js,
//              SOCKCHECK_BIN = the built binary), acquire({wait}) and
//              lease.release(). Pool 127.90.4.2 and up.
// Then, idle, the npm per-call floor, broken down (see `floor`).
//
// Writes one JSON document (--out) with, per pool: wall_s, median_ms,
// p95_ms, conflicts (a leased address whose bind failed), ...

import cp, { fork, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');

function opt(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const BIN = opt('bin', path.join(ROOT, 'target/release/sockcheck'));
const HOLDER = opt('holder', path.join(ROOT, 'target/release/examples/sockcheck-holder'));
const STATE = opt('state-dir');
const TMP = opt('tmp');
const SHARDS = Number(opt('shards', 8));
const TESTS = Number(opt('tests', 15));
const POOL = Number(opt('pool', 16));
const LINGER_MS = Number(opt('linger-ms', 1500));
const PORTS = opt('ports', '47961,47962').split(',').map(Number);
const OUT = opt('out');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const pct = (v, q) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? s[Math.max(0, Math.min(s.length - 1, Math.ceil((q / 100) * s.length) - 1))] : NaN;
};
const median = (v) => pct(v, 50);

// Where an npm call's time goes: the package takes `spawn` from
// node:child_process when it loads, so a wrapper installed before the
// import sees every child it starts. Per child: call -> 'spawn' (fork and
// exec, as libuv reports it), 'spawn' -> 'exit' (the binary's life),
// 'exit' -> 'close' (stdio drained).
const children = [];
// Mode sockcheck-no-v: the same package with `-v` taken out of acquire's
// arguments on the way to spawn (what the package would cost without it).
let STRIP_V = false;
function instrumentSpawn() {
  const real = cp.spawn;
  cp.spawn = function spawnTimedByBench(cmd, args, options) {
    const rec = { sub: Array.isArray(args) ? args[0] : '', call: now() };
    if (STRIP_V && Array.isArray(args)) args = args.filter((a) => a !== '-v');
    const child = real.call(this, cmd, args, options);
    child.once('spawn', () => { rec.spawned = now(); });
    child.once('exit', () => { rec.exited = now(); });
    child.once('close', () => { rec.closed = now(); });
    children.push(rec);
    return child;
  };
}

// ------------------------------------------------------------------ Harper 0.6.2
class HarperPool {
  constructor(dir, start = 2, count = POOL, ports = PORTS) {
    this.file = path.join(dir, 'harper-integration-test-loopback-pool.json');
    this.lockFile = `${this.file}.lock`;
    this.addrs = Array.from({ length: count }, (_, i) => `127.91.0.${start + i}`);
    this.ports = [...new Set(ports)];
    this.sleeps = 0;
    this.lockWaits = 0;
    this.skips = 0;
  }

  async lock() {
    for (;;) {
      try {
        fs.closeSync(fs.openSync(this.lockFile, 'wx'));
        return;
      } catch (e) {
        if (e.code !== 'EEXIST') throw e;
        try {
          if (Date.now() - fs.statSync(this.lockFile).mtimeMs > 10_000) fs.unlinkSync(this.lockFile);
        } catch { /* gone meanwhile */ }
        this.lockWaits++;
        await sleep(1000);
      }
    }
  }

  unlock() {
    fs.unlinkSync(this.lockFile);
  }

  read() {
    try {
      const a = JSON.parse(fs.readFileSync(this.file, 'utf8'));
      if (Array.isArray(a) && a.length === this.addrs.length) return a;
    } catch { /* missing or torn: start empty */ }
    return this.addrs.map(() => null);
  }

  write(slots) {
    const pending = `${this.file}.${process.pid}.${Math.random().toString(36).slice(2)}.pending`;
    fs.writeFileSync(pending, JSON.stringify(slots));
    fs.renameSync(pending, this.file);
  }

  async canary(addr) {
    const listen = (port) => new Promise((resolve) => {
      const s = net.createServer();
      s.once('error', (e) => resolve(e.code || 'error'));
      s.listen(port, addr, () => s.close(() => resolve(null)));
    });
    const zero = await listen(0);
    if (zero) return { port: 0, error: zero };
    for (const port of this.ports) {
      const err = await listen(port);
      if (err) return { port, error: err };
    }
    return null;
  }

  async acquire() {
    for (;;) {
      const tried = new Set();
      for (;;) {
        await this.lock();
        let idx;
        try {
          const slots = this.read();
          idx = slots.findIndex((s, i) => s === null && !tried.has(i));
          if (idx >= 0) {
            slots[idx] = process.pid;
            this.write(slots);
          }
        } finally {
          this.unlock();
        }
        if (idx < 0) break;
        const addr = this.addrs[idx];
        const conflict = await this.canary(addr);
        if (!conflict) return addr;
        await this.releaseIndex(idx);
        tried.add(idx);
        this.skips++;
        // `[loopback-pool] ADDR is still in use by another Harper node (port P bound); skipping`
      }
      await this.lock();
      try {
        const slots = this.read().map((pid) => {
          if (pid === null) return null;
          try { process.kill(pid, 0); return pid; } catch { return null; }
        });
        this.write(slots);
      } finally {
        this.unlock();
      }
      this.sleeps++;
      await sleep(1000);
    }
  }

  async releaseIndex(idx) {
    await this.lock();
    try {
      const slots = this.read();
      slots[idx] = null;
      this.write(slots);
    } finally {
      this.unlock();
    }
  }

  release(addr) {
    return this.releaseIndex(this.addrs.indexOf(addr));
  }
}

// ------------------------------------------------------------------ one shard
function listenOn(server, port, addr) {
  return new Promise((resolve) => {
    server.once('error', (e) => resolve(e.code || 'error'));
    server.listen(port, addr, () => resolve(null));
  });
}

function get(addr, port) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: addr, port, path: '/', agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
  });
}

function startLingering(addr, port) {
  return new Promise((resolve, reject) => {
    const child = spawn(HOLDER, ['lingering', addr, String(port), '2'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(child);
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`sockcheck-holder lingering ${addr} exited ${code}: ${out}`)));
  });
}

async function shard(index, mode) {
  let pool;
  let sockcheck;
  if (mode === 'harper') {
    pool = new HarperPool(TMP);
  } else {
    STRIP_V = mode === 'sockcheck-no-v';
    instrumentSpawn();
    sockcheck = await import(pathToFileURL(path.join(ROOT, 'npm/sockcheck/index.js')).href);
  }
  const parts = [];
  const spOpts = {
    pool: `127.90.4.2-127.90.4.${2 + POOL - 1}`, ports: PORTS, stateDir: STATE, wait: '120s',
  };
  const acquireMs = [];
  const releaseMs = [];
  let conflicts = 0;
  const lingering = [];
  let seed = index * 7919 + 17;
  const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
  const t0 = now();
  for (let t = 0; t < TESTS; t++) {
    const a0 = now();
    let addr;
    let lease;
    if (pool) {
      addr = await pool.acquire();
    } else {
      const first = children.length;
      lease = await sockcheck.acquire(spOpts);
      addr = lease.address;
      const done = now();
      const mine = children.slice(first).filter((c) => c.sub === 'acquire');
      const c = mine[mine.length - 1];
      if (c && c.spawned && c.exited && c.closed) {
        parts.push({
          total: done - a0, pre: c.call - a0, spawn: c.spawned - c.call, run: c.exited - c.spawned,
          drain: c.closed - c.exited, post: done - c.closed, children: mine.length,
        });
      }
    }
    acquireMs.push(now() - a0);
    // The test: a plain listener, an HTTP server, two requests, some work.
    const plain = net.createServer((s) => s.end());
    const web = http.createServer((req, res) => res.end('ok\n'));
    const e1 = await listenOn(plain, PORTS[0], addr);
    const e2 = await listenOn(web, PORTS[1], addr);
    if (e1 || e2) {
      conflicts++;
    } else {
      await get(addr, PORTS[1]);
      await get(addr, PORTS[1]);
    }
    await sleep(100 + rand() * 200);
    await new Promise((r) => (e1 ? r() : plain.close(r)));
    await new Promise((r) => (e2 ? r() : web.close(r)));
    if (t % 2 === 1) {
      // Workers that outlive the test: they still hold PORTS[0] after the
      // address goes back to the pool.
      const child = await startLingering(addr, PORTS[0]);
      child.removeAllListeners('exit');
      const timer = setTimeout(() => { try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ } }, LINGER_MS);
      lingering.push(new Promise((r) => child.once('exit', () => { clearTimeout(timer); r(); })));
    }
    const r0 = now();
    if (pool) await pool.release(addr);
    else await lease.release();
    releaseMs.push(now() - r0);
  }
  const ran = now() - t0;
  await Promise.all(lingering);
  return {
    acquireMs, releaseMs, conflicts, ran_ms: ran, parts,
    sleeps: pool?.sleeps ?? 0, lockWaits: pool?.lockWaits ?? 0, skips: pool?.skips ?? 0,
  };
}

// ------------------------------------------------------------------ coordinator
async function storm(mode) {
  const t0 = now();
  const probe = spawnProbe();
  const results = await Promise.all(Array.from({ length: SHARDS }, (_, i) => new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [...process.argv.slice(2), '--shard', String(i), '--mode', mode],
      { env: { ...process.env, SOCKCHECK_BIN: BIN }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let result;
    child.on('message', (m) => { result = m; });
    child.once('exit', (code) => (code === 0 && result ? resolve(result) : reject(new Error(`shard ${i} (${mode}) exited ${code}`))));
  })));
  const wall = (now() - t0) / 1000;
  const spawnUnderLoad = await probe.stop();
  const all = results.flatMap((r) => r.acquireMs);
  const rel = results.flatMap((r) => r.releaseMs);
  const parts = results.flatMap((r) => r.parts || []);
  const breakdown = {};
  for (const k of ['total', 'pre', 'spawn', 'run', 'drain', 'post']) {
    if (parts.length) breakdown[k] = { median: median(parts.map((p) => p[k])), p95: pct(parts.map((p) => p[k]), 95) };
  }
  // The calls that did not wait: the per-call floor under the storm's load.
  const quick = parts.filter((p) => p.total < 100);
  const quickBreakdown = {};
  for (const k of ['total', 'pre', 'spawn', 'run', 'drain', 'post']) {
    if (quick.length) quickBreakdown[k] = median(quick.map((p) => p[k]));
  }
  return {
    breakdown_ms: breakdown, quick_breakdown_ms: quickBreakdown, quick_n: quick.length,
    wall_s: wall, median_ms: median(all), p95_ms: pct(all, 95), p99_ms: pct(all, 99), max_ms: Math.max(...all),
    release_median_ms: median(rel), conflicts: results.reduce((n, r) => n + r.conflicts, 0),
    sleeps: results.reduce((n, r) => n + r.sleeps, 0), lock_waits: results.reduce((n, r) => n + r.lockWaits, 0),
    canary_skips: results.reduce((n, r) => n + r.skips, 0), acquires: all.length,
    // Acquires that waited for an address (pool exhausted or lock held),
    // and the shards' total time in acquire: the storm is a closed loop, so
    // a pool whose shards run faster meets more lingering workers at once.
    waited: all.filter((x) => x >= 100).length, acquire_total_s: all.reduce((a, b) => a + b, 0) / 1000,
    spawn_true_under_load_ms: { median: median(spawnUnderLoad), p95: pct(spawnUnderLoad, 95), n: spawnUnderLoad.length },
    acquire_ms: all,
  };
}

// Node's child_process cost while the storm runs: spawn /bin/true every
// 50 ms from a process of its own.
function spawnProbe() {
  const times = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      times.push(await spawnTimed('/bin/true', []));
      await sleep(50);
    }
  })();
  return { stop: async () => { running = false; await loop; return times; } };
}

function spawnTimed(cmd, args, env) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    child.stdout.resume();
    child.stderr.resume();
    child.once('error', reject);
    child.once('close', (code) => resolve(Object.assign(now() - t0, {})));
  });
}

async function runCapture(cmd, args) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.resume();
    child.once('error', reject);
    child.once('close', (code) => resolve({ ms: now() - t0, out, code }));
  });
}

// The per-call floor, idle, in this process: where an npm acquire's time
// goes. Medians of N each.
async function floor() {
  const N = 25;
  const sc = await import(pathToFileURL(path.join(ROOT, 'npm/sockcheck/index.js')).href);
  const f = {};
  const med = async (label, fn) => {
    const v = [];
    for (let i = 0; i < N + 2; i++) v.push(await fn());
    f[label] = median(v.slice(2));
  };
  const pool1 = '127.90.5.1';
  const common = ['--state-dir', STATE, '--ports', PORTS.join(',')];
  await med('node spawn /bin/true', () => spawnTimed('/bin/true', []));
  await med('node spawn sockcheck --version', () => spawnTimed(BIN, ['--version']));
  await med('node spawn sockcheck check (1 address)', () => spawnTimed(BIN, ['--ports', PORTS.join(','), pool1]));
  const rawAcquire = async (pool, extra) => {
    const r = await runCapture(BIN, ['acquire', '--json', ...extra, '--owner', String(process.pid), ...common, '--', pool]);
    const doc = JSON.parse(r.out);
    await runCapture(BIN, ['release', '--state-dir', STATE, '--', doc.address]);
    return r.ms;
  };
  await med('node spawn sockcheck acquire --json (1 address)', () => rawAcquire(pool1, []));
  await med('node spawn sockcheck acquire --json -v (1 address, as npm runs it)', () => rawAcquire(pool1, ['-v']));
  await med('npm acquire() (1 address)', async () => {
    const t0 = now();
    const lease = await sc.acquire({ pool: pool1, ports: PORTS, stateDir: STATE });
    const ms = now() - t0;
    await lease.release();
    return ms;
  });
  await med('npm lease.release()', async () => {
    const lease = await sc.acquire({ pool: pool1, ports: PORTS, stateDir: STATE });
    const t0 = now();
    await lease.release();
    return now() - t0;
  });
  // A pool whose first addresses are passed over, as in the storm: 3
  // leased (by this process), 1 with lingering workers. -v names them.
  const held = [];
  for (let i = 1; i <= 3; i++) {
    const r = await runCapture(BIN, ['acquire', '--owner', String(process.pid), ...common, '--', `127.90.6.${i}`]);
    if (r.code !== 0) throw new Error(`floor: could not lease 127.90.6.${i}`);
    held.push(`127.90.6.${i}`);
  }
  const ling = await startLingering('127.90.6.4', PORTS[0]);
  ling.removeAllListeners('exit');
  try {
    const pool = '127.90.6.1-127.90.6.8';
    await med('node spawn sockcheck acquire --json (3 leased + 1 busy skipped)', () => rawAcquire(pool, []));
    await med('node spawn sockcheck acquire --json -v (3 leased + 1 busy skipped, as npm runs it)', () => rawAcquire(pool, ['-v']));
    await med('npm acquire() (3 leased + 1 busy skipped)', async () => {
      const t0 = now();
      const lease = await sc.acquire({ pool, ports: PORTS, stateDir: STATE });
      const ms = now() - t0;
      await lease.release();
      return ms;
    });
  } finally {
    const gone = new Promise((r) => ling.once('exit', r));
    process.kill(ling.pid, 'SIGKILL');
    await gone;
    for (const a of held) await runCapture(BIN, ['release', '--state-dir', STATE, '--', a]);
  }
  return f;
}

async function main() {
  const shardIndex = opt('shard');
  if (shardIndex != null) {
    const r = await shard(Number(shardIndex), opt('mode'));
    process.send(r, () => process.exit(0));
    return;
  }
  process.env.SOCKCHECK_BIN = BIN;
  const doc = { shards: SHARDS, tests: TESTS, pool: POOL, linger_ms: LINGER_MS, ports: PORTS };
  for (const mode of (opt('modes', 'harper,sockcheck,sockcheck-no-v')).split(',')) {
    process.stderr.write(`bench-storm: ${mode}: ${SHARDS} shards x ${TESTS} tests\n`);
    doc[mode] = await storm(mode);
    process.stderr.write(`bench-storm: ${mode}: wall ${doc[mode].wall_s.toFixed(1)} s, acquire median ` +
      `${doc[mode].median_ms.toFixed(1)} ms, p95 ${doc[mode].p95_ms.toFixed(0)} ms, conflicts ${doc[mode].conflicts}\n`);
    await sleep(500);
  }
  if (opt('floor', '1') === '1') doc.floor = await floor();
  fs.writeFileSync(OUT, `${JSON.stringify(doc)}\n`);
}

main().catch((e) => {
  console.error(`bench-storm: ${e.stack || e}`);
  process.exit(1);
});
