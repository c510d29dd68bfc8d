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
//!
//! Modules: `loader` (the embedded objects and what every load shares),
//! `kernel_btf` (the kernel BTF the loader relocates and attaches with,
//! from `btf_view` and `btf_cache`), `records` (the `#[repr(C)]` mirrors of
//! the programs' records, checked against the objects' BTF), one module per
//! program family (`iter_tcp`, `owners`, `watcher`), `error` and `trace`.

mod btf_cache;
mod btf_view;
mod error;
mod iter_tcp;
mod kernel_btf;
mod loader;
mod owners;
pub mod paths;
mod records;
mod trace;
mod watcher;

use std::fs;

pub use error::{BpfError, Unavailable};
pub use iter_tcp::{KernelListener, tcp_listeners};
pub use kernel_btf::{prepare, use_btf_cache};
pub use owners::{TaskFile, task_files};
pub use watcher::{BadRingSize, ListenChange, ListenEvent, RingSize, WatchHook, Watcher};

/// The checks of this module's insides that [`crate::selftest`] gives
/// `tests/it`: they need CAP_BPF, root or the kernel's BTF.
pub(crate) mod selftest {
    pub use super::btf_cache::selftest::{
        a_cache_dir_of_another_user_is_not_used, the_running_kernel_has_a_build_id,
    };
    pub use super::btf_view::selftest::the_running_kernel_has_every_root;
    pub use super::kernel_btf::selftest::{
        the_running_kernels_attach_points_are_where_aya_finds_them,
        the_running_kernels_views_survive_the_cache,
    };
    pub use super::owners::selftest::{
        fd_walk_and_task_file_agree_on_every_socket, fd_walk_and_task_file_agree_on_own_sockets,
    };
}

/// Where the kernel publishes its own BTF, needed to relocate (CO-RE) and to
/// attach iterators and `tp_btf` programs.
pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// At most this many ports per call (the size of the programs' port table).
pub const MAX_PORTS: usize = 64;

// ---------------------------------------------------------- availability

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Cheap check that the programs can be loaded at all: privileges (CapEff of
/// this process) and kernel BTF. Loads nothing.
pub fn availability() -> Result<(), Unavailable> {
    let cap_eff = crate::sys::effective_capabilities()
        .map_err(|error| Unavailable::UnknownCapabilities { error })?;
    let has = |cap: u32| cap_eff & (1 << cap) != 0;
    let privileged = has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON));
    if !privileged {
        return Err(Unavailable::NotPrivileged {
            euid: unsafe { libc::geteuid() },
            cap_eff,
            unprivileged_bpf_disabled: crate::sys::unprivileged_bpf_disabled(),
        });
    }
    fs::metadata(KERNEL_BTF).map_err(|error| Unavailable::NoBtf { error })?;
    Ok(())
}
