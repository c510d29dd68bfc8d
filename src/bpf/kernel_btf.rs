//! The kernel's BTF as the loader needs it: reduced to what the programs
//! touch ([`btf_view`]), from the per-kernel cache when allowed
//! ([`btf_cache`]), parsed once per process, and the attach views aya looks
//! attach points up in.

use std::{
    fs,
    io::{self, Read},
    os::fd::AsRawFd,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use aya::{Btf, Endianness};

use super::trace::{trace, trace_note};
use super::{BpfError, KERNEL_BTF, availability, btf_cache, btf_view};

/// What the programs' CO-RE relocations and attach points need of the kernel
/// BTF: every struct `bpf/sockcheck.h` declares with `preserve_access_index`
/// (keep the two lists in step), the iterator targets and the `tp_btf` hook.
pub(super) const BTF_ROOTS: btf_view::Roots<'static> = btf_view::Roots {
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
pub(super) struct KernelBtf {
    /// For CO-RE relocation: the types the programs touch.
    pub(super) relocation: Btf,
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
    pub(super) fn funcs(&self) -> &Btf {
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
    pub(super) fn typedefs(&self) -> Result<&Btf, BpfError> {
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
pub(super) fn kernel_btf() -> Result<&'static KernelBtf, BpfError> {
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

#[cfg(test)]
mod tests {
    use aya_obj::btf::BtfKind;

    use super::selftest::kernel;
    use super::*;
    use crate::bpf::btf_view::{
        AttachPoint,
        tests::{SMALL_ROOTS, small_kernel},
    };

    fn point(id: u32, kind: u32, name: &str) -> AttachPoint {
        AttachPoint {
            id,
            info: kind << 24,
            name: name.into(),
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
}

/// Checks on the running kernel's BTF, for `tests/it` (through
/// [`crate::selftest`]): a kernel may have none, and a unit test cannot
/// report that as a skip. Each returns `Err(why)` when there is none to
/// read, and panics on a mismatch. No privilege needed.
pub(super) mod selftest {
    use aya_obj::btf::BtfKind;

    use super::*;

    /// A [`KernelBtf`] with these attach points and an empty relocation view.
    pub(in crate::bpf) fn kernel(points: &[btf_view::AttachPoint]) -> KernelBtf {
        KernelBtf {
            relocation: Btf::new(),
            attach: points.to_vec(),
            funcs: OnceLock::new(),
            typedefs: OnceLock::new(),
        }
    }

    /// The running kernel's BTF, or why it cannot be read.
    pub(in crate::bpf) fn running_kernels_btf() -> Result<Vec<u8>, String> {
        fs::read(KERNEL_BTF).map_err(|e| format!("no kernel BTF at {KERNEL_BTF}: {e}"))
    }

    /// aya, parsing all of the running kernel's BTF, puts the attach points
    /// where the views do.
    pub fn the_running_kernels_attach_points_are_where_aya_finds_them() -> Result<(), String> {
        let raw = running_kernels_btf()?;
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
        Ok(())
    }

    /// A cache entry of the running kernel's views (under its real key)
    /// gives back exactly what a fresh reduction gives.
    pub fn the_running_kernels_views_survive_the_cache() -> Result<(), String> {
        let raw = running_kernels_btf()?;
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
        Ok(())
    }
}
