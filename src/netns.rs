//! Other network namespaces: `--netns NAME|PATH|pid:PID`.
//!
//! sock_diag answers for the network namespace of the socket that asks, and
//! a canary binds in the namespace of the thread that makes it. So the work
//! that must see another namespace runs on a dedicated thread that has
//! entered it with `setns(CLONE_NEWNET)`; the rest of sockcheck (its /proc,
//! its pid namespace, its other threads) stays where it is.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::error::Error;
use crate::text::echo;

/// Where `ip netns` keeps named namespaces.
const NAMED: &str = "/run/netns";

/// A network namespace to inspect, opened.
#[derive(Debug)]
pub struct NetNs {
    /// As the user named it: `NAME`, a path, or `pid:PID`.
    pub spec: String,
    pub path: PathBuf,
    /// The namespace's inode (as `ip netns identify` and /proc/PID/ns/net
    /// show it): what tells namespaces apart.
    pub inode: u64,
    file: File,
}

impl NetNs {
    /// Resolves and opens `NAME` (under /run/netns), a path to an nsfs
    /// file, or `pid:PID` (that process's network namespace; for a zombie
    /// thread-group leader, a live thread's). The file is opened without
    /// blocking (a FIFO is refused at once) and must be a network
    /// namespace (NS_GET_NSTYPE). Bad input is a usage error naming it.
    pub fn open(spec: &str) -> Result<NetNs, Error> {
        let (path, pid) = spec_path(spec)?;
        let (path, file) = match (open_nonblocking(&path), pid) {
            (Ok(file), _) => Ok((path.clone(), file)),
            // A zombie thread-group leader has no namespaces of its own any
            // more; its live threads still have theirs.
            (Err(e), Some(pid)) => live_thread_netns(pid).ok_or(e),
            (Err(e), None) => Err(e),
        }
        .map_err(|e| {
            Error::Usage(format!(
                "--netns {}: cannot open {}: {e}",
                echo(spec),
                echo(&path.to_string_lossy())
            ))
        })?;
        let meta = file.metadata().map_err(|e| Error::syscall("fstat", e))?;
        check_network_namespace(spec, &path, &file)?;
        Ok(NetNs {
            spec: spec.to_string(),
            path,
            inode: meta.ino(),
            file,
        })
    }

    /// The name `ip netns` knows it by, when it is one of /run/netns.
    pub fn name(&self) -> Option<String> {
        let named = std::path::Path::new(NAMED);
        if self.path.parent() == Some(named) {
            return self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
        }
        // pid:PID or a path: look for a named namespace with that inode.
        std::fs::read_dir(named).ok()?.find_map(|entry| {
            let entry = entry.ok()?;
            (std::fs::metadata(entry.path()).ok()?.ino() == self.inode)
                .then(|| entry.file_name().to_string_lossy().into_owned())
        })
    }

    /// How reports name it: its inode, and its name if it has one.
    pub fn info(&self) -> crate::report::NetnsInfo {
        crate::report::NetnsInfo {
            inode: self.inode,
            name: self.name(),
        }
    }

    /// Runs `work` on a thread of its own that has entered this namespace,
    /// and returns what it returns. Entering needs CAP_SYS_ADMIN: without
    /// it, one error line says so.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, Error> {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("sockcheck-netns".into())
                .spawn_scoped(scope, || {
                    rustix::thread::move_into_link_name_space(
                        self.file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .map_err(|e| self.enter_error(e))?;
                    Ok(work())
                })
                .map_err(|e| Error::syscall("starting the --netns thread (pthread_create)", e))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn enter_error(&self, errno: rustix::io::Errno) -> Error {
        let why = if errno == rustix::io::Errno::PERM {
            " (entering a network namespace needs CAP_SYS_ADMIN: run as root)".to_string()
        } else {
            String::new()
        };
        Error::Syscall {
            call: format!("setns(--netns {}, CLONE_NEWNET){why}", echo(&self.spec)),
            source: errno.into(),
        }
    }
}

/// Opens `path` for reading without waiting (a FIFO opens at once, and is
/// then refused as no namespace) and without taking a terminal.
/// The file `--netns SPEC` names, and the pid of `pid:PID`.
fn spec_path(spec: &str) -> Result<(PathBuf, Option<u32>), Error> {
    let pid = match spec.strip_prefix("pid:") {
        Some(pid) => Some(
            pid.parse::<u32>()
                .ok()
                .filter(|p| *p > 0 && pid.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| Error::Usage(format!("--netns: {} is not pid:PID", echo(spec))))?,
        ),
        None => None,
    };
    let path = if let Some(pid) = pid {
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    } else if spec.contains('/') {
        PathBuf::from(spec)
    } else if !spec.is_empty() && spec != "." && spec != ".." {
        PathBuf::from(NAMED).join(spec)
    } else {
        return Err(Error::Usage(format!(
            "--netns: {} is not a namespace name, path or pid:PID",
            echo(spec)
        )));
    };
    Ok((path, pid))
}

/// Whether `file` (opened from `path` for `--netns SPEC`) is a network
/// namespace: on nsfs, and NS_GET_NSTYPE says CLONE_NEWNET.
fn check_network_namespace(spec: &str, path: &Path, file: &File) -> Result<(), Error> {
    let not = |what: &str| {
        Error::Usage(format!(
            "--netns {}: {} is not {what}",
            echo(spec),
            echo(&path.to_string_lossy())
        ))
    };
    // nsfs: what /proc/PID/ns/net and `ip netns add` bind mounts are.
    let statfs =
        rustix::fs::fstatfs(file.as_fd()).map_err(|e| Error::syscall("fstatfs", e.into()))?;
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    if statfs.f_type as i64 != NSFS_MAGIC {
        return Err(not("a namespace (not on nsfs)"));
    }
    match namespace_type(file) {
        Ok(libc::CLONE_NEWNET) => Ok(()),
        Ok(other) => Err(not(&format!(
            "a network namespace (it is a {} namespace)",
            kind(other)
        ))),
        Err(e) => Err(not(&format!(
            "known to be a network namespace (NS_GET_NSTYPE failed: {e})"
        ))),
    }
}

fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map(File::from)
    .map_err(Into::into)
}

/// The network namespace of a live thread of `pid`, for a zombie
/// thread-group leader whose other threads live on: its path and the file.
fn live_thread_netns(pid: u32) -> Option<(PathBuf, File)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|task| {
        let tid = task.file_name();
        if tid.to_str() == Some(&pid.to_string()) {
            return None;
        }
        let path = task.path().join("ns/net");
        open_nonblocking(&path).ok().map(|file| (path, file))
    })
}

/// The namespace type (a CLONE_NEW* flag) of an nsfs file: the
/// NS_GET_NSTYPE ioctl, `_IO(0xb7, 0x3)` (Linux 4.11).
fn namespace_type(file: &File) -> std::io::Result<libc::c_int> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl that takes no argument, on an fd we own.
    let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(nstype)
    }
}

/// `mount`, `pid`, `user`…: what a CLONE_NEW* flag names.
fn kind(nstype: libc::c_int) -> String {
    match nstype {
        libc::CLONE_NEWNS => "mount".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        0x80 => "time".into(), // CLONE_NEWTIME
        other => format!("type {other:#x}"),
    }
}

/// The inode of sockcheck's own network namespace.
pub fn own_inode() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_that_name_no_namespace_are_usage_errors() {
        for (spec, needle) in [
            ("pid:", "is not pid:PID"),
            ("pid:+5", "is not pid:PID"),
            ("pid:0", "is not pid:PID"),
            ("", "is not a namespace name"),
            ("..", "is not a namespace name"),
            ("/etc/hostname", "is not a namespace"),
            ("/proc/self/ns/mnt", "(it is a mount namespace)"),
            ("/proc/self/ns/pid", "(it is a pid namespace)"),
            ("/proc/self/ns/user", "(it is a user namespace)"),
            ("no-such-namespace-for-sure", "cannot open"),
        ] {
            let e = NetNs::open(spec).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{spec:?}: {e}");
            assert!(e.to_string().contains(needle), "{spec:?}: {e}");
        }
    }

    #[test]
    fn our_own_namespace_by_pid() {
        let ns = NetNs::open(&format!("pid:{}", std::process::id())).unwrap();
        assert_eq!(Some(ns.inode), own_inode());
        // Entering the namespace we are in: allowed only with
        // CAP_SYS_ADMIN, and then the work runs there.
        let thread_inode = || {
            std::fs::metadata("/proc/thread-self/ns/net")
                .ok()
                .map(|m| m.ino())
        };
        match ns.run(thread_inode) {
            Ok(inode) => assert_eq!(inode, Some(ns.inode)),
            Err(e) => assert!(e.to_string().contains("CAP_SYS_ADMIN"), "{e}"),
        }
    }
}
