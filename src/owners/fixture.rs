//! A tree laid out as /proc, built in a temporary directory, for tests that
//! need owners without the machine's processes: `PID/fd/N` symlinks to
//! `socket:[INODE]`, `PID/stat`, `PID/status`, `PID/comm`, `PID/cmdline`,
//! `PID/cgroup`, `PID/task/TID/…`, and `stat` with the boot time. Read
//! through [`ProcRoot::fixture`] as an ordinary user of [`FIXTURE_UID`] at
//! [`NOW`], whoever runs the test (as root, the tree is handed to that
//! uid), so what the tests print is the same as root and as nobody.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ProcRoot;

/// The uid the fixture's processes run as and the scan reads as: nobody's,
/// the one uid a test can be both as root (by chown) and as nobody.
pub(crate) const FIXTURE_UID: u32 = 65534;

/// When the fixture's machine booted (`btime`), Unix seconds.
pub(crate) const BOOT: u64 = 1_764_892_800;

/// The fixture's clock: a day after boot.
pub(crate) const NOW: u64 = BOOT + 86_400;

/// Clock ticks a second (USER_HZ; 100 on every Linux architecture).
const HZ: u64 = 100;

/// One process of the fixture.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub pid: u32,
    pub comm: &'static str,
    pub cmdline: Vec<&'static str>,
    /// The state letter of its stat: `S`, `R`, or `Z` for a zombie leader.
    pub state: char,
    pub ppid: u32,
    /// Seconds since it started, at [`NOW`].
    pub age: u64,
    /// Its fd table: fd → link target (`socket:[81001]`, `/dev/null`, …).
    pub fds: Vec<(u32, String)>,
    /// Its other threads. For a zombie leader (`state` `Z`), these are the
    /// live threads that hold the fd table; its own table is empty.
    pub threads: Vec<u32>,
}

impl Process {
    /// A sleeping single-threaded process with fds 0–2 open.
    pub(crate) fn new(pid: u32, comm: &'static str, cmdline: &[&'static str]) -> Process {
        Process {
            pid,
            comm,
            cmdline: cmdline.to_vec(),
            state: 'S',
            ppid: 1,
            age: 3_600,
            fds: vec![
                (0, "/dev/null".into()),
                (1, "pipe:[70001]".into()),
                (2, "pipe:[70001]".into()),
            ],
            threads: Vec::new(),
        }
    }

    /// Holds the socket `inode` as `fd`.
    pub(crate) fn socket(mut self, fd: u32, inode: u64) -> Process {
        self.fds.push((fd, format!("socket:[{inode}]")));
        self
    }
}

/// A fixture /proc; removed when dropped.
#[derive(Debug)]
pub(crate) struct ProcTree {
    dir: PathBuf,
}

impl ProcTree {
    /// An empty tree (with the boot time) under the temporary directory.
    pub(crate) fn new() -> ProcTree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sockcheck-proc-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the fixture /proc");
        write(&dir.join("stat"), format!("cpu  0 0 0 0\nbtime {BOOT}\n"));
        ProcTree { dir }
    }

    /// Adds `process`: its files, its threads', and its fd table (the
    /// threads' tables, for a zombie leader).
    pub(crate) fn add(&self, process: &Process) -> &ProcTree {
        let pid = process.pid;
        let base = self.dir.join(pid.to_string());
        let zombie_leader = process.state == 'Z' && !process.threads.is_empty();
        let threads = 1 + process.threads.len();
        write_process(&base, process, process.state, threads);
        std::fs::create_dir_all(base.join("fd")).expect("create fd/");
        if zombie_leader {
            // A zombie leader has no mm: an empty command line.
            write(&base.join("cmdline"), Vec::new());
        } else {
            write_fds(&base.join("fd"), &process.fds);
        }
        write_process(&task(&base, pid), process, process.state, threads);
        for &tid in &process.threads {
            let dir = task(&base, tid);
            write_process(
                &dir,
                &Process {
                    pid: tid,
                    ..process.clone()
                },
                'S',
                threads,
            );
            if zombie_leader {
                std::fs::create_dir_all(dir.join("fd")).expect("create task fd/");
                write_fds(&dir.join("fd"), &process.fds);
            }
        }
        self
    }

    /// Adds a process of root's: its /proc/PID belongs to uid 0, so an
    /// ordinary user can list it but not read its fd table (here a link
    /// to `/`, which belongs to root wherever the test runs).
    pub(crate) fn add_root_process(&self, pid: u32) -> &ProcTree {
        std::os::unix::fs::symlink("/", self.dir.join(pid.to_string()))
            .expect("link a root-owned /proc/PID");
        self
    }

    /// The tree as a [`ProcRoot`], read as [`FIXTURE_UID`] at [`NOW`]. As
    /// root, the tree is first handed to that uid (lchown: the link to `/`
    /// stays a link, `/` is never touched).
    pub(crate) fn root(&self) -> ProcRoot {
        if rustix::process::geteuid().is_root() {
            lchown_tree(&self.dir);
        }
        ProcRoot::fixture(&self.dir, FIXTURE_UID, NOW)
    }
}

impl Drop for ProcTree {
    fn drop(&mut self) {
        // remove_dir_all does not follow the link to `/`.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn task(base: &Path, tid: u32) -> PathBuf {
    base.join("task").join(tid.to_string())
}

/// stat, status, comm, cmdline and cgroup of a process or a thread.
fn write_process(dir: &Path, process: &Process, state: char, threads: usize) {
    std::fs::create_dir_all(dir).expect("create a /proc/PID");
    let pid = process.pid;
    let start = (NOW - process.age - BOOT) * HZ;
    // pid (comm) state ppid pgrp session tty_nr tpgid flags, then the
    // counters up to num_threads, itrealvalue, starttime and the rest.
    let mut fields: Vec<String> = vec![state.to_string(), process.ppid.to_string()];
    fields.extend(["0", "0", "0", "-1", "4194560"].map(String::from));
    fields.extend(std::iter::repeat_n("0".to_string(), 8));
    fields.extend(["20", "0"].map(String::from));
    fields.push(threads.to_string());
    fields.push("0".into());
    fields.push(start.to_string());
    fields.extend(std::iter::repeat_n("0".to_string(), 30));
    let stat = format!("{pid} ({}) {}\n", process.comm, fields.join(" "));
    write(&dir.join("stat"), stat);
    write(&dir.join("status"), status(process, state, threads));
    write(&dir.join("comm"), format!("{}\n", process.comm));
    let mut cmdline = Vec::new();
    for arg in &process.cmdline {
        cmdline.extend_from_slice(arg.as_bytes());
        cmdline.push(0);
    }
    write(&dir.join("cmdline"), cmdline);
    write(
        &dir.join("cgroup"),
        "0::/user.slice/user-65534.slice/session-1.scope\n",
    );
}

fn status(process: &Process, state: char, threads: usize) -> String {
    let (pid, uid) = (process.pid, FIXTURE_UID);
    format!(
        "Name:\t{}\nUmask:\t0022\nState:\t{state} (sleeping)\nTgid:\t{pid}\nNgid:\t0\n\
         Pid:\t{pid}\nPPid:\t{}\nTracerPid:\t0\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n\
         Gid:\t{uid}\t{uid}\t{uid}\t{uid}\nFDSize:\t64\nGroups:\t\nNStgid:\t{pid}\n\
         NSpid:\t{pid}\nNSpgid:\t{pid}\nNSsid:\t{pid}\nThreads:\t{threads}\n\
         SigQ:\t0/63446\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
         SigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000440\n\
         CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
         CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n",
        process.comm, process.ppid
    )
}

fn write_fds(dir: &Path, fds: &[(u32, String)]) {
    for (fd, target) in fds {
        std::os::unix::fs::symlink(target, dir.join(fd.to_string())).expect("link an fd");
    }
}

fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Hands every file, directory and link under `dir` to [`FIXTURE_UID`],
/// never following a link.
fn lchown_tree(dir: &Path) {
    let give = |path: &Path| {
        std::os::unix::fs::lchown(path, Some(FIXTURE_UID), Some(FIXTURE_UID))
            .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()))
    };
    give(dir);
    for entry in std::fs::read_dir(dir).expect("read the fixture") {
        let path = entry.expect("a fixture entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("lstat a fixture entry");
        if meta.is_dir() {
            lchown_tree(&path);
        } else {
            give(&path);
        }
    }
}
