//! One inspection: sock_diag, then /proc only if some socket needs an owner,
//! then reuseport evidence, the canary, and the verdict.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::bpf;
use crate::canary;
use crate::diag::{DiagSocket, Family, SockDiag, TCP_LISTEN};
use crate::error::Error;
use crate::owners::{self, FdScan, ProcessInfo};
use crate::report::{
    AddressReport, Coverage, ListenerReport, OtherSocket, OtherSockets, Owner, PortReport, Report,
    SCHEMA, SourceStatus, Sources,
};
use crate::reuseport::{self, Reuseport, Subject};
use crate::text::echo;
use crate::verdict;

/// What to inspect.
#[derive(Debug, Clone)]
pub struct Query {
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<u16>,
    /// Whether an owner's fd may be duplicated (pidfd_getfd) to read
    /// SO_REUSEPORT.
    pub reuseport_pidfd: bool,
    /// Whether the SO_REUSEPORT bind probe may run.
    pub reuseport_probe: bool,
    /// When eBPF is used (it also needs privileges and kernel BTF).
    pub bpf: BpfMode,
    /// Whether to find owners (and SO_REUSEPORT) at all. A gate that only
    /// needs the verdict turns this off and never reads /proc; such a report
    /// is for its verdict only and is never shown.
    pub owners: bool,
}

impl Query {
    /// A full inspection of `addresses` on `ports`.
    pub fn new(addresses: Vec<IpAddr>, ports: Vec<u16>) -> Query {
        Query {
            addresses,
            ports,
            reuseport_pidfd: true,
            reuseport_probe: true,
            bpf: BpfMode::Auto,
            owners: true,
        }
    }
}

/// When eBPF is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfMode {
    /// Only where it pays: owners through the task_file iterator on a
    /// machine with many open files, and the kernel's SO_REUSEPORT bit when
    /// nothing cheaper can tell (or BPF is loaded anyway).
    Auto,
    /// For owners and for every listener's SO_REUSEPORT.
    Always,
    /// Never.
    Never,
}

/// Above this many open files (`/proc/sys/fs/file-nr`), `--bpf auto` finds
/// owners with the BPF task_file iterator instead of /proc. Loading costs
/// about 24 ms and 10 MB once (the kernel BTF reduced to what the programs
/// need), then the iterator about 0.3 µs a file; the /proc scan costs about
/// 1.3 µs a file on two cores. They cross near 25,000 files (BENCHMARKS.md).
pub const BPF_OWNER_THRESHOLD: u64 = 30_000;

/// The system's count of open files: the first field of /proc/sys/fs/file-nr.
fn open_files() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/file-nr")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What eBPF did for one inspection, and why not when it did not.
struct BpfUse {
    allowed: bool,
    availability: Option<Result<(), String>>,
    used: Vec<&'static str>,
    failures: Vec<String>,
}

impl BpfUse {
    fn new(mode: BpfMode) -> BpfUse {
        BpfUse {
            allowed: mode != BpfMode::Never,
            availability: None,
            used: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Whether eBPF may be tried: allowed, privileged, with BTF.
    fn usable(&mut self) -> bool {
        self.allowed
            && self
                .availability
                .get_or_insert_with(|| bpf::availability().map_err(|e| e.to_string()))
                .is_ok()
    }

    fn why_not(&self) -> String {
        match &self.availability {
            _ if !self.allowed => "disabled by --bpf never".into(),
            Some(Err(why)) => why.clone(),
            _ => "not usable".into(),
        }
    }

    fn status(&self) -> SourceStatus {
        if !self.failures.is_empty() {
            let status = if self.used.is_empty() {
                "unavailable"
            } else {
                "partial"
            };
            return SourceStatus::new(status, self.failures.join("; "));
        }
        if !self.used.is_empty() {
            return SourceStatus::new("used", self.used.join(", "));
        }
        match (&self.availability, self.allowed) {
            (_, false) => SourceStatus::new("skipped", "disabled by --bpf never"),
            (Some(Err(why)), _) => SourceStatus::new("unavailable", why.clone()),
            _ => SourceStatus::new("skipped", "not needed"),
        }
    }
}

/// Finds the owners of `needed` through /proc or the BPF task_file iterator.
fn find_owners(mode: BpfMode, needed: &HashSet<u64>, bpf: &mut BpfUse) -> (FdScan, SourceStatus) {
    let try_bpf = match mode {
        BpfMode::Never => false,
        BpfMode::Always => bpf.usable(),
        BpfMode::Auto => open_files().is_some_and(|n| n > BPF_OWNER_THRESHOLD) && bpf.usable(),
    };
    if try_bpf {
        let inodes: Vec<u64> = needed.iter().copied().collect();
        match bpf::task_files(&inodes) {
            Ok(rows) => {
                bpf.used.push("iter/task_file for owners");
                return (
                    owners::from_task_files(rows),
                    SourceStatus::new("skipped", "owners came from the BPF task_file iterator"),
                );
            }
            Err(e) => bpf
                .failures
                .push(format!("{e}; owners read from /proc instead")),
        }
    }
    match owners::scan(needed) {
        Ok(scan) => {
            let status = if let Some(mode) = &scan.invisible {
                SourceStatus::new(
                    "partial",
                    format!(
                        "{} read; /proc is mounted with hidepid={mode}, so other \
                         users' processes cannot even be listed (needs root or CAP_SYS_PTRACE)",
                        processes(scan.processes)
                    ),
                )
            } else if scan.unreadable.is_empty() {
                SourceStatus::new(
                    "used",
                    format!("{}, {} fds read", processes(scan.processes), scan.fds),
                )
            } else {
                let mut pids: Vec<String> = scan
                    .unreadable
                    .iter()
                    .take(5)
                    .map(|u| match u.uid {
                        Some(uid) => format!("{} (uid {uid})", u.pid),
                        None => u.pid.to_string(),
                    })
                    .collect();
                if scan.unreadable.len() > pids.len() {
                    pids.push(format!("and {} more", scan.unreadable.len() - pids.len()));
                }
                let why = if rustix::process::geteuid().is_root() {
                    "their fd links are not readable even as root; --bpf always sees them"
                } else {
                    "other users' processes need root or CAP_SYS_PTRACE"
                };
                SourceStatus::new(
                    "partial",
                    format!(
                        "{} read; could not read the fd table of pid {} ({why})",
                        processes(scan.processes),
                        pids.join(", ")
                    ),
                )
            };
            (scan, status)
        }
        Err(e) => (
            FdScan::default(),
            SourceStatus::new("unavailable", e.to_string()),
        ),
    }
}

/// `1 process`, `2 processes`.
fn processes(n: usize) -> String {
    format!("{n} process{}", if n == 1 { "" } else { "es" })
}

/// Every socket on the queried ports, per family, as the kernel showed it.
#[derive(Debug, Default, Clone)]
pub struct KernelView {
    pub listeners: Vec<DiagSocket>,
    pub others: Vec<DiagSocket>,
    /// Why a family could not be dumped (IPv6 disabled, …).
    pub notes: Vec<String>,
}

/// Dumps listeners and other sockets on `ports`, for IPv4 and IPv6.
pub fn kernel_view(ports: &[u16]) -> Result<KernelView, Error> {
    let mut diag = SockDiag::open()?;
    let mut view = KernelView::default();
    let sockets = match diag.sockets_both(ports) {
        Ok(sockets) => sockets,
        // A kernel without the legacy request: one dump per family.
        Err(Error::NetlinkReply { .. }) => {
            let mut sockets = diag.sockets(Family::Inet, ports)?;
            match diag.sockets(Family::Inet6, ports) {
                Ok(more) => sockets.extend(more),
                // No IPv6 in this kernel: the AF_INET6 handler is absent.
                Err(Error::NetlinkReply { detail, .. }) if detail.contains("ENOENT") => view
                    .notes
                    .push("IPv6 sock_diag is not available (no IPv6?)".into()),
                Err(e) => return Err(e),
            }
            sockets
        }
        Err(e) => return Err(e),
    };
    for socket in sockets {
        if socket.state.0 == TCP_LISTEN {
            view.listeners.push(socket);
        } else {
            view.others.push(socket);
        }
    }
    view.notes.dedup();
    Ok(view)
}

/// How `local` (with its v6only flag) relates to `target`, if it covers it.
pub fn coverage(target: IpAddr, local: IpAddr, v6only: Option<bool>) -> Option<Coverage> {
    match (target, local) {
        (IpAddr::V4(t), IpAddr::V4(l)) if l == t => Some(Coverage::Exact),
        (IpAddr::V4(_), IpAddr::V4(l)) if l.is_unspecified() => Some(Coverage::Wildcard),
        (IpAddr::V4(t), IpAddr::V6(l)) => match l.to_ipv4_mapped() {
            Some(m) if m == t => Some(Coverage::Mapped),
            Some(m) if m.is_unspecified() => Some(Coverage::Wildcard),
            None if l.is_unspecified() && v6only != Some(true) => Some(Coverage::Wildcard),
            _ => None,
        },
        (IpAddr::V6(t), IpAddr::V6(l)) if l == t => Some(Coverage::Exact),
        (IpAddr::V6(_), IpAddr::V6(l)) if l.is_unspecified() => Some(Coverage::Wildcard),
        _ => None,
    }
}

/// Runs the whole inspection.
pub fn inspect(query: &Query) -> Result<Report, Error> {
    let view = kernel_view(&query.ports)?;
    Ok(inspect_view(query, &view))
}

/// The inspection after the kernel dump: everything that follows from a
/// [`KernelView`].
pub fn inspect_view(query: &Query, view: &KernelView) -> Report {
    // Which sockets cover which (address, port).
    let mut needed: HashSet<u64> = HashSet::new();
    let mut plan = Vec::new();
    for &address in &query.addresses {
        let mut ports = Vec::new();
        for &port in &query.ports {
            let listeners: Vec<(&DiagSocket, Coverage)> = view
                .listeners
                .iter()
                .filter(|s| s.local.port() == port)
                .filter_map(|s| coverage(address, s.local.ip(), s.v6only).map(|c| (s, c)))
                .collect();
            let others: Vec<&DiagSocket> = view
                .others
                .iter()
                .filter(|s| s.local.port() == port)
                .filter(|s| coverage(address, s.local.ip(), s.v6only).is_some())
                .collect();
            needed.extend(listeners.iter().map(|(s, _)| s.inode).filter(|&i| i != 0));
            needed.extend(others.iter().map(|s| s.inode).filter(|&i| i != 0));
            ports.push((port, listeners, others));
        }
        plan.push((address, ports));
    }

    // The /proc scan, only when some socket needs an owner.
    let mut bpf = BpfUse::new(query.bpf);
    let (scan, proc_status) = if needed.is_empty() {
        (
            FdScan::default(),
            SourceStatus::new("skipped", "no socket needed an owner"),
        )
    } else if !query.owners {
        (
            FdScan::default(),
            SourceStatus::new("skipped", "owners were not asked for"),
        )
    } else {
        find_owners(query.bpf, &needed, &mut bpf)
    };
    // The kernel's own SO_REUSEPORT bits: one iter/tcp pass over the queried
    // ports, on first use.
    let bpf = std::cell::RefCell::new(bpf);
    let kernel_bits: std::cell::OnceCell<Result<HashMap<u64, bool>, String>> =
        std::cell::OnceCell::new();
    let kernel = |inode: u64| -> Result<bool, String> {
        let bits = kernel_bits.get_or_init(|| {
            let mut bpf = bpf.borrow_mut();
            if !bpf.usable() {
                return Err(bpf.why_not());
            }
            match bpf::tcp_listeners(&query.ports) {
                Ok(listeners) => {
                    bpf.used.push("iter/tcp for SO_REUSEPORT");
                    Ok(listeners
                        .into_iter()
                        .map(|l| (l.inode, l.reuseport))
                        .collect())
                }
                Err(e) => {
                    bpf.failures.push(e.to_string());
                    Err(e.to_string())
                }
            }
        });
        match bits {
            Ok(bits) => bits
                .get(&inode)
                .copied()
                .ok_or_else(|| "the iterator did not see this listener (it closed?)".into()),
            Err(why) => Err(why.clone()),
        }
    };
    let kernel_first = query.bpf == BpfMode::Always || !bpf.borrow().used.is_empty();

    let mut described: HashMap<u32, ProcessInfo> = HashMap::new();
    let mut owners_of = |inode: u64, uid: u32| -> (Vec<Owner>, bool) {
        let mut list = Vec::new();
        if !query.owners {
            return (list, false);
        }
        if let Some(pids) = scan.holders.get(&inode) {
            for (&pid, fds) in pids {
                let info = described
                    .entry(pid)
                    .or_insert_with(|| owners::describe(pid));
                list.push(Owner::visible(info.clone(), fds.clone()));
            }
        }
        let complete = scan.looked_up && scan.unreadable.is_empty() && scan.invisible.is_none();
        // Hidden means: the scan ran and some process was out of reach.
        // When /proc could not be read at all, the owner is just unknown.
        if list.is_empty() && !complete && scan.looked_up {
            list.push(Owner::hidden(uid, scan.hidden_candidates(uid)));
        }
        (list, complete)
    };

    let mut pidfd_used = false;
    let mut probe_used = false;
    let mut addresses = Vec::new();
    for (address, ports) in plan {
        let mut port_reports = Vec::new();
        for (port, listeners, others) in ports {
            let crowded = view
                .others
                .iter()
                .any(|s| s.local.port() == port && s.state.name() != "TIME_WAIT");
            let mut listener_reports = Vec::new();
            for (socket, coverage) in listeners {
                let (owners, complete) = owners_of(socket.inode, socket.uid);
                let group_size = view
                    .listeners
                    .iter()
                    .filter(|s| s.local == socket.local && s.family == socket.family)
                    .count();
                let holders: Vec<(u32, Option<u32>, u32)> = scan
                    .holders
                    .get(&socket.inode)
                    .into_iter()
                    .flat_map(|pids| pids.iter())
                    .flat_map(|(&pid, fds)| {
                        fds.iter()
                            .map(move |r| (pid, r.via_tids.first().copied(), r.fd))
                    })
                    .collect();
                let (reuseport, evidence) = if !query.owners {
                    (None, Reuseport::not_looked_up())
                } else {
                    reuseport::resolve(&Subject {
                        local: socket.local,
                        inode: socket.inode,
                        uid: socket.uid,
                        v6only: socket.v6only,
                        group_size,
                        kernel: &kernel,
                        kernel_first,
                        holders: &holders,
                        probe_crowded: crowded || group_size > 1,
                        allow_pidfd: query.reuseport_pidfd,
                        allow_probe: query.reuseport_probe,
                    })
                };
                pidfd_used |= evidence.source == "pidfd_getfd";
                probe_used |= evidence.source == "bind_probe";
                listener_reports.push(ListenerReport {
                    local: socket.local,
                    family: socket.family,
                    coverage,
                    inode: socket.inode,
                    cookie: socket.cookie,
                    uid: socket.uid,
                    cgroup_id: socket.cgroup_id,
                    accept_queue: socket.recv_queue,
                    backlog: socket.send_queue,
                    v6only: socket.v6only,
                    group_size,
                    reuseport,
                    reuseport_evidence: evidence,
                    owners,
                    owners_complete: complete,
                });
            }
            let mut other = OtherSockets::default();
            for socket in others {
                other.total += 1;
                *other.by_state.entry(socket.state.name()).or_default() += 1;
                let owners = if socket.inode == 0 {
                    Vec::new()
                } else {
                    owners_of(socket.inode, socket.uid).0
                };
                other.sockets.push(OtherSocket {
                    state: socket.state.name(),
                    local: socket.local,
                    remote: socket.remote,
                    inode: socket.inode,
                    uid: socket.uid,
                    owners,
                });
            }
            port_reports.push(PortReport {
                port,
                canary: canary::bind(SocketAddr::new(address, port)),
                listeners: listener_reports,
                other_sockets: other,
            });
        }
        let decision = verdict::decide(address, &port_reports);
        let mut notes = decision.notes;
        notes.extend(v6only_notes(address, &query.ports, view));
        addresses.push(AddressReport {
            address,
            verdict: decision.verdict,
            reasons: decision.reasons,
            notes,
            ports: port_reports,
        });
    }

    let euid = rustix::process::geteuid().as_raw();
    let sources = Sources {
        sock_diag: SourceStatus::new(
            "used",
            if view.notes.is_empty() {
                "TCP listeners and other sockets on the ports, IPv4 and IPv6".to_string()
            } else {
                view.notes.join("; ")
            },
        ),
        proc: proc_status,
        pidfd_getfd: if pidfd_used {
            SourceStatus::new("used", "SO_REUSEPORT read from an owner's fd")
        } else if !query.reuseport_pidfd {
            SourceStatus::new("skipped", "disabled by --no-pidfd")
        } else {
            SourceStatus::new("skipped", "not needed or not permitted")
        },
        bind_probe: if probe_used {
            SourceStatus::new("used", format!("SO_REUSEPORT bind probe as euid {euid}"))
        } else if !query.reuseport_probe {
            SourceStatus::new("skipped", "disabled by --no-probe")
        } else {
            SourceStatus::new("skipped", "not needed or could not tell")
        },
        bpf: bpf.borrow().status(),
    };
    Report {
        schema: SCHEMA,
        sockcheck: env!("CARGO_PKG_VERSION"),
        ports: query.ports.clone(),
        addresses,
        sources,
    }
}

/// A v6only `[::]` listener does not cover an IPv4 address; say so, since
/// people expect it to.
fn v6only_notes(address: IpAddr, ports: &[u16], view: &KernelView) -> Vec<String> {
    if !address.is_ipv4() {
        return Vec::new();
    }
    let mut notes = Vec::new();
    let mut seen = BTreeMap::new();
    for socket in &view.listeners {
        if ports.contains(&socket.local.port())
            && socket.local.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            && socket.v6only == Some(true)
            && seen.insert(socket.local.port(), ()).is_none()
        {
            notes.push(format!(
                "[::]:{} is listening with IPV6_V6ONLY, so it does not cover {address}",
                socket.local.port()
            ));
        }
    }
    notes
}

/// Parses an address as a user typed it: `127.0.0.2`, `::1`, `[::1]`.
/// An IPv4-mapped IPv6 address is taken as the IPv4 address it maps.
pub fn parse_address(text: &str) -> Result<IpAddr, Error> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let address = match inner.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        Ok(v4) => v4,
        Err(_) => {
            let hint = if text.parse::<SocketAddr>().is_ok()
                || text
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok() && !text.contains("::"))
            {
                " (give the address alone; ports go in --ports)"
            } else if text.chars().any(|c| c.is_ascii_alphabetic()) && !text.contains(':') {
                " (host names are not resolved; give an IP address)"
            } else {
                ""
            };
            return Err(Error::Usage(format!(
                "{} is not an IP address{hint}",
                echo(text)
            )));
        }
    };
    match not_bindable(address) {
        Some(kind) => Err(Error::Usage(format!(
            "{} is {kind}; give the unicast address a server would bind",
            echo(text)
        ))),
        None => Ok(address),
    }
}

/// What makes `address` one no server binds as its own, or None for a
/// unicast address a server can bind. `sockcheck ADDR` and every address of
/// a pool pass this check.
///
/// `127.0.0.0` passes: Linux routes all of 127.0.0.0/8 to `lo`, and a
/// server bound to 127.0.0.0 is reachable. `127.255.255.255` does not: it is
/// `lo`'s broadcast address, which binds but cannot be connected to.
pub fn not_bindable(address: IpAddr) -> Option<&'static str> {
    match address {
        a if a.is_unspecified() => Some("a wildcard"),
        a if a.is_multicast() => Some("a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::new(127, 255, 255, 255) => {
            Some("the broadcast address of 127.0.0.0/8")
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(
            "an IPv6 link-local address, which binds only with a scope (an interface) \
             and sockcheck takes none",
        ),
        _ => None,
    }
}

/// Parses `9925,9926` (from `--ports` or SOCKCHECK_PORTS, named by `source`).
pub fn parse_ports(text: &str, source: &str) -> Result<Vec<u16>, Error> {
    let mut ports = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        // Digits only: u32's parser also takes a sign (`+5`).
        let digits = !item.is_empty() && item.bytes().all(|b| b.is_ascii_digit());
        let port = match item.parse::<u32>().ok().filter(|_| digits).ok_or(()) {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            Ok(n) => {
                return Err(Error::Usage(format!(
                    "{source}: port {n} is out of range (1-65535)"
                )));
            }
            Err(_) if item.is_empty() => {
                return Err(Error::Usage(format!(
                    "{source}: empty port in {}",
                    echo(text)
                )));
            }
            Err(_) => {
                return Err(Error::Usage(format!(
                    "{source}: {} is not a port number",
                    echo(item)
                )));
            }
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if ports.len() > MAX_PORTS {
        return Err(Error::Usage(format!(
            "{source}: {} ports; at most {MAX_PORTS} at once",
            ports.len()
        )));
    }
    Ok(ports)
}

/// The most ports one inspection takes (their filter program grows with
/// them, and the kernel echoes it back in an error reply).
pub const MAX_PORTS: usize = 1024;

/// The default ports: 9925 (operations) and 9926 (HTTP).
pub const DEFAULT_PORTS: [u16; 2] = [9925, 9926];

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn coverage_rules() {
        let t = ip("127.0.0.2");
        assert_eq!(coverage(t, ip("127.0.0.2"), None), Some(Coverage::Exact));
        assert_eq!(coverage(t, ip("127.0.0.3"), None), None);
        assert_eq!(coverage(t, ip("0.0.0.0"), None), Some(Coverage::Wildcard));
        assert_eq!(
            coverage(t, ip("::ffff:127.0.0.2"), Some(false)),
            Some(Coverage::Mapped)
        );
        assert_eq!(coverage(t, ip("::"), Some(false)), Some(Coverage::Wildcard));
        assert_eq!(coverage(t, ip("::"), Some(true)), None);
        assert_eq!(coverage(t, ip("::1"), Some(false)), None);
        let six = ip("::1");
        assert_eq!(coverage(six, ip("::1"), Some(false)), Some(Coverage::Exact));
        assert_eq!(
            coverage(six, ip("::"), Some(true)),
            Some(Coverage::Wildcard)
        );
        assert_eq!(
            coverage(six, ip("::"), Some(false)),
            Some(Coverage::Wildcard)
        );
        assert_eq!(coverage(six, ip("0.0.0.0"), None), None);
    }

    #[test]
    fn addresses_parse_or_name_the_bad_value() {
        assert_eq!(parse_address("127.0.0.2").unwrap(), ip("127.0.0.2"));
        assert_eq!(parse_address("[::1]").unwrap(), ip("::1"));
        assert_eq!(parse_address("::ffff:127.0.0.2").unwrap(), ip("127.0.0.2"));
        let e = parse_address("127.0.0.256").unwrap_err().to_string();
        assert_eq!(e, "'127.0.0.256' is not an IP address");
        let e = parse_address("localhost:80").unwrap_err().to_string();
        assert!(e.contains("'localhost:80'") && e.contains("--ports"), "{e}");
        let e = parse_address("localhost").unwrap_err().to_string();
        assert!(e.contains("host names"), "{e}");
        for bad in [
            "0.0.0.0",
            "::",
            "[::]",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
        ] {
            let e = parse_address(bad).unwrap_err().to_string();
            assert!(e.contains("unicast"), "{bad}: {e}");
        }
    }

    #[test]
    fn ports_parse_or_name_the_bad_value() {
        assert_eq!(
            parse_ports("9925,9926", "--ports").unwrap(),
            vec![9925, 9926]
        );
        assert_eq!(parse_ports("9926, 9926", "--ports").unwrap(), vec![9926]);
        let many = (1..=1025)
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        for (bad, needle) in [
            ("0", "port 0"),
            ("70000", "port 70000"),
            ("abc", "'abc'"),
            ("1,,2", "empty"),
            ("+5", "'+5'"),
            ("9925,-1", "'-1'"),
            (many.as_str(), "at most 1024"),
        ] {
            let e = parse_ports(bad, "--ports").unwrap_err().to_string();
            assert!(
                e.starts_with("--ports: ") && e.contains(needle),
                "{bad}: {e}"
            );
        }
    }
}
