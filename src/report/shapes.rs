//! Snapshot tests of the human report for the shapes people read most: a
//! lingering worker, a wildcard listener, a hidden owner (the `list`,
//! refused `acquire` and `leases` snapshots are next to their renderers in
//! `src/gate/`, and use the machine built here).
//!
//! The kernel's view is constructed (as sock_diag would show it); the
//! owners are read from a fixture /proc tree through [`ProcRoot`] by the
//! real scan; the report is assembled and rendered by the real code, with
//! colour off. The fixture's pids, uids and clock are fixed, so the text is
//! the same on every machine, as root and as nobody. A change in the
//! output shows as a diff against `src/report/snapshots/` (review it with
//! `cargo insta review`, or accept it with `INSTA_UPDATE=always`).
//!
//! [`ProcRoot`]: crate::owners::ProcRoot

use std::net::IpAddr;

use crate::diag::TcpState;
use crate::inspect::fixture::{self, KernelBits};
use crate::inspect::{KernelView, Query};
use crate::owners::fixture::{FIXTURE_UID, ProcTree, Process};
use crate::report::Report;
use crate::report::human::{self, Style};

const TIME_WAIT: TcpState = TcpState::TimeWait;

/// Why the fixture's kernel bit is not there: as an ordinary user.
pub(crate) const NO_BPF: &str = "needs CAP_BPF and CAP_PERFMON (or root)";

/// The fixture machine's processes:
/// - pid 1, systemd;
/// - pid 4242, a node worker whose leader exited while threads 4243 and
///   4244 live on with its fd table, in which fds 5 and 6 are two
///   listeners of one SO_REUSEPORT group on 127.0.0.2:9926;
/// - pids 3100 and 3101, nginx's master and worker, both with fd 6, a
///   wildcard listener on 0.0.0.0:9927;
/// - pid 4300, a process of root's, which holds 127.0.0.4:9928 (an
///   ordinary user cannot read its fd table).
pub(crate) fn machine() -> ProcTree {
    let tree = ProcTree::new();
    let mut init = Process::new(1, "systemd", &["/sbin/init", "splash"]);
    init.ppid = 0;
    init.age = 86_390;
    let mut worker = Process::new(4242, "node", &["node", "worker.js", "--port", "9926"])
        .socket(5, 81001)
        .socket(6, 81002);
    worker.state = 'Z';
    worker.threads = vec![4243, 4244];
    worker.age = 725;
    let master =
        Process::new(3100, "nginx", &["nginx: master process /usr/sbin/nginx"]).socket(6, 82001);
    let mut child = Process::new(3101, "nginx", &["nginx: worker process"]).socket(6, 82001);
    child.ppid = 3100;
    tree.add(&init)
        .add(&worker)
        .add(&master)
        .add(&child)
        .add_root_process(4300);
    tree
}

/// What sock_diag shows on ports 9926–9928 of the fixture machine.
pub(crate) fn kernel_view() -> KernelView {
    let nobody = FIXTURE_UID;
    KernelView {
        listeners: vec![
            fixture::listener("127.0.0.2:9926", 81001, nobody),
            fixture::listener("127.0.0.2:9926", 81002, nobody),
            fixture::listener("0.0.0.0:9927", 82001, nobody),
            fixture::listener("127.0.0.4:9928", 83001, 0),
        ],
        others: vec![fixture::socket(
            TIME_WAIT,
            "127.0.0.5:9926",
            "127.0.0.1:51234",
            0,
            0,
        )],
        notes: Vec::new(),
    }
}

/// The kernel's SO_REUSEPORT bits: none, for an ordinary user.
pub(crate) fn unprivileged() -> KernelBits {
    KernelBits {
        bits: Default::default(),
        why_not: NO_BPF,
    }
}

/// The report of `addresses` on `ports` on the fixture machine.
pub(crate) fn report(addresses: &[&str], ports: &[u16], kernel: &KernelBits) -> Report {
    let addresses: Vec<IpAddr> = addresses.iter().map(|a| a.parse().unwrap()).collect();
    inspect(&Query::new(addresses, ports.to_vec()), kernel)
}

/// The inspection of `query` on the fixture machine.
pub(crate) fn inspect(query: &Query, kernel: &KernelBits) -> Report {
    let tree = machine();
    fixture::inspect(query, &kernel_view(), &tree.root(), kernel)
}

/// The report as people read it, without colour.
fn human(report: &Report, verbose: bool) -> String {
    human::render(report, Style { color: false }, verbose)
}

#[test]
fn lingering_worker() {
    let report = report(&["127.0.0.2"], &[9926], &unprivileged());
    insta::assert_snapshot!(human(&report, false));
}

#[test]
fn lingering_worker_verbose() {
    let report = report(&["127.0.0.2"], &[9926], &unprivileged());
    insta::assert_snapshot!(human(&report, true));
}

#[test]
fn wildcard_listener() {
    let root = KernelBits {
        bits: [(82001, false)].into(),
        why_not: NO_BPF,
    };
    let report = report(&["127.0.0.3"], &[9927], &root);
    insta::assert_snapshot!(human(&report, false));
}

#[test]
fn hidden_owner() {
    let report = report(&["127.0.0.4"], &[9928], &unprivileged());
    insta::assert_snapshot!(human(&report, false));
}
