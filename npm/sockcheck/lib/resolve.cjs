'use strict';
// Where the sockcheck binary is: $SOCKCHECK_BIN, then the platform package
// (@sockcheck/linux-<arch>), then `sockcheck` on PATH. Shared by the API and
// the `npx sockcheck` launcher.

const fs = require('node:fs');
const path = require('node:path');

/** The platform packages that exist, by `${process.platform}-${process.arch}`. */
const PLATFORM_PACKAGES = {
  'linux-x64': '@sockcheck/linux-x64',
  'linux-arm64': '@sockcheck/linux-arm64',
};

/** The platform package for this (or the given) platform and CPU, or null. */
function platformPackage(platform = process.platform, arch = process.arch) {
  return PLATFORM_PACKAGES[`${platform}-${arch}`] || null;
}

const LAUNCHER = path.resolve(__dirname, '../bin/sockcheck.cjs');

function isExecutableFile(file) {
  try {
    if (!fs.statSync(file).isFile()) return false;
    if (process.platform !== 'win32') fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * A `sockcheck` on PATH that is a node script (an npm bin shim, this
 * package's launcher or another copy of it) is not the binary: running it
 * would come back here.
 */
function isNodeLauncher(file) {
  let real;
  try {
    real = fs.realpathSync(file);
  } catch {
    return true;
  }
  if (real === LAUNCHER || /[\\/]sockcheck[\\/]bin[\\/]sockcheck\.c?js$/.test(real)) return true;
  let head = '';
  try {
    const fd = fs.openSync(real, 'r');
    try {
      const buf = Buffer.alloc(128);
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      head = buf.subarray(0, n).toString('latin1');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return true;
  }
  return head.startsWith('#!') && /\bnode\b/.test(head.split('\n')[0]);
}

/** `sockcheck` on PATH (not a node launcher), or null. */
function findOnPath(env = process.env) {
  const dirs = String(env.PATH || env.Path || '').split(path.delimiter).filter(Boolean);
  const names = process.platform === 'win32'
    ? String(env.PATHEXT || '.EXE').split(';').filter(Boolean).map((ext) => `sockcheck${ext.toLowerCase()}`)
    : ['sockcheck'];
  for (const dir of dirs) {
    for (const name of names) {
      const file = path.resolve(dir, name);
      if (isExecutableFile(file) && !isNodeLauncher(file)) return file;
    }
  }
  return null;
}

/** The binary inside the platform package, if that package is installed. */
function findInPackage() {
  const pkg = platformPackage();
  if (!pkg) return null;
  let file;
  try {
    file = require.resolve(`${pkg}/bin/sockcheck`);
  } catch {
    return null;
  }
  if (!fs.existsSync(file)) return null;
  if (!isExecutableFile(file)) {
    // A package manager that dropped the mode bits: restore them if we may.
    try {
      fs.chmodSync(file, 0o755);
    } catch {
      return null;
    }
    if (!isExecutableFile(file)) return null;
  }
  return file;
}

/**
 * Find the sockcheck binary.
 *
 * @param {{bin?: string, env?: NodeJS.ProcessEnv}} [opts]
 * @returns {{path: string, source: 'option'|'env'|'package'|'path'} | null}
 */
function resolveBinary(opts = {}) {
  const env = opts.env || process.env;
  if (opts.bin) return { path: opts.bin, source: 'option' };
  if (env.SOCKCHECK_BIN) return { path: env.SOCKCHECK_BIN, source: 'env' };
  const inPackage = findInPackage();
  if (inPackage) return { path: inPackage, source: 'package' };
  const onPath = findOnPath(env);
  if (onPath) return { path: onPath, source: 'path' };
  return null;
}

module.exports = { resolveBinary, platformPackage, PLATFORM_PACKAGES, findOnPath };
