// acquirePort through the fallback (SOCKCHECK_FALLBACK=1): on Linux a port
// lease is the binary's own port token (docs/leases.md), an abstract unix
// socket `\0sockcheck/v1/port/PORT` that answers with its info line, plus a
// SO_REUSEADDR canary on HOST:PORT. Run: node --test npm/sockcheck/tests/
// Resources: 127.85.2X.0/24, TCP ports 46820-46839.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import helpers from './helpers.cjs';

process.env.SOCKCHECK_FALLBACK = '1';
delete process.env.SOCKCHECK_STATE_DIR;

const api = await import('sockcheck');
const { acquirePort, releasePort, PortLease, SockcheckError } = api;
const { net: NET, from: P } = helpers.resources('portsFallback');
const HOST = `${NET}.1`;
const LINUX = process.platform === 'linux';
const skipNotLinux = LINUX ? false : `abstract unix names are Linux-only (${process.platform} holds a UDP socket)`;
const token = (port) => `\0sockcheck/v1/port/${port}`.padEnd(108, '\0');
const ASYNC_DISPOSE = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose');

after(helpers.killAll);

function listen(options, onConnection = () => {}) {
  return new Promise((resolve, reject) => {
    const server = net.createServer(onConnection);
    server.once('error', reject);
    server.listen(options, () => resolve(server));
  });
}

function readInfo(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: token(port) });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => {
      text += d;
      if (text.includes('\n')) resolve({ socket, line: JSON.parse(text.split('\n')[0]) });
    });
    socket.once('error', reject);
    setTimeout(() => reject(new Error(`no info line from port ${port} in 2s`)), 2000).unref();
  });
}

test('acquirePort leases the first free port of the range, as a PortLease', async () => {
  const lease = await acquirePort({ range: `${P}-${P + 3}`, host: HOST });
  try {
    assert.ok(lease instanceof PortLease);
    assert.equal(lease.port, P);
    assert.deepEqual(lease.ports, [P]);
    assert.equal(lease.host, HOST);
    assert.equal(lease.source, 'fallback');
    assert.deepEqual(lease.owner, { pid: process.pid, start_ticks: null });
    assert.equal(String(lease), String(P));
    if (LINUX) assert.deepEqual(lease.tokens, [`@sockcheck/v1/port/${P}`]);
    // A server binds it.
    const server = await listen({ host: HOST, port: lease.port });
    await new Promise((r) => server.close(r));
  } finally {
    await lease.release();
  }
  assert.equal(lease.released, true);
  await lease.release(); // safe twice
});

test('a port token answers with its info line, is taken for everyone, and ends with the lease', { skip: skipNotLinux }, async () => {
  const before = Math.floor(Date.now() / 1000);
  const lease = await acquirePort({ range: P + 1, host: HOST });
  const { socket, line } = await readInfo(P + 1);
  after(() => { socket.destroy(); return lease.release(); });
  assert.deepEqual(line, {
    sockcheck_lease: 1, address: HOST, kind: 'port', backend: 'fallback',
    owner: { pid: process.pid, start_ticks: null }, holders: [], uid: process.getuid(),
    acquired: line.acquired, ports: [P + 1],
  });
  assert.ok(line.acquired >= before && line.acquired <= Date.now() / 1000 + 1, `acquired ${line.acquired}`);
  // The padded name, as /proc/net/unix shows it (the listening socket: flags __SO_ACCEPTCON).
  const name = `@sockcheck/v1/port/${P + 1}`;
  const rows = fs.readFileSync('/proc/net/unix', 'latin1').split('\n')
    .filter((l) => l.includes(`${name}@`) && l.trim().split(/\s+/)[3] === '00010000');
  assert.equal(rows.length, 1, rows.join('\n'));
  assert.ok(rows[0].endsWith(` ${name.padEnd(108, '@')}`), rows[0]);
  await assert.rejects(listen({ path: token(P + 1) }), { code: 'EADDRINUSE' });
  // Per port, whatever the host: another host gets another port.
  const other = await acquirePort({ range: `${P + 1}-${P + 2}`, host: '127.0.0.1' });
  assert.equal(other.port, P + 2);
  await other.release();
  const closed = new Promise((resolve) => socket.once('close', resolve));
  await lease.release();
  await closed;
  (await listen({ path: token(P + 1) })).close();
});

test('another process skips leased ports and names their holder; count leases several', { skip: skipNotLinux }, async () => {
  const lease = await acquirePort({ range: `${P + 4}-${P + 7}`, host: HOST, count: 3 });
  try {
    assert.deepEqual(lease.ports, [P + 4, P + 5, P + 6]);
    assert.equal(lease.port, P + 4);
    const { line } = await helpers.startPortChild({ RANGE: `${P + 4}-${P + 7}`, HOST, COUNT: '2' });
    assert.equal(line.error, 'SOCKCHECK_NO_FREE_PORT', JSON.stringify(line));
    assert.deepEqual(line.skipped.map((s) => [s.port, s.reason, s.pids, s.message]), [
      [P + 4, 'leased', [process.pid], `leased to pid ${process.pid} (uid ${process.getuid()}, npm fallback)`],
      [P + 5, 'leased', [process.pid], `leased to pid ${process.pid} (uid ${process.getuid()}, npm fallback)`],
      [P + 6, 'leased', [process.pid], `leased to pid ${process.pid} (uid ${process.getuid()}, npm fallback)`],
    ]);
    const one = await helpers.startPortChild({ RANGE: `${P + 4}-${P + 7}`, HOST });
    assert.deepEqual(one.line.ports, [P + 7]);
  } finally {
    await lease.release();
  }
});

test('a port whose HOST:PORT is held (no token) is skipped as busy', async () => {
  const server = await listen({ host: HOST, port: P + 8, exclusive: true });
  try {
    const lease = await acquirePort({ range: `${P + 8}-${P + 9}`, host: HOST });
    assert.equal(lease.port, P + 9);
    await lease.release();
    await assert.rejects(acquirePort({ range: P + 8, host: HOST }), (e) => {
      assert.ok(e instanceof SockcheckError);
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_PORT');
      assert.equal(e.skipped[0].port, P + 8);
      assert.equal(e.skipped[0].reason, 'busy');
      assert.match(e.skipped[0].message, /EADDRINUSE/);
      assert.match(e.message, /not enough free ports/);
      return true;
    });
  } finally {
    server.close();
  }
});

test('wait: a released port is taken at once (the waiter wakes on its token closing)', async () => {
  const holder = await helpers.startPortChild({ RANGE: String(P + 10), HOST, HOLD_MS: '600' });
  assert.deepEqual(holder.line.ports, [P + 10]);
  const t0 = Date.now();
  const lease = await acquirePort({ range: P + 10, host: HOST, wait: '10s' });
  const gotAt = Date.now();
  const released = await holder.next();
  try {
    assert.equal(lease.port, P + 10);
    assert.ok(gotAt - t0 >= 300, `waited ${gotAt - t0}ms`);
    assert.ok(gotAt - released.at < 300, `leased ${gotAt - released.at}ms after the release`);
  } finally {
    await lease.release();
  }
});

test('a lease ends with its process (SIGKILL too)', async () => {
  const holder = await helpers.startPortChild({ RANGE: String(P + 11), HOST, HOLD_MS: 'forever' });
  assert.deepEqual(holder.line.ports, [P + 11]);
  await assert.rejects(acquirePort({ range: P + 11, host: HOST }), { code: 'SOCKCHECK_NO_FREE_PORT' });
  await helpers.killChild(holder.child);
  const lease = await acquirePort({ range: P + 11, host: HOST });
  await lease[ASYNC_DISPOSE]();
  assert.equal(lease.released, true);
});

test('abort: a waiting acquirePort rejects SOCKCHECK_ABORTED', async () => {
  const held = await acquirePort({ range: P + 12, host: HOST });
  try {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('enough')), 200);
    const t0 = Date.now();
    await assert.rejects(acquirePort({ range: P + 12, host: HOST, wait: '10s', signal: ac.signal }), { code: 'SOCKCHECK_ABORTED' });
    assert.ok(Date.now() - t0 < 1000, `${Date.now() - t0}ms`);
  } finally {
    await held.release();
  }
});

test('bad input is SOCKCHECK_USAGE; a host that is not local fails at once', async () => {
  for (const opts of [
    { range: `${P + 13}-${P + 12}` }, { range: '0' }, { range: '70000' }, { range: 'x' }, { range: '' },
    { range: P + 13, count: 2 }, { range: P + 13, count: 0 }, { range: P + 13, host: 'localhost' },
  ]) {
    await assert.rejects(acquirePort({ host: HOST, ...opts }), { code: 'SOCKCHECK_USAGE' }, JSON.stringify(opts));
  }
  const t0 = Date.now();
  await assert.rejects(acquirePort({ range: `${P + 13}-${P + 14}`, host: '192.0.2.1', wait: '10s' }), (e) => {
    assert.equal(e.code, 'SOCKCHECK_NO_FREE_PORT');
    assert.equal(e.hopeless, true);
    assert.equal(e.skipped[0].reason, 'unavailable');
    return true;
  });
  assert.ok(Date.now() - t0 < 1000, 'no wait: waiting cannot help');
});

test('releasePort gives a port back by number; not leased is SOCKCHECK_NOT_LEASED', async () => {
  const lease = await acquirePort({ range: P + 15, host: HOST });
  await releasePort(P + 15);
  (await acquirePort({ range: P + 15, host: HOST })).release();
  await assert.rejects(releasePort([P + 16]), { code: 'SOCKCHECK_NOT_LEASED' });
  await lease.release(); // already given back: still fine
});

test('the default range: 15000-32767 without the ephemeral and reserved ports', async () => {
  const range = api.defaultPortRange();
  assert.equal(range[0] >= 15000, true);
  assert.equal(range.at(-1) <= 32767, true);
  if (LINUX) {
    const [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    assert.ok(range.every((p) => p < lo || p > hi), 'no ephemeral port');
  }
  const lease = await acquirePort({ host: HOST });
  try {
    assert.ok(range.includes(lease.port), `${lease.port}`);
  } finally {
    await lease.release();
  }
});

test('a port token bound by another implementation (the padded name) is honoured', { skip: skipNotLinux }, async (t) => {
  const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'pass']).status === 0);
  if (!python) {
    t.skip('no python3 to bind an exact-length abstract name');
    return;
  }
  const port = P + 17;
  const child = spawn(python, ['-c', `
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b'\\0' + b'sockcheck/v1/port/${port}'.ljust(107, b'\\0'))
s.listen(128)
print('ready', flush=True)
time.sleep(60)
`], { stdio: ['ignore', 'pipe', 'inherit'] });
  helpers.children.add(child);
  try {
    await new Promise((resolve, reject) => {
      child.stdout.on('data', (d) => { if (String(d).includes('ready')) resolve(); });
      child.once('exit', (code) => reject(new Error(`python exited ${code}`)));
    });
    await assert.rejects(acquirePort({ range: port, host: HOST }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_PORT');
      assert.equal(e.skipped[0].reason, 'leased');
      assert.match(e.skipped[0].message, /^leased/);
      return true;
    });
  } finally {
    await helpers.killChild(child);
  }
  await (await acquirePort({ range: port, host: HOST })).release();
});
