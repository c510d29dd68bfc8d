//! Small reads of this process's and this kernel's state that more than one
//! module needs (eBPF's availability check and `doctor`), written once so
//! that they cannot disagree.

use std::io;
use std::path::Path;

/// Where tracefs may be mounted: aya looks a tracepoint's id up in the
/// first of these that has an `events` directory.
pub const TRACEFS_EVENTS: [&str; 2] = [
    "/sys/kernel/tracing/events",
    "/sys/kernel/debug/tracing/events",
];

/// The effective capability set of the calling thread, the set the kernel
/// checks on `bpf(2)`, `ptrace` and `setfsuid`: capget(2), else the CapEff
/// line of `/proc/thread-self/status` (the same thread's; `/proc/self/status`
/// would be the thread-group leader's).
pub fn effective_capabilities() -> io::Result<u64> {
    match rustix::thread::capabilities(None) {
        Ok(sets) => Ok(sets.effective.bits()),
        Err(capget) => {
            let status = std::fs::read_to_string("/proc/thread-self/status").map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("capget: {capget}; /proc/thread-self/status: {e}"),
                )
            })?;
            cap_eff(&status).ok_or_else(|| {
                io::Error::other(format!(
                    "capget: {capget}; /proc/thread-self/status has no readable CapEff line"
                ))
            })
        }
    }
}

/// The CapEff line of a `/proc/*/status` text.
fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Whether tracefs is mounted where aya looks for tracepoint ids.
pub fn tracefs_mounted() -> bool {
    TRACEFS_EVENTS.iter().any(|dir| Path::new(dir).is_dir())
}

/// The running kernel's (major, minor), from uname(2).
pub fn kernel_version() -> Option<(u32, u32)> {
    let uname = rustix::system::uname();
    parse_version(&uname.release().to_string_lossy())
}

fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether `pidfd_open(2)` takes PIDFD_THREAD (Linux 6.9+), which gives a
/// pidfd of one thread: the only way to reach the fd table of a process
/// whose leader has exited. Tried on this thread's own id.
pub fn pidfd_thread() -> io::Result<()> {
    const PIDFD_THREAD: u32 = libc::O_EXCL as u32;
    let tid = rustix::thread::gettid();
    rustix::process::pidfd_open(
        tid,
        rustix::process::PidfdFlags::from_bits_retain(PIDFD_THREAD),
    )
    .map(drop)
    .map_err(io::Error::from)
}

/// A number from a /proc/sys file (`kernel.unprivileged_bpf_disabled`,
/// `kernel.yama.ptrace_scope`, …); `None` if it is absent or unreadable.
pub fn sysctl_number(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `kernel.unprivileged_bpf_disabled`, if readable.
pub fn unprivileged_bpf_disabled() -> Option<u32> {
    sysctl_number("/proc/sys/kernel/unprivileged_bpf_disabled")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capget_and_proc_agree() {
        // The main thread of the test harness is not this thread, so
        // thread-self is what capget reads.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_eq!(effective_capabilities().unwrap(), cap_eff(&status).unwrap());
    }

    #[test]
    fn versions_of_releases() {
        assert_eq!(parse_version("5.10.0-32-amd64"), Some((5, 10)));
        assert_eq!(parse_version("6.18.44-fc-v1252"), Some((6, 18)));
        assert_eq!(parse_version("6.1"), Some((6, 1)));
        assert_eq!(parse_version("x"), None);
        assert!(kernel_version().is_some());
    }

    #[test]
    fn cap_eff_parses_the_line() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(cap_eff("Name:\tx\n"), None);
    }
}
