// acquire() and run() with no pool and no SOCKCHECK_POOL lease from the
// default pool, 127.0.0.2-127.0.0.33, through the binary and the fallback.
// Run: node --test npm/sockcheck/tests/
// Resources: 127.61.3X.0/24 and TCP port 46130; the fallback's part runs in
// a network namespace of its own (unshare -rn), where 127.0.0.2-33 are its
// own too; skipped, with the reason, where user namespaces are not allowed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import helpers from './helpers.cjs';

delete process.env.SOCKCHECK_POOL;
delete process.env.SOCKCHECK_FALLBACK;

const api = await import('sockcheck');
const { acquire, run, DEFAULT_POOL } = api;
const { net: NET, ports: PORTS } = helpers.resources('defaults');
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'default-pool.mjs');

let dir;
let fake;
before(() => {
  dir = helpers.tempDir('defaults');
  // A stand-in binary that records its arguments and answers as sockcheck would.
  fake = path.join(dir, 'fake-sockcheck');
  fs.writeFileSync(fake, `#!/bin/sh
printf '%s\\n' "$@" > "${dir}/args.$1"
case $1 in
  acquire) echo '{"address":"${NET}.1","ports":[${PORTS[0]}],"owner":{"pid":1,"start_ticks":null}}' ;;
  run) echo 'sockcheck: leased ${NET}.1 for the command' >&2 ;;
esac
exit 0
`, { mode: 0o755 });
});
after(async () => {
  await helpers.killAll();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const argsOf = (sub) => fs.readFileSync(path.join(dir, `args.${sub}`), 'utf8').trimEnd().split('\n');

test('DEFAULT_POOL is the documented 32 addresses', () => {
  assert.equal(DEFAULT_POOL, '127.0.0.2-127.0.0.33');
});

test('the binary is given the default pool when none is given or set', async () => {
  const lease = await acquire({ bin: fake, ports: PORTS });
  assert.deepEqual(argsOf('acquire').slice(-2), ['--', DEFAULT_POOL]);
  await lease.release();
  await run(undefined, ['true'], { bin: fake, ports: PORTS, stdio: 'pipe' });
  const args = argsOf('run');
  assert.deepEqual(args.slice(args.indexOf('--') - 1, args.indexOf('--') + 2), [DEFAULT_POOL, '--', 'true']);
  // SOCKCHECK_POOL set: the binary reads it itself (and names it in its errors).
  process.env.SOCKCHECK_POOL = `${NET}.1-${NET}.2`;
  try {
    await (await acquire({ bin: fake, ports: PORTS })).release();
    assert.ok(!argsOf('acquire').includes(DEFAULT_POOL) && !argsOf('acquire').includes('--'), argsOf('acquire').join(' '));
  } finally {
    delete process.env.SOCKCHECK_POOL;
  }
  // run's env reaches the binary: its SOCKCHECK_POOL counts as set.
  await run(null, ['true'], { bin: fake, ports: PORTS, stdio: 'pipe', env: { SOCKCHECK_POOL: `${NET}.1` } });
  assert.ok(!argsOf('run').includes(DEFAULT_POOL), argsOf('run').join(' '));
});

test('the fallback leases from the default pool: 127.0.0.2-127.0.0.33, then none', async (t) => {
  const ip = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => fs.existsSync(p));
  const probe = spawnSync('unshare', ['-rn', 'true'], { encoding: 'utf8' });
  const why = !ip ? 'no ip(8) to bring up lo in a new network namespace'
    : probe.status !== 0 ? `no network namespace of our own (unshare -rn: ${(probe.stderr || probe.error?.code || '').trim()})` : null;
  if (why) {
    console.log(`# skipped: ${why}`);
    t.skip(why);
    return;
  }
  const env = { ...process.env, SOCKCHECK_FALLBACK: '1', PORTS: String(PORTS[0]) };
  delete env.SOCKCHECK_POOL;
  const r = spawnSync('unshare', ['-rn', 'sh', '-c', '"$1" link set lo up && shift && exec "$@"', 'sh', ip, process.execPath, FIXTURE],
    { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, `the child failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop());
  assert.deepEqual(out.addresses, Array.from({ length: 32 }, (_, i) => `127.0.0.${i + 2}`));
  assert.equal(out.error.code, 'SOCKCHECK_NO_FREE_ADDRESS');
  assert.equal(out.error.candidates, 32);
  assert.equal(out.run, '127.0.0.2');
});
