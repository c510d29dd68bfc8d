'use strict';
// Port ranges, as `sockcheck acquire-port` reads them: `P`, `P-Q`, or a comma
// list of those; and the default range (15000-32767 minus the kernel's
// ephemeral range and its reserved ports). Shared by the binary path (which
// passes a range on) and the fallback (which walks it).

const fs = require('node:fs');
const { SockcheckError, echo } = require('./util.cjs');

const usage = (message) => new SockcheckError(message, { code: 'SOCKCHECK_USAGE' });

/** The default range's bounds, before the kernel's ephemeral and reserved ports come out. */
const DEFAULT_PORT_RANGE = '15000-32767';
const DEFAULT_FROM = 15000;
const DEFAULT_TO = 32767;

function portNumber(text, what, whole) {
  const t = String(text).trim();
  const n = /^\d{1,5}$/.test(t) ? Number(t) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw usage(`${what}: ${echo(t)} in ${echo(whole)} is not a TCP port (1-65535)`);
  return n;
}

/** The ports of one text item, `P` or `P-Q`, pushed in order. */
function pushItem(item, what, whole, out) {
  const t = String(item).trim();
  if (!t) throw usage(`${what}: empty item in ${echo(whole)}`);
  const dash = t.indexOf('-');
  if (dash < 0) {
    out.push(portNumber(t, what, whole));
    return;
  }
  const from = portNumber(t.slice(0, dash), what, whole);
  const to = portNumber(t.slice(dash + 1), what, whole);
  if (to < from) throw usage(`${what}: ${echo(t)} ends before it starts`);
  for (let p = from; p <= to; p++) out.push(p);
}

/**
 * The ports of a range, in order, each once: a string (`46800`,
 * `46800-46815`, `46800-46815,46820`), a port number, or an iterable of
 * port numbers and such strings.
 */
function parsePortRange(value, what = 'range') {
  const out = [];
  if (typeof value === 'number') {
    out.push(portNumber(String(value), what, String(value)));
  } else if (typeof value === 'string') {
    for (const item of value.split(',')) pushItem(item, what, value, out);
  } else if (value != null && typeof value[Symbol.iterator] === 'function') {
    for (const item of value) {
      if (typeof item === 'number') out.push(portNumber(String(item), what, String(item)));
      else if (typeof item === 'string') for (const part of item.split(',')) pushItem(part, what, item, out);
      else throw usage(`${what}: ${echo(String(item))} is not a port`);
    }
  } else {
    throw usage(`${what}: ${echo(String(value))} is not a port range (examples: 46800, '46800-46815', [46800, 46801])`);
  }
  if (out.length === 0) throw usage(`${what}: no port given`);
  return [...new Set(out)];
}

/** `lo-hi` pairs from the kernel's `a-b,c` syntax (ip_local_reserved_ports) or `lo\thi` (ip_local_port_range). */
function readSysctl(file) {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/**
 * The range acquirePort takes when given none, as the binary computes it:
 * 15000-32767 minus net.ipv4.ip_local_port_range (the ephemeral ports a
 * connect may take at any moment) and net.ipv4.ip_local_reserved_ports.
 * Off Linux (or when /proc cannot be read) the plain 15000-32767.
 */
function defaultPortRange({ procSys = '/proc/sys/net/ipv4' } = {}) {
  const excluded = new Set();
  if (process.platform === 'linux') {
    const eph = readSysctl(`${procSys}/ip_local_port_range`);
    const m = eph && /^(\d+)\s+(\d+)$/.exec(eph);
    if (m) for (let p = Math.max(Number(m[1]), DEFAULT_FROM); p <= Math.min(Number(m[2]), DEFAULT_TO); p++) excluded.add(p);
    const reserved = readSysctl(`${procSys}/ip_local_reserved_ports`);
    if (reserved) {
      for (const item of reserved.split(',')) {
        const r = /^(\d+)(?:-(\d+))?$/.exec(item.trim());
        if (!r) continue;
        const from = Number(r[1]);
        const to = r[2] ? Number(r[2]) : from;
        for (let p = Math.max(from, DEFAULT_FROM); p <= Math.min(to, DEFAULT_TO); p++) excluded.add(p);
      }
    }
  }
  const out = [];
  for (let p = DEFAULT_FROM; p <= DEFAULT_TO; p++) if (!excluded.has(p)) out.push(p);
  return out;
}

/** Ports as the shortest `P-Q,R` text (consecutive runs in the given order). */
function rangeText(ports) {
  const parts = [];
  for (let i = 0; i < ports.length;) {
    let j = i;
    while (j + 1 < ports.length && ports[j + 1] === ports[j] + 1) j++;
    parts.push(j > i ? `${ports[i]}-${ports[j]}` : String(ports[i]));
    i = j + 1;
  }
  return parts.join(',');
}

module.exports = { parsePortRange, defaultPortRange, rangeText, DEFAULT_PORT_RANGE };
