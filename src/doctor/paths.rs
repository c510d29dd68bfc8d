//! Which path each eBPF feature (and the pidfd of a thread) takes on this
//! kernel, from [`bpf::paths::probe`], and why it fell back: `doctor`'s
//! `paths` rows and the two BPF source rows made from them.

use schemars::JsonSchema;
use serde::Serialize;

use super::SourceRow;
use crate::bpf::{self, WatchHook, paths::OwnerPath};

/// A kernel feature that has more than one way to work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Who holds a socket, through eBPF.
    BpfOwners,
    /// The kernel's own view of listeners (SO_REUSEPORT), through eBPF.
    BpfListeners,
    /// What `watch` and `run`'s attribution hook.
    BpfWatch,
    /// A pidfd of a thread, for a zombie leader's fd table.
    PidfdThread,
}

/// The way a feature works on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathName {
    /// `iter/task` walking each fd table with `bpf_loop` (5.17+).
    FdWalk,
    /// `iter/task_file` (5.8+): the fallback of the fd walk.
    IterTaskFile,
    /// `iter/tcp` (5.9+).
    IterTcp,
    /// The tracepoint `sock/inet_sock_set_state` (needs tracefs).
    Tracepoint,
    /// `tp_btf/inet_sock_set_state`: the fallback without tracefs.
    TpBtf,
    /// `pidfd_open(PIDFD_THREAD)` (6.9+).
    PidfdThread,
}

/// One feature: the path it takes, or null if none works, and why.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PathRow {
    pub feature: Feature,
    /// What it is, for people.
    pub label: &'static str,
    /// The path taken; null when the feature is unavailable.
    pub path: Option<PathName>,
    /// Whether `path` is a fallback from the preferred path.
    pub fallback: bool,
    /// What was tried and why it fell back, or why the feature is
    /// unavailable.
    pub why: String,
}

/// What a feature took: its path, and why it fell back (`None` for the
/// preferred path); or why it is unavailable.
type Taken = Result<(PathName, Option<String>), String>;

/// One row: `ok` says why the preferred path works.
fn row(feature: Feature, label: &'static str, taken: Taken, ok: String) -> PathRow {
    let (path, fallback, why) = match taken {
        Ok((path, None)) => (Some(path), false, ok),
        Ok((path, Some(why))) => (Some(path), true, why),
        Err(why) => (None, false, why),
    };
    PathRow {
        feature,
        label,
        path,
        fallback,
        why,
    }
}

pub(super) fn path_rows(probe: &Result<bpf::paths::Probe, bpf::Unavailable>) -> Vec<PathRow> {
    let mut rows = match probe {
        Err(reason) => [
            (Feature::BpfOwners, OWNERS),
            (Feature::BpfListeners, LISTENERS),
            (Feature::BpfWatch, WATCH),
        ]
        .into_iter()
        .map(|(feature, label)| row(feature, label, Err(reason.to_string()), String::new()))
        .collect(),
        Ok(probe) => probed_rows(probe),
    };
    rows.push(pidfd_thread_row());
    rows
}

/// The three eBPF features, as the probe found them.
fn probed_rows(probe: &bpf::paths::Probe) -> Vec<PathRow> {
    let owners = probe.owners().map(|taken| {
        let path = match taken.path {
            OwnerPath::FdWalk => PathName::FdWalk,
            OwnerPath::TaskFile => PathName::IterTaskFile,
        };
        let why = taken
            .fell_back
            .map(|why| format!("iter/task_file, because {why}"));
        (path, why)
    });
    let watch = probe.watch().map(|taken| {
        let path = match taken.path {
            WatchHook::TracePoint => PathName::Tracepoint,
            WatchHook::BtfTracePoint => PathName::TpBtf,
        };
        (
            path,
            taken.fell_back.map(|why| format!("tp_btf, because {why}")),
        )
    });
    let tp_btf = match &probe.tp_btf {
        Ok(()) => "tp_btf also attaches".to_string(),
        Err(e) => format!("tp_btf would fail: {}", bpf::paths::one_line(e)),
    };
    let listeners = match &probe.iter_tcp {
        Ok(()) => Ok((PathName::IterTcp, None)),
        Err(e) => Err(bpf::paths::one_line(e)),
    };
    vec![
        row(
            Feature::BpfOwners,
            OWNERS,
            owners,
            "the fd walk (iter/task with bpf_loop) loads and walks every fd table".into(),
        ),
        row(
            Feature::BpfListeners,
            LISTENERS,
            listeners,
            "iter/tcp loads and reads every listener's SO_REUSEPORT bit".into(),
        ),
        row(
            Feature::BpfWatch,
            WATCH,
            watch,
            format!("tracefs is mounted and the tracepoint attaches ({tp_btf})"),
        ),
    ]
}

/// Whether `pidfd_open` takes PIDFD_THREAD here.
fn pidfd_thread_row() -> PathRow {
    let taken = match crate::sys::pidfd_thread() {
        Ok(()) => Ok((PathName::PidfdThread, None)),
        Err(e) => Err(format!(
            "pidfd_open with PIDFD_THREAD failed ({}; Linux 6.9+): the fd table of a process \
             whose leader has exited cannot be duplicated from, so its SO_REUSEPORT evidence \
             comes from iter/tcp or the bind probe",
            crate::error::errno_label(&e)
        )),
    };
    row(
        Feature::PidfdThread,
        "pidfd of a thread (PIDFD_THREAD)",
        taken,
        "pidfd_open takes PIDFD_THREAD: a zombie leader's sockets are read through a live thread"
            .into(),
    )
}

const OWNERS: &str = "BPF owners";
const LISTENERS: &str = "BPF listeners";
const WATCH: &str = "BPF watch hook";

fn path_row(paths: &[PathRow], feature: Feature) -> &PathRow {
    paths
        .iter()
        .find(|row| row.feature == feature)
        .expect("path_rows has every feature")
}

pub(super) fn bpf_iter_row(paths: &[PathRow]) -> SourceRow {
    let owners = path_row(paths, Feature::BpfOwners);
    let listeners = path_row(paths, Feature::BpfListeners);
    let (available, why) = match (owners.path, listeners.path) {
        (None, None) if owners.why == listeners.why => (false, owners.why.clone()),
        (None, None) => (
            false,
            format!("owners: {}; listeners: {}", owners.why, listeners.why),
        ),
        (owner_path, listener_path) => (
            true,
            format!(
                "privileged, kernel BTF present: iter/tcp {}; owners via {}",
                if listener_path.is_some() {
                    "works".to_string()
                } else {
                    format!("fails ({})", listeners.why)
                },
                match owner_path {
                    Some(PathName::FdWalk) => "the fd walk (iter/task)".to_string(),
                    Some(_) => "iter/task_file (see BPF owners)".to_string(),
                    None => format!("neither ({})", owners.why),
                }
            ),
        ),
    };
    SourceRow {
        name: "bpf_iter",
        label: "BPF iterators",
        available,
        why,
    }
}

pub(super) fn bpf_watch_row(paths: &[PathRow]) -> SourceRow {
    let watch = path_row(paths, Feature::BpfWatch);
    let (available, why) = match watch.path {
        Some(path) => (
            true,
            format!(
                "privileged, kernel BTF present: sock/inet_sock_set_state as {}",
                if path == PathName::Tracepoint {
                    "a tracepoint (tracefs is mounted)"
                } else {
                    "tp_btf (see BPF watch hook)"
                }
            ),
        ),
        None => (false, watch.why.clone()),
    };
    SourceRow {
        name: "bpf_watch",
        label: "BPF watch (listen/close)",
        available,
        why,
    }
}

/// A path's name for people.
pub(super) fn path_label(path: Option<PathName>) -> &'static str {
    match path {
        Some(PathName::FdWalk) => "fd walk (iter/task)",
        Some(PathName::IterTaskFile) => "iter/task_file",
        Some(PathName::IterTcp) => "iter/tcp",
        Some(PathName::Tracepoint) => "tracepoint",
        Some(PathName::TpBtf) => "tp_btf",
        Some(PathName::PidfdThread) => "PIDFD_THREAD",
        None => "none",
    }
}
