// The fallback's pool grammar and refusals against the cases the binary is
// held to (tests/data/pools.json at the repo root; tests/it/pool_cases.rs runs
// the same list against the binary). Run: node --test npm/sockcheck/tests/
// Resources: the pools of the cases (127.61.0.0/16 and addresses that are
// not local) on TCP port 46199, inspected only (a canary bind, closed at once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import helpers from './helpers.cjs';

process.env.SOCKCHECK_FALLBACK = '1';
delete process.env.SOCKCHECK_POOL;

const { scan, acquire } = await import('sockcheck');
const CASES = JSON.parse(fs.readFileSync(path.join(helpers.REPO, 'tests/data/pools.json'), 'utf8'));
const { ports: PORTS } = helpers.resources('pools');

test('the fallback parses and refuses pools as the binary does (tests/data/pools.json)', async (t) => {
  assert.ok(CASES.length > 50, `${CASES.length} cases`);
  for (const c of CASES) {
    await t.test(JSON.stringify(c.pool), async () => {
      if (c.ok) {
        const report = await scan(c.pool, { ports: PORTS });
        assert.deepEqual(report.addresses.map((a) => a.address), c.addresses);
        return;
      }
      // Refused before anything is inspected or leased, by scan and acquire alike.
      for (const call of [() => scan(c.pool, { ports: PORTS }), () => acquire({ pool: c.pool, ports: PORTS })]) {
        await assert.rejects(call(), (e) => {
          assert.equal(e.code, 'SOCKCHECK_USAGE');
          assert.ok(e.message.startsWith('POOL: '), e.message);
          assert.ok(!e.message.includes('\n'), `one line: ${JSON.stringify(e.message)}`);
          assert.ok(e.message.includes(c.error_contains), `${JSON.stringify(e.message)} lacks ${JSON.stringify(c.error_contains)}`);
          return true;
        });
      }
    });
  }
});

test('SOCKCHECK_POOL is parsed by the same rules, and named in the refusal', async () => {
  process.env.SOCKCHECK_POOL = '0.0.0.0/30';
  try {
    await assert.rejects(acquire({ ports: PORTS }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_USAGE');
      assert.equal(e.message, "SOCKCHECK_POOL: '0.0.0.0/30' holds 0.0.0.0, a wildcard; every address of a pool must be one a server can bind");
      return true;
    });
  } finally {
    delete process.env.SOCKCHECK_POOL;
  }
});
