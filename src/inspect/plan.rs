//! The plan: which sockets cover which address and port, which need an
//! owner and which listeners need SO_REUSEPORT evidence. A pure function of
//! the query and the kernel view, so it is unit-tested without a kernel.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use super::{KernelView, Query};
use crate::diag::{DiagSocket, TcpState};
use crate::report::Coverage;

/// What the evidence stage has to find, and for which address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'v> {
    pub addresses: Vec<AddressPlan<'v>>,
    pub owners: OwnerLookup,
    /// The listeners whose SO_REUSEPORT is asked, each once however many
    /// addresses it covers. Empty when the query does not ask for owners.
    pub reuseport: Vec<ReuseportNeed>,
}

/// The sockets that cover one address, port by port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPlan<'v> {
    pub address: IpAddr,
    pub ports: Vec<PortPlan<'v>>,
}

/// The sockets that cover one address on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan<'v> {
    pub port: u16,
    pub listeners: Vec<CoveringListener<'v>>,
    /// Sockets that are not listening (connected, TIME_WAIT, bound but
    /// inactive).
    pub others: Vec<&'v DiagSocket>,
}

/// A listener that covers the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoveringListener<'v> {
    pub id: ListenerId,
    pub socket: &'v DiagSocket,
    pub coverage: Coverage,
    /// Listeners on exactly this local address and port, this one included.
    pub group_size: usize,
}

/// A listener of the kernel view: its index in [`KernelView::listeners`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(pub usize);

/// Whether /proc (or the kernel's fd tables, through BPF) is read, and for
/// which sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerLookup {
    /// No socket covers any address: a free address never scans /proc.
    NoneNeeded,
    /// Sockets need owners, but the query did not ask (a gate that only
    /// needs the verdict).
    NotAsked,
    /// The socket inodes whose holders to find.
    Find(BTreeSet<u64>),
}

/// One listener whose SO_REUSEPORT is to be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReuseportNeed {
    pub id: ListenerId,
    pub group_size: usize,
    /// Other sockets on the port (or the listener's own group) could make
    /// a bind probe fail for reasons other than this listener.
    pub probe_crowded: bool,
}

/// Works out the plan for `query` against `view`.
pub fn plan<'v>(query: &Query, view: &'v KernelView) -> Plan<'v> {
    let index = ViewIndex::of(view);
    let addresses: Vec<AddressPlan<'v>> = query
        .addresses
        .iter()
        .map(|&address| AddressPlan {
            address,
            ports: query
                .ports
                .iter()
                .map(|&port| port_plan(view, &index, address, port))
                .collect(),
        })
        .collect();
    let inodes: BTreeSet<u64> = addresses
        .iter()
        .flat_map(|a| &a.ports)
        .flat_map(|p| {
            let listeners = p.listeners.iter().map(|l| l.socket.inode);
            listeners.chain(p.others.iter().map(|s| s.inode))
        })
        .filter(|&inode| inode != 0)
        .collect();
    let owners = if inodes.is_empty() {
        OwnerLookup::NoneNeeded
    } else if !query.owners {
        OwnerLookup::NotAsked
    } else {
        OwnerLookup::Find(inodes)
    };
    let reuseport = if query.owners {
        reuseport_needs(&index, &addresses)
    } else {
        Vec::new()
    };
    Plan {
        addresses,
        owners,
        reuseport,
    }
}

/// The kernel view indexed once per plan, by the address and port each
/// socket is bound to (an IPv4-mapped address under its IPv4 address) and
/// by port for wildcards, so that what covers an address is a lookup:
/// `list` and `scan` stay linear in sockets plus addresses (20,000
/// listeners and a /16 were quadratic).
pub(crate) struct ViewIndex {
    /// Listeners and other sockets bound to an address, by (address, port).
    listeners: HashMap<(IpAddr, u16), Vec<usize>>,
    others: HashMap<(IpAddr, u16), Vec<usize>>,
    /// Bound to a wildcard (0.0.0.0, [::], ::ffff:0.0.0.0), by port.
    any_listeners: HashMap<u16, Vec<usize>>,
    any_others: HashMap<u16, Vec<usize>>,
    /// How many listeners share a local address, port and family.
    groups: HashMap<(SocketAddr, bool), usize>,
    /// Ports with a socket that is neither listening nor in TIME_WAIT.
    crowded: BTreeSet<u16>,
}

/// The address a socket's local address counts under.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl ViewIndex {
    pub(crate) fn of(view: &KernelView) -> ViewIndex {
        let mut index = ViewIndex {
            listeners: HashMap::new(),
            others: HashMap::new(),
            any_listeners: HashMap::new(),
            any_others: HashMap::new(),
            groups: HashMap::new(),
            crowded: BTreeSet::new(),
        };
        for (i, s) in view.listeners.iter().enumerate() {
            let (ip, port) = (key(s.local.ip()), s.local.port());
            if ip.is_unspecified() {
                index.any_listeners.entry(port).or_default().push(i);
            } else {
                index.listeners.entry((ip, port)).or_default().push(i);
            }
            *index
                .groups
                .entry((s.local, s.family == crate::diag::Family::Inet))
                .or_default() += 1;
        }
        for (i, s) in view.others.iter().enumerate() {
            let (ip, port) = (key(s.local.ip()), s.local.port());
            if ip.is_unspecified() {
                index.any_others.entry(port).or_default().push(i);
            } else {
                index.others.entry((ip, port)).or_default().push(i);
            }
            if s.state != TcpState::TimeWait {
                index.crowded.insert(port);
            }
        }
        index
    }

    /// The indices of the sockets that may cover `address` on `port`, in
    /// the view's order.
    fn candidates(
        bound: &HashMap<(IpAddr, u16), Vec<usize>>,
        any: &HashMap<u16, Vec<usize>>,
        address: IpAddr,
        port: u16,
    ) -> Vec<usize> {
        let mut found: Vec<usize> = bound
            .get(&(key(address), port))
            .into_iter()
            .chain(any.get(&port))
            .flatten()
            .copied()
            .collect();
        found.sort_unstable();
        found
    }

    /// The listeners that cover `address` on any of `ports`: the verdict
    /// they give it (a wildcard first: foreign is the more severe) and the
    /// inodes of the listeners that give it, sorted. `None`: no listener
    /// covers it.
    pub(crate) fn covering(
        &self,
        view: &KernelView,
        address: IpAddr,
        ports: &[u16],
    ) -> Option<(crate::report::Verdict, Vec<u64>)> {
        let (mut wildcards, mut bound) = (Vec::new(), Vec::new());
        for &port in ports {
            for i in ViewIndex::candidates(&self.listeners, &self.any_listeners, address, port) {
                let socket = &view.listeners[i];
                match super::coverage(address, socket.local.ip(), socket.v6only) {
                    Some(Coverage::Wildcard) => wildcards.push(socket.inode),
                    Some(_) => bound.push(socket.inode),
                    None => {}
                }
            }
        }
        let (verdict, mut inodes) = if !wildcards.is_empty() {
            (crate::report::Verdict::Foreign, wildcards)
        } else if !bound.is_empty() {
            (crate::report::Verdict::Busy, bound)
        } else {
            return None;
        };
        inodes.sort_unstable();
        inodes.dedup();
        Some((verdict, inodes))
    }

    fn group_size(&self, socket: &DiagSocket) -> usize {
        self.groups
            .get(&(socket.local, socket.family == crate::diag::Family::Inet))
            .copied()
            .unwrap_or(1)
    }
}

/// The listeners and other sockets that cover `address` on `port`.
fn port_plan<'v>(
    view: &'v KernelView,
    index: &ViewIndex,
    address: IpAddr,
    port: u16,
) -> PortPlan<'v> {
    let listeners = ViewIndex::candidates(&index.listeners, &index.any_listeners, address, port)
        .into_iter()
        .filter_map(|i| {
            let socket = &view.listeners[i];
            let coverage = super::coverage(address, socket.local.ip(), socket.v6only)?;
            Some(CoveringListener {
                id: ListenerId(i),
                socket,
                coverage,
                group_size: index.group_size(socket),
            })
        })
        .collect();
    let others = ViewIndex::candidates(&index.others, &index.any_others, address, port)
        .into_iter()
        .map(|i| &view.others[i])
        .filter(|s| super::coverage(address, s.local.ip(), s.v6only).is_some())
        .collect();
    PortPlan {
        port,
        listeners,
        others,
    }
}

/// Every covering listener once, in the order first met.
fn reuseport_needs(index: &ViewIndex, addresses: &[AddressPlan<'_>]) -> Vec<ReuseportNeed> {
    let mut needs: Vec<ReuseportNeed> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for port in addresses.iter().flat_map(|a| &a.ports) {
        // Any socket on the port but a TIME_WAIT one can refuse a bind.
        let crowded = index.crowded.contains(&port.port);
        for listener in &port.listeners {
            if seen.insert(listener.id) {
                needs.push(ReuseportNeed {
                    id: listener.id,
                    group_size: listener.group_size,
                    probe_crowded: crowded || listener.group_size > 1,
                });
            }
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME_WAIT: TcpState = TcpState::TimeWait;
    const ESTABLISHED: TcpState = TcpState::Established;
    const LISTEN: TcpState = TcpState::Listen;

    /// A socket of uid 1000 with no remote end.
    fn socket(state: TcpState, local: &str, inode: u64) -> DiagSocket {
        crate::inspect::fixture::socket(state, local, "0.0.0.0:0", inode, 1000)
    }

    fn view(sockets: Vec<DiagSocket>) -> KernelView {
        let (listeners, others): (Vec<_>, Vec<_>) =
            sockets.into_iter().partition(|s| s.state == LISTEN);
        KernelView {
            listeners,
            others,
            notes: Vec::new(),
        }
    }

    fn query(addresses: &[&str], ports: &[u16]) -> Query {
        let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        Query::new(addresses, ports.to_vec())
    }

    fn find(inodes: &[u64]) -> OwnerLookup {
        OwnerLookup::Find(inodes.iter().copied().collect())
    }

    #[test]
    fn a_free_address_needs_no_owner_and_no_evidence() {
        let view = view(vec![socket(LISTEN, "127.81.0.9:9926", 7)]);
        let planned = plan(&query(&["127.81.0.2"], &[9925, 9926]), &view);
        assert_eq!(planned.owners, OwnerLookup::NoneNeeded);
        assert!(planned.reuseport.is_empty());
        let ports = &planned.addresses[0].ports;
        assert_eq!(
            ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            [9925, 9926]
        );
        assert!(
            ports
                .iter()
                .all(|p| p.listeners.is_empty() && p.others.is_empty())
        );
    }

    #[test]
    fn only_covering_sockets_on_the_queried_ports_are_planned() {
        let view = view(vec![
            socket(LISTEN, "127.81.0.2:9926", 11),
            socket(LISTEN, "127.81.0.3:9926", 12),
            socket(LISTEN, "127.81.0.2:9927", 13),
            socket(ESTABLISHED, "127.81.0.2:9925", 14),
        ]);
        let planned = plan(&query(&["127.81.0.2"], &[9925, 9926]), &view);
        assert_eq!(planned.owners, find(&[11, 14]));
        let [p9925, p9926] = &planned.addresses[0].ports[..] else {
            panic!("two ports");
        };
        assert_eq!(
            p9925.others.iter().map(|s| s.inode).collect::<Vec<_>>(),
            [14]
        );
        assert!(p9925.listeners.is_empty());
        assert_eq!(p9926.listeners.len(), 1);
        let listener = &p9926.listeners[0];
        assert_eq!(
            (listener.id, listener.coverage),
            (ListenerId(0), Coverage::Exact)
        );
        assert_eq!(
            planned.reuseport,
            [ReuseportNeed {
                id: ListenerId(0),
                group_size: 1,
                probe_crowded: false,
            }]
        );
    }

    #[test]
    fn a_wildcard_covering_two_addresses_needs_evidence_once() {
        let view = view(vec![socket(LISTEN, "0.0.0.0:9926", 21)]);
        let planned = plan(&query(&["127.81.0.2", "127.81.0.3"], &[9926]), &view);
        for address in &planned.addresses {
            assert_eq!(address.ports[0].listeners[0].coverage, Coverage::Wildcard);
        }
        assert_eq!(planned.owners, find(&[21]));
        assert_eq!(planned.reuseport.len(), 1);
    }

    #[test]
    fn a_group_is_sized_and_crowds_the_bind_probe() {
        let view = view(vec![
            socket(LISTEN, "127.81.0.2:9926", 31),
            socket(LISTEN, "127.81.0.2:9926", 32),
        ]);
        let planned = plan(&query(&["127.81.0.2"], &[9926]), &view);
        let sizes: Vec<usize> = planned.addresses[0].ports[0]
            .listeners
            .iter()
            .map(|l| l.group_size)
            .collect();
        assert_eq!(sizes, [2, 2]);
        assert!(planned.reuseport.iter().all(|n| n.probe_crowded));
        assert_eq!(planned.reuseport.len(), 2);
    }

    #[test]
    fn time_wait_needs_no_owner_and_does_not_crowd_the_probe() {
        let view = view(vec![
            socket(LISTEN, "127.81.0.2:9926", 41),
            socket(TIME_WAIT, "127.81.0.2:9926", 0),
        ]);
        let planned = plan(&query(&["127.81.0.2"], &[9926]), &view);
        assert_eq!(planned.owners, find(&[41]));
        assert!(!planned.reuseport[0].probe_crowded);
        // Any other socket on the port, on any address, can refuse a bind.
        let view = view_with_client(view);
        let planned = plan(&query(&["127.81.0.2"], &[9926]), &view);
        assert!(planned.reuseport[0].probe_crowded);
    }

    fn view_with_client(mut view: KernelView) -> KernelView {
        view.others.push(socket(ESTABLISHED, "127.81.0.5:9926", 42));
        view
    }

    #[test]
    fn owners_not_asked_means_no_lookup_and_no_evidence() {
        let view = view(vec![socket(LISTEN, "127.81.0.2:9926", 51)]);
        let mut query = query(&["127.81.0.2"], &[9926]);
        query.owners = false;
        let planned = plan(&query, &view);
        assert_eq!(planned.owners, OwnerLookup::NotAsked);
        assert!(planned.reuseport.is_empty());
        assert_eq!(planned.addresses[0].ports[0].listeners.len(), 1);
    }

    #[test]
    fn a_v6only_wildcard_does_not_cover_ipv4() {
        let mut v6only = socket(LISTEN, "[::]:9926", 61);
        v6only.v6only = Some(true);
        let view = view(vec![v6only, socket(LISTEN, "[::ffff:127.81.0.2]:9926", 62)]);
        let planned = plan(&query(&["127.81.0.2"], &[9926]), &view);
        let listeners = &planned.addresses[0].ports[0].listeners;
        assert_eq!(listeners.len(), 1);
        assert_eq!(
            (listeners[0].id, listeners[0].coverage),
            (ListenerId(1), Coverage::Mapped)
        );
        assert_eq!(planned.owners, find(&[62]));
    }
}
