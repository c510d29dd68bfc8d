// The ESM entry: the same module as the CommonJS entry (lib/sockcheck.cjs),
// so ESM and CommonJS callers in one process share one implementation, one
// SockcheckError class and one set of fallback leases.
import sockcheck from './lib/sockcheck.cjs';

export const {
  acquire,
  release,
  check,
  scan,
  waitFree,
  run,
  acquirePort,
  releasePort,
  defaultPortRange,
  Lease,
  PortLease,
  SockcheckError,
  resolveBinary,
  resolveBackend,
  platformPackage,
  DEFAULT_LEASE_PORT,
  DEFAULT_POOL,
  version,
} = sockcheck;
