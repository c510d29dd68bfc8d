//! The inspection over constructed evidence, for tests: the real plan of a
//! constructed kernel view, the owners from a /proc tree (a fixture, read
//! through [`ProcRoot`]), SO_REUSEPORT from the group or a given kernel
//! bit, canaries as the view implies, and the real assembly. Nothing here
//! binds, opens a pidfd or loads BPF.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::evidence::{Evidence, Finding, Owners};
use super::plan::{self, Plan};
use super::{KernelView, Query, assemble};
use crate::canary::Canary;
use crate::diag::{DiagSocket, Family, TcpState};
use crate::owners::ProcRoot;
use crate::report::{Report, SourceStatus, Status};
use crate::reuseport::{self, Subject};

/// What the fixture's kernel would say of a listener's SO_REUSEPORT (the
/// BPF tcp iterator's bit), by inode; a listener not named gets `why_not`.
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelBits {
    pub bits: HashMap<u64, bool>,
    pub why_not: &'static str,
}

/// Inspects `query` against `view` with owners from `root`.
pub(crate) fn inspect(
    query: &Query,
    view: &KernelView,
    root: &ProcRoot,
    kernel: &KernelBits,
) -> Report {
    let plan = plan::plan(query, view);
    let (owners, proc) = Owners::from_proc(root, &plan.owners, query.owners);
    let evidence = Evidence {
        owners,
        reuseport: reuseport(view, &plan, kernel),
        canaries: canaries(&plan),
        proc,
        bpf: if kernel.bits.is_empty() {
            SourceStatus::new(Status::Unavailable, kernel.why_not)
        } else {
            SourceStatus::new(Status::Used, "iter/tcp for SO_REUSEPORT")
        },
        euid: crate::owners::fixture::FIXTURE_UID,
    };
    assemble::report(query, view, &plan, &evidence)
}

/// SO_REUSEPORT of each planned listener: the group's word for a group,
/// else the kernel's bit (never a pidfd or a bind probe).
fn reuseport(
    view: &KernelView,
    plan: &Plan<'_>,
    kernel: &KernelBits,
) -> HashMap<plan::ListenerId, Finding> {
    let mut findings = HashMap::new();
    for need in &plan.reuseport {
        let socket = &view.listeners[need.id.0];
        let subject = Subject {
            local: socket.local,
            inode: socket.inode,
            uid: socket.uid,
            v6only: socket.v6only,
            group_size: need.group_size,
            kernel_first: false,
            holders: &[],
            probe_crowded: need.probe_crowded,
            allow_pidfd: false,
            allow_probe: false,
        };
        let mut bit = |inode: u64| {
            kernel
                .bits
                .get(&inode)
                .copied()
                .ok_or(kernel.why_not.to_string())
        };
        let (value, evidence) = reuseport::resolve(&subject, &mut bit);
        findings.insert(need.id, Finding { value, evidence });
    }
    findings
}

/// The canary of each planned address and port: EADDRINUSE where a
/// listener covers it, else a bind that succeeds.
fn canaries(plan: &Plan<'_>) -> HashMap<SocketAddr, Canary> {
    let mut canaries = HashMap::new();
    for address in &plan.addresses {
        for port in &address.ports {
            let canary = if port.listeners.is_empty() {
                Canary::ok()
            } else {
                Canary::failed(libc::EADDRINUSE)
            };
            canaries.insert(SocketAddr::new(address.address, port.port), canary);
        }
    }
    canaries
}

/// A socket as sock_diag would show it: `local` in `state`, with `inode`,
/// of `uid`.
pub(crate) fn socket(
    state: TcpState,
    local: &str,
    remote: &str,
    inode: u64,
    uid: u32,
) -> DiagSocket {
    let local: SocketAddr = local.parse().expect("a socket address");
    DiagSocket {
        family: if local.is_ipv4() {
            Family::Inet
        } else {
            Family::Inet6
        },
        state,
        local,
        remote: remote.parse().expect("a socket address"),
        uid,
        inode,
        cookie: inode * 0x1000,
        recv_queue: 0,
        send_queue: if state == TcpState::Listen { 511 } else { 0 },
        v6only: (!local.is_ipv4()).then_some(false),
        cgroup_id: None,
    }
}

/// A listener on `local`.
pub(crate) fn listener(local: &str, inode: u64, uid: u32) -> DiagSocket {
    let remote = if local.starts_with('[') {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    socket(TcpState::Listen, local, remote, inode, uid)
}
