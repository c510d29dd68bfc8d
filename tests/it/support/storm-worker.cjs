'use strict';
// One worker of the mixed lease storm (tests/it/lease_storm.rs): CYCLES times,
// lease an address of POOL through BACKEND (the sockcheck binary, or the npm
// package's plain-JS fallback), bind a real server on it, hold it a moment,
// close it and release the lease. Prints one line per event on stdout:
//
//   got ADDR          the backend handed ADDR to this process
//   double ADDR CODE  the server's bind failed: someone else has ADDR:PORT
//   done N            N cycles completed
//
// Usage: node storm-worker.cjs BACKEND POOL PORT CYCLES SOCKCHECK STATE_DIR FALLBACK_JS

const { execFileSync } = require('node:child_process');
const net = require('node:net');

const [backend, pool, port, cycles, sockcheck, stateDir, fallbackJs] = process.argv.slice(2);
const fallback = require(fallbackJs);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function binaryAcquire() {
  const args = ['--state-dir', stateDir, '--ports', port, 'acquire', pool, '--owner', String(process.pid), '--wait', '30s'];
  return execFileSync(sockcheck, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

function binaryRelease(address) {
  execFileSync(sockcheck, ['--state-dir', stateDir, 'release', address], { stdio: ['ignore', 'ignore', 'inherit'] });
}

function serve(address) {
  return new Promise((resolve) => {
    const server = net.createServer((c) => c.end('hi'));
    server.once('error', (e) => resolve({ error: e.code || e.message }));
    server.listen({ host: address, port: Number(port), exclusive: true }, () => resolve({ server }));
  });
}

(async () => {
  const list = pool.split(',');
  for (let n = 0; n < Number(cycles); n++) {
    let address;
    if (backend === 'binary') {
      address = binaryAcquire();
    } else {
      address = (await fallback.acquire({ pool: list, ports: [Number(port)], waitMs: 30000 })).address;
    }
    console.log(`got ${address}`);
    const { server, error } = await serve(address);
    if (error) console.log(`double ${address} ${error}`);
    await sleep(Math.floor(Math.random() * 15));
    if (server) await new Promise((resolve) => server.close(resolve));
    if (backend === 'binary') binaryRelease(address);
    else fallback.release(address);
  }
  console.log(`done ${cycles}`);
})().catch((e) => {
  console.log(`error ${String(e && e.message).split('\n')[0]}`);
  process.exit(1);
});
