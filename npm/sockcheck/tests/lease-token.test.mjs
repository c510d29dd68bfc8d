// Fallback leases on Linux are the binary's lease tokens (docs/leases.md):
// abstract unix sockets `\0sockcheck/v1/lease/ADDRESS` that answer with one
// info line. Run: node --test npm/sockcheck/tests/
// Resources: 127.61.1X.0/24, TCP ports 46110-46111; UDP 0.0.0.0:9924 for a
// moment (the old token's port, skipped when something else has it).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import fs from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import helpers from './helpers.cjs';

process.env.SOCKCHECK_FALLBACK = '1';
delete process.env.SOCKCHECK_LEASE_PORT;
delete process.env.SOCKCHECK_POOL;

const { acquire } = await import('sockcheck');
const { net: NET, ports: PORTS } = helpers.resources('token');
const LINUX = process.platform === 'linux';
const skipNotLinux = LINUX ? false : `abstract unix names are Linux-only (${process.platform} keeps the UDP token)`;
// The name every Node binds for the token: NUL-padded to the 108 bytes of
// sun_path (what Node 20 makes of any abstract name; see fallback.cjs).
const token = (address) => `\0sockcheck/v1/lease/${address}`.padEnd(108, '\0');

after(helpers.killAll);

/** Listen on a path; resolves the server, or rejects with the listen error. */
function listen(path, onConnection = () => {}) {
  return new Promise((resolve, reject) => {
    const server = net.createServer(onConnection);
    server.once('error', reject);
    server.listen({ path, backlog: 128 }, () => resolve(server));
  });
}

/** Connect to a token: resolves {socket, line} once its first line arrived. */
function readInfo(address) {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: token(address) });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => {
      text += d;
      if (text.includes('\n')) resolve({ socket, line: JSON.parse(text.split('\n')[0]) });
    });
    socket.once('error', reject);
    setTimeout(() => reject(new Error(`no info line from ${address} in 2s: ${JSON.stringify(text)}`)), 2000).unref();
  });
}

test('a UDP socket on 0.0.0.0:9924 no longer blocks a fallback lease', { skip: skipNotLinux }, async (t) => {
  // The fallback's old token was a UDP socket on ADDRESS:9924: one wildcard
  // UDP socket on 9924 made every address look leased.
  const udp = dgram.createSocket({ type: 'udp4', reuseAddr: false });
  const bound = await new Promise((resolve) => {
    udp.once('error', (e) => resolve(e.code));
    udp.bind({ address: '0.0.0.0', port: 9924, exclusive: true }, () => resolve('ok'));
  });
  if (bound !== 'ok') {
    const why = `UDP 0.0.0.0:9924 cannot be bound here (${bound}): something else has it`;
    console.log(`# skipped: ${why}`);
    t.skip(why);
    return;
  }
  try {
    const lease = await acquire({ pool: `${NET}.1-${NET}.2`, ports: PORTS });
    assert.equal(lease.address, `${NET}.1`);
    assert.equal(lease.token, `@sockcheck/v1/lease/${NET}.1`);
    await lease.release();
  } finally {
    udp.close();
  }
});

test('a lease token answers with its info line until the lease ends', { skip: skipNotLinux }, async () => {
  const before = Math.floor(Date.now() / 1000);
  const lease = await acquire({ pool: `${NET}.3`, ports: PORTS });
  const { socket, line } = await readInfo(lease.address);
  assert.deepEqual(line, {
    sockcheck_lease: 1, address: `${NET}.3`, kind: 'address', backend: 'fallback',
    owner: { pid: process.pid, start_ticks: null }, holders: [], uid: process.getuid(),
    acquired: line.acquired, ports: PORTS,
  });
  assert.ok(line.acquired >= before && line.acquired <= Date.now() / 1000 + 1, `acquired ${line.acquired}`);
  // The name is taken, for any socket of this network namespace.
  await assert.rejects(listen(token(lease.address)), { code: 'EADDRINUSE' });
  // Release closes every connection (a waiter wakes on that EOF) and frees the name.
  const closed = new Promise((resolve) => socket.once('close', resolve));
  const t0 = Date.now();
  await lease.release();
  await closed;
  assert.ok(Date.now() - t0 < 1000, `closed ${Date.now() - t0}ms after release`);
  (await listen(token(lease.address))).close();
});

test('a taken token names its holder, or says it is not answering yet', { skip: skipNotLinux }, async () => {
  const binaryLine = {
    sockcheck_lease: 1, address: `${NET}.4`, kind: 'address', backend: 'binary',
    owner: { pid: 4242, start_ticks: 123456 }, holders: [], uid: 1000, acquired: 1764936000, ports: PORTS,
  };
  const agent = await listen(token(`${NET}.4`), (c) => c.write(`${JSON.stringify(binaryLine)}\n`));
  const silent = await listen(token(`${NET}.5`), () => { /* accepts, never writes */ });
  try {
    const t0 = Date.now();
    await assert.rejects(acquire({ pool: `${NET}.4-${NET}.5`, ports: PORTS }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.deepEqual(e.candidates.map((c) => [c.address, c.reason, c.pids, c.message]), [
        [`${NET}.4`, 'leased', [4242], 'leased to pid 4242 (uid 1000, sockcheck binary)'],
        [`${NET}.5`, 'leased', [], 'leased (its token is bound but not yet answering)'],
      ]);
      return true;
    });
    assert.ok(Date.now() - t0 < 1500, `the silent holder cost ${Date.now() - t0}ms`);
  } finally {
    agent.close();
    silent.close();
  }
});

test('a lease never keeps its process alive', { skip: skipNotLinux }, async () => {
  // The child acquires, keeps a 1 s timer and nothing else: it must exit
  // then, with this test's connection to its token still open.
  const child = spawn(process.execPath, [helpers.LEASE_CHILD], {
    env: { ...process.env, POOL: `${NET}.6`, PORTS: PORTS.join(','), HOLD_MS: 'unreleased', LINGER_MS: '1000' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  helpers.children.add(child);
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve({ code, at: Date.now() })));
  const doc = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out.split('\n')[0]));
    });
    child.once('exit', () => reject(new Error(`the child exited before its line: ${out}`)));
  });
  assert.equal(doc.address, `${NET}.6`);
  const { socket, line } = await readInfo(doc.address);
  assert.equal(line.owner.pid, child.pid);
  const ended = new Promise((resolve) => socket.once('close', () => resolve(Date.now())));
  const timeout = setTimeout(() => helpers.killChild(child), 10_000);
  const { code, at } = await exited;
  clearTimeout(timeout);
  assert.equal(code, 0, 'the child exited by itself');
  assert.ok((await ended) - at < 1000, 'its token closed with it');
  (await listen(token(doc.address))).close();
});

test('the token is the name every Node binds: NUL-padded to the 108 bytes of sun_path', { skip: skipNotLinux }, async () => {
  const lease = await acquire({ pool: `${NET}.7`, ports: PORTS });
  try {
    const name = `@sockcheck/v1/lease/${NET}.7`;
    const lines = fs.readFileSync('/proc/net/unix', 'latin1').split('\n').filter((l) => l.includes(`${name}@`) || l.endsWith(` ${name}`));
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.ok(lines[0].endsWith(` ${name.padEnd(108, '@')}`), lines[0]);
  } finally {
    await lease.release();
  }
});

test('a token bound by another implementation (the padded name, docs/leases.md) is honoured and named', { skip: skipNotLinux }, async (t) => {
  // Bound by Python, as the binary binds it: the name padded with NULs to
  // the 107 bytes after the leading NUL, listening, without an info line.
  const python = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'pass']).status === 0);
  if (!python) {
    const why = 'no python3 to bind an exact-length abstract name';
    console.log(`# skipped: ${why}`);
    t.skip(why);
    return;
  }
  const address = `${NET}.8`;
  const child = spawn(python, ['-c', `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b'\\0' + b'sockcheck/v1/lease/${address}'.ljust(107, b'\\0'))
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
    await assert.rejects(acquire({ pool: address, ports: PORTS }), (e) => {
      assert.equal(e.code, 'SOCKCHECK_NO_FREE_ADDRESS');
      assert.equal(e.candidates[0].reason, 'leased');
      assert.match(e.candidates[0].message, /^leased/);
      return true;
    });
  } finally {
    await helpers.killChild(child);
  }
  // Gone with its holder: the address is free again.
  const lease = await acquire({ pool: address, ports: PORTS });
  await lease.release();
});
