//! The CI gate: leases under concurrency and after crashes, `wait`, `scan`,
//! and `run` with its lingering-worker check. Addresses 127.93.0.0/16 and
//! ports 45200-45299 belong to this file (45218 and 45219 carry wildcard
//! listeners, which cover every address on them).

use crate::support;

use support::{stderr, stdout};

use std::collections::HashSet;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Holder, KillOnDrop, SOCKCHECK, TempDir, holder_from, kill, lingering_command, wait_gone,
};

/// Runs a gate command with `--ports`, and the state directory for the
/// commands that lease (the others refuse it: no option is dropped).
fn gate(state: &TempDir, ports: &str, args: &[&str]) -> Output {
    let command = args.iter().find(|a| !a.starts_with('-'));
    let leasing = matches!(
        command.copied(),
        Some("acquire" | "release" | "leases" | "run")
    );
    let state_dir: &[&str] = if leasing {
        &["--state-dir", state.path()]
    } else {
        &[]
    };
    let ports: &[&str] = if command == Some(&"release") {
        &[]
    } else {
        &["--ports", ports]
    };
    support::command()
        .args(state_dir)
        .args(ports)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_POOL")
        .output()
        .unwrap()
}

fn thirty_two_concurrent_acquires_get_thirty_two_addresses() {
    let state = TempDir::new("concurrent");
    let pool = "127.93.1.0/27";
    let children: Vec<_> = (0..32)
        .map(|_| {
            support::command()
                .args([
                    "--state-dir",
                    state.path(),
                    "--ports",
                    "45201,45202",
                    "acquire",
                    pool,
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut got = HashSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            got.insert(stdout(&output).trim().to_string()),
            "handed out twice"
        );
    }
    assert_eq!(got.len(), 32);
    let started = Instant::now();
    let output = gate(&state, "45201,45202", &["acquire", pool, "--wait", "1s"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        stderr(&output).contains("no free address"),
        "{}",
        stderr(&output)
    );
}

fn no_address_is_ever_leased_twice_at_once() {
    let state = Arc::new(TempDir::new("churn"));
    let held = Arc::new(Mutex::new(HashSet::new()));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (state, held) = (state.clone(), held.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while Instant::now() < deadline {
                    let output = gate(
                        &state,
                        "45203",
                        &["acquire", "127.93.2.1-127.93.2.4", "--wait", "5s"],
                    );
                    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
                    let address = stdout(&output).trim().to_string();
                    assert!(
                        held.lock().unwrap().insert(address.clone()),
                        "{address} leased twice"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                    held.lock().unwrap().remove(&address);
                    let output = gate(&state, "45203", &["release", &address]);
                    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
                    n += 1;
                }
                n
            })
        })
        .collect();
    for worker in workers {
        rounds += worker.join().unwrap();
    }
    assert!(rounds > 20, "only {rounds} rounds");
}

fn a_killed_owner_loses_its_lease() {
    let state = TempDir::new("killed");
    let mut owner = Command::new("sleep").arg("100").spawn().unwrap();
    let pid = owner.id().to_string();
    let output = gate(&state, "45204", &["acquire", "127.93.3.1", "--owner", &pid]);
    assert_eq!(stdout(&output).trim(), "127.93.3.1");
    let output = gate(&state, "45204", &["acquire", "127.93.3.1"]);
    assert_eq!(output.status.code(), Some(1), "the lease is still held");
    owner.kill().unwrap();
    owner.wait().unwrap();
    let output = gate(&state, "45204", &["-v", "acquire", "127.93.3.1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // The lease agent ended it when the owner's pidfd fired: nothing read
    // /proc to decide the owner was gone.
    assert_eq!(stdout(&output).trim(), "127.93.3.1");
}

fn an_address_held_outside_the_lease_system_is_skipped() {
    let state = TempDir::new("outside");
    let holder = Holder::start("plain", "127.93.4.1", 45205, &[]);
    let output = gate(&state, "45205", &["-v", "acquire", "127.93.4.1-127.93.4.2"]);
    assert_eq!(stdout(&output).trim(), "127.93.4.2");
    let why = stderr(&output);
    assert!(
        why.contains("skip 127.93.4.1: busy") && why.contains(&holder.pid.to_string()),
        "{why}"
    );
}

fn scan_gives_one_line_per_address() {
    let state = TempDir::new("scan");
    let holder = Holder::start("plain", "127.93.5.2", 45206, &[]);
    let output = gate(&state, "45206", &["scan", "127.93.5.1-127.93.5.3"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "127.93.5.1  free");
    assert!(lines[1].starts_with("127.93.5.2  busy"), "{}", lines[1]);
    assert!(lines[1].contains(&format!(
        "pid {} (sockcheck-holde) holds 127.93.5.2:45206",
        holder.pid
    )));
    let json: Value = serde_json::from_slice(
        &gate(
            &state,
            "45206",
            &["--json", "scan", "127.93.5.1-127.93.5.3"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(json["addresses"].as_array().unwrap().len(), 3);
}

fn wait_returns_once_the_holder_is_gone() {
    let state = TempDir::new("wait");
    let holder = Holder::start("plain", "127.93.6.1", 45207, &[]);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(holder);
    });
    let started = Instant::now();
    let output = gate(&state, "45207", &["wait", "127.93.6.1", "--timeout", "10s"]);
    killer.join().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn wait_times_out_naming_the_holder() {
    let state = TempDir::new("waittimeout");
    let holder = Holder::start("plain", "127.93.6.2", 45208, &[]);
    let output = gate(
        &state,
        "45208",
        &["wait", "127.93.6.2", "--timeout", "300ms"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains(&format!("owner: pid {}", holder.pid)),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("busy after waiting"),
        "{}",
        stderr(&output)
    );
}

fn wait_fails_at_once_on_a_foreign_address() {
    let state = TempDir::new("waitforeign");
    let _holder = Holder::start("wildcard", "-", 45209, &[]);
    let started = Instant::now();
    let output = gate(&state, "45209", &["wait", "127.93.6.3", "--timeout", "20s"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stderr(&output).contains("waiting will not help"),
        "{}",
        stderr(&output)
    );
}

fn run_reports_and_quarantines_a_lingering_worker() {
    let state = TempDir::new("run");
    let files = TempDir::created("run-files-1");
    let ready = files.join("ready");
    let report = files.join("report.json");
    let output = gate(
        &state,
        "45210",
        &[
            "run",
            "127.93.7.1",
            "--linger",
            "300ms",
            "--report",
            report.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &lingering_command(45210, &ready),
        ],
    );
    let (pid, tids) = holder_from(&ready);
    let _cleanup = KillOnDrop(pid);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&format!("## pid {pid}")), "{text}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["address"], "127.93.7.1");
    assert_eq!(json["command_status"], 0);
    let holder = &json["holders"][0];
    assert_eq!(holder["pid"], pid);
    assert_eq!(holder["state"], "zombie-leader");
    assert_eq!(holder["tids"], serde_json::json!(tids));
    assert_eq!(holder["listeners"].as_array().unwrap().len(), 2);
    assert_eq!(holder["listeners"][0]["reuseport"], true);
    assert_eq!(json["quarantined"], true);
    // Quarantined: the next acquire skips it while it is held...
    let leases: Value =
        serde_json::from_slice(&gate(&state, "45210", &["--json", "leases", "127.93.7.1"]).stdout)
            .unwrap();
    // The lease lives on in the lingering holder, for every user and
    // backend to see; this user's quarantine says why.
    assert_eq!(leases["leases"][0]["address"], "127.93.7.1", "{leases}");
    assert_eq!(
        leases["leases"][0]["quarantined"]["address"], "127.93.7.1",
        "{leases}"
    );
    let output = gate(&state, "45210", &["-v", "acquire", "127.93.7.1"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("quarantined"),
        "{}",
        stderr(&output)
    );
    // ...and hands it out again once it is free.
    kill(pid);
    let output = gate(&state, "45210", &["acquire", "127.93.7.1"]);
    assert_eq!(stdout(&output).trim(), "127.93.7.1", "{}", stderr(&output));
}

fn run_reap_frees_the_address() {
    let state = TempDir::new("reap");
    let files = TempDir::created("run-files-2");
    let ready = files.join("ready");
    let report = files.join("report.md");
    let output = gate(
        &state,
        "45211",
        &[
            "run",
            "--json",
            "127.93.7.2",
            "--linger",
            "200ms",
            "--reap",
            "--grace",
            "1s",
            "--report",
            report.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &lingering_command(45211, &ready),
        ],
    );
    let (pid, _) = holder_from(&ready);
    let _cleanup = KillOnDrop(pid);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(
        markdown.starts_with("# Lingering holders on 127.93.7.2"),
        "{markdown}"
    );
    assert!(
        markdown.contains(&format!("- pid {pid}: SIGTERM")),
        "{markdown}"
    );
    // `--json`: the same report on stdout (the command printed nothing).
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["address"], "127.93.7.2");
    assert_eq!(doc["reaped"][0]["pid"], pid);
    wait_gone(pid);
    let output = gate(&state, "45211", &["scan", "127.93.7.2"]);
    assert_eq!(stdout(&output).trim(), "127.93.7.2  free");
    let leases: Value = serde_json::from_slice(
        &gate(&state, "45211", &["--json", "leases", "127.93.0.0/16"]).stdout,
    )
    .unwrap();
    assert_eq!(leases["quarantine"].as_array().unwrap().len(), 0);
}

fn run_passes_the_address_and_the_exit_status() {
    let state = TempDir::new("status");
    let output = gate(
        &state,
        "45212,45213",
        &[
            "run",
            "127.93.8.1",
            "--",
            "sh",
            "-c",
            "echo \"$SOCKCHECK_ADDR $SOCKCHECK_PORTS\"; exit 7",
        ],
    );
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(stdout(&output), "127.93.8.1 45212,45213\n");
    // The lease is gone afterwards.
    let leases: Value =
        serde_json::from_slice(&gate(&state, "45212", &["--json", "leases", "127.93.8.1"]).stdout)
            .unwrap();
    assert_eq!(leases["leases"].as_array().unwrap().len(), 0);
}

fn run_passes_signals_to_the_command() {
    let state = TempDir::new("signal");
    let mut child = support::command()
        .args([
            "--state-dir",
            state.path(),
            "--ports",
            "45214",
            "run",
            "127.93.8.2",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo up; while :; do sleep 0.02; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
}

fn bad_input_is_one_line_exit_2_and_changes_nothing() {
    let state = TempDir::new("bad");
    let output = gate(&state, "45215", &["acquire", "127.93.9.1"]);
    assert_eq!(output.status.code(), Some(0));
    // The lease space without its clock: `age_seconds` moves on its own.
    let leases = || {
        let mut doc: Value = serde_json::from_slice(
            &gate(&state, "45215", &["--json", "leases", "127.93.9.0/24"]).stdout,
        )
        .unwrap();
        for lease in doc["leases"].as_array_mut().into_iter().flatten() {
            lease.as_object_mut().unwrap().remove("age_seconds");
        }
        doc
    };
    let before = leases();
    assert_eq!(before["leases"].as_array().map(Vec::len), Some(1), "{before}");
    let cases: &[(&[&str], &str)] = &[
        (&["acquire", "127.93.9.300-127.93.9.301"], "'127.93.9.300'"),
        (&["acquire", "127.0.0.0/8"], "at most 65536"),
        (&["scan", "127.93.9.5-127.93.9.1"], "ends before"),
        (&["acquire", "127.93.9.2", "--wait", "soon"], "'soon'"),
        (&["wait", "127.93.9.1", "--timeout", "5x"], "'5x'"),
        (&["run", "127.93.9.2", "--linger", "x"], "'x'"),
        (&["run", "127.93.9.2", "true"], "must follow '--'"),
        (&["run", "127.93.9.2"], "must follow '--'"),
        (&["release", "nope"], "'nope'"),
        (
            &[
                "run",
                "127.93.9.2",
                "--report",
                "/nonexistent/r.md",
                "--",
                "true",
            ],
            "--report",
        ),
    ];
    for (args, needle) in cases {
        let output = gate(&state, "45215", args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(leases(), before);
    // A state directory that cannot be used: a file.
    let file = state.0.join("lock");
    let output = support::command()
        .args([
            "--state-dir",
            file.to_str().unwrap(),
            "acquire",
            "127.93.9.1",
        ])
        .output()
        .unwrap();
    // A state failure: exit 3 (issue 16), not bad usage.
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(
        err.starts_with("sockcheck: state directory") && err.contains("not a directory"),
        "{err}"
    );
    assert_eq!(leases(), before);
}

fn run_answers_like_a_shell_when_the_command_cannot_run() {
    let state = TempDir::new("norun");
    let output = gate(
        &state,
        "45216",
        &["run", "127.93.10.1", "--", "/nonexistent/cmd"],
    );
    assert_eq!(output.status.code(), Some(127), "{}", stderr(&output));
    assert!(stderr(&output).contains("cannot run '/nonexistent/cmd'"));
    let output = gate(&state, "45216", &["run", "127.93.10.1", "--", "/etc"]);
    assert_eq!(output.status.code(), Some(126), "{}", stderr(&output));
    // The lease was given back either way.
    let leases: Value =
        serde_json::from_slice(&gate(&state, "45216", &["--json", "leases", "127.93.10.1"]).stdout)
            .unwrap();
    assert_eq!(leases["leases"].as_array().unwrap().len(), 0);
}

fn wait_fails_at_once_on_an_address_that_is_not_local() {
    let state = TempDir::new("waitnotlocal");
    let started = Instant::now();
    let output = gate(&state, "45217", &["wait", "192.0.2.7", "--timeout", "20s"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        stderr(&output).contains("unavailable; waiting will not help"),
        "{}",
        stderr(&output)
    );
}

/// `acquire --json` when no address could be had: the document on stdout.
fn refusal(output: &Output) -> Value {
    assert_eq!(output.status.code(), Some(1), "{}", stderr(output));
    serde_json::from_str(&stdout(output))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(output)))
}

fn acquire_fails_at_once_when_every_candidate_is_foreign() {
    let state = TempDir::new("allforeign");
    let holder = Holder::start("wildcard", "-", 45218, &[]);
    let started = Instant::now();
    let output = gate(
        &state,
        "45218",
        &["acquire", "127.93.11.1-127.93.11.4", "--wait", "20s"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited {:?} although waiting cannot help",
        started.elapsed()
    );
    let why = stderr(&output);
    assert!(why.contains("waiting will not help"), "{why}");
    for n in 1..=4 {
        let line = why
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("127.93.11.{n} ")))
            .unwrap_or_else(|| panic!("no line for 127.93.11.{n}: {why}"));
        assert!(
            line.contains("foreign") && line.contains(&format!("pid {}", holder.pid)),
            "{line}"
        );
    }

    let doc = refusal(&gate(
        &state,
        "45218",
        &[
            "--json",
            "acquire",
            "127.93.11.1-127.93.11.4",
            "--wait",
            "20s",
        ],
    ));
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["address"], Value::Null);
    assert_eq!(doc["hopeless"], true);
    let skipped = doc["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 4, "{doc}");
    for skip in skipped {
        assert_eq!(skip["reason"], "foreign", "{skip}");
        assert_eq!(skip["verdict"], "foreign", "{skip}");
        assert_eq!(skip["pids"], serde_json::json!([holder.pid]), "{skip}");
    }
}

fn acquire_allow_foreign_waits_out_the_deadline() {
    let state = TempDir::new("allowforeign");
    let _holder = Holder::start("wildcard", "-", 45219, &[]);
    let started = Instant::now();
    let output = gate(
        &state,
        "45219",
        &[
            "--json",
            "acquire",
            "127.93.12.1",
            "--wait",
            "1s",
            "--allow-foreign",
        ],
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    let doc = refusal(&output);
    assert_eq!(doc["hopeless"], false);
    assert_eq!(doc["skipped"][0]["reason"], "foreign");
    assert!(stderr(&output).contains("before the --wait deadline"));
}

fn a_failed_acquire_names_each_address_its_verdict_and_holder() {
    let state = TempDir::new("failednames");
    let holder = Holder::start("plain", "127.93.13.1", 45220, &[]);
    let mut owner = Command::new("sleep").arg("100").spawn().unwrap();
    let owner_pid = owner.id();
    let leased = gate(
        &state,
        "45220",
        &["acquire", "127.93.13.2", "--owner", &owner_pid.to_string()],
    );
    assert_eq!(stdout(&leased).trim(), "127.93.13.2");

    // For people, without -v: one line per address.
    let output = gate(&state, "45220", &["acquire", "127.93.13.1-127.93.13.2"]);
    assert_eq!(output.status.code(), Some(1));
    let why = stderr(&output);
    assert!(
        why.contains("no free address in the pool (2 addresses)"),
        "{why}"
    );
    assert!(
        why.lines().any(|l| l.contains("127.93.13.1")
            && l.contains("busy")
            && l.contains(&format!("pid {}", holder.pid))),
        "{why}"
    );
    assert!(
        why.lines().any(|l| l.contains("127.93.13.2")
            && l.contains("leased")
            && l.contains(&format!("pid {owner_pid}"))),
        "{why}"
    );

    // For programs: the same as data.
    let doc = refusal(&gate(
        &state,
        "45220",
        &["--json", "acquire", "127.93.13.1-127.93.13.2"],
    ));
    assert_eq!(doc["hopeless"], false);
    let skipped = doc["skipped"].as_array().unwrap();
    assert_eq!(skipped[0]["address"], "127.93.13.1");
    assert_eq!(skipped[0]["reason"], "busy");
    assert_eq!(skipped[0]["verdict"], "busy");
    assert_eq!(skipped[0]["pids"], serde_json::json!([holder.pid]));
    assert_eq!(skipped[1]["address"], "127.93.13.2");
    assert_eq!(skipped[1]["reason"], "leased");
    assert_eq!(skipped[1]["verdict"], Value::Null);
    assert_eq!(skipped[1]["pids"], serde_json::json!([owner_pid]));
    owner.kill().unwrap();
    owner.wait().unwrap();
}

fn run_wait_waits_for_a_free_address() {
    let state = TempDir::new("runwait");
    let mut owner = Command::new("sleep").arg("1").spawn().unwrap();
    let owner_pid = owner.id().to_string();
    let leased = gate(
        &state,
        "45221",
        &["acquire", "127.93.14.1", "--owner", &owner_pid],
    );
    assert_eq!(leased.status.code(), Some(0), "{}", stderr(&leased));
    let output = gate(&state, "45221", &["run", "127.93.14.1", "--", "true"]);
    assert_eq!(
        output.status.code(),
        Some(5),
        "no --wait: no address at once"
    );
    let output = gate(
        &state,
        "45221",
        &[
            "run",
            "--wait",
            "10s",
            "127.93.14.1",
            "--",
            "sh",
            "-c",
            "test \"$SOCKCHECK_ADDR\" = 127.93.14.1",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    owner.wait().unwrap();
}

fn pools_holding_a_wildcard_or_broadcast_address_are_refused() {
    let state = TempDir::new("badpools");
    for (pool, names) in [
        ("::1/127", "holds ::,"),
        ("0.0.0.1/31", "holds 0.0.0.0,"),
        ("255.255.255.254/31", "holds 255.255.255.255,"),
    ] {
        for command in ["acquire", "scan"] {
            let output = gate(&state, "45222", &[command, pool]);
            assert_eq!(output.status.code(), Some(2), "{command} {pool}");
            let why = stderr(&output);
            assert_eq!(why.lines().count(), 1, "{why}");
            assert!(why.contains(names), "{command} {pool}: {why}");
            assert!(stdout(&output).is_empty());
        }
    }
    assert!(
        !state.0.join("leases.json").exists(),
        "a refused pool leases nothing"
    );
}

/// The leases of a pool, as `leases --json` says.
fn lease_doc(state: &TempDir, pool: &str) -> Value {
    serde_json::from_slice(&gate(state, "45223", &["--json", "leases", pool]).stdout)
        .unwrap_or(Value::Null)
}

fn run_killed_while_its_command_runs_keeps_the_lease_for_the_command() {
    let state = TempDir::new("runkilled");
    let pool = "127.93.15.1-127.93.15.2";
    let mut run = support::command()
        .args(["--state-dir", state.path(), "--ports", "45223", "run", pool])
        .args(["--", "sleep", "60"])
        .spawn()
        .unwrap();
    // Wait until the lease lives on in the command.
    let started = Instant::now();
    let command_pid = loop {
        let leases = lease_doc(&state, pool);
        if let Some(pid) = leases["leases"][0]["holders"][0]["pid"].as_u64() {
            break pid as u32;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{leases}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _cleanup = KillOnDrop(command_pid);
    run.kill().unwrap(); // SIGKILL: run cannot release or hand anything over
    run.wait().unwrap();
    let output = gate(&state, "45223", &["--json", "acquire", pool]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        doc["address"], "127.93.15.2",
        "the address the command still uses was leased again"
    );
    // Once the command is gone too, the address comes back.
    kill(command_pid);
    let output = gate(&state, "45223", &["acquire", "127.93.15.1"]);
    assert_eq!(stdout(&output).trim(), "127.93.15.1", "{}", stderr(&output));
}

fn a_cancelled_run_still_reports_and_quarantines() {
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let state = TempDir::new(&format!("cancel{signal}"));
        let address = format!("127.93.16.{signal}");
        let ready = state.0.with_extension("ready");
        let report = state.0.with_extension("report.json");
        let run = support::command()
            .args(["--state-dir", state.path(), "--ports", "45224", "run"])
            .args([address.as_str(), "--linger", "60s", "--report"])
            .arg(&report)
            .args(["--", "sh", "-c", &lingering_command(45224, &ready)])
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !std::fs::read_to_string(&ready).is_ok_and(|r| r.contains("ready")) {
            assert!(started.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        let (pid, _) = holder_from(&ready);
        let _cleanup = KillOnDrop(pid);
        // The command has exited; run is in its 60 s linger wait.
        std::thread::sleep(Duration::from_millis(500));
        let cancelled = Instant::now();
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(run.id() as i32, signal) };
        let output = run.wait_with_output().unwrap();
        assert!(
            cancelled.elapsed() < Duration::from_secs(5),
            "{name}: run went on waiting"
        );
        assert_eq!(output.status.code(), Some(128 + signal), "{name}");
        let text = stderr(&output);
        assert!(text.contains(&format!("## pid {pid}")), "{name}: {text}");
        assert!(text.contains(name), "{name}: {text}");
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(json["interrupted_by"], name);
        assert_eq!(json["holders"][0]["pid"], pid);
        assert_eq!(json["quarantined"], true);
        let leases: Value = serde_json::from_slice(
            &gate(&state, "45224", &["--json", "leases", "127.93.16.0/24"]).stdout,
        )
        .unwrap();
        // Still leased, in the lingering holder; quarantined by this user.
        assert_eq!(leases["leases"][0]["address"], address.as_str());
        assert_eq!(
            leases["leases"][0]["quarantined"]["address"],
            address.as_str()
        );
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(&report);
    }
}

fn a_lease_taken_in_a_subshell_goes_to_the_shell_it_was_forked_from() {
    let state = TempDir::new("subshell");
    let script = format!(
        "addr=$('{bin}' --state-dir '{dir}' --ports 45225 acquire 127.93.17.1 | cat); \
         echo \"$$ $addr\"; '{bin}' --state-dir '{dir}' --json leases 127.93.17.1",
        bin = SOCKCHECK.display(),
        dir = state.path()
    );
    let output = Command::new("bash")
        .args(["-c", &script])
        .env("XDG_CACHE_HOME", support::cache_home())
        .output()
        .unwrap();
    let text = stdout(&output);
    let (first, leases) = text.split_once('\n').unwrap();
    let (shell, address) = first.split_once(' ').unwrap();
    assert_eq!(address, "127.93.17.1", "{}", stderr(&output));
    let leases: Value = serde_json::from_str(leases).unwrap();
    assert_eq!(
        leases["leases"][0]["owner"]["pid"].to_string(),
        shell,
        "{leases}"
    );
    assert_eq!(leases["leases"][0]["owner"]["alive"], true);
    assert!(
        stderr(&output).contains(&format!("the lease goes to pid {shell}")),
        "{}",
        stderr(&output)
    );
}

/// A process exec'd through a symlink whose name breaks and reorders lines
/// and hides (so its comm does), with a command line that tries to end a
/// code span and make a link.
const HOSTILE_COMM: &str = "\u{2028}\u{2029}\u{61c}|`\u{200b}";
const HOSTILE_ARG: &str = "x`|[x](http://e.vil)`\u{feff}\u{2028}\n";
const RAW: &[char] = &['\u{2028}', '\u{2029}', '\u{61c}', '\u{200b}', '\u{feff}'];

fn assert_no_raw(what: &str, text: &str) {
    for c in RAW {
        assert!(
            !text.contains(*c),
            "{what}: U+{:04X} raw in {text:?}",
            *c as u32
        );
    }
}

/// The number of `|` not escaped with a backslash.
fn cell_separators(line: &str) -> usize {
    let mut count = 0;
    let mut escaped = false;
    for c in line.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => count += 1,
            _ => escaped = false,
        }
    }
    count
}

fn hostile_process_text_is_escaped_in_run_report_and_scan() {
    let state = TempDir::new("hostile");
    // The ready line and the report, removed with their directory.
    let files = TempDir::created("hostile-files");
    let ready = files.join("ready");
    let report = files.join("report.md");
    let dir = state.0.with_extension("hostile.bin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join(HOSTILE_COMM);
    std::os::unix::fs::symlink(&*support::HOLDER, &link).unwrap();
    // The holder outlives the command, as a leaked server would.
    let script = format!(
        "\"$0\" \"$@\" > {r} 2>/dev/null < /dev/null & \
         while ! grep -q ready {r} 2>/dev/null; do sleep 0.02; done",
        r = ready.display()
    );
    let output = gate(
        &state,
        "45260",
        &[
            "run",
            "127.93.60.1",
            "--linger",
            "200ms",
            "--report",
            report.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
            link.to_str().unwrap(),
            "plain",
            "127.93.60.1",
            "45260",
            "2",
            HOSTILE_ARG,
        ],
    );
    let (pid, _) = holder_from(&ready);
    let _cleanup = KillOnDrop(pid);
    let _bin = TempDir(dir);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert_no_raw("run's stderr", &stderr(&output));
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert_no_raw("the Markdown report", &markdown);
    // The comm, escaped for the terminal, then for Markdown.
    let comm = "\\\\u{2028}\\\\u{2029}\\\\u{61c}\\|\\`\\\\u{200b}";
    assert!(
        markdown.contains(&format!("## pid {pid} ({comm})\n")),
        "{markdown}"
    );
    // Outside the code spans (checked below), no link can open.
    let outside: Vec<&str> = markdown
        .lines()
        .filter(|l| !l.starts_with("- command line: "))
        .map(|l| l.split(" exited with status ").last().unwrap())
        .collect();
    assert!(!outside.join("\n").contains("]("), "a link: {markdown}");
    // Every table row has as many cells as its header.
    let rows: Vec<&str> = markdown.lines().filter(|l| l.starts_with('|')).collect();
    assert!(rows.len() >= 3, "{markdown}");
    for row in &rows {
        assert_eq!(cell_separators(row), 8, "{row}");
    }
    // The command lines are code spans that nothing inside can close.
    let code_lines = markdown
        .lines()
        .filter(|l| l.starts_with("- command line: ") || l.contains(" exited with status "));
    let mut spans = 0;
    for line in code_lines {
        let span = line
            .strip_prefix("- command line: ")
            .unwrap_or(line.split(" exited with status ").next().unwrap());
        let fence = span.chars().take_while(|&c| c == '`').count();
        assert!(fence >= 2, "the command has a backtick: {span}");
        assert!(span.ends_with(&"`".repeat(fence)), "{span}");
        let inner = &span[fence..span.len() - fence];
        assert!(!inner.contains(&"`".repeat(fence)), "{span}");
        assert!(inner.contains("[x](http://e.vil)"), "{span}");
        spans += 1;
    }
    assert_eq!(spans, 2, "{markdown}");
    // scan's line names it escaped, on one line.
    let output = gate(&state, "45260", &["scan", "127.93.60.1"]);
    let text = stdout(&output);
    assert_no_raw("scan", &text);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "pid {pid} (\\u{{2028}}\\u{{2029}}\\u{{61c}}|`\\u{{200b}}) holds 127.93.60.1:45260"
        )),
        "{text}"
    );
}

/// Every command that takes --json prints a document; release did not.
fn release_and_leases_say_what_they_did() {
    let state = TempDir::new("release-json");
    let empty = gate(&state, "45290", &["leases", "127.93.90.0/24"]);
    assert_eq!(stdout(&empty), "no leases, nothing quarantined\n");
    let owner = std::process::id().to_string();
    let acquired = gate(
        &state,
        "45290",
        &["--json", "acquire", "127.93.90.1", "--owner", &owner],
    );
    assert_eq!(acquired.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&acquired.stdout).unwrap();
    assert_eq!(doc["owner"]["pid"].to_string(), owner);
    assert_eq!(doc["owner"]["alive"], true);
    let released = gate(&state, "45290", &["--json", "release", "127.93.90.1"]);
    assert_eq!(released.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&released.stdout).unwrap();
    assert_eq!(
        (doc["schema"].clone(), doc["released"].clone()),
        (1.into(), true.into())
    );
    let again = gate(&state, "45290", &["--json", "release", "127.93.90.1"]);
    assert_eq!(again.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(doc["released"], false);
}

// ------------------------------------------- reap (127.93.70.0/24, 45281-45285)

fn reap_ends_the_holders_of_an_address_and_exits_0_once_it_is_free() {
    let state = TempDir::new("reap-cmd");
    let holder = Holder::start("group", "127.93.70.1", 45281, &["2"]);
    let output = gate(&state, "45281", &["reap", "127.93.70.1", "--grace", "2s"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "pid {} (sockcheck-holde): SIGTERM, exited",
            holder.pid
        )),
        "{text}"
    );
    assert!(text.contains("127.93.70.1 was busy; now free"), "{text}");
    wait_gone(holder.pid);
}

fn reap_dry_run_signals_nothing() {
    let state = TempDir::new("reap-dry");
    let holder = Holder::start("plain", "127.93.70.2", 45282, &[]);
    let output = gate(
        &state,
        "45282",
        &["--json", "reap", "127.93.70.2", "--dry-run"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["before"], "busy");
    assert_eq!(doc["after"], "busy");
    assert_eq!(
        doc["reaped"],
        serde_json::json!([{"pid": holder.pid, "action": "would signal", "exited": false}])
    );
    assert!(
        std::fs::metadata(format!("/proc/{}", holder.pid)).is_ok(),
        "a dry run killed the holder"
    );
}

fn reap_sends_sigkill_to_a_holder_that_ignores_sigterm() {
    let state = TempDir::new("reap-kill");
    let files = TempDir::created("run-files-3");
    let ready = files.join("ready");
    // The holder inherits SIGTERM ignored across exec.
    let mut shell = Command::new("sh")
        .args([
            "-c",
            &format!(
                "trap '' TERM; exec '{}' plain 127.93.70.3 45283 > '{}'",
                support::HOLDER.display(),
                ready.display()
            ),
        ])
        .spawn()
        .unwrap();
    let pid = shell.id();
    let _cleanup = KillOnDrop(pid);
    let started = Instant::now();
    while !std::fs::read_to_string(&ready).is_ok_and(|r| r.contains("ready")) {
        assert!(started.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    let waiter = std::thread::spawn(move || shell.wait());
    let output = gate(
        &state,
        "45283",
        &["--json", "reap", "127.93.70.3", "--grace", "300ms"],
    );
    waiter.join().unwrap().unwrap();
    let _ = std::fs::remove_file(&ready);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        doc["reaped"],
        serde_json::json!([{"pid": pid, "action": "SIGTERM, then SIGKILL", "exited": true}])
    );
    assert_eq!(doc["after"], "free");
}

fn reap_as_another_user_is_not_permitted_and_keeps_the_holder() {
    if !support::require_setpriv("reaping as nobody") {
        return;
    }
    let roots = Holder::start("plain", "127.93.70.4", 45284, &[]);
    let run = support::sockcheck_as_nobody(&["--json", "reap", "127.93.70.4", "--ports", "45284"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["after"], "busy");
    assert_eq!(doc["hidden"], serde_json::json!([0]), "{doc}");
    assert!(std::fs::metadata(format!("/proc/{}", roots.pid)).is_ok());
    // nobody's own holder is nobody's to end.
    let own = Holder::start_as_nobody("plain", "127.93.70.5", 45285, &[]);
    let run = support::sockcheck_as_nobody(&["reap", "127.93.70.5", "--ports", "45285"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!("pid {}", own.pid)),
        "{}",
        run.stdout
    );
}

crate::tests![
    thirty_two_concurrent_acquires_get_thirty_two_addresses,
    no_address_is_ever_leased_twice_at_once,
    a_killed_owner_loses_its_lease,
    an_address_held_outside_the_lease_system_is_skipped,
    scan_gives_one_line_per_address,
    wait_returns_once_the_holder_is_gone,
    wait_times_out_naming_the_holder,
    wait_fails_at_once_on_a_foreign_address,
    run_reports_and_quarantines_a_lingering_worker,
    run_reap_frees_the_address,
    run_passes_the_address_and_the_exit_status,
    run_passes_signals_to_the_command,
    bad_input_is_one_line_exit_2_and_changes_nothing,
    run_answers_like_a_shell_when_the_command_cannot_run,
    wait_fails_at_once_on_an_address_that_is_not_local,
    acquire_fails_at_once_when_every_candidate_is_foreign,
    acquire_allow_foreign_waits_out_the_deadline,
    a_failed_acquire_names_each_address_its_verdict_and_holder,
    run_wait_waits_for_a_free_address,
    pools_holding_a_wildcard_or_broadcast_address_are_refused,
    run_killed_while_its_command_runs_keeps_the_lease_for_the_command,
    a_cancelled_run_still_reports_and_quarantines,
    a_lease_taken_in_a_subshell_goes_to_the_shell_it_was_forked_from,
    hostile_process_text_is_escaped_in_run_report_and_scan,
    release_and_leases_say_what_they_did,
    reap_ends_the_holders_of_an_address_and_exits_0_once_it_is_free,
    reap_dry_run_signals_nothing,
    reap_sends_sigkill_to_a_holder_that_ignores_sigterm,
    reap_as_another_user_is_not_permitted_and_keeps_the_holder,
];
