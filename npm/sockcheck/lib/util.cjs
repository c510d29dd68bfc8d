'use strict';
// Input handling shared by the binary and fallback paths: durations, ports,
// pools (as sockcheck parses them), and the SockcheckError class.

const net = require('node:net');
const { parseDuration } = require('./duration.cjs');

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

/**
 * A duration in milliseconds: a number is milliseconds, a string is a
 * sockcheck duration, parsed by the binary's grammar (duration.cjs): `500ms`,
 * `30s`, `2m`, `1m30s`, `1h`, `1.5s`, `2 minutes`, `PT1M`; a bare number is
 * seconds. At most a year.
 */
function durationMs(value, what) {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw usage(`${what}: ${value} is not a duration in milliseconds`);
    return value;
  }
  const ms = parseDuration(String(value));
  if (ms === null) {
    throw usage(`${what}: ${echo(String(value))} is not a duration (examples: 500ms, 30s, 2m, 1m30s, 1h)`);
  }
  return ms;
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

// ---------------------------------------------------------------- addresses
//
// Addresses and pools are parsed here exactly as the binary parses them
// (Rust's `IpAddr::from_str`, src/input/pool.rs and src/inspect/parse.rs), not
// with net.isIP: Node takes what Rust refuses (`fe80::1%eth0`), and a pool
// the fallback takes and the binary refuses (or the other way round) would
// make the two backends hand out different addresses from one SOCKCHECK_POOL.
// tests/data/pools.json (repo root) holds the cases both must agree on.

/** Unicode White_Space, what Rust's `str::trim` strips (JS's trim differs on U+0085 and U+FEFF). */
const RUST_SPACE = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const RUST_TRIM = new RegExp(`^[${RUST_SPACE}]+|[${RUST_SPACE}]+$`, 'g');
const rustTrim = (text) => text.replace(RUST_TRIM, '');

/** Rust's Ipv4Addr grammar at the start of `text`: four decimal octets, no leading zeros. */
function ipv4Prefix(text) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})/.exec(text);
  if (!m) return null;
  let n = 0n;
  for (const octet of m.slice(1)) {
    if ((octet.length > 1 && octet[0] === '0') || Number(octet) > 255) return null;
    n = (n << 8n) | BigInt(octet);
  }
  return { n, length: m[0].length };
}

/**
 * Rust's Ipv6Addr grammar (core::net::parser): up to 8 groups of 1-4 hex
 * digits, one `::` standing for at least one zero group, a dotted quad only
 * as the last two groups. No zone (`%eth0`), no brackets.
 */
function ipv6Value(text) {
  let pos = 0;
  const readGroups = (limit) => {
    const groups = [];
    for (let i = 0; i < limit; i++) {
      if (i > 0 && text[pos] !== ':') break;
      const at = i === 0 ? pos : pos + 1;
      if (i < limit - 1) {
        const v4 = ipv4Prefix(text.slice(at));
        if (v4) {
          groups.push(Number(v4.n >> 16n), Number(v4.n & 0xffffn));
          pos = at + v4.length;
          return { groups, ipv4: true };
        }
      }
      const group = /^[0-9a-fA-F]{1,4}/.exec(text.slice(at));
      if (!group) break;
      groups.push(parseInt(group[0], 16));
      pos = at + group[0].length;
    }
    return { groups, ipv4: false };
  };
  const head = readGroups(8);
  let groups = head.groups;
  if (groups.length < 8) {
    if (head.ipv4 || text.slice(pos, pos + 2) !== '::') return null;
    pos += 2;
    const tail = readGroups(8 - (groups.length + 1)).groups;
    groups = [...groups, ...Array(8 - groups.length - tail.length).fill(0), ...tail];
  }
  if (pos !== text.length) return null;
  return groups.reduce((n, g) => (n << 16n) | BigInt(g), 0n);
}

/** Rust's `IpAddr::from_str`: {n, family} or null. */
function ipValue(text) {
  const v4 = ipv4Prefix(text);
  if (v4 && v4.length === text.length) return { n: v4.n, family: 4 };
  const n = ipv6Value(text);
  return n === null ? null : { n, family: 6 };
}

/**
 * An address in canonical text, as Rust's Display prints it: dotted IPv4;
 * RFC 5952 IPv6 (lowercase, the first longest run of two or more zero
 * groups as `::`), an IPv4-mapped address as `::ffff:1.2.3.4`. Lease tokens
 * are named after this text, so both backends must write it alike.
 */
function fromBig(n, family) {
  if (family === 4) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
  if (n >> 32n === 0xffffn) return `::ffff:${fromBig(n & 0xffffffffn, 4)}`;
  const groups = [];
  for (let s = 112n; s >= 0n; s -= 16n) groups.push(((n >> s) & 0xffffn).toString(16));
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

/** An IPv4-mapped IPv6 address is the IPv4 address it maps (as the binary takes it). */
function unmapped({ n, family }) {
  return family === 6 && n >> 32n === 0xffffn ? { n: n & 0xffffffffn, family: 4 } : { n, family };
}

/**
 * An address as the user may write it (`127.0.0.2`, `::1`, `[::1]`), in
 * canonical text, an IPv4-mapped address as the IPv4 address; or null.
 */
function parseAddress(text) {
  const parsed = bracketed(String(text));
  if (!parsed) return null;
  const { n, family } = unmapped(parsed);
  return { address: fromBig(n, family), family };
}

function bracketed(text) {
  const t = rustTrim(text);
  const inner = t.startsWith('[') && t.endsWith(']') && t.length >= 2 ? t.slice(1, -1) : t;
  return ipValue(inner);
}

/** Why no server binds `address` as its own (src/inspect/parse.rs `not_bindable`), or null. */
function notBindable({ n, family }) {
  if (n === 0n) return 'a wildcard';
  if (family === 4) {
    if (n >> 28n === 0xen) return 'a multicast address';
    if (n === 0xffffffffn) return 'the broadcast address';
    if (n === 0x7fffffffn) return 'the broadcast address of 127.0.0.0/8';
    return null;
  }
  if (n >> 120n === 0xffn) return 'a multicast address';
  if (n >> 118n === 0x3fan) {
    return 'an IPv6 link-local address, which binds only with a scope (an interface) and sockcheck takes none';
  }
  return null;
}

/** The terminal form of one character, as the binary's `text::escape` writes it. */
function escapeChar(c) {
  const cp = c.codePointAt(0);
  if (c === '\n') return '\\n';
  if (c === '\t') return '\\t';
  if (c === '\r') return '\\r';
  if (c === '\\') return '\\\\';
  if (cp < 0x20 || cp === 0x7f) return `\\x${cp.toString(16).padStart(2, '0')}`;
  if (HIDDEN.some(([a, b]) => cp >= a && cp <= b)) return `\\u{${cp.toString(16)}}`;
  return c;
}

// src/text.rs `is_hidden`: control, format and default-ignorable code points.
const HIDDEN = [
  [0x00, 0x1f], [0x7f, 0x9f], [0xad, 0xad], [0x600, 0x605], [0x61c, 0x61c], [0x6dd, 0x6dd], [0x70f, 0x70f],
  [0x890, 0x891], [0x8e2, 0x8e2], [0x180e, 0x180e], [0x200b, 0x200f], [0x2028, 0x202e], [0x2060, 0x206f],
  [0xfeff, 0xfeff], [0xfff9, 0xfffb], [0x110bd, 0x110bd], [0x110cd, 0x110cd], [0x13430, 0x1343f],
  [0x1bca0, 0x1bca3], [0x1d173, 0x1d17a], [0xe0000, 0xe0fff], [0x34f, 0x34f], [0x115f, 0x1160],
  [0x17b4, 0x17b5], [0x180b, 0x180f], [0x3164, 0x3164], [0xfe00, 0xfe0f], [0xffa0, 0xffa0], [0xfff0, 0xfff8],
];

/** The most characters of an echoed value a message shows (the binary's ECHO_MAX). */
const ECHO_MAX = 64;

/**
 * A value as an error message echoes it, like the binary's `text::echo`:
 * escaped, quoted, and cut to 64 characters (never inside an escape) with
 * `…` and its length, so no value can forge a line or flood the terminal.
 */
function echo(value) {
  const pieces = [...String(value)].map(escapeChar);
  let shown = '';
  let count = 0;
  for (const piece of pieces) {
    if (count + [...piece].length > ECHO_MAX) {
      return `'${shown}…' (${Buffer.byteLength(String(value))} bytes)`;
    }
    count += [...piece].length;
    shown += piece;
  }
  return `'${shown}'`;
}

const MAX_POOL = 65536n;

/**
 * The addresses of a pool, as the binary reads it (src/input/pool.rs): a
 * range (`127.0.0.2-127.0.0.33`), a CIDR (`127.0.0.0/27`), an address, or a
 * comma list of these; at most 65536 addresses, each once, IPv4-mapped ones
 * as IPv4. Every address must be one a server can bind: a pool holding a
 * wildcard, broadcast, multicast or link-local address is refused, naming
 * the item and the address. `source` names where the pool came from.
 */
function parsePool(text, source = 'POOL') {
  const bad = (why) => usage(`${source}: ${why}`);
  text = String(text);
  const pool = [];
  const seen = new Set();
  for (const raw of text.split(',')) {
    const item = rustTrim(raw);
    if (!item) throw bad(`empty item in pool ${echo(text)}`);
    const { first, count } = poolItem(item, bad);
    if (BigInt(pool.length) + count > MAX_POOL) throw bad(`pool ${echo(text)} holds more than ${MAX_POOL} addresses`);
    for (let i = 0n; i < count; i++) {
      const one = unmapped({ n: first.n + i, family: first.family });
      const address = fromBig(one.n, one.family);
      // Every address, not just the first: `::1/127` holds `::`.
      const kind = notBindable(one);
      if (kind) throw bad(`${echo(item)} holds ${address}, ${kind}; every address of a pool must be one a server can bind`);
      if (!seen.has(address)) {
        seen.add(address);
        pool.push(address);
      }
    }
  }
  return pool;
}

/** One item of a pool: its first address and how many it holds (a CIDR, a range or one address). */
function poolItem(item, bad) {
  const slash = item.indexOf('/');
  const dash = item.indexOf('-');
  if (slash >= 0) {
    const [baseText, prefixText] = [item.slice(0, slash), item.slice(slash + 1)];
    const base = bracketed(baseText);
    if (!base) throw bad(`${echo(baseText)} in ${echo(item)} is not an IP address`);
    const bits = base.family === 4 ? 32 : 128;
    const prefix = /^\d+$/.test(prefixText) ? Number(prefixText) : NaN;
    if (!(prefix >= 0 && prefix <= bits)) throw bad(`${echo(prefixText)} in ${echo(item)} is not a prefix length (0-${bits})`);
    // 2^128 does not fit the binary's u128: it says u128::MAX.
    const count = bits - prefix === 128 ? (1n << 128n) - 1n : 1n << BigInt(bits - prefix);
    if (count > MAX_POOL) throw bad(`${echo(item)} holds ${count} addresses; a pool holds at most ${MAX_POOL}`);
    return { first: { n: base.n & ~(count - 1n), family: base.family }, count };
  }
  if (dash >= 0) {
    const [fromText, toText] = [item.slice(0, dash), item.slice(dash + 1)];
    const from = bracketed(fromText);
    if (!from) throw bad(`${echo(rustTrim(fromText))} in ${echo(item)} is not an IP address`);
    const to = bracketed(toText);
    if (!to) throw bad(`${echo(rustTrim(toText))} in ${echo(item)} is not an IP address`);
    if (from.family !== to.family) throw bad(`${echo(item)} mixes IPv4 and IPv6`);
    if (to.n < from.n) throw bad(`${echo(item)} ends before it starts`);
    return { first: from, count: to.n - from.n + 1n };
  }
  const one = bracketed(item);
  if (!one) throw bad(`${echo(item)} is not an IP address, range or CIDR`);
  return { first: one, count: 1n };
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
  SockcheckError, durationMs, durationArg, portList, portsArg, parseAddress, parsePool, echo, sleep, abortedError,
};
