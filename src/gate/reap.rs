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

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use schemars::JsonSchema;
use serde::Serialize;

use super::Gate;
use super::state::{Liveness, ProcessId};
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
    fn new(pid: u32, action: Action, exited: bool) -> Reaped {
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

/// Why sockcheck will not signal `pid`, if it will not.
pub fn protected(pid: u32) -> Option<Action> {
    if pid == 1 {
        return Some(Action::SkippedInit);
    }
    if pid == std::process::id() {
        return Some(Action::SkippedSelf);
    }
    if ancestors().contains(&pid) {
        return Some(Action::SkippedAncestor);
    }
    None
}

/// sockcheck's parent, its parent, … up to pid 1.
fn ancestors() -> Vec<u32> {
    let mut chain = Vec::new();
    let mut pid = std::process::id() as i32;
    while let Some(parent) = procfs::process::Process::new(pid)
        .ok()
        .and_then(|p| p.stat().ok())
        .map(|s| s.ppid)
        .filter(|&ppid| ppid > 1 && !chain.contains(&(ppid as u32)))
    {
        chain.push(parent as u32);
        pid = parent;
    }
    chain
}

/// A process an inspection found holding sockets: the only thing reap
/// signals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    /// Its start time (clock ticks since boot) as the inspection read it;
    /// `None` when it could not be read (it had exited).
    pub start_ticks: Option<u64>,
    /// The inodes of the sockets it held.
    pub inodes: Vec<u64>,
}

impl From<&super::forensic::Holder> for Found {
    fn from(holder: &super::forensic::Holder) -> Found {
        Found {
            pid: holder.pid,
            start_ticks: holder.process.start_ticks,
            inodes: holder
                .listeners
                .iter()
                .map(|l| l.inode)
                .chain(holder.sockets.iter().map(|s| s.inode))
                .filter(|&inode| inode != 0)
                .collect(),
        }
    }
}

/// A found process held by a pidfd that is known to be the process the
/// inspection found.
#[derive(Debug)]
pub struct Pinned {
    id: ProcessId,
    inodes: HashSet<u64>,
    pidfd: OwnedFd,
}

/// The found processes, pinned; and those that will not be signalled, with
/// why.
#[derive(Debug, Default)]
pub struct Pins {
    pinned: Vec<Pinned>,
    done: Vec<Reaped>,
}

/// Opens a pidfd for each found process (one per pid, with the sockets of
/// every entry for it) and keeps it if the process behind it has the start
/// time the inspection read: else that pid is someone else's now, `gone`.
/// Call it right after the inspection.
pub fn pin(found: &[Found]) -> Pins {
    test_pause("SOCKCHECK_TEST_PAUSE_BEFORE_PIN");
    let mut by_pid: BTreeMap<u32, Found> = BTreeMap::new();
    for f in found {
        let entry = by_pid.entry(f.pid).or_insert_with(|| Found {
            inodes: Vec::new(),
            ..f.clone()
        });
        entry.inodes.extend(&f.inodes);
    }
    let mut pins = Pins::default();
    for (pid, found) in by_pid {
        if let Some(why) = protected(pid) {
            pins.done.push(Reaped::new(pid, why, false));
            continue;
        }
        let (Some(start_ticks), Some(raw)) = (found.start_ticks, Pid::from_raw(pid as i32)) else {
            pins.done.push(Reaped::new(pid, Action::Gone, true));
            continue;
        };
        let id = ProcessId { pid, start_ticks };
        // Opened first, then checked: the pidfd is then the process with
        // that start time, whatever becomes of the pid later.
        let pidfd = match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(pidfd) if id.liveness() == Liveness::Alive => pidfd,
            _ => {
                pins.done.push(Reaped::new(pid, Action::Gone, true));
                continue;
            }
        };
        pins.pinned.push(Pinned {
            id,
            inodes: found.inodes.into_iter().collect(),
            pidfd,
        });
    }
    pins
}

/// Whether a pinned process may be signalled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Alive, and it holds one of the sockets.
    Holds,
    /// It has exited.
    Gone,
    /// Alive, holding none of the sockets.
    Released,
    /// Another user's, or its fd table cannot be read.
    NotPermitted,
}

/// Confirms, through its pidfd, that a pinned process is alive and still
/// holds one of its sockets. The pidfd is asked before and after /proc is
/// read: when it still answers, the process was never reaped, so its pid
/// (and /proc/PID) were its own throughout.
fn confirm(pinned: &Pinned) -> Check {
    match pidfd_send_signal_checked(&pinned.pidfd, None) {
        Err(Errno::PERM) => return Check::NotPermitted,
        Err(_) => return Check::Gone,
        Ok(()) => {}
    }
    if pinned.id.liveness() != Liveness::Alive {
        return Check::Gone; // exited, not yet reaped by its parent
    }
    let holds = crate::owners::holds(pinned.id.pid, &pinned.inodes);
    if pidfd_send_signal_checked(&pinned.pidfd, None).is_err() {
        return Check::Gone;
    }
    match holds {
        Some(true) => Check::Holds,
        Some(false) => Check::Released,
        None => Check::NotPermitted,
    }
}

/// SIGTERM to each pinned process that still holds its sockets (SIGCONT
/// too, so a stopped one acts on it), then SIGKILL to those still alive
/// and holding them after `grace`. With `dry_run`, says what it would do
/// and signals nothing. The result is sorted by pid.
pub fn signal(pins: Pins, grace: Duration, dry_run: bool) -> Vec<Reaped> {
    test_pause("SOCKCHECK_TEST_PAUSE_BEFORE_SIGNAL");
    let Pins { pinned, mut done } = pins;
    let mut targets = Vec::new();
    for p in pinned {
        let pid = p.id.pid;
        match confirm(&p) {
            Check::Holds => {}
            Check::Gone => {
                done.push(Reaped::new(pid, Action::Gone, true));
                continue;
            }
            Check::Released => {
                done.push(Reaped::new(pid, Action::NoLongerHolds, false));
                continue;
            }
            Check::NotPermitted => {
                done.push(Reaped::new(pid, Action::NotPermitted, false));
                continue;
            }
        }
        if dry_run {
            done.push(Reaped::new(pid, Action::WouldSignal, false));
            continue;
        }
        if pidfd_send_signal(&p.pidfd, Signal::TERM).is_err() {
            done.push(Reaped::new(pid, Action::Gone, true));
            continue;
        }
        let _ = pidfd_send_signal(&p.pidfd, Signal::CONT);
        targets.push(p);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && targets.iter().any(|p| p.id.alive()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in targets {
        let pid = p.id.pid;
        let action = match confirm(&p) {
            Check::Gone => Action::Sigterm,
            Check::Released => Action::SigtermThenReleased,
            Check::NotPermitted => Action::NotPermitted,
            Check::Holds => {
                if pidfd_send_signal(&p.pidfd, Signal::KILL).is_ok() {
                    let until = Instant::now() + Duration::from_secs(2);
                    while p.id.alive() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Action::SigtermThenSigkill
            }
        };
        done.push(Reaped::new(pid, action, !p.id.alive()));
    }
    done.sort_by_key(|r| r.pid);
    done
}

/// [`pin`], then [`signal`]: what `run --reap` does with its holders.
pub fn reap(found: &[Found], grace: Duration, dry_run: bool) -> Vec<Reaped> {
    signal(pin(found), grace, dry_run)
}

/// For the tests only (tests/it/reap.rs), never set otherwise: when the
/// environment variable `var` names a path, creates that file and waits
/// until it is removed, so that a test can recycle a pid or close a socket
/// between two steps of a reap.
fn test_pause(var: &str) {
    let Some(path) = std::env::var_os(var) else {
        return;
    };
    if std::fs::write(&path, b"paused\n").is_err() {
        return;
    }
    while std::fs::exists(&path).unwrap_or(false) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pidfd_send_signal(pidfd, sig)`, where None is signal 0: the checks
/// only, nothing sent.
fn pidfd_send_signal_checked(
    pidfd: &std::os::fd::OwnedFd,
    signal: Option<Signal>,
) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    let number = signal.map_or(0, |s| s.as_raw());
    // SAFETY: a plain syscall on a valid fd, with no siginfo and no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            number,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL))
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
    gate: &Gate,
    address: IpAddr,
    grace: Duration,
    dry_run: bool,
) -> Result<ExitStatus, Error> {
    let view = inspect::kernel_view(&gate.ports)?;
    let before = inspect::inspect_view(&gate.query(vec![address], true), &view)
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
        let view = inspect::kernel_view(&gate.ports)?;
        gate.one(&view, address, false).verdict
    };
    let report = ReapReport {
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
        gate.output.print(&render(&report, &comms))?;
    }
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
pub fn render(report: &ReapReport, comms: &BTreeMap<u32, String>) -> String {
    let mut text = String::new();
    for r in &report.reaped {
        let comm = comms
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What an inspection would find of `pid` now, holding `inodes`.
    fn found(pid: u32, inodes: &[u64]) -> Found {
        Found {
            pid,
            start_ticks: ProcessId::of(pid).map(|id| id.start_ticks),
            inodes: inodes.to_vec(),
        }
    }

    /// `sleep 30` holding a listener on 127.81.0.1 as its stdin; its
    /// child handle and the listener's inode.
    fn sleeper_with_a_listener() -> (std::process::Child, u64) {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.81.0.1:0").unwrap();
        let inode = std::fs::File::from(OwnedFd::from(listener.try_clone().unwrap()))
            .metadata()
            .unwrap()
            .ino();
        let child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(OwnedFd::from(listener))
            .spawn()
            .unwrap();
        (child, inode)
    }

    #[test]
    fn init_sockcheck_and_its_ancestors_are_never_signalled() {
        let me = std::process::id();
        let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
        let reaped = reap(
            &[found(1, &[1]), found(me, &[1]), found(parent, &[1])],
            Duration::ZERO,
            false,
        );
        assert_eq!(reaped.len(), if parent == 1 { 2 } else { 3 });
        for r in &reaped {
            assert!(r.action.as_str().starts_with("skipped: "), "{r:?}");
            assert!(!r.exited);
        }
    }

    #[test]
    fn a_dry_run_signals_nothing_and_a_real_one_ends_the_process() {
        let (mut child, inode) = sleeper_with_a_listener();
        let pid = child.id();
        let reaped = reap(&[found(pid, &[inode])], Duration::from_secs(2), true);
        assert_eq!(reaped, [Reaped::new(pid, Action::WouldSignal, false)]);
        assert!(ProcessId::of(pid).is_some(), "a dry run killed it");
        // Our own child: reaped only once waited for, so wait in the
        // background while reap watches it go.
        let waiter = std::thread::spawn(move || child.wait());
        let reaped = reap(&[found(pid, &[inode])], Duration::from_secs(2), false);
        waiter.join().unwrap().unwrap();
        assert_eq!(reaped, [Reaped::new(pid, Action::Sigterm, true)]);
    }

    #[test]
    fn a_process_that_does_not_hold_the_socket_is_not_signalled() {
        let (mut child, inode) = sleeper_with_a_listener();
        let pid = child.id();
        let other = found(pid, &[inode + 1]);
        // Another start time: another process of that pid, never opened.
        let earlier = Found {
            start_ticks: other.start_ticks.map(|t| t.saturating_sub(1)),
            inodes: vec![inode],
            ..other.clone()
        };
        let reaped = [
            reap(&[other], Duration::ZERO, false),
            reap(&[earlier], Duration::ZERO, false),
        ];
        let alive = ProcessId::of(pid).is_some();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            reaped,
            [
                [Reaped::new(pid, Action::NoLongerHolds, false)],
                [Reaped::new(pid, Action::Gone, true)]
            ]
        );
        assert!(alive, "it was signalled");
    }

    #[test]
    fn actions_serialize_as_their_strings() {
        for action in [
            Action::Sigterm,
            Action::SigtermThenSigkill,
            Action::SigtermThenReleased,
            Action::Gone,
            Action::NoLongerHolds,
            Action::NotPermitted,
            Action::WouldSignal,
            Action::SkippedInit,
            Action::SkippedSelf,
            Action::SkippedAncestor,
        ] {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }
}
