//! `sockcheck watch`: TCP listeners appearing and disappearing on the
//! watched ports, as they happen, with the process and thread that did it.
//!
//! A thin shell around [`bpf::Watcher`]: events are filtered by address (an
//! event is shown when its address covers one of the given addresses: the
//! address itself, `::ffff:ADDR`, or a wildcard), printed one line each, and
//! the watch ends on `--count`, `--timeout`, SIGINT or SIGTERM. The watcher
//! is dropped (detached and unloaded) before returning, whatever ended it.
//!
//! Events the kernel had no room for (the ring buffer was full: a burst,
//! or a reader that was stopped) are counted by the program; a growing
//! count is reported as it is noticed and once more at the end, and a watch
//! that lost events exits 1 (a signal still gives 128+N).

mod clock;
mod line;
mod signals;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::bpf::{self, BpfError, ListenEvent, RingSize, Watcher};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect;
use crate::netns;
use crate::output::{self, Output, Stdout};
use crate::report::NetnsInfo;
use crate::text::escape;

pub use clock::Clock;
pub use line::{Lost, Transition, WatchEvent, WatchLine, human_line};
use line::{json_line, lost_note};
use signals::SignalGuard;

/// How long one wait for events lasts: the latency of noticing a signal or
/// the deadline.
const POLL: Duration = Duration::from_millis(200);

/// The JSON schema version of one event line.
pub const SCHEMA: u32 = 1;

/// What `watch` was asked for.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub ports: Vec<u16>,
    /// Only events whose address covers one of these (all events if empty).
    pub addresses: Vec<IpAddr>,
    /// `--json` (one compact document per line) and `-q`.
    pub output: Output,
    /// Stop after this many events (those shown).
    pub count: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Which network namespaces' sockets to show.
    pub netns: NetnsFilter,
    /// The size of the kernel's ring buffer of events not yet read.
    pub ring_size: RingSize,
}

/// Which network namespaces' sockets `watch` shows. The tracepoint fires
/// for every namespace; each event carries its socket's namespace inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsFilter {
    /// Only sockets of this namespace: sockcheck's own by default, or the
    /// one `--netns` names.
    Only(NetnsInfo),
    /// Sockets of every namespace (`--all-netns`).
    All,
}

impl NetnsFilter {
    /// sockcheck's own namespace; every namespace if its inode cannot be
    /// read (then nothing could be told apart anyway).
    pub fn own() -> NetnsFilter {
        match netns::own_inode() {
            Some(inode) => NetnsFilter::Only(NetnsInfo { inode, name: None }),
            None => NetnsFilter::All,
        }
    }

    /// Whether an event of a socket in namespace `inode` is shown. An
    /// event whose namespace could not be read (0) is shown: nothing says
    /// it is elsewhere.
    pub fn shows(&self, inode: u64) -> bool {
        match self {
            NetnsFilter::Only(ns) => inode == 0 || inode == ns.inode,
            NetnsFilter::All => true,
        }
    }

    /// `in network namespace ci-7 (inode 4026532281)`, for the line that
    /// says the watch is attached.
    fn describe(&self, own: Option<u64>) -> String {
        match self {
            NetnsFilter::All => "in every network namespace".into(),
            NetnsFilter::Only(ns) if Some(ns.inode) == own && ns.name.is_none() => {
                format!("in this network namespace (inode {})", ns.inode)
            }
            NetnsFilter::Only(NetnsInfo {
                inode,
                name: Some(name),
            }) => format!(
                "in network namespace {} (inode {inode})",
                escape(name.as_bytes())
            ),
            NetnsFilter::Only(ns) => format!("in network namespace inode {}", ns.inode),
        }
    }
}

/// Why the watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Count,
    Timeout,
    Signal(i32),
    ClosedStdout,
}

/// `sockcheck watch`.
pub fn watch(options: &WatchOptions) -> Result<ExitStatus, Error> {
    let started = Instant::now();
    if let Err(reason) = bpf::availability() {
        return Err(Error::bpf(
            "watch needs eBPF",
            BpfError::Unavailable(reason),
        ));
    }
    // Block SIGINT and SIGTERM before attaching, so neither can end the
    // process while the program is loaded; they are taken with a
    // non-blocking sigtimedwait between polls instead.
    let signals = SignalGuard::block(&[libc::SIGINT, libc::SIGTERM]);
    let mut watcher =
        Watcher::with_ring_size(&options.ports, options.ring_size).map_err(|e| match e {
            BpfError::TooManyPorts { .. } => Error::Usage(format!("--ports: {e}")),
            source => Error::bpf("attaching the eBPF watch", source),
        })?;
    let own = netns::own_inode();
    options.output.note(&format!(
        "sockcheck: watching TCP listeners on port{} {} {} ({})\n",
        if options.ports.len() == 1 { "" } else { "s" },
        options
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(","),
        options.netns.describe(own),
        match watcher.hook() {
            bpf::WatchHook::TracePoint => "tracepoint sock/inet_sock_set_state",
            bpf::WatchHook::BtfTracePoint => "tp_btf inet_sock_set_state",
        }
    ));
    if options.output.verbose {
        if let Some(why) = bpf::paths::watch_taken().and_then(|taken| taken.fell_back) {
            options
                .output
                .note(&format!("sockcheck: tp_btf, because {why}\n"));
        }
        options.output.note(&format!(
            "sockcheck: watching after {:.1} ms (load and attach)
",
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    let pumped = pump(&mut watcher, &signals, options, own);
    let skipped = watcher.skipped();
    // Detach and unload before anything else happens.
    drop(watcher);
    drop(signals);
    let (end, lost) = pumped?;
    end_notes(options, lost, skipped);
    Ok(status(end, lost, options.count.is_some()))
}

/// What the watch could not show: the events the ring buffer had no room
/// for, and the runs of the program the kernel skipped (or that it would
/// not say).
fn end_notes(options: &WatchOptions, lost: u64, skipped: Option<u64>) {
    if lost > 0 {
        options.output.note(&format!(
            "sockcheck: lost {lost} event{} in all; a bigger --ring-size (this one: {}) holds \
             more of a burst\n",
            if lost == 1 { "" } else { "s" },
            options.ring_size
        ));
    }
    if skipped.is_none() && options.output.verbose {
        options.output.note(
            "sockcheck: the kernel did not say whether it skipped the watch program \
             (recursion_misses, 5.12+): events beyond those counted lost may be missing\n",
        );
    }
    let skipped = skipped.unwrap_or(0);
    if skipped > 0 {
        // Not counted as lost: they may all be of sockets nobody watches.
        options.output.note(&format!(
            "sockcheck: the kernel skipped the watch program {skipped} time{} (a run of it was \
             already under way on that CPU); events of the watched ports may be among them\n",
            if skipped == 1 { "" } else { "s" },
        ));
    }
}

/// The exit status: a signal's own, success when stdout was closed (the
/// reader is gone), then 1 for a watch that lost events or timed out
/// before its --count.
fn status(end: End, lost: u64, counting: bool) -> ExitStatus {
    match end {
        End::Signal(signal) => ExitStatus::Command(128 + signal as u8),
        End::ClosedStdout => ExitStatus::Free,
        _ if lost > 0 => ExitStatus::NotFree,
        End::Timeout if counting => ExitStatus::NotFree,
        End::Count | End::Timeout => ExitStatus::Free,
    }
}

/// Shows events until the watch ends; returns why it ended and how many
/// events the kernel lost meanwhile (all of them reported).
fn pump(
    watcher: &mut Watcher,
    signals: &SignalGuard,
    options: &WatchOptions,
    own_netns: Option<u64>,
) -> Result<(End, u64), Error> {
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let mut shown: u64 = 0;
    let mut losses = Losses::default();
    let read_error = |source| Error::bpf("reading the eBPF watch", source);
    let mut end = loop {
        if let Some(signal) = signals.pending() {
            break End::Signal(signal);
        }
        let wait = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break End::Timeout;
                }
                POLL.min(left)
            }
            None => POLL,
        };
        let events = watcher.poll(wait).map_err(read_error)?;
        if let Some(end) = show(&events, &mut shown, options, own_netns)? {
            break end;
        }
        let lost = watcher.lost().map_err(read_error)?;
        if losses.report(lost, options, false)? == Stdout::Closed {
            break End::ClosedStdout;
        }
    };
    if end == End::ClosedStdout {
        return Ok((end, losses.reported));
    }
    // Events already in the ring buffer happened before the signal or the
    // deadline: they are shown, so that events shown and lost add up.
    if matches!(end, End::Timeout | End::Signal(_)) {
        let events = watcher.poll(Duration::ZERO).map_err(read_error)?;
        if let Some(last) = show(&events, &mut shown, options, own_netns)? {
            end = last;
        }
    }
    let lost = watcher.lost().map_err(read_error)?;
    if losses.report(lost, options, true)? == Stdout::Closed {
        end = End::ClosedStdout;
    }
    Ok((end, losses.reported))
}

/// Prints the events the filters let through; `Some` when the watch ends
/// (`--count` reached, stdout closed).
fn show(
    events: &[ListenEvent],
    shown: &mut u64,
    options: &WatchOptions,
    own_netns: Option<u64>,
) -> Result<Option<End>, Error> {
    let clock = Clock::now();
    for event in events {
        if !options.netns.shows(event.netns) {
            continue;
        }
        let covers: Vec<&IpAddr> = options
            .addresses
            .iter()
            .filter(|target| inspect::coverage(**target, event.addr, None).is_some())
            .collect();
        if !options.addresses.is_empty() && covers.is_empty() {
            continue;
        }
        let line = if options.output.quiet {
            String::new()
        } else if options.output.json {
            json_line(event, &clock, covers)
        } else {
            human_line(event, &clock, own_netns)
        };
        if output::write(&line)? == Stdout::Closed {
            return Ok(Some(End::ClosedStdout));
        }
        *shown += 1;
        if options.count.is_some_and(|n| *shown >= n) {
            return Ok(Some(End::Count));
        }
    }
    Ok(None)
}

/// How often, at most, a loss is reported while the watch runs: a storm
/// that overflows the ring buffer at every wake gets a line a second, not
/// one per wake.
const LOST_EVERY: Duration = Duration::from_secs(1);

/// The kernel's count of lost events, as far as it has been reported.
#[derive(Debug, Default)]
struct Losses {
    reported: u64,
    at: Option<Instant>,
}

impl Losses {
    /// Reports the events lost since the last report, given the kernel's
    /// count (`total`): a note on stderr, and a `lost` line in the --json
    /// stream. Unless `last`, at most once per [`LOST_EVERY`].
    fn report(&mut self, total: u64, options: &WatchOptions, last: bool) -> Result<Stdout, Error> {
        if total <= self.reported || (!last && self.at.is_some_and(|at| at.elapsed() < LOST_EVERY))
        {
            return Ok(Stdout::Open);
        }
        let lost = Lost {
            count: total - self.reported,
            total,
        };
        self.reported = total;
        self.at = Some(Instant::now());
        options.output.note(&lost_note(lost, options.ring_size));
        if options.output.json && !options.output.quiet {
            return output::write(&output::json_line(&WatchLine {
                schema: SCHEMA,
                event: WatchEvent::Lost(lost),
            }));
        }
        Ok(Stdout::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_filter_shows_its_namespace_and_unknown_ones() {
        let only = NetnsFilter::Only(NetnsInfo {
            inode: 7,
            name: Some("ci-7".into()),
        });
        assert!(only.shows(7) && only.shows(0) && !only.shows(8));
        assert!(NetnsFilter::All.shows(8));
        assert_eq!(
            only.describe(Some(1)),
            "in network namespace ci-7 (inode 7)"
        );
        assert_eq!(
            NetnsFilter::Only(NetnsInfo {
                inode: 1,
                name: None
            })
            .describe(Some(1)),
            "in this network namespace (inode 1)"
        );
    }

    #[test]
    fn a_watch_that_lost_events_exits_1_unless_a_signal_or_closed_stdout_ended_it() {
        assert_eq!(status(End::Count, 0, true), ExitStatus::Free);
        assert_eq!(status(End::Count, 5, true), ExitStatus::NotFree);
        assert_eq!(status(End::Timeout, 0, false), ExitStatus::Free);
        assert_eq!(status(End::Timeout, 5, false), ExitStatus::NotFree);
        assert_eq!(status(End::Timeout, 0, true), ExitStatus::NotFree);
        assert_eq!(status(End::Signal(2), 5, false), ExitStatus::Command(130));
        assert_eq!(status(End::ClosedStdout, 5, false), ExitStatus::Free);
    }
}
