//! Which eBPF path each feature takes on this kernel, and why it fell back.
//!
//! Two features have a preferred path and a fallback:
//!
//! - owners ([`super::task_files`]): the fd walk (`iter/task` with
//!   `bpf_loop`, 5.17+, `bpf/iter_task_fds.bpf.c`), else `iter/task_file`
//!   (5.8+);
//! - the watch and `run`'s attribution ([`Watcher::new`]): the tracepoint
//!   `sock/inet_sock_set_state` where tracefs is mounted, else `tp_btf`.
//!
//! Each choice is remembered for the process ([`owners_taken`],
//! [`watch_taken`]), so that `-v` can say which path ran and why. [`probe`]
//! runs each path once, for `sockcheck doctor`.

use std::sync::Mutex;

use super::owners::{TASK_FILE_PROGRAM, WALK_PROGRAM, iterate_task_files, walk_fd_tables};
use super::{BpfError, Unavailable, WatchHook, Watcher, availability, tcp_listeners};

/// How the owners of sockets are found through eBPF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerPath {
    /// `iter/task` walking each fd table with `bpf_loop` (5.17+).
    FdWalk,
    /// `iter/task_file`, one program run per open file (5.8+).
    TaskFile,
}

impl OwnerPath {
    /// The iterator's name, as `SOCKCHECK_BPF_TRACE` prints it.
    pub fn program(self) -> &'static str {
        match self {
            Self::FdWalk => WALK_PROGRAM,
            Self::TaskFile => TASK_FILE_PROGRAM,
        }
    }

    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::FdWalk => "the fd walk: iter/task with bpf_loop",
            Self::TaskFile => "iter/task_file",
        }
    }
}

impl WatchHook {
    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TracePoint => "tracepoint sock/inet_sock_set_state",
            Self::BtfTracePoint => "tp_btf inet_sock_set_state",
        }
    }
}

/// A path taken, and why the preferred one was not (None when it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken<P> {
    pub path: P,
    pub fell_back: Option<String>,
}

impl<P> Taken<P> {
    pub(super) fn new(path: P, fell_back: Option<String>) -> Self {
        Self { path, fell_back }
    }
}

static OWNERS: Mutex<Option<Taken<OwnerPath>>> = Mutex::new(None);
static WATCH: Mutex<Option<Taken<WatchHook>>> = Mutex::new(None);

fn remember<P: Clone>(slot: &Mutex<Option<Taken<P>>>, taken: &Taken<P>) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(taken.clone());
}

/// The owner path the last [`super::task_files`] of this process took.
pub fn owners_taken() -> Option<Taken<OwnerPath>> {
    OWNERS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The hook the last [`Watcher`] of this process attached.
pub fn watch_taken() -> Option<Taken<WatchHook>> {
    WATCH.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Remembers the owner path [`super::task_files`] took.
pub(super) fn note_owners(taken: Taken<OwnerPath>) {
    remember(&OWNERS, &taken);
}

/// Remembers the hook a [`Watcher`] attached.
pub(super) fn note_watch(taken: Taken<WatchHook>) {
    remember(&WATCH, &taken);
}

/// Why the tracepoint is not used: its error, or tracefs not mounted.
pub(super) fn tracepoint_not_used(error: Option<&BpfError>) -> String {
    match error {
        Some(error) => format!("the tracepoint failed: {}", one_line(error)),
        None => no_tracefs(),
    }
}

/// Why the fd walk was not used, in one line: the error with the first line
/// of the verifier's log (all of it: `SOCKCHECK_BPF_TRACE=1`), and where the
/// kernel is older than 5.17, that `bpf_loop` came with 5.17.
pub(super) fn walk_failed(error: &BpfError) -> String {
    let mut why = format!("the fd walk failed: {}", one_line(error));
    if let Some(version @ (major, minor)) = crate::sys::kernel_version()
        && version < (5, 17)
    {
        why.push_str(&format!(
            "; this kernel ({major}.{minor}) is older than 5.17, which added bpf_loop"
        ));
    }
    why
}

/// An error on one line: a loader error keeps the first line of the
/// verifier's log only.
pub fn one_line(error: &BpfError) -> String {
    let text = error.to_string();
    match text.split_once("Verifier output:") {
        Some((head, log)) => {
            let first = log.lines().map(str::trim).find(|l| !l.is_empty());
            let head = head.trim_end().trim_end_matches('.');
            match first {
                Some(first) => format!("{head} (verifier: {first})"),
                None => head.to_string(),
            }
        }
        None => text.lines().next().unwrap_or("").to_string(),
    }
}

fn no_tracefs() -> String {
    format!(
        "tracefs is not mounted (no {}), which the tracepoint needs",
        crate::sys::TRACEFS_EVENTS.join(" nor ")
    )
}

/// What [`probe`] found: each path run once on this kernel.
#[derive(Debug)]
pub struct Probe {
    /// The fd walk, with a socket inode no process holds.
    pub fd_walk: Result<(), BpfError>,
    /// `iter/task_file`, the same way.
    pub task_file: Result<(), BpfError>,
    /// `iter/tcp` over every listener.
    pub iter_tcp: Result<(), BpfError>,
    /// The tracepoint, attached and dropped (Err without tracefs).
    pub tracepoint: Result<(), String>,
    /// `tp_btf`, attached and dropped.
    pub tp_btf: Result<(), BpfError>,
}

impl Probe {
    /// The owner path [`super::task_files`] takes here, or why none works.
    pub fn owners(&self) -> Result<Taken<OwnerPath>, String> {
        match (&self.fd_walk, &self.task_file) {
            (Ok(()), _) => Ok(Taken::new(OwnerPath::FdWalk, None)),
            (Err(walk), Ok(())) => Ok(Taken::new(OwnerPath::TaskFile, Some(walk_failed(walk)))),
            (Err(walk), Err(task_file)) => Err(format!(
                "{}; iter/task_file failed: {}",
                walk_failed(walk),
                one_line(task_file)
            )),
        }
    }

    /// The hook [`Watcher::new`] takes here, or why none works.
    pub fn watch(&self) -> Result<Taken<WatchHook>, String> {
        match (&self.tracepoint, &self.tp_btf) {
            (Ok(()), _) => Ok(Taken::new(WatchHook::TracePoint, None)),
            (Err(tracepoint), Ok(())) => Ok(Taken::new(
                WatchHook::BtfTracePoint,
                Some(tracepoint.clone()),
            )),
            (Err(tracepoint), Err(tp_btf)) => {
                Err(format!("{tracepoint}; tp_btf failed: {}", one_line(tp_btf)))
            }
        }
    }
}

/// Runs every eBPF path once (loads, verifies, attaches, iterates, drops):
/// what works on this kernel, for this process. Err when eBPF is not
/// available at all. Takes a few ms with a warm BTF cache.
pub fn probe() -> Result<Probe, Unavailable> {
    availability()?;
    // An inode no socket has: the iterators run over every task and find
    // nothing. (Inode numbers are 32-bit in practice; u64::MAX is never one.)
    let nothing = [u64::MAX];
    let tracepoint = if crate::sys::tracefs_mounted() {
        Watcher::with_hook(&[], WatchHook::TracePoint)
            .map(drop)
            .map_err(|e| tracepoint_not_used(Some(&e)))
    } else {
        Err(no_tracefs())
    };
    Ok(Probe {
        fd_walk: walk_fd_tables(&nothing).map(drop),
        task_file: iterate_task_files(&nothing).map(drop),
        iter_tcp: tcp_listeners(&[]).map(drop),
        tracepoint,
        tp_btf: Watcher::with_hook(&[], WatchHook::BtfTracePoint).map(drop),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(text: &str) -> BpfError {
        BpfError::Io {
            step: "loading",
            program: WALK_PROGRAM,
            error: std::io::Error::other(text.to_string()),
        }
    }

    #[test]
    fn one_line_keeps_the_first_line_of_the_verifier() {
        let e = io(
            "BPF_PROG_LOAD returned Invalid argument (os error 22). Verifier output: \
                    number of funcs in func_info doesn't match number of subprogs\n\
                    verification time 169 usec\nprocessed 0 insns\n",
        );
        assert_eq!(
            one_line(&e),
            "loading iter/task failed: BPF_PROG_LOAD returned Invalid argument (os error 22) \
             (verifier: number of funcs in func_info doesn't match number of subprogs)"
        );
        assert_eq!(one_line(&io("a\nb")), "loading iter/task failed: a");
    }

    #[test]
    fn a_failed_walk_says_why_and_the_fallback_is_named() {
        let probe = Probe {
            fd_walk: Err(io("no bpf_loop")),
            task_file: Ok(()),
            iter_tcp: Ok(()),
            tracepoint: Err(no_tracefs()),
            tp_btf: Ok(()),
        };
        let owners = probe.owners().unwrap();
        assert_eq!(owners.path, OwnerPath::TaskFile);
        let why = owners.fell_back.unwrap();
        assert!(
            why.starts_with("the fd walk failed: loading iter/task failed: no bpf_loop"),
            "{why}"
        );
        let watch = probe.watch().unwrap();
        assert_eq!(watch.path, WatchHook::BtfTracePoint);
        assert!(watch.fell_back.unwrap().contains("tracefs is not mounted"));
        let none = Probe {
            task_file: Err(io("old")),
            tp_btf: Err(io("no BTF")),
            ..probe
        };
        assert!(none.owners().unwrap_err().contains("iter/task_file failed"));
        assert!(none.watch().unwrap_err().contains("tp_btf failed"));
    }
}
