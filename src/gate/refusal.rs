//! Why `acquire` (and `run`) could not lease an address: each address
//! of the pool passed over and why, its holders named after the look
//! ([`explain`]), and the refusal as people and `--json` see it.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::Serialize;

use super::{Context, LeaseContext, summary};
use crate::document::Document;
use crate::error::Error;
use crate::inspect;
use crate::lease;
use crate::report::{AddressReport, Verdict};

/// Why `acquire` passed over an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SkipReason {
    /// Leased to a live process.
    Leased,
    /// A command left it held (`run`), and it is still not free.
    Quarantined,
    Busy,
    Foreign,
    Conflict,
    Unavailable,
}

impl SkipReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SkipReason::Leased => "leased",
            SkipReason::Quarantined => "quarantined",
            SkipReason::Busy => "busy",
            SkipReason::Foreign => "foreign",
            SkipReason::Conflict => "conflict",
            SkipReason::Unavailable => "unavailable",
        }
    }
}

/// One address of the pool that `acquire` passed over, and why.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Skipped {
    pub address: IpAddr,
    pub reason: SkipReason,
    /// The inspection's verdict; null for a leased address (not inspected).
    pub verdict: Option<Verdict>,
    /// Who holds it: the lease's owner, or the processes holding the
    /// sockets that make it not free (from sock_diag's inode and /proc).
    pub pids: Vec<u32>,
    /// Some holder could not be read (another user's process).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    pub message: String,
    /// The sockets (inodes; 0 for TIME_WAIT) that make it not free, as the
    /// quick look saw them: addresses held by the same sockets (a wildcard
    /// listener covers them all) are explained by one inspection.
    #[serde(skip)]
    pub(super) sockets: Vec<u64>,
}

/// Every address of the pool was passed over.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Refusal {
    pub skipped: Vec<Skipped>,
    /// Every candidate is foreign (without `--allow-foreign`) or
    /// unavailable: waiting cannot help, so `acquire` gave up at once.
    pub hopeless: bool,
}

/// What `acquire --json` prints when no address could be leased.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct NotAcquired<'a> {
    schema: u32,
    /// Always null: no address was leased.
    #[schemars(with = "()")]
    address: Option<IpAddr>,
    ports: &'a [u16],
    state_dir: &'a std::path::Path,
    error: String,
    #[serde(flatten)]
    refusal: &'a Refusal,
}

impl Skipped {
    /// An address a listener in the kernel view covers: not free, whatever
    /// the canary would say, so it is passed over without one.
    pub(super) fn held(
        address: IpAddr,
        verdict: Verdict,
        sockets: Vec<u64>,
        quarantined: &HashSet<IpAddr>,
    ) -> Skipped {
        Skipped {
            address,
            reason: if quarantined.contains(&address) {
                SkipReason::Quarantined
            } else if verdict == Verdict::Foreign {
                SkipReason::Foreign
            } else {
                SkipReason::Busy
            },
            verdict: Some(verdict),
            pids: Vec::new(),
            hidden: false,
            message: verdict.as_str().to_string(),
            sockets,
        }
    }

    /// An address whose token someone holds (named by [`explain`]);
    /// `quarantined`: one a `run` of ours left held, whose lease lives on in
    /// the lingering holders.
    pub(super) fn leased(address: IpAddr, quarantined: bool) -> Skipped {
        Skipped {
            address,
            reason: if quarantined {
                SkipReason::Quarantined
            } else {
                SkipReason::Leased
            },
            verdict: None,
            pids: Vec::new(),
            hidden: false,
            message: "leased".into(),
            sockets: Vec::new(),
        }
    }
}

/// Whether waiting cannot help: the inspection found every address passed
/// over foreign (without `--allow-foreign`) or unavailable. A leased
/// address (no verdict) or a busy or conflicting one may come free.
pub(super) fn hopeless(skipped: &[Skipped], allow_foreign: bool) -> bool {
    !skipped.is_empty()
        && skipped.iter().all(|s| match s.verdict {
            Some(Verdict::Foreign) => !allow_foreign,
            Some(Verdict::Unavailable) => true,
            _ => false,
        })
}

/// Names the holders of the addresses a refusal passed over, after the
/// state lock is released: one inspection with owners (one /proc scan) of
/// one address per distinct set of sockets, whose answer holds for every
/// address the same sockets make not free. A /16 under one wildcard
/// listener is one inspected address, not 65,536.
pub fn explain(ctx: &Context, refusal: &mut Refusal) {
    name_leaseholders(refusal);
    let mut representative: HashMap<Held, IpAddr> = HashMap::new();
    for skip in refusal.skipped.iter().filter(|s| s.verdict.is_some()) {
        representative.entry(Held::of(skip)).or_insert(skip.address);
    }
    if representative.is_empty() {
        return;
    }
    let inspected: Vec<IpAddr> = representative.values().copied().collect();
    let Ok(report) = inspect::inspect(&ctx.query(inspected, true)) else {
        return; // the verdicts stand; only the names are missing
    };
    let explained: HashMap<IpAddr, &AddressReport> =
        report.addresses.iter().map(|a| (a.address, a)).collect();
    for skip in refusal.skipped.iter_mut().filter(|s| s.verdict.is_some()) {
        let Some(address) = representative
            .get(&Held::of(skip))
            .and_then(|a| explained.get(a))
        else {
            continue;
        };
        (skip.pids, skip.hidden) = holder_pids(address);
        let why = summary(address);
        skip.message = match (skip.reason, address.verdict) {
            (_, Verdict::Free) => format!(
                "{} a moment ago; free now",
                skip.verdict.map_or("held", Verdict::as_str)
            ),
            (SkipReason::Quarantined, verdict) => {
                format!("quarantined and still {}: {why}", verdict.as_str())
            }
            _ => why,
        };
    }
}

/// Names who holds each leased address of a refusal, from its token: the
/// owner as its holder says, the holder's pid and uid from the kernel. At
/// most [`SKIPPED_SHOWN`] are asked (each is a connection); the rest keep
/// "leased".
fn name_leaseholders(refusal: &mut Refusal) {
    for skip in refusal
        .skipped
        .iter_mut()
        .filter(|s| s.verdict.is_none())
        .take(SKIPPED_SHOWN)
    {
        let holder = lease::token::holder(skip.address);
        skip.pids = holder.pids();
        skip.message = match skip.reason {
            SkipReason::Quarantined => format!(
                "quarantined: a command left it held, and its lease lives on: {}",
                holder.describe()
            ),
            _ => holder.describe(),
        };
    }
}

/// What makes a skipped address not free, as far as one explanation can
/// serve several addresses: the same verdict from the same sockets. An
/// address with no socket to blame (not local; a canary failure nothing
/// explains) is explained on its own, as its message names it.
#[derive(PartialEq, Eq, Hash)]
struct Held {
    verdict: Option<Verdict>,
    sockets: Vec<u64>,
    alone: Option<IpAddr>,
}

impl Held {
    fn of(skip: &Skipped) -> Held {
        Held {
            verdict: skip.verdict,
            sockets: skip.sockets.clone(),
            alone: skip.sockets.is_empty().then_some(skip.address),
        }
    }
}

/// The inodes of the sockets a quick look found on an address, sorted.
pub(super) fn socket_inodes(address: &AddressReport) -> Vec<u64> {
    let mut inodes: Vec<u64> = address
        .ports
        .iter()
        .flat_map(|p| {
            p.listeners
                .iter()
                .map(|l| l.inode)
                .chain(p.other_sockets.sockets.iter().map(|s| s.inode))
        })
        .collect();
    inodes.sort_unstable();
    inodes.dedup();
    inodes
}

/// The pids that hold what makes an address not free: the owners of the
/// covering listeners and, when there are none, of the other sockets the
/// canary ran into. `hidden`: some owner could not be read.
fn holder_pids(address: &AddressReport) -> (Vec<u32>, bool) {
    let mut pids = Vec::new();
    let mut hidden = false;
    for port in &address.ports {
        let owners: Vec<&crate::report::Owner> = if port.listeners.is_empty() {
            port.other_sockets
                .sockets
                .iter()
                .flat_map(|s| &s.owners)
                .collect()
        } else {
            port.listeners.iter().flat_map(|l| &l.owners).collect()
        };
        for owner in owners {
            match owner.pid {
                Some(pid) => pids.push(pid),
                None => hidden |= owner.hidden,
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    (pids, hidden)
}

/// The refusal's first line: why no address could be had.
pub(super) fn refusal_line(pool_len: usize, refusal: &Refusal, waited: bool) -> String {
    let count = format!(
        "{pool_len} address{}",
        if pool_len == 1 { "" } else { "es" }
    );
    if refusal.hopeless {
        format!(
            "no address of the pool ({count}) can be leased: every one is foreign or unavailable, \
             and waiting will not help{}",
            if refusal
                .skipped
                .iter()
                .any(|s| s.verdict == Some(Verdict::Foreign))
            {
                " (--allow-foreign waits anyway)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "no free address in the pool ({count}){}",
            if waited {
                " before the --wait deadline"
            } else {
                ""
            }
        )
    }
}

/// At most this many skipped addresses are listed for people; `--json`
/// lists every one.
const SKIPPED_SHOWN: usize = 32;

/// Tells why no address could be had: one line and one line per address
/// on stderr, and with `--json` the document on stdout.
pub(crate) fn report_refusal(
    ctx: &LeaseContext,
    pool_len: usize,
    refusal: &Refusal,
    waited: bool,
) -> Result<(), Error> {
    let doc = NotAcquired {
        schema: NotAcquired::SCHEMA,
        address: None,
        ports: &ctx.ports,
        state_dir: &ctx.state_dir,
        error: refusal_line(pool_len, refusal, waited),
        refusal,
    };
    if ctx.output.json {
        ctx.output.print(&crate::output::json(&doc))?;
    }
    ctx.output.note(&doc.human(&ctx.output));
    Ok(())
}

impl NotAcquired<'_> {
    /// The refusal's line, then one line per address passed over (the
    /// first [`SKIPPED_SHOWN`]).
    pub(crate) fn render(&self) -> String {
        let skipped = &self.refusal.skipped;
        let width = skipped
            .iter()
            .take(SKIPPED_SHOWN)
            .map(|s| s.address.to_string().len())
            .max()
            .unwrap_or(0);
        let mut text = format!("sockcheck: {}:\n", self.error);
        for skip in skipped.iter().take(SKIPPED_SHOWN) {
            text.push_str(&format!(
                "  {:<width$}  {:<11}  {}\n",
                skip.address.to_string(),
                skip.reason.as_str(),
                skip.message
            ));
        }
        if skipped.len() > SKIPPED_SHOWN {
            text.push_str(&format!(
                "  … and {} more (--json lists every one)\n",
                skipped.len() - SKIPPED_SHOWN
            ));
        }
        text
    }
}

#[cfg(test)]
mod snapshots;
