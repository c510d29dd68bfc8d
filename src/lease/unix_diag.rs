//! Every lease token of a network namespace in one netlink `sock_diag` dump
//! of `AF_UNIX` sockets (listening or bound), names only.
//!
//! `/proc/net/unix` says the same, but the kernel formats a text line per
//! socket: with 60,000 tokens, reading it costs about 60 ms of system time,
//! against about 15 ms for this dump (measured with `ss -xl`), which is what
//! keeps an acquire over a /16 whose addresses are mostly leased within a
//! few single-address acquires.

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::unix::{ShowFlags, StateFlags, UnixRequest};

use super::token::{PORT_PREFIX, PREFIX, Subject};
use crate::error::Error;

/// `TCP_CLOSE`: a bound stream socket that neither listens nor is
/// connected (a token between its bind and the hand-over).
const TCP_CLOSE: u32 = 7;

/// The addresses whose token is bound or listening, sorted, each once.
pub fn tokens() -> Result<Vec<IpAddr>, Error> {
    Ok(subjects()?
        .into_iter()
        .filter_map(|s| match s {
            Subject::Address(address) => Some(address),
            Subject::Port(_) => None,
        })
        .collect())
}

/// Every lease of the namespace (address and port tokens, bound or
/// listening), sorted, each once.
pub fn subjects() -> Result<Vec<Subject>, Error> {
    let socket = crate::diag::netlink_socket()?;
    let request = UnixRequest {
        state_flags: StateFlags::LISTEN | StateFlags::from_bits_retain(1 << TCP_CLOSE),
        inode: 0,
        show_flags: ShowFlags::NAME,
        cookie: [0xff; 8],
    };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(SockDiagMessage::UnixRequest(request)),
    );
    message.finalize();
    let mut bytes = vec![0u8; message.buffer_len()];
    message.serialize(&mut bytes);
    let what = || "sock_diag dump of AF_UNIX sockets".to_string();
    socket
        .send(&bytes, 0)
        .map_err(|e| Error::netlink_for(what(), "send", e))?;
    let mut found = Vec::new();
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        buffer.clear();
        let n = socket
            .recv(&mut buffer, libc::MSG_TRUNC)
            .map_err(|e| Error::netlink_for(what(), "recv", e))?;
        if n > buffer.len() {
            return Err(reply_error(what(), "a datagram was truncated".into()));
        }
        if datagram(&buffer[..n], &mut found).map_err(|e| reply_error(what(), e))? {
            break;
        }
    }
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

fn reply_error(what: String, detail: String) -> Error {
    Error::NetlinkReply {
        what,
        detail,
        errno: None,
    }
}

/// `NLMSG_DONE`, `NLMSG_ERROR` and `SOCK_DIAG_BY_FAMILY`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `UNIX_DIAG_NAME`, the attribute holding the bound name.
const UNIX_DIAG_NAME: u16 = 0;
/// `struct nlmsghdr` and `struct unix_diag_msg`.
const HEADER: usize = 16;
const MESSAGE: usize = 16;

/// The tokens in one datagram of the dump; true at its end.
///
/// Read by hand rather than through `NetlinkMessage::deserialize`: a dump
/// of 60,000 sockets spent as long in the generic parser as in the kernel.
/// Only the name attribute is looked at, and every length is checked
/// against what is left before it is used.
fn datagram(mut bytes: &[u8], found: &mut Vec<Subject>) -> Result<bool, String> {
    while bytes.len() >= HEADER {
        let length = u32::from_ne_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(bytes[4..6].try_into().expect("2 bytes"));
        if length < HEADER || length > bytes.len() {
            return Err(format!("a message of {length} bytes in {}", bytes.len()));
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = bytes
                    .get(HEADER..HEADER + 4)
                    .map_or(0, |c| i32::from_ne_bytes(c.try_into().expect("4 bytes")));
                return Err(format!("NLMSG_ERROR {code}"));
            }
            SOCK_DIAG_BY_FAMILY if length >= HEADER + MESSAGE => {
                if let Some(subject) = name(&bytes[HEADER + MESSAGE..length]).and_then(subject) {
                    found.push(subject);
                }
            }
            _ => {}
        }
        bytes = bytes.get((length + 3) & !3..).unwrap_or(&[]);
    }
    Ok(false)
}

/// The lease a token's name is for, if it is a token's name (its padding
/// NULs cut).
fn subject(name: &[u8]) -> Option<Subject> {
    let text = |rest: &[u8]| {
        let cut = rest.split(|&b| b == 0).next().unwrap_or(rest);
        std::str::from_utf8(cut).ok().map(str::to_owned)
    };
    if let Some(rest) = name.strip_prefix(PREFIX.as_bytes()) {
        return text(rest)?.parse().ok().map(Subject::Address);
    }
    let rest = name.strip_prefix(PORT_PREFIX.as_bytes())?;
    text(rest)?.parse().ok().map(Subject::Port)
}

/// The abstract name in a message's attributes, without its leading NUL.
fn name(mut attributes: &[u8]) -> Option<&[u8]> {
    while attributes.len() >= 4 {
        let length = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]) & 0x3fff;
        if length < 4 || length > attributes.len() {
            return None;
        }
        if kind == UNIX_DIAG_NAME {
            return attributes[4..length].strip_prefix(&[0]);
        }
        attributes = attributes.get((length + 3) & !3..).unwrap_or(&[]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, name: &[u8]) -> Vec<u8> {
        let mut attribute = Vec::new();
        attribute.extend_from_slice(&((4 + name.len()) as u16).to_ne_bytes());
        attribute.extend_from_slice(&UNIX_DIAG_NAME.to_ne_bytes());
        attribute.extend_from_slice(name);
        while attribute.len() % 4 != 0 {
            attribute.push(0);
        }
        let length = HEADER + MESSAGE + attribute.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(length as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&[0; 10]);
        bytes.extend_from_slice(&[0; MESSAGE]);
        bytes.extend_from_slice(&attribute);
        bytes
    }

    #[test]
    fn tokens_are_read_from_their_names_and_nothing_else() {
        let mut bytes = message(SOCK_DIAG_BY_FAMILY, b"\0sockcheck/v1/lease/127.0.0.2");
        bytes.extend(message(SOCK_DIAG_BY_FAMILY, b"\0sockcheck/v1/lease/::1"));
        bytes.extend(message(SOCK_DIAG_BY_FAMILY, b"\0other/127.0.0.3"));
        bytes.extend(message(
            SOCK_DIAG_BY_FAMILY,
            b"/run/sockcheck/v1/lease/127.0.0.4\0",
        ));
        bytes.extend(message(
            SOCK_DIAG_BY_FAMILY,
            b"\0sockcheck/v1/lease/nonsense",
        ));
        bytes.extend(message(
            SOCK_DIAG_BY_FAMILY,
            b"\0sockcheck/v1/port/20001\0\0",
        ));
        let mut found = Vec::new();
        assert!(!datagram(&bytes, &mut found).unwrap());
        assert_eq!(
            found,
            [
                Subject::Address("127.0.0.2".parse().unwrap()),
                Subject::Address("::1".parse().unwrap()),
                Subject::Port(20001),
            ]
        );
        let mut done = message(NLMSG_DONE, b"");
        done.truncate(HEADER);
        done[..4].copy_from_slice(&(HEADER as u32).to_ne_bytes());
        assert!(datagram(&done, &mut found).unwrap());
    }

    #[test]
    fn a_length_past_the_end_is_an_error_not_a_read() {
        let mut bytes = message(SOCK_DIAG_BY_FAMILY, b"\0sockcheck/v1/lease/127.0.0.2");
        bytes[..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(datagram(&bytes, &mut Vec::new()).is_err());
        let mut bytes = message(SOCK_DIAG_BY_FAMILY, b"\0sockcheck/v1/lease/127.0.0.2");
        bytes[HEADER + MESSAGE..HEADER + MESSAGE + 2].copy_from_slice(&200u16.to_ne_bytes());
        let mut found = Vec::new();
        assert!(!datagram(&bytes, &mut found).unwrap());
        assert!(found.is_empty());
    }

    #[test]
    fn this_namespace_lists_a_token_bound_here() {
        let address: IpAddr = "127.94.200.1".parse().unwrap();
        let token = super::super::Token::claim(address).unwrap().expect("free");
        assert!(tokens().unwrap().contains(&address));
        drop(token);
        assert!(!tokens().unwrap().contains(&address));
    }
}
