//! Evidence for the plan: the owners of the planned sockets (/proc, or the
//! kernel's fd tables through BPF), SO_REUSEPORT for each planned listener,
//! and the canary binds. After the kernel dump, this is the only stage that
//! touches the system.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::plan::{ListenerId, OwnerLookup, Plan};
use super::{BpfMode, KernelView, Query};
use crate::bpf;
use crate::canary::{self, Canary};
use crate::owners::{self, FdScan, ProcRoot, ProcessInfo};
use crate::report::{Owner, SourceStatus, Status};
use crate::reuseport::{self, Holder, Reuseport, Subject};

/// Above this many open files (`/proc/sys/fs/file-nr`), `--bpf auto` finds
/// owners in the kernel's fd tables through BPF instead of /proc. Measured
/// on a busy address (2 cores, warm BTF cache; BENCHMARKS.md): eBPF costs
/// about 10 ms more than the default path on an idle machine, then little
/// per file; the /proc scan grows about 1.9 ms per 1,000 files. At 5,220
/// files the two took 16.0 ms (/proc) and 17.1 ms (eBPF), at 10,300 files
/// 25.8 and 21.4 ms, at 20,460 files 43.6 and 20.1 ms.
pub const BPF_OWNER_THRESHOLD: u64 = 6_000;

/// Everything the report is assembled from, besides the kernel view.
#[derive(Debug)]
pub struct Evidence {
    pub owners: Owners,
    /// SO_REUSEPORT of each planned listener.
    pub reuseport: HashMap<ListenerId, Finding>,
    /// The canary bind of each address and port.
    pub canaries: HashMap<SocketAddr, Canary>,
    /// How the owners were found.
    pub proc: SourceStatus,
    /// What eBPF did, and why not when it did not.
    pub bpf: SourceStatus,
    /// The effective uid the bind probe ran as.
    pub euid: u32,
}

/// A listener's SO_REUSEPORT: `true`, `false` or unknown, and what that
/// rests on.
#[derive(Debug, Clone)]
pub struct Finding {
    pub value: Option<bool>,
    pub evidence: Reuseport,
}

impl Finding {
    /// For a listener whose SO_REUSEPORT was not asked.
    pub fn not_looked_up() -> Finding {
        Finding {
            value: None,
            evidence: Reuseport::not_looked_up(),
        }
    }
}

/// Gathers the evidence `plan` asks for.
pub fn gather(query: &Query, view: &KernelView, plan: &Plan<'_>) -> Evidence {
    let root = ProcRoot::system();
    let mut bpf = BpfUse::new(query.sources.bpf);
    let bpf_owners = bpf_for_owners(query.sources.bpf, &plan.owners, &mut bpf);
    // When owners come from the kernel, its SO_REUSEPORT bits are read
    // first (see reuseport_findings): read them on a second thread while
    // the fd tables are walked, once the loads' shared preparation is done.
    let prefetch = bpf_owners && !plan.reuseport.is_empty() && bpf::prepare().is_ok();
    let (scan, proc, bits) = std::thread::scope(|scope| {
        // A thread that cannot be started is read after the walk instead.
        let bits = prefetch.then(|| {
            std::thread::Builder::new()
                .spawn_scoped(scope, || bpf::tcp_listeners(&query.ports))
                .ok()
        });
        let (scan, proc) = find_owners(&root, bpf_owners, &plan.owners, &mut bpf);
        let bits = bits.map(|thread| match thread {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => bpf::tcp_listeners(&query.ports),
        });
        (scan, proc, bits)
    });
    let owners = Owners::describe(&root, scan, &plan.owners, query.owners);
    let reuseport = reuseport_findings(query, view, plan, &owners, &mut bpf, bits);
    Evidence {
        owners,
        reuseport,
        canaries: canaries(plan),
        proc,
        bpf: bpf.status(),
        euid: rustix::process::geteuid().as_raw(),
    }
}

/// The holders found by the scan, with each holder process described once.
#[derive(Debug, Default)]
pub struct Owners {
    scan: FdScan,
    processes: HashMap<u32, ProcessInfo>,
    /// False when the query did not ask for owners.
    asked: bool,
}

/// The owners of one socket.
#[derive(Debug, Clone)]
pub struct SocketOwners {
    pub owners: Vec<Owner>,
    /// False when some processes could not be read, so a further owner may
    /// be hidden.
    pub complete: bool,
}

impl Owners {
    /// The owners of the sockets `lookup` names, from the /proc at `root`
    /// alone (never BPF), and how far it could be read: how tests find
    /// owners in a fixture tree.
    pub fn from_proc(root: &ProcRoot, lookup: &OwnerLookup, asked: bool) -> (Owners, SourceStatus) {
        let mut no_bpf = BpfUse::new(BpfMode::Never);
        let (scan, status) = find_owners(root, false, lookup, &mut no_bpf);
        (Owners::describe(root, scan, lookup, asked), status)
    }

    /// Describes every process that holds one of the looked-up sockets.
    fn describe(root: &ProcRoot, scan: FdScan, lookup: &OwnerLookup, asked: bool) -> Owners {
        let mut processes = HashMap::new();
        if let OwnerLookup::Find(inodes) = lookup {
            for pid in inodes
                .iter()
                .filter_map(|inode| scan.holders.get(inode))
                .flat_map(|pids| pids.keys())
            {
                processes
                    .entry(*pid)
                    .or_insert_with(|| owners::describe(root, *pid));
            }
        }
        Owners {
            scan,
            processes,
            asked,
        }
    }

    /// The owners of the socket `inode` whose uid is `uid`.
    pub fn of(&self, inode: u64, uid: u32) -> SocketOwners {
        let scan = &self.scan;
        let mut owners = Vec::new();
        if !self.asked {
            return SocketOwners {
                owners,
                complete: false,
            };
        }
        for (pid, fds) in scan.holders.get(&inode).into_iter().flatten() {
            if let Some(info) = self.processes.get(pid) {
                owners.push(Owner::visible(info.clone(), fds.clone()));
            }
        }
        let complete = scan.looked_up && scan.unreadable.is_empty() && scan.invisible.is_none();
        // Hidden means: the scan ran and some process was out of reach.
        // When /proc could not be read at all, the owner is just unknown.
        if owners.is_empty() && !complete && scan.looked_up {
            owners.push(Owner::hidden(uid, scan.hidden_candidates(uid)));
        }
        SocketOwners { owners, complete }
    }

    /// Each fd through which some process holds `inode`, with a live thread
    /// to reach it through when the leader is a zombie.
    fn holders(&self, inode: u64) -> Vec<Holder> {
        let pids = self.scan.holders.get(&inode).into_iter().flatten();
        pids.flat_map(|(&pid, fds)| {
            fds.iter().map(move |r| Holder {
                pid,
                via_tid: r.via_tids.first().copied(),
                fd: r.fd,
            })
        })
        .collect()
    }
}

/// Whether owners are to be looked for in the kernel's fd tables:
/// with `--bpf always`, or `auto` on a machine with many open files.
fn bpf_for_owners(mode: BpfMode, lookup: &OwnerLookup, bpf: &mut BpfUse) -> bool {
    matches!(lookup, OwnerLookup::Find(_))
        && match mode {
            BpfMode::Never => false,
            BpfMode::Always => bpf.usable(),
            BpfMode::Auto => open_files().is_some_and(|n| n > BPF_OWNER_THRESHOLD) && bpf.usable(),
        }
}

/// Finds the owners of the sockets `lookup` names, through the kernel's fd
/// tables ([`bpf::task_files`]) when `try_bpf` (and it works), else the
/// /proc at `root`.
fn find_owners(
    root: &ProcRoot,
    try_bpf: bool,
    lookup: &OwnerLookup,
    bpf: &mut BpfUse,
) -> (FdScan, SourceStatus) {
    let inodes = match lookup {
        OwnerLookup::NoneNeeded => {
            let status = SourceStatus::new(Status::Skipped, "no socket needed an owner");
            return (FdScan::default(), status);
        }
        OwnerLookup::NotAsked => {
            let status = SourceStatus::new(Status::Skipped, "owners were not asked for");
            return (FdScan::default(), status);
        }
        OwnerLookup::Find(inodes) => inodes,
    };
    if try_bpf {
        let inodes: Vec<u64> = inodes.iter().copied().collect();
        match bpf::task_files(&inodes) {
            Ok(rows) => {
                bpf.used.push(owners_via());
                return (
                    owners::from_task_files(rows),
                    SourceStatus::new(
                        Status::Skipped,
                        "owners came from the kernel's fd tables through BPF",
                    ),
                );
            }
            Err(e) => bpf
                .failures
                .push(format!("{e}; owners read from /proc instead")),
        }
    }
    let inodes: HashSet<u64> = inodes.iter().copied().collect();
    match owners::scan(root, &inodes) {
        Ok(scan) => {
            let status = proc_status(root, &scan);
            (scan, status)
        }
        Err(e) => (
            FdScan::default(),
            SourceStatus::new(Status::Unavailable, e.to_string()),
        ),
    }
}

/// Which eBPF path found the owners, and why it fell back (for `-v`).
fn owners_via() -> String {
    match bpf::paths::owners_taken() {
        Some(taken) => match taken.fell_back {
            None => format!("fd tables for owners ({})", taken.path.describe()),
            Some(why) => format!(
                "fd tables for owners ({}, because {why})",
                taken.path.describe()
            ),
        },
        None => "fd tables for owners".into(),
    }
}

/// What the /proc scan could read, and why not all of it.
fn proc_status(root: &ProcRoot, scan: &FdScan) -> SourceStatus {
    if let Some(mode) = &scan.invisible {
        return SourceStatus::new(
            Status::Partial,
            format!(
                "{} read; /proc is mounted with hidepid={mode}, so other \
                 users' processes cannot even be listed (needs root or CAP_SYS_PTRACE)",
                processes(scan.processes)
            ),
        );
    }
    if scan.unreadable.is_empty() {
        return SourceStatus::new(
            Status::Used,
            format!("{}, {} fds read", processes(scan.processes), scan.fds),
        );
    }
    let mut pids: Vec<String> = scan
        .unreadable
        .iter()
        .take(5)
        .map(|u| match u.uid {
            Some(uid) => format!("{} (uid {uid})", u.pid),
            None => u.pid.to_string(),
        })
        .collect();
    if scan.unreadable.len() > pids.len() {
        pids.push(format!("and {} more", scan.unreadable.len() - pids.len()));
    }
    // Read with CAP_SYS_PTRACE, every table should have been readable.
    let why = if root.reads_every_process() {
        "their fd links are not readable even as root; --bpf always sees them"
    } else {
        "other users' processes need root or CAP_SYS_PTRACE"
    };
    SourceStatus::new(
        Status::Partial,
        format!(
            "{} read; could not read the fd table of pid {} ({why})",
            processes(scan.processes),
            pids.join(", ")
        ),
    )
}

/// `1 process`, `2 processes`.
fn processes(n: usize) -> String {
    format!("{n} process{}", if n == 1 { "" } else { "es" })
}

/// The system's count of open files: the first field of /proc/sys/fs/file-nr.
fn open_files() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/file-nr")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// SO_REUSEPORT of every planned listener.
fn reuseport_findings(
    query: &Query,
    view: &KernelView,
    plan: &Plan<'_>,
    owners: &Owners,
    bpf: &mut BpfUse,
    prefetched: Option<Result<Vec<bpf::KernelListener>, bpf::BpfError>>,
) -> HashMap<ListenerId, Finding> {
    // Ask the kernel first with --bpf always, or when BPF is loaded anyway.
    let kernel_first = query.sources.bpf == BpfMode::Always || !bpf.used.is_empty();
    let mut kernel = KernelBits::new(bpf, &query.ports, prefetched);
    let mut findings = HashMap::new();
    for need in &plan.reuseport {
        let socket = &view.listeners[need.id.0];
        let holders = owners.holders(socket.inode);
        let subject = Subject {
            local: socket.local,
            inode: socket.inode,
            uid: socket.uid,
            v6only: socket.v6only,
            group_size: need.group_size,
            kernel_first,
            holders: &holders,
            probe_crowded: need.probe_crowded,
            allow_pidfd: query.sources.pidfd,
            allow_probe: query.sources.probe,
        };
        let (value, evidence) = reuseport::resolve(&subject, &mut |inode| kernel.bit(inode));
        findings.insert(need.id, Finding { value, evidence });
    }
    findings
}

/// The canary bind of every planned address and port.
fn canaries(plan: &Plan<'_>) -> HashMap<SocketAddr, Canary> {
    let mut canaries = HashMap::new();
    for address in &plan.addresses {
        for port in &address.ports {
            let at = SocketAddr::new(address.address, port.port);
            canaries.entry(at).or_insert_with(|| canary::bind(at));
        }
    }
    canaries
}

/// The kernel's own SO_REUSEPORT bits: one iter/tcp pass over the queried
/// ports, on first use (or the pass already made on another thread).
struct KernelBits<'a> {
    bpf: &'a mut BpfUse,
    ports: &'a [u16],
    prefetched: Option<Result<Vec<bpf::KernelListener>, bpf::BpfError>>,
    bits: Option<Result<HashMap<u64, bool>, String>>,
}

impl<'a> KernelBits<'a> {
    fn new(
        bpf: &'a mut BpfUse,
        ports: &'a [u16],
        prefetched: Option<Result<Vec<bpf::KernelListener>, bpf::BpfError>>,
    ) -> KernelBits<'a> {
        KernelBits {
            bpf,
            ports,
            prefetched,
            bits: None,
        }
    }

    /// The bit of the listener `inode`, or why it cannot be read.
    fn bit(&mut self, inode: u64) -> Result<bool, String> {
        if self.bits.is_none() {
            self.bits = Some(self.load());
        }
        match self.bits.as_ref().expect("loaded above") {
            Ok(bits) => bits
                .get(&inode)
                .copied()
                .ok_or_else(|| "the iterator did not see this listener (it closed?)".into()),
            Err(why) => Err(why.clone()),
        }
    }

    fn load(&mut self) -> Result<HashMap<u64, bool>, String> {
        if !self.bpf.usable() {
            return Err(self.bpf.why_not());
        }
        let listeners = match self.prefetched.take() {
            Some(listeners) => listeners,
            None => bpf::tcp_listeners(self.ports),
        };
        match listeners {
            Ok(listeners) => {
                self.bpf.used.push("iter/tcp for SO_REUSEPORT".into());
                Ok(listeners
                    .into_iter()
                    .map(|l| (l.inode, l.reuseport))
                    .collect())
            }
            Err(e) => {
                self.bpf.failures.push(e.to_string());
                Err(e.to_string())
            }
        }
    }
}

/// What eBPF did for one inspection, and why not when it did not.
#[derive(Debug)]
struct BpfUse {
    allowed: bool,
    availability: Option<Result<(), String>>,
    used: Vec<String>,
    failures: Vec<String>,
}

impl BpfUse {
    fn new(mode: BpfMode) -> BpfUse {
        BpfUse {
            allowed: mode != BpfMode::Never,
            availability: None,
            used: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Whether eBPF may be tried: allowed, privileged, with BTF.
    fn usable(&mut self) -> bool {
        self.allowed
            && self
                .availability
                .get_or_insert_with(|| bpf::availability().map_err(|e| e.to_string()))
                .is_ok()
    }

    fn why_not(&self) -> String {
        match &self.availability {
            _ if !self.allowed => "disabled by --bpf never".into(),
            Some(Err(why)) => why.clone(),
            _ => "not usable".into(),
        }
    }

    fn status(&self) -> SourceStatus {
        if !self.failures.is_empty() {
            let status = if self.used.is_empty() {
                Status::Unavailable
            } else {
                Status::Partial
            };
            return SourceStatus::new(status, self.failures.join("; "));
        }
        if !self.used.is_empty() {
            return SourceStatus::new(Status::Used, self.used.join(", "));
        }
        match (&self.availability, self.allowed) {
            (_, false) => SourceStatus::new(Status::Skipped, "disabled by --bpf never"),
            (Some(Err(why)), _) => SourceStatus::new(Status::Unavailable, why.clone()),
            _ => SourceStatus::new(Status::Skipped, "not needed"),
        }
    }
}
