//! Pinning and signalling the holders [`super::reap`] found: a pidfd
//! opened right after the inspection and checked against its start time
//! ([`pin`]); before each signal, a check that the process still holds one
//! of the inspected sockets ([`confirm`]); and the processes never to be
//! signalled ([`protected`]).

use std::collections::{BTreeMap, HashSet};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

use super::reap::{Action, Reaped};
use super::state::{Liveness, ProcessId};

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
