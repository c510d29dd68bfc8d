// `import getPort, { portNumbers, release } from 'sockcheck/get-port'`: the
// ESM entry of lib/get-port.cjs (one implementation, one set of leases for
// ESM and CommonJS callers in one process).
import getPortModule from './lib/get-port.cjs';

export const { getPort, portNumbers, release, clearLockedPorts } = getPortModule;
export default getPortModule.default;
