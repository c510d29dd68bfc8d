//! What a command runs with, resolved once from the command line and the
//! environment (as fd's `Config` and ripgrep's `HiArgs` are): the output
//! settings, the ports, the sources of evidence and the network namespace,
//! opened. A lease command gets a [`LeaseContext`]: the same and its state
//! directory; no other command has one.

use std::net::IpAddr;
use std::ops::Deref;
use std::path::PathBuf;

use crate::error::Error;
use crate::inspect::{self, KernelView, Query, Sources};
use crate::netns::NetNs;
use crate::output::Output;
use crate::report::{AddressReport, NetnsInfo};

/// The resolved settings of one command.
#[derive(Debug)]
pub struct Context {
    pub output: Output,
    /// The TCP ports to inspect; empty for a command that inspects none.
    pub ports: Vec<u16>,
    pub sources: Sources,
    /// `--netns`: the namespace, opened.
    netns: Option<NetNs>,
    /// How reports name the namespace.
    netns_info: Option<NetnsInfo>,
}

impl Context {
    /// A context in sockcheck's own network namespace.
    pub fn new(output: Output, ports: Vec<u16>, sources: Sources) -> Context {
        Context {
            output,
            ports,
            sources,
            netns: None,
            netns_info: None,
        }
    }

    /// This context in `netns` (already opened).
    pub fn with_netns(mut self, netns: Option<NetNs>) -> Context {
        self.netns_info = netns.as_ref().map(NetNs::info);
        self.netns = netns;
        self
    }

    /// The namespace `--netns` chose, as reports name it.
    pub fn netns(&self) -> Option<&NetnsInfo> {
        self.netns_info.as_ref()
    }

    /// Runs `work` in the network namespace `--netns` chose, on a thread of
    /// its own that entered it (sock_diag and the canary then see that
    /// namespace; /proc and the rest stay sockcheck's), or here.
    pub fn in_netns<T: Send>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send,
    ) -> Result<T, Error> {
        match &self.netns {
            Some(ns) => ns.run(work)?,
            None => work(),
        }
    }

    /// The same settings with more ports (`run --lease-ports`), for use
    /// where the work already runs (in the namespace, when there is one):
    /// the copy names the namespace in reports but does not enter it.
    pub fn with_ports(&self, extra: &[u16]) -> Context {
        let mut ports = self.ports.clone();
        for &port in extra {
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        Context {
            output: self.output,
            ports,
            sources: self.sources,
            netns: None,
            netns_info: self.netns_info.clone(),
        }
    }

    /// A query of `addresses` on the context's ports, with its sources and
    /// namespace; `owners`: find who holds the sockets (reads /proc).
    pub fn query(&self, addresses: Vec<IpAddr>, owners: bool) -> Query {
        Query {
            owners,
            sources: self.sources,
            netns: self.netns().cloned(),
            ..Query::new(addresses, self.ports.clone())
        }
    }

    /// Inspects one address against an existing kernel view.
    pub fn one(&self, view: &KernelView, address: IpAddr, owners: bool) -> AddressReport {
        inspect::inspect_view(&self.query(vec![address], owners), view)
            .addresses
            .remove(0)
    }
}

/// A lease command's context: the common settings and where leases live.
#[derive(Debug)]
pub struct LeaseContext {
    pub context: Context,
    /// The state directory (`--state-dir`, `$SOCKCHECK_STATE_DIR`, or the
    /// per-user default), not yet opened.
    pub state_dir: PathBuf,
}

impl Deref for LeaseContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.context
    }
}
