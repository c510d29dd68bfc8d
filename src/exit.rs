//! Exit statuses: a documented contract, the same table in `--help` and the
//! README.

/// How sockcheck exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Every address is free (`wait`: it became free in time; `acquire`: an
    /// address was leased).
    Free,
    /// At least one address is not free (`wait`: timed out; `acquire`: no
    /// address could be leased).
    NotFree,
    /// Bad usage or input: nothing was inspected or changed.
    Usage,
    /// The inspection itself failed (netlink sock_diag unavailable, …), or
    /// the gate's state directory could not be used. An unreadable /proc is
    /// not a failure: owners are then reported unknown.
    Failed,
    /// `run`: the command succeeded but left lingering holders.
    Lingering,
    /// `run`: no address of the pool could be leased.
    NoAddress,
    /// `run`: the command's own exit status (128+N when killed by signal N).
    Command(u8),
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Free => 0,
            ExitStatus::NotFree => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Failed => 3,
            ExitStatus::Lingering => 4,
            ExitStatus::NoAddress => 5,
            ExitStatus::Command(code) => code,
        }
    }
}

/// The table printed at the end of `--help`.
pub const HELP: &str = "\
Exit status:
  0  every address is free
  1  at least one address is not free (busy, foreign, conflict or unavailable)
  2  bad usage or input (nothing was inspected or changed)
  3  the inspection itself, the gate's state directory or lease agent, or a resource failed (one line says which: sock_diag unavailable, no memory, no thread, ...)
  4  run: the command succeeded but left lingering holders
  5  run: no address of the pool could be leased
  (run otherwise exits with the command's own status)";

/// `check`'s exit statuses, for its `--help`.
pub const HELP_CHECK: &str = "\
Exit status:
  0  every address is free
  1  at least one address is not free (busy, foreign, conflict or unavailable)
  2  bad usage or input (nothing was inspected or changed)
  3  the inspection itself failed (netlink sock_diag unavailable, ...)";

/// `scan`'s exit statuses.
pub const HELP_SCAN: &str = "\
Exit status:
  0  every address of the pool is free
  1  at least one address of the pool is not free
  2  bad usage or input
  3  the inspection itself failed";

/// `list`'s exit statuses.
pub const HELP_LIST: &str = "\
Exit status:
  0  the listing was made (whatever it found; nothing found is said in one line)
  2  bad usage or input
  3  the inspection itself failed";

/// `reap`'s exit statuses.
pub const HELP_REAP: &str = "\
Exit status:
  0  the address is free (after reaping, or it already was)
  1  something still holds it (not permitted, hidden, survived SIGKILL, or --dry-run)
  2  bad usage or input
  3  the inspection itself failed";

/// `wait`'s exit statuses.
pub const HELP_WAIT: &str = "\
Exit status:
  0  the address is free (or became free before --timeout)
  1  it is still not free at --timeout, or waiting cannot help (foreign, unavailable)
  2  bad usage or input
  3  the inspection itself failed";

/// `acquire`'s exit statuses.
pub const HELP_ACQUIRE: &str = "\
Exit status:
  0  an address was leased (and printed)
  1  no address of the pool could be leased (each one and why on stderr)
  2  bad usage or input (nothing was leased)
  3  the state directory or the inspection failed";

/// `acquire-port`'s exit statuses.
pub const HELP_ACQUIRE_PORT: &str = "\
Exit status:
  0  the ports were leased (and printed, one per line)
  1  not enough free ports in the range (each port passed over and why on stderr)
  2  bad usage or input (nothing was leased)
  3  the state directory, the lease agent or a resource failed";

/// `release-port`'s exit statuses.
pub const HELP_RELEASE_PORT: &str = "\
Exit status:
  0  every port was released
  1  some port was not leased, or its lease is not ours to end
  2  bad usage or input
  3  the state directory or the lease agent failed";

/// `release`'s exit statuses.
pub const HELP_RELEASE: &str = "\
Exit status:
  0  the lease was given back
  1  the address was not leased
  2  bad usage or input
  3  the state directory or the inspection failed";

/// `leases`' exit statuses.
pub const HELP_LEASES: &str = "\
Exit status:
  0  the leases were listed (also when there are none)
  2  bad usage or input
  3  the state directory or the inspection failed";

/// `run`'s exit statuses.
pub const HELP_RUN: &str = "\
Exit status:
  N  the command's own (128+N when it was killed by signal N)
  4  the command succeeded but left lingering holders
  5  no address of the pool could be leased
  2  bad usage or input (the command was not run)
  3  the state directory or the inspection failed";

/// `watch`'s exit statuses.
pub const HELP_WATCH: &str = "\
Exit status:
  0    after --count events, or at --timeout when no --count was given, and no event was lost
  1    events were lost (the kernel's ring buffer was full: see --ring-size; each loss is
       reported as `lost N events`), or --timeout came before --count events
  130  on SIGINT, 143 on SIGTERM (also when events were lost)
  2    bad usage or input
  3    eBPF unavailable (watch needs eBPF) or failed";

/// `doctor`'s exit statuses.
pub const HELP_DOCTOR: &str = "\
Exit status:
  0  the report was printed (what is unavailable is part of it)
  2  bad usage";

/// The exit statuses of `completions` and `man`.
pub const HELP_GENERATE: &str = "\
Exit status:
  0  printed
  2  bad usage";

/// The system allocator, except that an allocation that fails ends
/// sockcheck with one line and exit status 3 (the command failed), where
/// Rust would abort (SIGABRT, 134) with a message of its own. Under an
/// RLIMIT_AS or a cgroup memory limit this is what a user sees.
pub struct ExitOnOom;

// SAFETY: every call goes to the system allocator; a null result ends the
// process instead of being returned.
unsafe impl std::alloc::GlobalAlloc for ExitOnOom {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { std::alloc::System.alloc(layout) };
        if p.is_null() {
            out_of_memory(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if p.is_null() {
            out_of_memory(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on.
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if p.is_null() {
            out_of_memory(new);
        }
        p
    }
}

/// Says so in one line, without allocating, and exits 3.
fn out_of_memory(size: usize) -> ! {
    let mut line = [0u8; 128];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(line.len() - at);
        line[at..at + n].copy_from_slice(&bytes[..n]);
        at += n;
    };
    put(b"sockcheck: out of memory: an allocation of ");
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(&digits[i..]);
    put(b" bytes failed (RLIMIT_AS, or a memory limit)\n");
    // SAFETY: write(2) and _exit(2) of plain bytes; no allocation.
    unsafe {
        libc::write(2, line.as_ptr().cast(), at);
        libc::_exit(ExitStatus::Failed.code().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(ExitStatus::Free.code(), 0);
        assert_eq!(ExitStatus::NotFree.code(), 1);
        assert_eq!(ExitStatus::Usage.code(), 2);
        assert_eq!(ExitStatus::Failed.code(), 3);
        assert_eq!(ExitStatus::Lingering.code(), 4);
        assert_eq!(ExitStatus::NoAddress.code(), 5);
        assert_eq!(ExitStatus::Command(42).code(), 42);
        for code in 0..=5 {
            assert!(HELP.contains(&format!("  {code}  ")));
        }
    }
}
