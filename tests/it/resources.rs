//! Resource exhaustion is exit 3 with one line (issue 17): no thread, no
//! memory, no file descriptor left is a failure sockcheck says, never a
//! panic (exit 101) or an abort (SIGABRT). Address 127.82.0.1 and ports
//! 46500-46509 belong to this file.

use crate::support;

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Output;

use support::TempDir;

const ADDRESS: &str = "127.82.0.1";
const PORT: u16 = 46500;

/// A reuseport listener for the commands to find (they then look for its
/// owner, on threads where the machine allows).
fn listener() -> std::net::TcpListener {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket
        .bind(
            &format!("{ADDRESS}:{PORT}")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(8).unwrap();
    socket.into()
}

/// The commands to starve: each looks up owners, SO_REUSEPORT evidence, or
/// another namespace, on threads of its own when it can.
/// `run` leases `run_address`: each test its own.
fn commands(state: &TempDir, run_address: &str) -> Vec<Vec<String>> {
    let port = PORT.to_string();
    let mut all: Vec<Vec<&str>> = vec![
        vec![ADDRESS, "--ports", &port],
        vec!["scan", "127.82.0.0/30", "--ports", &port],
        vec!["list", "--ports", &port],
        vec!["reap", ADDRESS, "--dry-run", "--ports", &port],
        vec![
            "run",
            run_address,
            "--state-dir",
            state.path(),
            "--ports",
            "46501",
            "--linger",
            "100ms",
            "--",
            "true",
        ],
    ];
    if support::is_root() {
        // Its own network namespace: --netns without a namespace to make.
        all.push(vec![
            "--netns",
            "/proc/self/ns/net",
            ADDRESS,
            "--ports",
            &port,
        ]);
    } else {
        support::skip("partly: the --netns case needs root");
    }
    all.into_iter()
        .map(|c| c.into_iter().map(String::from).collect())
        .collect()
}

/// Whether the outcome is one a person can act on: an answer (0, 1), or a
/// failure of one line (3). `run` may also give its command's status.
fn assert_said(what: &str, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.signal().is_none(),
        "{what}: killed by signal {:?}: {stderr}",
        output.status.signal()
    );
    let code = output.status.code().unwrap();
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(matches!(code, 0 | 1 | 3), "{what}: exit {code}: {stderr}");
    if code == 3 {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{what}: exit 3 said nothing");
        assert!(
            lines.iter().all(|l| l.starts_with("sockcheck: ")),
            "{what}: {stderr}"
        );
    }
}

fn out_of_memory_is_exit_3_with_one_line_never_an_abort() {
    let _listener = listener();
    let state = TempDir::new("resources-as");
    for megabytes in [10u64, 20, 30, 50] {
        for args in commands(&state, "127.82.0.2") {
            let limit = megabytes << 20;
            let mut command = support::command();
            command.args(&args).env("NO_COLOR", "1");
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let output = command.output().unwrap();
            // A dynamic loader that cannot map libc (127) never ran
            // sockcheck: nothing to judge.
            if output.status.code() == Some(127) {
                continue;
            }
            assert_said(&format!("RLIMIT_AS {megabytes} MiB: {args:?}"), &output);
        }
    }
}

/// A pids cgroup (v1 or v2) of its own, removed on drop.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn new(max: u32) -> Option<PidsCgroup> {
        let name = format!("sockcheck-test-{}-{max}", std::process::id());
        let base = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .iter()
            .map(std::path::Path::new)
            .find(|b| {
                b.join("cgroup.procs").exists() && {
                    // v2 needs the pids controller enabled for children.
                    !b.ends_with("cgroup")
                        || std::fs::read_to_string(b.join("cgroup.subtree_control"))
                            .is_ok_and(|c| c.contains("pids"))
                }
            })?;
        let dir = base.join(name);
        std::fs::create_dir(&dir).ok()?;
        std::fs::write(dir.join("pids.max"), max.to_string()).ok()?;
        Some(PidsCgroup(dir))
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn no_thread_to_start_is_exit_3_with_one_line_never_a_panic() {
    if !support::require_root("a pids cgroup") {
        return;
    }
    let _listener = listener();
    let state = TempDir::new("resources-pids");
    for max in [2u32, 3, 4] {
        let Some(cgroup) = PidsCgroup::new(max) else {
            support::skip("no pids cgroup controller to limit threads with");
            return;
        };
        for args in commands(&state, "127.82.0.4") {
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(cgroup.0.join("cgroup.procs"))
                .unwrap();
            let mut command = support::command();
            command.args(&args).env("NO_COLOR", "1");
            // SAFETY: write(2) only: "0" moves the writing process.
            unsafe {
                command.pre_exec(move || {
                    (&procs).write_all(b"0")?;
                    Ok(())
                });
            }
            let output = command.output().unwrap();
            assert_said(&format!("pids.max {max}: {args:?}"), &output);
        }
    }
}

fn run_without_room_for_its_duties_fails_before_its_command() {
    let state = TempDir::new("resources-nofile");
    let files = TempDir::created("resources-nofile-files");
    let ran = files.join("ran");
    let mut command = support::command();
    command
        .args(["--state-dir", state.path(), "--ports", "46502"])
        .args(["run", "127.82.0.3", "--", "touch"])
        .arg(&ran)
        .env("NO_COLOR", "1");
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let rlimit = libc::rlimit {
                rlim_cur: 24,
                rlim_max: 24,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert_said("RLIMIT_NOFILE 24: run", &output);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!ran.exists(), "the command ran");
}

crate::tests![
    out_of_memory_is_exit_3_with_one_line_never_an_abort,
    no_thread_to_start_is_exit_3_with_one_line_never_a_panic,
    run_without_room_for_its_duties_fails_before_its_command,
];
