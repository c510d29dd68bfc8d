//! Who holds a socket: inode → processes, read from /proc.
//!
//! The hot part is the fd scan: every /proc/PID/fd entry is a symlink, and the
//! only way to learn which socket it is, is readlink. This loop uses raw
//! `openat` + `getdents64` + `readlinkat` with reused buffers (no path
//! allocation and no stat per fd), and reads fd tables in parallel on every
//! core. Thread fd tables (/proc/PID/task/TID/fd) are read only for a
//! process whose thread-group leader is a zombie: then /proc/PID/fd is empty
//! although the live threads still hold the shared table — the shape that ss
//! -p, lsof, fuser and netstat all miss.

use std::collections::{BTreeMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RawDir};
use rustix::io::Errno;
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::text::Bytes;

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

/// Finds every process (and, for zombie leaders, every thread) that holds
/// one of `inodes`. Never call this with an empty set: a free address must
/// not pay for a /proc scan.
pub fn scan(inodes: &HashSet<u64>) -> Result<FdScan, Error> {
    let proc_dir = open_dir(rustix::fs::CWD, c"/proc").map_err(|e| Error::Proc {
        path: "/proc".into(),
        source: e.into(),
    })?;
    let mut pids = list_numeric(&proc_dir).map_err(|e| Error::Proc {
        path: "/proc".into(),
        source: e.into(),
    })?;
    // Kernel threads hold no fds: not reading them saves an openat each,
    // and, unprivileged, keeps them out of the unreadable candidates.
    let kernel = kernel_threads();
    pids.retain(|pid| !kernel.contains(pid));
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
                let mut scanner = Scanner::new(&proc_dir, inodes);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&pid) = pids.get(index) else { break };
                    scanner.process(pid, &mut local);
                }
                let mut all = merged.lock().unwrap_or_else(|p| p.into_inner());
                all.processes += local.processes;
                all.fds += local.fds;
                all.unreadable.extend(local.unreadable);
                for (inode, pids) in local.holders {
                    all.holders.entry(inode).or_default().extend(pids);
                }
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
    let mut scan = merged.into_inner().unwrap_or_else(|p| p.into_inner());
    scan.unreadable.sort_by_key(|u| u.pid);
    scan.looked_up = true;
    if unprivileged_uid().is_some() {
        scan.invisible = proc_hidepid()
            .filter(|mode| matches!(mode.as_str(), "2" | "invisible" | "4" | "ptraceable"));
    }
    Ok(scan)
}

/// Whether process `pid` holds one of `inodes` now, read as [`scan`] reads
/// it (for a zombie leader, through its live threads' fd tables). `None`
/// when its fd table cannot be read.
pub fn holds(pid: u32, inodes: &HashSet<u64>) -> Option<bool> {
    let proc_dir = open_dir(rustix::fs::CWD, c"/proc").ok()?;
    let mut out = FdScan::default();
    Scanner::new(&proc_dir, inodes).process(pid, &mut out);
    if out.holders.values().any(|pids| pids.contains_key(&pid)) {
        Some(true)
    } else if out.unreadable.iter().any(|u| u.pid == pid) {
        None
    } else {
        Some(false)
    }
}

struct Scanner<'a> {
    proc_dir: &'a OwnedFd,
    inodes: &'a HashSet<u64>,
    dirents: Vec<MaybeUninit<u8>>,
    link: [MaybeUninit<u8>; 64],
    path: String,
    /// Our euid, when we lack CAP_SYS_PTRACE.
    unprivileged_uid: Option<u32>,
    /// Set when a link of the table being read could not be read.
    denied: bool,
}

impl<'a> Scanner<'a> {
    fn new(proc_dir: &'a OwnedFd, inodes: &'a HashSet<u64>) -> Self {
        Scanner {
            proc_dir,
            inodes,
            dirents: vec![MaybeUninit::uninit(); 32 * 1024],
            link: [MaybeUninit::uninit(); 64],
            path: String::with_capacity(64),
            unprivileged_uid: unprivileged_uid(),
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
        let open = rustix::fs::fstat(dir).map(|st| st.st_size).unwrap_or(0);
        let mut entries = 0usize;
        let mut next: u32 = 0;
        if open > 0 {
            let open = open as usize;
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
                        if let Some(inode) = socket_inode(link)
                            && self.inodes.contains(&inode)
                        {
                            found.push((inode, fd));
                        }
                    }
                    Err(Errno::NOENT) => misses += 1,
                    // The fd exists but its link cannot be read: the
                    // table is not fully readable (seen for pid 1 in
                    // some sandboxes, even as root).
                    Err(_) => {
                        entries += 1;
                        self.denied = true;
                    }
                }
            }
            // Done, unless the table changed while it was read (an fd
            // opened below one not yet reached): then getdents64 reads the
            // numbers not tried yet.
            let now = rustix::fs::fstat(dir).map(|st| st.st_size as usize);
            if entries >= open && now.is_ok_and(|n| n == open) {
                return entries;
            }
        }
        let mut raw = RawDir::new(dir, &mut self.dirents);
        while let Some(entry) = raw.next() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name();
            let Some(fd) = parse_u32(name.to_bytes()) else {
                continue;
            };
            if fd < next {
                continue; // read by number above
            }
            entries += 1;
            let Ok((link, _)) = rustix::fs::readlinkat_raw(dir, name, &mut self.link[..]) else {
                self.denied = true;
                continue;
            };
            if let Some(inode) = socket_inode(link)
                && self.inodes.contains(&inode)
            {
                found.push((inode, fd));
            }
        }
        entries
    }

    /// Reads the fd tables of a zombie leader's live threads. Returns false
    /// when `pid` is not a zombie leader with live threads.
    fn zombie_leader_threads(&mut self, pid: u32, out: &mut FdScan) -> bool {
        let Ok(process) = procfs::process::Process::new(pid as i32) else {
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
fn kernel_threads() -> HashSet<u32> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let kthreadd = std::fs::read_to_string("/proc/2/stat").is_ok_and(|stat| {
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
    if let Ok(children) = std::fs::read_to_string("/proc/2/task/2/children") {
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
fn proc_hidepid() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo
        .lines()
        .filter(|line| line.split_whitespace().nth(4) == Some("/proc"))
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

fn unprivileged_uid() -> Option<u32> {
    let caps = rustix::thread::capabilities(None).ok()?;
    if caps
        .effective
        .contains(rustix::thread::CapabilitySet::SYS_PTRACE)
    {
        None
    } else {
        Some(rustix::process::geteuid().as_raw())
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

fn parse_u32(bytes: &[u8]) -> Option<u32> {
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

/// What a person wants to know about a holder process.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessInfo {
    /// Serialized by the owner that carries it.
    #[serde(skip)]
    pub pid: u32,
    pub comm: Bytes,
    pub cmdline: Vec<Bytes>,
    pub state: ProcessState,
    /// Live threads (for a zombie leader: the threads that live on).
    pub tids: Vec<u32>,
    pub uid: Option<u32>,
    pub ppid: Option<u32>,
    /// Start time, seconds since the Unix epoch.
    pub start_time: Option<u64>,
    /// Start time as /proc/PID/stat gives it (clock ticks since boot), read
    /// with the rest: with the pid, what tells this process from a later
    /// one given the same pid (`reap` checks it before signalling). Not
    /// serialized: `start_time` is its public form.
    #[serde(skip)]
    pub start_ticks: Option<u64>,
    /// Seconds since it started.
    pub age_seconds: Option<u64>,
    /// Its pid in its own pid namespace, when that is not sockcheck's (a
    /// container's): the last of /proc/PID/status's NSpid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// Its cgroup (v2) path, when it is in another pid namespace or the
    /// path names a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container the cgroup path names (docker, containerd, CRI-O,
    /// podman, a systemd machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// A container, as a cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, `kubepods` or
    /// `systemd-machine`.
    pub runtime: &'static str,
    pub id: String,
}

/// The container a cgroup path names, if any: a `docker-ID.scope`,
/// `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`
/// (podman) or `machine-NAME.scope` segment, or a 64-hex-digit segment
/// under `/docker/` or `/kubepods`.
pub fn container_of(cgroup: &str) -> Option<Container> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let segments: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate().rev() {
        if let Some(scope) = segment.strip_suffix(".scope") {
            for (prefix, runtime) in [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("crio-", "cri-o"),
                ("libpod-", "podman"),
            ] {
                if let Some(id) = scope.strip_prefix(prefix).filter(|id| hex64(id)) {
                    return Some(Container {
                        runtime,
                        id: id.to_string(),
                    });
                }
            }
            if let Some(name) = scope.strip_prefix("machine-") {
                return Some(Container {
                    runtime: "systemd-machine",
                    id: name.to_string(),
                });
            }
        }
        if hex64(segment) {
            let runtime = match segments[..i].first() {
                Some(&"docker") => "docker",
                Some(s) if s.starts_with("kubepods") => "kubepods",
                _ => continue,
            };
            return Some(Container {
                runtime,
                id: segment.to_string(),
            });
        }
    }
    None
}

/// Where a process lives: its pid in its own pid namespace (when that is
/// not sockcheck's), its cgroup and its container, as far as they tell.
fn whereabouts(
    process: &procfs::process::Process,
    pid: u32,
) -> (Option<u32>, Option<String>, Option<Container>) {
    let ns_pid = process
        .status()
        .ok()
        .and_then(|s| s.nspid)
        .and_then(|levels| levels.last().copied())
        .map(|p| p as u32)
        .filter(|&p| p != pid);
    let cgroup = process
        .cgroups()
        .ok()
        .and_then(|groups| groups.0.into_iter().find(|g| g.hierarchy == 0))
        .map(|g| g.pathname);
    let container = cgroup.as_deref().and_then(container_of);
    let cgroup = cgroup.filter(|_| ns_pid.is_some() || container.is_some());
    (ns_pid, cgroup, container)
}

/// Reads the details of a holder. The process may have exited since the
/// scan; then what could be read is returned.
pub fn describe(pid: u32) -> ProcessInfo {
    let process = procfs::process::Process::new(pid as i32).ok();
    let stat = process.as_ref().and_then(|p| p.stat().ok());
    let tids = process.as_ref().map(live_tids).unwrap_or_default();
    let state = match stat.as_ref().map(|s| s.state) {
        Some('Z') if !tids.is_empty() => ProcessState::ZombieLeader,
        Some(c) => ProcessState::from_stat(c),
        None => ProcessState::Gone,
    };
    // procfs reads cmdline into a String (failing on non-UTF-8) and comm
    // lossily; a holder's name is chosen by the process and may be any
    // bytes, so these two are read raw and carried losslessly.
    let cmdline = raw_cmdline(pid, state, &tids);
    let comm = raw_comm(pid, stat.as_ref());
    let (start_time, age_seconds) = stat.as_ref().map(start_and_age).unwrap_or_default();
    let (ns_pid, cgroup, container) = process
        .as_ref()
        .map(|p| whereabouts(p, pid))
        .unwrap_or_default();
    ProcessInfo {
        pid,
        comm,
        cmdline,
        state,
        tids,
        uid: process.as_ref().and_then(|p| p.uid().ok()),
        ppid: stat.as_ref().map(|s| s.ppid as u32),
        start_time,
        start_ticks: stat.as_ref().map(|s| s.starttime),
        age_seconds,
        ns_pid,
        cgroup,
        container,
    }
}

/// The tids of a process's threads (/proc/PID/task) that are not zombie
/// or dead; a thread whose stat cannot be read counts as live.
fn live_tids(process: &procfs::process::Process) -> Vec<u32> {
    process
        .tasks()
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| {
                    let tid = task.tid as u32;
                    match task.stat() {
                        Ok(st) if st.state == 'Z' || st.state == 'X' => None,
                        _ => Some(tid),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The command line's arguments from /proc/PID/cmdline, as raw bytes
/// (empty arguments left out). A zombie leader has no mm of its own; its
/// first live thread's cmdline is read instead.
fn raw_cmdline(pid: u32, state: ProcessState, tids: &[u32]) -> Vec<Bytes> {
    let cmdline_path = match (state, tids.first()) {
        (ProcessState::ZombieLeader, Some(tid)) => format!("/proc/{pid}/task/{tid}/cmdline"),
        _ => format!("/proc/{pid}/cmdline"),
    };
    std::fs::read(cmdline_path)
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| Bytes(a.to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// The comm from /proc/PID/comm as raw bytes without its newline; when it
/// cannot be read, the (lossy) comm of /proc/PID/stat, or empty.
fn raw_comm(pid: u32, stat: Option<&procfs::process::Stat>) -> Bytes {
    std::fs::read(format!("/proc/{pid}/comm"))
        .map(|mut raw| {
            if raw.last() == Some(&b'\n') {
                raw.pop();
            }
            Bytes(raw)
        })
        .unwrap_or_else(|_| {
            Bytes(
                stat.map(|s| s.comm.clone())
                    .unwrap_or_default()
                    .into_bytes(),
            )
        })
}

/// When the process started (Unix seconds: the boot time plus its stat
/// starttime in clock ticks) and how many seconds ago that was.
fn start_and_age(stat: &procfs::process::Stat) -> (Option<u64>, Option<u64>) {
    let start_time = procfs::boot_time_secs()
        .ok()
        .map(|boot| boot + stat.starttime / procfs::ticks_per_second());
    let age_seconds = start_time.and_then(|start| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        now.checked_sub(start)
    });
    (start_time, age_seconds)
}

/// A holder's state, from the state letter of /proc/PID/stat, serialized
/// as `running`, `sleeping`, `disk-sleep`, `stopped`, `tracing-stop`,
/// `zombie`, `zombie-leader`, `dead`, `idle`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessState {
    Running,
    Sleeping,
    DiskSleep,
    Stopped,
    TracingStop,
    /// A zombie without live threads.
    Zombie,
    /// A thread-group leader that exited while other threads live on: its
    /// /proc/PID/fd is empty, and the threads hold the fd table.
    ZombieLeader,
    Dead,
    Idle,
    Parked,
    Waking,
    Wakekill,
    Unknown,
    /// The process exited before it could be described.
    Gone,
}

impl ProcessState {
    /// The state of a process whose stat has `letter` (a zombie leader is
    /// told apart by its live threads, not by the letter).
    fn from_stat(letter: char) -> ProcessState {
        match letter {
            'R' => ProcessState::Running,
            'S' => ProcessState::Sleeping,
            'D' => ProcessState::DiskSleep,
            'T' => ProcessState::Stopped,
            't' => ProcessState::TracingStop,
            'Z' => ProcessState::Zombie,
            'X' | 'x' => ProcessState::Dead,
            'I' => ProcessState::Idle,
            'P' => ProcessState::Parked,
            'W' => ProcessState::Waking,
            'K' => ProcessState::Wakekill,
            _ => ProcessState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Sleeping => "sleeping",
            ProcessState::DiskSleep => "disk-sleep",
            ProcessState::Stopped => "stopped",
            ProcessState::TracingStop => "tracing-stop",
            ProcessState::Zombie => "zombie",
            ProcessState::ZombieLeader => "zombie-leader",
            ProcessState::Dead => "dead",
            ProcessState::Idle => "idle",
            ProcessState::Parked => "parked",
            ProcessState::Waking => "waking",
            ProcessState::Wakekill => "wakekill",
            ProcessState::Unknown => "unknown",
            ProcessState::Gone => "gone",
        }
    }
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_their_names() {
        for letter in "RSDTtZXIPWK?".chars() {
            let state = ProcessState::from_stat(letter);
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str(), "{letter}");
        }
        for state in [ProcessState::ZombieLeader, ProcessState::Gone] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert_eq!(ProcessState::ZombieLeader.as_str(), "zombie-leader");
        assert_eq!(ProcessState::from_stat('t').as_str(), "tracing-stop");
        assert_eq!(ProcessState::from_stat('D').as_str(), "disk-sleep");
    }

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

    #[test]
    fn scan_finds_a_socket_of_this_process() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let scan = scan(&HashSet::from([inode])).unwrap();
        let me = std::process::id();
        let refs = &scan.holders[&inode][&me];
        assert_eq!(refs[0].fd, fd as u32);
        assert!(refs[0].via_tids.is_empty());
        assert_eq!(holds(me, &HashSet::from([inode])), Some(true));
        drop(listener);
        assert_eq!(holds(me, &HashSet::from([inode])), Some(false));
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "3f2a".repeat(16);
        for (path, runtime) in [
            (format!("/system.slice/docker-{id}.scope"), "docker"),
            (format!("/docker/{id}"), "docker"),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"),
                "containerd",
            ),
            (format!("/kubepods/besteffort/pod1/{id}"), "kubepods"),
            (
                format!("/machine.slice/libpod-{id}.scope/container"),
                "podman",
            ),
            (format!("/kubepods.slice/crio-{id}.scope"), "cri-o"),
        ] {
            let found = container_of(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(
                (found.runtime, found.id.as_str()),
                (runtime, id.as_str()),
                "{path}"
            );
        }
        assert_eq!(
            container_of("/machine.slice/machine-web.scope").map(|c| c.id),
            Some("web".to_string())
        );
        for plain in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/nginx.service",
        ] {
            assert_eq!(container_of(plain), None, "{plain}");
        }
    }
}
