// The package's duration grammar against the cases the binary is held to
// (tests/data/durations.json at the repo root; src/input/mod.rs runs the
// same list against the binary's parser): a duration the binary takes, the
// package takes with the same value, and one it refuses, the package
// refuses with a usage error, before anything runs. Run: node --test
// npm/sockcheck/tests/ (no addresses or ports: nothing is inspected).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import helpers from './helpers.cjs';

const require = createRequire(import.meta.url);
// The copy under test (installed, in npm/ci.sh): its lib/ directory.
const lib = path.dirname(require.resolve('sockcheck'));
const { durationMs, durationArg } = require(path.join(lib, 'util.cjs'));
const CASES = JSON.parse(fs.readFileSync(path.join(helpers.REPO, 'tests/data/durations.json'), 'utf8'));

test('durations parse as the binary parses them (tests/data/durations.json)', () => {
  assert.ok(CASES.length > 100, `${CASES.length} cases`);
  for (const c of CASES) {
    const what = JSON.stringify(c.text);
    if ('ms' in c) {
      const ms = durationMs(c.text, 'wait');
      // Exact but for the rounding of a double.
      assert.ok(Math.abs(ms - c.ms) <= 1e-6 + c.ms * 1e-15, `${what}: ${ms} ms, not ${c.ms}`);
      assert.equal(durationArg(c.text, 'wait'), c.text.trim(), what);
    } else {
      assert.equal(c.ok, false, `${what}: a case has ms or ok: false`);
      assert.throws(() => durationMs(c.text, 'wait'), (e) => {
        assert.equal(e.code, 'SOCKCHECK_USAGE', what);
        assert.ok(e.message.startsWith('wait: '), `${what}: ${e.message}`);
        assert.ok(!e.message.includes('\n'), `${what}: one line: ${JSON.stringify(e.message)}`);
        return true;
      });
    }
  }
});

test('a number is milliseconds', () => {
  assert.equal(durationMs(1500, 'wait'), 1500);
  assert.equal(durationArg(1500.2, 'wait'), '1501ms');
  for (const bad of [-1, NaN, Infinity]) {
    assert.throws(() => durationMs(bad, 'wait'), { code: 'SOCKCHECK_USAGE' });
  }
});
