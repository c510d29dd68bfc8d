//! `sockcheck acquire-port` and `release-port`: free TCP ports leased in
//! the same lease space as addresses (a token `sockcheck/v1/port/PORT` per
//! port, on every host at once), so get-port's race (bind, close, hope)
//! cannot happen between two users of sockcheck, whatever their backend.
//!
//! A port is free on HOST when no socket in a state that would make a
//! server's bind fail is on HOST:PORT (listening, bound, connected; a
//! wildcard of either family that covers HOST counts), no lease has it,
//! and a canary bind with SO_REUSEADDR succeeds. TIME_WAIT remnants do not
//! make a server with SO_REUSEADDR fail, so a port with only those is free,
//! but one with no remnant at all is chosen first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Serialize;

use super::POLL;
use super::ledger::LeaseOwner;
use super::{Context, LeaseContext};
use crate::diag::DiagSocket;
use crate::document::Document;
use crate::error::Error;
use crate::exit::ExitStatus;
use crate::lease::{self, Dir, OwnerHandle, Subject, Token};

/// The default range: below the kernel's usual ephemeral range (32768+),
/// above most well-known services; less whatever
/// `net.ipv4.ip_local_port_range` and `ip_local_reserved_ports` say here.
pub const DEFAULT_RANGE: (u16, u16) = (15000, 32767);

/// The ports of the default range that the kernel never hands out on its
/// own (bind to port 0, outgoing connections): so nothing but a server
/// asked to take a leased port can land on it.
pub fn default_range() -> Vec<u16> {
    let ephemeral = ephemeral().unwrap_or((32768, 60999));
    let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
        .map(|text| reserved_ports(&text))
        .unwrap_or_default();
    (DEFAULT_RANGE.0..=DEFAULT_RANGE.1)
        .filter(|p| !(ephemeral.0..=ephemeral.1).contains(p) && !reserved.contains(p))
        .collect()
}

/// A port range as people give it: `20000`, `20000-20099`, or a comma
/// list of those; in the order given, each port once. Bad input names the
/// value (`what` says where it came from).
pub fn parse_range(text: &str, what: &str) -> Result<Vec<u16>, Error> {
    let bad = |part: &str, why: &str| {
        Error::Usage(format!(
            "{what}: {} {why} (examples: 20000, 20000-20099, 20000,20010-20019)",
            crate::text::echo(part)
        ))
    };
    let port = |part: &str| -> Result<u16, Error> {
        match part.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(bad(part, "is not a TCP port (1-65535)")),
            Ok(port) => Ok(port),
        }
    };
    let mut seen = BTreeSet::new();
    let mut ports = Vec::new();
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(part)?, port(part)?),
        };
        if lo > hi {
            return Err(bad(part, "ends before it starts"));
        }
        ports.extend((lo..=hi).filter(|p| seen.insert(*p)));
    }
    Ok(ports)
}

/// `net.ipv4.ip_local_port_range`: where the kernel takes ports of its own.
fn ephemeral() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// `8080,9000-9010` as the kernel writes `ip_local_reserved_ports`.
fn reserved_ports(text: &str) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
            ports.extend(lo..=hi);
        }
    }
    ports
}

/// What the kernel view says of one port on the host.
#[derive(Debug, Default, Clone)]
struct PortState {
    /// Sockets that would make a bind fail (listening, bound, connected,
    /// any state but TIME_WAIT), on the host or on a wildcard covering it.
    blocking: Vec<DiagSocket>,
    /// TIME_WAIT remnants only.
    time_wait: usize,
}

fn states(
    view: &crate::inspect::KernelView,
    host: IpAddr,
    range: &BTreeSet<u16>,
) -> BTreeMap<u16, PortState> {
    let mut states: BTreeMap<u16, PortState> = BTreeMap::new();
    for socket in view.listeners.iter().chain(&view.others) {
        let port = socket.local.port();
        if !range.contains(&port)
            || crate::inspect::coverage(host, socket.local.ip(), socket.v6only).is_none()
        {
            continue;
        }
        let state = states.entry(port).or_default();
        if socket.state == crate::diag::TcpState::TimeWait {
            state.time_wait += 1;
        } else {
            state.blocking.push(socket.clone());
        }
    }
    states
}

/// One port of the range passed over, and why.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SkippedPort {
    pub port: u16,
    /// `leased`, `busy` (a socket blocks it), or `conflict` (the canary
    /// bind failed with nothing in the kernel view to explain it).
    pub reason: String,
    pub pids: Vec<u32>,
    pub message: String,
}

/// What `acquire-port --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct PortsAcquired {
    schema: u32,
    host: IpAddr,
    /// The leased ports; null when not enough could be leased.
    ports: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<LeaseOwner>,
    state_dir: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<SkippedPort>,
}

impl PortsAcquired {
    /// The ports leased, one a line; or why not (a note), with one line per
    /// port passed over (the first 32; `--json` lists every one).
    pub(crate) fn render(&self) -> String {
        if let Some(ports) = &self.ports {
            return ports.iter().map(|p| format!("{p}\n")).collect();
        }
        let mut text = format!(
            "sockcheck: {}:\n",
            self.error.as_deref().unwrap_or_default()
        );
        for skip in self.skipped.iter().take(32) {
            text.push_str(&format!(
                "  {:<5}  {:<8}  {}\n",
                skip.port, skip.reason, skip.message
            ));
        }
        if self.skipped.len() > 32 {
            text.push_str(&format!(
                "  … and {} more (--json lists every one)\n",
                self.skipped.len() - 32
            ));
        }
        text
    }
}

/// The canary: a plain server's bind (SO_REUSEADDR on) of HOST:PORT,
/// closed at once.
fn canary(host: IpAddr, port: u16) -> Result<(), std::io::Error> {
    let address = SocketAddr::new(host, port);
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())
}

/// Takes up to `count` ports of `range` whose tokens nobody has and that
/// are free on `host`: first those with no socket at all, then those with
/// TIME_WAIT remnants only. Tokens taken for ports that turn out busy are
/// dropped again. Returns the tokens and why each other port was passed
/// over (those passed over before `count` were found).
fn take(
    range: &[u16],
    host: IpAddr,
    count: usize,
) -> Result<(Vec<Token>, Vec<SkippedPort>), Error> {
    let wanted: BTreeSet<u16> = range.iter().copied().collect();
    let view = crate::inspect::kernel_view(&[])?;
    let states = states(&view, host, &wanted);
    let mut taken = Vec::new();
    let mut skipped = Vec::new();
    for remnants_allowed in [false, true] {
        for &port in range {
            if taken.len() == count {
                return Ok((taken, skipped));
            }
            let state = states.get(&port);
            if let Some(state) = state.filter(|s| !s.blocking.is_empty()) {
                if !remnants_allowed {
                    skipped.push(SkippedPort::busy(port, &state.blocking[0]));
                }
                continue;
            }
            if state.is_some_and(|s| s.time_wait > 0) != remnants_allowed {
                continue;
            }
            match try_port(host, port)? {
                Ok(token) => taken.push(token),
                Err(skip) => skipped.push(skip),
            }
        }
    }
    Ok((taken, skipped))
}

/// Takes the token of a port with no blocking socket, and runs the canary
/// on it; or says why not (leased, or the canary failed).
fn try_port(host: IpAddr, port: u16) -> Result<Result<Token, SkippedPort>, Error> {
    let Some(token) = Token::claim(Subject::Port(port))? else {
        return Ok(Err(SkippedPort {
            port,
            reason: "leased".into(),
            pids: Vec::new(),
            message: "leased".into(),
        }));
    };
    Ok(match canary(host, port) {
        Ok(()) => Ok(token),
        Err(e) => Err(SkippedPort {
            port,
            reason: "conflict".into(),
            pids: Vec::new(),
            message: format!(
                "the canary bind on {} fails with {}",
                SocketAddr::new(host, port),
                crate::error::errno_label(&e)
            ),
        }),
    })
}

impl SkippedPort {
    /// A port a socket blocks (`first`, the first of them).
    fn busy(port: u16, first: &DiagSocket) -> SkippedPort {
        SkippedPort {
            port,
            reason: "busy".into(),
            pids: Vec::new(),
            message: format!(
                "{} {} (uid {}, inode {})",
                if first.state == crate::diag::TcpState::Listen {
                    "a listener on"
                } else {
                    "a socket on"
                },
                first.local,
                first.uid,
                first.inode
            ),
        }
    }
}

/// What `acquire-port` was asked for.
#[derive(Debug, Clone)]
pub struct PortRequest {
    /// The ports to choose from, in order.
    pub range: Vec<u16>,
    /// The host they must be free on.
    pub host: IpAddr,
    pub count: usize,
    /// `--owner` [default: sockcheck's parent].
    pub owner: Option<u32>,
    pub wait: Option<Duration>,
}

/// `sockcheck acquire-port [RANGE] [--host ADDR] [--count N] [--owner PID]
/// [--wait D]`.
pub fn acquire_port(ctx: &LeaseContext, request: &PortRequest) -> Result<ExitStatus, Error> {
    let dir = Dir::open(&ctx.state_dir)?;
    let owner = match request.owner {
        Some(pid) => OwnerHandle::open(pid, "--owner")?,
        None => OwnerHandle::open(
            super::acquire::default_owner(ctx),
            "the lease's owner (sockcheck's parent)",
        )?,
    };
    note_ephemeral(ctx, &request.range);
    let (tokens, skipped) = take_waiting(request)?;
    if tokens.len() < request.count {
        drop(tokens);
        return refuse(ctx, &dir, request, skipped);
    }
    let mut ports = Vec::with_capacity(request.count);
    for token in tokens {
        let Subject::Port(port) = token.subject else {
            continue;
        };
        lease::grant(&dir, token, &owner, &[], request.host)?;
        ports.push(port);
    }
    ctx.output.document(&PortsAcquired {
        schema: PortsAcquired::SCHEMA,
        host: request.host,
        ports: Some(ports),
        owner: Some(LeaseOwner::of(owner.owner, &[])),
        state_dir: dir.path().to_path_buf(),
        error: None,
        skipped: Vec::new(),
    })?;
    Ok(ExitStatus::Free)
}

/// A note when the range reaches into the kernel's ephemeral ports.
fn note_ephemeral(ctx: &Context, range: &[u16]) {
    if let Some((lo, hi)) = ephemeral()
        && let Some(inside) = range.iter().find(|p| (lo..=hi).contains(*p))
    {
        ctx.output.note(&format!(
            "sockcheck: note: port {inside} (and maybe others of the range) lies in \
             net.ipv4.ip_local_port_range ({lo}-{hi}): the kernel may give it to any outgoing \
             connection at any moment, so a server may still find it taken; the default \
             range stays clear of it\n"
        ));
    }
}

/// [`take`]s the ports, again until `--wait` runs out while there are not
/// enough; a wait wakes at once when a leased port it listens to is
/// released.
fn take_waiting(request: &PortRequest) -> Result<(Vec<Token>, Vec<SkippedPort>), Error> {
    let deadline = request.wait.map(|w| Instant::now() + w);
    loop {
        let (tokens, skipped) = take(&request.range, request.host, request.count)?;
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match left {
            _ if tokens.len() == request.count => return Ok((tokens, skipped)),
            Some(left) if !left.is_zero() => {
                drop(tokens);
                let waiters: Vec<lease::token::Connection> = skipped
                    .iter()
                    .filter(|s| s.reason == "leased")
                    .take(64)
                    .filter_map(|s| {
                        lease::token::Connection::open(Subject::Port(s.port))
                            .ok()
                            .flatten()
                    })
                    .collect();
                lease::token::wait_any(&waiters, left.min(POLL));
            }
            _ => return Ok((tokens, skipped)),
        }
    }
}

/// `run --lease-ports N`: N ports of the default range, free on
/// `address`, leased to `owner`; `None` when there are not N. Nothing is
/// leased for 0.
pub fn lease_for(
    dir: &Dir,
    owner: &OwnerHandle,
    address: IpAddr,
    count: usize,
) -> Result<Option<Vec<u16>>, Error> {
    if count == 0 {
        return Ok(Some(Vec::new()));
    }
    let (tokens, _) = take(&default_range(), address, count)?;
    if tokens.len() < count {
        return Ok(None);
    }
    let mut ports = Vec::with_capacity(count);
    for token in tokens {
        if let Subject::Port(port) = token.subject {
            lease::grant(dir, token, owner, &[], address)?;
            ports.push(port);
        }
    }
    Ok(Some(ports))
}

/// Not enough free ports: say why for each port passed over (the first
/// 32 for people; every one with `--json`), naming leaseholders.
fn refuse(
    ctx: &Context,
    dir: &Dir,
    request: &PortRequest,
    mut skipped: Vec<SkippedPort>,
) -> Result<ExitStatus, Error> {
    let (host, count, range_len) = (request.host, request.count, request.range.len());
    for skip in skipped.iter_mut().filter(|s| s.reason == "leased").take(32) {
        let holder = lease::token::holder(Subject::Port(skip.port));
        skip.pids = holder.pids();
        skip.message = holder.describe();
    }
    let error = format!(
        "not {count} free port{} in the range ({range_len} port{}) on {host}",
        if count == 1 { "" } else { "s" },
        if range_len == 1 { "" } else { "s" }
    );
    let doc = PortsAcquired {
        schema: PortsAcquired::SCHEMA,
        host,
        ports: None,
        owner: None,
        state_dir: dir.path().to_path_buf(),
        error: Some(error),
        skipped,
    };
    if ctx.output.json {
        ctx.output.print(&crate::output::json(&doc))?;
    }
    ctx.output.note(&doc.human(&ctx.output));
    Ok(ExitStatus::NotFree)
}

/// `sockcheck release-port PORT...`: ends each lease that is ours; exits
/// 1 when any port was not leased or not ours to release.
pub fn release_port(ctx: &LeaseContext, ports: &[u16]) -> Result<ExitStatus, Error> {
    let dir = Dir::open(&ctx.state_dir)?;
    let mut doc = PortsReleased {
        schema: PortsReleased::SCHEMA,
        ports: Vec::with_capacity(ports.len()),
    };
    for &port in ports {
        doc.ports.push(release_one(&dir, port)?);
    }
    if ctx.output.json {
        ctx.output.print(&crate::output::json(&doc))?;
    }
    ctx.output.note(&doc.human(&ctx.output));
    Ok(if doc.ports.iter().all(|p| p.released) {
        ExitStatus::Free
    } else {
        ExitStatus::NotFree
    })
}

/// Ends one port lease: through this user's agent, else by asking its
/// token's holder, which says whose it is.
fn release_one(dir: &Dir, port: u16) -> Result<PortReleased, Error> {
    let subject = Subject::Port(port);
    let error = if lease::agent::release(dir, subject)? {
        None
    } else {
        match lease::token::release(subject)? {
            lease::token::Released::Released => None,
            lease::token::Released::NotLeased => Some("not leased".to_string()),
            lease::token::Released::Refused(why) => Some(why),
        }
    };
    Ok(PortReleased {
        port,
        released: error.is_none(),
        error,
    })
}

/// What `release-port --json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PortsReleased {
    schema: u32,
    /// Each port asked for, in order.
    ports: Vec<PortReleased>,
}

/// One port of `release-port`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PortReleased {
    port: u16,
    /// False when the port was not leased, or its lease is not ours to end
    /// (exit status 1).
    released: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl PortsReleased {
    /// Nothing for a released port; else why not, a note each.
    pub(crate) fn render(&self) -> String {
        self.ports
            .iter()
            .filter_map(|p| {
                let why = p.error.as_ref()?;
                Some(format!(
                    "sockcheck: port {} was not released: {why}\n",
                    p.port
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_people_write_them_and_bad_ones_name_the_value() {
        assert_eq!(parse_range("20000", "RANGE").unwrap(), [20000]);
        assert_eq!(
            parse_range("20000-20002,20001,9", "RANGE").unwrap(),
            [20000, 20001, 20002, 9]
        );
        for bad in ["0", "65536", "x", "20002-20000", "", "1-", "20000-x"] {
            let e = parse_range(bad, "RANGE").unwrap_err().to_string();
            assert!(e.starts_with("RANGE: "), "{bad}: {e}");
        }
    }

    #[test]
    fn reserved_ports_read_as_the_kernel_writes_them() {
        assert_eq!(
            reserved_ports("8080,9000-9002\n"),
            BTreeSet::from([8080, 9000, 9001, 9002])
        );
        assert!(reserved_ports("\n").is_empty());
    }

    #[test]
    fn the_default_range_stays_clear_of_the_kernels_own_ports() {
        let range = default_range();
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let mut it = text.split_whitespace().map(|n| n.parse::<u16>().unwrap());
        let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
        assert!(!range.is_empty());
        assert!(range.iter().all(|p| !(lo..=hi).contains(p)));
        assert!(range.iter().all(|&p| (15000..=32767).contains(&p)));
    }
}
