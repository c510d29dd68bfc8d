//! `sockcheck watch`: TCP listeners appearing and disappearing on the
//! watched ports, as they happen, with the process and thread that did it.
//!
//! A thin shell around [`bpf::Watcher`]: events are filtered by address (an
//! event is shown when its address covers one of the given addresses: the
//! address itself, `::ffff:ADDR`, or a wildcard), printed one line each, and
//! the watch ends on `--count`, `--timeout`, SIGINT or SIGTERM. The watcher
//! is dropped (detached and unloaded) before returning, whatever ended it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::bpf::{self, BpfError, ListenChange, ListenEvent, Watcher};
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

/// One event as `watch --json` prints it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventLine<'a> {
    pub schema: u32,
    /// `listen` or `close`.
    #[schemars(extend("enum" = ["listen", "close"]))]
    pub event: &'static str,
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

/// Why the watch ended.
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
    let mut watcher = Watcher::new(&options.ports).map_err(|e| match e {
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
    let end = pump(&mut watcher, &signals, options, own);
    // Detach and unload before anything else happens.
    drop(watcher);
    drop(signals);
    Ok(match end? {
        End::Count | End::ClosedStdout => ExitStatus::Free,
        End::Timeout if options.count.is_some() => ExitStatus::NotFree,
        End::Timeout => ExitStatus::Free,
        End::Signal(signal) => ExitStatus::Command(128 + signal as u8),
    })
}

fn pump(
    watcher: &mut Watcher,
    signals: &SignalGuard,
    options: &WatchOptions,
    own_netns: Option<u64>,
) -> Result<End, Error> {
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let mut shown: u64 = 0;
    loop {
        if let Some(signal) = signals.pending() {
            return Ok(End::Signal(signal));
        }
        let wait = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(End::Timeout);
                }
                POLL.min(left)
            }
            None => POLL,
        };
        let events = watcher
            .poll(wait)
            .map_err(|source| Error::bpf("reading the eBPF watch", source))?;
        let clock = Clock::now();
        for event in &events {
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
                return Ok(End::ClosedStdout);
            }
            shown += 1;
            if options.count.is_some_and(|n| shown >= n) {
                return Ok(End::Count);
            }
        }
    }
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
    let line = EventLine {
        schema: SCHEMA,
        event: kind(event),
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
    output::json_line(&line)
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
