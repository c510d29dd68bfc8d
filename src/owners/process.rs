//! What a person wants to know about a holder process: its name, command
//! line, state, threads, uid, parent, age and container, read with procfs
//! (and raw where procfs would lose bytes) under a [`ProcRoot`].

use schemars::JsonSchema;
use serde::Serialize;

use super::ProcRoot;
use crate::text::Bytes;

/// What a person wants to know about a holder process.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessInfo {
    /// Serialized by the owner that carries it.
    #[serde(skip)]
    pub pid: u32,
    pub comm: Bytes,
    pub cmdline: Vec<Bytes>,
    pub state: ProcessState,
    /// Live threads (for a zombie leader: the threads that live on).
    pub tids: Vec<u32>,
    pub uid: Option<u32>,
    pub ppid: Option<u32>,
    /// Start time, seconds since the Unix epoch.
    pub start_time: Option<u64>,
    /// Start time as /proc/PID/stat gives it (clock ticks since boot), read
    /// with the rest: with the pid, what tells this process from a later
    /// one given the same pid (`reap` checks it before signalling). Not
    /// serialized: `start_time` is its public form.
    #[serde(skip)]
    pub start_ticks: Option<u64>,
    /// Seconds since it started.
    pub age_seconds: Option<u64>,
    /// Its pid in its own pid namespace, when that is not sockcheck's (a
    /// container's): the last of /proc/PID/status's NSpid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<u32>,
    /// Its cgroup (v2) path, when it is in another pid namespace or the
    /// path names a container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container the cgroup path names (docker, containerd, CRI-O,
    /// podman, a systemd machine).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// A container, as a cgroup path names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Container {
    /// `docker`, `containerd`, `cri-o`, `podman`, `kubepods` or
    /// `systemd-machine`.
    pub runtime: &'static str,
    pub id: String,
}

/// The container a cgroup path names, if any: a `docker-ID.scope`,
/// `cri-containerd-ID.scope`, `crio-ID.scope`, `libpod-ID.scope`
/// (podman) or `machine-NAME.scope` segment, or a 64-hex-digit segment
/// under `/docker/` or `/kubepods`.
pub fn container_of(cgroup: &str) -> Option<Container> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let segments: Vec<&str> = cgroup.split('/').filter(|s| !s.is_empty()).collect();
    for (i, segment) in segments.iter().enumerate().rev() {
        if let Some(scope) = segment.strip_suffix(".scope") {
            for (prefix, runtime) in [
                ("docker-", "docker"),
                ("cri-containerd-", "containerd"),
                ("crio-", "cri-o"),
                ("libpod-", "podman"),
            ] {
                if let Some(id) = scope.strip_prefix(prefix).filter(|id| hex64(id)) {
                    return Some(Container {
                        runtime,
                        id: id.to_string(),
                    });
                }
            }
            if let Some(name) = scope.strip_prefix("machine-") {
                return Some(Container {
                    runtime: "systemd-machine",
                    id: name.to_string(),
                });
            }
        }
        if hex64(segment) {
            let runtime = match segments[..i].first() {
                Some(&"docker") => "docker",
                Some(s) if s.starts_with("kubepods") => "kubepods",
                _ => continue,
            };
            return Some(Container {
                runtime,
                id: segment.to_string(),
            });
        }
    }
    None
}

/// Where a process lives: its pid in its own pid namespace (when that is
/// not sockcheck's), its cgroup and its container, as far as they tell.
fn whereabouts(
    process: &procfs::process::Process,
    pid: u32,
) -> (Option<u32>, Option<String>, Option<Container>) {
    let ns_pid = process
        .status()
        .ok()
        .and_then(|s| s.nspid)
        .and_then(|levels| levels.last().copied())
        .map(|p| p as u32)
        .filter(|&p| p != pid);
    let cgroup = process
        .cgroups()
        .ok()
        .and_then(|groups| groups.0.into_iter().find(|g| g.hierarchy == 0))
        .map(|g| g.pathname);
    let container = cgroup.as_deref().and_then(container_of);
    let cgroup = cgroup.filter(|_| ns_pid.is_some() || container.is_some());
    (ns_pid, cgroup, container)
}

/// Reads the details of a holder in the /proc at `root`. The process may
/// have exited since the scan; then what could be read is returned.
pub fn describe(root: &ProcRoot, pid: u32) -> ProcessInfo {
    let process = procfs::process::Process::new_with_root(root.join(pid.to_string())).ok();
    let stat = process.as_ref().and_then(|p| p.stat().ok());
    let tids = process.as_ref().map(live_tids).unwrap_or_default();
    let state = match stat.as_ref().map(|s| s.state) {
        Some('Z') if !tids.is_empty() => ProcessState::ZombieLeader,
        Some(c) => ProcessState::from_stat(c),
        None => ProcessState::Gone,
    };
    // procfs reads cmdline into a String (failing on non-UTF-8) and comm
    // lossily; a holder's name is chosen by the process and may be any
    // bytes, so these two are read raw and carried losslessly.
    let cmdline = raw_cmdline(root, pid, state, &tids);
    let comm = raw_comm(root, pid, stat.as_ref());
    let (start_time, age_seconds) = stat
        .as_ref()
        .map(|stat| start_and_age(root, stat))
        .unwrap_or_default();
    let (ns_pid, cgroup, container) = process
        .as_ref()
        .map(|p| whereabouts(p, pid))
        .unwrap_or_default();
    ProcessInfo {
        pid,
        comm,
        cmdline,
        state,
        tids,
        uid: process.as_ref().and_then(|p| p.uid().ok()),
        ppid: stat.as_ref().map(|s| s.ppid as u32),
        start_time,
        start_ticks: stat.as_ref().map(|s| s.starttime),
        age_seconds,
        ns_pid,
        cgroup,
        container,
    }
}

/// The tids of a process's threads (/proc/PID/task) that are not zombie
/// or dead; a thread whose stat cannot be read counts as live.
fn live_tids(process: &procfs::process::Process) -> Vec<u32> {
    process
        .tasks()
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| {
                    let tid = task.tid as u32;
                    match task.stat() {
                        Ok(st) if st.state == 'Z' || st.state == 'X' => None,
                        _ => Some(tid),
                    }
                })
                .collect::<Vec<u32>>()
        })
        .map(|mut tids| {
            tids.sort_unstable(); // as /proc lists them
            tids
        })
        .unwrap_or_default()
}

/// The command line's arguments from /proc/PID/cmdline, as raw bytes
/// (empty arguments left out). A zombie leader has no mm of its own; its
/// first live thread's cmdline is read instead.
fn raw_cmdline(root: &ProcRoot, pid: u32, state: ProcessState, tids: &[u32]) -> Vec<Bytes> {
    let cmdline_path = match (state, tids.first()) {
        (ProcessState::ZombieLeader, Some(tid)) => format!("{pid}/task/{tid}/cmdline"),
        _ => format!("{pid}/cmdline"),
    };
    std::fs::read(root.join(cmdline_path))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| Bytes(a.to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// The comm from /proc/PID/comm as raw bytes without its newline; when it
/// cannot be read, the (lossy) comm of /proc/PID/stat, or empty.
fn raw_comm(root: &ProcRoot, pid: u32, stat: Option<&procfs::process::Stat>) -> Bytes {
    std::fs::read(root.join(format!("{pid}/comm")))
        .map(|mut raw| {
            if raw.last() == Some(&b'\n') {
                raw.pop();
            }
            Bytes(raw)
        })
        .unwrap_or_else(|_| {
            Bytes(
                stat.map(|s| s.comm.clone())
                    .unwrap_or_default()
                    .into_bytes(),
            )
        })
}

/// When the process started (Unix seconds: the boot time plus its stat
/// starttime in clock ticks) and how many seconds ago that was.
fn start_and_age(root: &ProcRoot, stat: &procfs::process::Stat) -> (Option<u64>, Option<u64>) {
    let start_time = root
        .boot_time()
        .map(|boot| boot + stat.starttime / procfs::ticks_per_second());
    let age_seconds = start_time.and_then(|start| root.now()?.checked_sub(start));
    (start_time, age_seconds)
}

/// A holder's state, from the state letter of /proc/PID/stat, serialized
/// as `running`, `sleeping`, `disk-sleep`, `stopped`, `tracing-stop`,
/// `zombie`, `zombie-leader`, `dead`, `idle`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessState {
    Running,
    Sleeping,
    DiskSleep,
    Stopped,
    TracingStop,
    /// A zombie without live threads.
    Zombie,
    /// A thread-group leader that exited while other threads live on: its
    /// /proc/PID/fd is empty, and the threads hold the fd table.
    ZombieLeader,
    Dead,
    Idle,
    Parked,
    Waking,
    Wakekill,
    Unknown,
    /// The process exited before it could be described.
    Gone,
}

impl ProcessState {
    /// The state of a process whose stat has `letter` (a zombie leader is
    /// told apart by its live threads, not by the letter).
    fn from_stat(letter: char) -> ProcessState {
        match letter {
            'R' => ProcessState::Running,
            'S' => ProcessState::Sleeping,
            'D' => ProcessState::DiskSleep,
            'T' => ProcessState::Stopped,
            't' => ProcessState::TracingStop,
            'Z' => ProcessState::Zombie,
            'X' | 'x' => ProcessState::Dead,
            'I' => ProcessState::Idle,
            'P' => ProcessState::Parked,
            'W' => ProcessState::Waking,
            'K' => ProcessState::Wakekill,
            _ => ProcessState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Sleeping => "sleeping",
            ProcessState::DiskSleep => "disk-sleep",
            ProcessState::Stopped => "stopped",
            ProcessState::TracingStop => "tracing-stop",
            ProcessState::Zombie => "zombie",
            ProcessState::ZombieLeader => "zombie-leader",
            ProcessState::Dead => "dead",
            ProcessState::Idle => "idle",
            ProcessState::Parked => "parked",
            ProcessState::Waking => "waking",
            ProcessState::Wakekill => "wakekill",
            ProcessState::Unknown => "unknown",
            ProcessState::Gone => "gone",
        }
    }
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_their_names() {
        for letter in "RSDTtZXIPWK?".chars() {
            let state = ProcessState::from_stat(letter);
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str(), "{letter}");
        }
        for state in [ProcessState::ZombieLeader, ProcessState::Gone] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        assert_eq!(ProcessState::ZombieLeader.as_str(), "zombie-leader");
        assert_eq!(ProcessState::from_stat('t').as_str(), "tracing-stop");
        assert_eq!(ProcessState::from_stat('D').as_str(), "disk-sleep");
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "3f2a".repeat(16);
        for (path, runtime) in [
            (format!("/system.slice/docker-{id}.scope"), "docker"),
            (format!("/docker/{id}"), "docker"),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"),
                "containerd",
            ),
            (format!("/kubepods/besteffort/pod1/{id}"), "kubepods"),
            (
                format!("/machine.slice/libpod-{id}.scope/container"),
                "podman",
            ),
            (format!("/kubepods.slice/crio-{id}.scope"), "cri-o"),
        ] {
            let found = container_of(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(
                (found.runtime, found.id.as_str()),
                (runtime, id.as_str()),
                "{path}"
            );
        }
        assert_eq!(
            container_of("/machine.slice/machine-web.scope").map(|c| c.id),
            Some("web".to_string())
        );
        for plain in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/nginx.service",
        ] {
            assert_eq!(container_of(plain), None, "{plain}");
        }
    }
}
