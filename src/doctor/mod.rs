//! `sockcheck doctor`: what this user, on this kernel, lets sockcheck see,
//! and why not. It opens a sock_diag socket, reads a few /proc files and,
//! where eBPF is available, runs each eBPF program once
//! ([`bpf::paths::probe`]) to say which path each feature takes here and
//! why it fell back: a few ms with a warm BTF cache.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

use crate::bpf;
use crate::diag::SockDiag;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::output::{self, Output};

mod paths;

pub use paths::{Feature, PathName, PathRow};
use paths::{bpf_iter_row, bpf_watch_row, path_label, path_rows};

/// The JSON schema version of `doctor --json`.
pub const SCHEMA: u32 = 1;

/// The capabilities that change what sockcheck can see, in the order shown.
const CAPABILITIES: [(&str, u32); 6] = [
    ("CAP_SYS_ADMIN", 21),
    ("CAP_BPF", 39),
    ("CAP_PERFMON", 38),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SETUID", 7),
    ("CAP_NET_BIND_SERVICE", 10),
];

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Doctor {
    pub schema: u32,
    pub sockcheck: &'static str,
    pub uid: u32,
    pub euid: u32,
    /// The effective set (CapEff) as hex, null if it could not be read.
    pub cap_eff: Option<String>,
    /// Each capability that matters: whether it is effective.
    pub capabilities: BTreeMap<&'static str, bool>,
    /// `uname -r`.
    pub kernel: String,
    /// Whether /sys/kernel/btf/vmlinux exists.
    pub btf: bool,
    /// kernel.unprivileged_bpf_disabled, null if unreadable.
    pub unprivileged_bpf_disabled: Option<u32>,
    pub proc: ProcMount,
    /// One row per source of evidence, in a fixed order.
    pub sources: Vec<SourceRow>,
    /// Which path each kernel feature with a fallback takes here, and why
    /// it fell back: owners, listeners, the watch hook, PIDFD_THREAD.
    pub paths: Vec<PathRow>,
}

/// How /proc is mounted.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcMount {
    pub mounted: bool,
    /// `off`, `noaccess`, `invisible` or `ptraceable` (null when /proc is not
    /// mounted).
    pub hidepid: Option<String>,
    /// The `gid=` exempt from hidepid, if any.
    pub gid: Option<u32>,
    /// The proc mount's superblock options, as in /proc/self/mountinfo.
    pub options: Option<String>,
}

/// One source of evidence.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SourceRow {
    /// `sock_diag`, `proc_other_users`, `pidfd_getfd`, `bind_probe`,
    /// `bpf_iter` or `bpf_watch`.
    pub name: &'static str,
    /// What it is, for people.
    pub label: &'static str,
    pub available: bool,
    pub why: String,
}

/// `sockcheck doctor`.
pub fn doctor(output: Output) -> Result<ExitStatus, Error> {
    let found = examine();
    let text = if output.json {
        output::json(&found)
    } else {
        render(&found)
    };
    output.print(&text)?;
    Ok(ExitStatus::Free)
}

/// Looks at this process and this kernel.
pub fn examine() -> Doctor {
    let uid = rustix::process::getuid().as_raw();
    let euid = rustix::process::geteuid().as_raw();
    let cap_eff = crate::sys::effective_capabilities().ok();
    let has = |cap: u32| cap_eff.is_some_and(|bits| bits & (1 << cap) != 0);
    let capabilities = CAPABILITIES
        .iter()
        .map(|&(name, cap)| (name, has(cap)))
        .collect();
    let proc = proc_mount(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let kernel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let probe = bpf::paths::probe();
    let paths = path_rows(&probe);
    let sources = vec![
        sock_diag_row(),
        proc_row(&proc, has(19), euid),
        pidfd_row(has(19), euid),
        probe_row(euid, has(7), has(10)),
        bpf_iter_row(&paths),
        bpf_watch_row(&paths),
    ];
    Doctor {
        schema: SCHEMA,
        sockcheck: env!("CARGO_PKG_VERSION"),
        uid,
        euid,
        cap_eff: cap_eff.map(|bits| format!("{bits:016x}")),
        capabilities,
        kernel,
        btf: Path::new(bpf::KERNEL_BTF).exists(),
        unprivileged_bpf_disabled: crate::sys::unprivileged_bpf_disabled(),
        proc,
        sources,
        paths,
    }
}

/// The proc mount at /proc (the last one: the one on top) in a mountinfo
/// text, and its hidepid setting.
pub fn proc_mount(mountinfo: &str) -> ProcMount {
    let options = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let superopts = right.nth(1).unwrap_or("");
            (mount_point == "/proc" && fstype == "proc").then(|| superopts.to_string())
        })
        .next_back();
    let Some(options) = options else {
        return ProcMount {
            mounted: false,
            hidepid: None,
            gid: None,
            options: None,
        };
    };
    let mut hidepid = "off".to_string();
    let mut gid = None;
    for option in options.split(',') {
        match option.split_once('=') {
            Some(("hidepid", value)) => {
                hidepid = match value {
                    "0" | "off" => "off",
                    "1" | "noaccess" => "noaccess",
                    "2" | "invisible" => "invisible",
                    "4" | "ptraceable" => "ptraceable",
                    other => other,
                }
                .to_string();
            }
            Some(("gid", value)) => gid = value.parse().ok(),
            _ => {}
        }
    }
    ProcMount {
        mounted: true,
        hidepid: Some(hidepid),
        gid,
        options: Some(options),
    }
}

fn sock_diag_row() -> SourceRow {
    let (available, why) = match SockDiag::open() {
        Ok(_) => (
            true,
            "NETLINK_SOCK_DIAG socket opened: every user's sockets, with uid and inode".into(),
        ),
        Err(e) => (false, e.to_string()),
    };
    SourceRow {
        name: "sock_diag",
        label: "sock_diag (netlink)",
        available,
        why,
    }
}

fn proc_row(proc: &ProcMount, ptrace: bool, euid: u32) -> SourceRow {
    let (available, why) = if !proc.mounted {
        (false, "/proc is not mounted".to_string())
    } else if ptrace {
        (
            true,
            "CAP_SYS_PTRACE: every process's fd table can be read".to_string(),
        )
    } else {
        let mut why = format!(
            "needs root or CAP_SYS_PTRACE: only processes of uid {euid} can be read; \
             other users' owners are reported as hidden"
        );
        match proc.hidepid.as_deref() {
            Some("off") | None => {}
            Some(mode) => {
                let _ = write!(
                    why,
                    " (and /proc is mounted with hidepid={mode}: other users' processes are {})",
                    if mode == "noaccess" {
                        "listed but not readable"
                    } else {
                        "not even listed"
                    }
                );
            }
        }
        (false, why)
    };
    SourceRow {
        name: "proc_other_users",
        label: "/proc fd scan of other users",
        available,
        why,
    }
}

fn pidfd_row(ptrace: bool, euid: u32) -> SourceRow {
    let row = |available, why: String| SourceRow {
        name: "pidfd_getfd",
        label: "pidfd_getfd (SO_REUSEPORT)",
        available,
        why,
    };
    // Our own process is always ours to take an fd from: this tests only
    // that the kernel has the calls.
    let me = rustix::process::getpid();
    let works =
        rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).and_then(|pidfd| {
            use std::os::fd::AsRawFd;
            rustix::process::pidfd_getfd(
                &pidfd,
                pidfd.as_raw_fd(),
                rustix::process::PidfdGetfdFlags::empty(),
            )
            .map(drop)
        });
    if let Err(e) = works {
        return row(
            false,
            format!(
                "pidfd_open/pidfd_getfd failed on our own process ({}): the kernel needs Linux 5.6+",
                crate::error::errno_label(&e.into())
            ),
        );
    }
    if ptrace {
        return row(
            true,
            "CAP_SYS_PTRACE: any owner's socket can be duplicated".into(),
        );
    }
    match crate::sys::sysctl_number("/proc/sys/kernel/yama/ptrace_scope") {
        Some(scope @ 2..) => row(
            false,
            format!("yama ptrace_scope={scope}: needs CAP_SYS_PTRACE"),
        ),
        Some(1) => row(
            false,
            "yama ptrace_scope=1: only sockcheck's own descendants, without CAP_SYS_PTRACE".into(),
        ),
        _ => row(
            true,
            format!("only owners of uid {euid} (other uids need CAP_SYS_PTRACE)"),
        ),
    }
}

fn probe_row(euid: u32, setuid: bool, bind_service: bool) -> SourceRow {
    let (available, mut why) = match (euid, setuid) {
        (0, true) => (
            true,
            "root with CAP_SETUID: the probe takes each listener's uid (setfsuid)".to_string(),
        ),
        (0, false) => (
            false,
            "root without CAP_SETUID: setfsuid fails, only listeners of uid 0 can be probed"
                .to_string(),
        ),
        (uid, _) => (
            false,
            format!("not root: only listeners of our own uid {uid} can be probed"),
        ),
    };
    let start = crate::sys::sysctl_number("/proc/sys/net/ipv4/ip_unprivileged_port_start");
    if let (false, Some(start @ 1..)) = (bind_service, start) {
        let _ = write!(
            why,
            "; without CAP_NET_BIND_SERVICE ports below {start} cannot be probed (nor bound by \
             the canary)"
        );
    }
    SourceRow {
        name: "bind_probe",
        label: "bind probe with setfsuid",
        available,
        why,
    }
}

/// The rows of [`Doctor::paths`], from one run of every eBPF program.
/// The report for people.
pub fn render(d: &Doctor) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mut out = String::new();
    let _ = writeln!(out, "user:          uid {}, euid {}", d.uid, d.euid);
    let caps: Vec<String> = CAPABILITIES
        .iter()
        .map(|(name, _)| format!("{name} {}", yes(d.capabilities[name])))
        .collect();
    let _ = writeln!(
        out,
        "capabilities:  {} (CapEff {})",
        caps.join(", "),
        d.cap_eff.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(out, "kernel:        {}", d.kernel);
    let _ = writeln!(out, "kernel BTF:    {} ({})", yes(d.btf), bpf::KERNEL_BTF);
    let _ = writeln!(
        out,
        "kernel.unprivileged_bpf_disabled: {}",
        d.unprivileged_bpf_disabled
            .map_or("unknown".to_string(), |n| n.to_string())
    );
    let _ = writeln!(
        out,
        "/proc:         {}",
        match (&d.proc.hidepid, &d.proc.options) {
            (Some(hidepid), Some(options)) => format!(
                "hidepid={hidepid}{} ({options})",
                d.proc
                    .gid
                    .map(|g| format!(", gid={g} exempt"))
                    .unwrap_or_default()
            ),
            _ => "not mounted".to_string(),
        }
    );
    out.push('\n');
    let width = d.sources.iter().map(|s| s.label.len()).max().unwrap_or(0);
    let _ = writeln!(out, "{:<width$}  available  why", "source");
    for s in &d.sources {
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {}",
            s.label,
            yes(s.available),
            s.why
        );
    }
    out.push('\n');
    let width = d.paths.iter().map(|p| p.label.len()).max().unwrap_or(0);
    let names: Vec<&str> = d.paths.iter().map(|p| path_label(p.path)).collect();
    let used = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let _ = writeln!(out, "{:<width$}  {:<used$}  why", "feature", "path");
    for (p, name) in d.paths.iter().zip(names) {
        let _ = writeln!(out, "{:<width$}  {name:<used$}  {}", p.label, p.why);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidepid_from_mountinfo() {
        let plain = "22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        let p = proc_mount(plain);
        assert!(p.mounted);
        assert_eq!(p.hidepid.as_deref(), Some("off"));
        let hidden = "22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw,hidepid=invisible,gid=27\n\
                      40 22 0:30 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw\n";
        let p = proc_mount(hidden);
        assert_eq!(p.hidepid.as_deref(), Some("invisible"));
        assert_eq!(p.gid, Some(27));
        let numeric = "22 27 0:21 / /proc rw - proc proc rw,hidepid=2\n";
        assert_eq!(proc_mount(numeric).hidepid.as_deref(), Some("invisible"));
        let none = "1 0 0:1 / / rw - ext4 /dev/sda1 rw\n";
        assert!(!proc_mount(none).mounted);
    }

    #[test]
    fn examine_is_complete() {
        let d = examine();
        let names: Vec<&str> = d.sources.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "sock_diag",
                "proc_other_users",
                "pidfd_getfd",
                "bind_probe",
                "bpf_iter",
                "bpf_watch"
            ]
        );
        assert_eq!(d.capabilities.len(), CAPABILITIES.len());
        assert!(render(&d).contains("BPF watch (listen/close)"));
    }
}
