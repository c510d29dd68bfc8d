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
use schemars::JsonSchema;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::errno_label;

/// The value and the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Reuseport {
    /// Where the value came from.
    pub source: Source,
    /// What exactly was observed, in words.
    pub detail: String,
    /// Sources tried before this one and why they could not tell.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<String>,
}

impl Reuseport {
    /// For an inspection that did not ask about owners or SO_REUSEPORT.
    pub fn not_looked_up() -> Reuseport {
        evidence(Source::None, "not looked up".into(), Vec::new())
    }
}

/// What a listener's SO_REUSEPORT value rests on, serialized as in the
/// README: `kernel`, `group`, `pidfd_getfd`, `bind_probe`, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The socket's `skc_reuseport` bit, read by the BPF tcp iterator.
    Kernel,
    /// Several listeners on one address and port.
    Group,
    /// `getsockopt(SO_REUSEPORT)` on a duplicate of an owner's fd.
    PidfdGetfd,
    /// A bind with SO_REUSEPORT to the listener's address.
    BindProbe,
    /// Nothing could tell.
    None,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Kernel => "kernel",
            Source::Group => "group",
            Source::PidfdGetfd => "pidfd_getfd",
            Source::BindProbe => "bind_probe",
            Source::None => "none",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fd through which a process holds the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// A live thread to reach the fd table through, when the leader is a
    /// zombie.
    pub via_tid: Option<u32>,
    pub fd: u32,
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
    /// Ask the kernel before anything else (`--bpf always`, or when BPF is
    /// loaded anyway); otherwise only before the bind probe.
    pub kernel_first: bool,
    /// Every fd through which an owner holds the listener.
    pub holders: &'a [Holder],
    /// True when other sockets on the same port could make a bind probe
    /// fail for reasons other than this listener.
    pub probe_crowded: bool,
    pub allow_pidfd: bool,
    pub allow_probe: bool,
}

/// The kernel's bit for an inode, read by a BPF iterator on first use; Err
/// says why it is not available.
pub type KernelBit<'k> = dyn FnMut(u64) -> Result<bool, String> + 'k;

/// Works out SO_REUSEPORT for one listener, from the sources in the order
/// the module documentation gives.
pub fn resolve(subject: &Subject<'_>, kernel: &mut KernelBit<'_>) -> (Option<bool>, Reuseport) {
    let mut tried = Vec::new();
    if subject.kernel_first
        && let Some(found) = from_kernel(subject, kernel, &mut tried)
    {
        return found;
    }
    if subject.group_size > 1 {
        return (
            Some(true),
            evidence(
                Source::Group,
                format!(
                    "{} listeners share {}: only a reuseport group can",
                    subject.group_size, subject.local
                ),
                tried,
            ),
        );
    }
    if let Some(found) = from_pidfd(subject, &mut tried) {
        return found;
    }
    if !subject.kernel_first
        && let Some(found) = from_kernel(subject, kernel, &mut tried)
    {
        return found;
    }
    from_bind_probe(subject, tried)
}

/// The kernel's own bit, or None (with why in `tried`).
fn from_kernel(
    subject: &Subject<'_>,
    kernel: &mut KernelBit<'_>,
    tried: &mut Vec<String>,
) -> Option<(Option<bool>, Reuseport)> {
    match kernel(subject.inode) {
        Ok(bit) => Some((
            Some(bit),
            evidence(
                Source::Kernel,
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
}

/// The option read on a duplicate of an owner's fd, or None (with why in
/// `tried`).
fn from_pidfd(subject: &Subject<'_>, tried: &mut Vec<String>) -> Option<(Option<bool>, Reuseport)> {
    if !subject.allow_pidfd {
        tried.push("pidfd_getfd: disabled (--no-pidfd)".to_string());
        return None;
    }
    if subject.holders.is_empty() {
        tried.push("pidfd_getfd: no visible owner to take the fd from".to_string());
    }
    for &Holder { pid, via_tid, fd } in subject.holders {
        match getsockopt_via_pidfd(pid, via_tid, fd, subject.inode) {
            Ok(bit) => {
                let through = match via_tid {
                    Some(tid) => format!("pid {pid} (through thread {tid})"),
                    None => format!("pid {pid}"),
                };
                return Some((
                    Some(bit),
                    evidence(
                        Source::PidfdGetfd,
                        format!(
                            "getsockopt(SO_REUSEPORT) = {} on fd {fd} of {through}",
                            u8::from(bit)
                        ),
                        std::mem::take(tried),
                    ),
                ));
            }
            Err(why) => tried.push(format!("pidfd_getfd on fd {fd} of pid {pid}: {why}")),
        }
    }
    None
}

/// The last resort: the bind probe, when allowed.
fn from_bind_probe(subject: &Subject<'_>, mut tried: Vec<String>) -> (Option<bool>, Reuseport) {
    if !subject.allow_probe {
        tried.push("bind probe: disabled (--no-probe)".to_string());
        return (None, nothing_could_tell(tried));
    }
    match bind_probe(subject) {
        Probe::Joined(uid) => (
            Some(true),
            evidence(
                Source::BindProbe,
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
                Source::BindProbe,
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
            (None, nothing_could_tell(tried))
        }
        Probe::Cannot(why) => {
            tried.push(format!("bind probe: {why}"));
            (None, nothing_could_tell(tried))
        }
    }
}

fn nothing_could_tell(tried: Vec<String>) -> Reuseport {
    evidence(Source::None, "nothing could tell".into(), tried)
}

fn evidence(source: Source, detail: String, tried: Vec<String>) -> Reuseport {
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
        let thread = std::thread::Builder::new().spawn_scoped(
            scope,
            move || -> Result<(), std::io::Error> {
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
            },
        );
        thread.map(|t| t.join())
    });
    let outcome = match outcome {
        Ok(joined) => joined,
        Err(e) => {
            return Probe::Cannot(format!(
                "its thread could not be started: {}",
                errno_label(&e)
            ));
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_serialize_as_the_readme_names_them() {
        for (source, name) in [
            (Source::Kernel, "kernel"),
            (Source::Group, "group"),
            (Source::PidfdGetfd, "pidfd_getfd"),
            (Source::BindProbe, "bind_probe"),
            (Source::None, "none"),
        ] {
            assert_eq!(serde_json::to_value(source).unwrap(), name);
            assert_eq!(source.to_string(), name);
        }
    }
}
