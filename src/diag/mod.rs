//! The kernel's view of TCP sockets, through netlink `sock_diag`.
//!
//! One dump for all the ports and both families: a legacy `TCPDIAG_GETSOCK`
//! request, which the kernel runs for every family in one walk of its tables
//! (listening hash, established hash with TIME_WAIT, and the bind hash for
//! bound-but-inactive sockets), with the ports as an `INET_DIAG_REQ_BYTECODE`
//! filter, so the reply holds only the sockets on those ports however many
//! thousands of connections the machine has. Each walk visits every bucket
//! of the established hash, which is why one walk matters. A kernel without
//! the legacy request gets one `SOCK_DIAG_BY_FAMILY` dump per family.

use std::net::SocketAddr;

use netlink_packet_sock_diag::{AF_INET, AF_INET6};
use netlink_sys::{
    Socket as NetlinkSocket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG,
};
use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;

pub use reply::{ReplyError, parse_datagram};
pub use request::port_filter;
use request::{ALL_STATES, legacy_request, request};
pub use state::TcpState;

#[cfg(test)]
mod property;
mod reply;
mod request;
mod state;
#[cfg(test)]
mod tests;

/// `TCP_BOUND_INACTIVE` (Linux 6.7+): a pseudo-state that asks inet_diag to
/// also walk the bind hash, which holds sockets that are bound but neither
/// listening nor connected.
const TCP_BOUND_INACTIVE: u8 = 13;
/// `TCP_CLOSE`.
const TCP_CLOSE: u8 = 7;

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    pub(crate) fn raw(self) -> u8 {
        match self {
            Family::Inet => AF_INET,
            Family::Inet6 => AF_INET6,
        }
    }

    /// The name the kernel headers use.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "AF_INET",
            Family::Inet6 => "AF_INET6",
        }
    }
}

/// One socket as `sock_diag` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub family: Family,
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The socket's uid (`sk_uid`): the fsuid of the process that created it.
    pub uid: u32,
    /// The socket inode, the number behind `socket:[N]` in /proc/PID/fd.
    /// Zero for sockets without a file (TIME_WAIT, NEW_SYN_RECV).
    pub inode: u64,
    /// The kernel's socket cookie.
    pub cookie: u64,
    /// For a listener: the accept queue length. Otherwise: bytes unread.
    pub recv_queue: u32,
    /// For a listener: the backlog given to listen(). Otherwise: bytes unsent.
    pub send_queue: u32,
    /// `INET_DIAG_SKV6ONLY`: only reported for AF_INET6 sockets.
    pub v6only: Option<bool>,
    /// `INET_DIAG_CGROUP_ID`, when the kernel reports it.
    pub cgroup_id: Option<u64>,
}

/// A netlink `NETLINK_SOCK_DIAG` socket.
pub struct SockDiag {
    socket: NetlinkSocket,
    sequence: u32,
    buffer: Vec<u8>,
}

/// A `NETLINK_SOCK_DIAG` socket, bound and connected to the kernel, in
/// the calling thread's network namespace.
pub(crate) fn netlink_socket() -> Result<NetlinkSocket, Error> {
    let mut socket = NetlinkSocket::new(NETLINK_SOCK_DIAG)
        .map_err(|e| Error::netlink("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", e))?;
    socket
        .bind_auto()
        .map_err(|e| Error::netlink("bind(AF_NETLINK)", e))?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(|e| Error::netlink("connect(AF_NETLINK)", e))?;
    Ok(socket)
}

/// Big enough for any datagram of a dump: the kernel fills at most
/// 32 KiB per datagram for a reader with a large buffer.
const RECV_BUFFER: usize = 64 * 1024;

impl SockDiag {
    pub fn open() -> Result<SockDiag, Error> {
        let socket = netlink_socket()?;
        Ok(SockDiag {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Every TCP socket of `family` on a local port in `ports`, in any
    /// state: listeners, connected and closing sockets, TIME_WAIT, request
    /// sockets, and sockets that are bound but inactive.
    ///
    /// One dump per family whatever the number of ports: the ports go to the
    /// kernel as an `INET_DIAG_REQ_BYTECODE` filter, since each dump of the
    /// established hash walks all its buckets.
    pub fn sockets(&mut self, family: Family, ports: &[u16]) -> Result<Vec<DiagSocket>, Error> {
        let what = format!("sock_diag dump for {}", family.name());
        let bytes = request(
            family,
            ALL_STATES,
            self.next_sequence(),
            &port_filter(ports),
        );
        self.dump(what, &bytes)
    }

    /// The same for both families in one walk of the kernel's tables: the
    /// legacy `TCPDIAG_GETSOCK` request, which the kernel runs with
    /// `AF_UNSPEC`. Each walk of the established hash visits all its
    /// buckets, so this halves the cost of [`SockDiag::sockets`] twice.
    pub fn sockets_both(&mut self, ports: &[u16]) -> Result<Vec<DiagSocket>, Error> {
        let bytes = legacy_request(ALL_STATES, self.next_sequence(), &port_filter(ports));
        self.dump(
            "sock_diag dump (TCPDIAG_GETSOCK, both families)".into(),
            &bytes,
        )
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    fn dump(&mut self, what: String, request: &[u8]) -> Result<Vec<DiagSocket>, Error> {
        let what = || what.clone();
        let sequence = self.sequence;
        self.socket
            .send(request, 0)
            .map_err(|e| Error::netlink_for(what(), "send", e))?;

        let mut sockets = Vec::new();
        loop {
            self.buffer.clear();
            let n = self
                .socket
                .recv(&mut self.buffer, libc::MSG_TRUNC)
                .map_err(|e| Error::netlink_for(what(), "recv", e))?;
            if n > self.buffer.len() {
                return Err(Error::NetlinkReply {
                    what: what(),
                    detail: format!("datagram of {n} bytes truncated to {}", self.buffer.len()),
                    errno: None,
                });
            }
            if parse_datagram(&self.buffer[..n], sequence, &mut sockets).map_err(|e| {
                Error::NetlinkReply {
                    what: what(),
                    detail: e.detail,
                    errno: e.errno,
                }
            })? {
                return Ok(sockets);
            }
        }
    }
}
