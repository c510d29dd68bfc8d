// Types for sockcheck (hand-written; checked by `tsc --noEmit` in CI). The
// ESM entry (index.d.ts) re-exports these.

/// <reference types="node" />

/** A duration: a number is milliseconds; a string is a sockcheck duration, as the binary parses it (`500ms`, `30s`, `2m`, `1m30s`, `1h`, `2 minutes`; a bare number is seconds). */
export type Duration = number | string;

/** Ports: an array, one port, or a `P,..` string. */
export type Ports = number | readonly number[] | string;

/** A verdict, most severe first: foreign > busy > conflict > unavailable > free. */
export type Verdict = 'foreign' | 'busy' | 'conflict' | 'unavailable' | 'free';

/** Where an answer came from: the sockcheck binary, or the plain-Node fallback. */
export type Source = 'sockcheck' | 'fallback';

/** Why acquire skipped an address. */
export type SkipReason = 'leased' | 'quarantined' | 'busy' | 'foreign' | 'conflict' | 'unavailable';

/** Every SockcheckError code. */
export type SockcheckErrorCode =
  | 'SOCKCHECK_NO_FREE_ADDRESS'
  | 'SOCKCHECK_NO_FREE_PORT'
  | 'SOCKCHECK_USAGE'
  | 'SOCKCHECK_INSPECTION_FAILED'
  | 'SOCKCHECK_STATE'
  | 'SOCKCHECK_NOT_LEASED'
  | 'SOCKCHECK_FAILED'
  | 'SOCKCHECK_NOT_RUN'
  | 'SOCKCHECK_BAD_OUTPUT'
  | 'SOCKCHECK_TIMEOUT'
  | 'SOCKCHECK_ABORTED'
  | 'SOCKCHECK_FOREIGN';

/** Options every call takes. */
export interface CommonOptions {
  /** Abort the call: the child process is killed and the call rejects with SOCKCHECK_ABORTED. */
  signal?: AbortSignal;
  /**
   * Kill the sockcheck process (SIGTERM, then SIGKILL) and reject with
   * SOCKCHECK_TIMEOUT after this long. Default: the call's own wait or
   * timeout plus 30 s (30 s for check, scan and release; 6 h plus wait and
   * linger for run). `Infinity` turns it off.
   */
  processTimeout?: Duration;
  /** The sockcheck binary. Default: `$SOCKCHECK_BIN`, the platform package, then `sockcheck` on PATH. */
  bin?: string;
  /** Where leases live. Default: `$SOCKCHECK_STATE_DIR`, else sockcheck's default. Ignored by the fallback. */
  stateDir?: string;
}

export interface AcquireOptions extends CommonOptions {
  /** A range (`127.0.0.2-127.0.0.33`), CIDR (`127.0.0.0/27`) or comma list. Default: `$SOCKCHECK_POOL`, else DEFAULT_POOL. */
  pool?: string;
  /** Ports that must be free. Default: `$SOCKCHECK_PORTS`, else 9925,9926. */
  ports?: Ports;
  /** Wait this long for a free address. Default: fail at once. */
  wait?: Duration;
  /** The pid that owns the lease. Default: this process. (The fallback's leases always belong to this process.) */
  owner?: number;
  /** Keep waiting on addresses a wildcard listener covers, instead of failing at once when all are foreign. */
  allowForeign?: boolean;
  /**
   * Fallback off Linux only: the UDP port a lease binds on its address.
   * Default: `$SOCKCHECK_LEASE_PORT`, else 9924. Accepted and ignored on
   * Linux, where a lease is an abstract unix token shared with the binary.
   */
  leasePort?: number;
}

/** Why one address of the pool could not be leased. */
export interface SkippedAddress {
  address: string;
  reason: SkipReason;
  /** The address's verdict, when it was inspected (null for leased or quarantined). */
  verdict: Verdict | null;
  /** Holder pids (the leaseholder, or the processes holding the sockets); empty when unknown. */
  pids: number[];
  /** True when a holder could not be read (another user's process). */
  hidden?: boolean;
  message: string;
  [key: string]: unknown;
}

/** The process a binary lease belongs to. */
export interface LeaseOwner {
  pid: number;
  /** Start time in clock ticks since boot (null in the fallback). */
  start_ticks: number | null;
  /** Whether the owner still runs (sockcheck 0.1 with owner.alive; absent in the fallback). */
  alive?: boolean;
}

/** A leased address. `await using lease = await acquire(...)` releases it at the end of the scope. */
export declare class Lease implements AsyncDisposable {
  private constructor();
  /** The leased address, e.g. `127.0.0.5`. */
  readonly address: string;
  /** The ports checked free on it. */
  readonly ports: number[];
  readonly owner: LeaseOwner | null;
  /** The state directory that holds the lease (null in the fallback). */
  readonly stateDir: string | null;
  readonly source: Source;
  /** Fallback off Linux only: the UDP port whose socket holds the lease. */
  readonly leasePort?: number;
  /** Fallback on Linux: the lease token, as ss(8) shows it (`@sockcheck/v1/lease/127.0.0.2`). */
  readonly token?: string;
  /** True once release() has succeeded. */
  readonly released: boolean;
  /** Give the address back. Safe to call twice; resolves also when the lease was already gone. */
  release(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  toString(): string;
  toJSON(): { address: string; ports: number[]; owner: LeaseOwner | null; stateDir: string | null; source: Source };
}

export interface AcquirePortOptions extends CommonOptions {
  /**
   * The ports to lease from: `P`, `P-Q` or a comma list of those
   * (`'46800-46815,46820'`), a port, or an iterable of ports. Default:
   * 15000-32767 minus the kernel's ephemeral range and reserved ports
   * (`defaultPortRange()`).
   */
  range?: string | number | Iterable<number | string>;
  /** The address the ports must bind on (the canary binds it). Default `127.0.0.1`. The lease covers the port on every host. */
  host?: string;
  /** How many ports (default 1). */
  count?: number;
  /** Wait this long for enough ports to be free. Default: fail at once. */
  wait?: Duration;
  /** The pid that owns the lease. Default: this process. (The fallback's leases always belong to this process.) */
  owner?: number;
}

/** Why one port of the range could not be leased. */
export interface SkippedPort {
  port: number;
  /** `leased` (another lease holds its token), `busy` (the canary bind failed: something holds HOST:PORT), ... */
  reason: 'leased' | 'busy' | 'unavailable' | 'conflict' | (string & {});
  /** The holder pids, when known. */
  pids: number[];
  message: string;
  [key: string]: unknown;
}

/** Leased TCP ports. `await using lease = await acquirePort(...)` releases them at the end of the scope. */
export declare class PortLease implements AsyncDisposable {
  private constructor();
  /** The (first) leased port. */
  readonly port: number;
  /** Every leased port (`count` of them). */
  readonly ports: number[];
  /** The address the ports were checked on. */
  readonly host: string;
  readonly owner: LeaseOwner | null;
  /** The state directory that holds the lease (null in the fallback). */
  readonly stateDir: string | null;
  readonly source: Source;
  /** Fallback on Linux: the lease tokens, as ss(8) shows them (`@sockcheck/v1/port/46800`). */
  readonly tokens?: string[];
  /** True once release() has succeeded. */
  readonly released: boolean;
  /** Give the ports back. Safe to call twice; resolves also when the lease was already gone. */
  release(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
  /** The port, as text. */
  toString(): string;
  toJSON(): { port: number; ports: number[]; host: string; owner: LeaseOwner | null; stateDir: string | null; source: Source };
}

/** One reason for a verdict. */
export interface Reason {
  code: 'listener' | 'mapped_listener' | 'wildcard' | 'not_local' | 'canary_failed' | 'disagreement' | (string & {});
  port: number | null;
  verdict: Verdict;
  message: string;
}

export interface ReuseportEvidence {
  source: 'kernel' | 'group' | 'pidfd_getfd' | 'bind_probe' | 'none' | (string & {});
  detail: string;
  tried?: unknown[];
}

/** A string, or `{bytes: base64}` when the process chose bytes that are not UTF-8. */
export type ProcessText = string | { bytes: string };

/** A holder's state, from /proc/PID/stat (`zombie-leader`: the leader exited, other threads live on). */
export type ProcessState =
  | 'running' | 'sleeping' | 'disk-sleep' | 'stopped' | 'tracing-stop' | 'dead' | 'idle'
  | 'parked' | 'waking' | 'wakekill' | 'unknown' | 'zombie' | 'zombie-leader' | 'gone';

export interface Owner {
  pid: number | null;
  hidden: boolean;
  fds?: { fd: number; via_tids: number[] }[];
  comm?: ProcessText;
  cmdline?: ProcessText[];
  state?: ProcessState;
  tids?: number[];
  uid?: number;
  ppid?: number;
  /** Its pid in its own pid namespace (a container's), when that is not sockcheck's. */
  ns_pid?: number;
  start_time?: number;
  age_seconds?: number;
  /** Its cgroup (v2) path, when it is in another pid namespace or the path names a container. */
  cgroup?: string;
  /** The container the cgroup path names. */
  container?: { runtime: string; id: string };
  candidates?: number[];
  [key: string]: unknown;
}

export interface Listener {
  local: string;
  family: 'inet' | 'inet6';
  coverage: 'exact' | 'mapped' | 'wildcard';
  inode: number;
  cookie: number;
  uid: number;
  cgroup_id?: number;
  accept_queue: number;
  backlog: number;
  group_size: number;
  v6only?: boolean;
  reuseport: boolean | null;
  reuseport_evidence: ReuseportEvidence;
  owners: Owner[];
  owners_complete: boolean;
  [key: string]: unknown;
}

/** An errno by name, as the binary names it; `errno N` for one it has no name for. */
export type Errno =
  | 'EPERM' | 'ENOENT' | 'ESRCH' | 'EINTR' | 'EBADF' | 'EAGAIN' | 'ENOMEM' | 'EACCES' | 'EBUSY'
  | 'EINVAL' | 'EMFILE' | 'ENFILE' | 'ENOSYS' | 'ENOTSOCK' | 'EPROTONOSUPPORT' | 'EOPNOTSUPP'
  | 'EAFNOSUPPORT' | 'EADDRINUSE' | 'EADDRNOTAVAIL' | 'ENETUNREACH' | 'ENOBUFS' | 'EISCONN'
  | 'ECONNREFUSED' | `errno ${number}`;

/** The plain-bind canary. */
export interface Canary {
  /** `ok`, or the errno the bind failed with (the fallback: any errno name Node gives). */
  result: 'ok' | Errno | (string & {});
  /** The raw errno, when the bind failed. */
  errno?: number;
}

/** A TCP state, as ss(8) names it. */
export type TcpState =
  | 'ESTABLISHED' | 'SYN_SENT' | 'SYN_RECV' | 'FIN_WAIT1' | 'FIN_WAIT2' | 'TIME_WAIT' | 'CLOSE'
  | 'CLOSE_WAIT' | 'LAST_ACK' | 'LISTEN' | 'CLOSING' | 'NEW_SYN_RECV' | 'BOUND_INACTIVE' | 'UNKNOWN';

/** One socket on ADDR:PORT that is not listening. */
export interface OtherSocket {
  state: TcpState;
  local: string;
  remote: string;
  /** Zero for sockets without a file (TIME_WAIT): the kernel owns those. */
  inode: number;
  uid: number;
  owners: Owner[];
  [key: string]: unknown;
}

/** The sockets on ADDR:PORT that are not listening. */
export interface OtherSockets {
  total: number;
  by_state: Partial<Record<TcpState, number>>;
  sockets: OtherSocket[];
}

export interface PortReport {
  port: number;
  /** The plain-bind canary: `ok` or the errno name (`EADDRINUSE`, ...). */
  canary: Canary;
  /** Fallback only: the connect probe (`connected`, `refused`, `timeout`, or an error code). */
  connect?: { result: string };
  /** The listeners covering the address (always empty in the fallback, which cannot list them). */
  listeners: Listener[];
  /** Absent in the fallback, which cannot list sockets. */
  other_sockets?: OtherSockets;
  [key: string]: unknown;
}

export interface AddressReport {
  address: string;
  verdict: Verdict;
  reasons: Reason[];
  notes: unknown[];
  ports: PortReport[];
  [key: string]: unknown;
}

/** Whether a source of evidence was used, and what to know about it. */
export interface SourceStatus {
  status: 'used' | 'partial' | 'skipped' | 'unavailable';
  detail: string;
}

/** The `sockcheck --json check` document (schema 1), plus `source` and `free`. */
export interface CheckReport {
  schema: 1;
  /** sockcheck's version (null in the fallback). */
  sockcheck: string | null;
  source: Source;
  /** True when every address is free. */
  free: boolean;
  ports: number[];
  addresses: AddressReport[];
  /** The network namespace inspected, when `--netns` named one. */
  netns?: { inode: number; name?: string };
  /** Each source of evidence (the binary: sock_diag, proc, pidfd_getfd, bind_probe, bpf; the fallback: its own). */
  sources: Record<string, SourceStatus>;
  [key: string]: unknown;
}

export interface CheckOptions extends CommonOptions {
  ports?: Ports;
}

export interface WaitOptions extends CommonOptions {
  /** Give up after this long (default 30 s) and reject with SOCKCHECK_TIMEOUT. */
  timeout?: Duration;
  ports?: Ports;
  /** Wait even when a wildcard listener covers the address (else: SOCKCHECK_FOREIGN at once). */
  allowForeign?: boolean;
}

export interface RunOptions extends CommonOptions {
  ports?: Ports;
  /** How long the address may stay held after the command exits (default 5 s). */
  linger?: Duration;
  /** Write the forensic report here (`.json`: JSON, and the result's `report`; otherwise Markdown). */
  report?: string;
  /** SIGTERM lingering holders, then SIGKILL after `grace`. */
  reap?: boolean;
  /** Between reap's SIGTERM and SIGKILL (default 2 s). */
  grace?: Duration;
  /** Wait this long for a free address. */
  wait?: Duration;
  allowForeign?: boolean;
  /** `inherit` (default): the command's output goes to this process's; `pipe`: collected in the result. */
  stdio?: 'inherit' | 'pipe';
  /** Added to this process's environment for the command. */
  env?: Record<string, string | undefined>;
  cwd?: string;
}

export interface RunResult {
  /** sockcheck run's exit status: the command's own, 4 when it succeeded but left lingering holders (128+N for signal N). */
  status: number | null;
  signal: NodeJS.Signals | null;
  /** status === 0 */
  ok: boolean;
  /** status === 4; null in the fallback, which cannot tell. */
  lingering: boolean | null;
  /** The leased address the command ran with (null if sockcheck did not say). */
  address: string | null;
  /** The parsed forensic report, when `report` ends in `.json` and something lingered. */
  report: Record<string, unknown> | null;
  reportPath: string | null;
  source: Source;
  /** The command's stdout with `stdio: 'pipe'`, else null. */
  stdout: string | null;
  /** sockcheck's (and, with `stdio: 'pipe'`, the command's) stderr. */
  stderr: string;
}

/** A failed call. */
export declare class SockcheckError extends Error {
  constructor(message: string, info?: Record<string, unknown>);
  readonly name: 'SockcheckError';
  readonly code: SockcheckErrorCode;
  /** sockcheck's exit status; null when it did not exit normally, or in the fallback. */
  readonly exitStatus: number | null;
  /** sockcheck's stderr, trimmed. */
  readonly stderr: string;
  /** The command that was run. */
  readonly argv: string[];
  /** The signal that ended sockcheck, if any. */
  readonly signal: NodeJS.Signals | null;
  /** SOCKCHECK_NO_FREE_ADDRESS: each address of the pool, why it was skipped, and its holder pids. */
  readonly candidates?: SkippedAddress[];
  /** SOCKCHECK_NO_FREE_ADDRESS: each address and why it was skipped (also as `candidates`); SOCKCHECK_NO_FREE_PORT: each port. */
  readonly skipped?: SkippedAddress[] | SkippedPort[];
  /** SOCKCHECK_NO_FREE_ADDRESS: every address was foreign or not local, so it failed without waiting (SOCKCHECK_NO_FREE_PORT: the host is not local). */
  readonly hopeless?: boolean;
  /** The JSON document sockcheck printed with the failure, if any (acquire: the failure document; wait: the check document). */
  readonly report?: Record<string, unknown> | CheckReport | null;
  /** waitFree: the address's verdict when it gave up. */
  readonly verdict?: Verdict | null;
  /** waitFree: the address. */
  readonly address?: string;
  /** The pid of the sockcheck process that failed (killed, for SOCKCHECK_TIMEOUT and SOCKCHECK_ABORTED). */
  readonly pid?: number;
  /** SOCKCHECK_TIMEOUT: the limit, in milliseconds. */
  readonly timeout?: number;
  readonly source?: Source;
}

export interface ResolvedBinary {
  path: string;
  source: 'option' | 'env' | 'package' | 'path';
}

export interface Backend {
  source: Source;
  /** The binary (null for the fallback). */
  bin: string | null;
  /** Where the binary was found. */
  from: 'option' | 'env' | 'package' | 'path' | null;
  /** Why the fallback is used. */
  reason: string | null;
}

/** Lease the first free address of a pool. */
export declare function acquire(options?: AcquireOptions): Promise<Lease>;
/** Give a leased address back (rejects SOCKCHECK_NOT_LEASED when it was not leased). */
export declare function release(address: string, options?: CommonOptions): Promise<void>;
/** Inspect addresses. Not free is not an error: see each address's verdict, and `free`. */
export declare function check(addresses: string | readonly string[], options?: CheckOptions): Promise<CheckReport>;
/** Inspect every address of a pool (default `$SOCKCHECK_POOL`). */
export declare function scan(pool?: string | null, options?: CheckOptions): Promise<CheckReport>;
/** Wait until an address is free; resolves with its check document. */
export declare function waitFree(address: string, options?: WaitOptions): Promise<CheckReport>;
/**
 * Lease an address from the pool (null: `$SOCKCHECK_POOL`, else DEFAULT_POOL), run the command
 * (argv array, or a string for /bin/sh -c) with SOCKCHECK_ADDR and
 * SOCKCHECK_PORTS set, then check for lingering holders.
 */
export declare function run(pool: string | null | undefined, command: string | readonly string[], options?: RunOptions): Promise<RunResult>;
/** Lease free TCP ports (`sockcheck acquire-port`): one by default, from the default range, for 127.0.0.1. */
export declare function acquirePort(options?: AcquirePortOptions): Promise<PortLease>;
/** Give leased ports back by number (rejects SOCKCHECK_NOT_LEASED when one was not leased, or not yours). */
export declare function releasePort(ports: number | readonly number[] | string, options?: CommonOptions & { host?: string }): Promise<void>;
/** The ports acquirePort leases from when given no range: 15000-32767 minus the kernel's ephemeral range and reserved ports. */
export declare function defaultPortRange(): number[];
/** Where the binary is ($SOCKCHECK_BIN, the platform package, PATH), or null. */
export declare function resolveBinary(options?: { bin?: string; env?: NodeJS.ProcessEnv }): ResolvedBinary | null;
/** Which backend a call would use, and why. */
export declare function resolveBackend(options?: { bin?: string }): Backend;
/** The platform package for a platform and CPU (default: this one), or null. */
export declare function platformPackage(platform?: string, arch?: string): string | null;
/** The fallback's default lease port (UDP, off Linux only): 9924. */
export declare const DEFAULT_LEASE_PORT: number;
/** The pool acquire and run lease from when given none and `$SOCKCHECK_POOL` is unset: `127.0.0.2-127.0.0.33` (32 addresses). */
export declare const DEFAULT_POOL: string;
/** This package's version. */
export declare const version: string;
