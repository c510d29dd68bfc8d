//! eBPF views of TCP listeners, of who holds their sockets, and of listeners
//! coming and going.
//!
//! Small programs, compiled from `bpf/*.bpf.c` by `scripts/build-bpf.sh` and
//! embedded here:
//!
//! - `iter/tcp` ([`tcp_listeners`]): every TCP socket in LISTEN on the given
//!   ports, with what `ss` does not show: SO_REUSEPORT, SO_REUSEADDR,
//!   IPV6_V6ONLY, and the socket inode.
//! - `iter/task` ([`task_files`], `bpf/iter_task_fds.bpf.c`): the (process,
//!   thread, fd) holding given socket inodes, in one pass over the kernel's
//!   tasks instead of a readlink of every `/proc/*/fd/*`. It walks each fd
//!   table itself (the open_fds bitmap, then the files of its set bits, a few
//!   at a time so that their cache misses overlap) and reads an inode only
//!   for a socket's file: about half the time of `iter/task_file`, which
//!   runs a program and an fget/fput for every open file (17 ms against
//!   35 ms for 91,000 open fds). It needs `bpf_loop` (5.17); where it fails
//!   to load or to walk a table, `iter/task_file` (5.8,
//!   `bpf/iter_task_file.bpf.c`) gives the same rows. Both also see
//!   processes whose main thread has exited (a zombie leader, whose
//!   `/proc/PID/fd` is empty).
//! - tracepoint `sock/inet_sock_set_state` ([`Watcher`]): sockets entering or
//!   leaving LISTEN, with the thread that did it. Attached as `tp_btf` (same
//!   hook, no tracefs needed) when tracefs is not mounted.
//!
//! Pids and tids are those of the caller's pid namespace, as its `/proc`
//! shows them. `iter/tcp` walks the caller's network namespace; the
//! tracepoint fires for every namespace, and each [`ListenEvent`] names its
//! socket's ([`ListenEvent::netns`]).
//!
//! All of it needs root (or CAP_BPF + CAP_PERFMON) and kernel BTF.
//! [`availability`] checks both cheaply; every entry point runs it first, so a
//! caller gets [`BpfError::Unavailable`] with a plain reason instead of the
//! misleading relocation error the loader gives an unprivileged user.
//! Every call loads its program and drops it before returning (a [`Watcher`]
//! keeps its program until dropped): nothing stays in the kernel (the kernel
//! frees a dropped program after an RCU grace period, a few ms later).
//!
//! Cost: the first call of a process maps `/sys/kernel/btf/vmlinux` and
//! reduces it to the few hundred types the programs need ([`btf_view`]);
//! every loader call of the process shares that one parsed view, so
//! relocation is quick. With [`use_btf_cache`] (the sockcheck binary turns
//! it on) the reduced view is kept per kernel in
//! `$XDG_CACHE_HOME/sockcheck/` or `~/.cache/sockcheck/` (`bpf/btf_cache.rs`),
//! so later processes neither scan nor parse the 5.5 MB; the environment
//! variable `SOCKCHECK_BTF_CACHE=0` turns the cache off, and so does running
//! with file capabilities or set-user-ID (the user's files are not trusted
//! then). The attach points' view is built in place, not parsed (`KernelBtf`).
//! `SOCKCHECK_BPF_TRACE=1` prints the time of each step (cache, reduce BTF,
//! parse, relocate, verify, iterate) to stderr, and why the cache was not
//! used.

use std::{
    collections::BTreeMap,
    fmt, fs,
    io::{self, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    path::Path,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    Btf, BtfError, Ebpf, EbpfError, EbpfLoader, Endianness, include_bytes_aligned,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Iter, ProgramError, TracePoint, links::LinkError},
};

/// Where the kernel publishes its own BTF, needed to relocate (CO-RE) and to
/// attach iterators and `tp_btf` programs.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// At most this many ports per call (the size of the programs' port table).
pub const MAX_PORTS: usize = 64;

const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;
const TCP_LISTEN: u8 = 10;

fn iter_tcp_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/iter_tcp.bpf.o"))
}
fn iter_task_file_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bpf/iter_task_file.bpf.o"
    ))
}
fn iter_task_fds_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bpf/iter_task_fds.bpf.o"
    ))
}
fn watch_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/watch.bpf.o"))
}

// ---------------------------------------------------------------- errors

/// Why eBPF cannot be used here at all, in plain words.
#[derive(Debug)]
pub enum Unavailable {
    /// Neither CAP_SYS_ADMIN nor CAP_BPF + CAP_PERFMON in the effective set.
    NotPrivileged {
        euid: u32,
        /// CapEff from /proc/self/status.
        cap_eff: u64,
        /// kernel.unprivileged_bpf_disabled, if readable.
        unprivileged_bpf_disabled: Option<u32>,
    },
    /// The kernel has no BTF (built without CONFIG_DEBUG_INFO_BTF).
    NoBtf { error: io::Error },
    /// /proc/self/status could not be read or has no CapEff line.
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

// ---------------------------------------------------------- availability

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Cheap check that the programs can be loaded at all: privileges (CapEff of
/// this process) and kernel BTF. Loads nothing.
pub fn availability() -> Result<(), Unavailable> {
    let cap_eff =
        effective_capabilities().map_err(|error| Unavailable::UnknownCapabilities { error })?;
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    let privileged = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    if !privileged {
        return Err(Unavailable::NotPrivileged {
            euid: unsafe { libc::geteuid() },
            cap_eff,
            unprivileged_bpf_disabled: fs::read_to_string(
                "/proc/sys/kernel/unprivileged_bpf_disabled",
            )
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        });
    }
    fs::metadata(KERNEL_BTF).map_err(|error| Unavailable::NoBtf { error })?;
    Ok(())
}

fn effective_capabilities() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .ok_or_else(|| io::Error::other("no CapEff line"))?;
    u64::from_str_radix(hex.trim(), 16).map_err(io::Error::other)
}

// ---------------------------------------------------------- shared loading

mod btf_cache;
mod btf_view;

/// What the programs' CO-RE relocations and attach points need of the kernel
/// BTF: every struct `bpf/sockcheck.h` declares with `preserve_access_index`
/// (keep the two lists in step), the iterator targets and the `tp_btf` hook.
const BTF_ROOTS: btf_view::Roots<'static> = btf_view::Roots {
    structs: &[
        "in6_addr",
        "sock_common",
        "sock",
        "inode",
        "file",
        "socket",
        "socket_alloc",
        "ns_common",
        "net",
        "pid_namespace",
        "upid",
        "pid",
        "task_struct",
        "fdtable",
        "files_struct",
        "bpf_iter_meta",
        "bpf_iter__tcp",
        "bpf_iter__task",
        "bpf_iter__task_file",
        "trace_event_raw_inet_sock_set_state",
    ],
    funcs: &["bpf_iter_tcp", "bpf_iter_task", "bpf_iter_task_file"],
    typedefs: &["btf_trace_inet_sock_set_state"],
};

/// Whether `SOCKCHECK_BPF_TRACE=1` asks for each loading step on stderr.
fn tracing() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SOCKCHECK_BPF_TRACE").is_some_and(|v| v != "0"))
}

/// `SOCKCHECK_BPF_TRACE=1` prints the time of each loading step to stderr.
fn trace(step: &str, since: Instant) {
    if tracing() {
        crate::output::trace(&format!(
            "sockcheck bpf: {step}: {:.2} ms",
            since.elapsed().as_secs_f64() * 1e3
        ));
    }
}

/// A `SOCKCHECK_BPF_TRACE` line without a time.
fn trace_note(note: &str) {
    if tracing() {
        crate::output::trace(&format!("sockcheck bpf: {note}"));
    }
}

/// Runs `f` on the bytes of the kernel BTF: mapped read-only where the
/// kernel allows it (6.16+: no copy, no 4 KB reads), else read whole.
fn with_kernel_btf<R>(f: impl FnOnce(&[u8]) -> R) -> io::Result<R> {
    let file = fs::File::open(KERNEL_BTF)?;
    let len = file.metadata()?.len() as usize;
    if len > 0 {
        // SAFETY: a fresh private read-only mapping of a whole file, unmapped
        // below; the kernel's BTF never changes while the kernel runs.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr != libc::MAP_FAILED {
            // SAFETY: `len` readable bytes at `ptr` until the munmap.
            let out = f(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) });
            // SAFETY: the mapping made above, no longer borrowed.
            unsafe { libc::munmap(ptr, len) };
            return Ok(out);
        }
    }
    let mut raw = Vec::with_capacity(len);
    (&file).read_to_end(&mut raw)?;
    Ok(f(&raw))
}

/// The kernel's BTF as the loader needs it ([`btf_view`]).
struct KernelBtf {
    /// For CO-RE relocation: the types the programs touch.
    relocation: Btf,
    /// The attach points, at their kernel ids.
    attach: Vec<btf_view::AttachPoint>,
    /// The functions among them at their ids, for iterators.
    funcs: OnceLock<Btf>,
    /// The typedefs among them at their ids, for `tp_btf`.
    typedefs: OnceLock<Btf>,
}

impl KernelBtf {
    /// What aya looks an iterator's `attach_btf_id` up in, made on first
    /// use (once: threads that need it meanwhile wait).
    fn funcs(&self) -> &Btf {
        self.funcs.get_or_init(|| {
            let start = Instant::now();
            let mut btf = Btf::new();
            let ids = add_funcs(&mut btf, &self.attach);
            trace(
                &format!("build the attach view of functions ({ids} ids)"),
                start,
            );
            btf
        })
    }

    /// What aya looks a `tp_btf` program's `attach_btf_id` up in, parsed on
    /// first use: aya-obj has no public constructor of a typedef, so this
    /// view is a blob of fillers up to the last typedef
    /// ([`btf_view::attach_blob`]), as every attach view once was.
    fn typedefs(&self) -> Result<&Btf, BpfError> {
        if let Some(btf) = self.typedefs.get() {
            return Ok(btf);
        }
        let start = Instant::now();
        let last = self
            .attach
            .iter()
            .filter(|p| p.is_typedef())
            .map(|p| p.id)
            .max();
        let points: Vec<_> = (self.attach.iter())
            .filter(|p| Some(p.id) <= last)
            .cloned()
            .collect();
        let btf = Btf::parse(&btf_view::attach_blob(&points), Endianness::default())
            .map_err(|error| BpfError::Btf { error })?;
        let ids = last.unwrap_or(0);
        trace(
            &format!("parse the attach view of typedefs ({ids} ids)"),
            start,
        );
        Ok(self.typedefs.get_or_init(|| btf))
    }
}

/// Adds the functions among `points` to an empty `btf`, each at its kernel
/// id, with a `void *` at every id between; returns the last id. aya looks
/// an `attach_btf_id` up by name in the result (the kernel never sees it);
/// ~64,000 pushes with aya-obj's `add_type` make it, where parsing as many
/// types costs an allocation each.
fn add_funcs(btf: &mut Btf, points: &[btf_view::AttachPoint]) -> u32 {
    use aya_obj::btf::{BtfType, Func, FuncLinkage, Ptr};
    let mut funcs: Vec<_> = points.iter().filter(|point| point.is_func()).collect();
    funcs.sort_by_key(|point| point.id);
    let mut next = 1;
    for point in funcs {
        while next < point.id {
            next = btf.add_type(BtfType::Ptr(Ptr::new(0, 0))) + 1;
        }
        let name = btf.add_string(&point.name);
        let linkage = FuncLinkage::from(point.linkage());
        next = btf.add_type(BtfType::Func(Func::new(name, 0, linkage))) + 1;
    }
    next - 1
}

/// Whether [`kernel_btf`] may use the per-kernel cache ([`use_btf_cache`]).
static USE_BTF_CACHE: AtomicBool = AtomicBool::new(false);

/// Lets this process keep the reduced kernel BTF in, and take it from, a
/// per-kernel cache file (`$XDG_CACHE_HOME/sockcheck/` or
/// `~/.cache/sockcheck/`; see `bpf/btf_cache.rs`) unless
/// `SOCKCHECK_BTF_CACHE=0`, or the process runs with file capabilities or
/// set-user-ID. The sockcheck binary turns it on; it is off for other
/// users of the library (and in-process tests), which reduce the kernel
/// BTF each time. Call it before the first load: the view is made once per
/// process.
pub fn use_btf_cache(on: bool) {
    USE_BTF_CACHE.store(on, Ordering::Relaxed);
}

/// The kernel's BTF, reduced to what the programs need ([`btf_view`]) and
/// parsed once per process; every loader call borrows it.
fn kernel_btf() -> Result<&'static KernelBtf, BpfError> {
    static BTF: OnceLock<KernelBtf> = OnceLock::new();
    if let Some(btf) = BTF.get() {
        return Ok(btf);
    }
    let views = kernel_views()?;
    let start = Instant::now();
    let relocation = Btf::parse(&views.relocation, Endianness::default())
        .map_err(|error| BpfError::Btf { error })?;
    trace("parse the relocation view", start);
    Ok(BTF.get_or_init(|| KernelBtf {
        relocation,
        attach: views.attach,
        funcs: OnceLock::new(),
        typedefs: OnceLock::new(),
    }))
}

/// [`btf_view::minimal`] of the kernel's BTF: from the cache when it has
/// it, else reduced (and then cached).
fn kernel_views() -> Result<btf_view::Views, BpfError> {
    let cache = USE_BTF_CACHE
        .load(Ordering::Relaxed)
        .then(open_btf_cache)
        .flatten();
    if let Some((dir, key)) = &cache {
        let start = Instant::now();
        match dir.load(key) {
            Ok(views) => {
                trace(
                    &format!(
                        "read cached BTF views ({}/{}: {} types in {} bytes; attach ids up to {})",
                        dir.path().display(),
                        key.file_name(),
                        views.stats.kept_types,
                        views.stats.relocation_bytes,
                        views.stats.attach_ids
                    ),
                    start,
                );
                return Ok(views);
            }
            Err(btf_cache::Miss::Absent) => trace_note("BTF cache: no entry yet"),
            Err(btf_cache::Miss::Invalid(why)) => {
                trace_note(&format!("BTF cache: ignoring the entry: {why}"));
            }
        }
    }
    let start = Instant::now();
    let view_err = |error: String| BpfError::BtfView { error };
    let views = with_kernel_btf(|raw| btf_view::minimal(raw, &BTF_ROOTS))
        .map_err(|e| view_err(e.to_string()))?
        .map_err(view_err)?;
    let stats = views.stats;
    trace(
        &format!(
            "read and reduce kernel BTF ({} bytes, {} types -> {} kept in {} bytes; attach ids up to {})",
            stats.kernel_bytes,
            stats.kernel_types,
            stats.kept_types,
            stats.relocation_bytes,
            stats.attach_ids
        ),
        start,
    );
    if let Some((dir, key)) = &cache {
        let start = Instant::now();
        match dir.store(key, &views) {
            Ok(()) => trace("write the BTF cache entry", start),
            Err(why) => trace_note(&format!("BTF cache: not written: {why}")),
        }
    }
    Ok(views)
}

/// The cache directory and this kernel's key, or `None` (said under
/// `SOCKCHECK_BPF_TRACE`) when there is no usable cache.
fn open_btf_cache() -> Option<(btf_cache::CacheDir, btf_cache::Key)> {
    let start = Instant::now();
    // SAFETY: getauxval only reads this process's auxiliary vector.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        // File capabilities or set-user-ID: the user could write an entry
        // whose relocations make the programs read other kernel fields.
        trace_note(
            "BTF cache not used: sockcheck runs with privileges its user does not have \
             (file capabilities or set-user-ID), so that user's files are not trusted",
        );
        return None;
    }
    let opened = btf_cache::base_dir(&|name| std::env::var_os(name))
        .and_then(|base| btf_cache::CacheDir::open(&base))
        .and_then(|dir| {
            kernel_key()
                .map(|key| (dir, key))
                .map_err(|e| format!("identifying the kernel's BTF: {e}"))
        });
    match opened {
        Ok(cache) => {
            trace("open the BTF cache, identify the kernel", start);
            Some(cache)
        }
        Err(why) => {
            trace_note(&format!("BTF cache not used: {why}"));
            None
        }
    }
}

/// The cache key of the running kernel's BTF: its build id, from
/// `/sys/kernel/notes`, else a hash of the BTF itself.
fn kernel_key() -> io::Result<btf_cache::Key> {
    let len = fs::metadata(KERNEL_BTF)?.len();
    let notes = fs::read("/sys/kernel/notes").unwrap_or_default();
    let identity = match btf_cache::build_id(&notes) {
        Some(id) => btf_cache::Identity::BuildId(id.to_vec()),
        None => btf_cache::Identity::Content(with_kernel_btf(btf_cache::hash64)?),
    };
    Ok(btf_cache::Key::new(&identity, len, &BTF_ROOTS))
}

/// Checks [`availability`] and prepares what every iterator load shares
/// (the reduced kernel BTF and the attach view of functions), so that
/// loads on several threads afterwards neither repeat nor wait for it.
pub fn prepare() -> Result<(), BpfError> {
    availability()?;
    kernel_btf().map(|btf| {
        btf.funcs();
    })
}

/// The `.rodata` port table of `bpf/ports.h` (`watched_ports`, `n_watched_ports`).
struct PortSet {
    ports: [u16; MAX_PORTS],
    len: u32,
}

impl PortSet {
    fn new(ports: &[u16]) -> Result<Self, BpfError> {
        let mut unique = ports.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() > MAX_PORTS {
            return Err(BpfError::TooManyPorts {
                given: unique.len(),
            });
        }
        let mut table = [0u16; MAX_PORTS];
        table[..unique.len()].copy_from_slice(&unique);
        Ok(Self {
            ports: table,
            len: unique.len() as u32,
        })
    }

    fn write_into<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global("watched_ports", &self.ports, true)
            .override_global("n_watched_ports", &self.len, true);
    }
}

/// Inode of the initial pid namespace (`PROC_PID_INIT_INO`), fixed by the
/// kernel.
const INIT_PIDNS_INUM: u32 = 0xEFFF_FFFC;

/// Inode of this process's pid namespace: the programs translate task ids
/// into it. 0 means "global ids": when it cannot be read, and in the initial
/// namespace, where global ids are the caller's ids. The 0 matters for cost:
/// the programs read it from frozen `.rodata`, so the verifier drops the
/// translation of `bpf/pidns.h`. In another namespace the iterators read
/// the level of the reader's namespace off the reader (the current task in
/// an iterator) and look at that one level (+1-2 ms of verifier); the
/// watch, where the current task is anyone, walks the levels (a loop of up
/// to 33 turns, verified at each call: +15-25 ms).
fn pidns_inum() -> u32 {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata("/proc/self/ns/pid").map(|m| m.ino() as u32) {
        Ok(INIT_PIDNS_INUM) | Err(_) => 0,
        Ok(inum) => inum,
    }
}

/// The one loader prologue of every program: privileges and kernel BTF
/// ([`availability`]), the parsed kernel BTF, an [`EbpfLoader`] configured by
/// `configure` (globals, map sizes), the load, and its error mapping.
/// Returns the loaded object and the kernel BTF to load its programs with.
fn load_object<'a>(
    program: &'static str,
    object: &[u8],
    configure: impl FnOnce(&mut EbpfLoader<'a>),
) -> Result<(Ebpf, &'static KernelBtf), BpfError> {
    availability()?;
    let btf = kernel_btf()?;
    let start = Instant::now();
    let mut loader = EbpfLoader::new();
    loader.btf(&btf.relocation);
    configure(&mut loader);
    let ebpf = loader
        .load(object)
        .map_err(|error| BpfError::Object { program, error })?;
    trace(&format!("{program}: relocate, create maps"), start);
    Ok((ebpf, btf))
}

/// Runs a loaded-but-not-yet-attached iterator once and returns all it wrote.
fn run_iter(
    ebpf: &mut Ebpf,
    function: &str,
    target: &str,
    program: &'static str,
) -> Result<Vec<u8>, BpfError> {
    let btf = kernel_btf()?.funcs();
    let prog_err = |step| {
        move |error| BpfError::Program {
            step,
            program,
            error,
        }
    };
    let iter: &mut Iter = ebpf
        .program_mut(function)
        .ok_or(BpfError::Missing {
            program,
            what: "program",
        })?
        .try_into()
        .map_err(prog_err("finding"))?;
    let start = Instant::now();
    iter.load(target, btf).map_err(prog_err("loading"))?;
    trace(&format!("{program}: verify (BPF_PROG_LOAD)"), start);
    let start = Instant::now();
    let link = iter.attach().map_err(prog_err("attaching"))?;
    let link = iter.take_link(link).map_err(prog_err("attaching"))?;
    let mut seq = link.into_file().map_err(|error| BpfError::Link {
        step: "creating an iterator for",
        program,
        error,
    })?;
    let mut out = Vec::new();
    seq.read_to_end(&mut out).map_err(|error| BpfError::Io {
        step: "reading",
        program,
        error,
    })?;
    trace(&format!("{program}: attach and iterate"), start);
    Ok(out)
}

/// Splits an iterator's output into fixed-size records.
fn records<'a>(
    raw: &'a [u8],
    size: usize,
    program: &'static str,
) -> Result<std::slice::ChunksExact<'a, u8>, BpfError> {
    if !raw.len().is_multiple_of(size) {
        return Err(BpfError::TornRecords {
            program,
            len: raw.len(),
            record: size,
        });
    }
    Ok(raw.chunks_exact(size))
}

/// `N` bytes of `rec` at `at` (records are native-endian C structs).
fn field<const N: usize>(rec: &[u8], at: usize) -> [u8; N] {
    rec[at..at + N]
        .try_into()
        .expect("record field within record")
}

fn ip_addr(family: u8, addr: [u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    }
}

// ------------------------------------------------------------- iter/tcp

/// A TCP socket in LISTEN, as the kernel's socket tables have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelListener {
    /// `AF_INET` (2) or `AF_INET6` (10). An AF_INET6 socket on `::` without
    /// `v6only` also takes IPv4 connections.
    pub family: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// Socket inode, as in `fstat(fd).st_ino`, `/proc/PID/fd` (`socket:[N]`)
    /// and `/proc/net/tcp`; 0 for a socket with no `struct socket`.
    pub inode: u64,
    /// `sk_uid`: the owner (creator) of the socket.
    pub uid: u32,
    /// SO_REUSEPORT was set (`skc_reuseport`).
    pub reuseport: bool,
    /// `skc_reuse`: 0 = no SO_REUSEADDR, 1 = SO_REUSEADDR, 2 = forced by the kernel.
    pub reuseaddr: u8,
    /// `skc_ipv6only`: IPV6_V6ONLY was set, or the socket is bound to a
    /// specific (not v4-mapped) IPv6 address, where the kernel forces it.
    /// Always false for AF_INET.
    pub v6only: bool,
}

/// `struct listener_rec` of `bpf/iter_tcp.bpf.c`.
const LISTENER_RECORD: usize = 40;

/// Every TCP listener on one of `ports` (all listeners if `ports` is empty)
/// in the caller's network namespace (the one `iter/tcp` walks), in the
/// kernel's order.
pub fn tcp_listeners(ports: &[u16]) -> Result<Vec<KernelListener>, BpfError> {
    const PROGRAM: &str = "iter/tcp";
    availability()?;
    let ports = PortSet::new(ports)?;
    let (mut ebpf, _) = load_object(PROGRAM, iter_tcp_object(), |loader| {
        ports.write_into(loader)
    })?;
    let raw = run_iter(&mut ebpf, "sockcheck_iter_tcp", "tcp", PROGRAM)?;
    Ok(records(&raw, LISTENER_RECORD, PROGRAM)?
        .map(|rec| {
            let family = u16::from_ne_bytes(field(rec, 28)) as u8;
            KernelListener {
                family,
                addr: ip_addr(family, field(rec, 0)),
                inode: u64::from_ne_bytes(field(rec, 16)),
                uid: u32::from_ne_bytes(field(rec, 24)),
                port: u16::from_ne_bytes(field(rec, 30)),
                reuseaddr: rec[32],
                reuseport: rec[33] != 0,
                v6only: rec[34] != 0,
            }
        })
        .collect())
}

// ------------------------------------------------ iter/task, iter/task_file

/// An open file descriptor on a socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskFile {
    pub inode: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread through which the fd table was seen: `pid` itself unless the
    /// main thread has exited (zombie leader), then the lowest live thread
    /// id sharing the table. `/proc/<pid>/task/<tid>/fd/<fd>` names the fd.
    pub tid: u32,
    /// Every thread that showed it, sorted: `[pid]` when seen through the
    /// leader, else each live thread sharing the table.
    pub tids: Vec<u32>,
    pub fd: u32,
}

/// `struct task_file_rec` of `bpf/owners.h` (both owner programs).
const TASK_FILE_RECORD: usize = 24;

/// `FEW_INODES` of `bpf/iter_task_fds.bpf.c`: up to this many inodes are
/// compared from `.rodata` instead of looked up in the map.
const FEW_INODES: usize = 8;

/// Every fd, in every process, on a socket whose inode is in `inodes`.
/// Only processes in the caller's pid namespace are seen, and ids are the
/// ones it uses (as in its /proc), also inside a container.
///
/// One row per (inode, pid, fd), sorted. The kernel already skips threads
/// that share their leader's fd table; when the leader is gone each
/// remaining thread reports the shared table, and those rows are merged
/// here (see [`TaskFile::tids`]).
///
/// The fd tables are walked by `iter/task` (5.17+, `bpf_loop`); where that
/// fails (older kernels), `iter/task_file` gives the same rows, slower.
pub fn task_files(inodes: &[u64]) -> Result<Vec<TaskFile>, BpfError> {
    availability()?;
    let mut wanted = inodes.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let start = Instant::now();
    let (raw, program) = match walk_fd_tables(&wanted) {
        Ok(raw) => (raw, WALK_PROGRAM),
        Err(error) => {
            trace(
                &format!("{WALK_PROGRAM}: failed, {TASK_FILE_PROGRAM} instead ({error})"),
                start,
            );
            (iterate_task_files(&wanted)?, TASK_FILE_PROGRAM)
        }
    };
    task_file_rows(&raw, program)
}

const WALK_PROGRAM: &str = "iter/task";
const TASK_FILE_PROGRAM: &str = "iter/task_file";

/// The records of `bpf/iter_task_fds.bpf.c` for `wanted` (sorted, unique,
/// not empty). A record of inode 0 is the program saying it could not
/// walk some table: an error here, so that the caller falls back.
fn walk_fd_tables(wanted: &[u64]) -> Result<Vec<u8>, BpfError> {
    const PROGRAM: &str = WALK_PROGRAM;
    // The program learns socket_file_ops from the file of a socket of ours.
    let socket = std::os::unix::net::UnixDatagram::unbound().map_err(|error| BpfError::Io {
        step: "creating a socket for",
        program: PROGRAM,
        error,
    })?;
    let socket_fd: i32 = socket.as_raw_fd();
    let pidns = pidns_inum();
    let few = wanted.len() <= FEW_INODES;
    let mut few_inodes = [0u64; FEW_INODES];
    if few {
        few_inodes[..wanted.len()].copy_from_slice(wanted);
    }
    let use_map = u8::from(!few);
    let (mut ebpf, _) = load_object(PROGRAM, iter_task_fds_object(), |loader| {
        loader
            .override_global("pidns_inum", &pidns, true)
            .override_global("reader_socket_fd", &socket_fd, true)
            .override_global("few_inodes", &few_inodes, true)
            .override_global("use_inode_map", &use_map, true)
            .map_max_entries("inodes", if few { 1 } else { wanted.len() as u32 });
    })?;
    if !few {
        fill_inode_map(&mut ebpf, PROGRAM, wanted)?;
    }
    let raw = run_iter(&mut ebpf, "sockcheck_iter_task_fds", "task", PROGRAM)?;
    drop(socket);
    let failure = records(&raw, TASK_FILE_RECORD, PROGRAM)?
        .find(|rec| u64::from_ne_bytes(field(rec, 0)) == 0);
    if let Some(rec) = failure {
        let why = match u32::from_ne_bytes(field(rec, 16)) {
            1 => "has more open fds than one bpf_loop walks",
            2 => "was not walked: our own socket's file has no socket_file_ops",
            _ => "was not walked",
        };
        let pid = u32::from_ne_bytes(field(rec, 8));
        return Err(BpfError::Io {
            step: "walking the fd tables with",
            program: PROGRAM,
            error: io::Error::other(format!("the fd table of pid {pid} {why}")),
        });
    }
    Ok(raw)
}

/// The records of `bpf/iter_task_file.bpf.c` for `wanted` (sorted, unique,
/// not empty).
fn iterate_task_files(wanted: &[u64]) -> Result<Vec<u8>, BpfError> {
    const PROGRAM: &str = TASK_FILE_PROGRAM;
    let pidns = pidns_inum();
    let (mut ebpf, _) = load_object(PROGRAM, iter_task_file_object(), |loader| {
        loader
            .override_global("pidns_inum", &pidns, true)
            .map_max_entries("inodes", wanted.len() as u32);
    })?;
    fill_inode_map(&mut ebpf, PROGRAM, wanted)?;
    run_iter(&mut ebpf, "sockcheck_iter_task_file", "task_file", PROGRAM)
}

/// Puts `wanted` in the program's `inodes` map.
fn fill_inode_map(ebpf: &mut Ebpf, program: &'static str, wanted: &[u64]) -> Result<(), BpfError> {
    let map_err = |error| BpfError::Map {
        step: "filling map inodes of",
        program,
        error,
    };
    let mut set: HashMap<_, u64, u8> = ebpf
        .map_mut("inodes")
        .ok_or(BpfError::Missing {
            program,
            what: "map inodes",
        })?
        .try_into()
        .map_err(map_err)?;
    for inode in wanted {
        set.insert(inode, &1, 0).map_err(map_err)?;
    }
    Ok(())
}

/// (inode, tgid, tid, fd) records into rows, one per (inode, pid, fd).
fn task_file_rows(raw: &[u8], program: &'static str) -> Result<Vec<TaskFile>, BpfError> {
    let mut rows: BTreeMap<(u64, u32, u32), Vec<u32>> = BTreeMap::new();
    for rec in records(raw, TASK_FILE_RECORD, program)? {
        let key = (
            u64::from_ne_bytes(field(rec, 0)),
            u32::from_ne_bytes(field(rec, 8)),
            u32::from_ne_bytes(field(rec, 16)),
        );
        rows.entry(key)
            .or_default()
            .push(u32::from_ne_bytes(field(rec, 12)));
    }
    Ok(rows
        .into_iter()
        .map(|((inode, pid, fd), mut tids)| {
            tids.sort_unstable();
            tids.dedup();
            TaskFile {
                inode,
                pid,
                tid: tids[0],
                tids,
                fd,
            }
        })
        .collect())
}

// ----------------------------------------------------------------- watch

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

/// `struct listen_event` of `bpf/watch.bpf.c`.
const LISTEN_EVENT_RECORD: usize = 72;

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
    _ebpf: Ebpf,
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
        let tracepoint = if tracefs_mounted() {
            match Self::attach(ports, WatchHook::TracePoint, ring) {
                Ok(watcher) => return Ok(watcher),
                Err(error) => Some(error),
            }
        } else {
            None
        };
        Self::attach(ports, WatchHook::BtfTracePoint, ring).map_err(|tp_btf| match tracepoint {
            Some(tracepoint) => BpfError::Watch {
                tracepoint: Box::new(tracepoint),
                tp_btf: Box::new(tp_btf),
            },
            None => tp_btf,
        })
    }

    /// Watches `ports` (every port if empty) through the given hook only.
    pub fn with_hook(ports: &[u16], hook: WatchHook) -> Result<Self, BpfError> {
        Self::attach(ports, hook, RingSize::DEFAULT)
    }

    fn attach(ports: &[u16], hook: WatchHook, ring: RingSize) -> Result<Self, BpfError> {
        const PROGRAM: &str = "sock/inet_sock_set_state";
        let ports = PortSet::new(ports)?;
        let pidns = pidns_inum();
        let (mut ebpf, btf) = load_object(PROGRAM, watch_object(), |loader| {
            loader.override_global("pidns_inum", &pidns, true);
            loader.map_max_entries("events", ring.bytes());
            ports.write_into(loader);
        })?;

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
        let events = ebpf.take_map("events").ok_or(BpfError::Missing {
            program: PROGRAM,
            what: "map events",
        })?;
        let events = RingBuf::try_from(events).map_err(|error| BpfError::Map {
            step: "opening ring buffer of",
            program: PROGRAM,
            error,
        })?;
        let lost = ebpf.take_map("lost").ok_or(BpfError::Missing {
            program: PROGRAM,
            what: "map lost",
        })?;
        let lost = PerCpuArray::try_from(lost).map_err(|error| BpfError::Map {
            step: "opening the lost counter of",
            program: PROGRAM,
            error,
        })?;
        Ok(Self {
            events,
            lost,
            hook,
            _ebpf: ebpf,
        })
    }

    /// The hook in use.
    pub fn hook(&self) -> WatchHook {
        self.hook
    }

    /// How many events the ring buffer had no room for since the watch
    /// began (summed over the CPUs): on every watched port, whatever their
    /// address or network namespace, since they are dropped before any
    /// filter sees them. An event counted here is never in [`Watcher::poll`].
    pub fn lost(&self) -> Result<u64, BpfError> {
        let per_cpu = self.lost.get(&0, 0).map_err(|error| BpfError::Map {
            step: "reading the lost counter of",
            program: "sock/inet_sock_set_state",
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
                        program: "sock/inet_sock_set_state",
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
            if rec.len() >= LISTEN_EVENT_RECORD {
                out.push(parse_listen_event(&rec));
            }
        }
        out
    }
}

fn parse_listen_event(rec: &[u8]) -> ListenEvent {
    let comm: [u8; 16] = field(rec, 24);
    let family = u16::from_ne_bytes(field(rec, 56)) as u8;
    let new_state = rec[61];
    ListenEvent {
        ktime_ns: u64::from_ne_bytes(field(rec, 0)),
        inode: u64::from_ne_bytes(field(rec, 8)),
        pid: u32::from_ne_bytes(field(rec, 16)),
        tid: u32::from_ne_bytes(field(rec, 20)),
        comm: comm.iter().copied().take_while(|&b| b != 0).collect(),
        addr: ip_addr(
            if family == AF_INET6 {
                AF_INET6
            } else {
                AF_INET
            },
            field(rec, 40),
        ),
        port: u16::from_ne_bytes(field(rec, 58)),
        old_state: rec[60],
        new_state,
        reuseport: rec[62] != 0,
        netns: u32::from_ne_bytes(field(rec, 64)).into(),
        kind: if new_state == TCP_LISTEN {
            ListenChange::Listen
        } else {
            ListenChange::Close
        },
    }
}

/// Whether tracefs is mounted where aya looks for tracepoint ids.
fn tracefs_mounted() -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|dir| Path::new(dir).is_dir())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::TcpListener;

    use aya_obj::btf::BtfKind;

    use super::btf_view::{
        AttachPoint,
        tests::{SMALL_ROOTS, small_kernel},
    };
    use super::*;

    fn inode_of(fd: &impl std::os::fd::AsFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    fn both(wanted: &[u64]) -> (Vec<TaskFile>, Vec<TaskFile>) {
        let walk = task_file_rows(&walk_fd_tables(wanted).unwrap(), WALK_PROGRAM).unwrap();
        let raw = iterate_task_files(wanted).unwrap();
        (walk, task_file_rows(&raw, TASK_FILE_PROGRAM).unwrap())
    }

    /// The fd-table walk and its fallback give the same rows, for a few
    /// inodes (compared from `.rodata`) and for many (the map): here, on
    /// sockets of this process, one of them at two fds.
    #[test]
    fn fd_walk_and_task_file_agree_on_own_sockets() {
        if let Err(e) = availability() {
            eprintln!("skipped: {e}");
            return;
        }
        let sockets: Vec<TcpListener> = (0..2 * FEW_INODES)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let dup = sockets[1].try_clone().unwrap();
        let mut inodes: Vec<u64> = sockets.iter().map(inode_of).collect();
        inodes.sort_unstable();
        for wanted in [&inodes[..3], &inodes[..FEW_INODES], &inodes[..]] {
            let (walk, task_file) = both(wanted);
            assert_eq!(walk, task_file);
            let dups = usize::from(wanted.contains(&inode_of(&dup)));
            assert_eq!(walk.len(), wanted.len() + dups, "{walk:?}");
        }
    }

    /// The same on every socket of the machine (as many fds as it has):
    /// retried, as sockets come and go between the two runs.
    #[test]
    fn fd_walk_and_task_file_agree_on_every_socket() {
        if let Err(e) = availability() {
            eprintln!("skipped: {e}");
            return;
        }
        // At least one socket is held, even on an idle machine.
        let _own = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut last = None;
        for _ in 0..3 {
            let mut inodes = BTreeSet::new();
            for table in ["tcp", "tcp6", "udp", "udp6", "unix"] {
                let text = fs::read_to_string(format!("/proc/net/{table}")).unwrap_or_default();
                let column = if table == "unix" { 6 } else { 9 };
                inodes.extend(
                    text.lines().skip(1).filter_map(|line| {
                        line.split_whitespace().nth(column)?.parse::<u64>().ok()
                    }),
                );
            }
            inodes.remove(&0);
            let wanted: Vec<u64> = inodes.into_iter().collect();
            let (walk, task_file) = both(&wanted);
            if walk == task_file {
                assert!(!walk.is_empty());
                eprintln!("{} rows for {} socket inodes", walk.len(), wanted.len());
                return;
            }
            last = Some((walk.len(), task_file.len()));
        }
        panic!("rows differ in 3 tries (walk, task_file): {last:?}");
    }

    fn point(id: u32, kind: u32, name: &str) -> AttachPoint {
        AttachPoint {
            id,
            info: kind << 24,
            name: name.into(),
        }
    }

    fn kernel(points: &[AttachPoint]) -> KernelBtf {
        KernelBtf {
            relocation: Btf::new(),
            attach: points.to_vec(),
            funcs: OnceLock::new(),
            typedefs: OnceLock::new(),
        }
    }

    /// Where aya finds each point of `points` in `btf`.
    fn found(btf: &Btf, points: &[AttachPoint]) -> Vec<u32> {
        points
            .iter()
            .map(|p| {
                let kind = if p.is_func() {
                    BtfKind::Func
                } else {
                    BtfKind::Typedef
                };
                btf.id_by_type_name_kind(&p.name, kind).unwrap()
            })
            .collect()
    }

    #[test]
    fn aya_finds_each_attach_point_at_its_kernel_id() {
        let (func, typedef) = (12, 8);
        let points = [
            point(3, func, "a"),
            point(5, typedef, "t"),
            point(9, typedef, "u"),
            point(10, func, "b"),
            point(64299, func, "c"),
        ];
        let btf = kernel(&points);
        let (funcs, typedefs): (Vec<_>, Vec<_>) = points.iter().cloned().partition(|p| p.is_func());
        assert_eq!(found(btf.funcs(), &funcs), [3, 10, 64299]);
        assert_eq!(found(btf.typedefs().unwrap(), &typedefs), [5, 9]);
        // Made once.
        assert!(std::ptr::eq(btf.funcs(), btf.funcs()));
        let unsorted = [point(40, func, "b"), point(7, func, "a")];
        assert_eq!(found(kernel(&unsorted).funcs(), &unsorted), [40, 7]);
        let first = [point(1, typedef, "t")];
        assert_eq!(found(kernel(&first).typedefs().unwrap(), &first), [1]);
        assert!(kernel(&[]).typedefs().is_ok());
    }

    #[test]
    fn the_views_of_the_small_kernel_find_its_attach_points() {
        let views = btf_view::minimal(&small_kernel(), &SMALL_ROOTS).unwrap();
        let small = kernel(&views.attach);
        let (funcs, typedefs): (Vec<_>, Vec<_>) =
            views.attach.iter().cloned().partition(|p| p.is_func());
        assert_eq!(found(small.funcs(), &funcs), [8, 10]);
        assert_eq!(found(small.typedefs().unwrap(), &typedefs), [9]);
    }

    /// The running kernel, where its BTF can be read (no privilege needed):
    /// aya, parsing all of it, puts the attach points where the views do.
    #[test]
    fn the_running_kernels_attach_points_are_where_aya_finds_them() {
        let Ok(raw) = fs::read(KERNEL_BTF) else {
            eprintln!("skipped: no kernel BTF at {KERNEL_BTF}");
            return;
        };
        let fresh = btf_view::minimal(&raw, &BTF_ROOTS).unwrap();
        let full = Btf::parse(&raw, Endianness::default()).unwrap();
        let views = kernel(&fresh.attach);
        for p in &fresh.attach {
            let kind = if p.is_func() {
                BtfKind::Func
            } else {
                BtfKind::Typedef
            };
            let want = full.id_by_type_name_kind(&p.name, kind).unwrap();
            assert_eq!(p.id, want, "{}", p.name);
            let view = if p.is_func() {
                views.funcs()
            } else {
                views.typedefs().unwrap()
            };
            assert_eq!(view.id_by_type_name_kind(&p.name, kind).unwrap(), want);
        }
    }

    /// A cache entry of the running kernel's views (under its real key)
    /// gives back exactly what a fresh reduction gives.
    #[test]
    fn the_running_kernels_views_survive_the_cache() {
        let Ok(raw) = fs::read(KERNEL_BTF) else {
            eprintln!("skipped: no kernel BTF at {KERNEL_BTF}");
            return;
        };
        let fresh = btf_view::minimal(&raw, &BTF_ROOTS).unwrap();
        let key = kernel_key().unwrap();
        let dir = std::env::temp_dir().join(format!("sockcheck-btf-kernel-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap(); // ours: /tmp is not
        let cache = btf_cache::CacheDir::open(&dir).unwrap();
        cache.store(&key, &fresh).unwrap();
        let cached = cache.load(&key).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(cached, fresh);
    }
}
