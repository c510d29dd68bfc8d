//! `run --report FILE` never follows a link, never blocks on a FIFO and
//! never writes into another user's file (issue 17), and `run` never hangs
//! after its command. Addresses 127.82.1.0/24 and ports 46510-46519 belong
//! to this file.

use crate::support;

use support::stderr;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::TempDir;

fn run(state: &TempDir, port: &str, address: &str, report: &Path, command: &str) -> Output {
    support::command()
        .args(["--state-dir", state.path(), "--ports", port])
        .args(["run", address, "--linger", "100ms", "--report"])
        .arg(report)
        .args(["--", "sh", "-c", command])
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn a_symlinked_report_path_is_refused_before_the_command_runs() {
    let state = TempDir::new("report-link");
    let files = TempDir::created("report-link-files");
    let victim = files.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let report = files.join("report.md");
    std::os::unix::fs::symlink(&victim, &report).unwrap();
    let ran = files.join("ran");
    let output = run(
        &state,
        "46510",
        "127.82.1.1",
        &report,
        &format!("touch '{}'", ran.display()),
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("symlink"), "{}", stderr(&output));
    assert!(!ran.exists(), "the command ran");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

fn a_fifo_report_path_is_refused_at_once() {
    let state = TempDir::new("report-fifo");
    let files = TempDir::created("report-fifo-files");
    let fifo = files.join("report.md");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let started = Instant::now();
    let output = run(&state, "46511", "127.82.1.2", &fifo, "true");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("FIFO"), "{}", stderr(&output));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The path turns into a symlink (or a FIFO) while the command runs, and
/// the command leaves a lingering holder: the report still reaches stderr,
/// with a line saying why the file was not written; nothing behind the
/// link is written, nothing blocks, and the exit status is 4 (lingering).
fn a_link_or_fifo_planted_while_the_command_runs_is_never_followed_nor_opened() {
    let state = TempDir::new("report-planted");
    let files = TempDir::created("report-planted-files");
    let victim = files.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let report = files.join("report.md");
    let fifo = files.join("report.json");
    let ready = files.join("ready");
    let plant = format!(
        "ln -s '{}' '{}'; mkfifo '{}'; {}",
        victim.display(),
        report.display(),
        fifo.display(),
        support::lingering_command(46512, &ready)
    );
    for (target, kind) in [(&report, "symlink"), (&fifo, "FIFO")] {
        let started = Instant::now();
        let output = run(&state, "46512", "127.82.1.3", target, &plant);
        let (pid, _) = support::holder_from(&ready);
        support::kill(pid);
        support::wait_gone(pid);
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(4), "{said}");
        assert!(said.contains(&format!("## pid {pid}")), "{said}");
        assert!(said.contains(kind), "{said}");
        assert!(started.elapsed() < Duration::from_secs(10), "run hung");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(&report);
        let _ = std::fs::remove_file(&fifo);
    }
}

fn a_report_file_of_another_user_is_refused_not_written_for_them() {
    if !support::require_root("a file of another user") {
        return;
    }
    let state = TempDir::new("report-other");
    let files = TempDir::created("report-other-files");
    std::fs::set_permissions(
        &files.0,
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let report = files.join("report.md");
    std::fs::write(&report, "nobody's").unwrap();
    rustix::fs::chown(
        &report,
        Some(rustix::process::Uid::from_raw(65534)),
        Some(rustix::process::Gid::from_raw(65534)),
    )
    .unwrap();
    let output = run(&state, "46513", "127.82.1.4", &report, "true");
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("uid 65534"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "nobody's");
    assert_eq!(std::fs::metadata(&report).unwrap().uid(), 65534);
}

fn a_report_is_written_whole_as_a_new_file_of_ours() {
    let state = TempDir::new("report-ok");
    let files = TempDir::created("report-ok-files");
    let ready = files.join("ready");
    let report = files.join("report.json");
    std::fs::write(&report, "old").unwrap();
    let output = run(
        &state,
        "46514",
        "127.82.1.5",
        &report,
        &support::lingering_command(46514, &ready),
    );
    let (pid, _) = support::holder_from(&ready);
    let _cleanup = support::KillOnDrop(pid);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["holders"][0]["pid"], pid);
    let names: Vec<_> = std::fs::read_dir(&files.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "left behind: {names:?}");
    assert_eq!(
        std::fs::metadata(&report).unwrap().mode() & 0o777,
        0o644,
        "mode"
    );
}

crate::tests![
    a_symlinked_report_path_is_refused_before_the_command_runs,
    a_fifo_report_path_is_refused_at_once,
    a_link_or_fifo_planted_while_the_command_runs_is_never_followed_nor_opened,
    a_report_file_of_another_user_is_refused_not_written_for_them,
    a_report_is_written_whole_as_a_new_file_of_ours,
];
