//! What sockcheck found, as data: the one structure both the human output and
//! the JSON document are made from.
//!
//! The JSON is this structure serialized; its `schema` number changes only
//! when a field is removed or changes meaning (fields may be added).

pub mod human;
#[cfg(test)]
pub(crate) mod shapes;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use crate::canary::Canary;
use crate::diag::{Family, TcpState};
use crate::owners::{FdRef, ProcessInfo};
use crate::reuseport::Reuseport;

/// The JSON schema version. Bump on any incompatible change.
pub const SCHEMA: u32 = 1;

/// What a pool should do with an address. Ordered by severity: when several
/// apply, the most severe wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing covers ADDR on any port and every canary bind succeeds.
    Free,
    /// ADDR is not a local address: no server can bind it here.
    Unavailable,
    /// The canary fails but no listener explains it (a bound client socket,
    /// a bound-but-inactive socket, or something the kernel does not show).
    Conflict,
    /// A listener bound to ADDR itself (or `::ffff:ADDR`) holds a port.
    /// Waiting for it to go away may help.
    Busy,
    /// A wildcard listener covers ADDR. Waiting will not help.
    Foreign,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Free => "free",
            Verdict::Unavailable => "unavailable",
            Verdict::Conflict => "conflict",
            Verdict::Busy => "busy",
            Verdict::Foreign => "foreign",
        }
    }
}

/// Why an address is not free, in a form programs can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// A listener bound to ADDR holds the port.
    Listener,
    /// A listener bound to `::ffff:ADDR` holds the port.
    MappedListener,
    /// A wildcard listener covers ADDR.
    Wildcard,
    /// ADDR is not local (the canary got EADDRNOTAVAIL).
    NotLocal,
    /// The canary failed and no listener explains it.
    CanaryFailed,
    /// The kernel shows a covering listener, yet the canary bound.
    Disagreement,
}

/// One reason, tied to the port it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Reason {
    pub code: ReasonCode,
    /// Null when the reason is about the address as a whole.
    pub port: Option<u16>,
    pub verdict: Verdict,
    pub message: String,
}

/// The answer for every address asked about.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Report {
    pub schema: u32,
    pub sockcheck: &'static str,
    pub ports: Vec<u16>,
    /// The network namespace inspected, when `--netns` chose one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsInfo>,
    pub addresses: Vec<AddressReport>,
    pub sources: SourceStatuses,
}

/// A network namespace, as `--netns` named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct NetnsInfo {
    /// Its inode (as /proc/PID/ns/net and `ip netns identify` show it).
    pub inode: u64,
    /// Its name under /run/netns, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Report {
    /// True when every address is free.
    pub fn all_free(&self) -> bool {
        self.addresses.iter().all(|a| a.verdict == Verdict::Free)
    }
}

/// One address's verdict, its reasons, and the evidence per port.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AddressReport {
    pub address: IpAddr,
    pub verdict: Verdict,
    /// Why, most severe first. Empty only for a free address.
    pub reasons: Vec<Reason>,
    /// Things worth knowing that do not change the verdict.
    pub notes: Vec<String>,
    pub ports: Vec<PortReport>,
}

/// One port of one address.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PortReport {
    pub port: u16,
    pub canary: Canary,
    /// Listeners that cover this address on this port.
    pub listeners: Vec<ListenerReport>,
    pub other_sockets: OtherSockets,
}

/// How a listener's local address relates to the address asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Coverage {
    /// Bound to the address itself.
    Exact,
    /// Bound to the IPv4-mapped IPv6 form `::ffff:ADDR`.
    Mapped,
    /// A wildcard (`0.0.0.0`, or `[::]`) that covers every local address.
    Wildcard,
}

/// A listening socket that covers the address.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListenerReport {
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub local: SocketAddr,
    pub family: Family,
    pub coverage: Coverage,
    pub inode: u64,
    pub cookie: u64,
    /// The socket's uid.
    pub uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    /// Connections waiting for accept().
    pub accept_queue: u32,
    /// The backlog given to listen().
    pub backlog: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub v6only: Option<bool>,
    /// How many listeners share this exact address and port (a reuseport
    /// group when more than one).
    pub group_size: usize,
    /// `true`, `false`, or `null` when unknown.
    pub reuseport: Option<bool>,
    pub reuseport_evidence: Reuseport,
    pub owners: Vec<Owner>,
    /// False when some processes could not be read, so a further owner may
    /// be hidden.
    pub owners_complete: bool,
}

/// A process that holds a socket, or a placeholder for one that may hold it
/// but could not be read.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Owner {
    /// Null for a hidden owner.
    pub pid: Option<u32>,
    /// True when the owner is hidden by permissions: it exists (the socket
    /// has no visible owner and unreadable processes of its uid exist), but
    /// it could not be read.
    pub hidden: bool,
    /// The fds through which it holds the socket.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fds: Vec<FdRef>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// For a hidden owner: its uid (the socket's) and the pids it may be.
    /// (A visible owner's uid comes with its process fields.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<u32>,
}

impl Owner {
    pub fn visible(info: ProcessInfo, fds: Vec<FdRef>) -> Owner {
        Owner {
            pid: Some(info.pid),
            hidden: false,
            fds,
            process: Some(info),
            uid: None,
            candidates: Vec::new(),
        }
    }

    pub fn hidden(uid: u32, candidates: Vec<u32>) -> Owner {
        Owner {
            pid: None,
            hidden: true,
            fds: Vec::new(),
            process: None,
            uid: Some(uid),
            candidates,
        }
    }

    /// `pid 4242 (node)` or `hidden (uid 1001)`.
    pub fn label(&self) -> String {
        match (&self.pid, &self.process) {
            (Some(pid), Some(p)) => format!("pid {pid} ({})", p.comm.escaped()),
            (Some(pid), None) => format!("pid {pid}"),
            _ => format!(
                "an owner hidden by permissions (uid {})",
                self.uid.unwrap_or(0)
            ),
        }
    }
}

/// Sockets on ADDR:PORT that are not listening.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct OtherSockets {
    pub total: usize,
    /// Count per TCP state name (`ESTABLISHED`, `TIME_WAIT`, `BOUND_INACTIVE`, …).
    pub by_state: BTreeMap<TcpState, usize>,
    pub sockets: Vec<OtherSocket>,
}

/// One non-listening socket on ADDR:PORT.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct OtherSocket {
    pub state: TcpState,
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub local: SocketAddr,
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub remote: SocketAddr,
    /// Zero for sockets without a file (TIME_WAIT): the kernel owns those.
    pub inode: u64,
    pub uid: u32,
    pub owners: Vec<Owner>,
}

/// Which sources of evidence were used, and why any was not.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SourceStatuses {
    pub sock_diag: SourceStatus,
    pub proc: SourceStatus,
    pub pidfd_getfd: SourceStatus,
    pub bind_probe: SourceStatus,
    pub bpf: SourceStatus,
}

/// Whether a source was used, and what a person should know about it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SourceStatus {
    pub status: Status,
    pub detail: String,
}

/// How far a source of evidence was used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It answered everything asked of it.
    Used,
    /// It answered some of it (some processes could not be read, …).
    Partial,
    /// Nothing needed it, or the user turned it off.
    Skipped,
    /// It could not be used here (privileges, kernel, …): the detail says
    /// why.
    Unavailable,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Used => "used",
            Status::Partial => "partial",
            Status::Skipped => "skipped",
            Status::Unavailable => "unavailable",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SourceStatus {
    pub fn new(status: Status, detail: impl Into<String>) -> SourceStatus {
        SourceStatus {
            status,
            detail: detail.into(),
        }
    }
}

/// `127.0.0.2:9926`, `[::]:9926`: the forms people type.
pub(crate) fn display<T: std::fmt::Display, S: Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}
