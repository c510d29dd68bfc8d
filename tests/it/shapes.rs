//! Each shape of holder is a real process; sockcheck must give the right
//! verdict and name the right pids (and tids for the lingering shape).
//! Addresses 127.91.0.x and ports 45101-45199 belong to this file.

use crate::support;

use support::{Holder, check, check_with, owner_pids, port, sockcheck, sockcheck_as_nobody};

/// For the tests of the evidence /proc and pidfd give: pinned, because on a
/// machine with many open files `--bpf auto` (as root) asks the kernel first.
const NO_BPF: &[&str] = &["--bpf", "never"];

fn free_address_needs_no_proc_scan() {
    let (address, status) = check("127.91.0.1", "45101,45102");
    assert_eq!(status, 0);
    assert_eq!(address["verdict"], "free");
    assert_eq!(address["reasons"].as_array().unwrap().len(), 0);
    for p in [45101, 45102] {
        assert_eq!(port(&address, p)["canary"]["result"], "ok");
    }
    let run = sockcheck(&["--json", "--ports", "45101", "127.91.0.1"]);
    assert_eq!(run.json()["sources"]["proc"]["status"], "skipped");
}

fn plain_listener_is_busy_and_named() {
    let holder = Holder::start("plain", "127.91.0.2", 45103, &[]);
    let (address, status) = check_with("127.91.0.2", "45103,45104", NO_BPF);
    assert_eq!(status, 1);
    assert_eq!(address["verdict"], "busy");
    assert_eq!(address["reasons"][0]["code"], "listener");
    let p = port(&address, 45103);
    assert_eq!(p["canary"]["result"], "EADDRINUSE");
    assert_eq!(owner_pids(p), vec![u64::from(holder.pid)]);
    let listener = &p["listeners"][0];
    assert_eq!(listener["local"], "127.91.0.2:45103");
    assert_eq!(listener["coverage"], "exact");
    assert_eq!(listener["owners"][0]["comm"], "sockcheck-holde");
    assert_eq!(listener["owners"][0]["state"], "sleeping");
    assert_eq!(listener["backlog"], 128);
    assert!(listener["inode"].as_u64().unwrap() > 0);
    // Exact from the owner's own fd, since root may pidfd_getfd anything.
    assert_eq!(listener["reuseport"], false);
    assert_eq!(listener["reuseport_evidence"]["source"], "pidfd_getfd");
    assert_eq!(port(&address, 45104)["canary"]["result"], "ok");
}

fn reuseport_group_in_one_process() {
    let holder = Holder::start("group", "127.91.0.3", 45105, &["3"]);
    let (address, _) = check_with("127.91.0.3", "45105", NO_BPF);
    assert_eq!(address["verdict"], "busy");
    let p = port(&address, 45105);
    let listeners = p["listeners"].as_array().unwrap();
    assert_eq!(listeners.len(), 3);
    for l in listeners {
        assert_eq!(l["reuseport"], true);
        assert_eq!(l["reuseport_evidence"]["source"], "group");
        assert_eq!(l["group_size"], 3);
    }
    assert_eq!(owner_pids(p), vec![u64::from(holder.pid)]);
    // One reason for the group, not one per listener.
    assert_eq!(address["reasons"].as_array().unwrap().len(), 1);
    let message = address["reasons"][0]["message"].as_str().unwrap();
    assert!(message.contains("reuseport group of 3"), "{message}");
}

fn single_reuseport_listener_is_known_from_its_fd() {
    let _holder = Holder::start("reuseport", "127.91.0.4", 45106, &[]);
    let (address, _) = check_with("127.91.0.4", "45106", NO_BPF);
    let listener = &port(&address, 45106)["listeners"][0];
    assert_eq!(listener["reuseport"], true);
    assert_eq!(listener["reuseport_evidence"]["source"], "pidfd_getfd");
}

fn lingering_workers_after_the_main_thread_exited() {
    let holder = Holder::start("lingering", "127.91.0.5", 45107, &["3"]);
    let (address, status) = check("127.91.0.5", "45107");
    assert_eq!(status, 1);
    assert_eq!(address["verdict"], "busy");
    let p = port(&address, 45107);
    assert_eq!(p["listeners"].as_array().unwrap().len(), 3);
    assert_eq!(owner_pids(p), vec![u64::from(holder.pid)]);
    let owner = &p["listeners"][0]["owners"][0];
    assert_eq!(owner["state"], "zombie-leader");
    let tids: Vec<u32> = owner["tids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(tids, holder.tids);
    // Found through the threads' fd tables: /proc/PID/fd is empty.
    let via: Vec<u32> = owner["fds"][0]["via_tids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(via, holder.tids);
    // The command line is read through a live thread.
    assert!(owner["cmdline"][1] == "lingering", "{owner}");
    let message = address["reasons"][0]["message"].as_str().unwrap();
    assert!(message.contains("zombie leader"), "{message}");
    assert!(message.contains(&holder.pid.to_string()), "{message}");
}

fn lingering_single_worker_reuseport_through_a_thread_pidfd() {
    let holder = Holder::start("lingering", "127.91.0.6", 45108, &["1"]);
    let (address, _) = check_with("127.91.0.6", "45108", NO_BPF);
    let listener = &port(&address, 45108)["listeners"][0];
    assert_eq!(listener["owners"][0]["pid"], holder.pid);
    assert_eq!(listener["reuseport"], true);
    assert_eq!(
        listener["reuseport_evidence"]["source"], "pidfd_getfd",
        "{listener}"
    );
    let detail = listener["reuseport_evidence"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("thread {}", holder.tids[0])),
        "{detail}"
    );
}

fn listener_inherited_by_a_forked_child_whose_parent_exited() {
    let mut holder = Holder::start("forked", "127.91.0.7", 45109, &[]);
    holder.wait_exit();
    let child = holder.forked.unwrap();
    let (address, _) = check("127.91.0.7", "45109");
    assert_eq!(address["verdict"], "busy");
    let p = port(&address, 45109);
    assert_eq!(owner_pids(p), vec![u64::from(child)]);
    assert_ne!(p["listeners"][0]["owners"][0]["ppid"], holder.pid);
}

fn stopped_owner() {
    let holder = Holder::start("stopped", "127.91.0.8", 45110, &[]);
    // Wait until the kernel shows it stopped.
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", holder.pid)).unwrap();
        if stat.contains(") T ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (address, _) = check("127.91.0.8", "45110");
    let owner = &port(&address, 45110)["listeners"][0]["owners"][0];
    assert_eq!(owner["pid"], holder.pid);
    assert_eq!(owner["state"], "stopped");
    assert!(
        address["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("stopped")
    );
}

fn ipv4_wildcard_is_foreign() {
    let holder = Holder::start("wildcard", "-", 45111, &[]);
    let (address, status) = check("127.91.0.9", "45111");
    assert_eq!(status, 1);
    assert_eq!(address["verdict"], "foreign");
    assert_eq!(address["reasons"][0]["code"], "wildcard");
    let p = port(&address, 45111);
    assert_eq!(p["listeners"][0]["local"], "0.0.0.0:45111");
    assert_eq!(p["listeners"][0]["coverage"], "wildcard");
    assert_eq!(owner_pids(p), vec![u64::from(holder.pid)]);
}

fn dual_stack_wildcard_is_foreign_for_ipv4_and_ipv6() {
    let holder = Holder::start("dualstack", "-", 45112, &[]);
    for target in ["127.91.0.10", "::1"] {
        let (address, _) = check(target, "45112");
        assert_eq!(address["verdict"], "foreign", "{target}");
        let listener = &port(&address, 45112)["listeners"][0];
        assert_eq!(listener["local"], "[::]:45112");
        assert_eq!(listener["v6only"], false);
        assert_eq!(
            owner_pids(port(&address, 45112)),
            vec![u64::from(holder.pid)]
        );
    }
}

fn v6only_wildcard_does_not_cover_ipv4() {
    let _holder = Holder::start("v6only", "-", 45113, &[]);
    let (address, status) = check("127.91.0.11", "45113");
    assert_eq!(address["verdict"], "free");
    assert_eq!(status, 0);
    let note = address["notes"][0].as_str().unwrap();
    assert!(note.contains("IPV6_V6ONLY"), "{note}");
    let (six, _) = check("::1", "45113");
    assert_eq!(six["verdict"], "foreign");
}

fn ipv4_mapped_listener_is_busy() {
    let holder = Holder::start("mapped", "127.91.0.12", 45114, &[]);
    let (address, _) = check("127.91.0.12", "45114");
    assert_eq!(address["verdict"], "busy");
    assert_eq!(address["reasons"][0]["code"], "mapped_listener");
    let listener = &port(&address, 45114)["listeners"][0];
    assert_eq!(listener["local"], "[::ffff:127.91.0.12]:45114");
    assert_eq!(listener["coverage"], "mapped");
    assert_eq!(listener["owners"][0]["pid"], holder.pid);
    // Asking with the mapped form is the same question.
    let (again, _) = check("::ffff:127.91.0.12", "45114");
    assert_eq!(again["address"], "127.91.0.12");
    assert_eq!(again["verdict"], "busy");
}

fn ipv6_loopback_listener_is_busy() {
    let holder = Holder::start("plain", "::1", 45115, &[]);
    let (address, _) = check("::1", "45115");
    assert_eq!(address["verdict"], "busy");
    assert_eq!(
        owner_pids(port(&address, 45115)),
        vec![u64::from(holder.pid)]
    );
    // ...and does not touch IPv4.
    let (v4, _) = check("127.91.0.13", "45115");
    assert_eq!(v4["verdict"], "free");
}

fn bound_client_socket_is_a_conflict_with_its_owner() {
    let holder = Holder::start("client", "127.91.0.14", 45116, &[]);
    let (address, status) = check("127.91.0.14", "45116");
    assert_eq!(status, 1);
    assert_eq!(address["verdict"], "conflict");
    let p = port(&address, 45116);
    assert_eq!(p["canary"]["result"], "EADDRINUSE");
    assert_eq!(p["listeners"].as_array().unwrap().len(), 0);
    assert_eq!(p["other_sockets"]["by_state"]["ESTABLISHED"], 1);
    let socket = &p["other_sockets"]["sockets"][0];
    assert_eq!(socket["owners"][0]["pid"], holder.pid);
    let message = address["reasons"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("ESTABLISHED") && message.contains(&holder.pid.to_string()),
        "{message}"
    );
}

fn bound_inactive_socket_is_a_conflict_with_its_owner() {
    let holder = Holder::start("bound", "127.91.0.15", 45117, &[]);
    let (address, _) = check("127.91.0.15", "45117");
    assert_eq!(address["verdict"], "conflict");
    let p = port(&address, 45117);
    assert_eq!(p["other_sockets"]["by_state"]["BOUND_INACTIVE"], 1);
    assert_eq!(
        p["other_sockets"]["sockets"][0]["owners"][0]["pid"],
        holder.pid
    );
}

fn time_wait_alone_does_not_block() {
    let mut holder = Holder::start("timewait", "127.91.0.16", 45118, &[]);
    holder.wait_exit();
    let (address, status) = check("127.91.0.16", "45118");
    assert_eq!(address["verdict"], "free");
    assert_eq!(status, 0);
    let p = port(&address, 45118);
    // At least ours: a run less than a minute ago leaves its own.
    assert!(
        p["other_sockets"]["by_state"]["TIME_WAIT"]
            .as_u64()
            .unwrap()
            >= 1
    );
    for socket in p["other_sockets"]["sockets"].as_array().unwrap() {
        assert_eq!(socket["state"], "TIME_WAIT");
        assert_eq!(socket["inode"], 0);
        assert_eq!(socket["owners"].as_array().unwrap().len(), 0);
    }
    assert_eq!(p["canary"]["result"], "ok");
    assert!(address["notes"][0].as_str().unwrap().contains("TIME_WAIT"));
}

fn non_local_address_is_unavailable() {
    let (address, status) = check("192.0.2.1", "45119");
    assert_eq!(status, 1);
    assert_eq!(address["verdict"], "unavailable");
    assert_eq!(address["reasons"][0]["code"], "not_local");
    assert_eq!(port(&address, 45119)["canary"]["result"], "EADDRNOTAVAIL");
}

fn several_addresses_get_one_verdict_each() {
    let _holder = Holder::start("plain", "127.91.0.17", 45120, &[]);
    let run = sockcheck(&[
        "--json",
        "--ports",
        "45120",
        "127.91.0.17",
        "127.91.0.18",
        "::1",
    ]);
    assert_eq!(run.status, 1);
    let json = run.json();
    let verdicts: Vec<&str> = json["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(verdicts, ["busy", "free", "free"]);
    assert_eq!(json["schema"], 1);
}

fn human_output_names_the_lingering_pid_and_threads() {
    let holder = Holder::start("lingering", "127.91.0.19", 45121, &["2"]);
    let run = sockcheck(&["--ports", "45121", "127.91.0.19"]);
    assert_eq!(run.status, 1);
    let out = &run.stdout;
    assert!(out.starts_with("127.91.0.19  busy\n"), "{out}");
    assert!(out.contains(&format!("owner: pid {}", holder.pid)), "{out}");
    let tids = format!("live threads {},{}", holder.tids[0], holder.tids[1]);
    assert!(out.contains(&tids), "{out}");
    assert!(!out.contains('\x1b'), "NO_COLOR must disable colour: {out}");
}

fn unprivileged_run_marks_hidden_owners_and_unknown_reuseport() {
    if !support::require_root("starting a holder of another uid") {
        return;
    }
    let holder = Holder::start("plain", "127.91.0.20", 45122, &[]);
    let run = sockcheck_as_nobody(&["--json", "--ports", "45122", "127.91.0.20"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let json = run.json();
    let address = &json["addresses"][0];
    assert_eq!(address["verdict"], "busy");
    let listener = &port(address, 45122)["listeners"][0];
    let owner = &listener["owners"][0];
    assert_eq!(owner["hidden"], true);
    assert_eq!(owner["pid"], serde_json::Value::Null);
    assert_eq!(owner["uid"], 0);
    assert!(
        owner["candidates"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(holder.pid)),
        "{owner}"
    );
    assert_eq!(listener["owners_complete"], false);
    assert_eq!(listener["reuseport"], serde_json::Value::Null);
    assert_eq!(listener["reuseport_evidence"]["source"], "none");
    assert_eq!(json["sources"]["proc"]["status"], "partial");
    let message = address["reasons"][0]["message"].as_str().unwrap();
    assert!(message.contains("hidden by permissions"), "{message}");
}

fn unprivileged_run_still_sees_a_reuseport_group() {
    if !support::require_root("starting a holder of another uid") {
        return;
    }
    let _holder = Holder::start("lingering", "127.91.0.21", 45123, &["2"]);
    let run = sockcheck_as_nobody(&["--json", "--ports", "45123", "127.91.0.21"]);
    let json = run.json();
    let listener = &port(&json["addresses"][0], 45123)["listeners"][0];
    assert_eq!(json["addresses"][0]["verdict"], "busy");
    assert_eq!(listener["reuseport"], true);
    assert_eq!(listener["reuseport_evidence"]["source"], "group");
    assert_eq!(listener["owners"][0]["hidden"], true);
}

fn unprivileged_free_address_is_free() {
    if !support::require_setpriv("running sockcheck as nobody") {
        return;
    }
    let run = sockcheck_as_nobody(&["--ports", "45124", "127.91.0.22"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("127.91.0.22  free"));
}

/// The listener JSON of `target:port` when only the bind probe may tell
/// SO_REUSEPORT (no pidfd_getfd, no BPF).
fn probed_listener(target: &str, port_number: u16) -> serde_json::Value {
    let p = port_number.to_string();
    let args = [
        "--json",
        "--no-pidfd",
        "--bpf",
        "never",
        "--ports",
        &p,
        target,
    ];
    let json = sockcheck(&args).json();
    port(&json["addresses"][0], port_number)["listeners"][0].clone()
}

fn bind_probe_tells_a_plain_listener_without_pidfd() {
    let _holder = Holder::start("plain", "127.91.0.23", 45125, &[]);
    let listener = probed_listener("127.91.0.23", 45125);
    assert_eq!(listener["reuseport"], false);
    assert_eq!(listener["reuseport_evidence"]["source"], "bind_probe");
}

fn bind_probe_joins_a_reuseport_listener_and_leaves_it_alone() {
    let _holder = Holder::start("reuseport", "127.91.0.24", 45126, &[]);
    let listener = probed_listener("127.91.0.24", 45126);
    assert_eq!(listener["reuseport"], true);
    assert_eq!(listener["reuseport_evidence"]["source"], "bind_probe");
    // The probe never listened: the group is still one listener.
    let again = sockcheck(&["--json", "--ports", "45126", "127.91.0.24"]).json();
    assert_eq!(
        port(&again["addresses"][0], 45126)["listeners"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `--bpf always`: the kernel's own bit, for every kind of listener.
fn kernel_reuseport_bit_matches_what_each_listener_set() {
    if !support::require_bpf("--bpf always") {
        return;
    }
    // (shape, where it binds, port, its extra argument, address asked, bit)
    type Case<'a> = (&'a str, &'a str, u16, &'a [&'a str], &'a str, bool);
    let cases: &[Case] = &[
        ("group", "127.91.0.30", 45130, &["2"], "127.91.0.30", true),
        ("reuseport", "127.91.0.31", 45131, &[], "127.91.0.31", true),
        ("plain", "127.91.0.32", 45132, &[], "127.91.0.32", false),
        ("plain", "::1", 45133, &[], "::1", false),
        ("dualstack", "-", 45134, &[], "127.91.0.34", false),
        (
            "lingering",
            "127.91.0.35",
            45135,
            &["1"],
            "127.91.0.35",
            true,
        ),
    ];
    for &(shape, at, p, extra, target, bit) in cases {
        let _holder = Holder::start(shape, at, p, extra);
        let run = sockcheck(&[
            "--json",
            "--bpf",
            "always",
            "--ports",
            &p.to_string(),
            target,
        ]);
        let json = run.json();
        for listener in port(&json["addresses"][0], p)["listeners"]
            .as_array()
            .unwrap()
        {
            assert_eq!(
                listener["reuseport_evidence"]["source"], "kernel",
                "{shape}: {listener}"
            );
            assert_eq!(listener["reuseport"], bit, "{shape}: {listener}");
        }
        assert_eq!(json["sources"]["bpf"]["status"], "used", "{shape}");
    }
}

/// The BPF owners (the fd-table walk, bpf::task_files) and the /proc scan
/// name the same owners, fds and threads for every shape, the lingering
/// worker included.
fn task_file_owners_equal_proc_owners_for_every_shape() {
    if !support::require_bpf("--bpf always") {
        return;
    }
    type Case<'a> = (&'a str, &'a str, u16, &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        ("plain", "127.91.0.40", 45140, &[], "127.91.0.40"),
        ("group", "127.91.0.41", 45141, &["3"], "127.91.0.41"),
        ("lingering", "127.91.0.42", 45142, &["2"], "127.91.0.42"),
        ("forked", "127.91.0.43", 45143, &[], "127.91.0.43"),
        ("stopped", "127.91.0.44", 45144, &[], "127.91.0.44"),
        ("wildcard", "-", 45145, &[], "127.91.0.45"),
        ("dualstack", "-", 45146, &[], "::1"),
        ("mapped", "127.91.0.47", 45147, &[], "127.91.0.47"),
        ("client", "127.91.0.48", 45148, &[], "127.91.0.48"),
        ("bound", "127.91.0.49", 45149, &[], "127.91.0.49"),
    ];
    let owners = |json: &serde_json::Value, p: u16| -> Vec<(u64, String, String)> {
        let port = port(&json["addresses"][0], p);
        let sockets = port["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .chain(port["other_sockets"]["sockets"].as_array().unwrap());
        let mut found: Vec<(u64, String, String)> = sockets
            .flat_map(|s| {
                s["owners"].as_array().unwrap().iter().map(move |o| {
                    (
                        s["inode"].as_u64().unwrap(),
                        o["pid"].to_string(),
                        o["fds"].to_string(),
                    )
                })
            })
            .collect();
        found.sort();
        found
    };
    for &(shape, at, p, extra, target) in cases {
        let mut holder = Holder::start(shape, at, p, extra);
        if shape == "forked" {
            holder.wait_exit();
        }
        let args = |bpf: &'static str| {
            ["--json", "--bpf", bpf, "--ports", &p.to_string(), target].map(String::from)
        };
        let with_bpf = sockcheck(&args("always").each_ref().map(String::as_str)).json();
        let with_proc = sockcheck(&args("never").each_ref().map(String::as_str)).json();
        assert_eq!(
            with_bpf["sources"]["proc"]["detail"],
            "owners came from the kernel's fd tables through BPF",
            "{shape}"
        );
        // "partial" where some process (pid 1 in some sandboxes) is unreadable.
        let status = with_proc["sources"]["proc"]["status"].as_str().unwrap();
        assert!(status == "used" || status == "partial", "{shape}: {status}");
        let (a, b) = (owners(&with_bpf, p), owners(&with_proc, p));
        assert!(!a.is_empty(), "{shape}: no owners");
        assert_eq!(a, b, "{shape}");
    }
}

/// With /proc mounted hidepid=invisible, other users' processes cannot even
/// be listed: the owner is hidden, never "no owner", and the proc source says
/// why. Runs in a private pid and mount namespace, so the host's /proc is
/// untouched and every process dies with the namespace.
fn hidepid_invisible_is_reported_not_mistaken_for_no_owner() {
    if !support::require_root("unshare and mount") {
        return;
    }
    let script = format!(
        "{holder} plain 127.91.0.50 45150 > \"$READY\" 2>/dev/null < /dev/null & \
         while ! grep -q ready \"$READY\"; do sleep 0.02; done; \
         mount -o remount,hidepid=invisible /proc && \
         setpriv --reuid=65534 --regid=65534 --clear-groups -- \
         {sockcheck} --json --ports 45150 127.91.0.50; kill $!",
        holder = support::HOLDER.display(),
        sockcheck = support::SOCKCHECK.display()
    );
    let ready = std::env::temp_dir().join(format!("sockcheck-hidepid-{}", std::process::id()));
    let output = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .env("READY", &ready)
        .env("XDG_CACHE_HOME", support::cache_home())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&ready);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&output.stderr));
    });
    let listener = &port(&json["addresses"][0], 45150)["listeners"][0];
    assert_eq!(listener["owners"][0]["hidden"], true, "{listener}");
    assert_eq!(listener["owners_complete"], false);
    assert_eq!(json["sources"]["proc"]["status"], "partial");
    let detail = json["sources"]["proc"]["detail"].as_str().unwrap();
    assert!(detail.contains("hidepid=invisible"), "{detail}");
}

/// Unprivileged, on one's own lingering worker: the zombie leader's fd
/// directory belongs to root (the leader has no mm), but its live threads'
/// tables are the user's own, so the owner and its threads are named.
fn unprivileged_user_sees_its_own_lingering_worker() {
    if !support::require_root("starting a holder as nobody") {
        return;
    }
    let holder = Holder::start_as_nobody("lingering", "127.91.0.51", 45151, &["2"]);
    let run = sockcheck_as_nobody(&["--json", "--ports", "45151", "127.91.0.51"]);
    let json = run.json();
    let listener = &port(&json["addresses"][0], 45151)["listeners"][0];
    let owner = &listener["owners"][0];
    assert_eq!(owner["pid"], holder.pid, "{listener}");
    assert_eq!(owner["state"], "zombie-leader");
    assert_eq!(owner["tids"], serde_json::json!(holder.tids));
    assert_eq!(listener["reuseport"], true);
}

/// What a hostile process chose: a comm (the name of the file it was
/// exec'd through; 13 of the 15 bytes) that breaks and reorders lines and
/// hides, and a command line that tries to end a Markdown code span and
/// make a link.
const HOSTILE_COMM: &str = "\u{2028}\u{2029}\u{61c}|`\u{200b}";
const HOSTILE_ARG: &str = "x`|[x](http://e.vil)`\u{feff}\u{2028}\u{202e}\n\x1b[2J";
/// Characters that must never reach the terminal raw.
const RAW: &[char] = &[
    '\u{2028}', '\u{2029}', '\u{61c}', '\u{200b}', '\u{feff}', '\u{202e}', '\x1b',
];

/// The holder, exec'd through a symlink named `comm`, with `arg` on its
/// command line. Killed by pid on drop.
struct Named(std::process::Child, std::path::PathBuf);

impl Named {
    fn start(comm: &str, address: &str, port: u16, arg: &str) -> Named {
        use std::io::BufRead;
        let dir = std::env::temp_dir().join(format!("sockcheck-named-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join(comm);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&*support::HOLDER, &link).unwrap();
        let mut child = std::process::Command::new(&link)
            .args(["plain", address, &port.to_string(), "2", arg])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready "), "{line:?}");
        Named(child, dir)
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn hostile_comm_and_cmdline_are_escaped_in_the_human_report() {
    let holder = Named::start(HOSTILE_COMM, "127.91.70.1", 45170, HOSTILE_ARG);
    let pid = holder.0.id();
    // JSON keeps them as they are.
    let (address, status) = check("127.91.70.1", "45170");
    assert_eq!(status, 1);
    let owner = &port(&address, 45170)["listeners"][0]["owners"][0];
    assert_eq!(owner["pid"], pid);
    assert_eq!(owner["comm"], HOSTILE_COMM);
    assert_eq!(owner["cmdline"][5], HOSTILE_ARG);
    // The terminal gets every one of them escaped.
    let run = sockcheck(&["--color", "never", "--ports", "45170", "127.91.70.1"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let text = &run.stdout;
    for c in RAW {
        assert!(!text.contains(*c), "U+{:04X} raw in {text:?}", *c as u32);
    }
    let comm = "\\u{2028}\\u{2029}\\u{61c}|`\\u{200b}";
    assert!(
        text.contains(&format!(
            "reason: 127.91.70.1:45170 is held by pid {pid} ({comm})"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("owner: pid {pid} {comm}  sleeping")),
        "{text}"
    );
    assert!(
        text.contains("'x`|[x](http://e.vil)`\\u{feff}\\u{2028}\\u{202e}\\n\\x1b[2J'"),
        "{text}"
    );
    // One line per thing: the hostile text broke none.
    assert!(
        text.lines()
            .all(|l| l.is_empty() || l.starts_with(['1', ' '])),
        "{text}"
    );
}

// ------------------------------------------------- list (ports 45190-45193)

fn list_on_ports_nothing_uses_says_so_and_exits_0() {
    let run = sockcheck(&["list", "--ports", "45190"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "no socket on port 45190: nothing listens there, on any address\n"
    );
    let run = sockcheck(&["--json", "list", "--ports", "45190"]);
    assert_eq!(run.status, 0);
    let json = run.json();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["addresses"], serde_json::json!([]));
}

fn list_names_every_address_its_verdict_and_holders_sorted() {
    let group = Holder::start("group", "127.91.0.191", 45191, &["2"]);
    let plain = Holder::start("plain", "127.91.0.190", 45191, &[]);
    let wildcard = Holder::start("wildcard", "-", 45192, &[]);
    let run = sockcheck(&["list", "--ports", "45191"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let line = |address: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{address} ")))
            .unwrap_or_else(|| panic!("no line for {address}: {}", run.stdout))
            .to_string()
    };
    let plain_line = line("127.91.0.190");
    assert!(plain_line.contains("busy") && plain_line.contains(&format!("pid {}", plain.pid)));
    let group_line = line("127.91.0.191");
    assert!(
        group_line.contains("busy")
            && group_line.contains(&format!("pid {}", group.pid))
            && group_line.contains("2 listeners"),
        "{group_line}"
    );
    // A range: both ports at once, the wildcard too (which now covers the
    // other two: foreign), sorted by address.
    let run = sockcheck(&["list", "--ports", "45191-45192"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("0.0.0.0 ") && l.contains(&format!("pid {}", wildcard.pid))),
        "{}",
        run.stdout
    );
    let order: Vec<usize> = ["0.0.0.0 ", "127.91.0.190 ", "127.91.0.191 "]
        .iter()
        .map(|a| lines.iter().position(|l| l.starts_with(a)).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", run.stdout);

    // --json: the check document, one address object each.
    let json = sockcheck(&["--json", "list", "--ports", "45191"]).json();
    let addresses: Vec<&serde_json::Value> = json["addresses"].as_array().unwrap().iter().collect();
    let listed: Vec<&str> = addresses
        .iter()
        .map(|a| a["address"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"127.91.0.190") && listed.contains(&"127.91.0.191"),
        "{listed:?}"
    );
    let group_json = addresses
        .iter()
        .find(|a| a["address"] == "127.91.0.191")
        .unwrap();
    assert_eq!(group_json["verdict"], "busy");
    assert_eq!(
        owner_pids(port(group_json, 45191)),
        vec![u64::from(group.pid)]
    );
}

/// Issue 12: an owner in another pid namespace (as in a container) is
/// named by sockcheck's pid and by its own, with its cgroup.
fn an_owner_in_another_pid_namespace_is_named_with_its_own_pid() {
    if !support::require_root("unshare --pid") {
        return;
    }
    let mut unshare = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&*support::HOLDER)
        .args(["plain", "127.91.0.80", "45180"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let unshare_pid = unshare.id();
    let _unshare = support::KillOnDrop(unshare_pid);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(unshare.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("ready pid=1"), "{line:?}");
    let (address, status) = check("127.91.0.80", "45180");
    assert_eq!(status, 1);
    let owner = &port(&address, 45180)["listeners"][0]["owners"][0];
    let pid = owner["pid"].as_u64().unwrap() as u32;
    let _holder = support::KillOnDrop(pid);
    assert_ne!(pid, 1);
    assert_eq!(owner["ns_pid"], 1, "{owner}");
    assert_eq!(owner["ppid"], unshare_pid, "{owner}");
    assert!(owner["cgroup"].is_string(), "{owner}");
    let run = sockcheck(&["--ports", "45180", "127.91.0.80"]);
    assert!(
        run.stdout
            .contains(&format!("owner: pid {pid} (pid 1 in its namespace)")),
        "{}",
        run.stdout
    );
    // unshare first: killed, it says nothing, and --kill-child takes the
    // holder with it (the guard's SIGKILL of the holder would have unshare
    // re-raise SIGKILL on itself: "sigprocmask unblock failed" on stderr).
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(unshare_pid as i32, libc::SIGKILL) };
    let _ = unshare.wait();
    support::wait_gone(pid);
    drop(_holder);
}

crate::tests![
    free_address_needs_no_proc_scan,
    plain_listener_is_busy_and_named,
    reuseport_group_in_one_process,
    single_reuseport_listener_is_known_from_its_fd,
    lingering_workers_after_the_main_thread_exited,
    lingering_single_worker_reuseport_through_a_thread_pidfd,
    listener_inherited_by_a_forked_child_whose_parent_exited,
    stopped_owner,
    ipv4_wildcard_is_foreign,
    dual_stack_wildcard_is_foreign_for_ipv4_and_ipv6,
    v6only_wildcard_does_not_cover_ipv4,
    ipv4_mapped_listener_is_busy,
    ipv6_loopback_listener_is_busy,
    bound_client_socket_is_a_conflict_with_its_owner,
    bound_inactive_socket_is_a_conflict_with_its_owner,
    time_wait_alone_does_not_block,
    non_local_address_is_unavailable,
    several_addresses_get_one_verdict_each,
    human_output_names_the_lingering_pid_and_threads,
    unprivileged_run_marks_hidden_owners_and_unknown_reuseport,
    unprivileged_run_still_sees_a_reuseport_group,
    unprivileged_free_address_is_free,
    bind_probe_tells_a_plain_listener_without_pidfd,
    bind_probe_joins_a_reuseport_listener_and_leaves_it_alone,
    kernel_reuseport_bit_matches_what_each_listener_set,
    task_file_owners_equal_proc_owners_for_every_shape,
    hidepid_invisible_is_reported_not_mistaken_for_no_owner,
    unprivileged_user_sees_its_own_lingering_worker,
    hostile_comm_and_cmdline_are_escaped_in_the_human_report,
    list_on_ports_nothing_uses_says_so_and_exits_0,
    list_names_every_address_its_verdict_and_holders_sorted,
    an_owner_in_another_pid_namespace_is_named_with_its_own_pid,
];
