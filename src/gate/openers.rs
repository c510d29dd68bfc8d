//! Thread attribution for `run`: a BPF watch, attached before the command
//! starts, that remembers which thread put each socket on the leased address
//! into LISTEN. A lingering listener's `opened_by` in the forensic report
//! comes from here.
//!
//! The watch is drained by a thread of its own every 100 ms, so a long
//! command seldom fills the ring buffer; when a burst does, the program
//! counts the events it had no room for, and the report's attribution says
//! so (an opener may then be missing). The watch is stopped (and the
//! program unloaded) once the linger check is over.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::bpf::{self, ListenChange, WatchHook, Watcher};
use crate::inspect::{self, BpfMode};
use crate::report::{SourceStatus, Status};
use crate::text::Bytes;

use super::forensic::{Holder, Opener};

/// How often the drain thread empties the ring buffer.
const DRAIN: Duration = Duration::from_millis(100);

/// A running watch, or why there is none.
#[derive(Debug)]
pub enum Attribution {
    Watching(OpenerWatch),
    Off(SourceStatus),
}

/// The drain thread of a running watch. Dropping it stops the watch.
#[derive(Debug)]
pub struct OpenerWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Drained>>,
    hook: WatchHook,
}

/// What the drain thread saw.
#[derive(Debug, Default)]
struct Drained {
    openers: BTreeMap<u64, Opener>,
    /// Events on the ports the ring buffer had no room for.
    lost: u64,
    error: Option<String>,
}

/// The watch, stopped: the openers it saw and how it went.
#[derive(Debug)]
pub struct Stopped {
    pub openers: BTreeMap<u64, Opener>,
    outcome: Result<Watched, SourceStatus>,
}

/// How a watch that ran went.
#[derive(Debug)]
struct Watched {
    hook: WatchHook,
    lost: u64,
    error: Option<String>,
}

impl Attribution {
    /// Starts watching listen() on `ports` for listeners that cover
    /// `address`. Returns once the program is attached (or could not be).
    pub fn start(mode: BpfMode, address: IpAddr, ports: &[u16]) -> Attribution {
        if mode == BpfMode::Never {
            return Attribution::Off(SourceStatus::new(
                Status::Skipped,
                "disabled by --bpf never",
            ));
        }
        if let Err(reason) = bpf::availability() {
            return Attribution::Off(SourceStatus::new(Status::Unavailable, reason.to_string()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let ports = ports.to_vec();
        let thread = {
            let stop = stop.clone();
            // The drain thread must never take a signal meant for `run` (it
            // passes them on to its command): it starts with all blocked.
            let _mask = BlockAll::new();
            std::thread::Builder::new()
                .name("sockcheck-watch".into())
                .spawn(move || drain(&ports, address, &stop, ready_tx))
        };
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                return Attribution::Off(SourceStatus::new(
                    Status::Unavailable,
                    format!("watch failed to start: {e}"),
                ));
            }
        };
        match ready_rx.recv() {
            Ok(Ok(hook)) => Attribution::Watching(OpenerWatch {
                stop,
                thread: Some(thread),
                hook,
            }),
            Ok(Err(why)) => {
                let _ = thread.join();
                Attribution::Off(SourceStatus::new(
                    Status::Unavailable,
                    format!("watch failed to attach: {why}"),
                ))
            }
            Err(_) => {
                let _ = thread.join();
                Attribution::Off(SourceStatus::new(
                    Status::Unavailable,
                    "watch failed to attach: its thread ended",
                ))
            }
        }
    }

    /// One line for `--verbose`.
    pub fn describe(&self) -> String {
        match self {
            Attribution::Watching(watch) => {
                format!(
                    "thread attribution: watching listen() ({})",
                    hook_name(watch.hook)
                )
            }
            Attribution::Off(status) => {
                format!("thread attribution {}: {}", status.status, status.detail)
            }
        }
    }

    /// Stops the watch (unloading its program) and returns what it saw.
    pub fn stop(self) -> Stopped {
        match self {
            Attribution::Off(status) => Stopped {
                openers: BTreeMap::new(),
                outcome: Err(status),
            },
            Attribution::Watching(mut watch) => {
                watch.stop.store(true, Ordering::Relaxed);
                let drained = match watch.thread.take().map(JoinHandle::join) {
                    Some(Ok(drained)) => drained,
                    _ => Drained {
                        error: Some("the watch thread panicked".into()),
                        ..Drained::default()
                    },
                };
                Stopped {
                    openers: drained.openers,
                    outcome: Ok(Watched {
                        hook: watch.hook,
                        lost: drained.lost,
                        error: drained.error,
                    }),
                }
            }
        }
    }
}

impl Drop for OpenerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Stopped {
    /// The report's `attribution`, given the holders (with `opened_by`
    /// filled in from [`Stopped::openers`]).
    pub fn status(&self, holders: &[Holder]) -> SourceStatus {
        let Watched { hook, lost, error } = match &self.outcome {
            Err(status) => return status.clone(),
            Ok(watched) => watched,
        };
        let total = holders.iter().map(|h| h.listeners.len()).sum::<usize>();
        let named = holders
            .iter()
            .flat_map(|h| &h.listeners)
            .filter(|l| l.opened_by.is_some())
            .count();
        let via = hook_name(*hook);
        let lost = match lost {
            0 => None,
            1 => Some("the watch lost 1 event (its ring buffer was full)".to_owned()),
            n => Some(format!(
                "the watch lost {n} events (its ring buffer was full)"
            )),
        };
        match (error, lost) {
            (Some(error), lost) => SourceStatus::new(
                Status::Partial,
                format!(
                    "{via}: {named} of {total} lingering listeners named; the watch failed \
                     while running: {error}{}",
                    lost.map(|l| format!("; {l}")).unwrap_or_default()
                ),
            ),
            (None, lost) if named == total => SourceStatus::new(
                Status::Used,
                match (total, lost) {
                    (0, None) => format!("{via}: no lingering listener to name"),
                    (0, Some(lost)) => format!("{via}: no lingering listener to name; {lost}"),
                    (_, None) => format!("{via}: {named} of {total} lingering listeners named"),
                    (_, Some(lost)) => format!(
                        "{via}: {named} of {total} lingering listeners named; {lost}, none \
                         of them an opener the report needs"
                    ),
                },
            ),
            (None, None) => SourceStatus::new(
                Status::Partial,
                format!(
                    "{via}: {named} of {total} lingering listeners named; the others entered \
                     LISTEN before the command started, or in another pid namespace"
                ),
            ),
            (None, Some(lost)) => SourceStatus::new(
                Status::Partial,
                format!(
                    "{via}: {named} of {total} lingering listeners named; {lost}, so an \
                     opener may be missing (or the others entered LISTEN before the command \
                     started, or in another pid namespace)"
                ),
            ),
        }
    }
}

fn hook_name(hook: WatchHook) -> &'static str {
    match hook {
        WatchHook::TracePoint => "tracepoint sock/inet_sock_set_state",
        WatchHook::BtfTracePoint => "tp_btf inet_sock_set_state",
    }
}

/// The drain thread: attaches, says so, then records the first opener of
/// every socket covering `address` until told to stop.
fn drain(
    ports: &[u16],
    address: IpAddr,
    stop: &AtomicBool,
    ready: mpsc::SyncSender<Result<WatchHook, String>>,
) -> Drained {
    let mut watcher = match Watcher::new(ports) {
        Ok(watcher) => watcher,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return Drained::default();
        }
    };
    let _ = ready.send(Ok(watcher.hook()));
    let mut drained = Drained::default();
    loop {
        // Read `stop` before polling: events of listen() calls made before
        // `stop` was set are already in the ring buffer, so the last poll
        // (timeout zero) sees them all.
        let last = stop.load(Ordering::Relaxed);
        let timeout = if last { Duration::ZERO } else { DRAIN };
        match watcher.poll(timeout) {
            Ok(events) => {
                for event in events {
                    let covers = inspect::coverage(address, event.addr, None).is_some();
                    if event.kind == ListenChange::Listen
                        && covers
                        && event.inode != 0
                        && event.tid != 0
                    {
                        drained.openers.entry(event.inode).or_insert(Opener {
                            tid: event.tid,
                            comm: Bytes(event.comm),
                        });
                    }
                }
            }
            Err(e) => {
                drained.error = Some(e.to_string());
                break;
            }
        }
        if last {
            break;
        }
    }
    match watcher.lost() {
        Ok(lost) => drained.lost = lost,
        Err(e) => {
            drained.error.get_or_insert(e.to_string());
        }
    }
    drop(watcher);
    drained
}

/// Every signal blocked in this thread while it lives (so threads spawned
/// meanwhile start with all blocked); the old mask comes back on drop.
struct BlockAll {
    old: libc::sigset_t,
}

impl BlockAll {
    fn new() -> BlockAll {
        // SAFETY: plain libc calls on local sigsets.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            BlockAll { old }
        }
    }
}

impl Drop for BlockAll {
    fn drop(&mut self) {
        // SAFETY: restoring this thread's own mask.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(lost: u64) -> Stopped {
        Stopped {
            openers: BTreeMap::new(),
            outcome: Ok(Watched {
                hook: WatchHook::BtfTracePoint,
                lost,
                error: None,
            }),
        }
    }

    #[test]
    fn attribution_says_when_the_watch_lost_events() {
        let quiet = stopped(0).status(&[]);
        assert_eq!(quiet.status, Status::Used);
        assert!(!quiet.detail.contains("lost"), "{}", quiet.detail);
        let lossy = stopped(7).status(&[]);
        assert_eq!(lossy.status, Status::Used);
        assert!(
            lossy
                .detail
                .ends_with("; the watch lost 7 events (its ring buffer was full)"),
            "{}",
            lossy.detail
        );
    }
}
