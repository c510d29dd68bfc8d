'use strict';
/**
 * `sockcheck/get-port`: get-port's API (v7: `getPort({port, exclude, host})`
 * and `portNumbers(from, to)`), so that moving a test suite over is one
 * changed import. The difference is what a returned port means: get-port
 * checks that a port binds and hands it out, and any other process may take
 * it before the caller's server binds it; here the port is *leased*
 * (acquirePort): no other sockcheck user on this machine (binary or
 * fallback, any process, any user) gets it until this process exits or
 * calls `release(port)`.
 */

const { acquirePort, defaultPortRange } = require('./sockcheck.cjs');

/** The leases getPort took, by port: held until the process exits or release(port). */
const leases = new Map();

const isIterable = (v) => v != null && typeof v[Symbol.iterator] === 'function';

function portsOf(port) {
  if (port == null) return [];
  if (typeof port === 'number') return [port];
  if (isIterable(port)) return [...port];
  throw new TypeError('The `port` option must be a number or an iterable of numbers.');
}

function excludedOf(exclude) {
  if (exclude == null) return new Set();
  if (!isIterable(exclude)) throw new TypeError('The `exclude` option must be an iterable.');
  const set = new Set();
  for (const p of exclude) {
    if (typeof p !== 'number') throw new TypeError('Each item in the `exclude` option must be a port number.');
    if (!Number.isSafeInteger(p)) throw new TypeError(`Number ${p} in the \`exclude\` option is not a safe integer.`);
    set.add(p);
  }
  return set;
}

async function lease(range, host) {
  const l = await acquirePort({ range, host });
  leases.set(l.port, l);
  return l.port;
}

/**
 * Lease an available TCP port: the first preferred one (`port`) that is
 * free, else one of sockcheck's default range (15000-32767 minus the
 * kernel's ephemeral and reserved ports), never one of `exclude`. `host`:
 * the address the port must bind on (default 127.0.0.1; the lease covers
 * the port on every host). `reserve` and net.ListenOptions are accepted and
 * ignored: every port is held until the process exits or release(port).
 */
async function getPort(options = {}) {
  const { port, exclude, host } = options ?? {};
  const excluded = excludedOf(exclude);
  const preferred = [];
  for (const p of portsOf(port)) {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw new RangeError(`Port should be >= 0 and < 65536. Received ${p}.`);
    // 0 is "any port": what the default range gives.
    if (p !== 0 && !excluded.has(p) && !leases.has(p) && !preferred.includes(p)) preferred.push(p);
  }
  if (preferred.length > 0) {
    try {
      return await lease(preferred, host);
    } catch (e) {
      if (e?.code !== 'SOCKCHECK_NO_FREE_PORT' || e.hopeless) throw e;
    }
  }
  // get-port's "random port": a free port of the default range. Without
  // exclusions the binary computes the range itself.
  const skip = new Set([...excluded, ...preferred, ...leases.keys()]);
  return lease(skip.size ? defaultPortRange().filter((p) => !skip.has(p)) : undefined, host);
}

/**
 * The ports `from`...`to` (both in 1024...65535, `from` <= `to`), in order,
 * as get-port's portNumbers generates them.
 */
function portNumbers(from, to) {
  if (!Number.isInteger(from) || !Number.isInteger(to)) throw new TypeError('`from` and `to` must be integer numbers');
  if (from < 1024 || from > 65535) throw new RangeError('`from` must be between 1024 and 65535');
  if (to < 1024 || to > 65535) throw new RangeError('`to` must be between 1024 and 65535');
  if (to < from) throw new RangeError('`to` must be greater than or equal to `from`');
  return (function* ports() {
    for (let p = from; p <= to; p++) yield p;
  })();
}

/** Give a port getPort leased back. Resolves true if this process leased it through getPort. */
async function release(port) {
  const l = leases.get(port);
  if (!l) return false;
  leases.delete(port);
  await l.release();
  return true;
}

/**
 * get-port's clearLockedPorts: here, give back every port getPort leased in
 * this process (resolves when they are released).
 */
function clearLockedPorts() {
  const all = [...leases.values()];
  leases.clear();
  return Promise.all(all.map((l) => l.release())).then(() => undefined);
}

module.exports = { default: getPort, getPort, portNumbers, release, clearLockedPorts };
