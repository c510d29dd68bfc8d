'use strict';
/**
 * sockcheck-pool: lease loopback addresses for test servers from a Node
 * harness, through `sockcheck acquire --json` and `sockcheck release`.
 *
 * A lease belongs to a process (by default this one, so it lives exactly as
 * long as the test runner) and sockcheck reclaims it when that process dies,
 * so a crashed run never leaks addresses.
 *
 * @module sockcheck-pool
 */

const { execFile } = require('node:child_process');

/** What an exit status means, per subcommand. */
const EXIT = {
  acquire: {
    1: ['SOCKCHECK_NO_FREE_ADDRESS', 'no free address'],
    2: ['SOCKCHECK_USAGE', 'bad usage'],
    3: ['SOCKCHECK_INSPECTION_FAILED', 'inspection failed'],
  },
  release: {
    1: ['SOCKCHECK_NOT_LEASED', 'address not leased'],
    2: ['SOCKCHECK_USAGE', 'bad usage'],
    3: ['SOCKCHECK_INSPECTION_FAILED', 'inspection failed'],
  },
};

/**
 * A failed sockcheck invocation.
 *
 * `code` is one of `SOCKCHECK_NO_FREE_ADDRESS` (acquire exit 1),
 * `SOCKCHECK_NOT_LEASED` (release exit 1), `SOCKCHECK_USAGE` (exit 2),
 * `SOCKCHECK_INSPECTION_FAILED` (exit 3), `SOCKCHECK_FAILED` (any other
 * status or a signal), `SOCKCHECK_NOT_RUN` (the binary could not be started)
 * or `SOCKCHECK_BAD_OUTPUT` (exit 0 without the expected JSON).
 */
class SockcheckError extends Error {
  /**
   * @param {string} message
   * @param {object} info
   * @param {string} info.code
   * @param {number|null} info.exitStatus sockcheck's exit status (null if it did not exit normally)
   * @param {string} [info.stderr] sockcheck's stderr, trimmed (one line for a normal failure)
   * @param {string[]} [info.argv] the command that was run
   * @param {string|null} [info.signal] the signal that killed sockcheck
   * @param {Error} [info.cause]
   */
  constructor(message, { code, exitStatus, stderr = '', argv = [], signal = null, cause }) {
    super(message, cause ? { cause } : undefined);
    this.name = 'SockcheckError';
    this.code = code;
    this.exitStatus = exitStatus;
    this.stderr = stderr;
    this.argv = argv;
    this.signal = signal;
  }
}

/** Run `bin args...`; resolve with stdout, reject with a SockcheckError. */
function run(bin, sub, args) {
  const argv = [bin, sub, ...args];
  return new Promise((resolve, reject) => {
    execFile(bin, [sub, ...args], { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const text = String(stderr || '').trim();
      const line = text.split('\n').filter(Boolean).pop() || '';
      if (typeof err.code === 'number') {
        const [code, what] = EXIT[sub][err.code] || ['SOCKCHECK_FAILED', `exit status ${err.code}`];
        return reject(new SockcheckError(`sockcheck ${sub}: ${what}: ${line || '(no message)'}`,
          { code, exitStatus: err.code, stderr: text, argv, cause: err }));
      }
      if (err.signal) {
        return reject(new SockcheckError(`sockcheck ${sub}: killed by ${err.signal}`,
          { code: 'SOCKCHECK_FAILED', exitStatus: null, stderr: text, argv, signal: err.signal, cause: err }));
      }
      // Spawn failure (ENOENT, EACCES, ...): say how to point at the binary.
      reject(new SockcheckError(
        `sockcheck ${sub}: cannot run ${bin} (${err.code || err.message}); set SOCKCHECK_BIN or pass {bin}`,
        { code: 'SOCKCHECK_NOT_RUN', exitStatus: null, stderr: text, argv, cause: err }));
    });
  });
}

/** `--ports` value from an array or a "P,.." string. */
function portsArg(ports) {
  return Array.isArray(ports) ? ports.join(',') : String(ports);
}

/** `--wait` value: a number is milliseconds, a string is passed as is ("5s"). */
function waitArg(wait) {
  return typeof wait === 'number' ? `${Math.ceil(wait)}ms` : String(wait);
}

/**
 * @typedef {object} AcquireOptions
 * @property {string} [pool] range (`127.0.0.2-127.0.0.33`), CIDR or comma list; else `$SOCKCHECK_POOL`
 * @property {number[]|string} [ports] ports that must be free; else `$SOCKCHECK_PORTS`, else 9925,9926
 * @property {number|string} [wait] wait this long for a free address (ms, or a sockcheck duration like "5s")
 * @property {string} [stateDir] where leases live; else `$SOCKCHECK_STATE_DIR`, else sockcheck's default
 * @property {number} [owner] pid that owns the lease (default: `process.pid`)
 * @property {string} [bin] sockcheck binary (default: `$SOCKCHECK_BIN`, else `sockcheck` on PATH)
 */

/**
 * @typedef {object} Lease
 * @property {string} address the leased address, e.g. "127.0.0.5"
 * @property {number[]} ports the ports checked free on it
 * @property {{pid: number, start_ticks: number}} owner the process the lease belongs to
 * @property {string} stateDir the state directory holding the lease
 * @property {() => Promise<void>} release give the address back
 */

/**
 * Lease the first free address of a pool.
 *
 * Rejects with a {@link SockcheckError}: `code` `SOCKCHECK_NO_FREE_ADDRESS`
 * (exit status 1) when every address is leased or held, `SOCKCHECK_USAGE`
 * (exit status 2) on bad input, with sockcheck's stderr line in the message.
 *
 * @param {AcquireOptions} [opts]
 * @returns {Promise<Lease>}
 */
async function acquire(opts = {}) {
  const { pool, ports, wait, stateDir, owner = process.pid } = opts;
  const bin = binPath(opts);
  const args = ['--json', '--owner', String(owner)];
  if (ports != null) args.push('--ports', portsArg(ports));
  if (wait != null) args.push('--wait', waitArg(wait));
  if (stateDir != null) args.push('--state-dir', stateDir);
  if (pool != null) args.push('--', pool); // `--`: a pool can never be taken for an option

  const stdout = await run(bin, 'acquire', args);
  let doc;
  try {
    doc = JSON.parse(stdout);
  } catch {
    doc = null;
  }
  if (!doc || typeof doc.address !== 'string' || !Array.isArray(doc.ports)) {
    throw new SockcheckError(`sockcheck acquire: unexpected output: ${stdout.trim().slice(0, 200)}`,
      { code: 'SOCKCHECK_BAD_OUTPUT', exitStatus: 0, argv: [bin, 'acquire', ...args] });
  }
  const leaseDir = doc.state_dir || stateDir;
  return {
    address: doc.address,
    ports: doc.ports,
    owner: doc.owner,
    stateDir: leaseDir,
    release: () => release(doc.address, { stateDir: leaseDir, bin }),
  };
}

/**
 * Give a leased address back.
 *
 * Rejects with a {@link SockcheckError} `SOCKCHECK_NOT_LEASED` (exit status 1)
 * when the address was not leased.
 *
 * @param {string} address
 * @param {{stateDir?: string, bin?: string}} [opts]
 * @returns {Promise<void>}
 */
async function release(address, opts = {}) {
  const args = [];
  if (opts.stateDir != null) args.push('--state-dir', opts.stateDir);
  args.push('--', address);
  await run(binPath(opts), 'release', args);
}

function binPath(opts) {
  return opts.bin || process.env.SOCKCHECK_BIN || 'sockcheck';
}

module.exports = { acquire, release, SockcheckError };
