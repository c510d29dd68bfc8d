//! The lease space: one per network namespace, shared by every backend and
//! every user (docs/leases.md).
//!
//! - [`token`]: a lease is an abstract `AF_UNIX` name; taking, reading,
//!   releasing and listing them;
//! - [`agent`]: the process that holds the binary's tokens for their owners.

pub mod agent;
pub mod token;
pub mod unix_diag;

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;

use crate::error::Error;
pub use agent::Dir;
pub use token::{Backend, Holder, Info, Owner, Subject, Token};

/// A process that is to own a lease, pinned by a pidfd: whatever happens
/// to its pid later, the pidfd stays this process's.
#[derive(Debug)]
pub struct OwnerHandle {
    pub owner: Owner,
    pub pidfd: OwnedFd,
}

impl OwnerHandle {
    /// Pins `pid`. Its start time is read after the pidfd is open, and the
    /// pidfd checked again after that, so the two describe one process.
    /// A pid with no process is bad input (exit 2); anything that keeps us
    /// from telling (EMFILE, ENOMEM, EACCES) is a failure (exit 3), never a
    /// guess.
    pub fn open(pid: u32, what: &str) -> Result<OwnerHandle, Error> {
        let gone = || Error::Usage(format!("{what}: no live process with pid {pid}"));
        let raw = rustix::process::Pid::from_raw(pid as i32).ok_or_else(gone)?;
        let pidfd = match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) => return Err(gone()),
            Err(e) => {
                return Err(Error::syscall(
                    format!("pidfd_open({pid}) ({what}: cannot pin the lease's owner)"),
                    e.into(),
                ));
            }
        };
        let stat = procfs::process::Process::new(pid as i32).and_then(|p| p.stat());
        let start_ticks = match stat {
            Ok(stat) => stat.starttime,
            Err(procfs::ProcError::NotFound(_)) => return Err(gone()),
            Err(e) => {
                return Err(Error::Syscall {
                    call: format!("reading /proc/{pid}/stat ({what}: the owner's start time)"),
                    source: std::io::Error::other(e.to_string()),
                });
            }
        };
        if token::readable(pidfd.as_fd(), std::time::Duration::ZERO) {
            return Err(gone());
        }
        Ok(OwnerHandle {
            owner: Owner {
                pid,
                start_ticks: Some(start_ticks),
            },
            pidfd,
        })
    }
}

/// Hands a claimed token to the lease agent of `dir`, for `owner`. Once
/// this returns, it is leased until the owner exits or releases. `ports`:
/// an address lease's ports; `host`: the host a port lease was asked for.
pub fn grant(
    dir: &Dir,
    token: Token,
    owner: &OwnerHandle,
    ports: &[u16],
    host: IpAddr,
) -> Result<Info, Error> {
    let (address, kind, ports) = match token.subject {
        token::Subject::Address(address) => (address, "address", ports.to_vec()),
        token::Subject::Port(port) => (host, "port", vec![port]),
    };
    let info = Info {
        sockcheck_lease: 1,
        address,
        kind: kind.into(),
        backend: Backend::Binary,
        owner: owner.owner,
        holders: Vec::new(),
        exited: Vec::new(),
        uid: rustix::process::geteuid().as_raw(),
        acquired: crate::gate::state::now(),
        ports,
    };
    agent::hand_over(dir, token, &info, &owner.pidfd)?;
    Ok(info)
}
