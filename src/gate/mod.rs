//! The CI-gate commands. They use the inspection as a library and add
//! leases (see [`crate::lease`]), so parallel suites never get the same
//! address at once, whoever asks.
//!
//! - [`inspecting`]: `scan`, `list` and `wait`, which lease nothing;
//! - [`reap`]: `reap`, and the reaping `run --reap` does ([`pin`]: pinning
//!   and signalling what it found);
//! - [`acquire`]: `acquire`, and the leasing `run` uses;
//! - [`refusal`]: why no address could be leased, as people and `--json` see it;
//! - [`ledger`]: `release` and `leases`;
//! - [`ports`]: `acquire-port` and `release-port`;
//! - [`run`]: `run`, with its linger check and forensic report;
//! - [`state`]: the per-user state directory (quarantine, the agent's socket).

pub mod acquire;
pub mod child;
pub mod forensic;
pub mod inspecting;
pub mod ledger;
pub mod openers;
pub mod pin;
pub mod ports;
pub mod reap;
pub mod refusal;
pub mod report_file;
pub mod run;
pub mod state;

pub use acquire::{acquire, lease, try_acquire};
pub use inspecting::{list, scan, wait};
pub use ledger::{leases, release};
pub use reap::reap_address;
pub use refusal::{Refusal, SkipReason, Skipped, explain};
pub use run::{RunOptions, run};

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

pub use crate::context::{Context, LeaseContext};
use crate::error::Error;
use crate::output::Output;
use crate::report::{AddressReport, ListenerReport, ReasonCode};
use crate::verdict::{describe_owners, group_owners};
use state::Store;

/// At most this many inspections a second while waiting.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// Locks the state directory and reads the state; a repaired file is
/// reported once, as a note.
/// (`dir`: the state directory, opened once by the command.)
fn open(output: &Output, dir: &state::StateDir) -> Result<(Store, state::State), Error> {
    let mut store = Store::lock(dir)?;
    let state = store.load()?;
    if let Some(repaired) = &store.repaired {
        output.note(&format!("sockcheck: {repaired}\n"));
    }
    Ok((store, state))
}

/// The addresses this user's `run`s left quarantined.
fn quarantined(output: &Output, dir: &state::StateDir) -> Result<HashSet<IpAddr>, Error> {
    let (_store, state) = open(output, dir)?;
    Ok(state.quarantine.iter().map(|q| q.address).collect())
}

/// Lifts the quarantine of `addresses` (they were found free).
fn unquarantine(output: &Output, dir: &state::StateDir, addresses: &[IpAddr]) -> Result<(), Error> {
    let (store, mut state) = open(output, dir)?;
    let before = state.quarantine.len();
    state.quarantine.retain(|q| !addresses.contains(&q.address));
    if state.quarantine.len() != before {
        store.save(&state)?;
    }
    Ok(())
}

/// One phrase on why an address is not free: `pid 4242 (node) holds
/// 127.0.0.2:9926`.
pub fn summary(address: &AddressReport) -> String {
    let Some(reason) = address.reasons.first() else {
        return String::new();
    };
    let port = address.ports.iter().find(|p| Some(p.port) == reason.port);
    let listeners = port.map(|p| p.listeners.as_slice()).unwrap_or_default();
    match (reason.code, listeners.first()) {
        (ReasonCode::Listener | ReasonCode::MappedListener | ReasonCode::Wildcard, Some(first)) => {
            let group: Vec<&ListenerReport> = listeners
                .iter()
                .filter(|l| l.local == first.local)
                .collect();
            let (owners, complete) = group_owners(&group);
            // Terse: who was seen. The full report says what was not.
            let complete = complete || owners.iter().any(|o| !o.hidden);
            format!(
                "{} {} {}",
                describe_owners(&owners, complete),
                if owners.len() > 1 { "hold" } else { "holds" },
                first.local
            )
        }
        _ => reason.message.clone(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `30s`, `1.5s`, `2m`.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && d.as_secs().is_multiple_of(60) {
        format!("{}m", d.as_secs() / 60)
    } else {
        format!("{s}s")
    }
}
