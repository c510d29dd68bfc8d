//! SO_REUSEPORT of a socket that is already listening.
//!
//! sock_diag does not expose the flag, and no other tool reports it. Every
//! value here carries the evidence it rests on, tried in this order:
//!
//! - `kernel`: the `skc_reuseport` bit read by the BPF tcp iterator. First
//!   with `--bpf always`, or when BPF is loaded for this inspection anyway;
//!   otherwise only when neither a group nor an owner's fd can tell, since
//!   loading BPF costs tens of ms and about 40 MB.
//! - `group`: several listeners on one address and port. Only a reuseport
//!   group can be that.
//! - `pidfd_getfd`: a duplicate of an owner's fd, taken with `pidfd_getfd`
//!   (through a live thread's pidfd when the leader is a zombie), then
//!   `getsockopt(SO_REUSEPORT)` on that very socket.
//! - `bind_probe`: bind a socket with SO_REUSEPORT (never listen) to the
//!   listener's address. It succeeds only against a reuseport group of the
//!   same uid; as root the probe socket takes the listener's uid (setfsuid).
//!   The last resort: it is the only inference with a side effect.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::errno_label;

/// The value and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reuseport {
    /// Where the value came from: `kernel`, `group`, `pidfd_getfd`,
    /// `bind_probe`, or `none` when nothing could tell.
    pub source: &'static str,
    /// What exactly was observed, in words.
    pub detail: String,
    /// Sources tried before this one and why they could not tell.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<String>,
}

impl Reuseport {
    /// For an inspection that did not ask about owners or SO_REUSEPORT.
    pub fn not_looked_up() -> Reuseport {
        evidence("none", "not looked up".into(), Vec::new())
    }
}

/// What the caller knows about one listener.
#[derive(Clone)]
pub struct Subject<'a> {
    pub local: SocketAddr,
    pub inode: u64,
    pub uid: u32,
    pub v6only: Option<bool>,
    /// Listeners on exactly this address and port, this one included.
    pub group_size: usize,
    /// The kernel's bit for an inode, read by a BPF iterator on first use;
    /// Err says why it is not available.
    pub kernel: &'a dyn Fn(u64) -> Result<bool, String>,
    /// Ask the kernel before anything else (`--bpf always`, or when BPF is
    /// loaded anyway); otherwise only before the bind probe.
    pub kernel_first: bool,
    /// (pid, live tid to reach the fd table through, fd) of each owner.
    pub holders: &'a [(u32, Option<u32>, u32)],
    /// True when other sockets on the same port could make a bind probe
    /// fail for reasons other than this listener.
    pub probe_crowded: bool,
    pub allow_pidfd: bool,
    pub allow_probe: bool,
}

/// Works out SO_REUSEPORT for one listener.
pub fn resolve(subject: &Subject<'_>) -> (Option<bool>, Reuseport) {
    let mut tried = Vec::new();
    let kernel = |tried: &mut Vec<String>| -> Option<(Option<bool>, Reuseport)> {
        match (subject.kernel)(subject.inode) {
            Ok(bit) => Some((
                Some(bit),
                evidence(
                    "kernel",
                    format!(
                        "skc_reuseport = {} read by the BPF tcp iterator",
                        u8::from(bit)
                    ),
                    std::mem::take(tried),
                ),
            )),
            Err(why) => {
                tried.push(format!("kernel: {why}"));
                None
            }
        }
    };
    if subject.kernel_first
        && let Some(found) = kernel(&mut tried)
    {
        return found;
    }
    if subject.group_size > 1 {
        return (
            Some(true),
            evidence(
                "group",
                format!(
                    "{} listeners share {}: only a reuseport group can",
                    subject.group_size, subject.local
                ),
                tried,
            ),
        );
    }
    let holders = if subject.allow_pidfd {
        subject.holders
    } else {
        tried.push("pidfd_getfd: disabled (--no-pidfd)".to_string());
        &[]
    };
    if subject.allow_pidfd && holders.is_empty() {
        tried.push("pidfd_getfd: no visible owner to take the fd from".to_string());
    }
    for &(pid, tid, fd) in holders {
        match getsockopt_via_pidfd(pid, tid, fd, subject.inode) {
            Ok(bit) => {
                let through = match tid {
                    Some(tid) => format!("pid {pid} (through thread {tid})"),
                    None => format!("pid {pid}"),
                };
                return (
                    Some(bit),
                    evidence(
                        "pidfd_getfd",
                        format!(
                            "getsockopt(SO_REUSEPORT) = {} on fd {fd} of {through}",
                            u8::from(bit)
                        ),
                        tried,
                    ),
                );
            }
            Err(why) => tried.push(format!("pidfd_getfd on fd {fd} of pid {pid}: {why}")),
        }
    }
    if !subject.kernel_first
        && let Some(found) = kernel(&mut tried)
    {
        return found;
    }
    if !subject.allow_probe {
        tried.push("bind probe: disabled (--no-probe)".to_string());
        return (None, evidence("none", "nothing could tell".into(), tried));
    }
    match bind_probe(subject) {
        Probe::Joined(uid) => (
            Some(true),
            evidence(
                "bind_probe",
                format!(
                    "a bind with SO_REUSEPORT as uid {uid} to {} succeeded: it joined the \
                     listener's reuseport group",
                    subject.local
                ),
                tried,
            ),
        ),
        Probe::Refused(uid, errno) if !subject.probe_crowded => (
            Some(false),
            evidence(
                "bind_probe",
                format!(
                    "a bind with SO_REUSEPORT as uid {uid} (the listener's) to {} failed with \
                     {errno}, and no other socket on the port could cause that",
                    subject.local
                ),
                tried,
            ),
        ),
        Probe::Refused(uid, errno) => {
            tried.push(format!(
                "bind probe as uid {uid} failed with {errno}, but other sockets on the port \
                 could cause that"
            ));
            (None, evidence("none", "nothing could tell".into(), tried))
        }
        Probe::Cannot(why) => {
            tried.push(format!("bind probe: {why}"));
            (None, evidence("none", "nothing could tell".into(), tried))
        }
    }
}

fn evidence(source: &'static str, detail: String, tried: Vec<String>) -> Reuseport {
    Reuseport {
        source,
        detail,
        tried,
    }
}

/// Duplicates `fd` of `pid` into this process and reads SO_REUSEPORT. For a
/// zombie leader, the pidfd is opened on a live thread (PIDFD_THREAD), since
/// the leader no longer has an fd table.
fn getsockopt_via_pidfd(pid: u32, tid: Option<u32>, fd: u32, inode: u64) -> Result<bool, String> {
    const PIDFD_THREAD: u32 = libc::O_EXCL as u32;
    let (target, flags) = match tid {
        Some(tid) => (tid, PidfdFlags::from_bits_retain(PIDFD_THREAD)),
        None => (pid, PidfdFlags::empty()),
    };
    let raw = Pid::from_raw(target as i32).ok_or("pid 0")?;
    let pidfd = rustix::process::pidfd_open(raw, flags)
        .map_err(|e| format!("pidfd_open: {}", errno_label(&e.into())))?;
    let socket: OwnedFd = rustix::process::pidfd_getfd(&pidfd, fd as i32, PidfdGetfdFlags::empty())
        .map_err(|e| errno_label(&e.into()))?;
    // The fd may have been closed and reused since the scan.
    let stat = rustix::fs::fstat(&socket).map_err(|e| format!("fstat: {e}"))?;
    if stat.st_ino != inode {
        return Err(format!("fd {fd} is now inode {}, not {inode}", stat.st_ino));
    }
    rustix::net::sockopt::socket_reuseport(socket.as_fd())
        .map_err(|e| format!("getsockopt: {}", errno_label(&e.into())))
}

enum Probe {
    Joined(u32),
    Refused(u32, String),
    Cannot(String),
}

fn bind_probe(subject: &Subject<'_>) -> Probe {
    let euid = rustix::process::geteuid().as_raw();
    let uid = subject.uid;
    if euid != 0 && euid != uid {
        return Probe::Cannot(format!(
            "the listener's uid is {uid}, ours is {euid}: the kernel only lets the same uid \
             join a reuseport group, and changing the fsuid needs CAP_SETUID"
        ));
    }
    let local = subject.local;
    let v6only = subject.v6only;
    // setfsuid affects only the calling thread: do it on a thread of its own.
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(move || -> Result<(), std::io::Error> {
                if euid != uid {
                    set_fsuid(uid)?;
                }
                let socket = Socket::new(
                    Domain::for_address(local),
                    Type::STREAM.cloexec(),
                    Some(Protocol::TCP),
                )?;
                if let (Some(only), true) = (v6only, local.is_ipv6()) {
                    socket.set_only_v6(only)?;
                }
                socket.set_reuse_port(true)?;
                socket.bind(&local.into())
            })
            .join()
    });
    match outcome {
        Ok(Ok(())) => Probe::Joined(uid),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            Probe::Refused(uid, "EADDRINUSE".into())
        }
        Ok(Err(e)) => Probe::Cannot(format!("bind failed with {}", errno_label(&e))),
        Err(_) => Probe::Cannot("the probe thread panicked".into()),
    }
}

/// setfsuid(2) reports failure only by returning the old value; check by
/// reading it back.
fn set_fsuid(uid: u32) -> std::io::Result<()> {
    // SAFETY: setfsuid has no memory effects; it changes this thread's fsuid.
    unsafe {
        libc::setfsuid(uid);
        let now = libc::setfsuid(u32::MAX) as u32;
        if now != uid {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}
