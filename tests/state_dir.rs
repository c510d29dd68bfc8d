//! The state directory's contents, as a hostile or careless hand leaves
//! them: FIFOs, leftovers of killed writers, newer versions, duplicate
//! leases, a directory squatted by another user. Addresses 127.88.0.0/16 and
//! ports 45600-45649 belong to this file.

mod support;

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
    let mut child = support::command()
        .arg("--state-dir")
        .arg(dir)
        .args(["--ports", "45600"])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SOCKCHECK_POOL")
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

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
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

#[test]
fn a_fifo_as_the_state_file_is_refused_not_waited_on() {
    for name in ["leases.json", "lock"] {
        let state = TempDir::new(&format!("fifo-{name}"));
        assert_eq!(gate(&state.0, &["leases"]).status.code(), Some(0));
        let _ = std::fs::remove_file(state.join(name));
        let made = Command::new("mkfifo").arg(state.join(name)).status();
        assert!(made.unwrap().success());
        let output = gate(&state.0, &["leases"]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
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

#[test]
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
    let output = gate(&state.0, &["acquire", "127.88.0.5"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        names(&state),
        [".leases.json.notapid", "leases.json", "lock"]
    );
}

#[test]
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
                assert_eq!(output.status.code(), Some(2), "{version}: {said}");
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

#[test]
fn a_state_with_two_live_owners_of_one_address_keeps_the_older_lease() {
    let state = TempDir::new("duplicates");
    assert_eq!(gate(&state.0, &["leases"]).status.code(), Some(0));
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let (me, other) = (std::process::id(), sleeper.id());
    std::fs::write(
        state.join("leases.json"),
        format!(
            r#"{{"version": 1, "leases": [{}, {}], "quarantine": []}}"#,
            lease("127.88.1.2", me, 200),
            lease("127.88.1.2", other, 100)
        ),
    )
    .unwrap();
    let output = gate(&state.0, &["leases", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let said = stderr(&output);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(
        said.contains(&format!(
            "127.88.1.2 kept for pid {other} (acquired 100), dropped for pid {me} (acquired 200)"
        )),
        "{said}"
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(doc["leases"].as_array().unwrap().len(), 1);
    assert_eq!(doc["leases"][0]["owner"]["pid"], other);
    // Said once.
    let output = gate(&state.0, &["leases"]);
    assert_eq!(stderr(&output), "");
    // The address stays leased.
    let output = gate(&state.0, &["acquire", "127.88.1.2-127.88.1.3"]);
    assert_eq!(stdout(&output).trim(), "127.88.1.3", "{}", stderr(&output));
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
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
            println!("skipped: no setpriv ({e})");
            return;
        }
        Ok(status) => assert!(status.success()),
    }
    let output = gate(&squatted, &["acquire", "127.88.2.2"]);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{said}");
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
