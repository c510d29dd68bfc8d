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

use std::collections::{HashMap, HashSet};
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use serde::{Deserialize, Serialize};

use super::token::{self, BACKLOG, Info, Owner, Subject};
use crate::error::Error;

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

/// `sockcheck __lease-agent DIR`: serves until idle.
pub fn serve(path: &Path) -> Result<crate::exit::ExitStatus, Error> {
    use std::io::Write;
    // `exe` otherwise (it was started as /proc/self/exe): ps and ss name it.
    let _ = rustix::thread::set_name(c"sockcheck-agent");
    let dir = Dir::open(path)?;
    let lock = rustix::fs::openat(
        dir.fd(),
        LOCK,
        rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::RDWR
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| state_error(path, format!("cannot open {LOCK}: {}", errno(e))))?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        println!("busy");
        return Ok(crate::exit::ExitStatus::Free);
    }
    // The lock is ours: any agent.sock is a dead agent's.
    let _ = rustix::fs::unlinkat(dir.fd(), SOCKET, rustix::fs::AtFlags::empty());
    let listener = seqpacket().map_err(|e| state_error(path, errno(e)))?;
    let address =
        SocketAddrUnix::new(dir.socket_path(SOCKET)).map_err(|e| state_error(path, errno(e)))?;
    net::bind(&listener, &address)
        .and_then(|()| net::listen(&listener, 64))
        .map_err(|e| state_error(path, format!("cannot listen on {SOCKET}: {}", errno(e))))?;
    raise_nofile();
    println!("ready");
    let _ = std::io::stdout().flush();
    if let Ok(null) = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::WRONLY,
        rustix::fs::Mode::empty(),
    ) {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    let mut agent = Agent::new(listener).map_err(|e| state_error(path, errno(e)))?;
    agent.run();
    // Idle: the socket goes first, so no client reaches a closing agent
    // (one that did gets no answer and starts another).
    let _ = rustix::fs::unlinkat(dir.fd(), SOCKET, rustix::fs::AtFlags::empty());
    drop(lock);
    Ok(crate::exit::ExitStatus::Free)
}

/// As many fds as the hard limit allows: one agent holds a token and a
/// connection or two per lease.
fn raise_nofile() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
}

/// What an epoll event is about.
enum Slot {
    Listener,
    Client(OwnedFd),
    Token(Subject),
    Connection(Subject),
    Owner(Owner),
}

struct Lease {
    token: OwnedFd,
    token_slot: u64,
    info: Info,
    owners: HashSet<Owner>,
    /// Accepted connections on the token (readers and waiters), by slot.
    connections: HashMap<u64, OwnedFd>,
}

struct Watch {
    pidfd: OwnedFd,
    slot: u64,
    leases: HashSet<Subject>,
}

struct Agent {
    epoll: OwnedFd,
    listener: OwnedFd,
    slots: HashMap<u64, Slot>,
    next: u64,
    leases: HashMap<Subject, Lease>,
    watches: HashMap<Owner, Watch>,
    uid: u32,
}

impl Agent {
    fn new(listener: OwnedFd) -> Result<Agent, Errno> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let mut agent = Agent {
            epoll,
            listener,
            slots: HashMap::new(),
            next: 0,
            leases: HashMap::new(),
            watches: HashMap::new(),
            uid: rustix::process::geteuid().as_raw(),
        };
        let listener = agent.listener.as_fd().as_raw_fd();
        // SAFETY: the listener lives as long as the agent.
        let fd = unsafe { BorrowedFd::borrow_raw(listener) };
        agent.register(fd, Slot::Listener, epoll::EventFlags::IN)?;
        Ok(agent)
    }

    fn register(
        &mut self,
        fd: BorrowedFd<'_>,
        slot: Slot,
        flags: epoll::EventFlags,
    ) -> Result<u64, Errno> {
        let id = self.next;
        self.next += 1;
        epoll::add(&self.epoll, fd, epoll::EventData::new_u64(id), flags)?;
        self.slots.insert(id, slot);
        Ok(id)
    }

    fn forget(&mut self, id: u64, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.epoll, fd);
        self.slots.remove(&id);
    }

    /// Until it has had no lease and no client for [`IDLE`].
    fn run(&mut self) {
        let mut idle_since = Some(Instant::now());
        let mut events = Vec::with_capacity(256);
        loop {
            let timeout = idle_since.map(|since| IDLE.saturating_sub(since.elapsed()));
            if timeout.is_some_and(|t| t.is_zero()) {
                return;
            }
            let timespec = timeout.and_then(|t| rustix::event::Timespec::try_from(t).ok());
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                timespec.as_ref(),
            ) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => return,
            }
            for event in events.drain(..) {
                let id = event.data.u64();
                self.handle(id);
            }
            let busy = !self.leases.is_empty()
                || self.slots.values().any(|s| matches!(s, Slot::Client(_)));
            idle_since = match (busy, idle_since) {
                (true, _) => None,
                (false, None) => Some(Instant::now()),
                (false, since) => since,
            };
        }
    }

    fn handle(&mut self, id: u64) {
        match self.slots.get(&id) {
            Some(Slot::Listener) => {
                if let Ok(client) =
                    net::accept_with(&self.listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
                {
                    let raw = client.as_raw_fd();
                    // SAFETY: the fd lives in the slot it is registered with.
                    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
                    let _ = self.register(fd, Slot::Client(client), epoll::EventFlags::IN);
                }
            }
            Some(Slot::Client(_)) => self.request(id),
            Some(Slot::Token(address)) => {
                let address = *address;
                self.accept(address);
            }
            Some(Slot::Connection(address)) => {
                let address = *address;
                self.connection(address, id);
            }
            Some(Slot::Owner(owner)) => {
                let owner = *owner;
                self.exited(owner);
            }
            None => {}
        }
    }

    /// One request from a client; its connection then closes.
    fn request(&mut self, id: u64) {
        let Some(Slot::Client(client)) = self.slots.remove(&id) else {
            return;
        };
        let _ = epoll::delete(&self.epoll, &client);
        let mut buf = [0u8; 8192];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = net::RecvAncillaryBuffer::new(&mut space);
        let received = net::recvmsg(
            &client,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            &mut control,
            net::RecvFlags::CMSG_CLOEXEC,
        );
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in control.drain() {
            if let net::RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        let reply = match received {
            Ok(r) if r.bytes > 0 => match serde_json::from_slice::<Request>(&buf[..r.bytes]) {
                Ok(request) => self.serve_request(request, fds),
                Err(e) => Err(format!("a request it cannot read: {e}")),
            },
            _ => return,
        };
        let reply = match reply {
            Ok(()) => Reply {
                ok: true,
                error: None,
            },
            Err(error) => Reply {
                ok: false,
                error: Some(error),
            },
        };
        if let Ok(text) = serde_json::to_vec(&reply) {
            let _ = net::send(&client, &text, net::SendFlags::NOSIGNAL);
        }
    }

    fn serve_request(&mut self, request: Request, mut fds: Vec<OwnedFd>) -> Result<(), String> {
        match request {
            Request::Hold { info } => {
                if fds.len() != 2 {
                    return Err("a hold request needs the token and the owner's pidfd".into());
                }
                let pidfd = fds.pop().expect("two fds");
                let token = fds.pop().expect("two fds");
                self.hold(info, token, pidfd)
            }
            Request::Release { subject: address } => {
                if !self.leases.contains_key(&address) {
                    return Err(format!("{address} is {NOT_HERE}"));
                }
                self.end(address);
                Ok(())
            }
            Request::Attach {
                subject: address,
                holder,
            } => {
                let pidfd = fds.pop().ok_or("an attach request needs a pidfd")?;
                if !self.leases.contains_key(&address) {
                    return Err(format!("{address} is not leased here"));
                }
                self.watch(holder, pidfd, address)?;
                if let Some(lease) = self.leases.get_mut(&address) {
                    lease.owners.insert(holder);
                    lease.info.holders.push(holder);
                }
                Ok(())
            }
        }
    }

    fn hold(&mut self, info: Info, token: OwnedFd, pidfd: OwnedFd) -> Result<(), String> {
        let subject = info.subject();
        let expected = token::kernel_name(subject);
        let bound = net::getsockname(&token)
            .ok()
            .and_then(|a| SocketAddrUnix::try_from(a).ok())
            .and_then(|a| a.abstract_name().map(<[u8]>::to_vec));
        if bound.as_deref() != Some(expected.as_slice()) {
            return Err(format!("the fd is not the token @{}", token::name(subject)));
        }
        if self.leases.contains_key(&subject) {
            return Err(format!("{subject} is leased here already"));
        }
        if token::readable(pidfd.as_fd(), Duration::ZERO) {
            return Err(format!("the owner, pid {}, has exited", info.owner.pid));
        }
        net::listen(&token, BACKLOG).map_err(|e| format!("listen on the token: {}", errno(e)))?;
        let raw = token.as_raw_fd();
        // SAFETY: the token lives in its lease as long as it is registered.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let slot = self
            .register(fd, Slot::Token(subject), epoll::EventFlags::IN)
            .map_err(|e| format!("epoll: {}", errno(e)))?;
        let address = subject;
        let owner = info.owner;
        self.leases.insert(
            address,
            Lease {
                token,
                token_slot: slot,
                info,
                owners: HashSet::from([owner]),
                connections: HashMap::new(),
            },
        );
        if let Err(e) = self.watch(owner, pidfd, address) {
            self.end(address);
            return Err(e);
        }
        Ok(())
    }

    /// Watches `owner`'s pidfd for `address` (one pidfd per owner).
    fn watch(&mut self, owner: Owner, pidfd: OwnedFd, address: Subject) -> Result<(), String> {
        if let Some(watch) = self.watches.get_mut(&owner) {
            watch.leases.insert(address);
            return Ok(());
        }
        let raw = pidfd.as_raw_fd();
        // SAFETY: the pidfd lives in its watch as long as it is registered.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        let slot = self
            .register(fd, Slot::Owner(owner), epoll::EventFlags::IN)
            .map_err(|e| format!("epoll: {}", errno(e)))?;
        self.watches.insert(
            owner,
            Watch {
                pidfd,
                slot,
                leases: HashSet::from([address]),
            },
        );
        Ok(())
    }

    /// A reader or a waiter connects: it gets the info line, and keeps the
    /// connection until the lease ends.
    fn accept(&mut self, address: Subject) {
        let Some(lease) = self.leases.get(&address) else {
            return;
        };
        if lease.connections.len() >= CONNECTIONS {
            // Enough readers: the rest wait in the backlog (they still wake
            // when the lease ends) until one hangs up. Not accepting also
            // means no fd of ours for whoever floods a token.
            let _ = epoll::modify(
                &self.epoll,
                &lease.token,
                epoll::EventData::new_u64(lease.token_slot),
                epoll::EventFlags::empty(),
            );
            return;
        }
        let Ok(connection) =
            net::accept_with(&lease.token, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
        else {
            return;
        };
        let mut line = serde_json::to_vec(&lease.info).unwrap_or_default();
        line.push(b'\n');
        let _ = net::send(&connection, &line, net::SendFlags::NOSIGNAL);
        let raw = connection.as_raw_fd();
        // SAFETY: the connection lives in its lease as long as it is registered.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if let Ok(slot) = self.register(
            fd,
            Slot::Connection(address),
            epoll::EventFlags::IN | epoll::EventFlags::RDHUP,
        ) && let Some(lease) = self.leases.get_mut(&address)
        {
            lease.connections.insert(slot, connection);
        }
    }

    /// A connection speaks (`release`) or hangs up.
    fn connection(&mut self, address: Subject, slot: u64) {
        let Some(lease) = self.leases.get_mut(&address) else {
            return;
        };
        let Some(connection) = lease.connections.get(&slot) else {
            return;
        };
        let mut buf = [0u8; 64];
        let n = match rustix::io::read(connection, &mut buf) {
            Ok(n) => n,
            Err(Errno::AGAIN) => return,
            Err(_) => 0,
        };
        if n == 0 {
            let connection = lease.connections.remove(&slot).expect("present");
            if lease.connections.len() + 1 == CONNECTIONS {
                // Room again: accept what waits in the backlog.
                let _ = epoll::modify(
                    &self.epoll,
                    &lease.token,
                    epoll::EventData::new_u64(lease.token_slot),
                    epoll::EventFlags::IN,
                );
            }
            self.forget(slot, connection.as_fd());
            return;
        }
        if !buf[..n].starts_with(b"release") {
            return;
        }
        let peer = net::sockopt::socket_peercred(connection).ok();
        let answer = match peer {
            Some(cred) if cred.uid.as_raw() == self.uid => "{\"released\":true}\n".to_string(),
            Some(cred) => format!(
                "{{\"released\":false,\"error\":\"the lease is uid {}'s; uid {} may not release it\"}}\n",
                self.uid,
                cred.uid.as_raw()
            ),
            None => "{\"released\":false,\"error\":\"who asked cannot be told\"}\n".into(),
        };
        let _ = net::send(connection, answer.as_bytes(), net::SendFlags::NOSIGNAL);
        if answer.contains("true") {
            self.end(address);
        }
    }

    /// An owner exited: its leases end once no other owner keeps them.
    fn exited(&mut self, owner: Owner) {
        let Some(watch) = self.watches.remove(&owner) else {
            return;
        };
        self.forget(watch.slot, watch.pidfd.as_fd());
        for address in watch.leases {
            let Some(lease) = self.leases.get_mut(&address) else {
                continue;
            };
            lease.owners.remove(&owner);
            lease.info.exited.push(owner);
            if lease.owners.is_empty() {
                self.end(address);
            }
        }
    }

    /// Ends a lease: the token closes first (the name is free), then its
    /// connections (waiters wake to find it free).
    fn end(&mut self, address: Subject) {
        let Some(lease) = self.leases.remove(&address) else {
            return;
        };
        self.forget(lease.token_slot, lease.token.as_fd());
        drop(lease.token);
        for (slot, connection) in lease.connections {
            self.forget(slot, connection.as_fd());
        }
        for owner in lease.owners {
            let done = self.watches.get_mut(&owner).is_some_and(|w| {
                w.leases.remove(&address);
                w.leases.is_empty()
            });
            if done && let Some(watch) = self.watches.remove(&owner) {
                self.forget(watch.slot, watch.pidfd.as_fd());
            }
        }
    }
}
