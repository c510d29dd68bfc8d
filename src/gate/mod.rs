//! The CI-gate commands: `scan`, `wait`, `acquire`, `release`, `leases` and
//! `run`. They use the inspection as a library and add leases (see
//! [`state`]), so parallel suites never get the same address at once.

pub mod child;
pub mod forensic;
pub mod openers;
pub mod reap;
pub mod state;

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use crate::error::Error;
use crate::exit::ExitStatus;
use crate::inspect::{self, KernelView, Query, Sources};
use crate::output::{Output, emit};
use crate::report::{AddressReport, ListenerReport, ReasonCode, Report, Verdict};
use crate::verdict::{describe_owners, group_owners};
use forensic::Forensic;
use openers::Attribution;
use state::{Lease, ProcessId, Quarantine, Store};

/// At most this many inspections a second while waiting.
const POLL: Duration = Duration::from_millis(100);

/// What every gate command needs.
#[derive(Debug, Clone)]
pub struct Gate {
    pub ports: Vec<u16>,
    pub state_dir: PathBuf,
    pub output: Output,
    pub sources: Sources,
    /// The network namespace the command runs in (`--netns`).
    pub netns: Option<crate::report::NetnsInfo>,
}

impl Gate {
    fn query(&self, addresses: Vec<IpAddr>, owners: bool) -> Query {
        Query {
            owners,
            sources: self.sources,
            netns: self.netns.clone(),
            ..Query::new(addresses, self.ports.clone())
        }
    }

    /// Inspects one address against an existing kernel view.
    fn one(&self, view: &KernelView, address: IpAddr, owners: bool) -> AddressReport {
        inspect::inspect_view(&self.query(vec![address], owners), view)
            .addresses
            .remove(0)
    }

    /// Locks the state directory and reads the state; a repaired file is
    /// reported once.
    fn open(&self) -> Result<(Store, state::State), Error> {
        let mut store = Store::open(&self.state_dir)?;
        let state = store.load()?;
        if let Some(repaired) = &store.repaired {
            eprintln!("sockcheck: {repaired}");
        }
        Ok((store, state))
    }
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
                "{} holds {}",
                describe_owners(&owners, complete),
                first.local
            )
        }
        _ => reason.message.clone(),
    }
}

/// `sockcheck scan POOL`.
pub fn scan(gate: &Gate, pool: Vec<IpAddr>) -> Result<ExitStatus, Error> {
    let report = inspect::inspect(&gate.query(pool, true))?;
    if gate.output.json {
        emit(&report, gate.output)?;
    } else {
        gate.output.print(&lines(&report, false))?;
    }
    Ok(if report.all_free() {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

/// One line per address: the address, its verdict, who holds it, and
/// (`counts`) how many sockets it has on the ports.
fn lines(report: &Report, counts: bool) -> String {
    let width = report
        .addresses
        .iter()
        .map(|a| a.address.to_string().len())
        .max()
        .unwrap_or(0);
    let mut text = crate::report::human::netns_line(report);
    for address in &report.addresses {
        let listeners: usize = address.ports.iter().map(|p| p.listeners.len()).sum();
        let others: usize = address.ports.iter().map(|p| p.other_sockets.total).sum();
        let line = format!(
            "{:<width$}  {:<11}  {}{}",
            address.address.to_string(),
            address.verdict.as_str(),
            summary(address),
            match (listeners, others) {
                _ if !counts => String::new(),
                (0, 0) => String::new(),
                (l, 0) => format!(" ({l} listener{})", plural(l)),
                (0, o) => format!(" ({o} other socket{})", plural(o)),
                (l, o) => format!(
                    " ({l} listener{}, {o} other socket{})",
                    plural(l),
                    plural(o)
                ),
            }
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `sockcheck list`: every address with a socket on the ports (wildcard
/// listeners too, as 0.0.0.0 and ::), each with its verdict and holders,
/// sorted by address; the `check` document with `--json`. Exits 0: it
/// lists, it does not judge.
pub fn list(gate: &Gate) -> Result<ExitStatus, Error> {
    let view = inspect::kernel_view(&gate.ports)?;
    let report = inspect::inspect_view(&gate.query(local_addresses(&view), true), &view);
    if gate.output.json {
        emit(&report, gate.output)?;
    } else if report.addresses.is_empty() {
        let ports: Vec<String> = gate.ports.iter().map(u16::to_string).collect();
        gate.output.print(&format!(
            "no socket on port{} {}: nothing listens there, on any address\n",
            plural(gate.ports.len()),
            ports.join(",")
        ))?;
    } else {
        gate.output.print(&lines(&report, true))?;
    }
    Ok(ExitStatus::Free)
}

/// The local addresses of every socket in the view, each once, sorted; an
/// IPv4-mapped address is the IPv4 address it maps.
fn local_addresses(view: &KernelView) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = view
        .listeners
        .iter()
        .chain(&view.others)
        .map(|s| match s.local.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        })
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// `sockcheck reap ADDR`: SIGTERM, then SIGKILL after `grace`, to the
/// processes holding listeners that cover ADDR on the ports (never pid 1,
/// sockcheck or its ancestors; another user's only with the privilege).
/// Exits 0 once ADDR is free, 1 while something still holds it.
pub fn reap_address(
    gate: &Gate,
    address: IpAddr,
    grace: Duration,
    dry_run: bool,
) -> Result<ExitStatus, Error> {
    let view = inspect::kernel_view(&gate.ports)?;
    let before = single(gate, &view, address).addresses.remove(0);
    let (pids, hidden) = reap::holders(&before);
    let comms = before
        .ports
        .iter()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.owners)
        .filter_map(|o| Some((o.pid?, o.process.as_ref()?.comm.escaped())))
        .collect();
    let reaped = reap::reap(&pids, grace, dry_run);
    let after = if dry_run {
        before.verdict
    } else {
        let view = inspect::kernel_view(&gate.ports)?;
        gate.one(&view, address, false).verdict
    };
    let report = reap::ReapReport {
        schema: 1,
        address,
        ports: gate.ports.clone(),
        dry_run,
        before: before.verdict,
        after,
        reaped,
        hidden,
    };
    if gate.output.json {
        gate.output.print(&crate::output::json(&report))?;
    } else {
        gate.output.print(&reap::render(&report, &comms))?;
    }
    Ok(if after == Verdict::Free {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

/// `sockcheck wait ADDR`.
pub fn wait(
    gate: &Gate,
    address: IpAddr,
    timeout: Duration,
    allow_foreign: bool,
) -> Result<ExitStatus, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = inspect::kernel_view(&gate.ports)?;
        let quick = gate.one(&view, address, false);
        // Waiting cannot fix a wildcard listener (unless asked to wait
        // anyway) nor an address that is not local.
        let hopeless = match quick.verdict {
            Verdict::Foreign => !allow_foreign,
            Verdict::Unavailable => true,
            _ => false,
        };
        if quick.verdict == Verdict::Free {
            if gate.output.json {
                emit(&single(gate, &view, address), gate.output)?;
            }
            return Ok(ExitStatus::Free);
        }
        if hopeless || Instant::now() >= deadline {
            // Who still holds it, with every detail `check` gives.
            let report = single(gate, &view, address);
            emit(&report, gate.output)?;
            gate.output.note(&format!(
                "sockcheck: {address} is {}{}\n",
                quick.verdict.as_str(),
                if quick.verdict == Verdict::Foreign && hopeless {
                    "; waiting will not help (--allow-foreign waits anyway)".to_string()
                } else if hopeless {
                    "; waiting will not help".to_string()
                } else {
                    format!(" after waiting {}", show_duration(timeout))
                }
            ));
            return Ok(ExitStatus::NotFree);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

fn single(gate: &Gate, view: &KernelView, address: IpAddr) -> Report {
    inspect::inspect_view(&gate.query(vec![address], true), view)
}

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

/// Chooses, under the state lock, the first address of `pool` that is
/// neither leased nor quarantined and that the inspection finds free, and
/// leases it to `owner`. Otherwise says why each address was passed over
/// (without owners: finding them is [`explain`]'s work, outside the lock).
pub fn try_acquire(
    gate: &Gate,
    pool: &[IpAddr],
    owner: ProcessId,
    allow_foreign: bool,
) -> Result<Result<IpAddr, Refusal>, Error> {
    let (store, mut state) = gate.open()?;
    let reclaimed = state.reclaim();
    if gate.output.verbose {
        for lease in &reclaimed {
            eprintln!(
                "sockcheck: reclaimed {} from pid {}, which is gone",
                lease.address, lease.owner.pid
            );
        }
    }
    let view = inspect::kernel_view(&gate.ports)?;
    let mut chosen = None;
    let mut skipped = Vec::new();
    let mut changed = !reclaimed.is_empty();
    for &address in pool {
        if let Some(skip) = pass_over(gate, &view, &state, address) {
            skipped.push(skip);
            continue;
        }
        if state.quarantined(address).is_some() {
            state.quarantine.retain(|q| q.address != address);
            changed = true;
        }
        chosen = Some(address);
        break;
    }
    if let Some(address) = chosen {
        state.leases.push(Lease {
            address,
            owner,
            acquired: state::now(),
            holders: Vec::new(),
        });
        changed = true;
    }
    if changed {
        store.save(&state)?;
    }
    drop(store); // the lock: holders are named outside it
    if let Some(address) = chosen {
        if gate.output.verbose && !skipped.is_empty() {
            explain_skips(gate, skipped);
        }
        return Ok(Ok(address));
    }
    let hopeless = hopeless(&skipped, allow_foreign);
    Ok(Err(Refusal { skipped, hopeless }))
}

/// Why `acquire` passes over one pool address, or `None` when it can have
/// it: leased to a process (no inspection needed), or not free in a quick
/// inspection (no owners) against the kernel view, where a quarantined
/// address stays quarantined and any other verdict becomes the reason.
fn pass_over(
    gate: &Gate,
    view: &KernelView,
    state: &state::State,
    address: IpAddr,
) -> Option<Skipped> {
    if let Some(lease) = state.lease(address) {
        return Some(Skipped {
            address,
            reason: SkipReason::Leased,
            verdict: None,
            pids: vec![lease.owner.pid],
            hidden: false,
            message: format!("leased to pid {}", lease.owner.pid),
            sockets: Vec::new(),
        });
    }
    let quick = gate.one(view, address, false);
    let verdict = quick.verdict;
    if verdict == Verdict::Free {
        return None;
    }
    let reason = if state.quarantined(address).is_some() {
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
        eprintln!(
            "sockcheck: skip {}: {} ({})",
            skip.address,
            skip.reason.as_str(),
            skip.message
        );
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

/// Leases an address, polling until `wait` runs out; gives up at once when
/// waiting cannot help. A refusal comes back with its holders named.
pub fn lease(
    gate: &Gate,
    pool: &[IpAddr],
    owner: ProcessId,
    wait: Option<Duration>,
    allow_foreign: bool,
) -> Result<Result<IpAddr, Refusal>, Error> {
    let deadline = wait.map(|w| Instant::now() + w);
    loop {
        let mut refusal = match try_acquire(gate, pool, owner, allow_foreign)? {
            Ok(address) => return Ok(Ok(address)),
            Err(refusal) => refusal,
        };
        match deadline {
            Some(deadline) if Instant::now() < deadline && !refusal.hopeless => {
                std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
            }
            _ => {
                explain(gate, &mut refusal);
                return Ok(Err(refusal));
            }
        }
    }
}

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
fn report_refusal(
    gate: &Gate,
    pool_len: usize,
    refusal: &Refusal,
    waited: bool,
) -> Result<(), Error> {
    let line = refusal_line(pool_len, refusal, waited);
    if gate.output.json {
        let doc = NotAcquired {
            schema: 1,
            address: None,
            ports: &gate.ports,
            state_dir: &gate.state_dir,
            error: line.clone(),
            refusal,
        };
        gate.output.print(&crate::output::json(&doc))?;
    }
    let width = refusal
        .skipped
        .iter()
        .take(SKIPPED_SHOWN)
        .map(|s| s.address.to_string().len())
        .max()
        .unwrap_or(0);
    let mut text = format!("sockcheck: {line}:\n");
    for skip in refusal.skipped.iter().take(SKIPPED_SHOWN) {
        text.push_str(&format!(
            "  {:<width$}  {:<11}  {}\n",
            skip.address.to_string(),
            skip.reason.as_str(),
            skip.message
        ));
    }
    if refusal.skipped.len() > SKIPPED_SHOWN {
        text.push_str(&format!(
            "  … and {} more (--json lists every one)\n",
            refusal.skipped.len() - SKIPPED_SHOWN
        ));
    }
    gate.output.note(&text);
    Ok(())
}

/// `sockcheck acquire POOL`.
pub fn acquire(
    gate: &Gate,
    pool: &[IpAddr],
    owner_pid: Option<u32>,
    wait: Option<Duration>,
    allow_foreign: bool,
) -> Result<ExitStatus, Error> {
    let pid = match owner_pid {
        Some(pid) => pid,
        None => default_owner(),
    };
    let owner = ProcessId::of(pid)
        .ok_or_else(|| Error::Usage(format!("--owner: no live process with pid {pid}")))?;
    match lease(gate, pool, owner, wait, allow_foreign)? {
        Ok(address) => {
            let text = if gate.output.json {
                let acquired = Acquired {
                    schema: 1,
                    address,
                    ports: gate.ports.clone(),
                    owner: LeaseOwner {
                        id: owner,
                        alive: owner.alive(),
                    },
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
fn default_owner() -> u32 {
    let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
    let mut owner = parent;
    while let Some(above) = forked_from(owner) {
        owner = above;
    }
    if owner != parent {
        eprintln!(
            "sockcheck: the lease goes to pid {owner}, the shell that pid {parent} (a subshell, \
             which exits when its command substitution ends) was forked from; --owner PID \
             chooses another owner"
        );
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

/// `sockcheck release ADDR`.
pub fn release(gate: &Gate, address: IpAddr) -> Result<ExitStatus, Error> {
    let (store, mut state) = gate.open()?;
    let before = state.leases.len();
    state.leases.retain(|l| l.address != address);
    let released = state.leases.len() != before;
    if released {
        store.save(&state)?;
    }
    if gate.output.json {
        gate.output.print(&crate::output::json(&Released {
            schema: 1,
            address,
            released,
        }))?;
    }
    if !released {
        gate.output
            .note(&format!("sockcheck: {address} is not leased\n"));
        return Ok(ExitStatus::NotFree);
    }
    Ok(ExitStatus::Free)
}

/// What `release --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Released {
    schema: u32,
    address: IpAddr,
    /// False when the address was not leased (exit status 1).
    released: bool,
}

/// A lease's owner, as `acquire` and `leases` print it.
#[derive(Debug, Serialize, JsonSchema)]
struct LeaseOwner {
    #[serde(flatten)]
    id: ProcessId,
    /// Whether that process still runs (a dead owner's lease is reclaimed
    /// on the next acquire).
    alive: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
struct LeaseRow {
    address: IpAddr,
    owner: LeaseOwner,
    age_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined: Option<Quarantine>,
}

/// What `leases --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Leases<'a> {
    schema: u32,
    leases: &'a [LeaseRow],
    /// Quarantined addresses that are not leased (a leased one's
    /// quarantine is its row's `quarantined`).
    quarantine: Vec<&'a Quarantine>,
}

/// `sockcheck leases [POOL]`.
pub fn leases(gate: &Gate, pool: Option<Vec<IpAddr>>) -> Result<ExitStatus, Error> {
    let (_store, state) = gate.open()?;
    let now = state::now();
    let wanted = |a: &IpAddr| pool.as_ref().is_none_or(|p| p.contains(a));
    let mut rows: Vec<LeaseRow> = state
        .leases
        .iter()
        .filter(|l| wanted(&l.address))
        .map(|l| LeaseRow {
            address: l.address,
            owner: LeaseOwner {
                id: l.owner,
                alive: l.alive(),
            },
            age_seconds: now.saturating_sub(l.acquired),
            quarantined: state.quarantined(l.address).cloned(),
        })
        .collect();
    let quarantined: Vec<&Quarantine> = state
        .quarantine
        .iter()
        .filter(|q| wanted(&q.address) && state.lease(q.address).is_none())
        .collect();
    rows.sort_by_key(|r| r.address);
    let text = if gate.output.json {
        crate::output::json(&Leases {
            schema: 1,
            leases: &rows,
            quarantine: quarantined,
        })
    } else if rows.is_empty() && quarantined.is_empty() {
        "no leases, nothing quarantined\n".to_string()
    } else {
        let mut text = String::new();
        for r in &rows {
            text.push_str(&format!(
                "{}  leased to pid {} ({}), {}\n",
                r.address,
                r.owner.id.pid,
                if r.owner.alive {
                    "alive"
                } else {
                    "gone: reclaimed on the next acquire"
                },
                crate::report::human::human_age(r.age_seconds)
            ));
        }
        for q in quarantined {
            text.push_str(&format!(
                "{}  quarantined {} ago: {}{}\n",
                q.address,
                crate::report::human::human_age(now.saturating_sub(q.since)),
                q.reason,
                q.report
                    .as_ref()
                    .map(|r| format!(" (report: {})", r.display()))
                    .unwrap_or_default()
            ));
        }
        text
    };
    gate.output.print(&text)?;
    Ok(ExitStatus::Free)
}

/// Options of `sockcheck run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub linger: Duration,
    pub report: Option<PathBuf>,
    pub reap: bool,
    pub grace: Duration,
    /// How long to wait for a free address before giving up (exit 5).
    pub wait: Option<Duration>,
    pub command: Vec<OsString>,
}

/// `sockcheck run POOL -- CMD`.
pub fn run(gate: &Gate, pool: &[IpAddr], options: &RunOptions) -> Result<ExitStatus, Error> {
    if options.command.is_empty() {
        return Err(Error::Usage("run: no command given after --".into()));
    }
    if let Some(path) = &options.report {
        check_writable(path)?;
    }
    let me = ProcessId::of(std::process::id())
        .ok_or_else(|| Error::Usage("cannot read our own /proc entry".into()))?;
    let address = match lease(gate, pool, me, options.wait, false)? {
        Ok(address) => address,
        Err(refusal) => {
            report_refusal(gate, pool.len(), &refusal, options.wait.is_some())?;
            return Ok(ExitStatus::NoAddress);
        }
    };
    let ports = gate
        .ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if gate.output.verbose {
        eprintln!("sockcheck: leased {address} for the command");
    }
    // Attached before the command starts, so every listen() it makes is seen.
    let attribution = Attribution::start(gate.sources.bpf, address, &gate.ports);
    if gate.output.verbose {
        eprintln!("sockcheck: {}", attribution.describe());
    }
    let finished = child::run(
        &options.command,
        &[
            ("SOCKCHECK_ADDR", address.to_string()),
            ("SOCKCHECK_PORTS", ports),
        ],
        |pid| live_on_in(gate, address, me, pid),
    );
    let exited = state::now();
    let outcome =
        finished.and_then(|finished| after(gate, address, &finished, exited, options, attribution));
    // The lease goes whatever happened; a lingering address stays
    // quarantined instead.
    let released = gate.open().and_then(|(store, mut state)| {
        state.leases.retain(|l| l.address != address);
        store.save(&state)
    });
    let outcome = outcome?;
    released?;
    Ok(outcome)
}

/// Makes `owner`'s lease of `address` live on in the command `pid` too, so
/// that if `run` itself is killed, the address stays leased for as long as
/// the command runs. (Should that fail, the lease stays `run`'s alone.)
fn live_on_in(gate: &Gate, address: IpAddr, owner: ProcessId, pid: u32) {
    let Some(command) = ProcessId::of(pid) else {
        return; // already gone: nothing to live on in
    };
    let recorded = gate.open().and_then(|(store, mut state)| {
        match state
            .leases
            .iter_mut()
            .find(|l| l.address == address && l.owner == owner)
        {
            Some(lease) => {
                lease.holders.push(command);
                store.save(&state)
            }
            None => Ok(()),
        }
    });
    if let Err(e) = recorded {
        eprintln!("sockcheck: the lease of {address} could not be tied to the command: {e}");
    }
}

/// After the command: wait up to --linger for the address to be free, and
/// report, quarantine and reap what still holds it. SIGINT, SIGTERM, SIGHUP
/// or SIGQUIT (a cancelled CI job) cut the wait short: the address is
/// inspected once, reported and quarantined as at the deadline. A signal
/// that came while the command ran was the command's to answer, and its
/// status stands; one that comes during the wait makes `run` exit 128+N.
fn after(
    gate: &Gate,
    address: IpAddr,
    finished: &child::Finished,
    exited: u64,
    options: &RunOptions,
    attribution: Attribution,
) -> Result<ExitStatus, Error> {
    let status = finished.status;
    let started = Instant::now();
    let deadline = started + options.linger;
    let interrupted = || finished.signals.received().or(finished.signalled);
    let done = |free: bool| match finished.signals.received() {
        Some(signal) => ExitStatus::Command(128u8.saturating_add(signal as u8)),
        None if free => command_status(status),
        None if status == 0 => ExitStatus::Lingering,
        None => ExitStatus::Command(status),
    };
    let report = loop {
        let view = inspect::kernel_view(&gate.ports)?;
        let quick = gate.one(&view, address, false);
        if quick.verdict == Verdict::Free {
            return Ok(done(true));
        }
        if Instant::now() >= deadline || interrupted().is_some() {
            break gate.one(&view, address, true);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    };
    // The linger check is over: stop the watch and name the openers.
    let stopped = attribution.stop();
    let (holders, hidden) = forensic::holders(&report, &stopped.openers);
    let attribution = stopped.status(&holders);
    let mut forensic = Forensic {
        schema: forensic::SCHEMA,
        interrupted_by: interrupted().map(signal_name),
        address,
        ports: gate.ports.clone(),
        command: options
            .command
            .iter()
            .map(|w| crate::text::Bytes(w.as_encoded_bytes().to_vec()))
            .collect(),
        command_status: status,
        command_exited: exited,
        linger_seconds: started.elapsed().as_secs_f64(),
        verdict: report.verdict,
        holders,
        hidden,
        quarantined: true,
        reaped: Vec::new(),
        attribution,
        inspection: report,
    };
    if options.reap {
        let pids: Vec<u32> = forensic.holders.iter().map(|h| h.pid).collect();
        forensic.reaped = reap::reap(&pids, options.grace, false);
        let view = inspect::kernel_view(&gate.ports)?;
        if gate.one(&view, address, false).verdict == Verdict::Free {
            forensic.quarantined = false;
        }
    }
    if forensic.quarantined {
        let (store, mut state) = gate.open()?;
        state.quarantine.retain(|q| q.address != address);
        state.quarantine.push(Quarantine {
            address,
            since: state::now(),
            reason: crate::gate::summary(&forensic.inspection),
            report: options.report.clone(),
        });
        store.save(&state)?;
    }
    gate.output.note(&forensic::markdown(&forensic));
    if let Some(path) = &options.report {
        forensic::write(&forensic, path)?;
    }
    Ok(done(false))
}

/// `SIGTERM` for 15.
fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        other => format!("signal {other}"),
    }
}

fn command_status(status: u8) -> ExitStatus {
    if status == 0 {
        ExitStatus::Free
    } else {
        ExitStatus::Command(status)
    }
}

/// Fails early (exit 2, nothing changed) when the report cannot be written.
fn check_writable(path: &std::path::Path) -> Result<(), Error> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if !parent.is_dir() || rustix::fs::access(parent, rustix::fs::Access::WRITE_OK).is_err() {
        return Err(Error::Usage(format!(
            "--report: cannot write {} (its directory is missing or not writable)",
            path.display()
        )));
    }
    Ok(())
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
