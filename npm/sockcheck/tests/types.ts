// Type-checked, never run: the API as an ESM TypeScript harness uses it.
// `tsc --noEmit` must pass on it (npm/ci.sh checks it against the installed
// package too).
import {
  acquire, check, scan, waitFree, run, release, resolveBackend, SockcheckError, DEFAULT_POOL,
  type Lease, type CheckReport, type RunResult, type SkippedAddress, type Verdict, type TcpState,
  acquirePort, releasePort, defaultPortRange, type PortLease,
} from 'sockcheck';
import getPort, { portNumbers, release as releasePortOf, clearLockedPorts } from 'sockcheck/get-port';

async function harness(signal: AbortSignal): Promise<void> {
  // `await using` releases the lease at the end of the block.
  await using lease = await acquire({ pool: '127.0.0.2-127.0.0.33', ports: [9925, 9926], wait: '30s', signal });
  const address: string = lease.address;
  const ports: number[] = lease.ports;
  const source: 'sockcheck' | 'fallback' = lease.source;
  const token: string | undefined = lease.token; // the fallback's lease token, on Linux
  console.log(address, ports, source, `${lease}`, token, DEFAULT_POOL.length);

  const report: CheckReport = await check([address], { ports: '9925,9926' });
  const verdicts: Verdict[] = report.addresses.map((a) => a.verdict);
  const pids: (number | null)[] = report.addresses.flatMap((a) => a.ports.flatMap((p) => p.listeners.flatMap((l) => l.owners.map((o) => o.pid))));
  console.log(verdicts, pids, report.free, report.source);
  // Enums from the schema: canary results, TCP states.
  const inUse: boolean = report.addresses.some((a) => a.ports.some((p) => p.canary.result === 'EADDRINUSE'));
  const waiting: number = report.addresses[0]?.ports[0]?.other_sockets?.by_state.TIME_WAIT ?? 0;
  const states: TcpState[] = report.addresses.flatMap((a) => a.ports.flatMap((p) => (p.other_sockets?.sockets ?? []).map((s) => s.state)));
  console.log(inUse, waiting, states, report.netns?.inode, '1m30s');
  await waitFree(address, { timeout: 5000, ports: 9925, signal });
  await scan('127.0.0.2-127.0.0.5', { processTimeout: '1m30s' });
}

async function explicitRelease(): Promise<Lease | null> {
  try {
    const lease = await acquire({ pool: '127.0.0.2', owner: process.pid, allowForeign: true, stateDir: '/tmp/x' });
    await lease.release();
    await lease.release(); // safe twice
    return lease;
  } catch (e) {
    if (e instanceof SockcheckError && e.code === 'SOCKCHECK_STATE') return null; // the state directory failed
    if (e instanceof SockcheckError && e.code === 'SOCKCHECK_NO_FREE_ADDRESS') {
      const skipped: SkippedAddress[] = e.candidates ?? [];
      for (const s of skipped) console.log(s.address, s.reason, s.verdict, s.pids.join(','));
      console.log(e.hopeless === true, e.exitStatus);
      return null;
    }
    throw e;
  }
}

async function ci(): Promise<number> {
  const result: RunResult = await run('127.0.0.2-127.0.0.33', ['npm', 'test'], {
    linger: '5s', report: 'lingering.json', reap: true, wait: 60_000,
  });
  if (result.lingering) console.log(result.report);
  await run(null, 'echo $SOCKCHECK_ADDR', { stdio: 'pipe' });
  await release('127.0.0.2', { stateDir: '/tmp/x' });
  return result.status ?? 1;
}

async function ports(signal: AbortSignal): Promise<void> {
  await using lease = await acquirePort({ range: '46800-46815', host: '127.0.0.1', count: 2, wait: '10s', signal });
  const port: number = lease.port;
  const all: number[] = lease.ports;
  const host: string = lease.host;
  const tokens: string[] | undefined = lease.tokens;
  console.log(port, all, host, tokens, lease.source, `${lease}`, defaultPortRange().length);
  await acquirePort({ range: [46800, '46801-46802'] });
  await acquirePort();
  try {
    await acquirePort({ range: 46800 });
  } catch (e) {
    if (e instanceof SockcheckError && e.code === 'SOCKCHECK_NO_FREE_PORT') console.log(e.skipped, e.hopeless);
  }
  await releasePort([46800, 46801], { host: '127.0.0.1' });
  const p: PortLease = await acquirePort({});
  await p.release();
}

async function getPorts(): Promise<void> {
  const a: number = await getPort();
  const b: number = await getPort({ port: portNumbers(3000, 3100), exclude: [3001], host: '127.0.0.1' });
  const c: number = await getPort({ port: [3000, 3001], reserve: true });
  const released: boolean = await releasePortOf(a);
  await clearLockedPorts();
  console.log(a, b, c, released);
  // @ts-expect-error port is a number or an iterable of numbers
  void getPort({ port: '3000' });
}

const b = resolveBackend();
console.log(b.source, b.bin);
void harness(new AbortController().signal);
void explicitRelease();
void ci();
void ports(new AbortController().signal);
void getPorts();

// Misuse must not type-check.
// @ts-expect-error pool is a string
void acquire({ pool: 5 });
// @ts-expect-error verdicts are a closed set
const bad: Verdict = 'maybe';
void bad;
