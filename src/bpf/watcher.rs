//! Tracepoint `sock/inet_sock_set_state` (`bpf/watch.bpf.c`): TCP sockets
//! entering or leaving LISTEN, with the thread that did it, through a ring
//! buffer, and a per-CPU count of the events it had no room for.

use std::{
    fmt, io,
    net::IpAddr,
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, TracePoint},
};

use super::kernel_btf::KernelBtf;
use super::loader::{PortSet, load_object, pidns_inum, watch_object};
use super::paths::{self, Taken};
use super::records::{AF_INET, AF_INET6, ListenEventRec, decode, ip_addr};
use super::{BpfError, availability};

const PROGRAM: &str = "sock/inet_sock_set_state";

/// `TCP_LISTEN` of the kernel's TCP states.
const TCP_LISTEN: u8 = 10;

/// Which way a socket crossed LISTEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenChange {
    /// It entered LISTEN (`listen()`).
    Listen,
    /// It left LISTEN (closed, or `listen()` failed after all).
    Close,
}

/// One TCP socket entering or leaving LISTEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenEvent {
    /// CLOCK_MONOTONIC, in ns.
    pub ktime_ns: u64,
    /// Process (tgid) and thread of the task that made the change, in the
    /// watcher's pid namespace (0 if the task is outside it). For a
    /// close this is whoever dropped the last reference (may be an exiting
    /// thread, or a kernel worker for sockets freed asynchronously).
    pub pid: u32,
    pub tid: u32,
    /// The thread's comm, without the trailing NULs.
    pub comm: Vec<u8>,
    pub addr: IpAddr,
    pub port: u16,
    /// Socket inode (0 if the socket was already detached from its file).
    pub inode: u64,
    pub reuseport: bool,
    /// Inode of the socket's network namespace (as `/proc/PID/ns/net`
    /// shows it); 0 if the kernel's layout did not let it be read.
    pub netns: u64,
    pub kind: ListenChange,
    /// TCP states (`TCP_LISTEN` = 10, `TCP_CLOSE` = 7, ...).
    pub old_state: u8,
    pub new_state: u8,
}

/// How a [`Watcher`] hooks `inet_sock_set_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchHook {
    /// Tracepoint `sock/inet_sock_set_state` (needs tracefs mounted).
    TracePoint,
    /// `tp_btf/inet_sock_set_state`: the same hook through BTF, no tracefs.
    BtfTracePoint,
}

/// The size of a [`Watcher`]'s ring buffer (the `events` map's
/// `max_entries`), in bytes: what the kernel accepts, a power of two
/// multiple of the page size. Each event takes 80 bytes of it (its 72 and
/// the ring buffer's 8-byte header), so 64 KiB hold 819 events the reader
/// has not taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSize(u32);

/// Why a size cannot be a ring buffer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{bytes} bytes is not a ring buffer size: the kernel takes a power of two multiple of \
     the page size ({page} bytes), up to {max} bytes"
)]
pub struct BadRingSize {
    pub bytes: u64,
    pub page: u64,
    pub max: u64,
}

impl RingSize {
    /// What `bpf/watch.bpf.c` declares.
    pub const DEFAULT: RingSize = RingSize(64 * 1024);

    /// The largest the map's `max_entries` (a u32) can be.
    const MAX: u64 = 1 << 31;

    /// `bytes`, if the kernel would take it on this machine's page size.
    pub fn new(bytes: u64) -> Result<RingSize, BadRingSize> {
        let page = page_size();
        if bytes.is_power_of_two() && bytes >= page && bytes <= Self::MAX {
            Ok(RingSize(bytes as u32))
        } else {
            Err(BadRingSize {
                bytes,
                page,
                max: Self::MAX,
            })
        }
    }

    pub fn bytes(self) -> u32 {
        self.0
    }
}

/// `64K`, `4M`, `1G`: as `--ring-size` takes it.
impl fmt::Display for RingSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n % (1 << 30) == 0 => write!(f, "{}G", n >> 30),
            n if n % (1 << 20) == 0 => write!(f, "{}M", n >> 20),
            n if n % (1 << 10) == 0 => write!(f, "{}K", n >> 10),
            n => write!(f, "{n}"),
        }
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Reports TCP sockets entering or leaving LISTEN on some ports, from the
/// moment it is created, and counts those its ring buffer had no room for
/// ([`Watcher::lost`]). Dropping it detaches and unloads everything.
pub struct Watcher {
    // Field order is drop order: the maps before the object owning the
    // program and its link.
    events: RingBuf<MapData>,
    /// Per CPU: events `bpf_ringbuf_reserve` found no room for.
    lost: PerCpuArray<MapData, u64>,
    hook: WatchHook,
    ebpf: Ebpf,
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("hook", &self.hook)
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watches `ports` (every port if empty), with a ring buffer of the
    /// default size. Uses the tracepoint when tracefs is mounted and falls
    /// back to `tp_btf` otherwise, or if that fails.
    pub fn new(ports: &[u16]) -> Result<Self, BpfError> {
        Self::with_ring_size(ports, RingSize::DEFAULT)
    }

    /// [`Watcher::new`] with a ring buffer of `ring` bytes.
    pub fn with_ring_size(ports: &[u16], ring: RingSize) -> Result<Self, BpfError> {
        availability()?;
        let tracepoint = if crate::sys::tracefs_mounted() {
            match Self::attach(ports, WatchHook::TracePoint, ring) {
                Ok(watcher) => {
                    paths::note_watch(Taken::new(WatchHook::TracePoint, None));
                    return Ok(watcher);
                }
                Err(error) => Some(error),
            }
        } else {
            None
        };
        let why = paths::tracepoint_not_used(tracepoint.as_ref());
        let watcher =
            Self::attach(ports, WatchHook::BtfTracePoint, ring).map_err(
                |tp_btf| match tracepoint {
                    Some(tracepoint) => BpfError::Watch {
                        tracepoint: Box::new(tracepoint),
                        tp_btf: Box::new(tp_btf),
                    },
                    None => tp_btf,
                },
            )?;
        paths::note_watch(Taken::new(WatchHook::BtfTracePoint, Some(why)));
        Ok(watcher)
    }

    /// Watches `ports` (every port if empty) through the given hook only.
    pub fn with_hook(ports: &[u16], hook: WatchHook) -> Result<Self, BpfError> {
        Self::attach(ports, hook, RingSize::DEFAULT)
    }

    fn attach(ports: &[u16], hook: WatchHook, ring: RingSize) -> Result<Self, BpfError> {
        let ports = PortSet::new(ports)?;
        let pidns = pidns_inum();
        let (mut ebpf, btf) = load_object(PROGRAM, watch_object(), |loader| {
            loader.override_global("pidns_inum", &pidns, true);
            loader.map_max_entries("events", ring.bytes());
            ports.write_into(loader);
        })?;
        attach_program(&mut ebpf, btf, hook)?;
        let events = take_map(&mut ebpf, EVENTS, RingBuf::try_from)?;
        let lost = take_map(&mut ebpf, LOST, PerCpuArray::try_from)?;
        Ok(Self {
            events,
            lost,
            hook,
            ebpf,
        })
    }

    /// The hook in use.
    pub fn hook(&self) -> WatchHook {
        self.hook
    }

    /// How often the kernel skipped the watch program since it was
    /// attached, because a run of it was already under way on that CPU
    /// (`recursion_misses` of its `bpf_prog_info`, 5.12+). Those events may
    /// be of any socket, watched or not: the program never saw them. `None`
    /// when the kernel does not say.
    pub fn skipped(&self) -> Option<u64> {
        let name = match self.hook {
            WatchHook::TracePoint => "sockcheck_watch_tp",
            WatchHook::BtfTracePoint => "sockcheck_watch_btf",
        };
        let fd = self.ebpf.program(name)?.fd().ok()?;
        recursion_misses(fd.as_fd())
    }

    /// How many events the ring buffer had no room for since the watch
    /// began (summed over the CPUs): on every watched port, whatever their
    /// address or network namespace, since they are dropped before any
    /// filter sees them. An event counted here is never in [`Watcher::poll`].
    pub fn lost(&self) -> Result<u64, BpfError> {
        let per_cpu = self.lost.get(&0, 0).map_err(|error| BpfError::Map {
            step: "reading the lost counter of",
            program: PROGRAM,
            error,
        })?;
        Ok(per_cpu.iter().fold(0u64, |sum, n| sum.wrapping_add(*n)))
    }

    /// Returns the events queued so far, waiting up to `timeout` for the
    /// first one if there are none. An empty result means the timeout passed
    /// (or a signal interrupted the wait).
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ListenEvent>, BpfError> {
        let mut out = self.drain();
        if out.is_empty() && !timeout.is_zero() {
            let mut pollfd = libc::pollfd {
                fd: self.events.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, for the duration of the call.
            if unsafe { libc::poll(&mut pollfd, 1, ms) } < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(BpfError::Io {
                        step: "polling the ring buffer of",
                        program: PROGRAM,
                        error,
                    });
                }
            }
            out = self.drain();
        }
        Ok(out)
    }

    fn drain(&mut self) -> Vec<ListenEvent> {
        let mut out = Vec::new();
        while let Some(rec) = self.events.next() {
            if let Some(rec) = decode::<ListenEventRec>(&rec) {
                out.push(ListenEvent::from(&rec));
            }
        }
        out
    }
}

/// Loads and attaches the program of `hook`.
fn attach_program(ebpf: &mut Ebpf, btf: &KernelBtf, hook: WatchHook) -> Result<(), BpfError> {
    let prog_err = |step| {
        move |error| BpfError::Program {
            step,
            program: PROGRAM,
            error,
        }
    };
    let missing = BpfError::Missing {
        program: PROGRAM,
        what: "program",
    };
    match hook {
        WatchHook::TracePoint => {
            let prog: &mut TracePoint = ebpf
                .program_mut("sockcheck_watch_tp")
                .ok_or(missing)?
                .try_into()
                .map_err(prog_err("finding tracepoint"))?;
            prog.load().map_err(prog_err("loading tracepoint"))?;
            prog.attach("sock", "inet_sock_set_state")
                .map_err(prog_err("attaching tracepoint"))?;
        }
        WatchHook::BtfTracePoint => {
            let prog: &mut BtfTracePoint = ebpf
                .program_mut("sockcheck_watch_btf")
                .ok_or(missing)?
                .try_into()
                .map_err(prog_err("finding tp_btf"))?;
            prog.load("inet_sock_set_state", btf.typedefs()?)
                .map_err(prog_err("loading tp_btf"))?;
            prog.attach().map_err(prog_err("attaching tp_btf"))?;
        }
    }
    Ok(())
}

/// A map of the program: its name, what to call it when it is missing, and
/// the step of opening it.
type MapName = (&'static str, &'static str, &'static str);
const EVENTS: MapName = ("events", "map events", "opening ring buffer of");
const LOST: MapName = ("lost", "map lost", "opening the lost counter of");

/// Takes a map out of the object, as what `open` makes of it.
fn take_map<T>(
    ebpf: &mut Ebpf,
    (name, what, step): MapName,
    open: impl FnOnce(Map) -> Result<T, MapError>,
) -> Result<T, BpfError> {
    let map = ebpf.take_map(name).ok_or(BpfError::Missing {
        program: PROGRAM,
        what,
    })?;
    open(map).map_err(|error| BpfError::Map {
        step,
        program: PROGRAM,
        error,
    })
}

impl From<&ListenEventRec> for ListenEvent {
    fn from(rec: &ListenEventRec) -> Self {
        ListenEvent {
            ktime_ns: rec.ktime_ns,
            pid: rec.tgid,
            tid: rec.tid,
            comm: rec.comm.iter().copied().take_while(|&b| b != 0).collect(),
            addr: ip_addr(
                if rec.family == AF_INET6 {
                    AF_INET6
                } else {
                    AF_INET
                },
                rec.addr,
            ),
            port: rec.port,
            inode: rec.inode,
            reuseport: rec.reuseport != 0,
            netns: rec.netns.into(),
            kind: if rec.newstate == TCP_LISTEN {
                ListenChange::Listen
            } else {
                ListenChange::Close
            },
            old_state: rec.oldstate,
            new_state: rec.newstate,
        }
    }
}

/// `recursion_misses` of a program, from BPF_OBJ_GET_INFO_BY_FD; `None` on
/// an error or a kernel whose `bpf_prog_info` ends before it.
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use aya_obj::generated::bpf_prog_info;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: bpf_prog_info is plain integers; all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    // `bpf_attr.info`: the object's fd, the buffer's length (the kernel
    // writes back how much it filled), the buffer; the rest of the union
    // stays zero.
    let mut attr = [0u64; 16];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | (size_of::<bpf_prog_info>() as u64) << 32;
    attr[1] = &raw mut info as u64;
    // SAFETY: attr is a zeroed bpf_attr-sized buffer whose `info` points at
    // `info`, which lives until the call returns; the kernel writes at most
    // `info_len` bytes there and the new length into attr.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    let filled = (attr[0] >> 32) as usize;
    let needed = std::mem::offset_of!(bpf_prog_info, recursion_misses) + size_of::<u64>();
    (rc == 0 && filled >= needed).then_some(info.recursion_misses)
}
