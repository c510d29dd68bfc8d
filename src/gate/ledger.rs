//! `sockcheck release` and `sockcheck leases`: the lease space as it is, read
//! from the kernel (every token of the network namespace, whoever holds it),
//! and this user's quarantine.

use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;

use schemars::JsonSchema;
use serde::Serialize;

use super::Gate;
use super::state::{self, Quarantine};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::lease::token::{self, Backend, Holder, Owner, Released as Outcome, Subject};
use crate::report::Verdict;

/// `sockcheck release ADDR`: asks the holder of the token to end the
/// lease. A lease of another uid, or of the npm fallback, is not released
/// (exit 1, saying whose it is).
pub fn release(gate: &Gate, address: IpAddr) -> Result<ExitStatus, Error> {
    // Our own agent's lease ends through its socket; any other is asked on
    // its token, which says whose it is.
    let dir = crate::lease::Dir::open(&gate.state_dir)?;
    let outcome = if crate::lease::agent::release(&dir, address)? {
        Outcome::Released
    } else {
        token::release(address)?
    };
    let released = outcome == Outcome::Released;
    if gate.output.json {
        gate.output.print(&crate::output::json(&Released {
            schema: 1,
            address,
            released,
            error: match &outcome {
                Outcome::Released => None,
                Outcome::NotLeased => Some("not leased".into()),
                Outcome::Refused(why) => Some(why.clone()),
            },
        }))?;
    }
    match outcome {
        Outcome::Released => Ok(ExitStatus::Free),
        Outcome::NotLeased => {
            gate.output
                .note(&format!("sockcheck: {address} is not leased\n"));
            Ok(ExitStatus::NotFree)
        }
        Outcome::Refused(why) => {
            gate.output
                .note(&format!("sockcheck: {address} was not released: {why}\n"));
            Ok(ExitStatus::NotFree)
        }
    }
}

/// What `release --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Released {
    schema: u32,
    address: IpAddr,
    /// False when the address was not leased, or its lease is not ours to
    /// end (exit status 1).
    released: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A lease's owner, as `acquire` and `leases` print it.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct LeaseOwner {
    pub pid: u32,
    /// `starttime` from /proc/PID/stat; null for an npm fallback lease.
    pub start_ticks: Option<u64>,
    /// Whether the lease's holder still keeps it for this process (it
    /// ends when the owner exits).
    pub alive: bool,
}

impl LeaseOwner {
    /// A lease's owner, alive unless its holder saw it exit.
    pub(crate) fn of(owner: Owner, exited: &[Owner]) -> LeaseOwner {
        LeaseOwner {
            pid: owner.pid,
            start_ticks: owner.start_ticks,
            alive: !exited.contains(&owner),
        }
    }
}

/// What a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum LeaseKind {
    /// A loopback address, on the gate's ports.
    Address,
    /// A TCP port, on every host.
    Port,
}

#[derive(Debug, Serialize, JsonSchema)]
struct LeaseRow {
    kind: LeaseKind,
    /// The address leased; for a port, the host it was asked for (null
    /// when its holder did not say).
    address: Option<IpAddr>,
    /// The port leased (port leases only).
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// Null when the holder did not say (see `holder`).
    owner: Option<LeaseOwner>,
    /// Who holds the token, from the kernel (SO_PEERCRED): the lease
    /// agent's pid, or the fallback's own process; null while the token is
    /// being handed over.
    holder: Option<token::Peer>,
    backend: Option<Backend>,
    /// Further processes the lease lives on in: `run`'s command, and the
    /// lingering holders of a quarantined address.
    holders: Vec<Owner>,
    /// Seconds since it was leased; null when the holder did not say.
    age_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined: Option<Quarantine>,
}

/// What `leases --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Leases<'a> {
    schema: u32,
    /// Every lease of the network namespace, whoever holds it.
    leases: &'a [LeaseRow],
    /// This user's quarantined addresses that are not leased (a leased
    /// one's quarantine is its row's `quarantined`).
    quarantine: Vec<&'a Quarantine>,
}

/// `sockcheck leases [POOL]`.
pub fn leases(gate: &Gate, pool: Option<Vec<IpAddr>>) -> Result<ExitStatus, Error> {
    let wanted = |a: &IpAddr| pool.as_ref().is_none_or(|p| p.contains(a));
    let quarantine = current_quarantine(gate)?;
    let now = state::now();
    // With a pool, its addresses; without, every lease, ports too.
    let rows: Vec<LeaseRow> = crate::lease::unix_diag::subjects()?
        .into_iter()
        .filter(|subject| match subject {
            Subject::Address(address) => wanted(address),
            Subject::Port(_) => pool.is_none(),
        })
        .map(|subject| row(subject, &quarantine, now))
        .collect();
    let quarantined: Vec<&Quarantine> = quarantine
        .iter()
        .filter(|q| {
            wanted(&q.address)
                && !rows
                    .iter()
                    .any(|r| r.kind == LeaseKind::Address && r.address == Some(q.address))
        })
        .collect();
    let text = if gate.output.json {
        crate::output::json(&Leases {
            schema: 1,
            leases: &rows,
            quarantine: quarantined,
        })
    } else if rows.is_empty() && quarantined.is_empty() {
        "no leases, nothing quarantined\n".to_string()
    } else {
        human(&rows, &quarantined, now)
    };
    gate.output.print(&text)?;
    Ok(ExitStatus::Free)
}

fn row(subject: Subject, quarantine: &[Quarantine], now: u64) -> LeaseRow {
    row_of(subject, &token::holder(subject), quarantine, now)
}

/// The row of the lease of `subject`, whose token `holder` holds.
fn row_of(subject: Subject, holder: &Holder, quarantine: &[Quarantine], now: u64) -> LeaseRow {
    let (owner, peer, backend, age) = match holder {
        Holder::Answered { peer, info } => (
            Some(LeaseOwner::of(info.owner, &info.exited)),
            Some(*peer),
            Some(info.backend),
            Some(now.saturating_sub(info.acquired)),
        ),
        Holder::Silent { peer } => (None, *peer, None, None),
        Holder::Free => (None, None, None, None),
    };
    // The processes it still lives on in.
    let holders = match holder {
        Holder::Answered { info, .. } => info
            .holders
            .iter()
            .filter(|h| !info.exited.contains(h))
            .copied()
            .collect(),
        _ => Vec::new(),
    };
    let (kind, address, port) = match subject {
        Subject::Address(address) => (LeaseKind::Address, Some(address), None),
        Subject::Port(port) => (
            LeaseKind::Port,
            match holder {
                Holder::Answered { info, .. } => Some(info.address),
                _ => None,
            },
            Some(port),
        ),
    };
    LeaseRow {
        kind,
        address,
        port,
        owner,
        holder: peer,
        backend,
        holders,
        age_seconds: age,
        quarantined: quarantine
            .iter()
            .find(|q| kind == LeaseKind::Address && Some(q.address) == address)
            .cloned(),
    }
}

fn human(rows: &[LeaseRow], quarantined: &[&Quarantine], now: u64) -> String {
    let mut text = String::new();
    for r in rows {
        let who = match (&r.owner, &r.holder, r.backend) {
            (Some(owner), Some(holder), Some(backend)) => format!(
                "leased to pid {} ({}uid {}, {}{})",
                owner.pid,
                if owner.alive { "" } else { "exited; " },
                holder.uid,
                backend.as_str(),
                if holder.pid == owner.pid {
                    String::new()
                } else {
                    format!(", held by pid {}", holder.pid)
                }
            ),
            (_, Some(holder), _) => format!(
                "leased (its token is held by pid {} of uid {}, which did not answer)",
                holder.pid, holder.uid
            ),
            _ => "leased (being handed over)".to_string(),
        };
        let living: Vec<String> = r.holders.iter().map(|h| h.pid.to_string()).collect();
        let who = if living.is_empty() {
            who
        } else {
            format!("{who}, living on in pid {}", living.join(", "))
        };
        let age = r
            .age_seconds
            .map(|a| format!(", {}", crate::report::human::human_age(a)))
            .unwrap_or_default();
        let what = match (r.kind, r.address, r.port) {
            (LeaseKind::Port, Some(host), Some(port)) => {
                format!("port {port} (host {host})")
            }
            (LeaseKind::Port, None, Some(port)) => format!("port {port}"),
            (_, Some(address), _) => address.to_string(),
            _ => "?".into(),
        };
        text.push_str(&format!("{what}  {who}{age}\n"));
        if let Some(q) = &r.quarantined {
            text.push_str(&format!("  {}\n", quarantine_line(q, now)));
        }
    }
    for q in quarantined {
        text.push_str(&format!("{}  {}\n", q.address, quarantine_line(q, now)));
    }
    text
}

fn quarantine_line(q: &Quarantine, now: u64) -> String {
    format!(
        "quarantined {} ago: {}{}",
        crate::report::human::human_age(now.saturating_sub(q.since)),
        crate::text::escape_hidden(&q.reason),
        q.report
            .as_ref()
            .map(|r| format!(
                " (report: {})",
                crate::text::escape(r.as_os_str().as_bytes())
            ))
            .unwrap_or_default()
    )
}

/// This user's quarantine, less the addresses a quick look now finds free
/// (their holders exited): those are lifted here, not at the next acquire.
fn current_quarantine(gate: &Gate) -> Result<Vec<Quarantine>, Error> {
    let (store, mut state) = gate.open(&crate::lease::Dir::open(&gate.state_dir)?)?;
    if state.quarantine.is_empty() {
        return Ok(Vec::new());
    }
    let view = crate::inspect::kernel_view(&gate.ports)?;
    let before = state.quarantine.len();
    state
        .quarantine
        .retain(|q| gate.one(&view, q.address, false).verdict != Verdict::Free);
    if state.quarantine.len() != before {
        store.save(&state)?;
    }
    Ok(state.quarantine)
}

#[cfg(test)]
mod snapshots {
    use super::*;
    use crate::lease::token::{Info, Peer};
    use crate::owners::fixture::{FIXTURE_UID, NOW};

    /// What the holder of a lease of `address` (or of `port`) says.
    fn answered(address: &str, port: Option<u16>, owner: u32, agent: u32, age: u64) -> Holder {
        Holder::Answered {
            peer: Peer {
                pid: agent,
                uid: FIXTURE_UID,
            },
            info: Info {
                sockcheck_lease: 1,
                address: address.parse().unwrap(),
                kind: if port.is_some() { "port" } else { "address" }.into(),
                backend: if owner == agent {
                    Backend::Fallback
                } else {
                    Backend::Binary
                },
                owner: Owner {
                    pid: owner,
                    start_ticks: Some(8_000_000),
                },
                holders: Vec::new(),
                exited: Vec::new(),
                uid: FIXTURE_UID,
                acquired: NOW - age,
                ports: port.into_iter().collect(),
            },
        }
    }

    /// `sockcheck leases`: a lease, a `run` whose command exited but whose
    /// worker lingers (quarantined, with its report), another suite's port
    /// lease from the npm fallback, a token that does not answer, and a
    /// quarantined address that is no longer leased.
    #[test]
    fn leases() {
        let ip = |a: &str| -> IpAddr { a.parse().unwrap() };
        let quarantine = vec![
            Quarantine {
                address: ip("127.0.0.2"),
                since: NOW - 725,
                reason: "pid 4242 (node) holds 127.0.0.2:9926 after the command exited".into(),
                report: Some("/tmp/sockcheck-run-4100.json".into()),
            },
            Quarantine {
                address: ip("127.0.0.9"),
                since: NOW - 3_600,
                reason: "pid 3100 (nginx) holds 127.0.0.9:9926 after the command exited".into(),
                report: None,
            },
        ];
        let mut lingering = answered("127.0.0.2", None, 4100, 4101, 760);
        if let Holder::Answered { info, .. } = &mut lingering {
            info.holders = vec![Owner {
                pid: 4242,
                start_ticks: Some(8_210_000),
            }];
            info.exited = vec![info.owner];
        }
        let rows = [
            (Subject::Address(ip("127.0.0.2")), lingering),
            (
                Subject::Address(ip("127.0.0.6")),
                answered("127.0.0.6", None, 5100, 5150, 95),
            ),
            (
                Subject::Port(31950),
                answered("127.0.0.1", Some(31950), 6200, 6200, 8),
            ),
            (
                Subject::Address(ip("127.0.0.7")),
                Holder::Silent {
                    peer: Some(Peer {
                        pid: 5300,
                        uid: 1000,
                    }),
                },
            ),
        ]
        .map(|(subject, holder)| row_of(subject, &holder, &quarantine, NOW));
        let unleased: Vec<&Quarantine> = quarantine[1..].iter().collect();
        insta::assert_snapshot!(human(&rows, &unleased, NOW));
    }
}
