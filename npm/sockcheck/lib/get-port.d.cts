// Types for `sockcheck/get-port` (hand-written; checked by `tsc --noEmit` in
// CI): get-port v7's API. The ESM entry (get-port.d.ts) re-exports these.

/// <reference types="node" />
import type { ListenOptions } from 'node:net';

export type Options = {
  /** A preferred port or an iterable of preferred ports, tried in order (0: any port). */
  readonly port?: number | Iterable<number>;
  /** Ports that are never returned (for example the value of `portNumbers()`). */
  readonly exclude?: Iterable<number>;
  /**
   * The address the port must bind on. Default `127.0.0.1` (get-port checks
   * every local address); the lease covers the port on every host.
   */
  readonly host?: string;
  /** Accepted for get-port 7.2 compatibility and ignored: every port is held until the process exits or `release(port)`. */
  readonly reserve?: boolean;
} & Omit<ListenOptions, 'port'>;

/**
 * Lease an available TCP port: the first free preferred `port`, else one of
 * sockcheck's default range (15000-32767 minus the kernel's ephemeral and
 * reserved ports). No other sockcheck user gets it until this process exits
 * or calls `release(port)`.
 */
declare function getPort(options?: Options): Promise<number>;
export default getPort;
export { getPort };
/** The port numbers `from`...`to` (both in 1024...65535, `from` <= `to`), in order. */
export declare function portNumbers(from: number, to: number): Iterable<number>;
/** Give back a port getPort leased; resolves true if this process leased it through getPort. */
export declare function release(port: number): Promise<boolean>;
/** Give back every port getPort leased in this process. */
export declare function clearLockedPorts(): Promise<void>;
