//! One lease space (issue 16): leases made by any user, state directory or
//! backend are visible to every acquirer of the network namespace, and an
//! owner whose liveness cannot be read keeps its lease. Addresses
//! 127.86.0.0/16 and ports 45700-45749 belong to this file.

use crate::support;

use support::{stderr, stdout};

use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{KillOnDrop, TempDir, holder_from, lingering_command};

fn gate(state: &TempDir, ports: &str, args: &[&str]) -> Output {
    gate_with(state, ports, args, |c| c)
}

fn gate_with(
    state: &TempDir,
    ports: &str,
    args: &[&str],
    adjust: impl FnOnce(&mut Command) -> &mut Command,
) -> Output {
    let mut command = support::command();
    command.args(["--state-dir", state.path()]);
    // release has no use for --ports (and refuses it).
    if !args.contains(&"release") {
        command.args(["--ports", ports]);
    }
    command
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_POOL");
    adjust(&mut command).output().unwrap()
}

fn nobody(state: &TempDir, ports: &str, args: &[&str]) -> Output {
    let ports = ["--ports", ports];
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&*support::SOCKCHECK)
        .args(["--state-dir", state.path()])
        .args(if args.contains(&"release") {
            &[][..]
        } else {
            &ports[..]
        })
        .args(args)
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", "/nonexistent")
        .env_remove("SOCKCHECK_POOL")
        .output()
        .unwrap()
}

/// A process to own leases for a test: `sleep 60`, killed on drop.
struct Owner(std::process::Child);

impl Owner {
    fn new() -> Owner {
        Owner(Command::new("sleep").arg("60").spawn().unwrap())
    }

    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (up to 2 s) until `leases POOL` lists nothing: the lease agent
/// ends a lease as soon as its owners' pidfds fire.
fn assert_no_lease_left(state: &TempDir, pool: &str) {
    let started = Instant::now();
    loop {
        let doc: Value =
            serde_json::from_slice(&gate(state, "45700", &["--json", "leases", pool]).stdout)
                .unwrap();
        if doc["leases"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "leases left behind in {pool}: {doc}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn users_see_each_others_leases_and_cannot_release_them() {
    if !support::require_setpriv("a lease of another user") {
        return;
    }
    let root_state = TempDir::new("space-root");
    let nobody_state = TempDir::created("space-nobody");
    std::fs::set_permissions(
        &nobody_state.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    rustix::fs::chown(
        &nobody_state.0,
        Some(rustix::process::Uid::from_raw(65534)),
        Some(rustix::process::Gid::from_raw(65534)),
    )
    .unwrap();
    let owner = Owner::new();
    let output = gate(
        &root_state,
        "45701",
        &["acquire", "127.86.0.1", "--owner", &owner.pid()],
    );
    assert_eq!(stdout(&output).trim(), "127.86.0.1", "{}", stderr(&output));
    // Another user, another state directory: the lease is seen and named.
    let output = nobody(
        &nobody_state,
        "45701",
        &["acquire", "127.86.0.1", "--owner", &owner.pid()],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("leased to pid {} (uid 0", owner.pid())),
        "{}",
        stderr(&output)
    );
    // ... and cannot be released by that user.
    let output = nobody(&nobody_state, "45701", &["release", "127.86.0.1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("may not release it"),
        "{}",
        stderr(&output)
    );
    // nobody gets the next address of the pool, and root sees that lease.
    let output = nobody(
        &nobody_state,
        "45701",
        &["acquire", "127.86.0.1-127.86.0.2", "--owner", &owner.pid()],
    );
    assert_eq!(stdout(&output).trim(), "127.86.0.2", "{}", stderr(&output));
    let doc: Value = serde_json::from_slice(
        &gate(&root_state, "45701", &["--json", "leases", "127.86.0.0/24"]).stdout,
    )
    .unwrap();
    let uids: Vec<(String, u64)> = doc["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["address"].as_str().unwrap().to_string(),
                l["holder"]["uid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        uids,
        [("127.86.0.1".into(), 0), ("127.86.0.2".into(), 65534)],
        "{doc}"
    );
    drop(owner);
    assert_no_lease_left(&root_state, "127.86.0.0/24");
}

fn moving_the_state_directory_away_never_hands_an_address_out_twice() {
    let state = TempDir::new("space-moved");
    let owner = Owner::new();
    let output = gate(
        &state,
        "45702",
        &["acquire", "127.86.1.1", "--owner", &owner.pid()],
    );
    assert_eq!(stdout(&output).trim(), "127.86.1.1", "{}", stderr(&output));
    let moved = TempDir::new("space-moved-away");
    std::fs::rename(&state.0, &moved.0).unwrap();
    // A new directory, a new lease agent: the token still decides.
    let output = gate(&state, "45702", &["acquire", "127.86.1.1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("leased to pid"),
        "{}",
        stderr(&output)
    );
    drop(owner);
    assert_no_lease_left(&state, "127.86.1.1");
}

/// Runs sockcheck with RLIMIT_NOFILE at `limit`.
fn with_nofile(limit: u64) -> impl FnOnce(&mut Command) -> &mut Command {
    move |command| {
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    }
}

fn an_owner_whose_liveness_cannot_be_read_keeps_its_lease() {
    let state = TempDir::new("space-emfile");
    let owner = Owner::new();
    let output = gate(
        &state,
        "45703",
        &["acquire", "127.86.2.1", "--owner", &owner.pid()],
    );
    assert_eq!(stdout(&output).trim(), "127.86.2.1", "{}", stderr(&output));
    // From 5: below that the dynamic loader itself cannot open libgcc_s.
    for limit in 5..=12 {
        // Another acquirer short of fds: it fails (exit 3) or finds the
        // address leased, and never hands it out again.
        let output = gate_with(
            &state,
            "45703",
            &["acquire", "127.86.2.1", "--owner", &owner.pid()],
            with_nofile(limit),
        );
        let said = stderr(&output);
        assert!(
            matches!(output.status.code(), Some(1) | Some(3)),
            "limit {limit}: {:?} {said}",
            output.status.code()
        );
        assert!(stdout(&output).is_empty(), "limit {limit}: {said}");
        assert!(!said.contains("reclaimed"), "limit {limit}: {said}");
        // A live owner that cannot be pinned is a failure, not "no live
        // process" (bad input).
        let output = gate_with(
            &state,
            "45703",
            &["acquire", "127.86.2.2", "--owner", &owner.pid()],
            with_nofile(limit),
        );
        assert!(
            !stderr(&output).contains("no live process"),
            "limit {limit}: {}",
            stderr(&output)
        );
        if output.status.code() == Some(0) {
            let _ = gate(&state, "45703", &["release", "127.86.2.2"]);
        } else {
            assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        }
    }
    // The lease held throughout.
    let output = gate(&state, "45703", &["acquire", "127.86.2.1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    drop(owner);
    assert_no_lease_left(&state, "127.86.2.0/24");
}

fn a_udp_wildcard_on_the_old_token_port_blocks_no_lease() {
    // The npm fallback's old token was a UDP socket on ADDRESS:9924, which
    // one 0.0.0.0:9924 socket blocked for everyone.
    let Ok(udp) = std::net::UdpSocket::bind("0.0.0.0:9924") else {
        support::skip("0.0.0.0:9924/udp is taken on this machine");
        return;
    };
    let state = TempDir::new("space-udp");
    let owner = Owner::new();
    let output = gate(
        &state,
        "45704",
        &["acquire", "127.86.3.1", "--owner", &owner.pid()],
    );
    assert_eq!(stdout(&output).trim(), "127.86.3.1", "{}", stderr(&output));
    drop(udp);
    drop(owner);
    assert_no_lease_left(&state, "127.86.3.1");
}

fn a_killed_run_is_not_shown_alive_and_its_lease_lives_on_in_the_command() {
    let state = TempDir::new("space-killed-run");
    let mut run = support::command()
        .args(["--state-dir", state.path(), "--ports", "45705"])
        .args(["run", "127.86.4.1", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let command = loop {
        let doc: Value = serde_json::from_slice(
            &gate(&state, "45705", &["--json", "leases", "127.86.4.1"]).stdout,
        )
        .unwrap();
        if let Some(pid) = doc["leases"][0]["holders"][0]["pid"].as_u64() {
            break pid as u32;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{doc}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _cleanup = KillOnDrop(command);
    let run_pid = run.id();
    run.kill().unwrap();
    run.wait().unwrap();
    let started = Instant::now();
    let text = loop {
        let text = stdout(&gate(&state, "45705", &["leases", "127.86.4.1"]));
        if text.contains("exited") || started.elapsed() > Duration::from_secs(2) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        text.contains(&format!("leased to pid {run_pid} (exited; uid")),
        "{text}"
    );
    assert!(
        text.contains(&format!("living on in pid {command}")),
        "{text}"
    );
    support::kill(command);
    assert_no_lease_left(&state, "127.86.4.1");
}

fn a_waiting_acquire_gets_an_address_released_meanwhile() {
    let state = TempDir::new("space-wait");
    let owner = Owner::new();
    let output = gate(
        &state,
        "45706",
        &["acquire", "127.86.5.1", "--owner", &owner.pid()],
    );
    assert_eq!(stdout(&output).trim(), "127.86.5.1", "{}", stderr(&output));
    let waiter = support::command()
        .args(["--state-dir", state.path(), "--ports", "45706"])
        .args(["acquire", "127.86.5.1", "--wait", "20s", "--owner"])
        .arg(std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let output = gate(&state, "45706", &["release", "127.86.5.1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = waiter.wait_with_output().unwrap();
    assert_eq!(stdout(&output).trim(), "127.86.5.1", "{}", stderr(&output));
    let _ = gate(&state, "45706", &["release", "127.86.5.1"]);
    assert_no_lease_left(&state, "127.86.5.1");
}

fn acquire_and_run_have_a_default_pool() {
    let state = TempDir::new("space-default");
    let output = gate(
        &state,
        "45707",
        &["acquire", "--owner", &std::process::id().to_string()],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let address: std::net::Ipv4Addr = stdout(&output).trim().parse().unwrap();
    let last = address.octets()[3];
    assert!(
        address.octets()[..3] == [127, 0, 0] && (2..=33).contains(&last),
        "{address}"
    );
    let _ = gate(&state, "45707", &["release", &address.to_string()]);
    let output = gate(
        &state,
        "45707",
        &["run", "--", "sh", "-c", "echo $SOCKCHECK_ADDR"],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("127.0.0."),
        "{}",
        stdout(&output)
    );
}

/// The state filesystem fills while the command runs: the report still
/// reaches stderr and --report, the address stays leased in the lingering
/// holder, and the exit status is 4 (lingering), never 2.
fn a_full_state_filesystem_during_run_never_loses_the_report() {
    if !support::require_root("mounting a small tmpfs") {
        return;
    }
    let base = TempDir::created("space-full");
    let mount = base.join("fs");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let state = mount.join("state");
    let ready = base.join("ready");
    let report = base.join("report.json");
    let fill = format!(
        "{}; dd if=/dev/zero of={} bs=4k count=64 2>/dev/null; true",
        lingering_command(45708, &ready),
        mount.join("fill").display()
    );
    let output = support::command()
        .args(["--state-dir", state.to_str().unwrap(), "--ports", "45708"])
        .args(["run", "127.86.6.1", "--linger", "200ms", "--report"])
        .arg(&report)
        .args(["--", "sh", "-c", &fill])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let (pid, _) = holder_from(&ready);
    let _cleanup = KillOnDrop(pid);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(4), "{said}");
    assert!(said.contains(&format!("## pid {pid}")), "{said}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["holders"][0]["pid"], pid);
    // Still leased, in the lingering holder, for everyone to see.
    let other = TempDir::new("space-full-other");
    let output = gate(&other, "45708", &["acquire", "127.86.6.1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let output = gate(&other, "45708", &["leases", "127.86.6.1"]);
    assert!(
        stdout(&output).contains(&format!("living on in pid {pid}")),
        "{}",
        stdout(&output)
    );
    support::kill(pid);
    assert_no_lease_left(&other, "127.86.6.1");
}

/// A non-blocking connection to a lease token (the kernel's padded name),
/// or `None` once its backlog is full.
fn connect_token(address: &str) -> Option<std::os::fd::OwnedFd> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let mut name = format!("sockcheck/v1/lease/{address}").into_bytes();
    name.resize(107, 0);
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let to = SocketAddrUnix::new_abstract_name(&name).ok()?;
    rustix::net::connect(&socket, &to).ok()?;
    Some(socket)
}

fn a_flood_of_connections_to_a_token_blocks_neither_its_release_nor_the_agent() {
    let state = TempDir::new("space-flood");
    let me = std::process::id().to_string();
    let output = gate(&state, "45709", &["acquire", "127.86.7.1", "--owner", &me]);
    assert_eq!(stdout(&output).trim(), "127.86.7.1", "{}", stderr(&output));
    // Anyone may connect to a token: 300 connections that never read.
    let flood: Vec<_> = (0..300)
        .map_while(|_| connect_token("127.86.7.1"))
        .collect();
    assert!(flood.len() >= 64, "only {} connections", flood.len());
    // The agent still takes leases, and the owner can still release.
    let output = gate(&state, "45709", &["acquire", "127.86.7.2", "--owner", &me]);
    assert_eq!(stdout(&output).trim(), "127.86.7.2", "{}", stderr(&output));
    for address in ["127.86.7.1", "127.86.7.2"] {
        let output = gate(&state, "45709", &["release", address]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    drop(flood);
    assert_no_lease_left(&state, "127.86.7.0/24");
}

crate::tests![
    users_see_each_others_leases_and_cannot_release_them,
    moving_the_state_directory_away_never_hands_an_address_out_twice,
    an_owner_whose_liveness_cannot_be_read_keeps_its_lease,
    a_udp_wildcard_on_the_old_token_port_blocks_no_lease,
    a_killed_run_is_not_shown_alive_and_its_lease_lives_on_in_the_command,
    a_waiting_acquire_gets_an_address_released_meanwhile,
    acquire_and_run_have_a_default_pool,
    a_full_state_filesystem_during_run_never_loses_the_report,
    a_flood_of_connections_to_a_token_blocks_neither_its_release_nor_the_agent,
];
