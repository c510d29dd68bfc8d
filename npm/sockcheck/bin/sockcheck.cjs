#!/usr/bin/env node
'use strict';
// `npx sockcheck …`: run the sockcheck binary ($SOCKCHECK_BIN, the platform
// package @sockcheck/linux-<arch>, or PATH) with this process's stdio, pass
// signals to it, and exit the way it exited.

const { spawn } = require('node:child_process');
const os = require('node:os');
const { resolveBinary, platformPackage } = require('../lib/resolve.cjs');

const DEPTH = Number(process.env.SOCKCHECK_LAUNCHER_DEPTH || 0);
const found = DEPTH < 2 ? resolveBinary() : null;
if (!found) {
  const pkg = platformPackage();
  const why = DEPTH >= 2
    ? 'the binary found leads back to this launcher'
    : pkg
      ? `${pkg} is not installed (were optional dependencies omitted?), SOCKCHECK_BIN is not set and sockcheck is not on PATH`
      : `there is no sockcheck binary for ${process.platform}-${process.arch}: set SOCKCHECK_BIN or put sockcheck on PATH`;
  process.stderr.write(`sockcheck: cannot find the sockcheck binary: ${why}.\n` +
    'The Node API (import from "sockcheck") still works, with a fallback that names no owners.\n');
  process.exit(127);
}

const child = spawn(found.path, process.argv.slice(2), {
  stdio: 'inherit',
  env: { ...process.env, SOCKCHECK_LAUNCHER_DEPTH: String(DEPTH + 1) },
});

const FORWARD = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'];
const handlers = new Map();
for (const sig of FORWARD) {
  const h = () => { try { child.kill(sig); } catch { /* gone */ } };
  handlers.set(sig, h);
  try { process.on(sig, h); } catch { /* not on this platform */ }
}

child.on('error', (e) => {
  process.stderr.write(`sockcheck: cannot run ${found.path}: ${e.code || e.message}\n`);
  process.exit(127);
});

child.on('exit', (code, signal) => {
  for (const [sig, h] of handlers) process.removeListener(sig, h);
  if (signal) {
    // Die of the same signal, so our parent sees what the binary did.
    try { process.kill(process.pid, signal); } catch { /* fall through */ }
    setTimeout(() => process.exit(128 + (os.constants.signals[signal] || 0)), 1000).unref();
    return;
  }
  process.exit(code ?? 1);
});
