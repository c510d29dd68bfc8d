//! Who holds given sockets: `iter/task` (`bpf/iter_task_fds.bpf.c`) walks
//! every fd table itself, and `iter/task_file` (`bpf/iter_task_file.bpf.c`)
//! gives the same rows where that walk fails. Both write `struct
//! task_file_rec` records ([`TaskFileRec`]).

use std::{collections::BTreeMap, io, os::fd::AsRawFd, time::Instant};

use aya::{Ebpf, maps::HashMap};

use super::loader::{
    iter_task_fds_object, iter_task_file_object, load_object, pidns_inum, run_iter,
};
use super::paths::{self, OwnerPath, Taken};
use super::records::{TaskFileRec, decode_all};
use super::trace::trace;
use super::{BpfError, availability};

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
    let records = match walk_fd_tables(&wanted) {
        Ok(records) => {
            paths::note_owners(Taken::new(OwnerPath::FdWalk, None));
            records
        }
        Err(error) => {
            trace(
                &format!("{WALK_PROGRAM}: failed, {TASK_FILE_PROGRAM} instead ({error})"),
                start,
            );
            let records = iterate_task_files(&wanted)?;
            let why = paths::walk_failed(&error);
            paths::note_owners(Taken::new(OwnerPath::TaskFile, Some(why)));
            records
        }
    };
    Ok(task_file_rows(&records))
}

pub(super) const WALK_PROGRAM: &str = "iter/task";
pub(super) const TASK_FILE_PROGRAM: &str = "iter/task_file";

/// The records of `bpf/iter_task_fds.bpf.c` for `wanted` (sorted, unique,
/// not empty). A record of inode 0 is the program saying it could not
/// walk some table: an error here, so that the caller falls back.
pub(super) fn walk_fd_tables(wanted: &[u64]) -> Result<Vec<TaskFileRec>, BpfError> {
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
    let records = decode_all::<TaskFileRec>(&raw, PROGRAM)?;
    if let Some(rec) = records.iter().find(|rec| rec.inode == 0) {
        let why = match rec.fd {
            1 => "has more open fds than one bpf_loop walks",
            2 => "was not walked: our own socket's file has no socket_file_ops",
            _ => "was not walked",
        };
        let pid = rec.tgid;
        return Err(BpfError::Io {
            step: "walking the fd tables with",
            program: PROGRAM,
            error: io::Error::other(format!("the fd table of pid {pid} {why}")),
        });
    }
    Ok(records)
}

/// The records of `bpf/iter_task_file.bpf.c` for `wanted` (sorted, unique,
/// not empty).
pub(super) fn iterate_task_files(wanted: &[u64]) -> Result<Vec<TaskFileRec>, BpfError> {
    const PROGRAM: &str = TASK_FILE_PROGRAM;
    let pidns = pidns_inum();
    let (mut ebpf, _) = load_object(PROGRAM, iter_task_file_object(), |loader| {
        loader
            .override_global("pidns_inum", &pidns, true)
            .map_max_entries("inodes", wanted.len() as u32);
    })?;
    fill_inode_map(&mut ebpf, PROGRAM, wanted)?;
    let raw = run_iter(&mut ebpf, "sockcheck_iter_task_file", "task_file", PROGRAM)?;
    decode_all(&raw, PROGRAM)
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
fn task_file_rows(records: &[TaskFileRec]) -> Vec<TaskFile> {
    let mut rows: BTreeMap<(u64, u32, u32), Vec<u32>> = BTreeMap::new();
    for rec in records {
        rows.entry((rec.inode, rec.tgid, rec.fd))
            .or_default()
            .push(rec.tid);
    }
    rows.into_iter()
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
        .collect()
}

/// Checks of the fd walk against its fallback, for `tests/it` (through
/// [`crate::selftest`]): they load programs, so they need CAP_BPF, which a
/// unit test cannot count on nor report the lack of. The caller makes sure
/// of it first; each panics on a mismatch.
pub(super) mod selftest {
    use std::collections::BTreeSet;
    use std::fs;
    use std::net::TcpListener;

    use super::*;

    fn inode_of(fd: &impl std::os::fd::AsFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    fn both(wanted: &[u64]) -> (Vec<TaskFile>, Vec<TaskFile>) {
        let walk = task_file_rows(&walk_fd_tables(wanted).unwrap());
        (walk, task_file_rows(&iterate_task_files(wanted).unwrap()))
    }

    /// The rows of this process: a test running beside this one may fork
    /// a child, which holds every fd of ours until its exec.
    fn own(rows: Vec<TaskFile>) -> Vec<TaskFile> {
        let pid = std::process::id();
        rows.into_iter().filter(|row| row.pid == pid).collect()
    }

    /// The fd-table walk and its fallback give the same rows, for a few
    /// inodes (compared from `.rodata`) and for many (the map): here, on
    /// sockets of this process, one of them at two fds.
    pub fn fd_walk_and_task_file_agree_on_own_sockets() {
        let sockets: Vec<TcpListener> = (0..2 * FEW_INODES)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let dup = sockets[1].try_clone().unwrap();
        let mut inodes: Vec<u64> = sockets.iter().map(inode_of).collect();
        inodes.sort_unstable();
        for wanted in [&inodes[..3], &inodes[..FEW_INODES], &inodes[..]] {
            let (walk, task_file) = both(wanted);
            let (walk, task_file) = (own(walk), own(task_file));
            assert_eq!(walk, task_file);
            let dups = usize::from(wanted.contains(&inode_of(&dup)));
            assert_eq!(walk.len(), wanted.len() + dups, "{walk:?}");
        }
    }

    /// Runs of both over every socket of the machine before they must agree.
    const TRIES: usize = 3;

    /// The same on every socket of the machine (as many fds as it has):
    /// retried, as sockets come and go between the two runs.
    pub fn fd_walk_and_task_file_agree_on_every_socket() {
        // At least one socket is held, even on an idle machine.
        let _own = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut last = None;
        for _ in 0..TRIES {
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
                return;
            }
            last = Some((walk.len(), task_file.len()));
        }
        panic!("rows differ in {TRIES} tries (walk, task_file): {last:?}");
    }
}
