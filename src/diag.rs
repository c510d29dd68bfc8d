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
use schemars::JsonSchema;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
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

/// Why a dump reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    /// The errno the kernel answered with (NLMSG_ERROR, or NLMSG_DONE with
    /// an error code), when the code is a negated errno.
    pub errno: Option<i32>,
    /// What was wrong, in words.
    pub detail: String,
}

impl ReplyError {
    /// The kernel's error `code` (a negated errno), described by `detail`.
    fn kernel(code: i32, detail: String) -> ReplyError {
        ReplyError {
            errno: code.checked_neg().filter(|&errno| errno > 0),
            detail,
        }
    }
}

impl From<String> for ReplyError {
    fn from(detail: String) -> ReplyError {
        ReplyError {
            errno: None,
            detail,
        }
    }
}

/// Parses one datagram of a dump reply into `out`. Returns true at
/// NLMSG_DONE, the only legal end of a dump.
pub fn parse_datagram(
    mut bytes: &[u8],
    sequence: u32,
    out: &mut Vec<DiagSocket>,
) -> Result<bool, ReplyError> {
    if bytes.is_empty() {
        return Err(String::from("empty datagram before NLMSG_DONE").into());
    }
    while !bytes.is_empty() {
        let buffer = NetlinkBuffer::new_checked(bytes).map_err(|e| format!("bad header: {e}"))?;
        let length = buffer.length() as usize;
        if buffer.sequence_number() != sequence {
            return Err(format!(
                "reply for sequence {} while waiting for {sequence}",
                buffer.sequence_number()
            )
            .into());
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
                    let detail = format!("dump ended with {}", error_code(done.code));
                    return Err(ReplyError::kernel(done.code, detail));
                }
                return Ok(true);
            }
            NetlinkPayload::Error(error) => {
                let code = error.raw_code();
                return Err(ReplyError::kernel(
                    code,
                    format!("NLMSG_ERROR {}", error_code(code)),
                ));
            }
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                out.push(socket_from_response(&response));
            }
            NetlinkPayload::Noop => {}
            other => {
                return Err(format!("unexpected message type {}", other.message_type()).into());
            }
        }
        let aligned = (length + 3) & !3;
        bytes = bytes.get(aligned..).unwrap_or(&[]);
    }
    Ok(false)
}

/// The errno a netlink error code (a negated errno) stands for: `EPERM`,
/// `errno 200`. The code comes from outside, so it is negated with a check:
/// `i32::MIN` has no negation, and a code that is not negative is no errno.
fn error_code(code: i32) -> String {
    match code.checked_neg() {
        Some(errno) if errno > 0 && errno_name(errno) != "errno" => errno_name(errno).to_string(),
        Some(errno) if errno > 0 => format!("errno {errno}"),
        _ => format!("error code {code}, which is no negated errno"),
    }
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
        assert!(error.detail.contains("sequence 7"), "{error:?}");
        assert_eq!(error.errno, None);
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
        assert_eq!(error.detail, "NLMSG_ERROR EPERM");
        assert_eq!(error.errno, Some(libc::EPERM));
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
    fn an_error_code_of_i32_min_is_reported_not_negated() {
        // Issue 9: NLMSG_DONE (type 3, NLM_F_MULTI, sequence 7) whose error
        // code is 0x80000000, which `-code` cannot negate.
        let bytes = [
            0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x80,
        ];
        let mut out = Vec::new();
        let error = parse_datagram(&bytes, 7, &mut out).unwrap_err();
        assert_eq!(
            error.detail,
            "dump ended with error code -2147483648, which is no negated errno"
        );
        assert_eq!(error.errno, None);
        assert!(out.is_empty());
        // The same code in NLMSG_ERROR.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&36u32.to_ne_bytes());
        bytes.extend_from_slice(&2u16.to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes());
        bytes.extend_from_slice(&7u32.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&i32::MIN.to_ne_bytes());
        bytes.extend_from_slice(&[0; 16]);
        let error = parse_datagram(&bytes, 7, &mut out).unwrap_err();
        assert_eq!(
            error.detail,
            "NLMSG_ERROR error code -2147483648, which is no negated errno"
        );
        assert_eq!(error.errno, None);
    }

    #[test]
    fn error_codes_name_the_errno_or_say_they_are_none() {
        assert_eq!(error_code(-libc::EPERM), "EPERM");
        assert_eq!(error_code(-200), "errno 200");
        assert_eq!(error_code(0), "error code 0, which is no negated errno");
        assert_eq!(error_code(5), "error code 5, which is no negated errno");
        assert_eq!(
            error_code(i32::MAX),
            "error code 2147483647, which is no negated errno"
        );
        assert_eq!(error_code(-i32::MAX), "errno 2147483647");
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

/// A property test of [`parse_datagram`], the parser of what the kernel
/// (or anything that can send to our netlink socket) hands us: valid dumps
/// built field by field, the same with mutations (length fields, truncation,
/// huge lengths, error codes including `i32::MIN`, bad types and families),
/// and random bytes. Fixed seeds, so a failure reproduces; the failing
/// datagram is printed in hex.
#[cfg(test)]
mod property {
    use super::*;
    use crate::text::{SplitMix64, is_hidden};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const SEQUENCE: u32 = 0x5eed;
    /// A message that yields a socket is at least a header and an
    /// inet_diag_msg long.
    const SOCKET_MESSAGE_MIN: usize = 16 + 72;

    /// A datagram and what parsing it must give, with the offsets a
    /// mutation aims at.
    struct Case {
        bytes: Vec<u8>,
        sockets: Vec<DiagSocket>,
        result: Result<bool, String>,
        /// Start of every netlink message.
        messages: Vec<usize>,
        /// Start of every attribute.
        attributes: Vec<usize>,
        /// Offset of the error code of the final NLMSG_DONE/NLMSG_ERROR.
        code: Option<usize>,
    }

    fn header(bytes: &mut Vec<u8>, length: u32, kind: u16, sequence: u32) {
        bytes.extend_from_slice(&length.to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
    }

    fn align(bytes: &mut Vec<u8>) {
        while !bytes.len().is_multiple_of(4) {
            bytes.push(0);
        }
    }

    /// One inet_diag_msg with attributes, as SOCK_DIAG_BY_FAMILY (20) or
    /// the legacy TCPDIAG_GETSOCK (18) reply.
    fn socket_message(rng: &mut SplitMix64, case: &mut Case) {
        let start = case.bytes.len();
        case.messages.push(start);
        let mut bytes = Vec::new();
        let kind = if rng.one_in(3) { TCPDIAG_GETSOCK } else { 20 };
        header(&mut bytes, 0, kind, SEQUENCE);
        let v6 = rng.one_in(2);
        let state = 1 + rng.below(13) as u8;
        let (sport, dport) = (rng.next() as u16, rng.next() as u16);
        let src: [u8; 16] = rng.bytes(16).try_into().unwrap();
        let dst: [u8; 16] = rng.bytes(16).try_into().unwrap();
        let cookie = rng.next();
        let (rqueue, wqueue, uid, inode) = (
            rng.next() as u32,
            rng.next() as u32,
            rng.next() as u32,
            rng.next() as u32,
        );
        bytes.extend_from_slice(&[
            if v6 { AF_INET6 } else { AF_INET },
            state,
            rng.next() as u8, // idiag_timer
            rng.next() as u8, // idiag_retrans
        ]);
        bytes.extend_from_slice(&sport.to_be_bytes());
        bytes.extend_from_slice(&dport.to_be_bytes());
        bytes.extend_from_slice(&src);
        bytes.extend_from_slice(&dst);
        bytes.extend_from_slice(&(rng.next() as u32).to_ne_bytes()); // idiag_if
        bytes.extend_from_slice(&cookie.to_ne_bytes());
        bytes.extend_from_slice(&(rng.next() as u32).to_ne_bytes()); // idiag_expires
        bytes.extend_from_slice(&rqueue.to_ne_bytes());
        bytes.extend_from_slice(&wqueue.to_ne_bytes());
        bytes.extend_from_slice(&uid.to_ne_bytes());
        bytes.extend_from_slice(&inode.to_ne_bytes());
        let (v6only, cgroup_id) = attributes(rng, case, start, &mut bytes);
        let length = bytes.len() as u32;
        bytes[..4].copy_from_slice(&length.to_ne_bytes());
        case.bytes.extend_from_slice(&bytes);
        let address = |raw: [u8; 16]| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(raw))
            } else {
                IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
            }
        };
        case.sockets.push(DiagSocket {
            family: if v6 { Family::Inet6 } else { Family::Inet },
            state: TcpState(if state == TCP_CLOSE {
                TCP_BOUND_INACTIVE
            } else {
                state
            }),
            local: SocketAddr::new(address(src), sport),
            remote: SocketAddr::new(address(dst), dport),
            uid,
            inode: u64::from(inode),
            cookie,
            recv_queue: rqueue,
            send_queue: wqueue,
            v6only,
            cgroup_id,
        });
    }

    /// Zero to four rtattrs after an inet_diag_msg (`bytes`, the message so
    /// far, starts at `start` in the datagram): INET_DIAG_SKV6ONLY,
    /// INET_DIAG_CGROUP_ID, INET_DIAG_MARK, INET_DIAG_TOS or kinds the crate
    /// does not know, each padded to 4 bytes. Returns the v6only flag and
    /// the cgroup id the parser must report.
    fn attributes(
        rng: &mut SplitMix64,
        case: &mut Case,
        start: usize,
        bytes: &mut Vec<u8>,
    ) -> (Option<bool>, Option<u64>) {
        let mut v6only = None;
        let mut cgroup_id = None;
        for _ in 0..rng.below(5) {
            case.attributes.push(start + bytes.len());
            let (kind, value): (u16, Vec<u8>) = match rng.below(5) {
                0 => {
                    let on = rng.one_in(2);
                    v6only = Some(on);
                    (11, vec![u8::from(on)]) // INET_DIAG_SKV6ONLY
                }
                1 => {
                    let id = rng.next();
                    cgroup_id = Some(id);
                    (INET_DIAG_CGROUP_ID, id.to_ne_bytes().to_vec())
                }
                2 => (15, rng.bytes(4)), // INET_DIAG_MARK
                3 => (5, rng.bytes(1)),  // INET_DIAG_TOS
                _ => {
                    // Kinds the crate does not know.
                    let n = rng.below(13) as usize;
                    (22 + rng.below(20) as u16, rng.bytes(n))
                }
            };
            bytes.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(&value);
            align(bytes);
        }
        (v6only, cgroup_id)
    }

    fn random_code(rng: &mut SplitMix64) -> i32 {
        let random = rng.next() as i32;
        *rng.pick(&[
            i32::MIN,
            i32::MIN + 1,
            i32::MAX,
            -1,
            0,
            1,
            -libc::EPERM,
            -libc::ENOBUFS,
            -4096,
            random,
        ])
    }

    /// A valid reply: sockets and no-ops, then NLMSG_DONE, NLMSG_ERROR or
    /// nothing (more datagrams follow).
    fn valid(rng: &mut SplitMix64) -> Case {
        let mut case = Case {
            bytes: Vec::new(),
            sockets: Vec::new(),
            result: Ok(false),
            messages: Vec::new(),
            attributes: Vec::new(),
            code: None,
        };
        for _ in 0..rng.below(6) {
            if rng.one_in(8) {
                case.messages.push(case.bytes.len());
                header(&mut case.bytes, 16, 1, SEQUENCE); // NLMSG_NOOP
            } else {
                socket_message(rng, &mut case);
            }
        }
        match rng.below(4) {
            0 | 1 => {
                let code = if rng.one_in(2) { 0 } else { random_code(rng) };
                case.messages.push(case.bytes.len());
                header(&mut case.bytes, 20, 3, SEQUENCE); // NLMSG_DONE
                case.code = Some(case.bytes.len());
                case.bytes.extend_from_slice(&code.to_ne_bytes());
                case.result = if code == 0 {
                    Ok(true)
                } else {
                    Err(format!("dump ended with {}", error_code(code)))
                };
            }
            2 => {
                let code = random_code(rng);
                case.messages.push(case.bytes.len());
                header(&mut case.bytes, 36, 2, SEQUENCE); // NLMSG_ERROR
                case.code = Some(case.bytes.len());
                case.bytes.extend_from_slice(&code.to_ne_bytes());
                case.bytes.extend_from_slice(&[0; 16]);
                case.result = Err(format!("NLMSG_ERROR {}", error_code(code)));
            }
            _ if case.bytes.is_empty() => {
                case.result = Err("empty datagram before NLMSG_DONE".into());
            }
            _ => {}
        }
        case
    }

    /// A valid reply with one to three things broken.
    fn mutated(rng: &mut SplitMix64) -> Vec<u8> {
        let case = valid(rng);
        let mut bytes = case.bytes;
        for _ in 0..1 + rng.below(3) {
            match rng.below(8) {
                0 if !case.messages.is_empty() => {
                    break_message_length(rng, &mut bytes, &case.messages);
                }
                1 if !case.attributes.is_empty() => {
                    break_attribute(rng, &mut bytes, &case.attributes);
                }
                2 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len() as u64 + 1) as usize;
                    bytes.truncate(at);
                }
                3 if !case.messages.is_empty() => {
                    break_message_kind(rng, &mut bytes, &case.messages);
                }
                4 => {
                    if let Some(at) = case.code.filter(|at| at + 4 <= bytes.len()) {
                        bytes[at..at + 4].copy_from_slice(&random_code(rng).to_ne_bytes());
                    }
                }
                5 if !case.messages.is_empty() => {
                    // The family byte: neither AF_INET nor AF_INET6.
                    let at = *rng.pick(&case.messages) + 16;
                    if at < bytes.len() {
                        bytes[at] = rng.next() as u8;
                    }
                }
                6 if !bytes.is_empty() => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.next() as u8;
                    }
                }
                _ => {
                    let n = rng.below(64) as usize;
                    bytes.extend(rng.bytes(n));
                }
            }
        }
        bytes
    }

    /// Sets the nlmsg_len of one message (one of the `messages` offsets) to
    /// an edge value: too short for a header or an inet_diag_msg, one off,
    /// huge, or random. A message cut off by an earlier truncation is left.
    fn break_message_length(rng: &mut SplitMix64, bytes: &mut [u8], messages: &[usize]) {
        let at = *rng.pick(messages);
        if at + 4 > bytes.len() {
            return;
        }
        let old = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        let random = rng.next() as u32;
        let length = *rng.pick(&[
            0,
            1,
            15,
            16,
            17,
            19,
            20,
            87,
            88,
            old.wrapping_sub(1),
            old.wrapping_add(1),
            old.wrapping_add(4),
            0x7fff_ffff,
            0x8000_0000,
            u32::MAX,
            u32::MAX - 2,
            random,
        ]);
        bytes[at..at + 4].copy_from_slice(&length.to_ne_bytes());
    }

    /// Sets the rta_len of one attribute (one of the `attributes` offsets)
    /// to an edge value, and one time in three its rta_type to a kind the
    /// crate parses strictly or one with flags set.
    fn break_attribute(rng: &mut SplitMix64, bytes: &mut [u8], attributes: &[usize]) {
        let at = *rng.pick(attributes);
        if at + 4 <= bytes.len() {
            let length = *rng.pick(&[0u16, 1, 2, 3, 4, 5, 7, 8, 12, 0xfff, 0xffff, 0x8000]);
            bytes[at..at + 2].copy_from_slice(&length.to_ne_bytes());
            if rng.one_in(3) {
                // A kind the crate parses strictly, or flags set.
                let kind = *rng.pick(&[1u16, 2, 4, 7, 11, 15, 21, 0x8000 | 11]);
                bytes[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
            }
        }
    }

    /// Sets the nlmsg_type of one message (one of the `messages` offsets) to
    /// NLMSG_NOOP, _ERROR, _DONE or _OVERRUN, a sock_diag type (18, 20), an
    /// unknown one, or random.
    fn break_message_kind(rng: &mut SplitMix64, bytes: &mut [u8], messages: &[usize]) {
        let at = *rng.pick(messages);
        if at + 6 <= bytes.len() {
            let random = rng.next() as u16;
            let kind = *rng.pick(&[0u16, 1, 2, 3, 4, 16, 18, 19, 20, 21, 0xffff, random]);
            bytes[at + 4..at + 6].copy_from_slice(&kind.to_ne_bytes());
        }
    }

    /// Random messages with plausible headers (the right sequence, a common
    /// type, a length near the truth) around random payloads.
    fn structured_random(rng: &mut SplitMix64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let payload = rng.below(160) as usize;
            let random = rng.next() as u16;
            let kind = *rng.pick(&[1u16, 2, 3, 18, 20, 20, 20, random]);
            let length = match rng.below(4) {
                0 => rng.next() as u32,
                1 => (16 + payload as u32)
                    .wrapping_add(rng.below(9) as u32)
                    .wrapping_sub(4),
                _ => 16 + payload as u32,
            };
            header(&mut bytes, length, kind, SEQUENCE);
            let at = bytes.len();
            bytes.extend(rng.bytes(payload));
            if (kind == 20 || kind == 18)
                && let Some(family) = bytes.get_mut(at)
            {
                *family = *rng.pick(&[AF_INET, AF_INET6, 1, 0]);
            }
            align(&mut bytes);
        }
        bytes
    }

    /// Parses one datagram; a panic fails the test with the datagram.
    fn parse(bytes: &[u8], out: &mut Vec<DiagSocket>) -> Result<bool, String> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            parse_datagram(bytes, SEQUENCE, out).map_err(|e| e.detail)
        })) {
            Ok(result) => result,
            Err(_) => panic!("parse_datagram panicked on {}", hex(bytes)),
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x} ")).collect()
    }

    /// Whatever the input: no panic, an error is one sane line, and every
    /// socket came from a message long enough to hold one.
    fn check_sane(bytes: &[u8], result: &Result<bool, String>, out: &[DiagSocket]) {
        if let Err(error) = result {
            assert!(
                !error.is_empty() && error.len() < 1024 && !error.chars().any(is_hidden),
                "bad error {error:?} for {}",
                hex(bytes)
            );
        }
        assert!(
            out.len() * SOCKET_MESSAGE_MIN <= bytes.len(),
            "{} sockets from {} bytes: {}",
            out.len(),
            bytes.len(),
            hex(bytes)
        );
    }

    const CASES: u64 = 100_000;

    #[test]
    fn valid_replies_parse_to_what_was_built() {
        let mut rng = SplitMix64(0x50c7_d1a6_0000_0001);
        let mut sockets = 0;
        for _ in 0..CASES {
            let case = valid(&mut rng);
            let mut out = Vec::new();
            let result = parse(&case.bytes, &mut out);
            assert_eq!(result, case.result, "{}", hex(&case.bytes));
            assert_eq!(out, case.sockets, "{}", hex(&case.bytes));
            check_sane(&case.bytes, &result, &out);
            sockets += out.len();
        }
        assert!(sockets as u64 > CASES, "too few sockets: {sockets}");
    }

    #[test]
    fn mutated_replies_never_panic_and_fail_sanely() {
        let mut rng = SplitMix64(0x50c7_d1a6_0000_0002);
        let (mut ok, mut errors) = (0u64, 0u64);
        for _ in 0..2 * CASES {
            let bytes = mutated(&mut rng);
            let mut out = Vec::new();
            let result = parse(&bytes, &mut out);
            check_sane(&bytes, &result, &out);
            if result.is_ok() { ok += 1 } else { errors += 1 }
        }
        // Both outcomes are exercised, not just the first check.
        assert!(
            ok > CASES / 20 && errors > CASES / 2,
            "ok {ok}, errors {errors}"
        );
    }

    #[test]
    fn random_datagrams_never_panic_and_fail_sanely() {
        let mut rng = SplitMix64(0x50c7_d1a6_0000_0003);
        for i in 0..2 * CASES {
            let bytes = if i % 2 == 0 {
                let n = rng.below(256) as usize;
                let mut bytes = rng.bytes(n);
                // Half of them with the right sequence, to get past it.
                if bytes.len() >= 12 && rng.one_in(2) {
                    bytes[8..12].copy_from_slice(&SEQUENCE.to_ne_bytes());
                }
                bytes
            } else {
                structured_random(&mut rng)
            };
            let mut out = Vec::new();
            let result = parse(&bytes, &mut out);
            check_sane(&bytes, &result, &out);
        }
    }
}
