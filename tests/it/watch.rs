//! `sockcheck watch` against real holders, and thread attribution in `run`.
//! Addresses 127.95.1.0/24 and 127.95.3.0/24, ports 45400-45449 belong to
//! this file (127.95.0.0/16 and 45400-45499 are shared with tests/it/doctor.rs).
//! Needs root; a test skips, saying why, only on a kernel without BTF.

use crate::support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Holder, KillOnDrop, SOCKCHECK, TempDir, holder_from, lingering_command};

/// Whether eBPF can be used ([`support::require_bpf`]'s rule).
fn bpf_or_skip() -> bool {
    support::require_bpf("these tests (they run sockcheck and holders as other users)")
}

/// A running `sockcheck watch`, attached (its stderr said so).
struct Watch {
    child: Child,
}

impl Watch {
    fn start(args: &[&str]) -> Watch {
        Watch {
            child: support::start_watch(args),
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for it to exit (at most 15 s): its exit code and stdout.
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("watch did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (status.code(), out)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// The inode sock_diag gives the one listener on ADDR:PORT.
fn listener_inode(address: &str, port: u16) -> u64 {
    let (json, _) = support::check(address, &port.to_string());
    support::port(&json, port)["listeners"][0]["inode"]
        .as_u64()
        .unwrap()
}

fn json_listen_then_close_of_a_single_threaded_holder() {
    if !bpf_or_skip() {
        return;
    }
    let watch = Watch::start(&[
        "--json",
        "--count",
        "2",
        "--timeout",
        "10s",
        "--ports",
        "45401",
        "127.95.1.1",
    ]);
    // Same port, another address: filtered out by the ADDR argument.
    let decoy = Holder::start("plain", "127.95.1.2", 45401, &[]);
    let holder = Holder::start("plain", "127.95.1.1", 45401, &[]);
    let pid = holder.pid;
    let inode = listener_inode("127.95.1.1", 45401);
    drop(holder);
    let (status, out) = watch.finish();
    drop(decoy);
    assert_eq!(status, Some(0), "{out}");
    let events = json_lines(&out);
    assert_eq!(events.len(), 2, "{out}");
    let (listen, close) = (&events[0], &events[1]);
    assert_eq!(listen["schema"], 1);
    assert_eq!(listen["event"], "listen", "{out}");
    assert_eq!(listen["pid"], pid, "{out}");
    assert_eq!(listen["tid"], pid, "single-threaded: tid == pid: {out}");
    assert_eq!(listen["comm"], "sockcheck-holde");
    assert_eq!(listen["address"], "127.95.1.1");
    assert_eq!(listen["local"], "127.95.1.1:45401");
    assert_eq!(listen["port"], 45401);
    assert_eq!(listen["inode"], inode);
    assert_eq!(listen["reuseport"], false);
    assert_eq!(listen["covers"], serde_json::json!(["127.95.1.1"]));
    assert_eq!(
        (&listen["old_state"], &listen["new_state"]),
        (&7.into(), &10.into())
    );
    assert!(listen["time"].as_str().unwrap().ends_with('Z'), "{out}");
    assert_eq!(close["event"], "close", "{out}");
    assert_eq!(close["inode"], inode);
    assert_eq!(close["local"], "127.95.1.1:45401");
    assert!(close["ktime_ns"].as_u64() >= listen["ktime_ns"].as_u64());
}

fn json_names_the_worker_thread_that_listened() {
    if !bpf_or_skip() {
        return;
    }
    let watch = Watch::start(&[
        "--json",
        "--count",
        "2",
        "--timeout",
        "10s",
        "--ports",
        "45402",
        "127.95.1.3",
    ]);
    let holder = Holder::start("lingering", "127.95.1.3", 45402, &["1"]);
    let (pid, tids) = (holder.pid, holder.tids.clone());
    assert_eq!(tids.len(), 1);
    drop(holder);
    let (status, out) = watch.finish();
    assert_eq!(status, Some(0), "{out}");
    let events = json_lines(&out);
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(events[0]["event"], "listen");
    assert_eq!(events[0]["pid"], pid, "{out}");
    assert_eq!(events[0]["tid"], tids[0], "{out}");
    assert_ne!(events[0]["tid"], pid, "{out}");
    assert_eq!(events[0]["reuseport"], true);
    assert_eq!(events[1]["event"], "close");
    assert_eq!(events[1]["inode"], events[0]["inode"]);
}

fn human_lines() {
    if !bpf_or_skip() {
        return;
    }
    let watch = Watch::start(&["--count", "2", "--timeout", "10s", "--ports", "45403"]);
    let holder = Holder::start("reuseport", "127.95.1.4", 45403, &[]);
    let pid = holder.pid;
    drop(holder);
    let (status, out) = watch.finish();
    assert_eq!(status, Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, kind) in lines.iter().zip(["LISTEN", "CLOSE "]) {
        let (time, rest) = line.split_at(12);
        let b = time.as_bytes();
        assert!(
            b[2] == b':' && b[5] == b':' && b[8] == b'.' && time.replace([':', '.'], "").len() == 9,
            "{line}"
        );
        assert!(
            rest.starts_with(&format!("  {kind}  127.95.1.4:45403  pid ")),
            "{line}"
        );
        assert!(rest.ends_with("  reuseport yes"), "{line}");
    }
    assert!(
        lines[0].contains(&format!(
            "  pid {pid}  tid {pid}  comm sockcheck-holde  inode "
        )),
        "{out}"
    );
}

fn sigint_ends_it_with_130_and_sigterm_with_143() {
    if !bpf_or_skip() {
        return;
    }
    for (signal, port, code) in [(libc::SIGINT, "45404", 130), (libc::SIGTERM, "45405", 143)] {
        let watch = Watch::start(&["--ports", port]);
        let sent = Instant::now();
        watch.signal(signal);
        let (status, out) = watch.finish();
        // An exit code (not death by the signal): it returned through main,
        // dropping the watcher.
        assert_eq!(status, Some(code), "signal {signal}: {out}");
        assert!(sent.elapsed() < Duration::from_secs(3));
    }
}

fn timeout_ends_it() {
    if !bpf_or_skip() {
        return;
    }
    let started = Instant::now();
    let (status, out) =
        Watch::start(&["--count", "1", "--timeout", "300ms", "--ports", "45406"]).finish();
    assert_eq!((status, out.as_str()), (Some(1), ""), "fewer than --count");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, out) = Watch::start(&["--timeout", "300ms", "--ports", "45406"]).finish();
    assert_eq!((status, out.as_str()), (Some(0), ""), "no --count");
}

fn nobody_gets_exit_3_and_one_line_naming_cap_bpf() {
    if !support::require_root("running as nobody") {
        return;
    }
    let run = support::sockcheck_as_nobody(&["watch", "--ports", "45407"]);
    assert_eq!(run.status, 3, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("sockcheck: watch needs eBPF: ") && run.stderr.contains("CAP_BPF"),
        "{}",
        run.stderr
    );
}

fn bad_input_is_exit_2() {
    for args in [
        &["watch", "--count", "0"][..],
        &["watch", "--timeout", "soon"],
        &["watch", "127.0.0.256"],
        &["--ports", "0", "watch"],
    ] {
        let run = support::sockcheck(args);
        assert_eq!(run.status, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
    }
}

// ------------------------------------------------------ run: attribution

/// `PREFIX sockcheck -v [GLOBAL..] run POOL --linger 300ms --report R -- sh -c
/// '<a lingering holder>'`: its output, the report, the holder's pid and
/// worker tids.
fn run_lingering(
    prefix: &[&str],
    global: &[&str],
    dir: &TempDir,
    pool: &str,
    port: u16,
) -> (std::process::Output, Value, u32, Vec<u64>) {
    let ready = dir.0.join("ready");
    let report = dir.0.join("report.json");
    let state = dir.0.join("state");
    let port_text = port.to_string();
    let output = Command::new(prefix[0])
        .args(&prefix[1..])
        .arg(&*SOCKCHECK)
        .args(global)
        .args([
            "-v",
            "--state-dir",
            state.to_str().unwrap(),
            "--ports",
            &port_text,
        ])
        .args([
            "run",
            pool,
            "--linger",
            "300ms",
            "--report",
            report.to_str().unwrap(),
        ])
        .args(["--", "sh", "-c", &lingering_command(port, &ready)])
        .env("XDG_CACHE_HOME", support::cache_home())
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_POOL")
        .output()
        .unwrap();
    let (pid, tids) = holder_from(&ready);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    }))
    .unwrap();
    (output, json, pid, tids)
}

fn run_names_the_worker_thread_that_opened_each_lingering_listener() {
    if !bpf_or_skip() {
        return;
    }
    let dir = TempDir::created("run");
    let (output, json, pid, tids) = run_lingering(&["env"], &[], &dir, "127.95.3.1", 45420);
    let _cleanup = KillOnDrop(pid);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert_eq!(json["attribution"]["status"], "used", "{json}");
    assert_eq!(json["holders"][0]["pid"], pid);
    let listeners = json["holders"][0]["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 2, "{json}");
    let mut openers = Vec::new();
    for listener in listeners {
        let opener = &listener["opened_by"];
        let tid = opener["tid"]
            .as_u64()
            .unwrap_or_else(|| panic!("{listener}"));
        assert!(
            tids.contains(&tid),
            "opener {tid} is not a worker of {tids:?}"
        );
        assert_eq!(opener["comm"], "sockcheck-holde");
        assert!(
            stderr.contains(&format!("| thread {tid} (sockcheck-holde) |")),
            "{stderr}"
        );
        openers.push(tid);
    }
    openers.sort_unstable();
    assert_eq!(openers, tids, "each worker opened its own listener");
    assert!(stderr.contains("Thread attribution: used ("), "{stderr}");
}

fn run_without_ebpf_says_attribution_is_unavailable_and_why() {
    if !support::require_root("running as nobody") {
        return;
    }
    let dir = TempDir::created("nobody");
    std::os::unix::fs::chown(&dir.0, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (output, json, pid, _) = run_lingering(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &[],
        &dir,
        "127.95.3.2",
        45421,
    );
    let _cleanup = KillOnDrop(pid);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert_eq!(json["attribution"]["status"], "unavailable", "{json}");
    let detail = json["attribution"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("not root (euid 65534)") && detail.contains("CAP_BPF"),
        "{detail}"
    );
    assert!(
        stderr.contains("sockcheck: thread attribution unavailable: "),
        "{stderr}"
    );
    for holder in json["holders"].as_array().unwrap() {
        for listener in holder["listeners"].as_array().unwrap() {
            assert!(listener.get("opened_by").is_none(), "{listener}");
        }
    }
}

fn run_with_bpf_never_skips_attribution() {
    if !support::require_root("these tests (they run sockcheck and holders as other users)") {
        return;
    }
    let dir = TempDir::created("never");
    let (output, json, pid, _) =
        run_lingering(&["env"], &["--bpf", "never"], &dir, "127.95.3.3", 45422);
    let _cleanup = KillOnDrop(pid);
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(json["attribution"]["status"], "skipped", "{json}");
    assert_eq!(json["attribution"]["detail"], "disabled by --bpf never");
}

crate::tests![
    json_listen_then_close_of_a_single_threaded_holder,
    json_names_the_worker_thread_that_listened,
    human_lines,
    sigint_ends_it_with_130_and_sigterm_with_143,
    timeout_ends_it,
    nobody_gets_exit_3_and_one_line_naming_cap_bpf,
    bad_input_is_exit_2,
    run_names_the_worker_thread_that_opened_each_lingering_listener,
    run_without_ebpf_says_attribution_is_unavailable_and_why,
    run_with_bpf_never_skips_attribution,
];
