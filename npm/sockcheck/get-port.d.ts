// Types of the `sockcheck/get-port` ESM entry: the declarations of the
// CommonJS entry, with getPort as the default export (as get-port has it).
import { getPort } from './lib/get-port.cjs';

export type { Options } from './lib/get-port.cjs';
export { getPort, portNumbers, release, clearLockedPorts } from './lib/get-port.cjs';
export default getPort;
