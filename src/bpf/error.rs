//! Why eBPF is unavailable, and what failed while loading, attaching or
//! reading a program.

use std::{fmt, io};

use aya::{
    BtfError, EbpfError,
    maps::MapError,
    programs::{ProgramError, links::LinkError},
};

use super::{CAP_BPF, CAP_PERFMON, KERNEL_BTF, MAX_PORTS};

/// Why eBPF cannot be used here at all, in plain words.
#[derive(Debug)]
pub enum Unavailable {
    /// Neither CAP_SYS_ADMIN nor CAP_BPF + CAP_PERFMON in the effective set.
    NotPrivileged {
        euid: u32,
        /// The effective capability set (`sys::effective_capabilities`).
        cap_eff: u64,
        /// kernel.unprivileged_bpf_disabled, if readable.
        unprivileged_bpf_disabled: Option<u32>,
    },
    /// The kernel has no BTF (built without CONFIG_DEBUG_INFO_BTF).
    NoBtf { error: io::Error },
    /// The effective capability set could not be read (capget, then
    /// /proc/thread-self/status).
    UnknownCapabilities { error: io::Error },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotPrivileged {
                euid,
                cap_eff,
                unprivileged_bpf_disabled,
            } => {
                let who = if *euid == 0 {
                    "running as root but with capabilities dropped".to_owned()
                } else {
                    format!("not root (euid {euid})")
                };
                let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
                    .into_iter()
                    .filter(|&(cap, _)| cap_eff & (1 << cap) == 0)
                    .map(|(_, name)| name)
                    .collect();
                write!(
                    f,
                    "eBPF needs root, CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON: {who}, missing {} (CapEff={cap_eff:016x})",
                    missing.join("+")
                )?;
                match unprivileged_bpf_disabled {
                    Some(0) | None => Ok(()),
                    Some(n) => write!(
                        f,
                        "; unprivileged BPF is disabled (kernel.unprivileged_bpf_disabled={n})"
                    ),
                }
            }
            Self::NoBtf { error } => write!(
                f,
                "no kernel BTF at {KERNEL_BTF} ({error}): the kernel was built without CONFIG_DEBUG_INFO_BTF"
            ),
            Self::UnknownCapabilities { error } => {
                write!(
                    f,
                    "cannot read own capabilities (CapEff in /proc/self/status): {error}"
                )
            }
        }
    }
}

impl std::error::Error for Unavailable {}

/// Something failed while loading, attaching or reading a program. Each
/// variant names the program (as `iter/tcp`, `iter/task`, `iter/task_file`,
/// `sock/inet_sock_set_state`) and carries the underlying error in its
/// message (not as `source()`, so `{:#}` chains do not repeat it).
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("eBPF unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    #[error("at most {MAX_PORTS} ports at once, got {given}")]
    TooManyPorts { given: usize },
    #[error("parsing kernel BTF at {KERNEL_BTF} failed: {error}")]
    Btf { error: BtfError },
    #[error("reading kernel BTF at {KERNEL_BTF} failed: {error}")]
    BtfView { error: String },
    #[error("loading the object of {program} failed: {error}")]
    Object {
        program: &'static str,
        error: EbpfError,
    },
    #[error("the object of {program} has no {what}")]
    Missing {
        program: &'static str,
        what: &'static str,
    },
    #[error("{step} {program} failed: {error}")]
    Program {
        step: &'static str,
        program: &'static str,
        error: ProgramError,
    },
    #[error("{step} {program} failed: {error}")]
    Link {
        step: &'static str,
        program: &'static str,
        error: LinkError,
    },
    #[error("{step} {program} failed: {error}")]
    Map {
        step: &'static str,
        program: &'static str,
        error: MapError,
    },
    #[error("{step} {program} failed: {error}")]
    Io {
        step: &'static str,
        program: &'static str,
        error: io::Error,
    },
    #[error("{program} produced {len} bytes, not a whole number of {record}-byte records")]
    TornRecords {
        program: &'static str,
        len: usize,
        record: usize,
    },
    #[error(
        "attaching to sock/inet_sock_set_state failed as a tracepoint ({tracepoint}) and as tp_btf ({tp_btf})"
    )]
    Watch {
        tracepoint: Box<BpfError>,
        tp_btf: Box<BpfError>,
    },
}
