'use strict';
// Input handling shared by the binary and fallback paths: durations, ports,
// pools (as sockcheck parses them), and the SockcheckError class.

const net = require('node:net');

/**
 * A failed sockcheck call. `code` says what went wrong (see the README's
 * error table); `exitStatus` is sockcheck's exit status (null when it did not
 * exit normally, or in the fallback).
 */
class SockcheckError extends Error {
  constructor(message, info = {}) {
    const { code = 'SOCKCHECK_FAILED', exitStatus = null, stderr = '', argv = [], signal = null, cause, ...extra } = info;
    super(message, cause !== undefined ? { cause } : undefined);
    this.name = 'SockcheckError';
    this.code = code;
    this.exitStatus = exitStatus;
    this.stderr = stderr;
    this.argv = argv;
    this.signal = signal;
    Object.assign(this, extra);
  }
}

const usage = (message) => new SockcheckError(message, { code: 'SOCKCHECK_USAGE' });

const DURATION = /^(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h)?$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60000, h: 3600000 };

/**
 * A duration in milliseconds: a number is milliseconds, a string is a
 * sockcheck duration (`500ms`, `30s`, `2m`, `1h`, a bare number = seconds).
 */
function durationMs(value, what) {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw usage(`${what}: ${value} is not a duration in milliseconds`);
    return value;
  }
  const m = DURATION.exec(String(value).trim());
  if (!m) throw usage(`${what}: '${value}' is not a duration (examples: 500, '500ms', '30s', '2m')`);
  return Number(m[1]) * UNIT_MS[m[2] || 's'];
}

/** The duration as sockcheck takes it on the command line. */
function durationArg(value, what) {
  const ms = durationMs(value, what);
  return typeof value === 'number' ? `${Math.ceil(ms)}ms` : String(value).trim();
}

/** Ports as a list of numbers: an array, a number, or a `P,..` string. */
function portList(ports, what = 'ports') {
  let list;
  if (Array.isArray(ports)) list = ports;
  else if (typeof ports === 'number') list = [ports];
  else list = String(ports).split(',').map((p) => p.trim());
  const out = list.map((p) => {
    const n = typeof p === 'number' ? p : /^\d+$/.test(String(p)) ? Number(p) : NaN;
    if (!Number.isInteger(n) || n < 1 || n > 65535) throw usage(`${what}: '${p}' is not a TCP port (1-65535)`);
    return n;
  });
  if (out.length === 0) throw usage(`${what}: no port given`);
  return out;
}

/** The `--ports` value. */
function portsArg(ports) {
  return portList(ports).join(',');
}

/** An address as the user may write it (`::1`, `[::1]`), or null. */
function parseAddress(text) {
  let t = String(text).trim();
  if (t.startsWith('[') && t.endsWith(']')) t = t.slice(1, -1);
  const family = net.isIP(t);
  return family ? { address: t, family } : null;
}

function toBig(address, family) {
  if (family === 4) return address.split('.').reduce((n, o) => (n << 8n) | BigInt(Number(o)), 0n);
  // Expand `::` and an embedded dotted quad.
  let text = address.toLowerCase();
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const v = toBig(quad[1], 4);
    text = text.slice(0, -quad[1].length) + `${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined ? (tail ? tail.split(':') : []) : [];
  const groups = tail !== undefined ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

function fromBig(n, family) {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
  const groups = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((n >> s) & 0xffffn).toString(16));
  // Compress the longest run of zero groups, as inet_ntop does.
  let best = [-1, 0];
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best[1] && j - i > 1) best = [i, j - i];
    i = j;
  }
  if (best[0] < 0) return groups.join(':');
  return `${groups.slice(0, best[0]).join(':')}::${groups.slice(best[0] + best[1]).join(':')}`;
}

const MAX_POOL = 65536n;

/**
 * The addresses of a pool, as sockcheck reads it: a range
 * (`127.0.0.2-127.0.0.33`), a CIDR (`127.0.0.0/27`), a comma list, or a comma
 * list of these. At most 65536 addresses.
 */
function parsePool(text, source = 'pool') {
  const bad = (why) => usage(`${source}: ${why}`);
  const pool = [];
  const seen = new Set();
  for (const raw of String(text).split(',')) {
    const item = raw.trim();
    if (!item) throw bad(`empty item in pool '${text}'`);
    let first;
    let count;
    if (item.includes('/')) {
      const [baseText, prefixText] = item.split('/', 2);
      const base = parseAddress(baseText);
      if (!base) throw bad(`'${baseText}' in '${item}' is not an IP address`);
      const bits = base.family === 4 ? 32 : 128;
      const prefix = /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
      if (!(prefix >= 0 && prefix <= bits)) throw bad(`'${prefixText}' in '${item}' is not a prefix length (0-${bits})`);
      count = 1n << BigInt(bits - prefix);
      if (count > MAX_POOL) throw bad(`'${item}' holds ${count} addresses; a pool holds at most ${MAX_POOL}`);
      first = { n: toBig(base.address, base.family) & ~(count - 1n), family: base.family };
    } else if (item.includes('-')) {
      const [fromText, toText] = item.split('-', 2).map((s) => s.trim());
      const from = parseAddress(fromText);
      if (!from) throw bad(`'${fromText}' in '${item}' is not an IP address`);
      const to = parseAddress(toText);
      if (!to) throw bad(`'${toText}' in '${item}' is not an IP address`);
      if (from.family !== to.family) throw bad(`'${item}' mixes IPv4 and IPv6`);
      const a = toBig(from.address, from.family);
      const b = toBig(to.address, to.family);
      if (b < a) throw bad(`'${item}' ends before it starts`);
      first = { n: a, family: from.family };
      count = b - a + 1n;
    } else {
      const one = parseAddress(item);
      if (!one) throw bad(`'${item}' is not an IP address, range or CIDR`);
      first = { n: toBig(one.address, one.family), family: one.family };
      count = 1n;
    }
    if (BigInt(pool.length) + count > MAX_POOL) throw bad(`pool '${text}' holds more than ${MAX_POOL} addresses`);
    for (let i = 0n; i < count; i++) {
      const address = fromBig(first.n + i, first.family);
      if (!seen.has(address)) {
        seen.add(address);
        pool.push(address);
      }
    }
  }
  return pool;
}

/** An abortable sleep; resolves false if aborted. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const onAbort = () => { clearTimeout(timer); resolve(false); };
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(true); }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function abortedError(what, signal, argv) {
  return new SockcheckError(`${what}: aborted`, {
    code: 'SOCKCHECK_ABORTED', argv, cause: signal?.reason,
  });
}

module.exports = {
  SockcheckError, durationMs, durationArg, portList, portsArg, parseAddress, parsePool, sleep, abortedError,
};
