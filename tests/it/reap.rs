//! `sockcheck reap` signals only what it inspected (issue 17): not a
//! process that got the holder's pid after the inspection, not a holder
//! that closed the socket meanwhile, and no SIGKILL for a holder that let
//! go of it after SIGTERM. sockcheck is held between its steps by its
//! test-only pauses (`SOCKCHECK_TEST_PAUSE_BEFORE_PIN` and `…_SIGNAL`: it
//! creates the file and waits until the test removes it). Addresses
//! 127.83.0.0/16, ports 46450-46459.

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Holder, KillOnDrop, TempDir};

/// A sockcheck held at one of its test pauses; killed by pid on drop
/// unless it was let go on.
struct Paused {
    child: Option<Child>,
    file: PathBuf,
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `sockcheck reap ARGS`, started with the test pause `stage` at `file`;
/// returned once it is paused there.
fn reap_paused(stage: &str, file: PathBuf, args: &[&str]) -> Paused {
    let _ = std::fs::remove_file(&file);
    let child = support::command()
        .arg("reap")
        .args(args)
        .env(format!("SOCKCHECK_TEST_PAUSE_BEFORE_{stage}"), &file)
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_PORTS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut paused = Paused {
        child: Some(child),
        file,
    };
    let started = Instant::now();
    while !paused.file.exists() {
        let child = paused.child.as_mut().unwrap();
        if let Ok(Some(status)) = child.try_wait() {
            let out = paused.child.take().unwrap().wait_with_output().unwrap();
            panic!(
                "sockcheck exited ({status}) before its pause: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no pause");
        std::thread::sleep(Duration::from_millis(10));
    }
    paused
}

impl Paused {
    /// Lets sockcheck go on; its exit status and stdout.
    fn resume(mut self) -> (i32, String) {
        std::fs::remove_file(&self.file).unwrap();
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// `(state, comm)` of a pid, from /proc/PID/stat.
fn state_and_comm(pid: u32) -> Option<(String, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let state = stat[close + 1..].split_whitespace().next()?.to_string();
    Some((state, stat[open + 1..close].to_string()))
}

/// The recycled pid's `sleep` is still alive and was sent nothing: not a
/// zombie, not stopped, no signal pending. Its state may be `R` for a
/// moment on a busy machine (woken by a timer tick), which is no signal.
fn assert_unsignalled(pid: u32) {
    let (state, comm) = state_and_comm(pid).expect("the sleep is gone: it was signalled");
    assert_eq!(comm, "sleep");
    assert!(
        matches!(state.as_str(), "S" | "R" | "D"),
        "the sleep was signalled: state {state}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for pending in ["SigPnd:", "ShdPnd:"] {
        let mask = status.lines().find_map(|l| l.strip_prefix(pending)).unwrap().trim();
        assert!(mask.bytes().all(|b| b == b'0'), "the sleep has a signal pending: {pending} {mask}");
    }
}

/// Ends the holder, then starts `sleep 100` with its pid (through
/// /proc/sys/kernel/ns_last_pid: this runs in a pid namespace of its own,
/// where nothing else takes pids). Returns the sleep, to be killed by pid.
fn recycle(holder: Holder) -> (Child, KillOnDrop) {
    let pid = holder.pid;
    drop(holder); // killed and waited for: the pid is free
    // Start times are in clock ticks (10 ms): the sleep's must differ
    // from the holder's, as any later process's would.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("write /proc/sys/kernel/ns_last_pid (CAP_SYS_ADMIN)");
    let sleep = Command::new("sleep").arg("100").spawn().unwrap();
    let guard = KillOnDrop(sleep.id());
    assert_eq!(sleep.id(), pid, "the sleep did not get the holder's pid");
    (sleep, guard)
}

fn reap_signals_nothing_once_the_holders_pid_is_another_process() {
    if !support::in_child() {
        if !support::require_root("a pid namespace and /proc/sys/kernel/ns_last_pid") {
            return;
        }
        let test = "reap_signals_nothing_once_the_holders_pid_is_another_process";
        let wrapper = ["unshare", "--pid", "--fork", "--mount-proc"];
        let (ok, stdout) = support::rerun_self(&wrapper, test);
        assert!(ok, "{stdout}");
        return;
    }
    // Here: pid 1 of a new pid namespace, with its own /proc.
    let files = TempDir::created("reap-recycle");
    // The pid goes to the sleep between the inspection and the pidfd.
    let holder = Holder::start("plain", "127.83.0.1", 46450, &[]);
    let pid = holder.pid;
    let paused = reap_paused(
        "PIN",
        files.join("pin"),
        &["--json", "--ports", "46450", "127.83.0.1", "--grace", "1s"],
    );
    let (sleep, _guard) = recycle(holder);
    let (status, stdout) = paused.resume();
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc["reaped"],
        json!([{"pid": pid, "action": "gone", "exited": true}]),
        "{doc}"
    );
    assert_eq!(
        (doc["before"].as_str(), doc["after"].as_str()),
        (Some("busy"), Some("free"))
    );
    assert_eq!(status, 0, "{stdout}");
    assert_unsignalled(sleep.id());
    // The pid goes to the sleep after the pidfd was opened, before SIGTERM.
    let holder = Holder::start("plain", "127.83.0.2", 46451, &[]);
    let pid = holder.pid;
    let paused = reap_paused(
        "SIGNAL",
        files.join("signal"),
        &["--ports", "46451", "127.83.0.2", "--grace", "1s"],
    );
    let (sleep, _guard) = recycle(holder);
    let (status, stdout) = paused.resume();
    assert_eq!(
        stdout,
        format!("pid {pid} (sockcheck-holde): gone\n127.83.0.2 was busy; now free\n")
    );
    assert_eq!(status, 0);
    assert_unsignalled(sleep.id());
}

fn reap_signals_nothing_to_a_holder_that_closed_the_socket() {
    let files = TempDir::created("reap-closed");
    let holder = Holder::start("closing", "127.83.0.3", 46452, &[]);
    let paused = reap_paused(
        "SIGNAL",
        files.join("signal"),
        &["--json", "--ports", "46452", "127.83.0.3", "--grace", "1s"],
    );
    // SIGUSR1: the holder closes its listener and lives on.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(holder.pid as i32, libc::SIGUSR1) };
    let started = Instant::now();
    while std::net::TcpStream::connect("127.83.0.3:46452").is_ok() {
        assert!(started.elapsed() < Duration::from_secs(10), "not closed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, stdout) = paused.resume();
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc["reaped"],
        json!([{"pid": holder.pid, "action": "no longer holds it", "exited": false}]),
        "{doc}"
    );
    assert_eq!(doc["after"], "free");
    assert_eq!(status, 0);
    let (state, _) = state_and_comm(holder.pid).unwrap();
    assert_eq!(state, "S", "the holder was signalled");
}

fn reap_sends_no_sigkill_to_a_holder_that_let_go_of_the_socket() {
    // SIGTERM: the holder closes its listener and lives on, draining.
    let holder = Holder::start("draining", "127.83.0.4", 46453, &[]);
    let run = support::sockcheck(&[
        "--json",
        "reap",
        "--ports",
        "46453",
        "127.83.0.4",
        "--grace",
        "300ms",
    ]);
    let doc = run.json();
    assert_eq!(
        doc["reaped"],
        json!([{"pid": holder.pid, "action": "SIGTERM, then it no longer held it", "exited": false}]),
        "{doc}"
    );
    assert_eq!(doc["after"], "free");
    assert_eq!(run.status, 0, "{}", run.stderr);
    let (state, _) = state_and_comm(holder.pid).unwrap();
    assert_eq!(state, "S", "the holder was sent SIGKILL");
}

crate::tests![
    reap_signals_nothing_once_the_holders_pid_is_another_process,
    reap_signals_nothing_to_a_holder_that_closed_the_socket,
    reap_sends_no_sigkill_to_a_holder_that_let_go_of_the_socket,
];
