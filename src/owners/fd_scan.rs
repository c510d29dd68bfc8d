//! The fd scan: every /proc/PID/fd entry is a symlink, and the only way to
//! learn which socket it is, is readlink. This loop uses raw `openat` +
//! `getdents64` + `readlinkat` with reused buffers (no path allocation and
//! no stat per fd), and reads fd tables in parallel on every core. Thread
//! fd tables (/proc/PID/task/TID/fd) are read only for a process whose
//! thread-group leader is a zombie: then /proc/PID/fd is empty although the
//! live threads still hold the shared table — the shape that ss -p, lsof,
//! fuser and netstat all miss.

use std::collections::HashSet;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir};
use rustix::io::Errno;

use super::{FdRef, FdScan, ProcRoot, Unreadable, parse_u32, socket_inode};
use crate::error::Error;

/// Finds every process (and, for zombie leaders, every thread) that holds
/// one of `inodes`, in the /proc at `root`. Never call this with an empty
/// set: a free address must not pay for a /proc scan.
pub fn scan(root: &ProcRoot, inodes: &HashSet<u64>) -> Result<FdScan, Error> {
    let unreadable = |e: Errno| Error::Proc {
        path: root.path().display().to_string(),
        source: e.into(),
    };
    let proc_dir = open_dir(rustix::fs::CWD, root.c_path()).map_err(unreadable)?;
    let mut pids = list_numeric(&proc_dir).map_err(unreadable)?;
    // Kernel threads hold no fds: not reading them saves an openat each,
    // and, unprivileged, keeps them out of the unreadable candidates.
    let kernel = kernel_threads(root);
    pids.retain(|pid| !kernel.contains(pid));
    let mut scan = scan_pids(root, &proc_dir, &pids, inodes);
    scan.unreadable.sort_by_key(|u| u.pid);
    scan.looked_up = true;
    if root.unprivileged_uid().is_some() {
        scan.invisible = proc_hidepid(root)
            .filter(|mode| matches!(mode.as_str(), "2" | "invisible" | "4" | "ptraceable"));
    }
    Ok(scan)
}

/// Reads the fd tables of `pids`, on up to 8 threads (one per core).
fn scan_pids(root: &ProcRoot, proc_dir: &OwnedFd, pids: &[u32], inodes: &HashSet<u64>) -> FdScan {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
        .min(pids.len().max(1));
    let next = AtomicUsize::new(0);
    let merged = Mutex::new(FdScan::default());
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let work = || {
                let mut local = FdScan::default();
                let mut scanner = Scanner::new(root, proc_dir, inodes);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&pid) = pids.get(index) else { break };
                    scanner.process(pid, &mut local);
                }
                let mut all = merged.lock().unwrap_or_else(|p| p.into_inner());
                all.merge(local);
            };
            // The last worker is this thread; another that cannot be
            // started (pids.max, RLIMIT_NPROC, memory) leaves its share to
            // the workers that run: slower, never a panic.
            if worker + 1 == workers {
                work();
            } else {
                let _ = std::thread::Builder::new().spawn_scoped(scope, work);
            }
        }
    });
    merged.into_inner().unwrap_or_else(|p| p.into_inner())
}

impl FdScan {
    /// Adds what another worker read.
    fn merge(&mut self, other: FdScan) {
        self.processes += other.processes;
        self.fds += other.fds;
        self.unreadable.extend(other.unreadable);
        for (inode, pids) in other.holders {
            self.holders.entry(inode).or_default().extend(pids);
        }
    }
}

/// Whether process `pid` holds one of `inodes` now, read as [`scan`] reads
/// it (for a zombie leader, through its live threads' fd tables). `None`
/// when its fd table cannot be read.
pub fn holds(pid: u32, inodes: &HashSet<u64>) -> Option<bool> {
    let root = ProcRoot::system();
    let proc_dir = open_dir(rustix::fs::CWD, root.c_path()).ok()?;
    let mut out = FdScan::default();
    Scanner::new(&root, &proc_dir, inodes).process(pid, &mut out);
    if out.holders.values().any(|pids| pids.contains_key(&pid)) {
        Some(true)
    } else if out.unreadable.iter().any(|u| u.pid == pid) {
        None
    } else {
        Some(false)
    }
}

struct Scanner<'a> {
    root: &'a ProcRoot,
    proc_dir: &'a OwnedFd,
    inodes: &'a HashSet<u64>,
    dirents: Vec<MaybeUninit<u8>>,
    link: [MaybeUninit<u8>; 64],
    path: String,
    /// Our euid, when we lack CAP_SYS_PTRACE (see
    /// [`ProcRoot::unprivileged_uid`]).
    unprivileged_uid: Option<u32>,
    /// Set when a link of the table being read could not be read.
    denied: bool,
}

impl<'a> Scanner<'a> {
    fn new(root: &'a ProcRoot, proc_dir: &'a OwnedFd, inodes: &'a HashSet<u64>) -> Self {
        Scanner {
            root,
            proc_dir,
            inodes,
            dirents: vec![MaybeUninit::uninit(); 32 * 1024],
            link: [MaybeUninit::uninit(); 64],
            path: String::with_capacity(64),
            unprivileged_uid: root.unprivileged_uid(),
            denied: false,
        }
    }

    fn process(&mut self, pid: u32, out: &mut FdScan) {
        use std::fmt::Write;
        // Without CAP_SYS_PTRACE, another uid's fd table is never readable
        // (/proc/PID is owned by the process's euid): one statat tells, and
        // the openat that would fail with EACCES is not made.
        if let Some(me) = self.unprivileged_uid {
            self.path.clear();
            let _ = write!(self.path, "{pid}");
            match rustix::fs::statat(self.proc_dir, self.path.as_str(), AtFlags::empty()) {
                Ok(st) if st.st_uid != me => {
                    out.unreadable.push(Unreadable {
                        pid,
                        uid: Some(st.st_uid),
                    });
                    return;
                }
                Ok(_) => {}
                Err(_) => return, // gone
            }
        }
        self.path.clear();
        let _ = write!(self.path, "{pid}/fd");
        let dir = match open_dir(self.proc_dir, self.path.as_str()) {
            Ok(dir) => dir,
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                // A zombie leader's fd directory belongs to root (it has no
                // mm), while its live threads' tables may still be ours.
                if !self.zombie_leader_threads(pid, out) {
                    let uid = rustix::fs::statat(self.proc_dir, pid.to_string(), AtFlags::empty())
                        .ok()
                        .map(|st| st.st_uid);
                    out.unreadable.push(Unreadable { pid, uid });
                }
                return;
            }
            // The process is gone, or is a kernel thread that exited.
            Err(_) => return,
        };
        out.processes += 1;
        let mut found = Vec::new();
        self.denied = false;
        let entries = self.read_fd_table(&dir, &mut found);
        out.fds += entries;
        if self.denied {
            let uid = rustix::fs::statat(self.proc_dir, pid.to_string(), AtFlags::empty())
                .ok()
                .map(|st| st.st_uid);
            out.unreadable.push(Unreadable { pid, uid });
        }
        if entries == 0 {
            // An empty table: a kernel thread, a zombie, or a zombie leader
            // whose other threads live on with the shared table.
            self.zombie_leader_threads(pid, out);
            return;
        }
        for (inode, fd) in found {
            push(out, inode, pid, fd, None);
        }
    }

    /// Reads one fd directory; returns how many entries it had, and the
    /// sockets of interest in `found`.
    ///
    /// Since Linux 6.2 `stat` of /proc/PID/fd gives the number of open fds
    /// as its size. Fd tables are dense (the lowest free number is always
    /// taken), so the fds are read by number, 0, 1, 2, …, until that many
    /// were found: no getdents64, whose proc_fill_cache is a quarter of the
    /// scan's kernel time. A sparse table (too many gaps) falls back to
    /// getdents64 for the numbers not tried yet.
    fn read_fd_table(&mut self, dir: &OwnedFd, found: &mut Vec<(u64, u32)>) -> usize {
        let open = rustix::fs::fstat(dir).map_or(0, |st| st.st_size.max(0) as usize);
        if open == 0 {
            return self.read_by_dirents(dir, 0, found);
        }
        let (entries, next) = self.read_by_number(dir, open, found);
        // Done, unless the table changed while it was read (an fd opened
        // below one not yet reached): then getdents64 reads the numbers not
        // tried yet.
        let now = rustix::fs::fstat(dir).map(|st| st.st_size as usize);
        if entries >= open && now.is_ok_and(|n| n == open) {
            return entries;
        }
        entries + self.read_by_dirents(dir, next, found)
    }

    /// Reads fds 0, 1, 2, … by number until `open` were found or too many
    /// numbers were missing; returns how many were found and the first
    /// number not tried.
    fn read_by_number(
        &mut self,
        dir: &OwnedFd,
        open: usize,
        found: &mut Vec<(u64, u32)>,
    ) -> (usize, u32) {
        let mut entries = 0usize;
        let mut next: u32 = 0;
        let mut misses = 0usize;
        let budget = open / 4 + 16;
        let mut name = [0u8; 12];
        while entries < open && misses <= budget {
            let fd = next;
            next += 1;
            let cname = fd_name(fd, &mut name);
            match rustix::fs::readlinkat_raw(dir, cname, &mut self.link[..]) {
                Ok((link, _)) => {
                    entries += 1;
                    keep(self.inodes, link, fd, found);
                }
                Err(Errno::NOENT) => misses += 1,
                // The fd exists but its link cannot be read: the table is
                // not fully readable (seen for pid 1 in some sandboxes,
                // even as root).
                Err(_) => {
                    entries += 1;
                    self.denied = true;
                }
            }
        }
        (entries, next)
    }

    /// Reads the fds numbered `from` and above, as getdents64 lists them;
    /// returns how many there were.
    fn read_by_dirents(&mut self, dir: &OwnedFd, from: u32, found: &mut Vec<(u64, u32)>) -> usize {
        let mut entries = 0usize;
        let mut raw = RawDir::new(dir, &mut self.dirents);
        while let Some(entry) = raw.next() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name();
            let Some(fd) = parse_u32(name.to_bytes()) else {
                continue;
            };
            if fd < from {
                continue; // read by number before
            }
            entries += 1;
            match rustix::fs::readlinkat_raw(dir, name, &mut self.link[..]) {
                Ok((link, _)) => keep(self.inodes, link, fd, found),
                Err(_) => self.denied = true,
            }
        }
        entries
    }

    /// Reads the fd tables of a zombie leader's live threads. Returns false
    /// when `pid` is not a zombie leader with live threads.
    fn zombie_leader_threads(&mut self, pid: u32, out: &mut FdScan) -> bool {
        let Ok(process) = procfs::process::Process::new_with_root(self.root.join(pid.to_string()))
        else {
            return false;
        };
        let Ok(stat) = process.stat() else {
            return false;
        };
        if stat.state != 'Z' || stat.num_threads <= 1 {
            return false;
        }
        use std::fmt::Write;
        self.path.clear();
        let _ = write!(self.path, "{pid}/task");
        let tids = open_dir(self.proc_dir, self.path.as_str())
            .and_then(|tasks| list_numeric(&tasks).map(|tids| (tasks, tids)));
        let Ok((tasks, tids)) = tids else {
            return true;
        };
        for tid in tids.into_iter().filter(|&tid| tid != pid) {
            self.path.clear();
            let _ = write!(self.path, "{tid}/fd");
            let dir = match open_dir(&tasks, self.path.as_str()) {
                Ok(dir) => dir,
                Err(Errno::ACCESS) | Err(Errno::PERM) => {
                    out.unreadable.push(Unreadable {
                        pid,
                        uid: process.uid().ok(),
                    });
                    return true;
                }
                Err(_) => continue,
            };
            let mut found = Vec::new();
            out.fds += self.read_fd_table(&dir, &mut found);
            for (inode, fd) in found {
                push(out, inode, pid, fd, Some(tid));
            }
        }
        true
    }
}

/// Kernel threads: kthreadd (pid 2) and its children, from one read of
/// /proc/2/task/2/children (readable by anyone). Only when pid 2 is
/// kthreadd (PF_KTHREAD in its flags): in a pid namespace (a container,
/// `unshare --pid`) pid 2 is an ordinary process whose children may hold
/// sockets.
fn kernel_threads(root: &ProcRoot) -> HashSet<u32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let kthreadd = std::fs::read_to_string(root.join("2/stat")).is_ok_and(|stat| {
        // `pid (comm) state ppid pgrp session tty_nr tpgid flags ...`
        stat.rfind(')')
            .and_then(|at| stat[at + 1..].split_whitespace().nth(6))
            .and_then(|flags| flags.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_KTHREAD != 0)
    });
    if !kthreadd {
        return HashSet::new();
    }
    let mut threads = HashSet::from([2]);
    if let Ok(children) = std::fs::read_to_string(root.join("2/task/2/children")) {
        threads.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    threads
}

/// The `hidepid=` option of the /proc mount, if any (`/proc/self/mountinfo`:
/// the super options follow the ` - proc proc ` separator).
fn proc_hidepid(root: &ProcRoot) -> Option<String> {
    let mountinfo = std::fs::read_to_string(root.join("self/mountinfo")).ok()?;
    let mount_point = root.path().to_str()?;
    mountinfo
        .lines()
        .filter(|line| line.split_whitespace().nth(4) == Some(mount_point))
        .filter_map(|line| {
            line.split_once(" - proc ")
                .map(|(_, rest)| rest.to_string())
        })
        .flat_map(|rest| {
            rest.split([' ', ','])
                .filter_map(|o| o.strip_prefix("hidepid=").map(str::to_string))
                .collect::<Vec<_>>()
        })
        .next()
}

/// Keeps `fd` when its link is one of the sockets in `inodes`.
fn keep(inodes: &HashSet<u64>, link: &[u8], fd: u32, found: &mut Vec<(u64, u32)>) {
    if let Some(inode) = socket_inode(link)
        && inodes.contains(&inode)
    {
        found.push((inode, fd));
    }
}

fn push(out: &mut FdScan, inode: u64, pid: u32, fd: u32, tid: Option<u32>) {
    let refs = out
        .holders
        .entry(inode)
        .or_default()
        .entry(pid)
        .or_default();
    match refs.iter_mut().find(|r| r.fd == fd) {
        Some(existing) => existing.via_tids.extend(tid),
        None => refs.push(FdRef {
            fd,
            via_tids: tid.into_iter().collect(),
        }),
    }
}

fn open_dir<P: rustix::path::Arg>(at: impl AsFd, path: P) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        at,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The numeric names in a directory (pids in /proc, tids in task/).
fn list_numeric(dir: &OwnedFd) -> Result<Vec<u32>, Errno> {
    let mut buffer = vec![MaybeUninit::uninit(); 32 * 1024];
    let mut raw = RawDir::new(dir, &mut buffer);
    let mut out = Vec::new();
    while let Some(entry) = raw.next() {
        let entry = entry?;
        if let Some(n) = parse_u32(entry.file_name().to_bytes()) {
            out.push(n);
        }
    }
    // In order, as /proc lists them (a fixture tree's file system may not).
    out.sort_unstable();
    Ok(out)
}

/// `fd` as a NUL-terminated decimal name in `buffer`.
fn fd_name(fd: u32, buffer: &mut [u8; 12]) -> &std::ffi::CStr {
    let mut digits = [0u8; 10];
    let mut n = fd;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (slot, &digit) in buffer.iter_mut().zip(digits[..len].iter().rev()) {
        *slot = digit;
    }
    buffer[len] = 0;
    std::ffi::CStr::from_bytes_with_nul(&buffer[..=len]).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_a_socket_of_this_process() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let scan = scan(&ProcRoot::system(), &HashSet::from([inode])).unwrap();
        let me = std::process::id();
        let refs = &scan.holders[&inode][&me];
        assert_eq!(refs[0].fd, fd as u32);
        assert!(refs[0].via_tids.is_empty());
        assert_eq!(holds(me, &HashSet::from([inode])), Some(true));
        drop(listener);
        assert_eq!(holds(me, &HashSet::from([inode])), Some(false));
    }
}
