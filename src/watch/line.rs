//! The lines `watch` prints: one per event, human or `--json`, and the
//! note and `lost` line of events the kernel had no room for.

use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::Serialize;

use super::SCHEMA;
use super::clock::Clock;
use crate::bpf::{ListenChange, ListenEvent, RingSize};
use crate::output;
use crate::text::{Bytes, escape};

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

/// `sockcheck: lost 1234 events (the kernel's ring buffer, 64K, was full)`,
/// then `; 5678 in all` after the first report. On stderr, as every note of
/// watch: stdout has only the events, so `watch | grep` keeps the events
/// while the terminal shows the loss where it happened.
pub(super) fn lost_note(lost: Lost, ring: RingSize) -> String {
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

pub(super) fn json_line(event: &ListenEvent, clock: &Clock, covers: Vec<&IpAddr>) -> String {
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
