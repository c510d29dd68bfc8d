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

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::bpf::{self, BpfError, ListenChange, ListenEvent, RingSize, Watcher};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect;
use crate::netns;
use crate::output::{self, Output, Stdout};
use crate::report::NetnsInfo;
use crate::text::{Bytes, escape};

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

/// One line of `watch --json`: the schema number, then the event (its
/// `event` names which).
#[derive(Debug, Serialize, JsonSchema)]
pub struct WatchLine<'a> {
    pub schema: u32,
    #[serde(flatten)]
    pub event: WatchEvent<'a>,
}

/// What a line of `watch --json` reports. A reader should skip an `event`
/// it does not know: kinds may be added within a schema number.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum WatchEvent<'a> {
    /// A TCP socket entered LISTEN (`listen()`).
    Listen(Transition<'a>),
    /// A TCP socket left LISTEN (closed, or `listen()` failed after all).
    Close(Transition<'a>),
    /// The kernel had no room for some events: the reader was behind and
    /// its ring buffer (`--ring-size`) was full. They are lost for good.
    Lost(Lost),
}

/// A socket entering or leaving LISTEN, as `watch --json` prints it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Transition<'a> {
    /// Wall-clock time, UTC, RFC 3339 with milliseconds.
    pub time: String,
    /// CLOCK_MONOTONIC in ns, as the kernel stamped the event.
    pub ktime_ns: u64,
    /// `127.0.0.2:9926`, `[::1]:9926`.
    pub local: String,
    pub address: IpAddr,
    pub port: u16,
    pub pid: u32,
    pub tid: u32,
    pub comm: Bytes,
    pub inode: u64,
    pub reuseport: bool,
    /// Inode of the socket's network namespace (as `/proc/PID/ns/net`
    /// shows it); 0 if it could not be read.
    pub netns: u64,
    pub old_state: u8,
    pub new_state: u8,
    /// The given addresses this event's address covers (absent when no
    /// address was given).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<&'a IpAddr>,
}

/// Events lost since the previous `lost` line. They are counted on every
/// watched port, whatever their address or network namespace: the kernel
/// drops them before any filter could look at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Lost {
    /// Lost since the previous `lost` line (or since the watch began).
    pub count: u64,
    /// Lost since the watch began.
    pub total: u64,
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
        options.output.note(&format!(
            "sockcheck: watching after {:.1} ms (load and attach)
",
            started.elapsed().as_secs_f64() * 1e3
        ));
    }
    let pumped = pump(&mut watcher, &signals, options, own);
    // Detach and unload before anything else happens.
    drop(watcher);
    drop(signals);
    let (end, lost) = pumped?;
    if lost > 0 {
        options.output.note(&format!(
            "sockcheck: lost {lost} event{} in all; a bigger --ring-size (this one: {}) holds \
             more of a burst\n",
            if lost == 1 { "" } else { "s" },
            options.ring_size
        ));
    }
    Ok(status(end, lost, options.count.is_some()))
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

/// `sockcheck: lost 1234 events (the kernel's ring buffer, 64K, was full)`,
/// then `; 5678 in all` after the first report. On stderr, as every note of
/// watch: stdout has only the events, so `watch | grep` keeps the events
/// while the terminal shows the loss where it happened.
fn lost_note(lost: Lost, ring: RingSize) -> String {
    let all = if lost.total == lost.count {
        String::new()
    } else {
        format!("; {} in all", lost.total)
    };
    format!(
        "sockcheck: lost {} event{} (the kernel's ring buffer, {ring}, was full){all}\n",
        lost.count,
        if lost.count == 1 { "" } else { "s" },
    )
}

fn kind(event: &ListenEvent) -> &'static str {
    match event.kind {
        ListenChange::Listen => "listen",
        ListenChange::Close => "close",
    }
}

/// `12:34:56.789  LISTEN  127.0.0.2:9926  pid 4242  tid 4243  comm node  inode 12464  reuseport yes`,
/// then `  netns 4026532281` for a socket outside `own_netns` (sockcheck's
/// own network namespace).
pub fn human_line(event: &ListenEvent, clock: &Clock, own_netns: Option<u64>) -> String {
    let netns = if event.netns != 0 && Some(event.netns) != own_netns {
        format!("  netns {}", event.netns)
    } else {
        String::new()
    };
    format!(
        "{}  {:<6}  {}  pid {}  tid {}  comm {}  inode {}  reuseport {}{netns}\n",
        clock.local_hms(event.ktime_ns),
        kind(event).to_ascii_uppercase(),
        SocketAddr::new(event.addr, event.port),
        event.pid,
        event.tid,
        escape(&event.comm),
        event.inode,
        if event.reuseport { "yes" } else { "no" }
    )
}

fn json_line(event: &ListenEvent, clock: &Clock, covers: Vec<&IpAddr>) -> String {
    let transition = Transition {
        time: clock.utc_rfc3339(event.ktime_ns),
        ktime_ns: event.ktime_ns,
        local: SocketAddr::new(event.addr, event.port).to_string(),
        address: event.addr,
        port: event.port,
        pid: event.pid,
        tid: event.tid,
        comm: Bytes(event.comm.clone()),
        inode: event.inode,
        reuseport: event.reuseport,
        netns: event.netns,
        old_state: event.old_state,
        new_state: event.new_state,
        covers,
    };
    output::json_line(&WatchLine {
        schema: SCHEMA,
        event: match event.kind {
            ListenChange::Listen => WatchEvent::Listen(transition),
            ListenChange::Close => WatchEvent::Close(transition),
        },
    })
}

// ------------------------------------------------------------------ time

/// The offset between CLOCK_MONOTONIC (the kernel's event stamps) and
/// CLOCK_REALTIME, sampled once per batch of events.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Realtime minus monotonic, in ns.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let ns = |clock| {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: a valid out-pointer; both clocks always exist on Linux.
            unsafe { libc::clock_gettime(clock, &mut t) };
            t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128
        };
        let mono = ns(libc::CLOCK_MONOTONIC);
        let real = ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// The wall-clock time of a monotonic stamp.
    fn timestamp(&self, ktime_ns: u64) -> jiff::Timestamp {
        let ns = ktime_ns as i128 + self.offset_ns;
        jiff::Timestamp::from_nanosecond(ns).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// `HH:MM:SS.mmm` in local time (jiff's system time zone: `TZ`, else
    /// /etc/localtime, else UTC).
    pub fn local_hms(&self, ktime_ns: u64) -> String {
        self.timestamp(ktime_ns)
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .strftime("%H:%M:%S%.3f")
            .to_string()
    }

    /// `2025-11-24T12:34:56.789Z`.
    pub fn utc_rfc3339(&self, ktime_ns: u64) -> String {
        self.timestamp(ktime_ns)
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    }
}

// --------------------------------------------------------------- signals

/// Some signals blocked in this thread (so delivered only when asked for),
/// restored on drop.
struct SignalGuard {
    set: libc::sigset_t,
    old: libc::sigset_t,
}

impl SignalGuard {
    fn block(signals: &[i32]) -> SignalGuard {
        // SAFETY: plain libc calls on local sigsets.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &signal in signals {
                libc::sigaddset(&mut set, signal);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            SignalGuard { set, old }
        }
    }

    /// A blocked signal that arrived, taken (without waiting).
    fn pending(&self) -> Option<i32> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timespec; siginfo may be null.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &zero) };
        (signal > 0).then_some(signal)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restoring this thread's own mask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: ListenChange, comm: &[u8]) -> ListenEvent {
        ListenEvent {
            ktime_ns: 1_500_000_000,
            pid: 42,
            tid: 43,
            comm: comm.to_vec(),
            addr: "::1".parse().unwrap(),
            port: 9926,
            inode: 777,
            reuseport: true,
            netns: 4026531840,
            kind,
            old_state: 7,
            new_state: 10,
        }
    }

    #[test]
    fn clock_converts_monotonic_to_wall_time() {
        let clock = Clock {
            offset_ns: 1_700_000_000_000_000_000 - 1_500_000_000,
        };
        // 1_700_000_000 is 2023-11-14T22:13:20Z.
        assert_eq!(
            clock.utc_rfc3339(1_500_000_000 + 123_456_789),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(clock.local_hms(1_500_000_000).len(), "12:34:56.789".len());
    }

    #[test]
    fn human_line_escapes_comm() {
        let clock = Clock { offset_ns: 0 };
        let line = human_line(
            &event(ListenChange::Listen, b"evil\x1b[2J"),
            &clock,
            Some(4026531840),
        );
        assert!(line.contains("  LISTEN  [::1]:9926  pid 42  tid 43  comm evil\\x1b[2J  inode 777  reuseport yes\n"),
            "{line}");
    }

    #[test]
    fn human_line_escapes_line_breaking_and_invisible_comm() {
        let clock = Clock { offset_ns: 0 };
        let comm = "a\u{2028}\u{2029}\u{61c}\u{200b}\u{feff}";
        let line = human_line(
            &event(ListenChange::Listen, comm.as_bytes()),
            &clock,
            Some(4026531840),
        );
        assert!(
            line.contains("  comm a\\u{2028}\\u{2029}\\u{61c}\\u{200b}\\u{feff}  inode"),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
    }

    #[test]
    fn human_line_names_only_a_foreign_namespace() {
        let clock = Clock { offset_ns: 0 };
        let ev = event(ListenChange::Listen, b"node");
        let here = human_line(&ev, &clock, Some(4026531840));
        assert!(here.ends_with("  reuseport yes\n"), "{here}");
        let there = human_line(&ev, &clock, Some(4026531841));
        assert!(
            there.ends_with("  reuseport yes  netns 4026531840\n"),
            "{there}"
        );
    }

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
    fn a_lost_line_counts_since_the_last_and_in_all() {
        let lost = Lost {
            count: 3,
            total: 10,
        };
        let line = output::json_line(&WatchLine {
            schema: SCHEMA,
            event: WatchEvent::Lost(lost),
        });
        assert_eq!(
            line,
            "{\"schema\":1,\"event\":\"lost\",\"count\":3,\"total\":10}\n"
        );
        let ring = RingSize::new(4096).unwrap();
        assert_eq!(
            lost_note(lost, ring),
            "sockcheck: lost 3 events (the kernel's ring buffer, 4K, was full); 10 in all\n"
        );
        assert_eq!(
            lost_note(Lost { count: 1, total: 1 }, ring),
            "sockcheck: lost 1 event (the kernel's ring buffer, 4K, was full)\n"
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

    #[test]
    fn json_line_has_the_documented_fields() {
        let clock = Clock { offset_ns: 0 };
        let target: IpAddr = "::1".parse().unwrap();
        let line = json_line(&event(ListenChange::Close, b"node"), &clock, vec![&target]);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["schema"], 1);
        assert_eq!(value["event"], "close");
        assert_eq!(value["local"], "[::1]:9926");
        assert_eq!(value["comm"], "node");
        assert_eq!(value["covers"][0], "::1");
        assert_eq!(value["netns"], 4026531840u64);
        assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'));
    }
}
