//! The state directory's contents, as a hostile or careless hand leaves
//! them: FIFOs, leftovers of killed writers, newer versions, duplicate
//! leases, a directory squatted by another user. Addresses 127.88.0.0/16 and
//! ports 45600-45649 belong to this file.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TempDir;

/// The names in a directory, sorted.
fn names(dir: &TempDir) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs sockcheck on `dir`; fails the test, killing it, if it has not
/// finished within 10 s.
fn gate(dir: &Path, args: &[&str]) -> Output {
    let mut command = support::command();
    command.arg("--state-dir").arg(dir);
    finish(command, dir, args)
}

/// Runs sockcheck as nobody (setpriv execs it: same pid) on `dir`.
fn gate_as_nobody(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&*support::SOCKCHECK)
        .arg("--state-dir")
        .arg(dir);
    finish(command, dir, args)
}

/// `command ARGS` (sockcheck, with `dir` for messages), with the suite's
/// ports and no pool from the environment, within 10 s.
fn finish(mut command: Command, dir: &Path, args: &[&str]) -> Output {
    let mut child = command
        .args(["--ports", "45600"])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_POOL")
        .env_remove("SOCKCHECK_STATE_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sockcheck {args:?} hung on {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `starttime` of a live process, from /proc/PID/stat.
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(19).unwrap().parse().unwrap()
}

fn lease(address: &str, pid: u32, acquired: u64) -> String {
    format!(
        r#"{{"address": "{address}", "owner": {{"pid": {pid}, "start_ticks": {}}}, "acquired": {acquired}}}"#,
        start_ticks(pid)
    )
}

fn a_fifo_as_the_state_file_is_refused_not_waited_on() {
    for name in ["leases.json", "lock"] {
        let state = TempDir::new(&format!("fifo-{name}"));
        assert_eq!(gate(&state.0, &["leases"]).status.code(), Some(0));
        let _ = std::fs::remove_file(state.join(name));
        let made = Command::new("mkfifo").arg(state.join(name)).status();
        assert!(made.unwrap().success());
        let output = gate(&state.0, &["leases"]);
        // A state failure, not bad usage (issue 16).
        assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
        let said = stderr(&output);
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.contains(&format!("{name} is a FIFO, not a regular file"))
                && said.contains(&format!("remove {}", state.join(name).display())),
            "{said}"
        );
        // The way out works.
        std::fs::remove_file(state.join(name)).unwrap();
        let output = gate(&state.0, &["acquire", "127.88.0.2-127.88.0.3"]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
}

fn temp_files_are_swept() {
    let state = TempDir::new("sweep");
    assert_eq!(gate(&state.0, &["leases"]).status.code(), Some(0));
    // What killed writers left, before and after the fixed name.
    for name in [".leases.json.4242", ".leases.json.1", ".leases.json.tmp"] {
        std::fs::write(state.join(name), "{\"version\": 1, \"lea").unwrap();
    }
    std::fs::write(state.join(".leases.json.notapid"), "").unwrap();
    let output = gate(&state.0, &["leases"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(names(&state), [".leases.json.notapid", "lock"]);
    // An acquire writes no lease file (the lease is a token), and leaves
    // only the lease agent's lock and socket beside it.
    let output = gate(
        &state.0,
        &[
            "acquire",
            "127.88.0.5",
            "--owner",
            &std::process::id().to_string(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let left: Vec<String> = names(&state)
        .into_iter()
        .filter(|n| !n.starts_with("agent."))
        .collect();
    assert_eq!(left, [".leases.json.notapid", "lock"]);
    let _ = gate(&state.0, &["release", "127.88.0.5"]);
}

fn a_newer_version_is_refused_never_rewritten() {
    let state = TempDir::new("newer");
    assert_eq!(gate(&state.0, &["leases"]).status.code(), Some(0));
    let me = lease("127.88.0.9", std::process::id(), 1);
    for version in ["2", "2.0", "1e23", "\"1\"", "1.0"] {
        for text in [
            format!(r#"{{"version": {version}, "leases": [{me}], "quarantine": []}}"#),
            // Cut: it is still not ours to repair.
            format!(r#"{{"version": {version}, "leases": [{me}"#),
        ] {
            std::fs::write(state.join("leases.json"), &text).unwrap();
            for args in [&["leases"][..], &["acquire", "127.88.0.8-127.88.0.9"]] {
                let output = gate(&state.0, args);
                let said = stderr(&output);
                assert_eq!(output.status.code(), Some(3), "{version}: {said}");
                assert_eq!(said.lines().count(), 1, "{said}");
                assert!(
                    said.contains(&format!("leases.json has version {version}"))
                        && said.contains("refusing"),
                    "{said}"
                );
                assert_eq!(
                    std::fs::read_to_string(state.join("leases.json")).unwrap(),
                    text
                );
                assert_eq!(names(&state), ["leases.json", "lock"]);
            }
        }
    }
}

fn a_state_dir_squatted_by_another_user_is_refused_with_a_way_out() {
    if !support::require_root("acting as nobody") {
        return;
    }
    let base = TempDir::new("squatted");
    std::fs::create_dir(&base.0).unwrap();
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // nobody gets there first, as it could with /tmp/sockcheck-0.
    let squatted = base.join("sockcheck-0");
    let made = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "mkdir",
            "-m",
            "700",
        ])
        .arg(&squatted)
        .status();
    match made {
        Err(e) => {
            support::skip(format!("no setpriv ({e})"));
            return;
        }
        Ok(status) => assert!(status.success()),
    }
    let output = gate(&squatted, &["acquire", "127.88.2.2"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains("owned by uid 65534")
            && said.contains("remove it")
            && said.contains("--state-dir DIR")
            && said.contains("SOCKCHECK_STATE_DIR"),
        "{said}"
    );
    // Nothing was written into it.
    assert_eq!(std::fs::read_dir(&squatted).unwrap().count(), 0);
}

/// `sockcheck leases` as root with no --state-dir, and `XDG_RUNTIME_DIR`
/// set to `runtime` (as `su` without `-` or `sudo -E` leave it).
fn leases_with_runtime_dir(runtime: &Path) -> Output {
    let mut command = support::command();
    command.env("XDG_RUNTIME_DIR", runtime);
    finish(command, runtime, &["leases"])
}

/// Issue 16: root, with `XDG_RUNTIME_DIR` in another user's directory, used
/// `DIR/sockcheck`; that user moved it away, and root's next acquire handed
/// out an address a second time. Now root refuses a state directory whose
/// parent (or any directory above) another user may change, before
/// creating anything.
fn root_refuses_a_state_dir_inside_another_users_directory() {
    if !support::require_root("owning a directory as another user") {
        return;
    }
    let base = TempDir::created("xdg-other");
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = base.join("run-user-65534");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
    // A root-owned directory inside theirs does not help: they can move it.
    let inner = theirs.join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).unwrap();
    for runtime in [&theirs, &inner] {
        let output = leases_with_runtime_dir(runtime);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.starts_with(&format!(
                "sockcheck: state directory {}: ",
                runtime.join("sockcheck").display()
            )) && said.contains(&format!(
                "{} is owned by uid 65534, neither us (uid 0) nor root",
                theirs.display()
            )) && said.contains("XDG_RUNTIME_DIR")
                && said.contains("--state-dir DIR"),
            "{said}"
        );
        assert!(!runtime.join("sockcheck").exists(), "it was created");
    }
    // The same directory, root's: used.
    std::os::unix::fs::chown(&theirs, Some(0), Some(0)).unwrap();
    let output = leases_with_runtime_dir(&theirs);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(theirs.join("sockcheck/lock").is_file());
}

/// What another user can change is refused for nobody too; a sticky
/// root-owned directory (like /tmp) is fine.
fn a_state_dir_whose_parent_another_user_may_change_is_refused() {
    if !support::require_setpriv("running sockcheck as another user") {
        return;
    }
    let base = TempDir::created("parent-others");
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let parent = base.join("parent");
    std::fs::create_dir(&parent).unwrap();
    let dir = parent.join("sd");
    let cases: [(u32, u32, &str); 4] = [
        (0, 0o777, "is writable by others (mode 777) and not sticky"),
        (
            0,
            0o775,
            "is writable by its group (mode 775) and not sticky",
        ),
        // Sticky, but another non-root user owns it: they may move ours.
        (
            65533,
            0o1777,
            "is owned by uid 65533, neither us (uid 65534) nor root",
        ),
        (0, 0o1777, ""),
    ];
    for (owner, mode, refused) in cases {
        std::os::unix::fs::chown(&parent, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = gate_as_nobody(&dir, &["leases"]);
        let said = stderr(&output);
        if refused.is_empty() {
            assert_eq!(output.status.code(), Some(0), "{mode:o}: {said}");
            let meta = std::fs::symlink_metadata(&dir).unwrap();
            assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        } else {
            assert_eq!(output.status.code(), Some(3), "{owner} {mode:o}: {said}");
            assert_eq!(said.lines().count(), 1, "{said}");
            assert!(
                said.contains(&format!("{} {refused}", parent.display()))
                    && said.contains("leased twice"),
                "{said}"
            );
            assert!(!dir.exists(), "created under {owner} {mode:o}");
        }
    }
}

/// Issue 16: `--state-dir /nonexistent/sd` as root created /nonexistent.
fn only_the_last_component_of_the_state_dir_is_created() {
    let base = TempDir::created("last-component");
    std::fs::set_permissions(&base.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let missing = base.join("nonexistent");
    let dir = missing.join("sd");
    let output = gate(&dir, &["acquire", "127.88.3.2"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains(&format!("{} does not exist", missing.display()))
            && said.contains("creates only the state directory itself"),
        "{said}"
    );
    assert!(!missing.exists(), "{} was created", missing.display());
    // With the parent there, the state directory itself is created, 0700.
    std::fs::create_dir(&missing).unwrap();
    let output = gate(&dir, &["leases"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

/// Issue 16: corrupt copies were named `leases.json.corrupt-UNIXTIME`, and a
/// second corruption in the same second replaced the first copy.
fn two_corruptions_in_one_second_keep_both_copies() {
    let state = TempDir::new("corrupt-twice");
    assert_eq!(gate(&state.0, &["leases"]).status.code(), Some(0));
    // Copies already there for every second this test may take: none may
    // be replaced, whatever the clock says.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for second in now..now + 10 {
        std::fs::write(
            state.join(&format!("leases.json.corrupt-{second}")),
            "earlier",
        )
        .unwrap();
    }
    let texts = [
        "{\"version\": 1, \"leases\": [",
        "garbage",
        "{\"version\": 1, \"le",
    ];
    for text in texts {
        std::fs::write(state.join("leases.json"), text).unwrap();
        let output = gate(&state.0, &["leases"]);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(0), "{said}");
        assert!(
            said.contains("was corrupt") && said.contains("kept it as"),
            "{said}"
        );
    }
    let mut kept: Vec<String> = names(&state)
        .into_iter()
        .filter(|name| name.starts_with("leases.json.corrupt-"))
        .map(|name| std::fs::read_to_string(state.join(&name)).unwrap())
        .collect();
    kept.sort();
    let mut expected: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    expected.extend(std::iter::repeat_n("earlier".to_string(), 10));
    expected.sort();
    assert_eq!(kept, expected);
}

/// Root's default state directory (`/run/sockcheck`, here a stand-in) is
/// one that nobody can create first, as anyone can in /tmp.
fn root_default_dir_is_not_creatable_by_others() {
    if support::require_setpriv("owning a directory as root and acting as nobody") {
        sockcheck::selftest::root_default_dir_is_not_creatable_by_others();
    }
}

crate::tests![
    a_fifo_as_the_state_file_is_refused_not_waited_on,
    temp_files_are_swept,
    a_newer_version_is_refused_never_rewritten,
    a_state_dir_squatted_by_another_user_is_refused_with_a_way_out,
    root_refuses_a_state_dir_inside_another_users_directory,
    a_state_dir_whose_parent_another_user_may_change_is_refused,
    only_the_last_component_of_the_state_dir_is_created,
    two_corruptions_in_one_second_keep_both_copies,
    root_default_dir_is_not_creatable_by_others,
];
