'use strict';
// Port leases in plain Node (the fallback of acquirePort), with the binary's
// guarantees on Linux.
//
// On Linux a port lease is the binary's own token (docs/leases.md): an
// AF_UNIX stream socket bound to the abstract name `\0sockcheck/v1/port/PORT`
// (NUL-padded to the 108 bytes of sun_path), listening and answering with the
// info line, held by this process. One port, one token, whatever the host, so
// fallback and binary acquirers (any user) never lease the same port, and
// the kernel frees the name when this process dies. After taking the token,
// a canary binds HOST:PORT as a server does (SO_REUSEADDR on) and closes: the
// port is leased only if that bind succeeds.
//
// Elsewhere (no abstract names) the token is a UDP socket bound, without
// SO_REUSEADDR, to 0.0.0.0:PORT and held: only other fallback processes
// honour it, and any UDP socket on the port blocks it. Weaker, and said so.

const dgram = require('node:dgram');
const net = require('node:net');
const { SockcheckError, sleep, abortedError } = require('./util.cjs');
const fallback = require('./fallback.cjs');

const { ABSTRACT_TOKENS, padName, bindAbstractTokenAt, tokenHolderAt, canary, hostPort } = fallback;

/** The port token's abstract name (docs/leases.md). */
const portTokenPath = (port) => padName(`\0sockcheck/v1/port/${port}`);
/** The name as ss(8) and /proc/net/unix show it (without the padding), for messages. */
const portTokenShown = (port) => `@sockcheck/v1/port/${port}`;

/** Port leases held by this process: port → {token, host}. */
const heldPorts = new Map();

/** How many taken tokens a waiter connects to, to wake on their EOF (a release). */
const WAKE_TOKENS = 32;
/** The longest a waiter sleeps without a token closing: a busy port (no token) is polled this often. */
const POLL_MS = 250;
/** How many holders a failure asks for their info line (in parallel), and for how long. */
const DESCRIBE_MAX = 32;
const DESCRIBE_MS = 200;

/** The UDP token off Linux: 0.0.0.0:PORT, bound without SO_REUSEADDR and held. */
function bindUdpPortToken(port) {
  return new Promise((resolve) => {
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    socket.once('error', (e) => {
      try { socket.close(); } catch { /* not open */ }
      resolve({ error: e.code || String(e.message) });
    });
    socket.bind({ address: '0.0.0.0', port, exclusive: true }, () => {
      socket.removeAllListeners('error');
      socket.on('error', () => { /* a bound, idle socket: nothing to report */ });
      socket.unref();
      resolve({ token: { close() { try { socket.close(); } catch { /* closed */ } } } });
    });
  });
}

function bindPortToken(port, info) {
  return ABSTRACT_TOKENS ? bindAbstractTokenAt(portTokenPath(port), info) : bindUdpPortToken(port);
}

const uid = () => (typeof process.getuid === 'function' ? process.getuid() : null);

/**
 * One pass over the candidates: take tokens and run canaries until `count`
 * ports are leased. Resolves {got: [{port, token}], skipped}; a pass that
 * falls short gives back what it took (holding some while waiting for the
 * rest would let two acquirers of several ports block each other).
 */
async function pass(candidates, host, count, signal) {
  const got = [];
  const skipped = [];
  const owner = { pid: process.pid, start_ticks: null };
  for (const port of candidates) {
    if (got.length === count) break;
    if (signal?.aborted) break;
    if (heldPorts.has(port)) {
      skipped.push({ port, reason: 'leased', pids: [process.pid], message: `leased to this process (pid ${process.pid})` });
      continue;
    }
    const info = {
      sockcheck_lease: 1, address: host, kind: 'port', backend: 'fallback', owner, holders: [], uid: uid(),
      acquired: Math.floor(Date.now() / 1000), ports: [port],
    };
    const bound = await bindPortToken(port, info);
    if (bound.error) {
      if (bound.error === 'EADDRINUSE') {
        skipped.push({ port, reason: 'leased', pids: [], message: null, taken: true });
      } else {
        const what = ABSTRACT_TOKENS ? `the lease token ${portTokenShown(port)}` : `the lease socket 0.0.0.0:${port}/udp`;
        skipped.push({ port, reason: 'conflict', pids: [], message: `${what} cannot be bound: ${bound.error}` });
      }
      continue;
    }
    // The token first: the canary and the lease are one step, no other
    // acquirer can take the port in between.
    const c = await canary(host, port);
    if (c.result === 'ok') {
      got.push({ port, token: bound.token });
      continue;
    }
    bound.token.close();
    if (c.result === 'EADDRNOTAVAIL') {
      skipped.push({ port, reason: 'unavailable', pids: [], message: `${host} is not a local address (EADDRNOTAVAIL)` });
      break; // the same for every port
    }
    skipped.push({
      port, reason: c.result === 'EADDRINUSE' ? 'busy' : 'conflict', pids: [],
      message: `the canary bind on ${hostPort(host, port)} fails with ${c.result}${c.result === 'EADDRINUSE' ? ' (owner unknown: fallback)' : ''}`,
    });
  }
  if (got.length < count || signal?.aborted) {
    for (const g of got) g.token.close();
    return { got: [], skipped };
  }
  return { got, skipped };
}

/**
 * Sleep until one of the taken tokens closes (its lease ended), `POLL_MS`
 * passes, or the deadline. Resolves false if aborted.
 */
function waitForRelease(skipped, deadline, signal) {
  const taken = ABSTRACT_TOKENS ? skipped.filter((s) => s.taken).slice(0, WAKE_TOKENS) : [];
  return new Promise((resolve) => {
    const sockets = [];
    let done = false;
    const finish = (value) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      for (const s of sockets) s.destroy();
      resolve(value);
    };
    const onAbort = () => finish(false);
    if (signal?.aborted) return finish(false);
    signal?.addEventListener('abort', onAbort, { once: true });
    // A little jitter, so waiters woken by one release do not all retry in step.
    const ms = Math.max(1, Math.min(POLL_MS, deadline - Date.now())) + Math.floor(Math.random() * 10);
    const timer = setTimeout(() => finish(true), ms);
    for (const s of taken) {
      const socket = net.connect({ path: portTokenPath(s.port) });
      sockets.push(socket);
      socket.resume();
      // Refused or closed: the token is gone or going; retry now.
      socket.once('error', () => finish(true));
      socket.once('close', () => finish(true));
    }
  });
}

/** Name the holders of taken tokens (what their info lines claim), for the error. */
async function describe(skipped) {
  const taken = skipped.filter((s) => s.taken);
  await Promise.all(taken.map(async (s, i) => {
    if (i >= DESCRIBE_MAX || !ABSTRACT_TOKENS) {
      s.message = ABSTRACT_TOKENS ? `leased (its token ${portTokenShown(s.port)} is bound)`
        : `leased to another fallback process (0.0.0.0:${s.port}/udp is bound; pid unknown: fallback)`;
      return;
    }
    const holder = await tokenHolderAt(portTokenPath(s.port), DESCRIBE_MS);
    s.pids = holder.pids;
    s.message = holder.message;
  }));
  return skipped.map(({ taken, ...s }) => s);
}

/**
 * Lease `count` ports of `candidates` for `host` (fallback). Resolves the
 * ports; rejects {noFreePort, error, skipped, hopeless} when not enough are
 * free by the deadline, or SOCKCHECK_ABORTED.
 */
async function acquirePorts({ candidates, host, count = 1, waitMs = 0, signal }) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    if (signal?.aborted) throw abortedError('sockcheck acquire-port (fallback)', signal);
    const { got, skipped } = await pass(candidates, host, count, signal);
    if (signal?.aborted) throw abortedError('sockcheck acquire-port (fallback)', signal);
    if (got.length === count) {
      for (const g of got) heldPorts.set(g.port, { token: g.token, host });
      return got.map((g) => g.port);
    }
    const hopeless = skipped.some((s) => s.reason === 'unavailable');
    if (hopeless || Date.now() >= deadline) {
      const n = candidates.length;
      let error = `not enough free ports: ${count} wanted, of ${n} port${n === 1 ? '' : 's'} for ${host}`;
      if (hopeless) error += `: ${host} is not a local address, waiting cannot help`;
      else if (waitMs > 0) error += ' before the wait deadline';
      throw { noFreePort: true, error, skipped: await describe(skipped), hopeless };
    }
    if (!(await waitForRelease(skipped, deadline, signal))) {
      throw abortedError('sockcheck acquire-port (fallback)', signal);
    }
  }
}

/** Give a fallback port lease back: true if this process held it. */
function releasePort(port) {
  const h = heldPorts.get(port);
  if (!h) return false;
  heldPorts.delete(port);
  h.token.close();
  return true;
}

module.exports = { acquirePorts, releasePort, heldPorts, portTokenShown, SockcheckError };
