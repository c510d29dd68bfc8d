//! The lease token: an `AF_UNIX` stream socket bound to the abstract name
//! `\0sockcheck/v1/lease/ADDRESS` (docs/leases.md). Binding it is taking
//! the lease: the kernel lets one socket of a network namespace have a name,
//! whoever asks, and frees it when the last fd on it closes.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{self, AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The abstract names of address leases start with this (after the NUL).
pub const PREFIX: &str = "sockcheck/v1/lease/";

/// The abstract names of port leases start with this: a port is leased on
/// every host at once.
pub const PORT_PREFIX: &str = "sockcheck/v1/port/";

/// What a lease is for: a loopback address (on the gate's ports), or a
/// TCP port (on every host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    Address(IpAddr),
    Port(u16),
}

impl From<IpAddr> for Subject {
    fn from(address: IpAddr) -> Subject {
        Subject::Address(address)
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Address(address) => write!(f, "{address}"),
            Subject::Port(port) => write!(f, "port {port}"),
        }
    }
}

/// How long a reader waits for a holder's info line.
pub const ANSWER: Duration = Duration::from_millis(300);

/// The backlog a holder listens with: waiting acquirers sit in it.
pub const BACKLOG: i32 = 128;

/// The abstract name of a token as people read it (ss and /proc/net/unix
/// show `@` before it, and one `@` per padding NUL after).
pub fn name(subject: impl Into<Subject>) -> String {
    match subject.into() {
        Subject::Address(address) => format!("{PREFIX}{address}"),
        Subject::Port(port) => format!("{PORT_PREFIX}{port}"),
    }
}

/// The bytes of the name in the kernel, without the leading NUL: padded
/// with NULs to the whole of `sun_path` (107 bytes after the leading NUL).
///
/// Node 20 (libuv 1.46) binds and connects every abstract name with the
/// full `sizeof(struct sockaddr_un)` (nodejs/node#50889), so the name it
/// binds for `\0sockcheck/v1/lease/ADDR` is that string padded with NULs.
/// The padded name is the one every implementation can bind, so it is the
/// token for all of them: the npm fallback pads its string to 108 bytes,
/// which newer Node versions bind as given.
pub fn kernel_name(subject: impl Into<Subject>) -> Vec<u8> {
    let mut bytes = name(subject).into_bytes();
    bytes.resize(SUN_PATH - 1, 0);
    bytes
}

/// `sizeof(((struct sockaddr_un *)0)->sun_path)`.
const SUN_PATH: usize = 108;

fn socket_addr(subject: Subject) -> Result<SocketAddrUnix, Error> {
    SocketAddrUnix::new_abstract_name(&kernel_name(subject))
        .map_err(|e| Error::syscall("the lease token's name", e.into()))
}

/// A new unbound `AF_UNIX` stream socket (close-on-exec).
fn unix_socket(flags: SocketFlags) -> Result<OwnedFd, Error> {
    net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | flags,
        None,
    )
    .map_err(|e| Error::syscall("socket(AF_UNIX) for a lease token", e.into()))
}

/// A bound lease token: this process has the lease until it hands the fd
/// on (to the lease agent) or drops it.
#[derive(Debug)]
pub struct Token {
    fd: OwnedFd,
    pub subject: Subject,
}

impl Token {
    /// Takes the lease of `address`: `None` when any socket of this network
    /// namespace has its name already (leased). Any other failure (EMFILE,
    /// ENOMEM, …) is an error: nothing was leased, and nothing is guessed.
    pub fn claim(subject: impl Into<Subject>) -> Result<Option<Token>, Error> {
        let subject = subject.into();
        let fd = unix_socket(SocketFlags::empty())?;
        match net::bind(&fd, &socket_addr(subject)?) {
            Ok(()) => Ok(Some(Token { fd, subject })),
            Err(Errno::ADDRINUSE) => Ok(None),
            Err(e) => Err(Error::syscall(
                format!("bind(@{}) (taking the lease token)", name(subject)),
                e.into(),
            )),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

/// What a holder says of its lease, in one JSON line (docs/leases.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Info {
    /// The protocol version: 1.
    pub sockcheck_lease: u32,
    /// The address leased, or for a port, the host it was asked for.
    pub address: IpAddr,
    /// What is leased: `address` or `port` (then `ports` holds it).
    pub kind: String,
    pub backend: Backend,
    /// The process the lease belongs to.
    pub owner: Owner,
    /// Further processes the lease lives on in (`run`'s command, and a
    /// lingering holder).
    #[serde(default)]
    pub holders: Vec<Owner>,
    /// The owner and holders that have exited since (the lease lives on in
    /// the others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exited: Vec<Owner>,
    /// The holder's uid, as it says (readers trust SO_PEERCRED's).
    pub uid: u32,
    /// Unix seconds.
    pub acquired: u64,
    #[serde(default)]
    pub ports: Vec<u16>,
}

impl Info {
    /// What this lease is for.
    pub fn subject(&self) -> Subject {
        match (self.kind.as_str(), self.ports.first()) {
            ("port", Some(&port)) => Subject::Port(port),
            _ => Subject::Address(self.address),
        }
    }
}

/// Who holds a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A sockcheck lease agent (the binary: acquire, run, npm, Python).
    Binary,
    /// A package's fallback (npm's plain JS, Python's), in the leaseholder's
    /// own process.
    Fallback,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Binary => "sockcheck binary",
            Backend::Fallback => "fallback",
        }
    }
}

/// A process a lease belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct Owner {
    pub pid: u32,
    /// `starttime` from /proc/PID/stat; null from the fallback.
    pub start_ticks: Option<u64>,
}

/// The kernel's word on who called `listen()` on a token (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
}

/// What a look at a leased address's token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Nothing has the name (released meanwhile).
    Free,
    /// The name is bound but nothing listens yet (an acquirer between its
    /// bind and the hand-over), or nothing answered in time.
    Silent { peer: Option<Peer> },
    /// A holder answered.
    Answered { peer: Peer, info: Info },
}

impl Holder {
    /// One phrase for a skip or a refusal: `leased to pid 4242 (uid 1000,
    /// sockcheck binary)`.
    pub fn describe(&self) -> String {
        match self {
            Holder::Free => "leased a moment ago; released since".into(),
            Holder::Silent { peer: Some(peer) } => format!(
                "leased (its token is held by pid {} of uid {}, which did not answer)",
                peer.pid, peer.uid
            ),
            Holder::Silent { peer: None } => {
                "leased (its token is bound, but not yet answering: being handed over)".into()
            }
            Holder::Answered { peer, info } => {
                let owner = if info.owner.pid == peer.pid {
                    String::new()
                } else {
                    format!(", held by pid {}", peer.pid)
                };
                let holders: Vec<String> = info.holders.iter().map(|h| h.pid.to_string()).collect();
                format!(
                    "leased to pid {} (uid {}, {}{owner}){}",
                    info.owner.pid,
                    peer.uid,
                    info.backend.as_str(),
                    if holders.is_empty() {
                        String::new()
                    } else {
                        format!(", living on in pid {}", holders.join(", "))
                    }
                )
            }
        }
    }

    /// The pids worth naming: the owner and the token's holder.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Holder::Answered { info, .. } => {
                let mut pids = vec![info.owner.pid];
                pids.extend(info.holders.iter().map(|h| h.pid));
                pids
            }
            Holder::Silent { peer: Some(peer) } => vec![peer.pid],
            _ => Vec::new(),
        }
    }
}

/// A connection to a token's holder.
pub struct Connection {
    fd: OwnedFd,
}

impl Connection {
    /// Connects to `address`'s token: `None` when nothing listens on it
    /// (ECONNREFUSED: no such name, or bound and not listening yet), or its
    /// backlog is full (EAGAIN). Non-blocking: a token whose backlog someone
    /// filled never stalls the caller.
    pub fn open(subject: impl Into<Subject>) -> Result<Option<Connection>, Error> {
        let subject = subject.into();
        let fd = unix_socket(SocketFlags::NONBLOCK)?;
        match net::connect(&fd, &socket_addr(subject)?) {
            Ok(()) => Ok(Some(Connection { fd })),
            Err(Errno::CONNREFUSED) | Err(Errno::AGAIN) => Ok(None),
            Err(e) => Err(Error::syscall(
                format!("connect(@{})", name(subject)),
                e.into(),
            )),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Who called `listen()` on the token, from the kernel.
    pub fn peer(&self) -> Option<Peer> {
        let cred = net::sockopt::socket_peercred(&self.fd).ok()?;
        Some(Peer {
            pid: cred.pid.as_raw_nonzero().get() as u32,
            uid: cred.uid.as_raw(),
        })
    }

    /// One line from the holder, waiting at most `timeout`.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.contains(&b'\n') && got.len() < 64 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !readable(self.fd.as_fd(), left) {
                return None;
            }
            match rustix::io::read(&self.fd, &mut buf) {
                Ok(0) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(Errno::AGAIN) | Err(Errno::INTR) => {}
                Err(_) => return None,
            }
        }
        let end = got.iter().position(|&b| b == b'\n')?;
        String::from_utf8(got[..end].to_vec()).ok()
    }

    /// Sends a short request (it fits the socket buffer of a fresh
    /// connection, so a non-blocking send takes it whole).
    pub fn send(&mut self, text: &str) -> bool {
        net::send(&self.fd, text.as_bytes(), net::SendFlags::NOSIGNAL)
            .is_ok_and(|n| n == text.len())
    }
}

/// Whether `fd` has something to read (or hung up) within `timeout`.
pub fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN | rustix::event::PollFlags::RDHUP,
    )];
    let timeout = rustix::event::Timespec::try_from(timeout).ok();
    matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(n) if n > 0)
}

/// Who holds `address`'s token, as far as one look can tell.
pub fn holder(subject: impl Into<Subject>) -> Holder {
    let subject = subject.into();
    let mut connection = match Connection::open(subject) {
        Ok(Some(connection)) => connection,
        _ => {
            // Nothing listens: free, or bound and being handed over.
            return match Token::claim(subject) {
                Ok(Some(_)) => Holder::Free,
                _ => Holder::Silent { peer: None },
            };
        }
    };
    let peer = connection.peer();
    let info = connection
        .line(ANSWER)
        .and_then(|line| serde_json::from_str::<Info>(&line).ok());
    match (peer, info) {
        (Some(peer), Some(info)) => Holder::Answered { peer, info },
        (peer, _) => Holder::Silent { peer },
    }
}

/// What `release` of a token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Released,
    /// Nothing has the token.
    NotLeased,
    /// The holder refused, or cannot be asked: why.
    Refused(String),
}

/// Asks the holder of `address`'s token to end the lease. Only a binary
/// holder of the same uid does (it checks SO_PEERCRED); the fallback
/// releases only in its own process.
pub fn release(subject: impl Into<Subject>) -> Result<Released, Error> {
    let subject = subject.into();
    let Some(mut connection) = Connection::open(subject)? else {
        return Ok(match Token::claim(subject)? {
            Some(_) => Released::NotLeased,
            None => Released::Refused(
                "its token is bound but not listening (an acquire is handing it over); try again"
                    .into(),
            ),
        });
    };
    let peer = connection.peer();
    let info = connection
        .line(ANSWER)
        .and_then(|line| serde_json::from_str::<Info>(&line).ok());
    let Some(info) = info else {
        return Ok(Released::Refused(match peer {
            Some(p) => format!(
                "its token is held by pid {} (uid {}), which does not answer as sockcheck does",
                p.pid, p.uid
            ),
            None => "its holder does not answer".into(),
        }));
    };
    if info.backend == Backend::Fallback {
        return Ok(Released::Refused(format!(
            "it is leased to pid {} through the npm fallback, which releases it only in that \
             process (its release(), or its exit)",
            info.owner.pid
        )));
    }
    if !connection.send("release\n") {
        return Ok(Released::Refused("its holder hung up".into()));
    }
    #[derive(Deserialize)]
    struct Reply {
        released: bool,
        #[serde(default)]
        error: Option<String>,
    }
    match connection
        .line(Duration::from_secs(2))
        .and_then(|l| serde_json::from_str::<Reply>(&l).ok())
    {
        Some(Reply { released: true, .. }) => Ok(Released::Released),
        Some(Reply { error, .. }) => Ok(Released::Refused(
            error.unwrap_or_else(|| "its holder refused".into()),
        )),
        None => Ok(Released::Refused("its holder did not answer".into())),
    }
}

/// Whether the holder has hung up on `connection` (the lease ended).
pub fn readable_hangup(connection: &Connection) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        &connection.fd,
        rustix::event::PollFlags::RDHUP | rustix::event::PollFlags::HUP,
    )];
    let zero = rustix::event::Timespec::try_from(Duration::ZERO).ok();
    matches!(rustix::event::poll(&mut fds, zero.as_ref()), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .intersects(rustix::event::PollFlags::RDHUP | rustix::event::PollFlags::HUP)
}

/// Waits until one of the connections hangs up (a lease ended) or
/// `timeout` passes. Returns whether one did.
pub fn wait_any(connections: &[Connection], timeout: Duration) -> bool {
    if connections.is_empty() {
        std::thread::sleep(timeout);
        return false;
    }
    let mut fds: Vec<rustix::event::PollFd> = connections
        .iter()
        .map(|c| {
            rustix::event::PollFd::new(
                &c.fd,
                rustix::event::PollFlags::RDHUP | rustix::event::PollFlags::HUP,
            )
        })
        .collect();
    let timeout = rustix::event::Timespec::try_from(timeout).ok();
    matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(n) if n > 0)
        && fds.iter().any(|f| {
            f.revents()
                .intersects(rustix::event::PollFlags::RDHUP | rustix::event::PollFlags::HUP)
        })
}

impl AsRawFd for Connection {
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
