//! A property test of [`parse_datagram`], the parser of what the kernel
//! (or anything that can send to our netlink socket) hands us: valid dumps
//! built field by field, the same with mutations (length fields, truncation,
//! huge lengths, error codes including `i32::MIN`, bad types and families),
//! and random bytes. Fixed seeds, so a failure reproduces; the failing
//! datagram is printed in hex.

use super::reply::{INET_DIAG_CGROUP_ID, error_code};
use super::request::TCPDIAG_GETSOCK;
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
    let message = Message::random(rng);
    message.emit(rng, &mut bytes);
    let (v6only, cgroup_id) = attributes(rng, case, start, &mut bytes);
    let length = bytes.len() as u32;
    bytes[..4].copy_from_slice(&length.to_ne_bytes());
    case.bytes.extend_from_slice(&bytes);
    case.sockets.push(message.socket(v6only, cgroup_id));
}

/// The fields of a random `struct inet_diag_msg` that parsing keeps.
struct Message {
    v6: bool,
    state: u8,
    sport: u16,
    dport: u16,
    src: [u8; 16],
    dst: [u8; 16],
    cookie: u64,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

impl Message {
    fn random(rng: &mut SplitMix64) -> Message {
        Message {
            v6: rng.one_in(2),
            state: 1 + rng.below(13) as u8,
            sport: rng.next() as u16,
            dport: rng.next() as u16,
            src: rng.bytes(16).try_into().unwrap(),
            dst: rng.bytes(16).try_into().unwrap(),
            cookie: rng.next(),
            rqueue: rng.next() as u32,
            wqueue: rng.next() as u32,
            uid: rng.next() as u32,
            inode: rng.next() as u32,
        }
    }

    /// Appends the message, with random values in the fields parsing
    /// ignores.
    fn emit(&self, rng: &mut SplitMix64, bytes: &mut Vec<u8>) {
        bytes.extend_from_slice(&[
            if self.v6 { AF_INET6 } else { AF_INET },
            self.state,
            rng.next() as u8, // idiag_timer
            rng.next() as u8, // idiag_retrans
        ]);
        bytes.extend_from_slice(&self.sport.to_be_bytes());
        bytes.extend_from_slice(&self.dport.to_be_bytes());
        bytes.extend_from_slice(&self.src);
        bytes.extend_from_slice(&self.dst);
        bytes.extend_from_slice(&(rng.next() as u32).to_ne_bytes()); // idiag_if
        bytes.extend_from_slice(&self.cookie.to_ne_bytes());
        bytes.extend_from_slice(&(rng.next() as u32).to_ne_bytes()); // idiag_expires
        for value in [self.rqueue, self.wqueue, self.uid, self.inode] {
            bytes.extend_from_slice(&value.to_ne_bytes());
        }
    }

    /// The socket parsing the message must give.
    fn socket(&self, v6only: Option<bool>, cgroup_id: Option<u64>) -> DiagSocket {
        let address = |raw: [u8; 16]| {
            if self.v6 {
                IpAddr::V6(Ipv6Addr::from(raw))
            } else {
                IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
            }
        };
        DiagSocket {
            family: if self.v6 { Family::Inet6 } else { Family::Inet },
            state: TcpState::from_raw(if self.state == TCP_CLOSE {
                TCP_BOUND_INACTIVE
            } else {
                self.state
            }),
            local: SocketAddr::new(address(self.src), self.sport),
            remote: SocketAddr::new(address(self.dst), self.dport),
            uid: self.uid,
            inode: u64::from(self.inode),
            cookie: self.cookie,
            recv_queue: self.rqueue,
            send_queue: self.wqueue,
            v6only,
            cgroup_id,
        }
    }
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
