//! The dump replies: datagrams parsed into [`DiagSocket`]s, and the
//! kernel's error codes named.

use std::net::SocketAddr;

use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload, Parseable};
use netlink_packet_sock_diag::{
    AF_INET6, SockDiagMessage,
    inet::{InetResponse, nlas::Nla},
};

use super::request::TCPDIAG_GETSOCK;
use super::{DiagSocket, Family, TCP_BOUND_INACTIVE, TCP_CLOSE, TcpState};
use crate::error::Errno;

/// `INET_DIAG_CGROUP_ID`: the cgroup v2 id of the socket's creator. The crate
/// leaves it as a raw attribute.
pub(super) const INET_DIAG_CGROUP_ID: u16 = 21;

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
pub(super) fn error_code(code: i32) -> String {
    match code.checked_neg() {
        Some(errno) if errno > 0 => Errno::from_raw(errno).to_string(),
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
        state: TcpState::from_raw(if header.state == TCP_CLOSE {
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
