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

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    Parseable,
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

/// Every TCP state (1..=12) and the `TCP_BOUND_INACTIVE` pseudo-state.
const ALL_STATES: u32 = ((1 << 13) - 2) | (1 << TCP_BOUND_INACTIVE);

/// The legacy request type: TCP sockets of both families in one dump.
const TCPDIAG_GETSOCK: u16 = 18;

/// `INET_DIAG_REQ_BYTECODE`: a filter program attached to a dump request.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter opcodes (`include/uapi/linux/inet_diag.h`).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_EQ: u8 = 11;

/// A filter program that accepts a socket whose local port is one of
/// `ports`: `sport == p1 || sport == p2 || …`, built as ss(8) builds an OR.
///
/// Each op is `{code, yes, no}`: the kernel moves `yes` bytes on when the
/// op holds and `no` bytes when it does not, and accepts when it lands
/// exactly on the end. `S_EQ` is followed by an op whose `no` holds the
/// port. Between alternatives, a `JMP` (which always takes `no`) skips to
/// the end after a match; a failed `S_EQ` jumps over that `JMP` to the next
/// alternative, and the last one's failure jumps 4 bytes past the end:
/// rejected. The kernel's audit walks the `yes` chain, so every op lies on it.
pub fn port_filter(ports: &[u16]) -> Vec<u8> {
    let op = |code: u8, yes: u8, no: u16| {
        let mut bytes = vec![code, yes];
        bytes.extend_from_slice(&no.to_ne_bytes());
        bytes
    };
    let mut program = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        program.extend(op(INET_DIAG_BC_S_EQ, 8, 12));
        program.extend(op(0, 0, port));
        // k alternatives follow: 12 bytes each, the last without its JMP,
        // so the end is 4 + (12k - 4) bytes from this JMP.
        let k = ports.len() - 1 - i;
        if k > 0 {
            program.extend(op(INET_DIAG_BC_JMP, 4, (12 * k) as u16));
        }
    }
    program
}

/// A `SOCK_DIAG_BY_FAMILY` dump request for TCP sockets of `family` in
/// `states`, with `bytecode` as its filter.
fn request(family: Family, states: u32, sequence: u32, bytecode: &[u8]) -> Vec<u8> {
    let socket_id = match family {
        Family::Inet => SocketId::new_v4(),
        Family::Inet6 => SocketId::new_v6(),
    };
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
    append_bytecode(&mut bytes, bytecode);
    bytes
}

/// A `TCPDIAG_GETSOCK` dump request: `struct inet_diag_req` (the v1
/// request, whose family the kernel ignores for dumps), then the filter.
fn legacy_request(states: u32, sequence: u32, bytecode: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16 + 60 + 4 + bytecode.len());
    // struct nlmsghdr; nlmsg_len is set at the end.
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel's
    // struct inet_diag_req
    bytes.extend_from_slice(&[
        AF_INET, // idiag_family (a dump walks every family)
        0,       // idiag_src_len
        0,       // idiag_dst_len
        0,       // idiag_ext: no extensions
    ]);
    bytes.extend_from_slice(&[0; 48]); // id: no address, port or cookie filter
    bytes.extend_from_slice(&states.to_ne_bytes()); // idiag_states
    bytes.extend_from_slice(&0u32.to_ne_bytes()); // idiag_dbs
    append_bytecode(&mut bytes, bytecode);
    bytes
}

/// Appends the filter as an `INET_DIAG_REQ_BYTECODE` attribute and sets
/// `nlmsg_len`.
fn append_bytecode(bytes: &mut Vec<u8>, bytecode: &[u8]) {
    if !bytecode.is_empty() {
        let attribute_len = 4 + bytecode.len();
        bytes.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
        bytes.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        bytes.extend_from_slice(bytecode);
    }
    let total = bytes.len() as u32;
    bytes[..4].copy_from_slice(&total.to_ne_bytes());
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
        if buffer.message_type() == TCPDIAG_GETSOCK {
            // A legacy reply carries the same struct inet_diag_msg.
            let response = InetResponse::parse(buffer.payload())
                .map_err(|e| format!("cannot parse message: {e}"))?;
            out.push(socket_from_response(&response));
            bytes = bytes.get((length + 3) & !3..).unwrap_or(&[]);
            continue;
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
    fn port_filter_is_an_or_of_port_equalities() {
        // sport == 9925 || sport == 9926
        let mut expected = Vec::new();
        expected.extend([INET_DIAG_BC_S_EQ, 8]);
        expected.extend(12u16.to_ne_bytes()); // no: over the port and the JMP
        expected.extend([0, 0]);
        expected.extend(9925u16.to_ne_bytes());
        expected.extend([INET_DIAG_BC_JMP, 4]);
        expected.extend(12u16.to_ne_bytes()); // no: to the end (accept)
        expected.extend([INET_DIAG_BC_S_EQ, 8]);
        expected.extend(12u16.to_ne_bytes()); // no: 4 past the end (reject)
        expected.extend([0, 0]);
        expected.extend(9926u16.to_ne_bytes());
        assert_eq!(port_filter(&[9925, 9926]), expected);
        assert_eq!(port_filter(&[1, 2, 3]).len(), 12 + 12 + 8);
    }

    #[test]
    fn the_kernel_filters_a_real_dump_by_port() {
        let listeners: Vec<std::net::TcpListener> = (1..=3)
            .map(|i| std::net::TcpListener::bind(format!("127.81.0.{i}:0")).unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let mut diag = SockDiag::open().unwrap();
        // Any subset, in one dump; the legacy dump of both families agrees.
        for wanted in [&ports[..1], &ports[1..], &ports[..]] {
            let found = diag.sockets(Family::Inet, wanted).unwrap();
            let mut both = diag.sockets_both(wanted).unwrap();
            both.retain(|s| s.family == Family::Inet);
            assert_eq!(both, found);
            let mut got: Vec<u16> = found
                .iter()
                .filter(|s| s.local.ip().to_string().starts_with("127.81.0."))
                .map(|s| s.local.port())
                .collect();
            got.sort_unstable();
            let mut want = wanted.to_vec();
            want.sort_unstable();
            assert_eq!(got, want);
            assert!(found.iter().all(|s| wanted.contains(&s.local.port())));
            assert!(found.iter().all(|s| s.inode > 0 || s.state.0 != TCP_LISTEN));
        }
    }
}
