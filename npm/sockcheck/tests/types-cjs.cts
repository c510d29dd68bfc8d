// Type-checked, never run: the API from CommonJS TypeScript (resolved through
// the "require" condition to lib/sockcheck.d.cts).
import sockcheck = require('sockcheck');
import getPortModule = require('sockcheck/get-port');

async function main(): Promise<void> {
  const lease: sockcheck.Lease = await sockcheck.acquire({ pool: '127.0.0.2', ports: [9925] });
  try {
    const report = await sockcheck.check(lease.address);
    console.log(report.addresses[0]?.verdict);
  } catch (e) {
    if (e instanceof sockcheck.SockcheckError) console.log(e.code, e.exitStatus);
  } finally {
    await lease[Symbol.asyncDispose]();
  }
}
void main();

async function ports(): Promise<void> {
  const lease: sockcheck.PortLease = await sockcheck.acquirePort({ range: '46800-46815' });
  await lease[Symbol.asyncDispose]();
  const port: number = await getPortModule.default({ port: getPortModule.portNumbers(3000, 3100) });
  const again: number = await getPortModule.getPort({ exclude: [port] });
  await getPortModule.release(port);
  console.log(again);
}
void ports();
