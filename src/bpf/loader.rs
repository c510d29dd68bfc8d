//! What every program's load shares: the embedded objects, the port table,
//! the caller's pid namespace, the loader prologue, and running an iterator.

use std::{fs, io::Read, time::Instant};

use aya::{Ebpf, EbpfLoader, include_bytes_aligned, programs::Iter};

use super::kernel_btf::{KernelBtf, kernel_btf};
use super::trace::trace;
use super::{BpfError, MAX_PORTS, availability};

/// The objects `scripts/build-bpf.sh` compiles from `bpf/*.bpf.c`.
pub(super) fn iter_tcp_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/iter_tcp.bpf.o"))
}
pub(super) fn iter_task_file_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bpf/iter_task_file.bpf.o"
    ))
}
pub(super) fn iter_task_fds_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bpf/iter_task_fds.bpf.o"
    ))
}
pub(super) fn watch_object() -> &'static [u8] {
    include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/watch.bpf.o"))
}

/// The `.rodata` port table of `bpf/ports.h` (`watched_ports`, `n_watched_ports`).
pub(super) struct PortSet {
    ports: [u16; MAX_PORTS],
    len: u32,
}

impl PortSet {
    pub(super) fn new(ports: &[u16]) -> Result<Self, BpfError> {
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

    pub(super) fn write_into<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
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
pub(super) fn pidns_inum() -> u32 {
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
pub(super) fn load_object<'a>(
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
pub(super) fn run_iter(
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
