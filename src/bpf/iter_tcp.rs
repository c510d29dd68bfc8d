//! `iter/tcp` (`bpf/iter_tcp.bpf.c`): the TCP listeners of the caller's
//! network namespace, with their SO_REUSEPORT, SO_REUSEADDR and
//! IPV6_V6ONLY, and their socket inodes.

use std::net::IpAddr;

use super::loader::{PortSet, iter_tcp_object, load_object, run_iter};
use super::records::{ListenerRec, decode_all, ip_addr};
use super::{BpfError, availability};

/// A TCP socket in LISTEN, as the kernel's socket tables have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelListener {
    /// `AF_INET` (2) or `AF_INET6` (10). An AF_INET6 socket on `::` without
    /// `v6only` also takes IPv4 connections.
    pub family: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// Socket inode, as in `fstat(fd).st_ino`, `/proc/PID/fd` (`socket:[N]`)
    /// and `/proc/net/tcp`; 0 for a socket with no `struct socket`.
    pub inode: u64,
    /// `sk_uid`: the owner (creator) of the socket.
    pub uid: u32,
    /// SO_REUSEPORT was set (`skc_reuseport`).
    pub reuseport: bool,
    /// `skc_reuse`: 0 = no SO_REUSEADDR, 1 = SO_REUSEADDR, 2 = forced by the kernel.
    pub reuseaddr: u8,
    /// `skc_ipv6only`: IPV6_V6ONLY was set, or the socket is bound to a
    /// specific (not v4-mapped) IPv6 address, where the kernel forces it.
    /// Always false for AF_INET.
    pub v6only: bool,
}

/// Every TCP listener on one of `ports` (all listeners if `ports` is empty)
/// in the caller's network namespace (the one `iter/tcp` walks), in the
/// kernel's order.
pub fn tcp_listeners(ports: &[u16]) -> Result<Vec<KernelListener>, BpfError> {
    const PROGRAM: &str = "iter/tcp";
    availability()?;
    let ports = PortSet::new(ports)?;
    let (mut ebpf, _) = load_object(PROGRAM, iter_tcp_object(), |loader| {
        ports.write_into(loader)
    })?;
    let raw = run_iter(&mut ebpf, "sockcheck_iter_tcp", "tcp", PROGRAM)?;
    let records = decode_all::<ListenerRec>(&raw, PROGRAM)?;
    Ok(records.iter().map(KernelListener::from).collect())
}

impl From<&ListenerRec> for KernelListener {
    fn from(rec: &ListenerRec) -> Self {
        KernelListener {
            family: rec.family as u8,
            addr: ip_addr(rec.family, rec.addr),
            port: rec.port,
            inode: rec.inode,
            uid: rec.uid,
            reuseport: rec.reuseport != 0,
            reuseaddr: rec.reuse,
            v6only: rec.v6only != 0,
        }
    }
}
