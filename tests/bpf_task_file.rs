//! iter/task_file against real processes (run as root). Addresses
//! 127.77.2.0/24, ports 40200..40299.
mod common;

use std::{
    io::{BufRead, BufReader},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use common::{Opts, gettid, inode, listen};
use sockcheck::bpf::{TaskFile, task_files};

fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

#[test]
fn finds_own_listener_and_ignores_other_inodes() {
    own_listeners("127.77.2.1:40201", "127.77.2.1:40202");
}

fn own_listeners(main_thread: &'static str, other_thread: &'static str) {
    let fd = listen(sa(main_thread), Opts::default()).unwrap();
    let ino = inode(&fd);
    let pid = std::process::id();
    let found = task_files(&[ino, ino, u64::MAX]).unwrap();
    assert_eq!(
        found,
        vec![TaskFile {
            inode: ino,
            pid,
            tid: pid,
            tids: vec![pid],
            fd: fd.as_raw_fd() as u32
        }]
    );
    assert_eq!(task_files(&[]).unwrap(), vec![]);
    // A socket held by a non-leader thread of a live process is reported
    // through the leader (they share the fd table).
    let (tid, ino2, fd2) = std::thread::spawn(|| {
        let fd = listen(sa(other_thread), Opts::default()).unwrap();
        (gettid(), inode(&fd), fd)
    })
    .join()
    .unwrap();
    assert_ne!(tid, pid);
    let found = task_files(&[ino2]).unwrap();
    assert_eq!(
        found,
        vec![TaskFile {
            inode: ino2,
            pid,
            tid: pid,
            tids: vec![pid],
            fd: fd2.as_raw_fd() as u32
        }]
    );
}

/// Builds tests/helpers/zombie_leader.c with the C compiler Rust links with.
fn zombie_leader_helper() -> PathBuf {
    // One binary per test process: the pid-namespace test re-runs this
    // binary, and two compiles to one path race ("Text file busy").
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("zombie_leader-{}", std::process::id()));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/helpers/zombie_leader.c");
    let status = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .expect("cc");
    assert!(status.success(), "compiling {src}");
    out
}

/// Kills the helper by its pid however the test ends.
struct Reaped(Child);
impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn finds_socket_of_process_whose_main_thread_exited() {
    zombie_leader("127.77.2.2", "40203");
}

fn zombie_leader(addr: &str, port: &str) {
    let mut child = Reaped(
        Command::new(zombie_leader_helper())
            .args([addr, port])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(!line.is_empty(), "zombie_leader helper failed");
    let f: Vec<u64> = line
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let (pid, tid, fd, ino) = (f[0] as u32, f[1] as u32, f[2] as u32, f[3]);
    assert_eq!(pid, child.0.id());
    assert_ne!(pid, tid);

    // The situation /proc scanners miss: the leader is a zombie with no fds.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains("Z")),
        "{status}"
    );
    assert_eq!(
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        0
    );

    let found = task_files(&[ino]).unwrap();
    assert_eq!(
        found,
        vec![TaskFile {
            inode: ino,
            pid,
            tid,
            tids: vec![tid],
            fd
        }]
    );
}

/// Inside a new pid namespace (as in a container) pids and tids must be the
/// namespace's own, as getpid() and its /proc show them.
#[test]
fn ids_are_those_of_the_callers_pid_namespace() {
    if common::in_child() {
        own_listeners("127.77.2.3:40204", "127.77.2.3:40205");
        zombie_leader("127.77.2.3", "40206");
        println!("PIDNS-OK pid={}", std::process::id());
        return;
    }
    let (ok, out) = common::rerun_self(
        &["unshare", "--pid", "--fork", "--mount-proc"],
        "ids_are_those_of_the_callers_pid_namespace",
    );
    assert!(ok && out.contains("PIDNS-OK pid=1"), "{out}");
}
