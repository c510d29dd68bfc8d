//! The command line's contract: bad input gets one clear line naming the bad
//! value and exit status 2; help documents the exit statuses.

mod util;

use util::sockcheck;

fn usage_error(args: &[&str], needle: &str) {
    let run = sockcheck(args);
    assert_eq!(run.status, 2, "{args:?}: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.is_empty(),
        "{args:?} printed to stdout: {}",
        run.stdout
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {:?}", run.stderr);
    assert!(
        lines[0].starts_with("sockcheck: "),
        "{args:?}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(needle),
        "{args:?}: {} lacks {needle}",
        lines[0]
    );
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    usage_error(&["127.0.0.256"], "'127.0.0.256'");
    usage_error(&["localhost:80"], "'localhost:80'");
    usage_error(&["--ports", "0", "127.91.1.1"], "port 0");
    usage_error(&["--ports", "70000", "127.91.1.1"], "port 70000");
    usage_error(&["--ports", "abc", "127.91.1.1"], "'abc'");
    usage_error(&[], "no address");
    usage_error(&["--bogus", "127.91.1.1"], "--bogus");
    usage_error(&["--color", "sometimes", "127.91.1.1"], "sometimes");
    usage_error(&["check"], "no address");
}

#[test]
fn bad_ports_from_the_environment_name_the_variable() {
    let output = std::process::Command::new(&*util::SOCKCHECK)
        .arg("127.91.1.1")
        .env("SOCKCHECK_PORTS", "9925,nine")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "sockcheck: SOCKCHECK_PORTS: 'nine' is not a port number"
    );
}

#[test]
fn ports_come_from_the_environment() {
    let output = std::process::Command::new(&*util::SOCKCHECK)
        .args(["--json", "127.91.1.2"])
        .env("SOCKCHECK_PORTS", "45190,45191")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ports"], serde_json::json!([45190, 45191]));
}

#[test]
fn check_subcommand_is_the_default_command() {
    let a = sockcheck(&["--json", "--ports", "45192", "127.91.1.3"]);
    let b = sockcheck(&["check", "--json", "--ports", "45192", "127.91.1.3"]);
    assert_eq!(a.status, 0);
    assert_eq!(a.json()["addresses"], b.json()["addresses"]);
}

#[test]
fn help_documents_exit_statuses() {
    let run = sockcheck(&["--help"]);
    assert_eq!(run.status, 0);
    for line in [
        "0  every address is free",
        "1  at least one",
        "2  bad usage",
        "3  the inspection",
    ] {
        assert!(run.stdout.contains(line), "help lacks {line:?}");
    }
    // The README carries the same table.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for line in sockcheck::exit::HELP.lines().skip(1) {
        let Some((code, text)) = line.trim().split_once("  ") else {
            continue;
        };
        assert!(
            readme.contains(&format!("| {code} | {text} |")),
            "README lacks exit status row {code}"
        );
    }
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let plain = sockcheck(&["--ports", "45193", "127.91.1.4"]);
    assert!(!plain.stdout.contains('\x1b'));
    let forced = std::process::Command::new(&*util::SOCKCHECK)
        .args(["--color", "always", "--ports", "45193", "127.91.1.4"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&forced.stdout).contains("\x1b[1;32mfree"));
}

#[test]
fn an_address_given_twice_is_inspected_once() {
    let run = util::sockcheck(&[
        "--json",
        "--ports",
        "45199",
        "127.91.0.199",
        "::ffff:127.91.0.199",
        "127.91.0.199",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let addresses = run.json()["addresses"].as_array().unwrap().clone();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(addresses[0]["address"], "127.91.0.199");
}

#[test]
fn a_signed_port_is_refused() {
    for ports in ["+5", "9925,+9926", "-1"] {
        let run = util::sockcheck(&["--ports", ports, "127.91.0.198"]);
        assert_eq!(run.status, 2, "--ports {ports}: {}", run.stderr);
        assert!(
            run.stderr.contains(ports.rsplit(',').next().unwrap()),
            "{}",
            run.stderr
        );
    }
}
