//! Who a process is: pid *and* start time, so that a recycled pid is never
//! taken for the process it replaced; and whether it is still alive, gone,
//! or cannot be told ([`Liveness`]). A process is gone only when /proc says
//! so. (`reap` pins what it inspected by this; leases go by pidfd.)

use crate::error::errno_label;

/// A process, identified so that a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    /// `starttime` from /proc/PID/stat, in clock ticks since boot.
    pub start_ticks: u64,
}

/// Whether a process is still the one a [`ProcessId`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// It runs: same pid, same start time, not a dead zombie.
    Alive,
    /// It is known to be gone: /proc has no such pid (ENOENT, ESRCH), the
    /// pid is another process's now (another start time), or it is a zombie
    /// that no thread keeps running.
    Gone,
    /// It could not be told: /proc/PID/stat could not be read for another
    /// reason (EMFILE, ENFILE, ENOMEM, EACCES, no /proc...) or made no
    /// sense. Why, for the user. Neither alive (nothing is done to it) nor
    /// gone (nothing it holds is freed).
    Unknown(String),
}

/// What /proc/PID/stat says of a pid.
enum Probe {
    Running(ProcessId),
    Gone,
    Unknown(String),
}

/// Reads /proc/PID/stat. Fails closed: only an answer about this pid
/// (ENOENT or ESRCH, with /proc itself there; a dead zombie) is `Gone`.
fn probe(pid: u32) -> Probe {
    let path = format!("/proc/{pid}/stat");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            // ENOENT from a /proc that is not mounted says nothing of the
            // pid. (Asked without opening anything: fds may be what ran out.)
            return match rustix::fs::access("/proc/self/stat", rustix::fs::Access::EXISTS) {
                Ok(()) => Probe::Gone,
                Err(e) => Probe::Unknown(format!("/proc is not readable ({e})")),
            };
        }
        Err(e) => return Probe::Unknown(format!("reading {path} failed: {}", errno_label(&e))),
    };
    // `pid (comm) state ...`: comm may hold anything, so fields are counted
    // from the last ')'.
    let fields = bytes
        .iter()
        .rposition(|&b| b == b')')
        .and_then(|at| std::str::from_utf8(&bytes[at + 1..]).ok())
        .map(|rest| rest.split_ascii_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    let (Some(state), Some(threads), Some(start_ticks)) = (
        fields.first(),
        fields.get(17).and_then(|n| n.parse::<i64>().ok()),
        fields.get(19).and_then(|n| n.parse::<u64>().ok()),
    ) else {
        return Probe::Unknown(format!("{path} could not be parsed"));
    };
    let dead = *state == "X" || (*state == "Z" && threads <= 1);
    if dead {
        return Probe::Gone;
    }
    Probe::Running(ProcessId { pid, start_ticks })
}

impl ProcessId {
    /// The process as it is now, if it is alive: not a zombie, or a zombie
    /// leader whose other threads live on (they still run its code and hold
    /// its files). `None` when it is gone *or cannot be read*: whoever asks
    /// for a live process must not get one that may not be (see
    /// [`ProcessId::liveness`] to tell the two apart).
    pub fn of(pid: u32) -> Option<ProcessId> {
        match probe(pid) {
            Probe::Running(id) => Some(id),
            Probe::Gone | Probe::Unknown(_) => None,
        }
    }

    /// Whether this very process still runs, is gone, or cannot be told.
    pub fn liveness(&self) -> Liveness {
        match probe(self.pid) {
            Probe::Running(now) if now == *self => Liveness::Alive,
            Probe::Running(_) | Probe::Gone => Liveness::Gone,
            Probe::Unknown(why) => Liveness::Unknown(why),
        }
    }

    /// Whether this very process is known to be alive.
    pub fn alive(&self) -> bool {
        self.liveness() == Liveness::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsRawFd;

    #[test]
    fn gone_is_only_a_missing_pid_another_start_time_or_a_dead_zombie() {
        let me = ProcessId::of(std::process::id()).unwrap();
        assert_eq!(me.liveness(), Liveness::Alive);
        let recycled = ProcessId {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert_eq!(recycled.liveness(), Liveness::Gone);
        let never = ProcessId {
            pid: u32::MAX,
            start_ticks: 1,
        };
        assert_eq!(never.liveness(), Liveness::Gone);
        // A zombie: exited, not yet waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = ProcessId::of(child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ProcessId::of(child.id()).is_some() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if let Some(zombie) = zombie {
            assert_eq!(zombie.liveness(), Liveness::Gone);
        }
        child.wait().unwrap();
    }

    /// Set for [`liveness_under_emfile`] when it runs in a process of its
    /// own.
    const EMFILE_HELPER: &str = "SOCKCHECK_TEST_LIVENESS_UNDER_EMFILE";

    #[test]
    fn an_owner_that_cannot_be_read_is_unknown_not_gone() {
        // In a process of its own: the open-files limit is the process's.
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gate::state::process::tests::liveness_under_emfile",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(EMFILE_HELPER, "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && said.contains("kept under EMFILE"),
            "{said}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// With no file descriptor left (the soft RLIMIT_NOFILE at the lowest
    /// free one), /proc/PID/stat cannot be opened: the liveness of the live
    /// process and of the recycled pid alike is unknown, never gone. Does
    /// nothing unless [`EMFILE_HELPER`] is set.
    #[test]
    fn liveness_under_emfile() {
        if std::env::var_os(EMFILE_HELPER).is_none() {
            return;
        }
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let me = ProcessId::of(std::process::id()).unwrap();
        let recycled = ProcessId {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        let lowest_free = File::open("/dev/null").unwrap().as_raw_fd() as u64;
        let before = getrlimit(Resource::Nofile);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(lowest_free),
                maximum: before.maximum,
            },
        )
        .unwrap();
        let opened = File::open("/dev/null").map(drop);
        let (liveness, recycled_liveness) = (me.liveness(), recycled.liveness());
        let of = ProcessId::of(me.pid);
        setrlimit(Resource::Nofile, before).unwrap();
        assert_eq!(
            opened.unwrap_err().raw_os_error(),
            Some(libc::EMFILE),
            "the limit did not bite"
        );
        let Liveness::Unknown(why) = &liveness else {
            panic!("{liveness:?}");
        };
        assert!(why.contains("EMFILE") && why.contains("/proc/"), "{why}");
        assert!(matches!(recycled_liveness, Liveness::Unknown(_)));
        // Asked for a live process, it gives none rather than a guess.
        assert_eq!(of, None);
        println!("kept under EMFILE: {why}");
    }
}
