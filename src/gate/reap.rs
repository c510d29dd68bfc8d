//! Ending the processes that hold an address: SIGTERM, then SIGKILL after
//! a grace period for those still alive. Used by `sockcheck reap` and by
//! `run --reap`.
//!
//! Signals go through a pidfd opened while the process is still the one
//! that was found (same pid and start time), so a recycled pid is never
//! hit. sockcheck never signals pid 1, itself, or one of its ancestors (the
//! shell or CI runner that started it), and says so.

use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use schemars::JsonSchema;
use serde::Serialize;

use super::state::ProcessId;

/// What was done to one process, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Reaped {
    pub pid: u32,
    /// `SIGTERM` (it exited), `SIGTERM, then SIGKILL`, `gone` when it had
    /// exited already, `not permitted` (another user's process),
    /// `would signal` (`--dry-run`), or `skipped: …` (pid 1, sockcheck, an
    /// ancestor of sockcheck).
    pub action: String,
    pub exited: bool,
}

impl Reaped {
    fn new(pid: u32, action: impl Into<String>, exited: bool) -> Reaped {
        Reaped {
            pid,
            action: action.into(),
            exited,
        }
    }
}

/// Why sockcheck will not signal `pid`, if it will not.
pub fn protected(pid: u32) -> Option<&'static str> {
    if pid == 1 {
        return Some("skipped: pid 1 (init) is never signalled");
    }
    if pid == std::process::id() {
        return Some("skipped: sockcheck itself");
    }
    if ancestors().contains(&pid) {
        return Some("skipped: an ancestor of sockcheck (the shell or runner that started it)");
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

/// SIGTERM to each of `pids` (SIGCONT too, so a stopped one acts on it),
/// then SIGKILL to those still alive after `grace`. With `dry_run`, says
/// what it would do and signals nothing. The result is sorted by pid.
pub fn reap(pids: &[u32], grace: Duration, dry_run: bool) -> Vec<Reaped> {
    let mut done = Vec::new();
    let mut targets = Vec::new();
    let mut pids = pids.to_vec();
    pids.sort_unstable();
    pids.dedup();
    for pid in pids {
        if let Some(why) = protected(pid) {
            done.push(Reaped::new(pid, why, false));
            continue;
        }
        let (Some(id), Some(raw)) = (ProcessId::of(pid), Pid::from_raw(pid as i32)) else {
            done.push(Reaped::new(pid, "gone", true));
            continue;
        };
        let Ok(pidfd) = pidfd_open(raw, PidfdFlags::empty()) else {
            done.push(Reaped::new(pid, "gone", true));
            continue;
        };
        if ProcessId::of(pid) != Some(id) {
            done.push(Reaped::new(pid, "gone", true)); // recycled meanwhile
            continue;
        }
        // Signal 0 tells whether we may signal it, without doing so.
        match pidfd_send_signal_checked(&pidfd, None) {
            Err(Errno::PERM) => {
                done.push(Reaped::new(pid, "not permitted", false));
                continue;
            }
            Err(_) => {
                done.push(Reaped::new(pid, "gone", true));
                continue;
            }
            Ok(()) => {}
        }
        if dry_run {
            done.push(Reaped::new(pid, "would signal", false));
            continue;
        }
        let _ = pidfd_send_signal(&pidfd, Signal::TERM);
        let _ = pidfd_send_signal(&pidfd, Signal::CONT);
        targets.push((id, pidfd));
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && targets.iter().any(|(id, _)| id.alive()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (id, pidfd) in targets {
        if !id.alive() {
            done.push(Reaped::new(id.pid, "SIGTERM", true));
            continue;
        }
        let _ = pidfd_send_signal(&pidfd, Signal::KILL);
        let until = Instant::now() + Duration::from_secs(2);
        while id.alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        done.push(Reaped::new(id.pid, "SIGTERM, then SIGKILL", !id.alive()));
    }
    done.sort_by_key(|r| r.pid);
    done
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_sockcheck_and_its_ancestors_are_never_signalled() {
        let me = std::process::id();
        let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get() as u32);
        let reaped = reap(&[1, me, parent], Duration::ZERO, false);
        assert_eq!(reaped.len(), if parent == 1 { 2 } else { 3 });
        for r in &reaped {
            assert!(r.action.starts_with("skipped: "), "{r:?}");
            assert!(!r.exited);
        }
    }

    #[test]
    fn a_dry_run_signals_nothing_and_a_real_one_ends_the_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let reaped = reap(&[pid], Duration::from_secs(2), true);
        assert_eq!(reaped, [Reaped::new(pid, "would signal", false)]);
        assert!(ProcessId::of(pid).is_some(), "a dry run killed it");
        // Our own child: reaped only once waited for, so wait in the
        // background while reap watches it go.
        let waiter = std::thread::spawn(move || child.wait());
        let reaped = reap(&[pid], Duration::from_secs(2), false);
        waiter.join().unwrap().unwrap();
        assert_eq!(reaped, [Reaped::new(pid, "SIGTERM", true)]);
    }
}

/// What `sockcheck reap --json` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReapReport {
    pub schema: u32,
    pub address: std::net::IpAddr,
    pub ports: Vec<u16>,
    pub dry_run: bool,
    /// The verdict before and after.
    pub before: crate::report::Verdict,
    pub after: crate::report::Verdict,
    pub reaped: Vec<Reaped>,
    /// The uids of holders that could not be read (another user's
    /// processes): not permitted, so not signalled.
    pub hidden: Vec<u32>,
}

/// The pids holding listeners that cover the address (itself,
/// `::ffff:ADDR`, or a wildcard), and the uids of hidden holders.
pub fn holders(address: &crate::report::AddressReport) -> (Vec<u32>, Vec<u32>) {
    let mut pids = Vec::new();
    let mut hidden = Vec::new();
    for owner in address
        .ports
        .iter()
        .flat_map(|p| &p.listeners)
        .flat_map(|l| &l.owners)
    {
        match (owner.pid, owner.uid) {
            (Some(pid), _) => pids.push(pid),
            (None, uid) => hidden.push(uid.unwrap_or(0)),
        }
    }
    pids.sort_unstable();
    pids.dedup();
    hidden.sort_unstable();
    hidden.dedup();
    (pids, hidden)
}

/// The human lines of a reap: one per process, then the outcome.
pub fn render(report: &ReapReport, comms: &std::collections::BTreeMap<u32, String>) -> String {
    let mut text = String::new();
    for r in &report.reaped {
        let comm = comms
            .get(&r.pid)
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let fate = match (r.exited, r.action.as_str()) {
            (true, "gone") => "",
            (true, _) => ", exited",
            (false, "SIGTERM, then SIGKILL") => ", still alive",
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
