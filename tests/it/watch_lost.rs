//! `sockcheck watch` counts the events its ring buffer had no room for
//! (issue 17, item 4): a listen/close storm and a stopped reader against a
//! small `--ring-size`, on the real kernel. Every event made is either shown
//! or counted lost, and a watch that lost events says so and exits 1.
//! Addresses 127.84.0.0/16 and ports 46400-46449 belong to this file.

use crate::support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::sockets::listen_close;

/// A `sockcheck watch` with both of its outputs read as they come (a full
/// pipe would stall it, and a closed one would lose its notes).
struct Watch {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Watch {
    /// Starts it and returns once it said on stderr that it is attached.
    fn start(args: &[&str]) -> Watch {
        let mut child = support::command()
            .arg("watch")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("SOCKCHECK_PORTS")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(
            first.starts_with("sockcheck: watching TCP listeners on port"),
            "watch {args:?} did not attach: {first:?}"
        );
        let mut out = child.stdout.take().unwrap();
        Watch {
            child,
            stdout: Some(std::thread::spawn(move || {
                let mut text = String::new();
                out.read_to_string(&mut text).unwrap();
                text
            })),
            stderr: Some(std::thread::spawn(move || {
                let mut text = first;
                err.read_to_string(&mut text).unwrap();
                text
            })),
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory effects.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for it to exit (at most 60 s): its exit code, stdout, stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "watch did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout.take().unwrap().join().unwrap();
        let err = self.stderr.take().unwrap().join().unwrap();
        (status.code(), out, err)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `watch --json` stream says about one address and port: the
/// listen and close events shown, and the lost count (the sum of the
/// `lost` lines, checked against the last line's `total`).
#[derive(Debug, Default)]
struct Tally {
    listens: u64,
    closes: u64,
    lost: u64,
    lost_lines: u64,
}

fn tally(out: &str, local: &str) -> Tally {
    let mut tally = Tally::default();
    for line in out.lines() {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(event["schema"], 1, "{line}");
        match event["event"].as_str() {
            Some("listen") if event["local"] == local => tally.listens += 1,
            Some("close") if event["local"] == local => tally.closes += 1,
            Some("lost") => {
                tally.lost += event["count"].as_u64().unwrap();
                tally.lost_lines += 1;
                assert_eq!(event["total"].as_u64(), Some(tally.lost), "{line}");
            }
            _ => {}
        }
    }
    tally
}

/// The smallest ring buffer the kernel takes: one page.
fn one_page() -> String {
    // SAFETY: sysconf has no memory effects.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.to_string()
}

fn storm_events_are_all_shown_or_counted_lost() {
    if !support::require_bpf("watch (eBPF)") {
        return;
    }
    const CYCLES: u64 = 100_000;
    let addr: SocketAddr = "127.84.0.1:46400".parse().unwrap();
    let ring = one_page();
    let watch = Watch::start(&[
        "--json",
        "--ring-size",
        &ring,
        "--timeout",
        "120s",
        "--ports",
        "46400",
        "127.84.0.1",
    ]);
    let started = Instant::now();
    listen_close(addr, CYCLES);
    let took = started.elapsed();
    // Every event is in the ring buffer or counted by now: the program ran
    // in the storm's own syscalls. The watch shows what is left, reports
    // the last losses, and ends.
    watch.signal(libc::SIGTERM);
    let (status, out, err) = watch.finish();
    let seen = tally(&out, "127.84.0.1:46400");
    eprintln!(
        "storm: {CYCLES} listen/close cycles in {:.2} s, ring {ring} bytes: \
         {} listen + {} close shown, {} lost ({} lost lines)",
        took.as_secs_f64(),
        seen.listens,
        seen.closes,
        seen.lost,
        seen.lost_lines
    );
    assert_eq!(status, Some(143), "SIGTERM's status: {err}");
    assert!(seen.lost > 0, "a one-page ring lost nothing: {err}");
    // Every event is shown or counted lost, unless the kernel skipped the
    // program for some (a run already under way on that CPU, perhaps for
    // another test's socket), which the watch says, with how many.
    let skipped = skipped(&err);
    let accounted = seen.listens + seen.closes + seen.lost;
    assert!(
        accounted == 2 * CYCLES || (accounted < 2 * CYCLES && accounted + skipped >= 2 * CYCLES),
        "shown + lost is not every event made, and the kernel skipped only {skipped}: \
         {seen:?}\n{err}"
    );
    assert!(
        err.contains(&format!("sockcheck: lost {} events in all", seen.lost)),
        "{err}"
    );
}

/// How often the watch said the kernel skipped its program (0 if never).
fn skipped(err: &str) -> u64 {
    err.lines()
        .find_map(|l| l.strip_prefix("sockcheck: the kernel skipped the watch program "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn stopped_reader_reports_lost_events_and_exits_1() {
    if !support::require_bpf("watch (eBPF)") {
        return;
    }
    const CYCLES: u64 = 2_000;
    let addr: SocketAddr = "127.84.0.2:46401".parse().unwrap();
    let ring = one_page();
    let watch = Watch::start(&[
        "--json",
        "--ring-size",
        &ring,
        "--timeout",
        "3s",
        "--ports",
        "46401",
        "127.84.0.2",
    ]);
    watch.signal(libc::SIGSTOP);
    listen_close(addr, CYCLES);
    std::thread::sleep(Duration::from_millis(200));
    watch.signal(libc::SIGCONT);
    let (status, out, err) = watch.finish();
    let seen = tally(&out, "127.84.0.2:46401");
    eprintln!(
        "stopped reader: {CYCLES} cycles, ring {ring} bytes: {} listen + {} close shown, \
         {} lost",
        seen.listens, seen.closes, seen.lost
    );
    assert_eq!(status, Some(1), "a watch that lost events: {err}");
    assert!(seen.lost > 0, "{out}\n{err}");
    assert_eq!(
        seen.listens + seen.closes + seen.lost,
        2 * CYCLES,
        "{seen:?}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("sockcheck: lost {} events (", seen.lost))),
        "{err}"
    );
}

fn a_watch_that_lost_nothing_still_exits_0() {
    if !support::require_bpf("watch (eBPF)") {
        return;
    }
    let addr: SocketAddr = "127.84.0.3:46402".parse().unwrap();
    let watch = Watch::start(&[
        "--json",
        "--timeout",
        "1s",
        "--ports",
        "46402",
        "127.84.0.3",
    ]);
    listen_close(addr, 10);
    let (status, out, err) = watch.finish();
    let seen = tally(&out, "127.84.0.3:46402");
    assert_eq!(status, Some(0), "{err}");
    assert_eq!((seen.listens, seen.closes, seen.lost), (10, 10, 0), "{out}");
    assert!(!err.contains("lost"), "{err}");
}

fn ring_size_the_kernel_would_refuse_is_a_usage_error() {
    for bad in ["3000", "96K", "0", "4X", "8G"] {
        let run = support::sockcheck(&["watch", "--ring-size", bad, "--ports", "46403"]);
        assert_eq!(run.status, 2, "--ring-size {bad}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{:?}", run.stderr);
        assert!(
            run.stderr
                .starts_with(&format!("sockcheck: --ring-size: '{bad}'")),
            "--ring-size {bad}: {}",
            run.stderr
        );
    }
}

crate::tests![
    storm_events_are_all_shown_or_counted_lost,
    stopped_reader_reports_lost_events_and_exits_1,
    a_watch_that_lost_nothing_still_exits_0,
    ring_size_the_kernel_would_refuse_is_a_usage_error,
];
