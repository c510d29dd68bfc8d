//! The command line's contract: bad input gets one clear line naming the bad
//! value and exit status 2; help documents the exit statuses.

use crate::support;

use support::sockcheck;

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
    // clap's multi-line message stays one line.
    usage_error(&["release"], "not provided: <ADDRESS>");
    usage_error(&["wait", "127.91.1.1", "--timeout=-1s"], "'-1s' is negative");
    usage_error(&["wait", "127.91.1.1", "--timeout", "-1s"], "'-1s' is negative");
    usage_error(&["wait", "127.91.1.1", "--timeout", "9000h"], "more than a year");
    usage_error(&["127.91.1.1", "list"], "'list' is a command, and a command comes first");
}

/// No option is dropped: one a command has no use for is refused, before
/// or after the command, naming both.
fn an_option_a_command_does_not_use_is_refused() {
    usage_error(&["doctor", "--ports", "9925"], "--ports");
    usage_error(&["--ports", "9925", "doctor"], "'sockcheck doctor'");
    usage_error(&["--state-dir", "/tmp", "127.91.1.1"], "--state-dir");
    usage_error(&["man", "-q"], "--quiet does not apply to 'sockcheck man'");
    usage_error(&["completions", "bash", "--json"], "--json");
    usage_error(&["--json", "man"], "--json");
    usage_error(&["completions", "zsh", "-v"], "--verbose");
    usage_error(&["man", "--color", "never"], "--color");
    let me = format!("pid:{}", std::process::id());
    usage_error(&["--netns", &me, "watch", "--all-netns"], "--all-netns");
    usage_error(&["watch", "--netns", &me, "--all-netns"], "--all-netns");
}

fn bad_ports_from_the_environment_name_the_variable() {
    let output = support::command()
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

fn ports_come_from_the_environment() {
    let output = support::command()
        .args(["--json", "127.91.1.2"])
        .env("SOCKCHECK_PORTS", "45190,45191")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["ports"], serde_json::json!([45190, 45191]));
}

fn check_subcommand_is_the_default_command() {
    let a = sockcheck(&["--json", "--ports", "45192", "127.91.1.3"]);
    let b = sockcheck(&["check", "--json", "--ports", "45192", "127.91.1.3"]);
    assert_eq!(a.status, 0);
    assert_eq!(a.json()["addresses"], b.json()["addresses"]);
}

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

fn colour_only_when_asked_or_on_a_terminal() {
    let plain = sockcheck(&["--ports", "45193", "127.91.1.4"]);
    assert!(!plain.stdout.contains('\x1b'));
    let forced = support::command()
        .args(["--color", "always", "--ports", "45193", "127.91.1.4"])
        .output()
        .unwrap();
    let green = sockcheck::report::human::Style::of(sockcheck::Verdict::Free);
    assert!(String::from_utf8_lossy(&forced.stdout).contains(&format!("{green}free")));
    // CLICOLOR_FORCE colours a pipe; NO_COLOR wins over it; TERM=dumb
    // leaves a pipe plain.
    let with_env = |env: &[(&str, &str)]| {
        let mut command = support::command();
        command.args(["--ports", "45193", "127.91.1.4"]);
        for (key, value) in env {
            command.env(key, value);
        }
        String::from_utf8_lossy(&command.output().unwrap().stdout).into_owned()
    };
    assert!(with_env(&[("CLICOLOR_FORCE", "1")]).contains('\x1b'));
    assert!(!with_env(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
    assert!(!with_env(&[("TERM", "dumb")]).contains('\x1b'));
}

fn an_address_given_twice_is_inspected_once() {
    let run = support::sockcheck(&[
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

fn a_signed_port_is_refused() {
    for ports in ["+5", "9925,+9926", "-1"] {
        let run = support::sockcheck(&["--ports", ports, "127.91.0.198"]);
        assert_eq!(run.status, 2, "--ports {ports}: {}", run.stderr);
        assert!(
            run.stderr.contains(ports.rsplit(',').next().unwrap()),
            "{}",
            run.stderr
        );
    }
}

fn error_messages_escape_and_cut_echoed_values() {
    let long_address = format!("127.0.0.{}", "1".repeat(120 * 1024));
    let long_ports = "9".repeat(120 * 1024);
    let osc = "\x1b]0;x\x07";
    let forged = "x\nsockcheck: 127.0.0.2 free";
    let hidden = "\u{2028}\u{2029}\u{61c}\u{200b}\u{feff}\u{202e}\u{85}";
    let color = format!("{osc}{}", "a".repeat(100_000));
    let flag = format!("--{forged}");
    /// Arguments, and environment variables to set.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (vec![osc], vec![]),
        (vec!["check", forged], vec![]),
        (vec!["scan"], vec![("SOCKCHECK_POOL", forged)]),
        (vec!["scan", hidden], vec![]),
        (vec!["scan", "127.0.0.1/x\x1b[2J"], vec![]),
        (vec!["acquire", "127.0.0.1-\x07\n"], vec![]),
        (vec![&long_address], vec![]),
        (vec!["--ports", hidden, "127.91.1.5"], vec![]),
        (vec!["--ports", &long_ports, "127.91.1.5"], vec![]),
        (vec!["127.91.1.5"], vec![("SOCKCHECK_PORTS", forged)]),
        (vec!["wait", "127.91.1.5", "--timeout", forged], vec![]),
        (
            vec!["run", "--linger", osc, "127.91.1.5", "--", "true"],
            vec![],
        ),
        // clap's own errors quote the bad value.
        (vec!["--color", &color, "127.91.1.5"], vec![]),
        (vec![&flag, "127.91.1.5"], vec![]),
    ];
    for (args, env) in cases {
        let mut command = support::command();
        command
            .args(&args)
            .env_remove("SOCKCHECK_PORTS")
            .env_remove("SOCKCHECK_POOL");
        for (key, value) in &env {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
        assert_eq!(output.status.code(), Some(2), "{shown:?} {env:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{shown:?}");
        assert!(
            stderr.starts_with("sockcheck: ") && stderr.ends_with('\n'),
            "{shown:?}: {stderr:?}"
        );
        let line = &stderr[..stderr.len() - 1];
        assert!(
            !line.chars().any(|c| c.is_control() || hidden.contains(c)),
            "{shown:?}: {stderr:?}"
        );
        assert!(
            stderr.len() < 300,
            "{shown:?}: {} bytes: {stderr:?}",
            stderr.len()
        );
    }
    // The cut says how long the value was.
    let run = sockcheck(&[&long_address]);
    assert!(
        run.stderr
            .contains(&format!("…' ({} bytes)", long_address.len())),
        "{}",
        run.stderr
    );
    let run = sockcheck(&[osc]);
    assert_eq!(
        run.stderr,
        "sockcheck: '\\x1b]0;x\\x07' is not an IP address (host names are not resolved; give an IP address)\n"
    );
}

fn a_misspelt_flag_keeps_clap_s_tip_on_a_second_line() {
    let run = sockcheck(&["--port", "9925", "127.91.1.6"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{:?}", run.stderr);
    assert!(
        lines[0].starts_with("sockcheck: ") && lines[0].contains("'--port'"),
        "{}",
        lines[0]
    );
    assert!(lines[1].starts_with("  tip: ") && lines[1].contains("'--ports'"));
}

fn a_misspelt_subcommand_is_suggested() {
    usage_error(&["chek", "127.0.0.2"], "did you mean `check`?");
    usage_error(&["sacn"], "did you mean `scan`?");
}

fn durations_read_as_people_write_them() {
    usage_error(
        &["wait", "127.91.1.7", "--timeout", "soon"],
        "--timeout: 'soon'",
    );
    let run = sockcheck(&[
        "wait",
        "--ports",
        "45194",
        "--timeout",
        "1m30s",
        "127.91.1.7",
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
}

fn quiet_prints_nothing_and_keeps_the_exit_status() {
    let run = sockcheck(&["-q", "--ports", "45195", "127.91.1.8"]);
    assert_eq!(
        (run.status, run.stdout.as_str(), run.stderr.as_str()),
        (0, "", "")
    );
    let run = sockcheck(&["--quiet", "--json", "--ports", "45195", "127.91.1.8"]);
    assert_eq!((run.status, run.stdout.as_str()), (0, ""));
    // Usage errors still say what was wrong.
    usage_error(&["-q", "127.0.0.256"], "'127.0.0.256'");
}

fn completions_and_the_man_page_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let run = sockcheck(&["completions", shell]);
        assert_eq!(run.status, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains("sockcheck"), "{shell}");
        assert!(run.stdout.contains("acquire"), "{shell}: no subcommands");
    }
    let run = sockcheck(&["man"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with(".ie") || run.stdout.contains(".TH sockcheck"));
    assert!(
        run.stdout.contains("Exit status"),
        "the man page lacks exit statuses"
    );
    // Each command's own flags are in the page (in roff, `-` is `\-`) and
    // in the completions, not only the top level's.
    let bash = sockcheck(&["completions", "bash"]).stdout;
    for (command, flag) in [
        ("watch", "--all-netns"),
        ("watch", "--count"),
        ("reap", "--grace"),
        ("reap", "--dry-run"),
        ("acquire", "--allow-foreign"),
        ("run", "--linger"),
    ] {
        let roff = flag.replace('-', "\\-");
        assert!(
            run.stdout.contains(&format!(".SS \"sockcheck {command}\"")),
            "the man page has no section for {command}"
        );
        assert!(
            run.stdout.contains(&roff),
            "the man page lacks {command} {flag}"
        );
        assert!(
            bash.contains(flag),
            "bash completions lack {command} {flag}"
        );
    }
}

fn each_command_s_help_has_its_own_exit_statuses_and_flags() {
    for (command, has, lacks) in [
        (
            "run",
            "4  the command succeeded",
            "0  every address is free",
        ),
        (
            "watch",
            "0    after --count events",
            "0  every address is free",
        ),
        ("doctor", "0  the report was printed", "--state-dir"),
        ("leases", "--state-dir", "--no-probe"),
        ("release", "--state-dir", "--bpf"),
        ("watch", "--ports", "--state-dir"),
    ] {
        let run = sockcheck(&[command, "--help"]);
        assert_eq!(run.status, 0, "{command}");
        assert_eq!(run.stdout.matches("Exit status").count(), 1, "{command}");
        assert!(run.stdout.contains(has), "{command} --help lacks {has:?}");
        assert!(
            !run.stdout.contains(lacks),
            "{command} --help has {lacks:?}"
        );
    }
    // Every positional argument says what it is.
    let cli = sockcheck::cli::command();
    for command in std::iter::once(&cli).chain(cli.get_subcommands()) {
        for arg in command.get_positionals().filter(|a| !a.is_hide_set()) {
            assert!(
                arg.get_help().is_some(),
                "{} {}: no description",
                command.get_name(),
                arg.get_id()
            );
        }
    }
    // -h is short, --help long.
    let short = sockcheck(&["-h"]).stdout;
    let long = sockcheck(&["--help"]).stdout;
    assert!(short.len() < long.len() && !short.contains("Exit status"));
}

fn port_ranges_are_taken_and_bad_ones_refused() {
    let run = support::sockcheck(&["--json", "--ports", "45195-45197,45195", "127.91.0.195"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        run.json()["ports"],
        serde_json::json!([45195, 45196, 45197])
    );
    for (ports, needle) in [
        ("45197-45195", "ends before it starts"),
        ("45195-", "is not a port or a range"),
        ("1-65", "at most 64"),
    ] {
        usage_error(&["--ports", ports, "127.91.0.195"], needle);
    }
}

fn no_address_points_to_list() {
    usage_error(&["--ports", "45195"], "sockcheck list");
}

crate::tests![
    an_option_a_command_does_not_use_is_refused,
    bad_input_is_one_line_and_exit_2,
    bad_ports_from_the_environment_name_the_variable,
    ports_come_from_the_environment,
    check_subcommand_is_the_default_command,
    help_documents_exit_statuses,
    colour_only_when_asked_or_on_a_terminal,
    an_address_given_twice_is_inspected_once,
    a_signed_port_is_refused,
    error_messages_escape_and_cut_echoed_values,
    a_misspelt_flag_keeps_clap_s_tip_on_a_second_line,
    a_misspelt_subcommand_is_suggested,
    durations_read_as_people_write_them,
    quiet_prints_nothing_and_keeps_the_exit_status,
    completions_and_the_man_page_generate,
    each_command_s_help_has_its_own_exit_statuses_and_flags,
    port_ranges_are_taken_and_bad_ones_refused,
    no_address_points_to_list,
];
