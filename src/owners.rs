//! Who holds a socket: inode → processes, read from /proc.
//!
//! - [`fd_scan`]: the fd tables, read raw (the hot loop), and the fd
//!   tables of a zombie leader's live threads;
//! - [`process`]: what a person wants to know about a holder (procfs);
//! - [`ProcRoot`]: where /proc is. Production reads `/proc`; tests read a
//!   fixture tree built in a temporary directory (as iproute2's `ss` reads
//!   `$PROC_ROOT`), so the owners part of the report is tested without
//!   the machine's processes.

mod fd_scan;
#[cfg(test)]
pub(crate) mod fixture;
mod process;

pub use fd_scan::{holds, scan};
pub use process::{Container, ProcessInfo, ProcessState, container_of, describe};

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

/// Where one process keeps one of the sockets asked about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct FdRef {
    /// The fd number.
    pub fd: u32,
    /// The threads through whose fd table it was seen, when it was read
    /// from /proc/PID/task/TID/fd (the leader is a zombie). Empty when it
    /// was read from /proc/PID/fd.
    pub via_tids: Vec<u32>,
}

/// A process whose fd table could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub pid: u32,
    /// The owner of /proc/PID: the process's effective uid.
    pub uid: Option<u32>,
}

/// What a scan of /proc found.
#[derive(Debug, Default, Clone)]
pub struct FdScan {
    /// inode → pid → where.
    pub holders: BTreeMap<u64, BTreeMap<u32, Vec<FdRef>>>,
    /// Processes whose fd tables this user may not read.
    pub unreadable: Vec<Unreadable>,
    /// How many processes were read.
    pub processes: usize,
    /// How many fd entries were read.
    pub fds: usize,
    /// Whether a lookup ran at all (false for the empty default).
    pub looked_up: bool,
    /// Set when /proc hides other users' processes from us altogether
    /// (`hidepid=invisible`): then nobody can tell how many went unread.
    pub invisible: Option<String>,
}

impl FdScan {
    /// Processes that may hold `inode` but could not be read: the unreadable
    /// processes whose uid is the socket's uid (a socket's uid is the fsuid
    /// of the process that created it).
    pub fn hidden_candidates(&self, uid: u32) -> Vec<u32> {
        self.unreadable
            .iter()
            .filter(|u| u.uid == Some(uid))
            .map(|u| u.pid)
            .collect()
    }
}

/// The owners [`crate::bpf::task_files`] found, in the shape of a /proc
/// scan. Threads are named only when the leader is gone (as the /proc scan
/// does), since then they are what holds the table.
pub fn from_task_files(rows: Vec<crate::bpf::TaskFile>) -> FdScan {
    let mut scan = FdScan {
        looked_up: true,
        ..FdScan::default()
    };
    for row in rows {
        let via_tids = if row.tids == [row.pid] {
            Vec::new()
        } else {
            row.tids
        };
        scan.holders
            .entry(row.inode)
            .or_default()
            .entry(row.pid)
            .or_default()
            .push(FdRef {
                fd: row.fd,
                via_tids,
            });
    }
    scan
}

/// Where /proc is mounted, and how it is read.
///
/// [`ProcRoot::system`] is `/proc`, read as this process (its euid and
/// whether it has CAP_SYS_PTRACE) at the time of the clock. A fixture root
/// ([`ProcRoot::fixture`]) is a directory laid out as /proc is
/// (`PID/fd/N` symlinks to `socket:[INODE]`, `PID/stat`, `PID/status`,
/// `PID/comm`, `PID/cmdline`, `PID/task/TID/…`, `stat` with `btime`), read
/// as an ordinary user of a given uid at a given time: what tests use, and
/// nothing else.
#[derive(Debug, Clone)]
pub struct ProcRoot {
    path: PathBuf,
    cpath: CString,
    fixture: Option<Fixture>,
}

/// How a fixture root is read: as an unprivileged `uid`, at `now`.
#[derive(Debug, Clone, Copy)]
struct Fixture {
    uid: u32,
    now: u64,
}

impl ProcRoot {
    /// The machine's /proc.
    pub fn system() -> ProcRoot {
        ProcRoot {
            path: PathBuf::from("/proc"),
            cpath: c"/proc".to_owned(),
            fixture: None,
        }
    }

    /// A tree laid out as /proc, for tests: read as an ordinary user of
    /// `uid` (another uid's `PID` directory is unreadable, as in /proc),
    /// with `now` (Unix seconds) as the time. Not a user-facing option.
    pub fn fixture(path: &Path, uid: u32, now: u64) -> ProcRoot {
        ProcRoot {
            path: path.to_path_buf(),
            cpath: CString::new(path.as_os_str().as_bytes()).expect("a path has no NUL"),
            fixture: Some(Fixture { uid, now }),
        }
    }

    /// The root itself (`/proc`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root as a C string, for `openat`.
    fn c_path(&self) -> &std::ffi::CStr {
        &self.cpath
    }

    /// A path under the root: `join("2/stat")` is `/proc/2/stat`.
    fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative)
    }

    /// The euid the scan reads as, when it lacks CAP_SYS_PTRACE (then
    /// another uid's fd table is never readable); `None` when it may read
    /// every process.
    fn unprivileged_uid(&self) -> Option<u32> {
        if let Some(fixture) = self.fixture {
            return Some(fixture.uid);
        }
        // Capabilities that cannot be read count as none: the scan then
        // says which processes it could not read rather than assume it
        // read them all.
        const CAP_SYS_PTRACE: u32 = 19;
        match crate::sys::effective_capabilities() {
            Ok(caps) if caps & (1 << CAP_SYS_PTRACE) != 0 => None,
            _ => Some(rustix::process::geteuid().as_raw()),
        }
    }

    /// When the machine booted, in seconds since the Unix epoch (`btime` in
    /// /proc/stat).
    fn boot_time(&self) -> Option<u64> {
        if self.fixture.is_none() {
            return procfs::boot_time_secs().ok(); // cached by procfs (per thread)
        }
        let stat = std::fs::read_to_string(self.join("stat")).ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|secs| secs.trim().parse().ok())
    }

    /// Whether every process's fd table is readable to the scan (it has
    /// CAP_SYS_PTRACE).
    pub fn reads_every_process(&self) -> bool {
        self.unprivileged_uid().is_none()
    }

    /// Now, in seconds since the Unix epoch.
    fn now(&self) -> Option<u64> {
        if let Some(fixture) = self.fixture {
            return Some(fixture.now);
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }
}

pub(crate) fn parse_u32(bytes: &[u8]) -> Option<u32> {
    parse_decimal(bytes).and_then(|n| u32::try_from(n).ok())
}

/// The inode of a `socket:[N]` link target.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    parse_decimal(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
}

/// A non-empty run of ASCII digits that fits in a u64.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_inode_parses_only_sockets() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[99999999999999999999999]"), None);
    }

    #[test]
    fn parse_u32_rejects_non_digits() {
        assert_eq!(parse_u32(b"123"), Some(123));
        assert_eq!(parse_u32(b"self"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"99999999999"), None);
    }
}
