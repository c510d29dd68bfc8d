//! Unit tests of the sock_diag requests and replies, and a real dump.

use super::reply::error_code;
use super::request::{INET_DIAG_BC_JMP, INET_DIAG_BC_S_EQ};
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
            state: TcpState::Listen,
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
        0x14, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x80,
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
        assert!(
            found
                .iter()
                .all(|s| s.inode > 0 || s.state != TcpState::Listen)
        );
    }
}
