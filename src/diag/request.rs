//! The dump requests: `SOCK_DIAG_BY_FAMILY` and the legacy
//! `TCPDIAG_GETSOCK`, with the ports as a bytecode filter.

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    AF_INET, IPPROTO_TCP, SockDiagMessage,
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};

use super::{Family, TCP_BOUND_INACTIVE};

/// Every TCP state (1..=12) and the `TCP_BOUND_INACTIVE` pseudo-state.
pub(super) const ALL_STATES: u32 = ((1 << 13) - 2) | (1 << TCP_BOUND_INACTIVE);

/// The legacy request type: TCP sockets of both families in one dump.
pub(super) const TCPDIAG_GETSOCK: u16 = 18;

/// `INET_DIAG_REQ_BYTECODE`: a filter program attached to a dump request.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter opcodes (`include/uapi/linux/inet_diag.h`).
pub(super) const INET_DIAG_BC_JMP: u8 = 1;
pub(super) const INET_DIAG_BC_S_EQ: u8 = 11;

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
pub(super) fn request(family: Family, states: u32, sequence: u32, bytecode: &[u8]) -> Vec<u8> {
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
pub(super) fn legacy_request(states: u32, sequence: u32, bytecode: &[u8]) -> Vec<u8> {
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
