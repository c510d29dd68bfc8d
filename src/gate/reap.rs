//! `sockcheck reap ADDR`, and the reaping `run --reap` does: SIGTERM to the
//! processes an inspection found holding an address, then SIGKILL after a
//! grace period to those still alive.
//!
//! sockcheck signals only what it inspected. Right after the inspection,
//! each holder is pinned: a pidfd is opened and the process behind it must
//! have the start time the inspection read ([`pin`]), so a pid given to
//! another process meanwhile is never opened. Just before each signal
//! (SIGTERM, and SIGKILL after the grace period) the pidfd must show the
//! process alive and its fd table must still hold one of the sockets the
//! inspection found ([`confirm`]); otherwise it is `gone` or `no longer
//! holds it`, and nothing is sent. sockcheck never signals pid 1, itself,
//! or one of its ancestors (the shell or CI runner that started it), and
//! says so.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::Context;
pub use super::pin::{Found, Pinned, Pins, pin, protected, reap, signal};
use crate::document::Document;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect;
use crate::report::{AddressReport, Verdict};

/// What was done to one process, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Reaped {
    pub pid: u32,
    pub action: Action,
    pub exited: bool,
}

impl Reaped {
    pub(super) fn new(pid: u32, action: Action, exited: bool) -> Reaped {
        Reaped {
            pid,
            action,
            exited,
        }
    }
}

/// What reap did to a process, or why it did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Action {
    /// SIGTERM was sent, and it exited within the grace period.
    #[serde(rename = "SIGTERM")]
    Sigterm,
    /// SIGTERM, then SIGKILL after the grace period.
    #[serde(rename = "SIGTERM, then SIGKILL")]
    SigtermThenSigkill,
    /// SIGTERM; after the grace period it was still alive but no longer
    /// held the sockets, so no SIGKILL was sent.
    #[serde(rename = "SIGTERM, then it no longer held it")]
    SigtermThenReleased,
    /// Nothing sent: the process the inspection found had exited (its pid
    /// may be another process's now).
    #[serde(rename = "gone")]
    Gone,
    /// Nothing sent: the process lives on but holds none of the sockets
    /// the inspection found.
    #[serde(rename = "no longer holds it")]
    NoLongerHolds,
    /// Nothing sent: another user's process (or its fd table cannot be
    /// read, so that it still holds the socket cannot be told).
    #[serde(rename = "not permitted")]
    NotPermitted,
    /// `--dry-run`: it would be signalled.
    #[serde(rename = "would signal")]
    WouldSignal,
    /// Nothing sent: pid 1.
    #[serde(rename = "skipped: pid 1 (init) is never signalled")]
    SkippedInit,
    /// Nothing sent: sockcheck itself.
    #[serde(rename = "skipped: sockcheck itself")]
    SkippedSelf,
    /// Nothing sent: the shell or runner that started sockcheck, or one
    /// of its ancestors.
    #[serde(rename = "skipped: an ancestor of sockcheck (the shell or runner that started it)")]
    SkippedAncestor,
}

impl Action {
    /// As JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Sigterm => "SIGTERM",
            Action::SigtermThenSigkill => "SIGTERM, then SIGKILL",
            Action::SigtermThenReleased => "SIGTERM, then it no longer held it",
            Action::Gone => "gone",
            Action::NoLongerHolds => "no longer holds it",
            Action::NotPermitted => "not permitted",
            Action::WouldSignal => "would signal",
            Action::SkippedInit => "skipped: pid 1 (init) is never signalled",
            Action::SkippedSelf => "skipped: sockcheck itself",
            Action::SkippedAncestor => {
                "skipped: an ancestor of sockcheck (the shell or runner that started it)"
            }
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `sockcheck reap ADDR`: SIGTERM, then SIGKILL after `grace`, to the
/// processes holding listeners that cover ADDR on the ports (never pid 1,
/// sockcheck or its ancestors; another user's only with the privilege),
/// each pinned right after the inspection that found it. Under `--netns`
/// the inspection is of that namespace's sockets, so only their holders
/// are signalled. Exits 0 once ADDR is free, 1 while something still holds
/// it.
pub fn reap_address(
    ctx: &Context,
    address: IpAddr,
    grace: Duration,
    dry_run: bool,
) -> Result<ExitStatus, Error> {
    let view = inspect::kernel_view(&ctx.ports)?;
    let before = inspect::inspect_view(&ctx.query(vec![address], true), &view)
        .addresses
        .remove(0);
    let (found, hidden) = holders(&before);
    let pins = pin(&found);
    let comms = before
        .ports
        .iter()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.owners)
        .filter_map(|o| Some((o.pid?, o.process.as_ref()?.comm.escaped())))
        .collect();
    let reaped = signal(pins, grace, dry_run);
    let after = if dry_run {
        before.verdict
    } else {
        let view = inspect::kernel_view(&ctx.ports)?;
        ctx.one(&view, address, false).verdict
    };
    let report = ReapReport {
        schema: ReapReport::SCHEMA,
        address,
        ports: ctx.ports.clone(),
        dry_run,
        before: before.verdict,
        after,
        reaped,
        hidden,
        comms,
    };
    ctx.output.document(&report)?;
    Ok(if after == Verdict::Free {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

/// What `sockcheck reap --json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReapReport {
    pub schema: u32,
    pub address: IpAddr,
    pub ports: Vec<u16>,
    pub dry_run: bool,
    /// The verdict before and after.
    pub before: Verdict,
    pub after: Verdict,
    pub reaped: Vec<Reaped>,
    /// The uids of holders that could not be read (another user's
    /// processes): not permitted, so not signalled.
    pub hidden: Vec<u32>,
    /// The holders' names, for people.
    #[serde(skip)]
    pub comms: BTreeMap<u32, String>,
}

/// The processes holding listeners that cover the address (itself,
/// `::ffff:ADDR`, or a wildcard), each with the inodes it holds and its
/// start time; and the uids of hidden holders.
pub fn holders(address: &AddressReport) -> (Vec<Found>, Vec<u32>) {
    let mut found: BTreeMap<u32, Found> = BTreeMap::new();
    let mut hidden = Vec::new();
    for listener in address.ports.iter().flat_map(|p| &p.listeners) {
        for owner in &listener.owners {
            match (owner.pid, owner.uid) {
                (Some(pid), _) => found
                    .entry(pid)
                    .or_insert_with(|| Found {
                        pid,
                        start_ticks: owner.process.as_ref().and_then(|p| p.start_ticks),
                        inodes: Vec::new(),
                    })
                    .inodes
                    .push(listener.inode),
                (None, uid) => hidden.push(uid.unwrap_or(0)),
            }
        }
    }
    hidden.sort_unstable();
    hidden.dedup();
    (found.into_values().collect(), hidden)
}

/// The human lines of a reap: one per process, then the outcome.
pub fn render(report: &ReapReport) -> String {
    let mut text = String::new();
    for r in &report.reaped {
        let comm = report
            .comms
            .get(&r.pid)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let fate = match (r.exited, r.action) {
            (true, Action::Gone) => "",
            (true, _) => ", exited",
            (false, Action::SigtermThenSigkill | Action::SigtermThenReleased) => ", still alive",
            _ => "",
        };
        text.push_str(&format!("pid {}{comm}: {}{fate}\n", r.pid, r.action));
    }
    for uid in &report.hidden {
        text.push_str(&format!(
            "a holder of uid {uid}, hidden by permissions: not permitted, not signalled\n"
        ));
    }
    text.push_str(&format!(
        "{} was {}{}\n",
        report.address,
        report.before.as_str(),
        if report.dry_run {
            " (dry run: nothing was signalled)".to_string()
        } else {
            format!("; now {}", report.after.as_str())
        }
    ));
    text
}
