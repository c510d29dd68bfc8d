//! One inspection, as the README tells it: the kernel's view of the ports
//! (sock_diag), a plan of what needs an owner or SO_REUSEPORT evidence,
//! the evidence (/proc only if some socket needs an owner, SO_REUSEPORT
//! sources, the canary), and the report with its verdicts.
//!
//! - [`kernel`]: the sock_diag dump, as a [`KernelView`];
//! - [`plan`]: a pure function of the query and the view;
//! - [`evidence`]: everything that touches the system after the dump;
//! - [`assemble`]: the report, and the verdict of each address.

pub mod assemble;
pub mod evidence;
#[cfg(test)]
pub(crate) mod fixture;
pub mod kernel;
pub mod parse;
pub mod plan;

use std::net::IpAddr;

use crate::error::Error;
use crate::report::{Coverage, Report};

pub use evidence::BPF_OWNER_THRESHOLD;
pub use kernel::{KernelView, kernel_view};
pub use parse::{DEFAULT_PORTS, MAX_PORTS, not_bindable, parse_address, parse_ports};

/// What to inspect.
#[derive(Debug, Clone)]
pub struct Query {
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<u16>,
    /// Whether to find owners (and SO_REUSEPORT) at all. A gate that only
    /// needs the verdict turns this off and never reads /proc; such a report
    /// is for its verdict only and is never shown.
    pub owners: bool,
    /// Which optional sources of evidence may be used.
    pub sources: Sources,
    /// The network namespace the inspection runs in, when `--netns` chose
    /// one (the caller runs it there): named in the report.
    pub netns: Option<crate::report::NetnsInfo>,
}

impl Query {
    /// A full inspection of `addresses` on `ports`, with every source.
    pub fn new(addresses: Vec<IpAddr>, ports: Vec<u16>) -> Query {
        Query {
            addresses,
            ports,
            owners: true,
            sources: Sources::default(),
            netns: None,
        }
    }
}

/// Which optional sources of evidence may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    /// Whether an owner's fd may be duplicated (pidfd_getfd) to read
    /// SO_REUSEPORT.
    pub pidfd: bool,
    /// Whether the SO_REUSEPORT bind probe may run.
    pub probe: bool,
    /// When eBPF is used (it also needs privileges and kernel BTF).
    pub bpf: BpfMode,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            pidfd: true,
            probe: true,
            bpf: BpfMode::Auto,
        }
    }
}

/// When eBPF is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfMode {
    /// Only where it pays: owners from the kernel's fd tables on a
    /// machine with many open files, and the kernel's SO_REUSEPORT bit when
    /// nothing cheaper can tell (or BPF is loaded anyway).
    Auto,
    /// For owners and for every listener's SO_REUSEPORT.
    Always,
    /// Never.
    Never,
}

/// Runs the whole inspection.
pub fn inspect(query: &Query) -> Result<Report, Error> {
    let view = kernel_view(&query.ports)?;
    Ok(inspect_view(query, &view))
}

/// The inspection after the kernel dump: plan what needs evidence, gather
/// it, and assemble the report.
pub fn inspect_view(query: &Query, view: &KernelView) -> Report {
    let plan = plan::plan(query, view);
    let evidence = evidence::gather(query, view, &plan);
    assemble::report(query, view, &plan, &evidence)
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
}
