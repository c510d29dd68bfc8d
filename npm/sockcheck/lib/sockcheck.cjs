'use strict';
/**
 * sockcheck for Node test harnesses: lease loopback addresses for test
 * servers, check them, wait for them, and run CI commands under the gate.
 *
 * This file is the one implementation; the ESM entry (index.js) re-exports
 * it, so ESM and CommonJS callers in one process share one module (one
 * SockcheckError class, one set of fallback leases, one warning).
 *
 * With the sockcheck binary ($SOCKCHECK_BIN, the platform package
 * @sockcheck/linux-<arch>, or PATH) every call runs it; without one, a
 * fallback in plain Node keeps the same API (see fallback.cjs).
 */

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const { resolveBinary, platformPackage } = require('./resolve.cjs');
const {
  SockcheckError, durationMs, durationArg, portList, portsArg, parseAddress, parsePool, abortedError,
} = require('./util.cjs');
const fallback = require('./fallback.cjs');
const fallbackPorts = require('./fallback-ports.cjs');
const { parsePortRange, defaultPortRange, rangeText } = require('./ports.cjs');

const VERSION = require('../package.json').version;

/** Added to an operation's own deadline (wait, timeout) for the child's watchdog. */
const MARGIN_MS = 30_000;
/** run's watchdog when none is given: the command is the caller's test suite. */
const RUN_TIMEOUT_MS = 6 * 3600_000;
const DEFAULT_PORTS = [9925, 9926];
/**
 * The pool acquire and run lease from when given none and SOCKCHECK_POOL is
 * unset: Harper's loopback pool (127.0.0.START, 32 addresses from 2), the
 * one the binary defaults to as well.
 */
const DEFAULT_POOL = '127.0.0.2-127.0.0.33';
const REASONS = ['leased', 'quarantined', 'busy', 'foreign', 'conflict', 'unavailable'];
const VERDICTS = ['busy', 'foreign', 'conflict', 'unavailable'];

const ASYNC_DISPOSE = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');

// ---------------------------------------------------------------- backend

const truthy = (v) => /^(1|true|yes|on)$/i.test(String(v ?? '').trim());
const falsy = (v) => /^(0|false|no|off)$/i.test(String(v ?? '').trim());

/**
 * Which backend a call would use, without warning: the binary (and where it
 * was found) or the fallback (and why).
 */
function resolveBackend(opts = {}) {
  if (truthy(process.env.SOCKCHECK_FALLBACK)) {
    return { source: 'fallback', bin: null, from: null, reason: 'forced by SOCKCHECK_FALLBACK=1' };
  }
  const found = resolveBinary(opts);
  if (found) return { source: 'sockcheck', bin: found.path, from: found.source, reason: null };
  const pkg = platformPackage();
  const reason = pkg
    ? `no sockcheck binary: ${pkg} is not installed (optional dependencies omitted?), SOCKCHECK_BIN is not set and sockcheck is not on PATH`
    : `no sockcheck binary for ${process.platform}-${process.arch} (set SOCKCHECK_BIN or put sockcheck on PATH)`;
  return { source: 'fallback', bin: null, from: null, reason };
}

let warned = false;
const ownerWarned = new Set();

function backend(opts, sub) {
  const b = resolveBackend(opts);
  if (b.source === 'sockcheck') return b;
  if (falsy(process.env.SOCKCHECK_FALLBACK)) {
    throw new SockcheckError(`sockcheck ${sub}: ${b.reason}, and SOCKCHECK_FALLBACK=0 forbids the fallback`,
      { code: 'SOCKCHECK_NOT_RUN' });
  }
  if (!warned) {
    warned = true;
    const leases = fallback.ABSTRACT_TOKENS
      ? 'Leases: fallback and binary leases share one lease space (abstract unix tokens ' +
        '@sockcheck/v1/lease/ADDRESS, held by this process), so no two acquirers, binary or fallback, ' +
        'any user, get the same address.'
      : `Leases: a UDP socket on ADDRESS:${fallback.leasePortOf({})} held by this process, which only ` +
        'other fallback processes see (the binary does not run here).';
    process.emitWarning(
      `sockcheck: ${b.reason}; using the JS fallback (a plain-bind canary and a connect probe). ${leases} ` +
      'What the fallback cannot see: the owners of listeners (no owners: no holder pids), ' +
      'SO_REUSEPORT (no SO_REUSEPORT evidence), and lingering workers after run (no lingering-worker report).',
      { type: 'SockcheckFallbackWarning', code: 'SOCKCHECK_FALLBACK' });
  }
  return b;
}

// ---------------------------------------------------------------- child

function processTimeoutMs(opts, defaultMs) {
  if (opts.processTimeout == null) return defaultMs;
  if (opts.processTimeout === Infinity) return Infinity;
  return durationMs(opts.processTimeout, 'processTimeout');
}

/**
 * Run sockcheck. Always resolves (unless it cannot be started) with what
 * happened; callers decide what is an error.
 */
function runChild(bin, args, {
  sub, timeoutMs, signal, killGraceMs = 1000, stdin = 'ignore', stdout = 'pipe', teeStderr = false, env, cwd,
}) {
  const argv = [bin, ...args];
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(`sockcheck ${sub}`, signal, argv));
    let child;
    try {
      child = spawn(bin, args, { stdio: [stdin, stdout, 'pipe'], env, cwd });
    } catch (e) {
      return reject(notRun(sub, bin, argv, e));
    }
    const out = [];
    let err = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (d) => out.push(d));
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => {
      if (teeStderr) process.stderr.write(d);
      err += d;
      if (err.length > 1 << 20) err = err.slice(-(1 << 19));
    });
    let timedOut = false;
    let aborted = false;
    let finished = false;
    let exited = null;
    let killTimer = null;
    const kill = () => {
      if (exited || killTimer) return;
      try { child.kill('SIGTERM'); } catch { /* gone */ }
      killTimer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, killGraceMs);
    };
    const watchdog = Number.isFinite(timeoutMs) ? setTimeout(() => { timedOut = true; kill(); }, timeoutMs) : null;
    const onAbort = () => { aborted = true; kill(); };
    signal?.addEventListener('abort', onAbort, { once: true });
    const cleanup = () => {
      clearTimeout(watchdog);
      clearTimeout(killTimer);
      signal?.removeEventListener('abort', onAbort);
    };
    child.once('error', (e) => {
      if (finished || exited) return;
      finished = true;
      cleanup();
      reject(notRun(sub, bin, argv, e));
    });
    const finish = () => {
      if (finished) return;
      finished = true;
      cleanup();
      child.stdout?.destroy();
      child.stderr.destroy();
      resolve({
        status: exited.code, signal: exited.signal, stdout: out.join(''), stderr: err,
        timedOut, aborted, argv, pid: child.pid, timeoutMs,
      });
    };
    child.once('exit', (code, sig) => {
      exited = { code, signal: sig };
      clearTimeout(killTimer);
      // A grandchild (run's lingering workers) may keep stderr open: wait for
      // the pipes a moment only.
      const t = setTimeout(finish, 300);
      child.once('close', () => { clearTimeout(t); finish(); });
    });
  });
}

function notRun(sub, bin, argv, e) {
  const pkg = platformPackage();
  const hint = pkg ? `set SOCKCHECK_BIN, install ${pkg}, or put sockcheck on PATH` : 'set SOCKCHECK_BIN or put sockcheck on PATH';
  return new SockcheckError(`sockcheck ${sub}: cannot run ${bin} (${e.code || e.message}); ${hint}`,
    { code: 'SOCKCHECK_NOT_RUN', argv, cause: e });
}

const lastLine = (text) => text.split('\n').map((l) => l.trim()).filter(Boolean).pop() || '';

const EXIT = {
  2: ['SOCKCHECK_USAGE', 'bad usage'],
  3: ['SOCKCHECK_INSPECTION_FAILED', 'inspection failed'],
};

/**
 * Exit 3 from acquire, release, leases and run is "the state directory or
 * the inspection failed"; the binary's message says which (`sockcheck: state
 * directory DIR: ...`). An older binary exited 2 for a state directory it
 * could not use, with the same message: that is no usage error either.
 */
function stateFailure(r, stderr) {
  if (r.status === 3) return /\bstate directory\b/.test(stderr);
  return r.status === 2 && /^sockcheck: state directory /m.test(stderr);
}

/** The error for an abort, a watchdog kill, a signal or an unexpected status. */
function failure(sub, r, table = {}) {
  const stderr = r.stderr.trim();
  const base = { stderr, argv: r.argv, exitStatus: r.status, signal: r.signal, pid: r.pid };
  if (r.aborted) {
    return new SockcheckError(`sockcheck ${sub}: aborted`, { ...base, code: 'SOCKCHECK_ABORTED' });
  }
  if (r.timedOut) {
    return new SockcheckError(
      `sockcheck ${sub}: no answer after ${Math.round(r.timeoutMs)}ms; killed (pid ${r.pid}). Raise processTimeout if it needs longer`,
      { ...base, code: 'SOCKCHECK_TIMEOUT', timeout: r.timeoutMs });
  }
  if (r.status === null) {
    return new SockcheckError(`sockcheck ${sub}: killed by ${r.signal}`, { ...base, code: 'SOCKCHECK_FAILED' });
  }
  const [code, what] = (stateFailure(r, stderr) && ['SOCKCHECK_STATE', 'the state directory failed'])
    || table[r.status] || EXIT[r.status] || ['SOCKCHECK_FAILED', `exit status ${r.status}`];
  return new SockcheckError(`sockcheck ${sub}: ${what}: ${lastLine(stderr) || '(no message)'}`, { ...base, code });
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function badOutput(sub, r) {
  return new SockcheckError(`sockcheck ${sub}: unexpected output: ${r.stdout.trim().slice(0, 200) || '(none)'}`,
    { code: 'SOCKCHECK_BAD_OUTPUT', exitStatus: r.status, stderr: r.stderr.trim(), argv: r.argv });
}

function defaultPorts(ports) {
  if (ports != null) return portList(ports);
  if (process.env.SOCKCHECK_PORTS) return portList(process.env.SOCKCHECK_PORTS, 'SOCKCHECK_PORTS');
  return DEFAULT_PORTS.slice();
}

/**
 * SOCKCHECK_POOL of the environment sockcheck runs with (run's `env` option
 * included); blank is unset, as the binary takes it.
 */
const envPool = (env = process.env) => (env.SOCKCHECK_POOL?.trim() ? env.SOCKCHECK_POOL : null);

/** The pool to inspect (scan): POOL, else SOCKCHECK_POOL; no default. */
function poolOf(pool, env = process.env) {
  if (pool != null) return parsePool(pool, 'POOL');
  if (envPool(env) != null) return parsePool(envPool(env), 'SOCKCHECK_POOL');
  throw new SockcheckError('sockcheck: no pool given and SOCKCHECK_POOL is not set', { code: 'SOCKCHECK_USAGE' });
}

/** The pool to lease from (acquire, run): POOL, else SOCKCHECK_POOL, else DEFAULT_POOL. */
function leasePoolOf(pool, env = process.env) {
  if (pool == null && envPool(env) == null) return parsePool(DEFAULT_POOL, 'the default pool');
  return poolOf(pool, env);
}

/**
 * The POOL argument for acquire and run: the pool given, none when
 * SOCKCHECK_POOL is set (the binary reads it and names it in errors), else
 * DEFAULT_POOL explicitly, for a binary older than its own default.
 */
function leasePoolArg(pool, env = process.env) {
  if (pool != null) return String(pool);
  return envPool(env) != null ? null : DEFAULT_POOL;
}

function commonArgs(opts) {
  const args = [];
  if (opts.ports != null) args.push('--ports', portsArg(opts.ports));
  if (opts.stateDir != null) args.push('--state-dir', String(opts.stateDir));
  return args;
}

// ---------------------------------------------------------------- leases

/**
 * What a lease and a port lease share: a release that runs once (a failed
 * one may be tried again), `released`, and `await using`.
 */
class Releasable {
  #releaseFn;
  #releasing = null;
  #released = false;

  constructor(releaseFn) {
    this.#releaseFn = releaseFn;
  }

  /** True once release() has succeeded. */
  get released() {
    return this.#released;
  }

  /** Give it back. Safe to call more than once. */
  release() {
    if (!this.#releasing) {
      this.#releasing = this.#releaseFn().then(
        () => { this.#released = true; },
        (e) => { this.#releasing = null; throw e; });
    }
    return this.#releasing;
  }
}
// `await using`: Symbol.asyncDispose where the runtime has it (Node 20.4+:
// Symbol.for('nodejs.asyncDispose')), and that registered symbol always, so
// a polyfill installed later finds it too.
for (const key of new Set([ASYNC_DISPOSE, Symbol.for('nodejs.asyncDispose')])) {
  Object.defineProperty(Releasable.prototype, key, {
    value: function asyncDispose() { return this.release(); },
    writable: true, configurable: true,
  });
}

/** A leased address. `await using lease = await acquire(...)` releases it. */
class Lease extends Releasable {
  constructor({ address, ports, owner = null, stateDir = null, source, leasePort = null, token = null }, releaseFn) {
    super(releaseFn);
    this.address = address;
    this.ports = ports;
    this.owner = owner;
    this.stateDir = stateDir;
    this.source = source;
    if (leasePort != null) this.leasePort = leasePort;
    if (token != null) this.token = token;
  }

  toString() {
    return this.address;
  }

  toJSON() {
    const { address, ports, owner, stateDir, source } = this;
    return { address, ports, owner, stateDir, source };
  }
}

/** One skipped address, as `sockcheck acquire -v` says it on stderr (before the JSON form). */
function parseSkipLines(stderr) {
  const byAddress = new Map();
  for (const line of stderr.split('\n')) {
    const m = /^sockcheck: skip (\S+): (.*)$/.exec(line.trim());
    if (!m) continue;
    const [, address, text] = m;
    const word = /^(\w+)/.exec(text)?.[1] || '';
    const reason = REASONS.includes(word) ? word : 'conflict';
    const inner = new RegExp(`^${word} \\((.*)\\)$`).exec(text);
    const pids = [...new Set([...text.matchAll(/\bpids? (\d+)/g)].map((x) => Number(x[1])))];
    byAddress.set(address, {
      address, reason, verdict: VERDICTS.includes(reason) ? reason : null, pids,
      message: inner ? inner[1] : text,
    });
  }
  return [...byAddress.values()];
}

function normalizeSkipped(s) {
  return {
    ...s,
    address: String(s.address),
    reason: s.reason ?? null,
    verdict: s.verdict ?? null,
    pids: Array.isArray(s.pids) ? s.pids : [],
    message: s.message ?? '',
  };
}

function formatCandidates(skipped) {
  if (!skipped.length) return '';
  const w = Math.max(...skipped.map((s) => s.address.length));
  return skipped.map((s) => {
    const who = s.pids.length ? `pid ${s.pids.join(',')}` : s.hidden ? 'owner hidden' : 'no pid';
    return `\n  ${s.address.padEnd(w)}  ${String(s.reason).padEnd(11)}  ${who}${s.message ? `: ${s.message}` : ''}`;
  }).join('');
}

function noFreeAddressError(sub, { error, skipped, hopeless, report = null, stderr = '', argv = [], exitStatus = 1, source }) {
  const message = `sockcheck ${sub}: ${error}${formatCandidates(skipped)}`;
  return new SockcheckError(message, {
    code: 'SOCKCHECK_NO_FREE_ADDRESS', exitStatus, stderr, argv,
    candidates: skipped, skipped, hopeless, report, source,
  });
}

/**
 * Lease the first free address of a pool.
 *
 * Rejects with a SockcheckError: SOCKCHECK_NO_FREE_ADDRESS (with
 * `candidates`: each address, why it was skipped, its verdict and holder
 * pids), SOCKCHECK_USAGE, SOCKCHECK_ABORTED, SOCKCHECK_TIMEOUT, ...
 */
async function acquire(opts = {}) {
  const b = backend(opts, 'acquire');
  const waitMs = opts.wait != null ? durationMs(opts.wait, 'wait') : 0;
  if (b.source === 'fallback') return acquireFallback(opts, waitMs);

  const owner = opts.owner ?? process.pid;
  // No -v: the --json refusal lists every address passed over, and -v
  // costs every successful acquire a look at each skipped address's holder
  // (the CI storm's median 12.5 -> 6.9 ms, BENCHMARKS.md).
  const args = ['acquire', '--json', '--owner', String(owner), ...commonArgs(opts)];
  if (opts.wait != null) args.push('--wait', durationArg(opts.wait, 'wait'));
  if (opts.allowForeign) args.push('--allow-foreign');
  const poolArg = leasePoolArg(opts.pool);
  if (poolArg != null) args.push('--', poolArg); // a pool is never taken for an option
  const r = await runChild(b.bin, args, {
    sub: 'acquire', timeoutMs: processTimeoutMs(opts, waitMs + MARGIN_MS), signal: opts.signal,
  });
  const doc = parseJson(r.stdout);
  const stateDir = doc?.state_dir ?? opts.stateDir ?? null;
  if (r.status === 0 && (r.aborted || r.timedOut) && typeof doc?.address === 'string') {
    // It leased just as it was stopped: give the address back.
    await binaryRelease(b.bin, doc.address, { stateDir }).catch(() => {});
  }
  if (r.aborted || r.timedOut) throw failure('acquire', r);
  if (r.status === 0) {
    if (!doc || typeof doc.address !== 'string' || !Array.isArray(doc.ports)) throw badOutput('acquire', r);
    return new Lease({
      address: doc.address, ports: doc.ports, owner: doc.owner ?? null, stateDir, source: 'sockcheck',
    }, () => binaryRelease(b.bin, doc.address, { stateDir }).catch((e) => {
      if (e.code !== 'SOCKCHECK_NOT_LEASED') throw e; // already given back or reclaimed
    }));
  }
  if (r.status === 1) {
    const stderr = r.stderr.trim();
    const fromJson = doc && Array.isArray(doc.skipped);
    const skipped = fromJson ? doc.skipped.map(normalizeSkipped) : parseSkipLines(stderr);
    const errorLine = stderr.split('\n').map((l) => l.trim()).filter((l) => /no free address/.test(l)).pop();
    const error = (doc && typeof doc.error === 'string' && doc.error)
      || (errorLine && errorLine.replace(/^sockcheck: /, '')) || lastLine(stderr).replace(/^sockcheck: /, '')
      || 'no free address';
    const hopeless = typeof doc?.hopeless === 'boolean' ? doc.hopeless
      : skipped.length > 0 && skipped.every((s) => s.reason === 'foreign' || s.reason === 'unavailable');
    throw noFreeAddressError('acquire', {
      error, skipped, hopeless, report: doc, stderr, argv: r.argv, source: 'sockcheck',
    });
  }
  throw failure('acquire', r);
}

async function acquireFallback(opts, waitMs, env = process.env) {
  const pool = leasePoolOf(opts.pool, env);
  const ports = defaultPorts(opts.ports);
  const leasePort = fallback.leasePortOf(opts);
  const owner = opts.owner ?? process.pid;
  if (owner !== process.pid && !ownerWarned.has(owner)) {
    ownerWarned.add(owner);
    process.emitWarning(`sockcheck (fallback): a lease belongs to this process (pid ${process.pid}), not to owner ${owner}`,
      { type: 'SockcheckFallbackWarning', code: 'SOCKCHECK_FALLBACK_OWNER' });
  }
  let got;
  try {
    got = await withDeadline(
      fallback.acquire({ pool, ports, waitMs, allowForeign: !!opts.allowForeign, leasePort, signal: opts.signal }),
      processTimeoutMs(opts, waitMs + MARGIN_MS), 'acquire');
  } catch (e) {
    if (e && e.noFreeAddress) {
      throw noFreeAddressError('acquire', { ...e, exitStatus: null, source: 'fallback' });
    }
    throw e;
  }
  const { address } = got;
  return new Lease({
    address, ports, owner: { pid: process.pid, start_ticks: null }, stateDir: null, source: 'fallback', leasePort,
    token: fallback.ABSTRACT_TOKENS ? fallback.tokenShown(address) : null,
  }, async () => { fallback.release(address); });
}

/** A fallback operation, bounded like a child process is. */
function withDeadline(promise, ms, sub) {
  if (!Number.isFinite(ms)) return promise;
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new SockcheckError(`sockcheck ${sub} (fallback): no answer after ${Math.round(ms)}ms`,
      { code: 'SOCKCHECK_TIMEOUT', timeout: ms })), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

async function binaryRelease(bin, address, opts = {}) {
  const args = ['release'];
  if (opts.stateDir != null) args.push('--state-dir', String(opts.stateDir));
  args.push('--', String(address));
  const r = await runChild(bin, args, {
    sub: 'release', timeoutMs: processTimeoutMs(opts, MARGIN_MS), signal: opts.signal,
  });
  if (r.status === 0 && !r.aborted && !r.timedOut) return;
  throw failure('release', r, { 1: ['SOCKCHECK_NOT_LEASED', 'address not leased'] });
}

/**
 * Give a leased address back. Rejects SOCKCHECK_NOT_LEASED when it was not
 * leased (a fallback lease can only be released by the process holding it).
 */
async function release(address, opts = {}) {
  const parsed = parseAddress(address);
  if (parsed && fallback.held.has(parsed.address)) {
    fallback.release(parsed.address);
    return;
  }
  const b = backend(opts, 'release');
  if (b.source === 'fallback') {
    throw new SockcheckError(`sockcheck release (fallback): address not leased by this process: ${address}`,
      { code: 'SOCKCHECK_NOT_LEASED' });
  }
  await binaryRelease(b.bin, address, opts);
}

// ---------------------------------------------------------------- ports

/** A leased TCP port (or several). `await using lease = await acquirePort(...)` releases it. */
class PortLease extends Releasable {
  constructor({ ports, host, owner = null, stateDir = null, source, tokens = null }, releaseFn) {
    super(releaseFn);
    this.port = ports[0];
    this.ports = ports;
    this.host = host;
    this.owner = owner;
    this.stateDir = stateDir;
    this.source = source;
    if (tokens != null) this.tokens = tokens;
  }

  toString() {
    return String(this.port);
  }

  toJSON() {
    const { port, ports, host, owner, stateDir, source } = this;
    return { port, ports, host, owner, stateDir, source };
  }
}

/** The host a port is leased for: an address (canonical text); default 127.0.0.1. */
function portHostOf(host) {
  if (host == null) return '127.0.0.1';
  const parsed = parseAddress(host);
  if (!parsed) throw new SockcheckError(`sockcheck acquire-port: host '${host}' is not an IP address`, { code: 'SOCKCHECK_USAGE' });
  return parsed.address;
}

function countOf(count) {
  if (count == null) return 1;
  if (!Number.isInteger(count) || count < 1 || count > 65535) {
    throw new SockcheckError(`sockcheck acquire-port: count ${count} is not a number of ports (1-65535)`, { code: 'SOCKCHECK_USAGE' });
  }
  return count;
}

function noFreePortError({ error, skipped, hopeless = false, report = null, stderr = '', argv = [], exitStatus = 1, source }) {
  const list = skipped.map((s) => ({
    ...s, port: s.port, reason: s.reason ?? null, pids: Array.isArray(s.pids) ? s.pids : [], message: s.message ?? '',
  }));
  const shown = list.slice(0, 20).map((s) => {
    const who = s.pids.length ? `pid ${s.pids.join(',')}` : 'no pid';
    return `\n  ${String(s.port).padEnd(5)}  ${String(s.reason).padEnd(11)}  ${who}${s.message ? `: ${s.message}` : ''}`;
  }).join('') + (list.length > 20 ? `\n  ... and ${list.length - 20} more` : '');
  return new SockcheckError(`sockcheck acquire-port: ${error}${shown}`, {
    code: 'SOCKCHECK_NO_FREE_PORT', exitStatus, stderr, argv, skipped: list, hopeless, report, source,
  });
}

/**
 * Binaries that predate acquire-port (they take `acquire-port` for an
 * address to check, or clap says "unrecognized subcommand"; release-port
 * then also refuses --host): the JS implementation takes the same tokens on
 * Linux, so it stands in, with a warning once per binary.
 */
const noPortCommand = new Set();
const predatesPorts = (r) => r.status === 2
  && /'(acquire|release)-port' is not an IP address|unrecognized subcommand '(acquire|release)-port'|^sockcheck: unexpected argument '--host'/m.test(r.stderr);

function portFallbackWarning(bin) {
  process.emitWarning(
    `sockcheck: ${bin} has no acquire-port (an older binary); port leases use the JS implementation, ` +
    'which takes the same lease tokens (@sockcheck/v1/port/PORT) as a newer binary',
    { type: 'SockcheckFallbackWarning', code: 'SOCKCHECK_FALLBACK_PORTS' });
}

/**
 * Lease `count` free TCP ports (default 1) of `range` (default: 15000-32767
 * minus the kernel's ephemeral and reserved ports) for `host` (default
 * 127.0.0.1). Rejects SOCKCHECK_NO_FREE_PORT (with `skipped`: each port, why
 * and its holder pids), SOCKCHECK_USAGE, SOCKCHECK_ABORTED, ...
 */
async function acquirePort(opts = {}) {
  const host = portHostOf(opts.host);
  const count = countOf(opts.count);
  const candidates = opts.range != null ? parsePortRange(opts.range) : null;
  if (candidates && count > candidates.length) {
    throw new SockcheckError(`sockcheck acquire-port: ${count} ports wanted of a range of ${candidates.length}`, { code: 'SOCKCHECK_USAGE' });
  }
  const waitMs = opts.wait != null ? durationMs(opts.wait, 'wait') : 0;
  const b = backend(opts, 'acquire-port');
  if (b.source === 'fallback' || noPortCommand.has(b.bin)) return acquirePortFallback(opts, { host, count, candidates, waitMs });

  const owner = opts.owner ?? process.pid;
  const args = ['acquire-port', '--json', '--owner', String(owner), '--host', host, '--count', String(count)];
  if (opts.stateDir != null) args.push('--state-dir', String(opts.stateDir));
  if (opts.wait != null) args.push('--wait', durationArg(opts.wait, 'wait'));
  if (candidates) args.push('--', rangeText(candidates));
  const r = await runChild(b.bin, args, {
    sub: 'acquire-port', timeoutMs: processTimeoutMs(opts, waitMs + MARGIN_MS), signal: opts.signal,
  });
  if (predatesPorts(r)) {
    noPortCommand.add(b.bin);
    portFallbackWarning(b.bin);
    return acquirePortFallback(opts, { host, count, candidates, waitMs });
  }
  const doc = parseJson(r.stdout);
  const stateDir = doc?.state_dir ?? opts.stateDir ?? null;
  const leased = r.status === 0 && Array.isArray(doc?.ports) && doc.ports.length > 0 && doc.ports.every(Number.isInteger);
  const leasedHost = typeof doc?.host === 'string' ? doc.host : host;
  if (leased && (r.aborted || r.timedOut)) {
    // It leased just as it was stopped: give the ports back.
    await binaryReleasePorts(b.bin, doc.ports, { host: leasedHost, stateDir }).catch(() => {});
  }
  if (r.aborted || r.timedOut) throw failure('acquire-port', r);
  if (r.status === 0) {
    if (!leased) throw badOutput('acquire-port', r);
    return new PortLease({
      ports: doc.ports, host: leasedHost, owner: doc.owner ?? null, stateDir, source: 'sockcheck',
    }, () => binaryReleasePorts(b.bin, doc.ports, { host: leasedHost, stateDir }).catch((e) => {
      if (e.code !== 'SOCKCHECK_NOT_LEASED') throw e; // already given back, or reclaimed
    }));
  }
  if (r.status === 1) {
    const stderr = r.stderr.trim();
    const skipped = Array.isArray(doc?.skipped) ? doc.skipped : [];
    const error = (typeof doc?.error === 'string' && doc.error) || lastLine(stderr).replace(/^sockcheck: /, '') || 'not enough free ports';
    throw noFreePortError({
      error, skipped, hopeless: doc?.hopeless === true, report: doc, stderr, argv: r.argv, source: 'sockcheck',
    });
  }
  throw failure('acquire-port', r, { 3: ['SOCKCHECK_FAILED', 'failed'] });
}

async function acquirePortFallback(opts, { host, count, candidates, waitMs }) {
  const owner = opts.owner ?? process.pid;
  if (owner !== process.pid && !ownerWarned.has(owner)) {
    ownerWarned.add(owner);
    process.emitWarning(`sockcheck (fallback): a lease belongs to this process (pid ${process.pid}), not to owner ${owner}`,
      { type: 'SockcheckFallbackWarning', code: 'SOCKCHECK_FALLBACK_OWNER' });
  }
  let ports;
  try {
    ports = await withDeadline(
      fallbackPorts.acquirePorts({ candidates: candidates ?? defaultPortRange(), host, count, waitMs, signal: opts.signal }),
      processTimeoutMs(opts, waitMs + MARGIN_MS), 'acquire-port');
  } catch (e) {
    if (e && e.noFreePort) throw noFreePortError({ ...e, exitStatus: null, source: 'fallback' });
    throw e;
  }
  return new PortLease({
    ports, host, owner: { pid: process.pid, start_ticks: null }, stateDir: null, source: 'fallback',
    tokens: fallback.ABSTRACT_TOKENS ? ports.map(fallbackPorts.portTokenShown) : null,
  }, async () => { for (const p of ports) fallbackPorts.releasePort(p); });
}

async function binaryReleasePorts(bin, ports, opts = {}) {
  const args = ['release-port'];
  if (opts.host != null) args.push('--host', String(opts.host));
  if (opts.stateDir != null) args.push('--state-dir', String(opts.stateDir));
  args.push('--', ...ports.map(String));
  const r = await runChild(bin, args, {
    sub: 'release-port', timeoutMs: processTimeoutMs(opts, MARGIN_MS), signal: opts.signal,
  });
  if (r.status === 0 && !r.aborted && !r.timedOut) return;
  if (predatesPorts(r)) {
    // No binary port lease can exist: this binary cannot make them.
    noPortCommand.add(bin);
    throw new SockcheckError(`sockcheck release-port: not leased: ${ports.join(',')} (${bin} has no port leases)`,
      { code: 'SOCKCHECK_NOT_LEASED', exitStatus: r.status, stderr: r.stderr.trim(), argv: r.argv });
  }
  throw failure('release-port', r, { 1: ['SOCKCHECK_NOT_LEASED', 'port not leased (or not yours)'], 3: ['SOCKCHECK_FAILED', 'failed'] });
}

/**
 * Give leased ports back by number. Rejects SOCKCHECK_NOT_LEASED when one
 * was not leased, or not by this user (a fallback lease only by this process).
 */
async function releasePort(ports, opts = {}) {
  const list = portList(ports, 'ports');
  const mine = list.filter((p) => fallbackPorts.heldPorts.has(p));
  for (const p of mine) fallbackPorts.releasePort(p);
  const rest = list.filter((p) => !mine.includes(p));
  if (rest.length === 0) return;
  const b = backend(opts, 'release-port');
  if (b.source === 'fallback' || noPortCommand.has(b.bin)) {
    throw new SockcheckError(`sockcheck release-port (fallback): not leased by this process: ${rest.join(',')}`,
      { code: 'SOCKCHECK_NOT_LEASED' });
  }
  await binaryReleasePorts(b.bin, rest, { ...opts, host: opts.host != null ? portHostOf(opts.host) : null });
}

// ---------------------------------------------------------------- check

function withSource(doc, source, free) {
  return Object.assign(doc, { source, free });
}

/**
 * Inspect addresses: the parsed `sockcheck --json check` document, plus
 * `source` ("sockcheck" or "fallback") and `free` (every address free). Not
 * free is not an error: each address has its verdict.
 */
async function check(addresses, opts = {}) {
  const list = (Array.isArray(addresses) ? addresses : [addresses]).map(String);
  if (list.length === 0) throw new SockcheckError('sockcheck check: no address given', { code: 'SOCKCHECK_USAGE' });
  const b = backend(opts, 'check');
  if (b.source === 'fallback') {
    return withDeadline(fallback.check(list, defaultPorts(opts.ports)), processTimeoutMs(opts, MARGIN_MS), 'check');
  }
  const args = ['check', '--json', ...commonArgs(opts), '--', ...list];
  return inspection('check', b.bin, args, opts);
}

/** Every address of a pool, as `sockcheck --json scan POOL`: the check document. */
async function scan(pool, opts = {}) {
  const b = backend(opts, 'scan');
  if (b.source === 'fallback') {
    const list = poolOf(pool);
    return withDeadline(fallback.check(list, defaultPorts(opts.ports)), processTimeoutMs(opts, MARGIN_MS), 'scan');
  }
  const args = ['scan', '--json', ...commonArgs(opts)];
  if (pool != null) args.push('--', String(pool));
  return inspection('scan', b.bin, args, opts);
}

async function inspection(sub, bin, args, opts) {
  const r = await runChild(bin, args, { sub, timeoutMs: processTimeoutMs(opts, MARGIN_MS), signal: opts.signal });
  if (r.aborted || r.timedOut || (r.status !== 0 && r.status !== 1)) throw failure(sub, r);
  const doc = parseJson(r.stdout);
  if (!doc || !Array.isArray(doc.addresses)) throw badOutput(sub, r);
  return withSource(doc, 'sockcheck', r.status === 0);
}

/** What holds an address, in one line, from a check document. */
function holders(doc) {
  const a = doc?.addresses?.[0];
  if (!a) return '';
  return (a.reasons || []).map((x) => x.message).filter(Boolean).join('; ');
}

/**
 * Wait until an address is free (`sockcheck wait`). Resolves with the check
 * document. Rejects SOCKCHECK_TIMEOUT when it is still held after `timeout`
 * (err.report says by whom), SOCKCHECK_FOREIGN at once when a wildcard
 * listener covers it (unless allowForeign).
 */
async function waitFree(address, opts = {}) {
  const timeout = opts.timeout ?? '30s';
  const timeoutMs = durationMs(timeout, 'timeout');
  const b = backend(opts, 'wait');
  let doc;
  let outcome;
  let r = null;
  if (b.source === 'fallback') {
    const parsed = parseAddress(address);
    if (!parsed) throw new SockcheckError(`sockcheck wait (fallback): '${address}' is not an IP address`, { code: 'SOCKCHECK_USAGE' });
    ({ doc, outcome } = await withDeadline(fallback.waitFree({
      address: parsed.address, ports: defaultPorts(opts.ports), timeoutMs, allowForeign: !!opts.allowForeign, signal: opts.signal,
    }), processTimeoutMs(opts, timeoutMs + MARGIN_MS), 'wait'));
    withSource(doc, 'fallback', outcome === 'free');
  } else {
    const args = ['wait', '--json', '--timeout', durationArg(timeout, 'timeout'), ...commonArgs(opts)];
    if (opts.allowForeign) args.push('--allow-foreign');
    args.push('--', String(address));
    r = await runChild(b.bin, args, {
      sub: 'wait', timeoutMs: processTimeoutMs(opts, timeoutMs + MARGIN_MS), signal: opts.signal,
    });
    if (r.aborted || r.timedOut || (r.status !== 0 && r.status !== 1)) throw failure('wait', r);
    doc = parseJson(r.stdout);
    if (!doc || !Array.isArray(doc.addresses)) throw badOutput('wait', r);
    withSource(doc, 'sockcheck', r.status === 0);
    const verdict = doc.addresses[0]?.verdict;
    outcome = r.status === 0 ? 'free' : verdict === 'foreign' && !opts.allowForeign ? 'foreign' : 'timeout';
  }
  if (outcome === 'free') return doc;
  const verdict = doc.addresses[0]?.verdict ?? null;
  const who = holders(doc);
  const info = {
    exitStatus: r ? r.status : null, stderr: r ? r.stderr.trim() : '', argv: r ? r.argv : [],
    report: doc, verdict, address: doc.addresses[0]?.address ?? String(address), source: doc.source,
  };
  if (outcome === 'foreign') {
    throw new SockcheckError(`sockcheck wait: ${info.address} is foreign: waiting cannot help${who ? `: ${who}` : ''}`,
      { ...info, code: 'SOCKCHECK_FOREIGN' });
  }
  throw new SockcheckError(`sockcheck wait: ${info.address} is still ${verdict} after ${timeout}${typeof timeout === 'number' ? 'ms' : ''}${who ? `: ${who}` : ''}`,
    { ...info, code: 'SOCKCHECK_TIMEOUT', timeout: timeoutMs });
}

// ---------------------------------------------------------------- run

const SIGNALS = os.constants.signals;

/**
 * Lease an address, run a command with SOCKCHECK_ADDR and SOCKCHECK_PORTS
 * set, and check for lingering holders (`sockcheck run`). Resolves with the
 * outcome whatever the command's status; rejects when no address could be
 * leased (SOCKCHECK_NO_FREE_ADDRESS) or sockcheck itself failed.
 */
async function run(pool, command, opts = {}) {
  let cmd;
  if (Array.isArray(command)) cmd = command.map(String);
  else if (typeof command === 'string') cmd = ['/bin/sh', '-c', command];
  if (!cmd || cmd.length === 0) throw new SockcheckError('sockcheck run: no command given', { code: 'SOCKCHECK_USAGE' });
  const waitMs = opts.wait != null ? durationMs(opts.wait, 'wait') : 0;
  const lingerMs = opts.linger != null ? durationMs(opts.linger, 'linger') : 5000;
  const graceMs = opts.grace != null ? durationMs(opts.grace, 'grace') : 2000;
  const pipe = opts.stdio === 'pipe';
  const env = opts.env ? { ...process.env, ...opts.env } : process.env;
  const b = backend(opts, 'run');
  const timeoutMs = processTimeoutMs(opts, RUN_TIMEOUT_MS + waitMs + lingerMs + graceMs);
  if (b.source === 'fallback') return runFallback(pool, cmd, opts, { waitMs, pipe, env, timeoutMs });

  const args = ['run', '-v', ...commonArgs(opts)];
  if (opts.linger != null) args.push('--linger', durationArg(opts.linger, 'linger'));
  if (opts.report != null) args.push('--report', String(opts.report));
  if (opts.reap) args.push('--reap');
  if (opts.grace != null) args.push('--grace', durationArg(opts.grace, 'grace'));
  if (opts.wait != null) args.push('--wait', durationArg(opts.wait, 'wait'));
  if (opts.allowForeign) args.push('--allow-foreign');
  const poolArg = leasePoolArg(pool, env);
  if (poolArg != null) args.push(poolArg);
  args.push('--', ...cmd);
  const r = await runChild(b.bin, args, {
    sub: 'run', timeoutMs, signal: opts.signal, killGraceMs: lingerMs + graceMs + 5000,
    stdin: 'inherit', stdout: pipe ? 'pipe' : 'inherit', teeStderr: !pipe, env, cwd: opts.cwd,
  });
  if (r.aborted || r.timedOut) throw failure('run', r);
  const leased = /^sockcheck: leased (\S+) for the command/m.exec(r.stderr);
  const stderr = r.stderr.trim();
  if (!leased) {
    if (r.status === 5 || /no free address/.test(stderr)) {
      const skipped = parseSkipLines(stderr);
      const errorLine = stderr.split('\n').filter((l) => /no free address/.test(l)).pop();
      throw noFreeAddressError('run', {
        error: (errorLine || 'no free address').replace(/^sockcheck: /, '').trim(), skipped,
        hopeless: skipped.length > 0 && skipped.every((s) => s.reason === 'foreign' || s.reason === 'unavailable'),
        stderr, argv: r.argv, exitStatus: r.status, source: 'sockcheck',
      });
    }
    if (r.status === 2 || r.status === 3) throw failure('run', r);
  }
  let report = null;
  if (opts.report != null && /\.json$/i.test(String(opts.report))) {
    try {
      report = JSON.parse(fs.readFileSync(String(opts.report), 'utf8'));
    } catch { /* no report: nothing lingered */ }
  }
  return {
    status: r.status,
    signal: r.signal,
    ok: r.status === 0,
    lingering: r.status === 4,
    address: leased ? leased[1] : report?.address ?? null,
    report,
    reportPath: opts.report != null ? String(opts.report) : null,
    source: 'sockcheck',
    stdout: pipe ? r.stdout : null,
    stderr,
  };
}

async function runFallback(pool, cmd, opts, { waitMs, pipe, env, timeoutMs }) {
  const started = Date.now();
  const lease = await acquireFallback({ ...opts, pool, processTimeout: undefined }, waitMs, env);
  try {
    const r = await new Promise((resolve, reject) => {
      if (opts.signal?.aborted) return reject(abortedError('sockcheck run (fallback)', opts.signal));
      const child = spawn(cmd[0], cmd.slice(1), {
        stdio: ['inherit', pipe ? 'pipe' : 'inherit', pipe ? 'pipe' : 'inherit'],
        env: { ...env, SOCKCHECK_ADDR: lease.address, SOCKCHECK_PORTS: lease.ports.join(',') },
        cwd: opts.cwd,
      });
      let stdout = '';
      let stderr = '';
      child.stdout?.setEncoding('utf8').on('data', (d) => { stdout += d; });
      child.stderr?.setEncoding('utf8').on('data', (d) => { stderr += d; });
      let why = null;
      let killTimer = null;
      const kill = (reason) => {
        if (why) return;
        why = reason;
        try { child.kill('SIGTERM'); } catch { /* gone */ }
        killTimer = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, 5000);
      };
      const left = timeoutMs - (Date.now() - started);
      const watchdog = Number.isFinite(left) ? setTimeout(() => kill('timeout'), Math.max(0, left)) : null;
      const onAbort = () => kill('abort');
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => {
        clearTimeout(watchdog);
        clearTimeout(killTimer);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      child.once('error', (e) => {
        done();
        resolve({ status: 127, signal: null, stdout, stderr: `${stderr}sockcheck run (fallback): cannot run ${cmd[0]}: ${e.code || e.message}\n`, why });
      });
      child.once('close', (code, sig) => {
        done();
        resolve({ status: code ?? 128 + (SIGNALS[sig] || 0), signal: sig, stdout, stderr, why });
      });
    });
    if (r.why === 'abort') throw abortedError('sockcheck run (fallback)', opts.signal);
    if (r.why === 'timeout') {
      throw new SockcheckError(`sockcheck run (fallback): the command ran longer than ${Math.round(timeoutMs)}ms; killed`,
        { code: 'SOCKCHECK_TIMEOUT', timeout: timeoutMs });
    }
    if (!pipe && r.status === 127 && r.stderr) process.stderr.write(r.stderr);
    return {
      status: r.status,
      signal: r.signal,
      ok: r.status === 0,
      lingering: null, // the fallback cannot tell: no lingering-worker check
      address: lease.address,
      report: null,
      reportPath: null,
      source: 'fallback',
      stdout: pipe ? r.stdout : null,
      stderr: r.stderr.trim(),
    };
  } finally {
    await lease.release();
  }
}

module.exports = {
  acquire,
  release,
  check,
  scan,
  waitFree,
  run,
  acquirePort,
  releasePort,
  Lease,
  PortLease,
  SockcheckError,
  resolveBinary,
  resolveBackend,
  platformPackage,
  DEFAULT_LEASE_PORT: fallback.DEFAULT_LEASE_PORT,
  DEFAULT_POOL,
  defaultPortRange,
  version: VERSION,
};
