//! Port leases (issue 18): `acquire-port` is get-port without the race.
//! Ports 31900-31999 on 127.0.0.1 and 127.79.0.0/16 belong to this file.

use crate::support;

use support::{stderr, stdout};

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::TempDir;

fn sockcheck(state: &TempDir, args: &[&str]) -> Output {
    support::command()
        .args(["--state-dir", state.path()])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn me() -> String {
    std::process::id().to_string()
}

fn acquire_port_skips_busy_wildcard_and_leased_ports_and_names_why() {
    let state = TempDir::new("ports-skip");
    // 31900: a listener on the host; 31901: a wildcard; 31902: leased.
    let busy = std::net::TcpListener::bind("127.0.0.1:31900").unwrap();
    let wildcard = std::net::TcpListener::bind("0.0.0.0:31901").unwrap();
    let leased = sockcheck(&state, &["acquire-port", "31902", "--owner", &me()]);
    assert_eq!(stdout(&leased).trim(), "31902", "{}", stderr(&leased));
    let output = sockcheck(
        &state,
        &[
            "acquire-port",
            "31900-31903",
            "--owner",
            &me(),
            "--count",
            "1",
        ],
    );
    assert_eq!(stdout(&output).trim(), "31903", "{}", stderr(&output));
    // None left: each port passed over says why.
    let output = sockcheck(&state, &["acquire-port", "31900-31903", "--owner", &me()]);
    assert_eq!(output.status.code(), Some(1));
    let said = stderr(&output);
    assert!(
        said.contains("31900") && said.contains("127.0.0.1:31900"),
        "{said}"
    );
    assert!(
        said.contains("31901") && said.contains("0.0.0.0:31901"),
        "{said}"
    );
    assert!(said.contains(&format!("leased to pid {}", me())), "{said}");
    let output = sockcheck(
        &state,
        &["--json", "acquire-port", "31900-31901", "--owner", &me()],
    );
    let doc: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(doc["ports"], serde_json::Value::Null);
    assert_eq!(doc["skipped"][0]["reason"], "busy");
    for port in ["31902", "31903"] {
        let output = sockcheck(&state, &["release-port", port]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    }
    let output = sockcheck(&state, &["release-port", "31903"]);
    assert_eq!(output.status.code(), Some(1));
    drop((busy, wildcard));
}

fn a_port_with_only_time_wait_remnants_comes_after_a_clean_one() {
    let state = TempDir::new("ports-tw");
    // A TIME_WAIT remnant on 31910: the side that closes first keeps it.
    let listener = std::net::TcpListener::bind("127.0.0.1:31910").unwrap();
    let client = std::net::TcpStream::connect("127.0.0.1:31910").unwrap();
    let (server, _) = listener.accept().unwrap();
    drop(listener);
    drop(server);
    drop(client);
    std::thread::sleep(Duration::from_millis(50));
    let output = sockcheck(&state, &["acquire-port", "31910-31911", "--owner", &me()]);
    assert_eq!(stdout(&output).trim(), "31911", "{}", stderr(&output));
    // Then the remnant's port: free for a server with SO_REUSEADDR.
    let output = sockcheck(&state, &["acquire-port", "31910-31911", "--owner", &me()]);
    assert_eq!(stdout(&output).trim(), "31910", "{}", stderr(&output));
    for port in ["31910", "31911"] {
        sockcheck(&state, &["release-port", port]);
    }
}

fn leases_lists_port_leases_beside_addresses_and_bad_ranges_are_one_line() {
    let state = TempDir::new("ports-leases");
    let output = sockcheck(
        &state,
        &[
            "acquire-port",
            "31920",
            "--owner",
            &me(),
            "--host",
            "127.79.0.1",
        ],
    );
    assert_eq!(stdout(&output).trim(), "31920", "{}", stderr(&output));
    let doc: serde_json::Value =
        serde_json::from_slice(&sockcheck(&state, &["--json", "leases"]).stdout).unwrap();
    let row = doc["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == 31920)
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["kind"], "port", "{doc}");
    assert_eq!(row["address"], "127.79.0.1", "{doc}");
    sockcheck(&state, &["release-port", "31920"]);
    for bad in ["0", "70000", "31930-31920", "x"] {
        let output = sockcheck(&state, &["acquire-port", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        assert_eq!(
            stderr(&output).lines().count(),
            1,
            "{bad}: {}",
            stderr(&output)
        );
    }
}

fn run_lease_ports_exports_them_and_checks_them_after_the_command() {
    let state = TempDir::new("ports-run");
    let output = sockcheck(
        &state,
        &[
            "--ports",
            "31940",
            "run",
            "127.79.1.1",
            "--lease-ports",
            "2",
            "--",
            "sh",
            "-c",
            "echo \"$SOCKCHECK_PORT $SOCKCHECK_PORTS\"",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    let (first, all) = text.trim().split_once(' ').unwrap();
    let ports: Vec<u16> = all.split(',').map(|p| p.parse().unwrap()).collect();
    assert_eq!(ports.len(), 2);
    assert_eq!(first.parse::<u16>().unwrap(), ports[0]);
    // Both released afterwards.
    let doc: serde_json::Value =
        serde_json::from_slice(&sockcheck(&state, &["--json", "leases"]).stdout).unwrap();
    let left: Vec<&serde_json::Value> = doc["leases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "port" && r["address"] == "127.79.1.1")
        .collect();
    assert!(left.is_empty(), "{doc}");
}

/// 32 processes each lease a port of a 16-port range, serve on it, talk to
/// their own server and release, until 2,000 leases: 0 EADDRINUSE and 0
/// cross-talk (every answer comes from the server of the process that
/// leased the port).
fn a_port_storm_of_32_processes_on_16_ports_never_collides() {
    let script = r#"
import os, socket, subprocess, sys
bin, state, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
me = str(os.getpid()).encode()
inuse = crosstalk = 0
for _ in range(cycles):
    port = int(subprocess.run([bin, "--state-dir", state, "acquire-port", "31950-31965",
        "--owner", str(os.getpid()), "--wait", "60s"], check=True, capture_output=True).stdout)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("127.0.0.1", port))
    except OSError:
        inuse += 1
        subprocess.run([bin, "--state-dir", state, "release-port", str(port)], check=True)
        continue
    server.listen(8)
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.sendall(me)
    if client.recv(64) != me:
        crosstalk += 1
    # The server's end closes first, so the TIME_WAIT remnant stays on the
    # leased port: a client closing first leaves it on its ephemeral port,
    # which may be another test's fixed port (a [::] listener without
    # SO_REUSEADDR then cannot bind it for a minute).
    for s in (conn, client, server):
        s.close()
    subprocess.run([bin, "--state-dir", state, "release-port", str(port)], check=True)
print(inuse, crosstalk)
"#;
    if Command::new("python3").arg("--version").output().is_err() {
        support::skip("the port storm's workers are python3, not installed");
        return;
    }
    let state = TempDir::new("ports-storm");
    let started = Instant::now();
    let workers: Vec<_> = (0..32)
        .map(|i| {
            // 2,000 leases in all: 63 for the first 16 workers, 62 after.
            let cycles = if i < 16 { 63 } else { 62 };
            Command::new("python3")
                .args(["-c", script])
                .arg(&*support::SOCKCHECK)
                .arg(state.path())
                .arg(cycles.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut inuse, mut crosstalk) = (0, 0);
    for worker in workers {
        let output = worker.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let counts: Vec<u32> = stdout(&output)
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        inuse += counts[0];
        crosstalk += counts[1];
    }
    eprintln!(
        "port storm: 2000 leases in {:.1} s, {inuse} EADDRINUSE, {crosstalk} cross-talk",
        started.elapsed().as_secs_f64()
    );
    assert_eq!((inuse, crosstalk), (0, 0));
}

/// `release-port --json`: one document, a row per port in the order asked,
/// saying which leases ended and why the others did not (exit 1).
fn release_port_json_says_per_port_what_was_released() {
    let state = TempDir::new("ports-release-json");
    let output = sockcheck(&state, &["acquire-port", "31960", "--owner", &me()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "31960");
    let output = sockcheck(&state, &["release-port", "--json", "31960", "31961"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(doc["schema"], 1);
    assert_eq!(
        doc["ports"],
        serde_json::json!([
            {"port": 31960, "released": true},
            {"port": 31961, "released": false, "error": "not leased"},
        ])
    );
    assert!(stderr(&output).contains("port 31961 was not released: not leased"));
}

crate::tests![
    release_port_json_says_per_port_what_was_released,
    acquire_port_skips_busy_wildcard_and_leased_ports_and_names_why,
    a_port_with_only_time_wait_remnants_comes_after_a_clean_one,
    leases_lists_port_leases_beside_addresses_and_bad_ranges_are_one_line,
    run_lease_ports_exports_them_and_checks_them_after_the_command,
    a_port_storm_of_32_processes_on_16_ports_never_collides,
];
