//! iter/task_file against real processes (run as root). Addresses
//! 127.77.2.0/24, ports 40200..40299.
use crate::support;

use std::os::fd::AsRawFd;

use sockcheck::bpf::{TaskFile, task_files};
use support::sockets::{Opts, gettid, inode, listen};

fn sa(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

fn finds_own_listener_and_ignores_other_inodes() {
    if !support::in_child() && !support::require_bpf("iter/task_file") {
        return;
    }
    own_listeners("127.77.2.1:40201", "127.77.2.1:40202");
}

fn own_listeners(main_thread: &'static str, other_thread: &'static str) {
    let fd = listen(sa(main_thread), Opts::default()).unwrap();
    let ino = inode(&fd);
    let pid = std::process::id();
    // Only this process's own rows: a test of this binary running in
    // parallel may fork a child that holds every fd until its exec.
    let ours = |found: Vec<TaskFile>| -> Vec<TaskFile> {
        found.into_iter().filter(|f| f.pid == pid).collect()
    };
    let found = ours(task_files(&[ino, ino, u64::MAX]).unwrap());
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
    let found = ours(task_files(&[ino2]).unwrap());
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

fn finds_socket_of_process_whose_main_thread_exited() {
    if !support::require_bpf("iter/task_file") {
        return;
    }
    zombie_leader("127.77.2.2", 40203);
}

/// A `sockcheck-holder lingering` process: one worker thread holds a
/// listener, and the main thread has exited.
fn zombie_leader(addr: &str, port: u16) {
    let holder = support::Holder::start("lingering", addr, port, &["1"]);
    let (pid, tid) = (holder.pid, holder.tids[0]);
    assert_ne!(pid, tid);

    // The situation /proc scanners miss: the leader is a zombie with no fds.
    // (The holder says `ready` just before its main thread exits.)
    let zombie = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
    };
    let started = std::time::Instant::now();
    while !zombie() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the leader of {pid} never exited"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        0
    );
    // Only the worker's fd table shows the listener.
    let (fd, ino) = std::fs::read_dir(format!("/proc/{pid}/task/{tid}/fd"))
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let link = std::fs::read_link(entry.path()).ok()?;
            let ino = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some((entry.file_name().to_str()?.parse().ok()?, ino.parse().ok()?))
        })
        .next()
        .expect("the worker holds a socket");

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
fn ids_are_those_of_the_callers_pid_namespace() {
    if !support::in_child() && !support::require_bpf("iter/task_file") {
        return;
    }
    if support::in_child() {
        own_listeners("127.77.2.3:40204", "127.77.2.3:40205");
        zombie_leader("127.77.2.3", 40206);
        println!("PIDNS-OK pid={}", std::process::id());
        return;
    }
    let (ok, out) = support::rerun_self(
        &["unshare", "--pid", "--fork", "--mount-proc"],
        "ids_are_those_of_the_callers_pid_namespace",
    );
    assert!(ok && out.contains("PIDNS-OK pid=1"), "{out}");
}

/// Two pid namespaces deep (a container in a container): the iterators
/// take the reader's namespace level off the reader, so level 2 must give
/// the innermost ids too.
fn ids_in_a_nested_pid_namespace() {
    if !support::in_child() && !support::require_bpf("iter/task_file") {
        return;
    }
    if support::in_child() {
        own_listeners("127.77.2.4:40207", "127.77.2.4:40208");
        zombie_leader("127.77.2.4", 40209);
        println!("NESTED-OK pid={}", std::process::id());
        return;
    }
    let unshare = ["unshare", "--pid", "--fork", "--mount-proc"];
    let (ok, out) = support::rerun_self(
        &[unshare, unshare].concat(),
        "ids_in_a_nested_pid_namespace",
    );
    assert!(ok && out.contains("NESTED-OK pid=1"), "{out}");
}

/// The fd-table walk (`iter/task`) and `iter/task_file` give the same rows
/// for sockets of this process, looked up from `.rodata` and from the map.
fn fd_walk_and_task_file_agree_on_own_sockets() {
    if support::require_bpf("the fd walk and iter/task_file") {
        sockcheck::selftest::fd_walk_and_task_file_agree_on_own_sockets();
    }
}

/// The same over every socket of the machine.
fn fd_walk_and_task_file_agree_on_every_socket() {
    if support::require_bpf("the fd walk and iter/task_file") {
        sockcheck::selftest::fd_walk_and_task_file_agree_on_every_socket();
    }
}

crate::tests![
    finds_own_listener_and_ignores_other_inodes,
    finds_socket_of_process_whose_main_thread_exited,
    ids_are_those_of_the_callers_pid_namespace,
    ids_in_a_nested_pid_namespace,
    fd_walk_and_task_file_agree_on_own_sockets,
    fd_walk_and_task_file_agree_on_every_socket,
];
