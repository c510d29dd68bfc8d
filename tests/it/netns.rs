//! --netns: the inspection of another network namespace, against real
//! listeners in a namespace each test makes (`ip netns add`), with `lo` up,
//! deleted at the end. Namespaces named sockcheck-test-PID-N; ports
//! 45660-45669 (inside them any address is private; `watch` also sees the
//! host, where the port is still this file's). The tests of `--netns`
//! validation and of `--netns X reap` use 127.83.1.0/24 and ports
//! 46460-46469 (CONTRIBUTING's row for tests/it/reap.rs).

use crate::support;

use std::process::{Command, Stdio};

use support::{Holder, sockcheck, sockcheck_as_nobody};

/// A network namespace of this test, deleted (with what runs in it
/// killed) on drop.
struct Namespace {
    name: String,
    holders: Vec<Holder>,
}

impl Namespace {
    fn new(n: u32) -> Namespace {
        let name = format!("sockcheck-test-{}-{n}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("ip")
                .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name} (iproute2, as root)");
        Namespace {
            name,
            holders: Vec::new(),
        }
    }

    /// `sockcheck-holder SHAPE ADDR PORT` inside; returns its pid once ready.
    fn holder(&mut self, shape: &str, address: &str, port: u16) -> u32 {
        // `ip netns exec` execs the holder: same pid.
        let holder = Holder::start_via(
            &["ip", "netns", "exec", &self.name],
            shape,
            address,
            port,
            &[],
        );
        let pid = holder.pid;
        self.holders.push(holder);
        pid
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.holders.clear(); // each is killed by pid as it drops
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn the_namespace_view_differs_from_the_hosts() {
    if !support::require_root("ip netns add") {
        return;
    }
    let mut ns = Namespace::new(1);
    let pid = ns.holder("plain", "127.0.0.2", 45660);
    // The host: nothing there.
    let host = sockcheck(&["--json", "--ports", "45660", "127.0.0.2"]);
    assert_eq!(host.status, 0, "{}", host.stderr);
    assert!(host.json().get("netns").is_none());
    // The namespace, by name and by pid: busy, held by the holder.
    for spec in [ns.name.clone(), format!("pid:{pid}")] {
        let run = sockcheck(&["--json", "--netns", &spec, "--ports", "45660", "127.0.0.2"]);
        assert_eq!(run.status, 1, "--netns {spec}: {}", run.stderr);
        let json = run.json();
        assert_eq!(json["netns"]["name"], ns.name.as_str(), "{json}");
        assert!(json["netns"]["inode"].as_u64().unwrap() > 0);
        let address = &json["addresses"][0];
        assert_eq!(address["verdict"], "busy");
        assert_eq!(
            support::owner_pids(support::port(address, 45660)),
            vec![u64::from(pid)],
            "owners are found through sockcheck's own /proc"
        );
    }
    // For people, the namespace comes first.
    let run = sockcheck(&["--netns", &ns.name, "--ports", "45660", "127.0.0.2"]);
    assert!(
        run.stdout
            .starts_with(&format!("network namespace {} (inode ", ns.name)),
        "{}",
        run.stdout
    );
}

fn list_scan_and_wait_look_into_the_namespace() {
    if !support::require_root("ip netns add") {
        return;
    }
    let mut ns = Namespace::new(2);
    let pid = ns.holder("group", "127.0.0.3", 45661);
    let run = sockcheck(&["list", "--netns", &ns.name, "--ports", "45661"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("127.0.0.3 ")
            && l.contains("busy")
            && l.contains(&format!("pid {pid}"))),
        "{}",
        run.stdout
    );
    let run = sockcheck(&["list", "--ports", "45661"]);
    assert!(
        run.stdout.starts_with("no socket on port 45661"),
        "{}",
        run.stdout
    );
    let run = sockcheck(&[
        "scan",
        "--netns",
        &ns.name,
        "--ports",
        "45661",
        "127.0.0.3-127.0.0.4",
    ]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.contains("127.0.0.4  free"), "{}", run.stdout);
    let run = sockcheck(&[
        "wait",
        "--netns",
        &ns.name,
        "--ports",
        "45661",
        "127.0.0.3",
        "--timeout",
        "200ms",
    ]);
    assert_eq!(run.status, 1, "{}", run.stderr);
}

fn without_cap_sys_admin_the_error_says_so_in_one_line() {
    if !support::require_setpriv("--netns as nobody") {
        return;
    }
    let ns = Namespace::new(3);
    let run = sockcheck_as_nobody(&["--netns", &ns.name, "--ports", "45662", "127.0.0.2"]);
    assert_eq!(run.status, 3, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("CAP_SYS_ADMIN"), "{}", run.stderr);
    // A name that is no namespace is bad input.
    let run = sockcheck(&["--netns", "sockcheck-test-no-such-ns", "127.0.0.2"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
}

/// `sockcheck watch --json --timeout 10s ARGS`, attached.
fn watch_json(args: &[&str]) -> std::process::Child {
    let mut all = vec!["--json", "--timeout", "10s"];
    all.extend(args);
    support::start_watch(&all)
}

/// The events a [`watch_json`] printed, once it has exited.
fn watch_events(child: std::process::Child) -> (i32, Vec<serde_json::Value>) {
    let _kill = support::KillOnDrop(child.id());
    let out = child.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), events)
}

fn watch_filters_events_by_the_sockets_namespace() {
    use std::os::unix::fs::MetadataExt;
    if !support::require_bpf("watch --netns") {
        return;
    }
    let mut ns = Namespace::new(4);
    let ns_inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
        .unwrap()
        .ino();
    let own_inode = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    let only_ns = watch_json(&["--netns", &ns.name, "--count", "2", "--ports", "45663"]);
    let only_own = watch_json(&["--count", "2", "--ports", "45663"]);
    let every = watch_json(&["--all-netns", "--count", "4", "--ports", "45663"]);
    // The same address and port, once in the namespace, then on the host.
    let inside = ns.holder("plain", "127.0.0.2", 45663);
    ns.holders.clear();
    let host = Holder::start("plain", "127.0.0.2", 45663, &[]);
    let outside = host.pid;
    drop(host);
    for (child, pid, inode) in [(only_ns, inside, ns_inode), (only_own, outside, own_inode)] {
        let (status, events) = watch_events(child);
        assert_eq!(status, 0, "{events:?}");
        let seen: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e["event"].as_str().unwrap(),
                    e["pid"].as_u64(),
                    e["netns"].as_u64(),
                )
            })
            .collect();
        let (pid, inode) = (Some(u64::from(pid)), Some(inode));
        assert_eq!(seen, vec![("listen", pid, inode), ("close", pid, inode)]);
    }
    let (status, events) = watch_events(every);
    assert_eq!(status, 0, "{events:?}");
    let namespaces: Vec<_> = events
        .iter()
        .map(|e| e["netns"].as_u64().unwrap())
        .collect();
    assert_eq!(namespaces, vec![ns_inode, ns_inode, own_inode, own_inode]);
    // A name that is no namespace is bad input, before anything loads.
    let run = sockcheck(&["watch", "--netns", "sockcheck-test-no-such-ns"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let run = sockcheck(&["watch", "--netns", &ns.name, "--all-netns"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
}

/// `sockcheck ARGS` that must end by itself within 10 s (it must never
/// block): its exit status and stderr. Killed by pid otherwise.
fn sockcheck_quick(args: &[&str]) -> (i32, String) {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut child = support::command()
        .args(args)
        .env_remove("SOCKCHECK_PORTS")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockcheck {args:?} blocked for 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code().unwrap_or(-1), stderr)
}

fn a_netns_that_is_no_network_namespace_is_refused_at_once() {
    let files = support::TempDir::created("netns-fifo");
    let fifo = files.join("fifo");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string; mkfifo has no other memory effects.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    for (spec, why) in [
        (fifo.to_str().unwrap(), "is not a namespace (not on nsfs)"),
        ("/proc/self/ns/mnt", "(it is a mount namespace)"),
        ("/proc/self/ns/pid", "(it is a pid namespace)"),
        ("/proc/self/ns/user", "(it is a user namespace)"),
    ] {
        for args in [
            vec!["--netns", spec, "--ports", "46460", "127.83.1.1"],
            vec![
                "watch",
                "--netns",
                spec,
                "--ports",
                "46460",
                "--timeout",
                "1s",
            ],
        ] {
            let (status, stderr) = sockcheck_quick(&args);
            assert_eq!(status, 2, "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.contains(why), "{args:?}: {stderr}");
        }
    }
}

fn pid_of_a_zombie_leader_is_its_live_threads_namespace() {
    if !support::require_root("ip netns add") {
        return;
    }
    let mut ns = Namespace::new(5);
    let pid = ns.holder("lingering", "127.0.0.2", 46461);
    // Its main thread exits after the ready line: wait for the zombie.
    let zombie = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(')').unwrap().1.starts_with(" Z"))
    };
    for _ in 0..500 {
        if zombie() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(zombie(), "pid {pid} did not become a zombie leader");
    let spec = format!("pid:{pid}");
    let run = sockcheck(&["--json", "--netns", &spec, "--ports", "46461", "127.0.0.2"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["netns"]["name"], ns.name.as_str(), "{json}");
    let address = &json["addresses"][0];
    assert_eq!(address["verdict"], "busy");
    assert_eq!(
        support::owner_pids(support::port(address, 46461)),
        vec![u64::from(pid)]
    );
}

/// Whether `pid` runs (its /proc/PID/stat says so, and not a zombie).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit_once(')').unwrap().1.starts_with(" Z"))
}

fn reap_in_a_namespace_signals_only_holders_of_its_sockets() {
    if !support::require_root("ip netns add") {
        return;
    }
    let mut ns = Namespace::new(6);
    // The same address and port on the host: none of the namespace's.
    let host = Holder::start("plain", "127.83.1.2", 46462, &[]);
    let name = ns.name.clone();
    let args = [
        "--netns",
        &name,
        "reap",
        "--ports",
        "46462",
        "127.83.1.2",
        "--grace",
        "2s",
    ];
    let run = sockcheck(&args);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.ends_with("127.83.1.2 was free; now free\n") && !run.stdout.contains("pid "),
        "{}",
        run.stdout
    );
    assert!(runs(host.pid), "the host's holder was signalled");
    // A holder in the namespace is reaped; the host's lives on.
    let inside = ns.holder("plain", "127.83.1.2", 46462);
    let mut json_args = vec!["--json"];
    json_args.extend(args);
    let run = sockcheck(&json_args);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(
        doc["reaped"],
        serde_json::json!([{"pid": inside, "action": "SIGTERM", "exited": true}]),
        "{doc}"
    );
    assert_eq!(
        (doc["before"].as_str(), doc["after"].as_str()),
        (Some("busy"), Some("free"))
    );
    assert!(runs(host.pid), "the host's holder was signalled");
}

crate::tests![
    the_namespace_view_differs_from_the_hosts,
    list_scan_and_wait_look_into_the_namespace,
    without_cap_sys_admin_the_error_says_so_in_one_line,
    watch_filters_events_by_the_sockets_namespace,
    a_netns_that_is_no_network_namespace_is_refused_at_once,
    pid_of_a_zombie_leader_is_its_live_threads_namespace,
    reap_in_a_namespace_signals_only_holders_of_its_sockets,
];
