'use strict';
// The fallback where no sockcheck binary exists (macOS, Windows, another CPU)
// or when SOCKCHECK_FALLBACK=1 forces it: a plain-bind canary on every port
// plus a connect probe, and leases held in the leaseholder process itself.
//
// On Linux a lease is the binary's own token (docs/leases.md): an AF_UNIX
// stream socket bound to the abstract name `\0sockcheck/v1/lease/ADDRESS`, so
// fallback and binary leases are one lease space: `bind` on a taken name
// fails with EADDRINUSE whoever (binary agent, another fallback, any user)
// holds it, and the kernel frees the name when the holder dies. Elsewhere
// (no abstract names) a lease is a UDP socket bound to ADDRESS:LEASE_PORT,
// which only other fallback processes honour.
//
// What it cannot do: name the owners of listeners (no pids), read
// SO_REUSEPORT, report lingering workers after `run`, or read SO_PEERCRED
// (the holder of a taken token is named by what its info line claims).

const dgram = require('node:dgram');
const fs = require('node:fs');
const net = require('node:net');
const { SockcheckError, parseAddress, sleep, abortedError } = require('./util.cjs');

/** Where a lease is an abstract unix token (shared with the binary): Linux, and Android's Linux kernel. */
const ABSTRACT_TOKENS = process.platform === 'linux' || process.platform === 'android';

/** The lease token's abstract name (docs/leases.md); ADDRESS is canonical text (util.cjs fromBig). */
const TOKEN_PREFIX = '\0sockcheck/v1/lease/';
/** The name as ss(8) and /proc/net/unix show it (without the padding below), for messages. */
const tokenShown = (address) => `@sockcheck/v1/lease/${address}`;

/**
 * The whole of sun_path. Node 20 (libuv 1.46) binds and connects an
 * abstract name with addrlen sizeof(sockaddr_un) whatever the string's
 * length (nodejs/node#50889): its `\0NAME` is the kernel name `\0NAME` with
 * NULs up to 108 bytes. So the token is that padded name for everyone
 * (docs/leases.md): the binary pads it too, and padding the string here
 * gives the same kernel name on every Node version.
 */
const SUN_PATH_BYTES = 108;
const padName = (name) => name.padEnd(SUN_PATH_BYTES, '\0');
const tokenPath = (address) => padName(TOKEN_PREFIX + address);

/** How long a taken token's holder has to write its info line (a real one writes it on accept)... */
const HOLDER_ANSWER_MS = 200;
/** ...and the least, when a wait's deadline is near. */
const MIN_HOLDER_ANSWER_MS = 25;
/** Accepted connections a token keeps open at once: a waiter each; more from one peer is abuse. */
const TOKEN_MAX_CONNECTIONS = 256;

/** The UDP port a fallback lease binds on its address where there are no abstract names. */
const DEFAULT_LEASE_PORT = 9924;

const SEVERITY = { free: 0, unavailable: 1, conflict: 2, busy: 3, foreign: 4 };
const worst = (a, b) => (SEVERITY[b] > SEVERITY[a] ? b : a);

/** Fallback leases held by this process: address → token ({close()}). */
const held = new Map();

/**
 * The UDP lease port, where leases are UDP sockets (not Linux). On Linux the
 * option and SOCKCHECK_LEASE_PORT are accepted and ignored: a lease is the
 * abstract token there. null on Linux.
 */
function leasePortOf(opts = {}, env = process.env) {
  if (ABSTRACT_TOKENS) return null;
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

/** The longest a connect probe waits (no deadline near). */
const PROBE_MS = 500;
/**
 * The shortest: on loopback the kernel completes a handshake inside
 * connect(2), and refuses one (RST) as fast, so only a dropped SYN (a full
 * accept queue) takes longer than an event-loop turn.
 */
const MIN_PROBE_MS = 50;

/**
 * One inspection's context: `deadline` (ms since the epoch, or null) bounds
 * every connect probe, so a wait ends within MIN_PROBE_MS or so of its
 * deadline; `wildcards` remembers, per port, what the sentinel said, so a
 * pass over a pool asks once per port, not once per address.
 */
function probeContext(deadline = null) {
  return { deadline, wildcards: new Map() };
}

function probeMs(ctx) {
  if (ctx.deadline == null) return PROBE_MS;
  return Math.min(PROBE_MS, Math.max(MIN_PROBE_MS, ctx.deadline - Date.now()));
}

/**
 * The connect probe: does anything listen on ADDRESS:PORT? `connected`,
 * `refused`, `timeout` or an error code.
 */
function connectProbe(address, port, ms) {
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
 * Whether a probe result means a listener. A listener whose accept queue is
 * full (one that never accepts fills it with a few connections, ours among
 * them, and they stay queued after we close) drops the SYN: the connect
 * times out instead of being refused. A socket that is bound but not
 * listening refuses at once.
 */
const listens = (result) => result === 'connected' || result === 'timeout';

/**
 * On Linux every 127/8 address is local, so a wildcard listener shows on a
 * sentinel address of the same port too: that tells `foreign` from `busy`.
 */
function sentinelFor(address) {
  if (process.platform !== 'linux' || net.isIPv4(address) !== true || !address.startsWith('127.')) return null;
  return address === '127.255.255.254' ? '127.255.255.253' : '127.255.255.254';
}

/**
 * Whether a wildcard listener covers PORT, by its sentinel address: the
 * canary fails there too and something listens. Asked once per port and
 * context (127.255.255.254 serves every address but itself).
 */
function wildcardOn(sentinel, port, ctx) {
  const key = `${sentinel}:${port}`;
  if (!ctx.wildcards.has(key)) {
    ctx.wildcards.set(key, (async () => {
      const c = await canary(sentinel, port);
      if (c.result !== 'EADDRINUSE') return null;
      const probe = await connectProbe(sentinel, port, probeMs(ctx));
      return listens(probe.result) ? { sentinel, canary: c, connect: probe } : null;
    })());
  }
  return ctx.wildcards.get(key);
}

/** One port of one address: canary, then the wildcard sentinel or the connect probe. */
async function inspectPort(address, port, ctx) {
  const entry = { port, canary: await canary(address, port), listeners: [] };
  const c = entry.canary.result;
  let verdict = 'free';
  let reason = null;
  if (c === 'ok') {
    entry.connect = await connectProbe(address, port, probeMs(ctx));
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
    // A wildcard first: it takes every address's port (a bind beside it
    // fails whatever else is there), and probing each address of a pool
    // against a listener that does not accept would cost a timeout each.
    const sentinel = sentinelFor(address);
    const wildcard = sentinel ? await wildcardOn(sentinel, port, ctx) : null;
    if (wildcard) {
      entry.sentinel = { address: sentinel, canary: wildcard.canary, connect: wildcard.connect };
      verdict = 'foreign';
      const accepting = wildcard.connect.result === 'connected' ? 'answers too' : 'is in use and its listener does not accept';
      reason = { code: 'wildcard', message: `a wildcard listener on port ${port} covers ${address} (${sentinel}:${port} ${accepting}; owner unknown: fallback)` };
    } else {
      entry.connect = await connectProbe(address, port, probeMs(ctx));
      if (entry.connect.result === 'connected') {
        verdict = 'busy';
        reason = { code: 'listener', message: `${hostPort(address, port)} is in use and accepts connections (owner unknown: fallback)` };
      } else if (listens(entry.connect.result)) {
        verdict = 'busy';
        reason = { code: 'listener', message: `${hostPort(address, port)} is in use by a listener that does not accept (its accept queue is full; owner unknown: fallback)` };
      } else {
        verdict = 'conflict';
        reason = { code: 'canary_failed', message: `the canary bind on ${hostPort(address, port)} fails with EADDRINUSE, but nothing listens there (a bound socket that is not listening?)` };
      }
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
async function inspectAddress(text, ports, ctx = probeContext()) {
  const parsed = parseAddress(text);
  if (!parsed) {
    throw new SockcheckError(`sockcheck (fallback): '${text}' is not an IP address`, { code: 'SOCKCHECK_USAGE' });
  }
  const { address } = parsed;
  let verdict = 'free';
  const reasons = [];
  const portEntries = [];
  for (const port of ports) {
    const r = await inspectPort(address, port, ctx);
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

/** The check document for addresses; `deadline` (ms since the epoch) bounds its probes. */
async function check(addresses, ports, deadline = null) {
  const docs = [];
  const ctx = probeContext(deadline);
  for (const a of addresses) docs.push(await inspectAddress(a, ports, ctx));
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

/**
 * Take the lease token of `address`: the abstract unix token on Linux, the
 * UDP socket on ADDRESS:leasePort elsewhere. Resolves {token} (token.close()
 * ends the lease) or {error: CODE}. Nothing here keeps the process alive.
 */
function bindToken(address, info, leasePort) {
  return ABSTRACT_TOKENS ? bindAbstractToken(address, info) : bindUdpToken(address, leasePort);
}

/**
 * Listen on the abstract token. Every connection gets the info line and is
 * kept open until the lease ends, then destroyed: a waiting acquirer (the
 * binary) wakes on that EOF. What a peer writes is never read as a command
 * (the fallback has no `release` over the token); it is drained only so a
 * peer that hangs up is noticed and its socket closed.
 */
function bindAbstractToken(address, info) {
  return bindAbstractTokenAt(tokenPath(address), info);
}

/** bindAbstractToken on any padded abstract name (port tokens too). */
function bindAbstractTokenAt(path, info) {
  return new Promise((resolve) => {
    const line = `${JSON.stringify(info)}\n`;
    const connections = new Set();
    const server = net.createServer((conn) => {
      conn.unref();
      connections.add(conn);
      conn.on('error', () => { /* the peer went away: nothing to report */ });
      conn.on('close', () => connections.delete(conn));
      conn.resume();
      conn.write(line);
    });
    server.maxConnections = TOKEN_MAX_CONNECTIONS;
    server.once('error', (e) => resolve({ error: e.code || String(e.message) }));
    server.listen({ path, backlog: 128 }, () => {
      server.removeAllListeners('error');
      server.on('error', () => { /* a listening token: accept errors are the peer's */ });
      server.unref(); // a lease never keeps the process alive
      resolve({
        token: {
          close() {
            server.close();
            for (const conn of connections) conn.destroy();
            connections.clear();
          },
        },
      });
    });
  });
}

/** The UDP token (no abstract names): bound, never connected, without SO_REUSEADDR. */
function bindUdpToken(address, port) {
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
      resolve({ token: { close() { try { socket.close(); } catch { /* closed */ } } } });
    });
  });
}

const BACKENDS = { binary: 'sockcheck binary', fallback: 'npm fallback' };

/**
 * Who holds a taken abstract token: connect, read its info line (within
 * `ms`), and say it in one phrase. The pid and uid are what the holder
 * claims: Node cannot read SO_PEERCRED, which the binary names them from.
 */
function tokenHolder(address, ms) {
  return tokenHolderAt(tokenPath(address), ms);
}

/** tokenHolder on any padded abstract name (port tokens too). */
function tokenHolderAt(path, ms) {
  return new Promise((resolve) => {
    const socket = net.connect({ path });
    let text = '';
    const done = (holder) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(holder);
    };
    const notAnswering = { pids: [], message: 'leased (its token is bound but not yet answering)' };
    const timer = setTimeout(() => done(notAnswering), ms);
    socket.setEncoding('utf8');
    socket.on('data', (d) => {
      text += d;
      const nl = text.indexOf('\n');
      if (nl >= 0 || text.length > 4096) done(describeHolder(nl >= 0 ? text.slice(0, nl) : text));
    });
    // ECONNREFUSED: bound, not listening yet (a binary acquirer between bind
    // and handing the token to its agent). EOF before a line: the same, or
    // a lease ending just now.
    socket.once('error', () => done(notAnswering));
    socket.once('end', () => done(text ? describeHolder(text) : notAnswering));
  });
}

/** `leased to pid 4242 (uid 1000, sockcheck binary)` from an info line. */
function describeHolder(line) {
  let info = null;
  try { info = JSON.parse(line); } catch { /* not JSON */ }
  const pid = info?.owner?.pid;
  if (!info || info.sockcheck_lease !== 1 || !Number.isInteger(pid)) {
    return { pids: [], message: 'leased (its token answers with something that is not a sockcheck lease line)' };
  }
  const holders = (Array.isArray(info.holders) ? info.holders : [])
    .map((h) => (Number.isInteger(h) ? h : h?.pid)).filter((h) => Number.isInteger(h) && h !== pid);
  const who = [Number.isInteger(info.uid) ? `uid ${info.uid}` : null,
    BACKENDS[info.backend] ?? (typeof info.backend === 'string' ? `backend ${JSON.stringify(info.backend).slice(0, 40)}` : null)]
    .filter(Boolean).join(', ');
  const also = holders.length ? `; held on by pid ${holders.join(',')}` : '';
  return { pids: [pid, ...holders], message: `leased to pid ${pid}${who ? ` (${who})` : ''}${also}` };
}

/**
 * Try each address of the pool once. Returns {address, token} or the list
 * of skipped candidates. `deadline` (ms since the epoch, or null) bounds
 * every probe and every wait for a holder's answer.
 */
async function tryPool(pool, ports, leasePort, signal, deadline) {
  const skipped = [];
  const ctx = probeContext(deadline);
  const owner = { pid: process.pid, start_ticks: null };
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  for (const address of pool) {
    if (signal?.aborted) return { aborted: true, skipped };
    if (held.has(address)) {
      skipped.push({ address, reason: 'leased', verdict: null, pids: [process.pid], message: `leased to this process (pid ${process.pid})` });
      continue;
    }
    const info = {
      sockcheck_lease: 1, address, kind: 'address', backend: 'fallback', owner, holders: [], uid,
      acquired: Math.floor(Date.now() / 1000), ports,
    };
    const bound = await bindToken(address, info, leasePort);
    if (bound.error) {
      const what = ABSTRACT_TOKENS ? `the lease token ${tokenShown(address)}` : `the lease socket ${hostPort(address, leasePort)}/udp`;
      if (bound.error === 'EADDRINUSE' && ABSTRACT_TOKENS) {
        const ms = deadline == null ? HOLDER_ANSWER_MS
          : Math.min(HOLDER_ANSWER_MS, Math.max(MIN_HOLDER_ANSWER_MS, deadline - Date.now()));
        const holder = await tokenHolder(address, ms);
        skipped.push({ address, reason: 'leased', verdict: null, ...holder });
      } else if (bound.error === 'EADDRINUSE') {
        skipped.push({ address, reason: 'leased', verdict: null, pids: [], message: `leased to another process (${what} is bound; pid unknown: fallback)` });
      } else if (bound.error === 'EADDRNOTAVAIL') {
        skipped.push({ address, reason: 'unavailable', verdict: 'unavailable', pids: [], message: `${address} is not a local address (EADDRNOTAVAIL)` });
      } else {
        skipped.push({ address, reason: 'conflict', verdict: 'conflict', pids: [], message: `${what} cannot be bound: ${bound.error}` });
      }
      continue;
    }
    // Holding the token first makes the check and the lease one step: no
    // other acquirer can take this address meanwhile.
    let doc;
    try {
      doc = await inspectAddress(address, ports, ctx);
    } catch (e) {
      bound.token.close();
      throw e;
    }
    if (doc.verdict === 'free') return { address, token: bound.token, skipped };
    bound.token.close();
    skipped.push({
      address, reason: doc.verdict, verdict: doc.verdict, pids: [],
      message: doc.reasons.map((r) => r.message).join('; '),
    });
  }
  return { skipped };
}

/**
 * Lease the first free address of the pool (fallback). `waitMs`: poll this
 * long. Resolves {address, token}; rejects SOCKCHECK_NO_FREE_ADDRESS with
 * the skipped candidates.
 */
async function acquire({ pool, ports, waitMs = 0, allowForeign = false, leasePort, signal }) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    // Without a wait, one pass with the probes' full time; with one, no
    // probe outlasts the deadline by more than MIN_PROBE_MS.
    const got = await tryPool(pool, ports, leasePort, signal, waitMs > 0 ? deadline : null);
    if (got.aborted || signal?.aborted) {
      if (got.token) got.token.close();
      throw abortedError('sockcheck acquire (fallback)', signal);
    }
    if (got.token) {
      held.set(got.address, got.token);
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
  const token = held.get(key);
  if (!token) return false;
  held.delete(key);
  token.close();
  return true;
}

/** Poll the canary until the address is free (fallback `wait`). */
async function waitFree({ address, ports, timeoutMs, allowForeign, signal }) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const doc = await check([address], ports, deadline);
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

module.exports = {
  DEFAULT_LEASE_PORT, ABSTRACT_TOKENS, tokenShown, leasePortOf, check, acquire, release, waitFree, held,
  // For the port leases (fallback-ports.cjs): the same token machinery on other names.
  padName, bindAbstractTokenAt, tokenHolderAt, canary, hostPort, HOLDER_ANSWER_MS, MIN_HOLDER_ANSWER_MS,
};
