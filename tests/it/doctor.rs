//! `sockcheck doctor` as root and as nobody. Its own listener: 127.70.0.1
//! port 47000 (CONTRIBUTING.md's table).

use crate::support;

use serde_json::Value;

fn source<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name} in {json}"))
}

fn root_has_every_source() {
    if !support::require_root("these tests (they run sockcheck and holders as other users)") {
        return;
    }
    let run = support::sockcheck(&["doctor", "--json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(json["schema"], 1);
    assert_eq!((&json["uid"], &json["euid"]), (&0.into(), &0.into()));
    assert_eq!(json["capabilities"]["CAP_SYS_ADMIN"], true);
    assert_eq!(json["capabilities"]["CAP_SYS_PTRACE"], true);
    assert!(!json["kernel"].as_str().unwrap().is_empty());
    assert_eq!(json["proc"]["mounted"], true);
    assert_eq!(source(&json, "sock_diag")["available"], true);
    assert_eq!(source(&json, "proc_other_users")["available"], true);
    assert_eq!(source(&json, "pidfd_getfd")["available"], true, "{json}");
    assert_eq!(source(&json, "bind_probe")["available"], true);
    if json["btf"] == false {
        support::skip("partly: the BPF rows, the kernel has no BTF");
        let why = source(&json, "bpf_watch")["why"].as_str().unwrap();
        assert!(why.contains("no kernel BTF"), "{why}");
        return;
    }
    for name in ["bpf_iter", "bpf_watch"] {
        assert_eq!(source(&json, name)["available"], true, "{json}");
    }
    let text = support::sockcheck(&["doctor"]);
    assert_eq!(text.status, 0);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("BPF watch (listen/close)") && l.contains("  yes  ")),
        "{}",
        text.stdout
    );
}

fn nobody_is_told_what_is_missing() {
    if !support::require_root("running as nobody") {
        return;
    }
    let run = support::sockcheck_as_nobody(&["doctor", "--json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let json = run.json();
    assert_eq!(
        (&json["uid"], &json["euid"]),
        (&65534.into(), &65534.into())
    );
    for (cap, on) in json["capabilities"].as_object().unwrap() {
        assert_eq!(on, false, "{cap}");
    }
    assert_eq!(source(&json, "sock_diag")["available"], true);
    assert_eq!(source(&json, "proc_other_users")["available"], false);
    assert_eq!(source(&json, "bind_probe")["available"], false);
    for name in ["bpf_iter", "bpf_watch"] {
        let row = source(&json, name);
        assert_eq!(row["available"], false, "{json}");
        let why = row["why"].as_str().unwrap();
        assert!(why.contains("not root (euid 65534)"), "{why}");
        assert!(why.contains("CAP_BPF"), "{why}");
    }
    let text = support::sockcheck_as_nobody(&["doctor"]);
    assert_eq!(text.status, 0);
    assert!(
        text.stdout.contains("uid 65534, euid 65534"),
        "{}",
        text.stdout
    );
}

fn path<'a>(json: &'a Value, feature: &str) -> &'a Value {
    json["paths"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["feature"] == feature)
        .unwrap_or_else(|| panic!("no path {feature} in {json}"))
}

/// The running kernel's (major, minor).
fn kernel_version(json: &Value) -> (u32, u32) {
    let release = json["kernel"].as_str().unwrap();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// Each eBPF feature either works or says why it fell back, and the path
/// named is the one the kernel version allows: the fd walk from 5.17
/// (`bpf_loop`), else `iter/task_file`; PIDFD_THREAD from 6.9; the
/// tracepoint only with tracefs mounted. scripts/vm-test.sh checks the
/// same rows on 5.10, 6.1 and 6.12.
fn root_is_told_which_path_each_feature_takes() {
    if !support::require_bpf("the eBPF paths") {
        return;
    }
    let json = support::sockcheck(&["doctor", "--json"]).json();
    let version = kernel_version(&json);
    let owners = path(&json, "bpf_owners");
    if version >= (5, 17) {
        assert_eq!(owners["path"], "fd_walk", "{owners}");
        assert_eq!(owners["fallback"], false, "{owners}");
    } else {
        assert_eq!(owners["path"], "iter_task_file", "{owners}");
        assert_eq!(owners["fallback"], true, "{owners}");
        let why = owners["why"].as_str().unwrap();
        assert!(why.contains("the fd walk failed"), "{why}");
    }
    assert_eq!(path(&json, "bpf_listeners")["path"], "iter_tcp", "{json}");
    let watch = path(&json, "bpf_watch");
    let tracefs = [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|d| std::path::Path::new(d).is_dir());
    if tracefs {
        assert_eq!(watch["path"], "tracepoint", "{watch}");
    } else {
        assert_eq!(watch["path"], "tp_btf", "{watch}");
        assert_eq!(watch["fallback"], true, "{watch}");
        assert!(
            watch["why"]
                .as_str()
                .unwrap()
                .contains("tracefs is not mounted"),
            "{watch}"
        );
    }
    let thread = path(&json, "pidfd_thread");
    if version >= (6, 9) {
        assert_eq!(thread["path"], "pidfd_thread", "{thread}");
    } else {
        assert!(thread["path"].is_null(), "{thread}");
        assert!(
            thread["why"].as_str().unwrap().contains("EINVAL"),
            "{thread}"
        );
    }
    let text = support::sockcheck(&["doctor"]).stdout;
    assert!(
        text.lines().any(|l| l.starts_with("BPF owners")
            && (l.contains("fd walk") || l.contains("iter/task_file"))),
        "{text}"
    );
}

/// `-v` of a check says which owner path ran, the same one doctor names.
fn a_check_says_which_owner_path_it_used() {
    if !support::require_bpf("a check with --bpf always") {
        return;
    }
    let doctor = support::sockcheck(&["doctor", "--json"]).json();
    let named = match path(&doctor, "bpf_owners")["path"].as_str() {
        Some("fd_walk") => "the fd walk: iter/task with bpf_loop",
        Some("iter_task_file") => "iter/task_file, because the fd walk failed",
        other => panic!("doctor names no owner path: {other:?}"),
    };
    let holder = support::Holder::start("plain", "127.70.0.1", 47000, &[]);
    let json = support::sockcheck(&[
        "--json",
        "--bpf",
        "always",
        "--no-probe",
        "--ports",
        "47000",
        "127.70.0.1",
    ])
    .json();
    assert_eq!(json["addresses"][0]["verdict"], "busy", "{json}");
    assert_eq!(json["sources"]["bpf"]["status"], "used", "{json}");
    let detail = json["sources"]["bpf"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("fd tables for owners ({named}")),
        "{detail}"
    );
    let owners = support::owner_pids(support::port(&json["addresses"][0], 47000));
    assert_eq!(owners, [u64::from(holder.pid)], "{json}");
    let text = support::sockcheck(&["-v", "--bpf", "always", "--ports", "47000", "127.70.0.1"]);
    assert!(text.stdout.contains(named), "{}", text.stdout);
}

/// As nobody, every eBPF path is null with the reason; PIDFD_THREAD is
/// not an eBPF feature and does not depend on privileges.
fn nobody_is_told_why_no_bpf_path_is_taken() {
    if !support::require_setpriv("doctor as nobody") {
        return;
    }
    let json = support::sockcheck_as_nobody(&["doctor", "--json"]).json();
    for feature in ["bpf_owners", "bpf_listeners", "bpf_watch"] {
        let row = path(&json, feature);
        assert!(row["path"].is_null(), "{row}");
        assert!(
            row["why"]
                .as_str()
                .unwrap()
                .contains("not root (euid 65534)"),
            "{row}"
        );
    }
    let root = support::is_root().then(|| support::sockcheck(&["doctor", "--json"]).json());
    if let Some(root) = root {
        assert_eq!(
            path(&json, "pidfd_thread")["path"],
            path(&root, "pidfd_thread")["path"]
        );
    }
}

crate::tests![
    root_has_every_source,
    nobody_is_told_what_is_missing,
    root_is_told_which_path_each_feature_takes,
    a_check_says_which_owner_path_it_used,
    nobody_is_told_why_no_bpf_path_is_taken,
];
