//! iter/tcp against real listeners (run as root). Each test owns one
//! loopback address in 127.77.1.0/24 and ports in 40100..40179.
use crate::support;

use std::net::SocketAddr;

use sockcheck::bpf::{KernelListener, tcp_listeners};
use support::sockets::{Opts, inode, ip, listen};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The listeners iter/tcp reports on `port` at `addr`.
fn reported(port: u16, addr: &str) -> Vec<KernelListener> {
    let mut found = tcp_listeners(&[port]).expect("tcp_listeners");
    assert!(
        found.iter().all(|l| l.port == port),
        "port filter leaked: {found:?}"
    );
    found.retain(|l| l.addr == ip(addr));
    found
}

fn reuseport_group_of_two() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    let opts = Opts {
        reuseport: true,
        ..Opts::default()
    };
    let a = listen(sa("127.77.1.1:40101"), opts).unwrap();
    let b = listen(sa("127.77.1.1:40101"), opts).unwrap();
    let found = reported(40101, "127.77.1.1");
    assert_eq!(found.len(), 2, "{found:?}");
    let mut inodes: Vec<u64> = found.iter().map(|l| l.inode).collect();
    inodes.sort();
    let mut want = vec![inode(&a), inode(&b)];
    want.sort();
    assert_eq!(inodes, want);
    for l in &found {
        assert!(l.reuseport, "{l:?}");
        assert_eq!(
            (l.family, l.reuseaddr, l.v6only),
            (libc::AF_INET as u8, 0, false),
            "{l:?}"
        );
        assert_eq!(l.uid, unsafe { libc::geteuid() });
    }
}

fn single_reuseport_listener() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    let fd = listen(
        sa("127.77.1.2:40102"),
        Opts {
            reuseport: true,
            ..Opts::default()
        },
    )
    .unwrap();
    let found = reported(40102, "127.77.1.2");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].reuseport);
    assert_eq!(found[0].inode, inode(&fd));
}

fn plain_and_reuseaddr_listeners() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    let plain = listen(sa("127.77.1.3:40103"), Opts::default()).unwrap();
    let reuseaddr = listen(
        sa("127.77.1.3:40104"),
        Opts {
            reuseaddr: true,
            ..Opts::default()
        },
    )
    .unwrap();
    let found = reported(40103, "127.77.1.3");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0],
        KernelListener {
            family: libc::AF_INET as u8,
            addr: ip("127.77.1.3"),
            port: 40103,
            inode: inode(&plain),
            uid: unsafe { libc::geteuid() },
            reuseport: false,
            reuseaddr: 0,
            v6only: false,
        }
    );
    let found = reported(40104, "127.77.1.3");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].reuseaddr, found[0].reuseport, found[0].inode),
        (1, false, inode(&reuseaddr))
    );
}

fn ipv6_loopback() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    let v6only = listen(
        sa("[::1]:40105"),
        Opts {
            v6only: Some(true),
            reuseport: true,
            ..Opts::default()
        },
    )
    .unwrap();
    let both = listen(
        sa("[::1]:40106"),
        Opts {
            v6only: Some(false),
            ..Opts::default()
        },
    )
    .unwrap();
    let found = reported(40105, "::1");
    assert_eq!(found.len(), 1, "{found:?}");
    let l = &found[0];
    assert_eq!(
        (l.family, l.v6only, l.reuseport, l.inode),
        (libc::AF_INET6 as u8, true, true, inode(&v6only)),
        "{l:?}"
    );
    // Binding a specific (not v4-mapped) IPv6 address makes the kernel set
    // sk_ipv6only whatever IPV6_V6ONLY said (ss shows v6only:1 too).
    let found = reported(40106, "::1");
    assert_eq!(found.len(), 1, "{found:?}");
    let l = &found[0];
    assert_eq!(
        (l.family, l.v6only, l.reuseport, l.inode),
        (libc::AF_INET6 as u8, true, false, inode(&both)),
        "{l:?}"
    );
}

fn dual_stack_wildcard() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    let fd = listen(
        sa("[::]:40107"),
        Opts {
            v6only: Some(false),
            reuseaddr: true,
            ..Opts::default()
        },
    )
    .unwrap();
    let found = reported(40107, "::");
    assert_eq!(found.len(), 1, "{found:?}");
    let l = &found[0];
    assert_eq!(
        (l.family, l.v6only, l.reuseaddr, l.inode),
        (libc::AF_INET6 as u8, false, 1, inode(&fd)),
        "{l:?}"
    );
}

fn port_set_filters_and_empty_set_means_all() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    let a = listen(sa("127.77.1.8:40108"), Opts::default()).unwrap();
    let b = listen(sa("127.77.1.8:40109"), Opts::default()).unwrap();
    let only_a = tcp_listeners(&[40108, 40108, 9]).unwrap();
    assert!(only_a.iter().any(|l| l.inode == inode(&a)));
    assert!(!only_a.iter().any(|l| l.inode == inode(&b)));
    let all = tcp_listeners(&[]).unwrap();
    assert!(all.iter().any(|l| l.inode == inode(&a)) && all.iter().any(|l| l.inode == inode(&b)));
    let too_many: Vec<u16> = (1..=65).collect();
    let err = tcp_listeners(&too_many).unwrap_err();
    assert!(err.to_string().contains("at most 64 ports"), "{err}");
}

fn connections_are_not_listeners() {
    if !support::in_child() && !support::require_bpf("iter/tcp") {
        return;
    }
    // A connection waiting in the accept queue has the same local port and
    // address but is ESTABLISHED: only the listener may come back.
    let fd = listen(sa("127.77.1.9:40110"), Opts::default()).unwrap();
    let client = std::net::TcpStream::connect("127.77.1.9:40110").unwrap();
    let found = reported(40110, "127.77.1.9");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].inode, inode(&fd));
    drop(client);
}

crate::tests![
    reuseport_group_of_two,
    single_reuseport_listener,
    plain_and_reuseaddr_listeners,
    ipv6_loopback,
    dual_stack_wildcard,
    port_set_filters_and_empty_set_means_all,
    connections_are_not_listeners,
];
