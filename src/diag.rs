//! The kernel's view of TCP sockets, through netlink `sock_diag`.
//!
//! One `SOCK_DIAG_BY_FAMILY` dump per (family, port): the kernel applies the
//! request's source port to every table it walks (listening hash, established
//! hash with TIME_WAIT, and the bind hash for bound-but-inactive sockets), so
//! each dump returns only the sockets on that port, however many thousands of
//! connections the machine has.

use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    AF_INET, AF_INET6, IPPROTO_TCP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{
    Socket as NetlinkSocket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG,
};
use serde::Serialize;

use crate::error::{Error, errno_name};

/// `INET_DIAG_CGROUP_ID`: the cgroup v2 id of the socket's creator. The crate
/// leaves it as a raw attribute.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// `TCP_BOUND_INACTIVE` (Linux 6.7+): a pseudo-state that asks inet_diag to
/// also walk the bind hash, which holds sockets that are bound but neither
/// listening nor connected.
pub const TCP_BOUND_INACTIVE: u8 = 13;
/// `TCP_LISTEN`.
pub const TCP_LISTEN: u8 = 10;
/// `TCP_CLOSE`.
const TCP_CLOSE: u8 = 7;

/// Address family of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    fn raw(self) -> u8 {
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

/// A TCP state as the kernel numbers it (`include/net/tcp_states.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TcpState(pub u8);

impl TcpState {
    /// The name ss(8) prints for this state.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "ESTABLISHED",
            2 => "SYN_SENT",
            3 => "SYN_RECV",
            4 => "FIN_WAIT1",
            5 => "FIN_WAIT2",
            6 => "TIME_WAIT",
            7 => "CLOSE",
            8 => "CLOSE_WAIT",
            9 => "LAST_ACK",
            10 => "LISTEN",
            11 => "CLOSING",
            12 => "NEW_SYN_RECV",
            13 => "BOUND_INACTIVE",
            _ => "UNKNOWN",
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

/// Big enough for any datagram of a dump: the kernel fills at most
/// 32 KiB per datagram for a reader with a large buffer.
const RECV_BUFFER: usize = 64 * 1024;

impl SockDiag {
    pub fn open() -> Result<SockDiag, Error> {
        let mut socket = NetlinkSocket::new(NETLINK_SOCK_DIAG)
            .map_err(|e| Error::netlink("socket(AF_NETLINK, NETLINK_SOCK_DIAG)", e))?;
        socket
            .bind_auto()
            .map_err(|e| Error::netlink("bind(AF_NETLINK)", e))?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(|e| Error::netlink("connect(AF_NETLINK)", e))?;
        Ok(SockDiag {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Every TCP listener of `family` on `port`.
    pub fn listeners(&mut self, family: Family, port: u16) -> Result<Vec<DiagSocket>, Error> {
        self.dump(family, port, 1 << TCP_LISTEN)
    }

    /// Every TCP socket of `family` on local `port` that is not listening:
    /// connected, closing, TIME_WAIT, and bound but inactive.
    pub fn others(&mut self, family: Family, port: u16) -> Result<Vec<DiagSocket>, Error> {
        let all = (1u32 << 12) - 1 - 1; // states 1..=11
        let states = (all & !(1 << TCP_LISTEN)) | (1 << TCP_BOUND_INACTIVE);
        self.dump(family, port, states)
    }

    fn dump(&mut self, family: Family, port: u16, states: u32) -> Result<Vec<DiagSocket>, Error> {
        let what = || format!("sock_diag dump for {} port {port}", family.name());
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;

        let mut socket_id = match family {
            Family::Inet => SocketId::new_v4(),
            Family::Inet6 => SocketId::new_v6(),
        };
        socket_id.source_port = port;
        let request = InetRequest {
            family: family.raw(),
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(states),
            socket_id,
        };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(
            header,
            NetlinkPayload::from(SockDiagMessage::InetRequest(request)),
        );
        message.finalize();
        let mut bytes = vec![0u8; message.buffer_len()];
        message.serialize(&mut bytes);
        self.socket
            .send(&bytes, 0)
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
                });
            }
            if parse_datagram(&self.buffer[..n], sequence, &mut sockets).map_err(|detail| {
                Error::NetlinkReply {
                    what: what(),
                    detail,
                }
            })? {
                return Ok(sockets);
            }
        }
    }
}

/// Parses one datagram of a dump reply into `out`. Returns true at
/// NLMSG_DONE, the only legal end of a dump.
pub fn parse_datagram(
    mut bytes: &[u8],
    sequence: u32,
    out: &mut Vec<DiagSocket>,
) -> Result<bool, String> {
    if bytes.is_empty() {
        return Err("empty datagram before NLMSG_DONE".into());
    }
    while !bytes.is_empty() {
        let buffer = NetlinkBuffer::new_checked(bytes).map_err(|e| format!("bad header: {e}"))?;
        let length = buffer.length() as usize;
        if buffer.sequence_number() != sequence {
            return Err(format!(
                "reply for sequence {} while waiting for {sequence}",
                buffer.sequence_number()
            ));
        }
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&bytes[..length])
            .map_err(|e| format!("cannot parse message: {e}"))?;
        match message.payload {
            NetlinkPayload::Done(done) => {
                if done.code != 0 {
                    return Err(format!("dump ended with {}", errno_name(-done.code)));
                }
                return Ok(true);
            }
            NetlinkPayload::Error(error) => {
                let code = error.raw_code();
                return Err(format!("NLMSG_ERROR {}", errno_name(-code)));
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                out.push(socket_from_response(&response));
            }
            NetlinkPayload::Noop => {}
            other => return Err(format!("unexpected message type {}", other.message_type())),
        }
        let aligned = (length + 3) & !3;
        bytes = bytes.get(aligned..).unwrap_or(&[]);
    }
    Ok(false)
}

fn socket_from_response(response: &InetResponse) -> DiagSocket {
    let header = &response.header;
    let id = &header.socket_id;
    let family = if header.family == AF_INET6 {
        Family::Inet6
    } else {
        Family::Inet
    };
    let mut v6only = None;
    let mut cgroup_id = None;
    for nla in &response.nlas {
        match nla {
            Nla::SkV6Only(value) => v6only = Some(*value),
            Nla::Other(raw) if netlink_packet_core::Nla::kind(raw) == INET_DIAG_CGROUP_ID => {
                let mut value = [0u8; 8];
                if netlink_packet_core::Nla::value_len(raw) == 8 {
                    netlink_packet_core::Nla::emit_value(raw, &mut value);
                    cgroup_id = Some(u64::from_ne_bytes(value));
                }
            }
            _ => {}
        }
    }
    DiagSocket {
        family,
        // A CLOSE socket is in no lookup table but the bind hash, so it can
        // only have come from the TCP_BOUND_INACTIVE walk: name it so.
        state: TcpState(if header.state == TCP_CLOSE {
            TCP_BOUND_INACTIVE
        } else {
            header.state
        }),
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        uid: header.uid,
        inode: u64::from(header.inode),
        cookie: u64::from_ne_bytes(id.cookie),
        recv_queue: header.recv_queue,
        send_queue: header.send_queue,
        v6only,
        cgroup_id,
    }
}
