'use strict';
// The fallback where no sockcheck binary exists (macOS, Windows, another CPU)
// or when SOCKCHECK_FALLBACK=1 forces it: a plain-bind canary on every port
// plus a connect probe, and leases held by a UDP socket bound to
// ADDRESS:LEASE_PORT in the leaseholder process (the kernel frees it when
// that process dies: no files, nothing to go stale).
//
// What it cannot do: name owners (no pids), read SO_REUSEPORT, or report
// lingering workers after `run`.

const dgram = require('node:dgram');
const net = require('node:net');
const { SockcheckError, parseAddress, sleep, abortedError } = require('./util.cjs');

/** The UDP port a fallback lease binds on its address, unless told otherwise. */
const DEFAULT_LEASE_PORT = 9924;

const SEVERITY = { free: 0, unavailable: 1, conflict: 2, busy: 3, foreign: 4 };
const worst = (a, b) => (SEVERITY[b] > SEVERITY[a] ? b : a);

/** Fallback leases held by this process: address → dgram socket. */
const held = new Map();

function leasePortOf(opts = {}, env = process.env) {
  const value = opts.leasePort ?? env.SOCKCHECK_LEASE_PORT ?? DEFAULT_LEASE_PORT;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new SockcheckError(`sockcheck (fallback): lease port '${value}' is not a UDP port (1-65535)`, { code: 'SOCKCHECK_USAGE' });
  }
  return n;
}

/**
 * The canary: bind ADDRESS:PORT the way a plain server does (SO_REUSEADDR on,
 * SO_REUSEPORT off; Node cannot bind without listening, so it listens and
 * closes at once).
 */
function canary(address, port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', (e) => resolve({ result: e.code || String(e.message), ...(typeof e.errno === 'number' ? { errno: Math.abs(e.errno) } : {}) }));
    server.listen({ host: address, port, exclusive: true, backlog: 1 }, () => {
      server.close(() => resolve({ result: 'ok' }));
    });
  });
}

/**
 * The connect probe: does anything accept a connection on ADDRESS:PORT?
 * `connected`, `refused`, `timeout` or an error code.
 */
function connectProbe(address, port, ms = 500) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port });
    const done = (result) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ result });
    };
    const timer = setTimeout(() => done('timeout'), ms);
    socket.once('connect', () => done('connected'));
    socket.once('error', (e) => done(e.code === 'ECONNREFUSED' ? 'refused' : e.code || String(e.message)));
  });
}

/**
 * On Linux every 127/8 address is local, so a wildcard listener shows on a
 * sentinel address of the same port too: that tells `foreign` from `busy`.
 */
function sentinelFor(address) {
  if (process.platform !== 'linux' || net.isIPv4(address) !== true || !address.startsWith('127.')) return null;
  return address === '127.255.255.254' ? '127.255.255.253' : '127.255.255.254';
}

/** One port of one address: canary, then the connect probe. */
async function inspectPort(address, port) {
  const entry = { port, canary: await canary(address, port), listeners: [] };
  const c = entry.canary.result;
  let verdict = 'free';
  let reason = null;
  if (c === 'ok') {
    entry.connect = await connectProbe(address, port);
    if (entry.connect.result === 'connected') {
      // The bind succeeded beside a listener: only a wildcard can do that
      // (macOS, BSD); on Linux it means a listener appeared in between.
      if (process.platform === 'linux') {
        verdict = 'busy';
        reason = { code: 'listener', message: `${hostPort(address, port)} accepts connections (a listener appeared after the canary bind)` };
      } else {
        verdict = 'foreign';
        reason = { code: 'wildcard', message: `${hostPort(address, port)} accepts connections although a plain bind succeeds: a wildcard listener covers it` };
      }
    }
  } else if (c === 'EADDRINUSE') {
    entry.connect = await connectProbe(address, port);
    if (entry.connect.result === 'connected') {
      verdict = 'busy';
      reason = { code: 'listener', message: `${hostPort(address, port)} is in use and accepts connections (owner unknown: fallback)` };
      const sentinel = sentinelFor(address);
      if (sentinel && (await canary(sentinel, port)).result === 'EADDRINUSE'
          && (await connectProbe(sentinel, port)).result === 'connected') {
        verdict = 'foreign';
        reason = { code: 'wildcard', message: `a wildcard listener on port ${port} covers ${address} (${sentinel}:${port} answers too; owner unknown: fallback)` };
      }
    } else {
      verdict = 'conflict';
      reason = { code: 'canary_failed', message: `the canary bind on ${hostPort(address, port)} fails with EADDRINUSE, but nothing accepts connections there (a bound socket that is not listening?)` };
    }
  } else if (c === 'EADDRNOTAVAIL') {
    verdict = 'unavailable';
    reason = { code: 'not_local', message: `${address} is not a local address (EADDRNOTAVAIL)` };
  } else {
    verdict = 'conflict';
    reason = { code: 'canary_failed', message: `the canary bind on ${hostPort(address, port)} fails with ${c}` };
  }
  return { entry, verdict, reason: reason && { ...reason, port, verdict } };
}

function hostPort(address, port) {
  return net.isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
}

/** The check document (schema 1) for one address, from the fallback. */
async function inspectAddress(text, ports) {
  const parsed = parseAddress(text);
  if (!parsed) {
    throw new SockcheckError(`sockcheck (fallback): '${text}' is not an IP address`, { code: 'SOCKCHECK_USAGE' });
  }
  const { address } = parsed;
  let verdict = 'free';
  const reasons = [];
  const portEntries = [];
  for (const port of ports) {
    const r = await inspectPort(address, port);
    portEntries.push(r.entry);
    verdict = worst(verdict, r.verdict);
    if (r.reason) reasons.push(r.reason);
  }
  return { address, verdict, reasons, notes: [], ports: portEntries };
}

const SOURCES = {
  canary: { status: 'used', detail: 'fallback: a plain bind (SO_REUSEADDR, no SO_REUSEPORT) on every port, closed at once' },
  connect_probe: { status: 'used', detail: 'fallback: a TCP connect to every port whose state the canary alone cannot tell' },
  sock_diag: { status: 'unavailable', detail: 'fallback: no sockcheck binary (no listeners, no owners, no SO_REUSEPORT evidence)' },
  proc: { status: 'unavailable', detail: 'fallback: no sockcheck binary' },
};

async function check(addresses, ports) {
  const docs = [];
  for (const a of addresses) docs.push(await inspectAddress(a, ports));
  return {
    schema: 1,
    sockcheck: null,
    source: 'fallback',
    free: docs.every((d) => d.verdict === 'free'),
    ports,
    addresses: docs,
    sources: SOURCES,
  };
}

/** Bind the lease socket; resolves with the socket or an error code. */
function bindLease(address, port) {
  return new Promise((resolve) => {
    const family = net.isIPv6(address) ? 'udp6' : 'udp4';
    const socket = dgram.createSocket({ type: family, reuseAddr: false });
    socket.once('error', (e) => {
      try { socket.close(); } catch { /* not open */ }
      resolve({ error: e.code || String(e.message) });
    });
    socket.bind({ address, port, exclusive: true }, () => {
      socket.removeAllListeners('error');
      socket.on('error', () => { /* a bound, idle socket: nothing to report */ });
      socket.unref(); // a lease never keeps the process alive
      resolve({ socket });
    });
  });
}

/**
 * Try each address of the pool once. Returns {address, socket} or the list
 * of skipped candidates.
 */
async function tryPool(pool, ports, leasePort, signal) {
  const skipped = [];
  for (const address of pool) {
    if (signal?.aborted) return { aborted: true, skipped };
    if (held.has(address)) {
      skipped.push({ address, reason: 'leased', verdict: null, pids: [process.pid], message: `leased to this process (pid ${process.pid})` });
      continue;
    }
    const bound = await bindLease(address, leasePort);
    if (bound.error) {
      if (bound.error === 'EADDRINUSE') {
        skipped.push({ address, reason: 'leased', verdict: null, pids: [], message: `leased to another process (its lease socket ${hostPort(address, leasePort)}/udp is bound; pid unknown: fallback)` });
      } else if (bound.error === 'EADDRNOTAVAIL') {
        skipped.push({ address, reason: 'unavailable', verdict: 'unavailable', pids: [], message: `${address} is not a local address (EADDRNOTAVAIL)` });
      } else {
        skipped.push({ address, reason: 'conflict', verdict: 'conflict', pids: [], message: `the lease socket ${hostPort(address, leasePort)}/udp cannot be bound: ${bound.error}` });
      }
      continue;
    }
    // Holding the lease socket first makes the check and the lease one step:
    // no other fallback process can take this address meanwhile.
    let doc;
    try {
      doc = await inspectAddress(address, ports);
    } catch (e) {
      bound.socket.close();
      throw e;
    }
    if (doc.verdict === 'free') return { address, socket: bound.socket, skipped };
    bound.socket.close();
    skipped.push({
      address, reason: doc.verdict, verdict: doc.verdict, pids: [],
      message: doc.reasons.map((r) => r.message).join('; '),
    });
  }
  return { skipped };
}

/**
 * Lease the first free address of the pool (fallback). `waitMs`: poll this
 * long. Resolves {address, socket}; rejects SOCKCHECK_NO_FREE_ADDRESS with
 * the skipped candidates.
 */
async function acquire({ pool, ports, waitMs = 0, allowForeign = false, leasePort, signal }) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const got = await tryPool(pool, ports, leasePort, signal);
    if (got.aborted || signal?.aborted) {
      if (got.socket) got.socket.close();
      throw abortedError('sockcheck acquire (fallback)', signal);
    }
    if (got.socket) {
      held.set(got.address, got.socket);
      return got;
    }
    const hopelessReasons = allowForeign ? ['unavailable'] : ['foreign', 'unavailable'];
    const hopeless = got.skipped.length > 0 && got.skipped.every((s) => hopelessReasons.includes(s.reason));
    if (hopeless || Date.now() >= deadline) {
      const n = pool.length;
      let error = `no free address in the pool (${n} address${n === 1 ? '' : 'es'})`;
      if (hopeless) error += allowForeign ? ': none is local' : ': every address is foreign or not local, waiting cannot help';
      else if (waitMs > 0) error += ' before the wait deadline';
      return Promise.reject({ noFreeAddress: true, error, skipped: got.skipped, hopeless });
    }
    if (!(await sleep(Math.min(100, Math.max(1, deadline - Date.now())), signal))) {
      throw abortedError('sockcheck acquire (fallback)', signal);
    }
  }
}

/** Give a fallback lease back: true if this process held it. */
function release(address) {
  const parsed = parseAddress(address);
  const key = parsed ? parsed.address : String(address);
  const socket = held.get(key);
  if (!socket) return false;
  held.delete(key);
  try { socket.close(); } catch { /* already closed */ }
  return true;
}

/** Poll the canary until the address is free (fallback `wait`). */
async function waitFree({ address, ports, timeoutMs, allowForeign, signal }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const doc = await check([address], ports);
    if (signal?.aborted) throw abortedError('sockcheck wait (fallback)', signal);
    const verdict = doc.addresses[0].verdict;
    if (verdict === 'free') return { doc, outcome: 'free' };
    if (verdict === 'foreign' && !allowForeign) return { doc, outcome: 'foreign' };
    if (Date.now() >= deadline) return { doc, outcome: 'timeout' };
    if (!(await sleep(Math.min(100, Math.max(1, deadline - Date.now())), signal))) {
      throw abortedError('sockcheck wait (fallback)', signal);
    }
  }
}

module.exports = { DEFAULT_LEASE_PORT, leasePortOf, check, acquire, release, waitFree, held };
