//! `sockcheck doctor` as root and as nobody. Uses no address or port.

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

crate::tests![
    root_has_every_source,
    nobody_is_told_what_is_missing,
];
