//! Watcher against listeners opened by a spawned thread of this process
//! (run as root). Addresses 127.77.3.0/24, ports 40300..40399.
use crate::support;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use sockcheck::bpf::{ListenChange, ListenEvent, WatchHook, Watcher, task_files, tcp_listeners};
use support::sockets::{Opts, gettid, inode, ip, listen};
use support::{in_child, rerun_self};

/// Serializes the tests here, so "nothing stays loaded" can be checked.
static LOCK: Mutex<()> = Mutex::new(());

/// Opens a listener on a thread named `sc-listen`, closes it on the same
/// thread, and returns that thread's tid and the socket's inode.
fn listen_and_close_on_a_thread(addr: SocketAddr, opts: Opts) -> (u32, u64) {
    std::thread::Builder::new()
        .name("sc-listen".into())
        .spawn(move || {
            let fd = listen(addr, opts).unwrap();
            let ino = inode(&fd);
            drop(fd);
            (gettid(), ino)
        })
        .unwrap()
        .join()
        .unwrap()
}

/// The inode of this process's network namespace.
fn own_netns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

fn wait_for(watcher: &mut Watcher, n: usize, port: u16) -> Vec<ListenEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while events.len() < n && Instant::now() < deadline {
        events.extend(watcher.poll(Duration::from_millis(100)).unwrap());
    }
    assert!(
        events.iter().all(|e| e.port == port),
        "port filter leaked: {events:?}"
    );
    events
}

fn check(mut watcher: Watcher, addr: &str, port: u16, reuseport: bool) {
    let sockaddr = SocketAddr::new(ip(addr), port);
    // Not watched: must not show up.
    drop(listen(SocketAddr::new(ip(addr), port + 50), Opts::default()).unwrap());
    let (tid, ino) = listen_and_close_on_a_thread(
        sockaddr,
        Opts {
            reuseport,
            ..Opts::default()
        },
    );
    let events = wait_for(&mut watcher, 2, port);
    assert_eq!(events.len(), 2, "{events:?}");
    let pid = std::process::id();
    for (event, kind, old, new) in [
        (&events[0], ListenChange::Listen, 7, 10),
        (&events[1], ListenChange::Close, 10, 7),
    ] {
        assert_eq!(
            (
                event.kind,
                event.old_state,
                event.new_state,
                event.pid,
                event.tid
            ),
            (kind, old, new, pid, tid),
            "{event:?}"
        );
        assert_eq!(
            (event.addr, event.port, event.inode, event.reuseport),
            (ip(addr), port, ino, reuseport),
            "{event:?}"
        );
        assert_eq!(event.comm, b"sc-listen", "{event:?}");
        assert_eq!(event.netns, own_netns(), "{event:?}");
    }
    assert!(events[0].ktime_ns <= events[1].ktime_ns);
    // Nothing else arrives.
    assert_eq!(watcher.poll(Duration::from_millis(50)).unwrap(), vec![]);
}

fn watch_auto_ipv4() {
    if !support::in_child() && !support::require_bpf("the BPF watch") {
        return;
    }
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    check(
        Watcher::new(&[40301, 9]).unwrap(),
        "127.77.3.1",
        40301,
        true,
    );
}

fn watch_tp_btf_ipv6() {
    if !support::in_child() && !support::require_bpf("the BPF watch") {
        return;
    }
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let watcher = Watcher::with_hook(&[40302], WatchHook::BtfTracePoint).unwrap();
    assert_eq!(watcher.hook(), WatchHook::BtfTracePoint);
    // The kernel counts the runs it skipped (recursion_misses, 5.12+; this
    // kernel is newer): the watch reads it to say so.
    assert!(watcher.skipped().is_some(), "no recursion_misses read");
    check(watcher, "::1", 40302, false);
}

/// The classic tracepoint needs tracefs. If it is not mounted, rerun this
/// test in a private mount namespace with tracefs mounted (the host's mounts
/// are left alone).
fn watch_tracepoint() {
    if !support::in_child() && !support::require_bpf("the BPF watch") {
        return;
    }
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let tracefs = std::path::Path::new("/sys/kernel/tracing/events").is_dir()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").is_dir();
    if !tracefs && !in_child() {
        let mount = r#"mount -t tracefs nodev /sys/kernel/tracing && exec "$0" "$@""#;
        let (ok, out) = rerun_self(
            &["unshare", "--mount", "sh", "-c", mount],
            "watch_tracepoint",
        );
        assert!(ok && out.contains("TRACEPOINT-OK"), "{out}");
        return;
    }
    let watcher = Watcher::with_hook(&[40303], WatchHook::TracePoint).unwrap();
    assert_eq!(watcher.hook(), WatchHook::TracePoint);
    check(watcher, "127.77.3.3", 40303, false);
    println!("TRACEPOINT-OK");
}

fn nothing_stays_loaded() {
    if !support::in_child() && !support::require_bpf("the BPF watch") {
        return;
    }
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let watcher = Watcher::new(&[40304]).unwrap();
    let held = programs_held();
    assert_eq!(held.len(), 1, "the watch holds one program: {held:?}");
    tcp_listeners(&[40304]).unwrap();
    task_files(&[1]).unwrap();
    assert_eq!(programs_held(), held, "the iterators keep nothing");
    drop(watcher);
    assert_eq!(programs_held(), BTreeSet::new());
    // The kernel frees a program nothing holds after an RCU grace period.
    // Checked by id, so other users of BPF on the machine do not matter.
    let loaded = |id: &u32| {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .any(|p| p.id() == *id)
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while held.iter().any(loaded) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!held.iter().any(loaded), "still loaded: {held:?}");
}

/// The ids of the BPF programs this process holds through its fds: program
/// fds and link fds (each names its program in /proc/self/fdinfo).
fn programs_held() -> BTreeSet<u32> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if !(target.starts_with("anon_inode:bpf-prog") || target.starts_with("anon_inode:bpf_link"))
        {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse::<u32>().ok()),
        );
    }
    ids
}

/// In a new pid namespace (as in a container) the event's pid and tid are
/// the namespace's own.
fn watch_in_pid_namespace() {
    if !support::in_child() && !support::require_bpf("the BPF watch") {
        return;
    }
    let _serial = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !in_child() {
        let (ok, out) = rerun_self(
            &["unshare", "--pid", "--fork", "--mount-proc"],
            "watch_in_pid_namespace",
        );
        assert!(ok && out.contains("PIDNS-OK pid=1"), "{out}");
        return;
    }
    check(Watcher::new(&[40305]).unwrap(), "127.77.3.5", 40305, false);
    println!("PIDNS-OK pid={}", std::process::id());
}

crate::tests![
    watch_auto_ipv4,
    watch_tp_btf_ipv6,
    watch_tracepoint,
    nothing_stays_loaded,
    watch_in_pid_namespace,
];
