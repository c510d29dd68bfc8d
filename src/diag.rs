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

#[cfg(test)]
mod tests {
    use super::*;

    /// One AF_INET listener on 127.0.0.2:9926, as the kernel sends it, then
    /// NLMSG_DONE.
    fn listener_datagram(sequence: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        // struct nlmsghdr
        bytes.extend_from_slice(&100u32.to_ne_bytes()); // nlmsg_len: 16 + 72 + 12
        bytes.extend_from_slice(&20u16.to_ne_bytes()); // nlmsg_type: SOCK_DIAG_BY_FAMILY
        bytes.extend_from_slice(&2u16.to_ne_bytes()); // nlmsg_flags: NLM_F_MULTI
        bytes.extend_from_slice(&sequence.to_ne_bytes()); // nlmsg_seq
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        // struct inet_diag_msg
        bytes.extend_from_slice(&[
            0x02, // idiag_family: AF_INET
            0x0a, // idiag_state: TCP_LISTEN
            0x00, // idiag_timer
            0x00, // idiag_retrans
        ]);
        bytes.extend_from_slice(&9926u16.to_be_bytes()); // id.idiag_sport (network order)
        bytes.extend_from_slice(&0u16.to_be_bytes()); // id.idiag_dport
        bytes.extend_from_slice(&[127, 0, 0, 2]); // id.idiag_src (first 4 of 16 bytes)
        bytes.extend_from_slice(&[0; 12]);
        bytes.extend_from_slice(&[0; 16]); // id.idiag_dst
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // id.idiag_if
        bytes.extend_from_slice(&0x1001u32.to_ne_bytes()); // id.idiag_cookie[0]
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // id.idiag_cookie[1]
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // idiag_expires
        bytes.extend_from_slice(&3u32.to_ne_bytes()); // idiag_rqueue: accept queue
        bytes.extend_from_slice(&511u32.to_ne_bytes()); // idiag_wqueue: backlog
        bytes.extend_from_slice(&1000u32.to_ne_bytes()); // idiag_uid
        bytes.extend_from_slice(&12464u32.to_ne_bytes()); // idiag_inode
        // struct nlattr INET_DIAG_CGROUP_ID
        bytes.extend_from_slice(&12u16.to_ne_bytes()); // nla_len
        bytes.extend_from_slice(&21u16.to_ne_bytes()); // nla_type
        bytes.extend_from_slice(&77u64.to_ne_bytes()); // cgroup id
        // NLMSG_DONE
        bytes.extend_from_slice(&20u32.to_ne_bytes()); // nlmsg_len
        bytes.extend_from_slice(&3u16.to_ne_bytes()); // nlmsg_type: NLMSG_DONE
        bytes.extend_from_slice(&2u16.to_ne_bytes()); // nlmsg_flags: NLM_F_MULTI
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&0i32.to_ne_bytes()); // error code
        bytes
    }

    #[test]
    fn parses_a_listener_then_done() {
        let mut out = Vec::new();
        let done = parse_datagram(&listener_datagram(7), 7, &mut out).unwrap();
        assert!(done);
        assert_eq!(
            out,
            vec![DiagSocket {
                family: Family::Inet,
                state: TcpState(TCP_LISTEN),
                local: "127.0.0.2:9926".parse().unwrap(),
                remote: "0.0.0.0:0".parse().unwrap(),
                uid: 1000,
                inode: 12464,
                cookie: 0x1001,
                recv_queue: 3,
                send_queue: 511,
                v6only: None,
                cgroup_id: Some(77),
            }]
        );
    }

    #[test]
    fn a_reply_for_another_request_is_an_error() {
        let mut out = Vec::new();
        let error = parse_datagram(&listener_datagram(7), 8, &mut out).unwrap_err();
        assert!(error.contains("sequence 7"), "{error}");
    }

    #[test]
    fn nlmsg_error_is_an_error_not_an_empty_result() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&36u32.to_ne_bytes()); // nlmsg_len: 16 + 4 + 16
        bytes.extend_from_slice(&2u16.to_ne_bytes()); // nlmsg_type: NLMSG_ERROR
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&5u32.to_ne_bytes()); // nlmsg_seq
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&(-libc::EPERM).to_ne_bytes()); // error
        bytes.extend_from_slice(&[0; 16]); // the request's header
        let mut out = Vec::new();
        let error = parse_datagram(&bytes, 5, &mut out).unwrap_err();
        assert_eq!(error, "NLMSG_ERROR EPERM");
    }

    #[test]
    fn a_truncated_message_is_an_error() {
        let bytes = listener_datagram(1);
        let mut out = Vec::new();
        assert!(parse_datagram(&bytes[..60], 1, &mut out).is_err());
        assert!(parse_datagram(&[], 1, &mut out).is_err());
    }

    #[test]
    fn a_datagram_without_done_asks_for_more() {
        let bytes = listener_datagram(1);
        let mut out = Vec::new();
        assert!(!parse_datagram(&bytes[..100], 1, &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn the_kernel_answers_a_real_dump() {
        let listener = std::net::TcpListener::bind("127.81.0.2:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut diag = SockDiag::open().unwrap();
        let found = diag.listeners(Family::Inet, port).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].local, listener.local_addr().unwrap());
        assert!(found[0].inode > 0);
        // Filtered by port: another port shows nothing of ours.
        let none = diag
            .listeners(Family::Inet, port.wrapping_add(1).max(1))
            .unwrap();
        assert!(
            none.iter()
                .all(|s| s.local != listener.local_addr().unwrap())
        );
    }
}
