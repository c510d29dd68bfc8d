//! `sockcheck acquire`, and the leasing `run` uses: take a token, look,
//! hand the token to the lease agent (see [`crate::lease`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use super::ledger::LeaseOwner;
use super::{Gate, POLL, summary};
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect::{self, KernelView};
use crate::lease::{self, Dir, OwnerHandle, Token};
use crate::report::{AddressReport, Verdict};

/// What `acquire --json` prints when it leased an address.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Acquired {
    schema: u32,
    address: IpAddr,
    ports: Vec<u16>,
    owner: LeaseOwner,
    state_dir: PathBuf,
}

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
    fn as_str(self) -> &'static str {
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
    sockets: Vec<u64>,
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

/// Leases the first address of `pool` that nobody has leased, that is not
/// quarantined, and that a quick look (no owners) finds free, to `owner`.
/// Otherwise says why each address was passed over (holders are named by
/// [`explain`]).
///
/// No lock is held: the token is the claim. It is taken before the quick
/// look, so two acquirers never run their canaries on one address at once
/// (the loser would see the winner's canary), and dropped again when the
/// look finds the address not free. One sock_diag dump serves the pool.
pub fn try_acquire(
    gate: &Gate,
    dir: &Dir,
    pool: &[IpAddr],
    owner: &OwnerHandle,
    allow_foreign: bool,
) -> Result<Result<IpAddr, Refusal>, Error> {
    let quarantined = gate.quarantined(dir)?;
    let view = inspect::kernel_view(&gate.ports)?;
    // What covers each pool address is a lookup in the view indexed once.
    let covers = crate::inspect::plan::ViewIndex::of(&view);
    // A large pool reads the leased addresses in one dump instead of one
    // bind each; a token that comes or goes meanwhile is caught by the bind.
    let listed: HashSet<IpAddr> = if pool.len() > LIST_ABOVE {
        lease::unix_diag::tokens()
            .map(|l| l.into_iter().collect())
            .unwrap_or_default()
    } else {
        HashSet::new()
    };
    let mut skipped = Vec::new();
    for &address in pool {
        if let Some((verdict, sockets)) = covers.covering(&view, address, &gate.ports) {
            skipped.push(Skipped::held(address, verdict, sockets, &quarantined));
            continue;
        }
        if listed.contains(&address) {
            skipped.push(Skipped::leased(address, quarantined.contains(&address)));
            continue;
        }
        let Some(token) = Token::claim(address)? else {
            skipped.push(Skipped::leased(address, quarantined.contains(&address)));
            continue;
        };
        if let Some(skip) = pass_over(gate, &view, &quarantined, address) {
            drop(token);
            skipped.push(skip);
            continue;
        }
        lease::grant(dir, token, owner, &gate.ports, address)?;
        if quarantined.contains(&address) {
            gate.unquarantine(dir, &[address])?;
        }
        if gate.output.verbose && !skipped.is_empty() {
            explain_skips(gate, skipped);
        }
        return Ok(Ok(address));
    }
    let hopeless = hopeless(&skipped, allow_foreign);
    Ok(Err(Refusal { skipped, hopeless }))
}

impl Skipped {
    /// An address a listener in the kernel view covers: not free, whatever
    /// the canary would say, so it is passed over without one.
    fn held(
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
    fn leased(address: IpAddr, quarantined: bool) -> Skipped {
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

/// Why `acquire` passes over one pool address whose token it holds, or
/// `None` when it can have it: not free in a quick inspection (no owners)
/// against the kernel view, where a quarantined address stays quarantined
/// and any other verdict becomes the reason.
fn pass_over(
    gate: &Gate,
    view: &KernelView,
    quarantined: &HashSet<IpAddr>,
    address: IpAddr,
) -> Option<Skipped> {
    let quick = gate.one(view, address, false);
    let verdict = quick.verdict;
    if verdict == Verdict::Free {
        return None;
    }
    let reason = if quarantined.contains(&address) {
        SkipReason::Quarantined
    } else {
        match verdict {
            Verdict::Busy => SkipReason::Busy,
            Verdict::Foreign => SkipReason::Foreign,
            Verdict::Conflict => SkipReason::Conflict,
            _ => SkipReason::Unavailable,
        }
    };
    Some(Skipped {
        address,
        reason,
        verdict: Some(verdict),
        pids: Vec::new(),
        hidden: false,
        message: verdict.as_str().to_string(),
        sockets: socket_inodes(&quick),
    })
}

/// `--verbose` after a lease: names the holders of the addresses passed
/// over (outside the state lock, see [`explain`]) and prints one line per
/// skipped address with its reason.
fn explain_skips(gate: &Gate, skipped: Vec<Skipped>) {
    let mut passed = Refusal {
        skipped,
        hopeless: false,
    };
    explain(gate, &mut passed);
    for skip in &passed.skipped {
        gate.output.note(&format!(
            "sockcheck: skip {}: {} ({})\n",
            skip.address,
            skip.reason.as_str(),
            skip.message
        ));
    }
}

/// Whether waiting cannot help: the inspection found every address passed
/// over foreign (without `--allow-foreign`) or unavailable. A leased
/// address (no verdict) or a busy or conflicting one may come free.
fn hopeless(skipped: &[Skipped], allow_foreign: bool) -> bool {
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
pub fn explain(gate: &Gate, refusal: &mut Refusal) {
    name_leaseholders(refusal);
    let mut representative: HashMap<Held, IpAddr> = HashMap::new();
    for skip in refusal.skipped.iter().filter(|s| s.verdict.is_some()) {
        representative.entry(Held::of(skip)).or_insert(skip.address);
    }
    if representative.is_empty() {
        return;
    }
    let inspected: Vec<IpAddr> = representative.values().copied().collect();
    let Ok(report) = inspect::inspect(&gate.query(inspected, true)) else {
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
fn socket_inodes(address: &AddressReport) -> Vec<u64> {
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

/// Leases an address, waiting until `wait` runs out; gives up at once when
/// waiting cannot help. A refusal comes back with its holders named.
///
/// While it waits it holds a connection to the token of each leased
/// address (up to [`WAITERS`]): the holder closes it the moment the lease
/// ends, which wakes this at once. Addresses held by sockets are looked at
/// again every [`POLL`].
pub fn lease(
    gate: &Gate,
    dir: &Dir,
    pool: &[IpAddr],
    owner: &OwnerHandle,
    wait: Option<Duration>,
    allow_foreign: bool,
) -> Result<Result<IpAddr, Refusal>, Error> {
    let deadline = wait.map(|w| Instant::now() + w);
    let mut settled = false;
    loop {
        let mut refusal = match try_acquire(gate, dir, pool, owner, allow_foreign)? {
            Ok(address) => return Ok(Ok(address)),
            Err(refusal) => refusal,
        };
        // Leases whose every owner has just exited end in their agent a
        // moment later: wait for those (and only those) before refusing.
        if !settled && settle(&refusal) {
            settled = true;
            continue;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match left {
            Some(left) if !left.is_zero() && !refusal.hopeless => {
                let leased = refusal.skipped.iter().filter(|s| s.verdict.is_none());
                let only_leased = leased.clone().count() == refusal.skipped.len();
                let waiters: Vec<lease::token::Connection> = leased
                    .take(WAITERS)
                    .filter_map(|s| lease::token::Connection::open(s.address).ok().flatten())
                    .collect();
                let nap = if only_leased && !waiters.is_empty() {
                    left.min(Duration::from_secs(1))
                } else {
                    left.min(POLL)
                };
                lease::token::wait_any(&waiters, nap);
            }
            _ => {
                explain(gate, &mut refusal);
                return Ok(Err(refusal));
            }
        }
    }
}

/// Waits (200 ms at most) for the leases of the refusal whose every owner
/// is known to be gone (no such pid, or another process under it) to end;
/// returns whether there was any. It never takes a token: the holder ends
/// the lease, as always. An owner whose liveness cannot be read counts as
/// alive.
fn settle(refusal: &Refusal) -> bool {
    let mut released = false;
    let mut ending = Vec::new();
    for skip in refusal
        .skipped
        .iter()
        .filter(|s| s.verdict.is_none())
        .take(WAITERS)
    {
        let Ok(connection) = lease::token::Connection::open(skip.address) else {
            continue;
        };
        let Some(mut connection) = connection else {
            // Nothing listens on it any more: released since the look (or
            // between its bind and its hand-over, which a retry also sees).
            released |= lease::token::holder(skip.address) == lease::Holder::Free;
            continue;
        };
        let Some(info) = connection
            .line(Duration::from_millis(50))
            .and_then(|line| serde_json::from_str::<lease::Info>(&line).ok())
        else {
            // No answer: the holder may have ended the lease meanwhile.
            released |= lease::token::holder(skip.address) == lease::Holder::Free;
            continue;
        };
        let mut owners = std::iter::once(&info.owner)
            .chain(&info.holders)
            .filter(|o| !info.exited.contains(o));
        if owners.all(gone) {
            ending.push(connection);
        }
    }
    if ending.is_empty() {
        return released;
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while !ending.is_empty() && Instant::now() < deadline {
        lease::token::wait_any(&ending, deadline.saturating_duration_since(Instant::now()));
        ending.retain(|c| !lease::token::readable_hangup(c));
    }
    true
}

/// Whether `owner` is known to be gone: no process has its pid, or another
/// process (another start time) has it now.
fn gone(owner: &lease::Owner) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(owner.pid as i32) else {
        return false;
    };
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Err(rustix::io::Errno::SRCH) => true,
        Err(_) => false,
        Ok(pidfd) => {
            if lease::token::readable(std::os::fd::AsFd::as_fd(&pidfd), Duration::ZERO) {
                return true; // exited, not yet reaped
            }
            match (
                owner.start_ticks,
                procfs::process::Process::new(owner.pid as i32).and_then(|p| p.stat()),
            ) {
                (Some(start), Ok(stat)) => stat.starttime != start,
                _ => false,
            }
        }
    }
}

/// Pools larger than this read every token of the namespace at once
/// (one sock_diag dump) rather than trying a bind per leased address.
const LIST_ABOVE: usize = 256;

/// How many leased tokens a waiting acquire listens to at once.
const WAITERS: usize = 64;

/// The refusal's first line: why no address could be had.
fn refusal_line(pool_len: usize, refusal: &Refusal, waited: bool) -> String {
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
    gate: &Gate,
    pool_len: usize,
    refusal: &Refusal,
    waited: bool,
) -> Result<(), Error> {
    let doc = NotAcquired {
        schema: 1,
        address: None,
        ports: &gate.ports,
        state_dir: &gate.state_dir,
        error: refusal_line(pool_len, refusal, waited),
        refusal,
    };
    if gate.output.json {
        gate.output.print(&crate::output::json(&doc))?;
    }
    gate.output.note(&doc.render());
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

/// `sockcheck acquire POOL`.
pub fn acquire(
    gate: &Gate,
    pool: &[IpAddr],
    owner_pid: Option<u32>,
    wait: Option<Duration>,
    allow_foreign: bool,
) -> Result<ExitStatus, Error> {
    let owner = match owner_pid {
        Some(pid) => OwnerHandle::open(pid, "--owner")?,
        None => OwnerHandle::open(
            default_owner(gate),
            "the lease's owner (sockcheck's parent)",
        )?,
    };
    let dir = Dir::open(&gate.state_dir)?;
    match lease(gate, &dir, pool, &owner, wait, allow_foreign)? {
        Ok(address) => {
            let text = if gate.output.json {
                let acquired = Acquired {
                    schema: 1,
                    address,
                    ports: gate.ports.clone(),
                    owner: LeaseOwner::of(owner.owner, &[]),
                    state_dir: gate.state_dir.clone(),
                };
                crate::output::json(&acquired)
            } else {
                format!("{address}\n")
            };
            gate.output.print(&text)?;
            Ok(ExitStatus::Free)
        }
        Err(refusal) => {
            report_refusal(gate, pool.len(), &refusal, wait.is_some())?;
            Ok(ExitStatus::NotFree)
        }
    }
}

/// The default owner of a lease: sockcheck's parent, unless the parent is
/// a subshell (a forked copy of the shell above it, as in
/// `addr=$(sockcheck acquire P | cat)`), which exits as soon as the command
/// substitution ends and would take the lease with it. Then the owner is
/// the shell it was forked from, and a note says so.
pub(crate) fn default_owner(gate: &Gate) -> u32 {
    let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
    let mut owner = parent;
    while let Some(above) = forked_from(owner) {
        owner = above;
    }
    if owner != parent {
        gate.output.note(&format!(
            "sockcheck: the lease goes to pid {owner}, the shell that pid {parent} (a subshell, \
             which exits when its command substitution ends) was forked from; --owner PID \
             chooses another owner\n"
        ));
    }
    owner
}

/// The parent of `pid` when `pid` is a forked copy of it (same executable,
/// same command line): a subshell.
fn forked_from(pid: u32) -> Option<u32> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let ppid = process.stat().ok()?.ppid;
    if ppid <= 1 {
        return None;
    }
    let parent = procfs::process::Process::new(ppid).ok()?;
    let same = process.exe().ok()? == parent.exe().ok()?
        && process.cmdline().ok()? == parent.cmdline().ok()?;
    same.then_some(ppid as u32)
}

#[cfg(test)]
mod snapshots;
