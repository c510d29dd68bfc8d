//! The snapshot of a refused `acquire`, as people read it (on stderr),
//! on the fixture machine of [`crate::report::shapes`]. Its snapshot is
//! kept with the gate's others, in `src/gate/snapshots/`.

use super::*;
use crate::lease::token::{Backend, Holder, Info, Owner, Peer};
use crate::owners::fixture::{FIXTURE_UID, NOW};
use crate::report::shapes;

/// The gate's ports: not 9927, where the wildcard would make every
/// address foreign.
const PORTS: [u16; 2] = [9926, 9928];

/// An address of the pool passed over as the inspection of the fixture
/// machine explains it (what [`explain`] does with the kernel's).
fn held(address: &str, verdict: Verdict) -> Skipped {
    let report = shapes::report(&[address], &PORTS, &shapes::unprivileged());
    let inspected = &report.addresses[0];
    let mut skip = Skipped::held(
        inspected.address,
        verdict,
        socket_inodes(inspected),
        &HashSet::new(),
    );
    (skip.pids, skip.hidden) = holder_pids(inspected);
    skip.message = summary(inspected);
    skip
}

/// `acquire 127.0.0.2,127.0.0.4,127.0.0.6 --ports 9926,9928` on the
/// fixture machine: a lingering worker, a hidden owner, and another
/// suite's lease; nothing is free.
#[test]
fn refused_acquire() {
    let leased = "127.0.0.6".parse().unwrap();
    let holder = Holder::Answered {
        peer: Peer {
            pid: 5150,
            uid: FIXTURE_UID,
        },
        info: Info {
            sockcheck_lease: 1,
            address: leased,
            kind: "address".into(),
            backend: Backend::Binary,
            owner: Owner {
                pid: 5100,
                start_ticks: Some(8_000_000),
            },
            holders: Vec::new(),
            exited: Vec::new(),
            uid: FIXTURE_UID,
            acquired: NOW - 95,
            ports: PORTS.to_vec(),
        },
    };
    let mut lease = Skipped::leased(leased, false);
    lease.pids = holder.pids();
    lease.message = holder.describe();
    let skipped = vec![
        held("127.0.0.2", Verdict::Busy),
        held("127.0.0.4", Verdict::Busy),
        lease,
    ];
    let refusal = Refusal {
        hopeless: hopeless(&skipped, false),
        skipped,
    };
    let doc = NotAcquired {
        schema: 1,
        address: None,
        ports: &PORTS,
        state_dir: std::path::Path::new("/run/user/65534/sockcheck"),
        error: refusal_line(3, &refusal, false),
        refusal: &refusal,
    };
    insta::with_settings!({ snapshot_path => "../snapshots" }, {
        insta::assert_snapshot!(doc.render());
    });
}
