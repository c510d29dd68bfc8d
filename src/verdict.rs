//! The verdict: a pure function of what was observed. No I/O here, so every
//! rule is unit-tested without a kernel.

use std::net::IpAddr;

use crate::diag::TcpState;
use crate::owners::ProcessState;
use crate::report::{Coverage, ListenerReport, Owner, PortReport, Reason, ReasonCode, Verdict};

/// The verdict, its reasons (most severe first) and notes that do not change
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    pub notes: Vec<String>,
}

/// Decides what `address` is, from what was observed on each port.
pub fn decide(address: IpAddr, ports: &[PortReport]) -> Decision {
    let mut reasons = Vec::new();
    let not_local = ports
        .iter()
        .filter(|p| p.canary.is(libc::EADDRNOTAVAIL))
        .count();
    let all_not_local = !ports.is_empty() && not_local == ports.len();
    if all_not_local {
        reasons.push(Reason {
            code: ReasonCode::NotLocal,
            port: None,
            verdict: Verdict::Unavailable,
            message: format!(
                "{address} is not a local address: the canary bind fails with EADDRNOTAVAIL"
            ),
        });
    }
    let mut notes = Vec::new();
    for port in ports {
        port_reasons(address, port, all_not_local, &mut reasons);
        notes.extend(reuseaddr_note(address, port));
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.verdict));
    let verdict = reasons.first().map(|r| r.verdict).unwrap_or(Verdict::Free);
    Decision {
        verdict,
        reasons,
        notes,
    }
}

/// The reasons one port gives: its listeners, and what the canary says
/// (its EADDRNOTAVAIL only when not every port said so: then the address
/// has one reason of its own).
fn port_reasons(address: IpAddr, port: &PortReport, all_not_local: bool, out: &mut Vec<Reason>) {
    for group in groups(port) {
        out.push(listener_reason(address, port.port, &group));
    }
    let canary = &port.canary;
    let here = join(address, port.port);
    let reason = |code, verdict, message| Reason {
        code,
        port: Some(port.port),
        verdict,
        message,
    };
    if !port.listeners.is_empty() && canary.is_ok() {
        out.push(reason(
            ReasonCode::Disagreement,
            Verdict::Conflict,
            format!(
                "the kernel shows a listener covering {here} but the canary bind succeeded; \
                 the listener may have closed in between, or it is bound in a way the \
                 canary cannot see"
            ),
        ));
    }
    if port.listeners.is_empty() && !canary.is_ok() && !canary.is(libc::EADDRNOTAVAIL) {
        out.push(reason(
            ReasonCode::CanaryFailed,
            Verdict::Conflict,
            canary_failure(address, port),
        ));
    }
    if port.listeners.is_empty() && canary.is(libc::EADDRNOTAVAIL) && !all_not_local {
        out.push(reason(
            ReasonCode::NotLocal,
            Verdict::Unavailable,
            format!("the canary bind of {here} fails with EADDRNOTAVAIL"),
        ));
    }
}

/// The note for sockets on a port whose canary bind succeeded: they do not
/// block a server.
fn reuseaddr_note(address: IpAddr, port: &PortReport) -> Option<String> {
    let total = port.other_sockets.total;
    (port.canary.is_ok() && total > 0).then(|| {
        format!(
            "{} on {} {} not block a server that sets SO_REUSEADDR",
            state_counts(port),
            join(address, port.port),
            if total == 1 { "does" } else { "do" },
        )
    })
}

/// The listeners of `port` by local address: one reason per address, since
/// the listeners of a reuseport group are one holder to a person.
fn groups(port: &PortReport) -> Vec<Vec<&ListenerReport>> {
    let mut groups: Vec<Vec<&ListenerReport>> = Vec::new();
    for listener in &port.listeners {
        match groups.iter_mut().find(|g| g[0].local == listener.local) {
            Some(group) => group.push(listener),
            None => groups.push(vec![listener]),
        }
    }
    groups
}

fn listener_reason(address: IpAddr, port: u16, group: &[&ListenerReport]) -> Reason {
    let first = group[0];
    let (owners, complete) = group_owners(group);
    let holders = describe_owners(&owners, complete);
    let inodes = group
        .iter()
        .map(|l| l.inode.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let what = if group.len() > 1 {
        format!(
            "a reuseport group of {} listeners (inodes {inodes}); a new server that sets \
             SO_REUSEPORT would join it and the kernel would split connections between them",
            group.len()
        )
    } else if first.reuseport == Some(true) {
        format!(
            "a listener (inode {inodes}) with SO_REUSEPORT; a new server that sets SO_REUSEPORT \
             would co-bind and the kernel would split connections between them"
        )
    } else {
        format!("a listener (inode {inodes})")
    };
    let (code, verdict, message) = match first.coverage {
        Coverage::Exact => (
            ReasonCode::Listener,
            Verdict::Busy,
            format!("{} is held by {holders}: {what}", first.local),
        ),
        Coverage::Mapped => (
            ReasonCode::MappedListener,
            Verdict::Busy,
            format!(
                "{} is held through its IPv4-mapped form {} by {holders}: {what}",
                join(address, port),
                first.local
            ),
        ),
        Coverage::Wildcard => (
            ReasonCode::Wildcard,
            Verdict::Foreign,
            format!(
                "the wildcard {}{} of {holders} covers every local address, {address} included, \
                 so waiting will not free it: {what}",
                first.local,
                if first.v6only == Some(false) {
                    " (dual-stack)"
                } else {
                    ""
                },
            ),
        ),
    };
    Reason {
        code,
        port: Some(port),
        verdict,
        message,
    }
}

/// The owners of a group of listeners, each process once, and whether the
/// list is complete.
pub fn group_owners(group: &[&ListenerReport]) -> (Vec<Owner>, bool) {
    let mut owners: Vec<Owner> = Vec::new();
    for listener in group {
        for owner in &listener.owners {
            let same = |o: &Owner| match (o.pid, owner.pid) {
                (Some(a), Some(b)) => a == b,
                (None, None) => o.uid == owner.uid && o.candidates == owner.candidates,
                _ => false,
            };
            if !owners.iter().any(same) {
                owners.push(owner.clone());
            }
        }
    }
    (owners, group.iter().all(|l| l.owners_complete))
}

/// `pid 4242 (node)`, `pid 4242 (node), a zombie leader whose threads 4245,
/// 4246 live on`, `no process (…)`.
pub fn describe_owners(owners: &[Owner], complete: bool) -> String {
    if owners.is_empty() {
        return if complete {
            "no process: no fd table in this pid namespace holds it".to_string()
        } else {
            "no visible process (some processes, or /proc itself, could not be read)".to_string()
        };
    }
    let parts: Vec<String> = owners
        .iter()
        .map(|owner| {
            let mut text = owner.label();
            if let Some(process) = &owner.process {
                match process.state {
                    ProcessState::ZombieLeader => text.push_str(&format!(
                        ", a zombie leader whose {} {} live on",
                        plural(process.tids.len(), "thread", "threads"),
                        list(&process.tids)
                    )),
                    ProcessState::Stopped | ProcessState::TracingStop => text.push_str(", stopped"),
                    _ => {}
                }
            }
            if owner.hidden && !owner.candidates.is_empty() {
                text.push_str(&format!(
                    ", one of {} unreadable {}",
                    owner.candidates.len(),
                    if owner.candidates.len() == 1 {
                        "process"
                    } else {
                        "processes"
                    }
                ));
            }
            text
        })
        .collect();
    let mut text = parts.join(" and ");
    if !complete && owners.iter().all(|o| !o.hidden) {
        text.push_str(" (and maybe processes that could not be read)");
    }
    text
}

fn canary_failure(address: IpAddr, port: &PortReport) -> String {
    let here = join(address, port.port);
    let others = &port.other_sockets;
    let blocking: Vec<String> = others
        .sockets
        .iter()
        .filter(|s| s.state != TcpState::TimeWait)
        .map(|s| {
            let who = if s.inode == 0 {
                "no process".to_string()
            } else {
                describe_owners(&s.owners, !s.owners.iter().any(|o| o.hidden))
            };
            format!(
                "a socket in {} {} → {} of {who}",
                s.state, s.local, s.remote
            )
        })
        .collect();
    let hint = match port.canary.errno {
        Some(libc::EACCES) => format!(
            "; port {} is below the unprivileged port range and needs CAP_NET_BIND_SERVICE",
            port.port
        ),
        _ => String::new(),
    };
    if blocking.is_empty() {
        format!(
            "the canary bind of {here} fails with {} although the kernel shows no listener \
             covering it{}{hint}",
            port.canary.result,
            if others.total > 0 {
                format!(" (only {})", state_counts(port))
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "the canary bind of {here} fails with {}: no listener, but {}",
            port.canary.result,
            blocking.join("; ")
        )
    }
}

fn state_counts(port: &PortReport) -> String {
    port.other_sockets
        .by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `127.0.0.2:9926` or `[::1]:9926`.
pub fn join(address: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(address, port).to_string()
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn list(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::Canary;
    use crate::diag::Family;
    use crate::report::{OtherSocket, OtherSockets};
    use crate::reuseport::{Reuseport, Source};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn listener(local: &str, coverage: Coverage, group_size: usize) -> ListenerReport {
        ListenerReport {
            local: local.parse().unwrap(),
            family: Family::Inet,
            coverage,
            inode: 100,
            cookie: 1,
            uid: 0,
            cgroup_id: None,
            accept_queue: 0,
            backlog: 128,
            v6only: None,
            group_size,
            reuseport: Some(group_size > 1),
            reuseport_evidence: Reuseport {
                source: Source::Group,
                detail: String::new(),
                tried: Vec::new(),
            },
            owners: Vec::new(),
            owners_complete: true,
        }
    }

    fn port(port: u16, canary: Canary, listeners: Vec<ListenerReport>) -> PortReport {
        PortReport {
            port,
            canary,
            listeners,
            other_sockets: OtherSockets::default(),
        }
    }

    #[test]
    fn nothing_observed_is_free() {
        let d = decide(
            ip("127.0.0.2"),
            &[
                port(9925, Canary::ok(), vec![]),
                port(9926, Canary::ok(), vec![]),
            ],
        );
        assert_eq!(d.verdict, Verdict::Free);
        assert!(d.reasons.is_empty());
    }

    #[test]
    fn exact_listener_is_busy() {
        let l = listener("127.0.0.2:9926", Coverage::Exact, 1);
        let d = decide(
            ip("127.0.0.2"),
            &[port(9926, Canary::failed(libc::EADDRINUSE), vec![l])],
        );
        assert_eq!(d.verdict, Verdict::Busy);
        assert_eq!(d.reasons[0].code, ReasonCode::Listener);
        assert!(
            d.reasons[0].message.contains("no process"),
            "{}",
            d.reasons[0].message
        );
    }

    #[test]
    fn wildcard_outranks_busy_and_every_reason_is_kept() {
        let exact = listener("127.0.0.2:9925", Coverage::Exact, 1);
        let wild = listener("0.0.0.0:9926", Coverage::Wildcard, 1);
        let d = decide(
            ip("127.0.0.2"),
            &[
                port(9925, Canary::failed(libc::EADDRINUSE), vec![exact]),
                port(9926, Canary::failed(libc::EADDRINUSE), vec![wild]),
            ],
        );
        assert_eq!(d.verdict, Verdict::Foreign);
        let codes: Vec<ReasonCode> = d.reasons.iter().map(|r| r.code).collect();
        assert_eq!(codes, [ReasonCode::Wildcard, ReasonCode::Listener]);
    }

    #[test]
    fn a_group_is_one_reason() {
        let group = vec![
            listener("127.0.0.2:9926", Coverage::Exact, 2),
            listener("127.0.0.2:9926", Coverage::Exact, 2),
        ];
        let d = decide(
            ip("127.0.0.2"),
            &[port(9926, Canary::failed(libc::EADDRINUSE), group)],
        );
        assert_eq!(d.reasons.len(), 1);
        assert!(d.reasons[0].message.contains("reuseport group of 2"));
    }

    #[test]
    fn canary_failure_without_listener_is_a_conflict() {
        let mut p = port(9926, Canary::failed(libc::EADDRINUSE), vec![]);
        p.other_sockets = OtherSockets {
            total: 1,
            by_state: [(TcpState::Established, 1)].into_iter().collect(),
            sockets: vec![OtherSocket {
                state: TcpState::Established,
                local: "127.0.0.2:9926".parse().unwrap(),
                remote: "127.0.0.1:5000".parse().unwrap(),
                inode: 7,
                uid: 0,
                owners: vec![Owner::hidden(1000, vec![42])],
            }],
        };
        let d = decide(ip("127.0.0.2"), &[p]);
        assert_eq!(d.verdict, Verdict::Conflict);
        assert_eq!(d.reasons[0].code, ReasonCode::CanaryFailed);
        assert!(d.reasons[0].message.contains("ESTABLISHED"));
        assert!(
            d.reasons[0]
                .message
                .contains("hidden by permissions (uid 1000)")
        );
    }

    #[test]
    fn canary_failure_with_nothing_in_the_kernel_says_so() {
        let d = decide(
            ip("127.0.0.2"),
            &[port(80, Canary::failed(libc::EACCES), vec![])],
        );
        assert_eq!(d.verdict, Verdict::Conflict);
        assert!(d.reasons[0].message.contains("no listener"));
        assert!(d.reasons[0].message.contains("CAP_NET_BIND_SERVICE"));
    }

    #[test]
    fn not_local_is_one_reason_for_the_address() {
        let no = || Canary::failed(libc::EADDRNOTAVAIL);
        let d = decide(
            ip("192.0.2.1"),
            &[port(9925, no(), vec![]), port(9926, no(), vec![])],
        );
        assert_eq!(d.verdict, Verdict::Unavailable);
        assert_eq!(d.reasons.len(), 1);
        assert_eq!(d.reasons[0].port, None);
    }

    #[test]
    fn kernel_and_canary_disagreeing_is_said() {
        let l = listener("127.0.0.2:9926", Coverage::Exact, 1);
        let d = decide(ip("127.0.0.2"), &[port(9926, Canary::ok(), vec![l])]);
        assert_eq!(d.verdict, Verdict::Busy);
        assert!(d.reasons.iter().any(|r| r.code == ReasonCode::Disagreement));
    }

    #[test]
    fn time_wait_is_a_note_not_a_reason() {
        let mut p = port(9926, Canary::ok(), vec![]);
        p.other_sockets.total = 2;
        p.other_sockets.by_state.insert(TcpState::TimeWait, 2);
        let d = decide(ip("127.0.0.2"), &[p]);
        assert_eq!(d.verdict, Verdict::Free);
        assert_eq!(d.notes.len(), 1);
        assert!(d.notes[0].contains("2 TIME_WAIT"));
    }

    #[test]
    fn severity_order_is_the_documented_one() {
        use Verdict::*;
        let mut all = [Busy, Free, Foreign, Unavailable, Conflict];
        all.sort();
        assert_eq!(all, [Free, Unavailable, Conflict, Busy, Foreign]);
    }
}
