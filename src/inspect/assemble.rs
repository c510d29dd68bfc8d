//! Assembly: the report from the plan and the evidence, with each address's
//! verdict. No I/O here.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use super::evidence::{Evidence, Finding};
use super::plan::{AddressPlan, CoveringListener, Plan, PortPlan};
use super::{KernelView, Query};
use crate::diag::DiagSocket;
use crate::report::{
    AddressReport, ListenerReport, OtherSocket, OtherSockets, PortReport, Report, SCHEMA,
    SourceStatus, SourceStatuses, Status,
};
use crate::reuseport::Source;
use crate::verdict;

/// The report of `plan`, from what `evidence` found.
pub fn report(query: &Query, view: &KernelView, plan: &Plan<'_>, evidence: &Evidence) -> Report {
    let v6only = v6only_ports(&query.ports, view);
    Report {
        schema: SCHEMA,
        sockcheck: env!("CARGO_PKG_VERSION"),
        ports: query.ports.clone(),
        netns: query.netns.clone(),
        addresses: plan
            .addresses
            .iter()
            .map(|address| address_report(&v6only, address, evidence))
            .collect(),
        sources: source_statuses(query, view, evidence),
    }
}

/// One address: its ports, and the verdict decided from them.
fn address_report(v6only: &[u16], plan: &AddressPlan<'_>, evidence: &Evidence) -> AddressReport {
    let ports: Vec<PortReport> = plan
        .ports
        .iter()
        .map(|port| port_report(plan.address, port, evidence))
        .collect();
    let decision = verdict::decide(plan.address, &ports);
    let mut notes = decision.notes;
    notes.extend(v6only_notes(plan.address, v6only));
    AddressReport {
        address: plan.address,
        verdict: decision.verdict,
        reasons: decision.reasons,
        notes,
        ports,
    }
}

fn port_report(address: IpAddr, plan: &PortPlan<'_>, evidence: &Evidence) -> PortReport {
    PortReport {
        port: plan.port,
        canary: evidence.canaries[&SocketAddr::new(address, plan.port)].clone(),
        listeners: plan
            .listeners
            .iter()
            .map(|listener| listener_report(listener, evidence))
            .collect(),
        other_sockets: other_sockets(&plan.others, evidence),
    }
}

fn listener_report(listener: &CoveringListener<'_>, evidence: &Evidence) -> ListenerReport {
    let socket = listener.socket;
    let owners = evidence.owners.of(socket.inode, socket.uid);
    let reuseport = match evidence.reuseport.get(&listener.id) {
        Some(finding) => finding.clone(),
        None => Finding::not_looked_up(),
    };
    ListenerReport {
        local: socket.local,
        family: socket.family,
        coverage: listener.coverage,
        inode: socket.inode,
        cookie: socket.cookie,
        uid: socket.uid,
        cgroup_id: socket.cgroup_id,
        accept_queue: socket.recv_queue,
        backlog: socket.send_queue,
        v6only: socket.v6only,
        group_size: listener.group_size,
        reuseport: reuseport.value,
        reuseport_evidence: reuseport.evidence,
        owners: owners.owners,
        owners_complete: owners.complete,
    }
}

fn other_sockets(sockets: &[&DiagSocket], evidence: &Evidence) -> OtherSockets {
    let mut other = OtherSockets::default();
    for socket in sockets {
        other.total += 1;
        *other.by_state.entry(socket.state).or_default() += 1;
        // A socket without a file (TIME_WAIT) is the kernel's.
        let owners = if socket.inode == 0 {
            Vec::new()
        } else {
            evidence.owners.of(socket.inode, socket.uid).owners
        };
        other.sockets.push(OtherSocket {
            state: socket.state,
            local: socket.local,
            remote: socket.remote,
            inode: socket.inode,
            uid: socket.uid,
            owners,
        });
    }
    other
}

/// Which sources were used, and why any was not.
fn source_statuses(query: &Query, view: &KernelView, evidence: &Evidence) -> SourceStatuses {
    let used = |source: Source| {
        evidence
            .reuseport
            .values()
            .any(|f| f.evidence.source == source)
    };
    SourceStatuses {
        sock_diag: SourceStatus::new(
            Status::Used,
            if view.notes.is_empty() {
                "TCP listeners and other sockets on the ports, IPv4 and IPv6".to_string()
            } else {
                view.notes.join("; ")
            },
        ),
        proc: evidence.proc.clone(),
        pidfd_getfd: if used(Source::PidfdGetfd) {
            SourceStatus::new(Status::Used, "SO_REUSEPORT read from an owner's fd")
        } else if !query.sources.pidfd {
            SourceStatus::new(Status::Skipped, "disabled by --no-pidfd")
        } else {
            SourceStatus::new(Status::Skipped, "not needed or not permitted")
        },
        bind_probe: if used(Source::BindProbe) {
            let euid = evidence.euid;
            SourceStatus::new(
                Status::Used,
                format!("SO_REUSEPORT bind probe as euid {euid}"),
            )
        } else if !query.sources.probe {
            SourceStatus::new(Status::Skipped, "disabled by --no-probe")
        } else {
            SourceStatus::new(Status::Skipped, "not needed or could not tell")
        },
        bpf: evidence.bpf.clone(),
    }
}

/// A v6only `[::]` listener does not cover an IPv4 address; say so, since
/// people expect it to.
fn v6only_notes(address: IpAddr, v6only: &[u16]) -> Vec<String> {
    if !address.is_ipv4() {
        return Vec::new();
    }
    v6only
        .iter()
        .map(|port| {
            format!("[::]:{port} is listening with IPV6_V6ONLY, so it does not cover {address}")
        })
        .collect()
}

/// The queried ports with a `[::]` listener that has IPV6_V6ONLY, each
/// once, in the order first met: found once per report, not per address.
fn v6only_ports(ports: &[u16], view: &KernelView) -> Vec<u16> {
    let mut seen = BTreeSet::new();
    view.listeners
        .iter()
        .filter(|s| {
            ports.contains(&s.local.port())
                && s.local.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                && s.v6only == Some(true)
        })
        .map(|s| s.local.port())
        .filter(|&port| seen.insert(port))
        .collect()
}
