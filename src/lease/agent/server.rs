//! The agent process itself: `sockcheck __lease-agent DIR` (see the parent
//! module). One epoll loop over the listener, its clients, the tokens held,
//! the connections accepted on them, and the owners' pidfds.

use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::io::Errno;
use rustix::net::{self, SocketAddrUnix, SocketFlags};

use super::super::token::{self, BACKLOG, Info, Owner, Subject};
use super::{
    CONNECTIONS, Dir, IDLE, LOCK, NOT_HERE, Reply, Request, SOCKET, errno, seqpacket, state_error,
};
use crate::error::Error;

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
