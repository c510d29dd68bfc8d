//! `sockcheck acquire`, and the leasing `run` uses: take a token, look,
//! hand the token to the lease agent (see [`crate::lease`]).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use super::POLL;
use super::ledger::LeaseOwner;
pub(crate) use super::refusal::NotAcquired;
use super::refusal::{
    Refusal, SkipReason, Skipped, explain, hopeless, report_refusal, socket_inodes,
};
use super::{Context, LeaseContext};
use crate::document::Document;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect::{self, KernelView};
use crate::lease::{self, Dir, OwnerHandle, Token};
use crate::report::Verdict;

/// What `acquire --json` prints when it leased an address.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Acquired {
    pub(crate) schema: u32,
    pub(crate) address: IpAddr,
    pub(crate) ports: Vec<u16>,
    pub(crate) owner: LeaseOwner,
    pub(crate) state_dir: PathBuf,
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
    ctx: &Context,
    dir: &Dir,
    pool: &[IpAddr],
    owner: &OwnerHandle,
    allow_foreign: bool,
) -> Result<Result<IpAddr, Refusal>, Error> {
    let quarantined = super::quarantined(&ctx.output, dir)?;
    let view = inspect::kernel_view(&ctx.ports)?;
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
        if let Some((verdict, sockets)) = covers.covering(&view, address, &ctx.ports) {
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
        if let Some(skip) = pass_over(ctx, &view, &quarantined, address) {
            drop(token);
            skipped.push(skip);
            continue;
        }
        lease::grant(dir, token, owner, &ctx.ports, address)?;
        if quarantined.contains(&address) {
            super::unquarantine(&ctx.output, dir, &[address])?;
        }
        if ctx.output.verbose && !skipped.is_empty() {
            explain_skips(ctx, skipped);
        }
        return Ok(Ok(address));
    }
    let hopeless = hopeless(&skipped, allow_foreign);
    Ok(Err(Refusal { skipped, hopeless }))
}

/// Why `acquire` passes over one pool address whose token it holds, or
/// `None` when it can have it: not free in a quick inspection (no owners)
/// against the kernel view, where a quarantined address stays quarantined
/// and any other verdict becomes the reason.
fn pass_over(
    ctx: &Context,
    view: &KernelView,
    quarantined: &HashSet<IpAddr>,
    address: IpAddr,
) -> Option<Skipped> {
    let quick = ctx.one(view, address, false);
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
fn explain_skips(ctx: &Context, skipped: Vec<Skipped>) {
    let mut passed = Refusal {
        skipped,
        hopeless: false,
    };
    explain(ctx, &mut passed);
    for skip in &passed.skipped {
        ctx.output.note(&format!(
            "sockcheck: skip {}: {} ({})\n",
            skip.address,
            skip.reason.as_str(),
            skip.message
        ));
    }
}

/// Leases an address, waiting until `wait` runs out; gives up at once when
/// waiting cannot help. A refusal comes back with its holders named.
///
/// While it waits it holds a connection to the token of each leased
/// address (up to [`WAITERS`]): the holder closes it the moment the lease
/// ends, which wakes this at once. Addresses held by sockets are looked at
/// again every [`POLL`].
pub fn lease(
    ctx: &Context,
    dir: &Dir,
    pool: &[IpAddr],
    owner: &OwnerHandle,
    wait: Option<Duration>,
    allow_foreign: bool,
) -> Result<Result<IpAddr, Refusal>, Error> {
    let deadline = wait.map(|w| Instant::now() + w);
    let mut settled = false;
    loop {
        let mut refusal = match try_acquire(ctx, dir, pool, owner, allow_foreign)? {
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
                explain(ctx, &mut refusal);
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

/// `sockcheck acquire POOL`.
pub fn acquire(
    ctx: &LeaseContext,
    pool: &[IpAddr],
    owner_pid: Option<u32>,
    wait: Option<Duration>,
    allow_foreign: bool,
) -> Result<ExitStatus, Error> {
    let owner = match owner_pid {
        Some(pid) => OwnerHandle::open(pid, "--owner")?,
        None => OwnerHandle::open(default_owner(ctx), "the lease's owner (sockcheck's parent)")?,
    };
    let dir = Dir::open(&ctx.state_dir)?;
    match lease(ctx, &dir, pool, &owner, wait, allow_foreign)? {
        Ok(address) => {
            ctx.output.document(&Acquired {
                schema: Acquired::SCHEMA,
                address,
                ports: ctx.ports.clone(),
                owner: LeaseOwner::of(owner.owner, &[]),
                state_dir: ctx.state_dir.clone(),
            })?;
            Ok(ExitStatus::Free)
        }
        Err(refusal) => {
            report_refusal(ctx, pool.len(), &refusal, wait.is_some())?;
            Ok(ExitStatus::NotFree)
        }
    }
}

/// The default owner of a lease: sockcheck's parent, unless the parent is
/// a subshell (a forked copy of the shell above it, as in
/// `addr=$(sockcheck acquire P | cat)`), which exits as soon as the command
/// substitution ends and would take the lease with it. Then the owner is
/// the shell it was forked from, and a note says so.
pub(crate) fn default_owner(ctx: &Context) -> u32 {
    let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
    let mut owner = parent;
    while let Some(above) = forked_from(owner) {
        owner = above;
    }
    if owner != parent {
        ctx.output.note(&format!(
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
