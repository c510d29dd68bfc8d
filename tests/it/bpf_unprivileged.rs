//! The unprivileged path: availability() and every entry point must say
//! plainly why eBPF cannot be used (not the loader's misleading relocation
//! error). Runs this test binary again as nobody via setpriv (needs root).
use crate::support;

use sockcheck::bpf::{BpfError, Watcher, availability, task_files, tcp_listeners};
use support::{in_child, rerun_self};

fn root_is_available() {
    if !support::in_child() && !support::require_bpf("eBPF") {
        return;
    }
    if !in_child() {
        availability().unwrap();
    }
}

fn nobody_gets_a_plain_reason() {
    if !support::in_child() && !support::require_bpf("eBPF") {
        return;
    }
    if in_child() {
        match availability() {
            Ok(()) => println!("AVAILABILITY: available"),
            Err(reason) => println!("AVAILABILITY: {reason}"),
        }
        let results = [
            tcp_listeners(&[9925, 9926]).map(drop),
            task_files(&[1]).map(drop),
            Watcher::new(&[9925]).map(drop),
        ];
        for result in results {
            match result {
                Err(e @ BpfError::Unavailable(_)) => println!("CALL: {e}"),
                other => println!("CALL: unexpected {other:?}"),
            }
        }
        return;
    }
    let (ok, out) = rerun_self(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        "nobody_gets_a_plain_reason",
    );
    assert!(ok, "{out}");
    println!("{out}");
    let reason = out
        .lines()
        .find_map(|l| l.split_once("AVAILABILITY: ").map(|(_, r)| r))
        .expect("availability line");
    assert!(reason.contains("not root (euid 65534)"), "{reason}");
    assert!(reason.contains("missing CAP_BPF+CAP_PERFMON"), "{reason}");
    if std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .is_ok_and(|s| s.trim() != "0")
    {
        assert!(
            reason.contains("kernel.unprivileged_bpf_disabled="),
            "{reason}"
        );
    }
    let calls: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once("CALL: ").map(|(_, r)| r))
        .collect();
    assert_eq!(calls.len(), 3, "{out}");
    for call in calls {
        assert_eq!(call, format!("eBPF unavailable: {reason}"));
    }
}

crate::tests![
    root_is_available,
    nobody_gets_a_plain_reason,
];
