//! The lease agent: the process that holds the binary's lease tokens for as
//! long as their owners live (docs/leases.md).
//!
//! One agent per user and state directory, started on demand by the first
//! acquire (`sockcheck __lease-agent`, detached) and gone a few seconds
//! after its last lease ends. Acquirers reach it through
//! `STATE_DIR/agent.sock`, a `SOCK_SEQPACKET` socket in the user's own 0700
//! directory, and hand it, with `SCM_RIGHTS`, the bound token and a pidfd
//! of the owner. It ends a lease when every pidfd of it is readable (every
//! owner exited) or when a process of its own uid asks on the token, and
//! never otherwise: it never reads /proc by pid, so nothing it cannot read
//! makes it drop a lease.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{self, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};

use super::token::{self, Info, Owner, Subject};
use crate::error::Error;

mod server;
pub use server::serve;

/// The agent's socket, in the state directory.
const SOCKET: &str = "agent.sock";
/// Held (flock) by the live agent: while it is, `agent.sock` is that agent's.
const LOCK: &str = "agent.lock";
/// How long an agent with no lease and no client stays.
const IDLE: Duration = Duration::from_secs(3);
/// Connections a token keeps accepted at once (readers and waiters).
const CONNECTIONS: usize = 64;
/// How long a client waits for the agent's answer.
const ANSWER: Duration = Duration::from_secs(5);

/// A request to the agent (one packet; its fds ride along).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    /// Hold this token (fd 0) for `info.owner`, whose pidfd is fd 1.
    Hold { info: Info },
    /// The lease of `subject` lives on in `holder` too (pidfd: fd 0).
    Attach { subject: Subject, holder: Owner },
    /// End the lease of `subject` (only this user reaches the agent).
    Release { subject: Subject },
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The state directory, opened once (see [`StateDir`]): files in it are
/// named through `/proc/self/fd/N/NAME`, so a socket's path is short and
/// always the directory that was checked.
pub use crate::gate::state::StateDir as Dir;

fn errno(e: Errno) -> String {
    crate::error::errno_label(&e.into())
}

fn state_error(dir: &Path, why: String) -> Error {
    Error::State(format!("state directory {}: {why}", dir.display()))
}

/// Hands `token` to the agent of `dir` (starting one if none runs), for
/// `info.owner`, whose pidfd is `pidfd`. Once this returns, the lease is the
/// agent's; on error, dropping the token ends it.
pub fn hand_over(
    dir: &Dir,
    token: token::Token,
    info: &Info,
    pidfd: &OwnedFd,
) -> Result<(), Error> {
    let request = Request::Hold { info: info.clone() };
    ask(dir, &request, &[token.fd(), pidfd.as_fd()])
}

/// Ends the lease of `address` if this directory's agent holds it:
/// `Ok(false)` when it does not (another agent's, another user's, the
/// fallback's, or none), or when no agent runs. Through the agent's own
/// socket, not the token, so a flood of connections to the token cannot
/// keep its owner from releasing it.
pub fn release(dir: &Dir, subject: impl Into<Subject>) -> Result<bool, Error> {
    let subject = subject.into();
    match connect(dir) {
        Err(Errno::NOENT) | Err(Errno::CONNREFUSED) => return Ok(false),
        Err(e) => {
            return Err(state_error(
                dir.path(),
                format!("cannot reach its lease agent: {}", errno(e)),
            ));
        }
        Ok(_) => {}
    }
    match ask(dir, &Request::Release { subject }, &[]) {
        Ok(()) => Ok(true),
        Err(Error::State(why)) if why.ends_with(NOT_HERE) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What the agent answers a release of a lease it does not hold.
const NOT_HERE: &str = "not leased through this agent";

/// Makes the lease of `address` live on in `holder` too.
pub fn attach(
    dir: &Dir,
    subject: impl Into<Subject>,
    holder: Owner,
    pidfd: &OwnedFd,
) -> Result<(), Error> {
    let subject = subject.into();
    ask(dir, &Request::Attach { subject, holder }, &[pidfd.as_fd()])
}

fn ask(dir: &Dir, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
    let text = serde_json::to_vec(request).map_err(|e| state_error(dir.path(), e.to_string()))?;
    let mut why = String::from("no agent answered");
    for _ in 0..4 {
        let socket = match connect(dir) {
            Ok(socket) => socket,
            Err(Errno::NOENT) | Err(Errno::CONNREFUSED) => {
                spawn(dir)?;
                continue;
            }
            Err(e) => {
                return Err(state_error(
                    dir.path(),
                    format!("cannot reach its lease agent: {}", errno(e)),
                ));
            }
        };
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = net::SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            control.push(net::SendAncillaryMessage::ScmRights(fds));
        }
        if let Err(e) = net::sendmsg(
            &socket,
            &[IoSlice::new(&text)],
            &mut control,
            net::SendFlags::NOSIGNAL,
        ) {
            why = format!("sending to its lease agent failed: {}", errno(e));
            continue;
        }
        // An agent that was exiting closes without answering: start anew.
        if !token::readable(socket.as_fd(), ANSWER) {
            why = "its lease agent did not answer".into();
            continue;
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(&socket, &mut buf) {
            Ok(0) | Err(_) => {
                why = "its lease agent hung up".into();
                continue;
            }
            Ok(n) => {
                let reply: Reply = serde_json::from_slice(&buf[..n])
                    .map_err(|e| state_error(dir.path(), format!("its lease agent: {e}")))?;
                return match reply {
                    Reply { ok: true, .. } => Ok(()),
                    Reply { error, .. } => Err(state_error(
                        dir.path(),
                        format!(
                            "its lease agent refused: {}",
                            error.unwrap_or_else(|| "no reason".into())
                        ),
                    )),
                };
            }
        }
    }
    Err(state_error(dir.path(), why))
}

fn seqpacket() -> Result<OwnedFd, Errno> {
    net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
}

fn connect(dir: &Dir) -> Result<OwnedFd, Errno> {
    let socket = seqpacket()?;
    let address = SocketAddrUnix::new(dir.socket_path(SOCKET))?;
    net::connect(&socket, &address)?;
    Ok(socket)
}

/// Starts an agent for `dir` and waits until it listens (or says that
/// another one runs). It is forked twice, so it is never our child (no
/// zombie in a long-lived `run`), in a session of its own, with no fd of
/// ours but the pipe it answers on.
fn spawn(dir: &Dir) -> Result<(), Error> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg0("sockcheck")
        .arg("__lease-agent")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .current_dir("/");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // Every inherited fd but 0-2 closes at exec.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| state_error(dir.path(), format!("cannot start its lease agent: {e}")))?;
    let stdout = child.stdout.take();
    let _ = child.wait(); // the intermediate fork, which exits at once
    let mut line = String::new();
    if let Some(stdout) = stdout {
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    match line.trim() {
        "ready" | "busy" => Ok(()),
        other => Err(state_error(
            dir.path(),
            format!(
                "its lease agent did not start ({})",
                if other.is_empty() { "no answer" } else { other }
            ),
        )),
    }
}
