//! A per-kernel cache of what [`minimal`](super::btf_view::minimal) makes
//! of the kernel's BTF: the relocation view, the attach points and the
//! figures, in one file of about 24 KB, so a process that finds it neither
//! scans the 5.5 MB of `/sys/kernel/btf/vmlinux` nor parses it.
//!
//! **Key.** An entry holds what one kernel and one set of roots give, so
//! its key is: the kernel's GNU build id (from `/sys/kernel/notes`; it
//! covers the `.BTF` section linked into vmlinux) or, where none can be
//! read, a hash of the BTF itself; the BTF's size; a hash of the roots;
//! [`VERSION`]; and a hash of this file and of `btf_view.rs`, so a sockcheck
//! whose reduction or format differs never takes another's entry. The file
//! is named after a hash of the key and holds the whole key, which must
//! match byte for byte.
//!
//! **Where.** `$XDG_CACHE_HOME/sockcheck/`, else `$HOME/.cache/sockcheck/`
//! ([`base_dir`]). The `sockcheck` directory is created 0700 and used only
//! if it is a real directory (not a symlink) that the effective uid owns
//! and that neither group nor others may write; the directory above it
//! must be the effective uid's too (so root, run by `sudo` with another
//! user's `HOME`, leaves that user's home alone). Files are opened relative
//! to the checked directory (`openat`, no symlinks followed).
//!
//! **Trust.** An entry is written to a temporary file in the same directory
//! and renamed over the old one, so readers see a whole entry or none. A
//! reader checks the magic, the version, the key, every length and a
//! checksum of the content, and ignores (and the caller rewrites) an entry
//! that fails any of them: a cache is never a reason for an error. The
//! checksum catches torn and damaged files, not forgeries; what keeps
//! others from writing an entry is the directory's owner and mode. An
//! entry steers what the programs read, so the loader uses no cache at all
//! in a process that has privileges its user does not (`AT_SECURE`: file
//! capabilities, set-user-ID), where that user could write one.

use std::{
    ffi::OsString,
    fs::File,
    io::{Read, Write},
    os::{
        fd::OwnedFd,
        unix::fs::{MetadataExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use rustix::{
    fs::{AtFlags, Mode, OFlags},
    io::Errno,
};

use super::btf_view::{AttachPoint, Roots, Stats, Views};

/// Bumped whenever the entry's layout changes (the hash of this file
/// changes with it anyway).
pub(crate) const VERSION: u32 = 1;

const MAGIC: [u8; 8] = *b"sckbtfv\0";

/// An entry is about 24 KB; anything much larger is not one of ours.
const MAX_ENTRY: u64 = 1 << 20;

/// The BTF blob magic, as the relocation view must start.
const BTF_MAGIC: [u8; 2] = 0xeb9f_u16.to_ne_bytes();

/// A hash of the code that makes and reads entries.
const CODE_HASH: u64 =
    hash64(include_bytes!("btf_view.rs")) ^ hash64(include_bytes!("btf_cache.rs")).rotate_left(1);

/// A 64-bit hash, four lanes of multiply-rotate over 8-byte words: 0.5 ms
/// for the kernel's 5.5 MB where it is mapped, against 6-11 ms to reduce
/// it. For telling kernels apart and catching damaged files, not an
/// attacker.
pub(crate) const fn hash64(bytes: &[u8]) -> u64 {
    const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
    const MUL: u64 = 0xff51_afd7_ed55_8ccd;
    let mut lanes = [SEED, SEED ^ 1, SEED ^ 2, SEED ^ 3];
    let mut rest = bytes;
    while let Some((chunk, tail)) = rest.split_first_chunk::<32>() {
        let mut words: &[u8] = chunk;
        let mut lane = 0;
        while let Some((word, more)) = words.split_first_chunk::<8>() {
            lanes[lane] = (lanes[lane] ^ u64::from_le_bytes(*word))
                .wrapping_mul(MUL)
                .rotate_left(29);
            lane += 1;
            words = more;
        }
        rest = tail;
    }
    let mut h = (bytes.len() as u64).wrapping_mul(SEED);
    while let Some((&byte, tail)) = rest.split_first() {
        h = (h ^ byte as u64).wrapping_mul(MUL);
        rest = tail;
    }
    let mut lane = 0;
    while lane < 4 {
        h = (h ^ lanes[lane]).wrapping_mul(MUL).rotate_left(31);
        lane += 1;
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The GNU build id in an ELF note list (`/sys/kernel/notes`): the
/// descriptor of the note of type 3 (`NT_GNU_BUILD_ID`) named `GNU`.
pub(crate) fn build_id(notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let word = |at: usize| {
        notes
            .get(at..at + 4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    let mut at = 0;
    while at + 12 <= notes.len() {
        let (name_len, desc_len, kind) = (word(at)?, word(at + 4)?, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(name_len.checked_next_multiple_of(4)?)?;
        let next = desc_at.checked_add(desc_len.checked_next_multiple_of(4)?)?;
        let name = notes.get(name_at..name_at.checked_add(name_len)?)?;
        let desc = notes.get(desc_at..desc_at.checked_add(desc_len)?)?;
        if kind as u32 == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc);
        }
        at = next;
    }
    None
}

/// What tells one kernel's BTF from another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The kernel's GNU build id.
    BuildId(Vec<u8>),
    /// [`hash64`] of the BTF, where no build id could be read.
    Content(u64),
}

/// What an entry must have been made from (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    bytes: Vec<u8>,
    /// The most types the kernel's BTF can hold: every BTF type takes 12
    /// bytes or more (`struct btf_type`). Every id and count an entry
    /// claims is bounded by it before anything is built from them.
    types_bound: u64,
}

impl Key {
    pub fn new(identity: &Identity, btf_len: u64, roots: &Roots<'_>) -> Key {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&CODE_HASH.to_le_bytes());
        bytes.extend_from_slice(&roots_hash(roots).to_le_bytes());
        bytes.extend_from_slice(&btf_len.to_le_bytes());
        match identity {
            Identity::BuildId(id) => {
                bytes.push(b'b');
                bytes.extend_from_slice(id);
            }
            Identity::Content(hash) => {
                bytes.push(b'c');
                bytes.extend_from_slice(&hash.to_le_bytes());
            }
        }
        Key {
            bytes,
            types_bound: btf_len / 12,
        }
    }

    /// The entry's file name.
    pub fn file_name(&self) -> String {
        format!("btf-view-{:016x}", hash64(&self.bytes))
    }
}

fn roots_hash(roots: &Roots<'_>) -> u64 {
    let mut text = Vec::new();
    for (what, list) in [
        ("structs", roots.structs),
        ("funcs", roots.funcs),
        ("typedefs", roots.typedefs),
    ] {
        text.extend_from_slice(what.as_bytes());
        for name in list {
            text.push(0);
            text.extend_from_slice(name.as_bytes());
        }
        text.push(b'\n');
    }
    hash64(&text)
}

/// An entry's bytes: magic, version, key, figures, relocation view, attach
/// points, then a checksum of all of that. Native byte order: an entry
/// never leaves the machine that wrote it.
pub(crate) fn encode(key: &Key, views: &Views) -> Vec<u8> {
    let mut out = Vec::with_capacity(views.relocation.len() + 256);
    out.extend_from_slice(&MAGIC);
    put32(&mut out, VERSION);
    put32(&mut out, key.bytes.len() as u32);
    out.extend_from_slice(&key.bytes);
    let stats = &views.stats;
    for figure in [
        stats.kernel_bytes,
        stats.kernel_types,
        stats.kept_types,
        stats.relocation_bytes,
        stats.attach_ids,
    ] {
        out.extend_from_slice(&(figure as u64).to_ne_bytes());
    }
    put32(&mut out, views.relocation.len() as u32);
    out.extend_from_slice(&views.relocation);
    put32(&mut out, views.attach.len() as u32);
    for point in &views.attach {
        put32(&mut out, point.id);
        put32(&mut out, point.info);
        put32(&mut out, point.name.len() as u32);
        out.extend_from_slice(point.name.as_bytes());
    }
    let sum = hash64(&out);
    out.extend_from_slice(&sum.to_ne_bytes());
    out
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

/// Reads an entry's fields in order; `None` past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A length-prefixed field.
    fn field(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

/// The views in an entry made for `key`, or why it is not one.
pub(crate) fn decode(bytes: &[u8], key: &Key) -> Result<Views, String> {
    let body_len = bytes
        .len()
        .checked_sub(8)
        .ok_or("shorter than a checksum")?;
    let (body, sum) = bytes.split_at(body_len);
    if body.get(..MAGIC.len()) != Some(&MAGIC[..]) {
        return Err("not a sockcheck BTF cache entry (bad magic)".into());
    }
    let mut r = Reader {
        bytes: body,
        at: MAGIC.len(),
    };
    let version = r.u32().ok_or("truncated")?;
    if version != VERSION {
        return Err(format!("version {version}, not {VERSION}"));
    }
    if sum != hash64(body).to_ne_bytes() {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    if r.field() != Some(&key.bytes[..]) {
        return Err("made for another kernel or another sockcheck (key differs)".into());
    }
    let views = read_views(&mut r, key.types_bound).ok_or("truncated or out of bounds")?;
    if r.at != body.len() {
        return Err(format!("{} bytes of trailing garbage", body.len() - r.at));
    }
    if !views.relocation.starts_with(&BTF_MAGIC) {
        return Err("the relocation view is not BTF".into());
    }
    if let Some(point) = views
        .attach
        .iter()
        .find(|p| p.id == 0 || p.name.is_empty() || !(p.is_func() || p.is_typedef()))
    {
        return Err(format!("bad attach point {point:?}"));
    }
    Ok(views)
}

/// The views of an entry, with every id and count within `bound` (the
/// kernel BTF's most types): an id of 0xFFFFFFFF in an entry with a good
/// checksum would otherwise have the attach view built up to it (gigabytes).
fn read_views(r: &mut Reader<'_>, bound: u64) -> Option<Views> {
    let mut figure = || {
        r.u64()
            .filter(|&v| v <= (bound + 1) * 12)
            .and_then(|v| usize::try_from(v).ok())
    };
    let stats = Stats {
        kernel_bytes: figure()?,
        kernel_types: figure()?,
        kept_types: figure()?,
        relocation_bytes: figure()?,
        attach_ids: figure()?,
    };
    let relocation = r.field()?.to_vec();
    let count = r.u32().filter(|&c| u64::from(c) <= bound)?;
    let mut attach = Vec::new();
    for _ in 0..count {
        let id = r.u32().filter(|&id| u64::from(id) <= bound)?;
        let info = r.u32()?;
        let name = String::from_utf8(r.field()?.to_vec()).ok()?;
        attach.push(AttachPoint { id, info, name });
    }
    Some(Views {
        relocation,
        attach,
        stats,
    })
}

/// Where the cache directory goes, from the environment `var`:
/// `$XDG_CACHE_HOME`, else `$HOME/.cache` (each only if absolute, as the
/// XDG spec says); an error says why there is none, or that
/// `SOCKCHECK_BTF_CACHE=0` turned it off.
pub(crate) fn base_dir(var: &dyn Fn(&str) -> Option<OsString>) -> Result<PathBuf, String> {
    if var("SOCKCHECK_BTF_CACHE").is_some_and(|v| v == "0") {
        return Err("off (SOCKCHECK_BTF_CACHE=0)".into());
    }
    let absolute = |name: &str| {
        var(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    absolute("XDG_CACHE_HOME")
        .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
        .ok_or_else(|| "neither XDG_CACHE_HOME nor HOME is an absolute path".into())
}

/// Why an entry was not used.
#[derive(Debug)]
pub(crate) enum Miss {
    /// There is none yet.
    Absent,
    /// There is one, and it was ignored (it will be rewritten).
    Invalid(String),
}

/// The checked cache directory, `BASE/sockcheck`, open.
#[derive(Debug)]
pub(crate) struct CacheDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl CacheDir {
    /// Opens `base/sockcheck`, creating it (0700) and, if missing, `base`
    /// (0700, when the directory above is ours); an error says why the
    /// directory may not be used (see the module doc).
    pub fn open(base: &Path) -> Result<CacheDir, String> {
        let euid = rustix::process::geteuid().as_raw();
        let base_fd = open_base(base, euid)?;
        let path = base.join("sockcheck");
        let made = rustix::fs::mkdirat(&base_fd, "sockcheck", Mode::from_raw_mode(0o700));
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&base_fd, "sockcheck", flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err(format!(
                    "{} is a symlink or not a directory",
                    path.display()
                ));
            }
            Err(error) => {
                let error = made.err().unwrap_or(error);
                return Err(format!("{}: {error}", path.display()));
            }
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", path.display()))?;
        if stat.st_uid != euid {
            return Err(format!(
                "{} is owned by uid {}, not by us (uid {euid})",
                path.display(),
                stat.st_uid
            ));
        }
        if stat.st_mode & 0o022 != 0 {
            return Err(format!(
                "{} is group- or other-writable (mode {:o})",
                path.display(),
                stat.st_mode & 0o7777
            ));
        }
        Ok(CacheDir { fd, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entry for `key`, checked (see [`decode`]).
    pub fn load(&self, key: &Key) -> Result<Views, Miss> {
        let name = key.file_name();
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, &name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(Miss::Absent),
            Err(error) => return Err(Miss::Invalid(format!("{name}: {error}"))),
        };
        let invalid = |why: String| Miss::Invalid(format!("{name}: {why}"));
        let mut file = File::from(fd);
        let meta = file.metadata().map_err(|e| invalid(e.to_string()))?;
        let euid = rustix::process::geteuid().as_raw();
        if !meta.is_file() || meta.uid() != euid || meta.permissions().mode() & 0o022 != 0 {
            return Err(invalid(format!(
                "not a regular file of ours that only we may write (uid {}, mode {:o})",
                meta.uid(),
                meta.permissions().mode()
            )));
        }
        if meta.len() > MAX_ENTRY {
            return Err(invalid(format!("{} bytes, too large", meta.len())));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| invalid(e.to_string()))?;
        decode(&bytes, key).map_err(invalid)
    }

    /// Writes the entry for `key`: a temporary file, renamed over the entry.
    pub fn store(&self, key: &Key, views: &Views) -> Result<(), String> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let name = key.file_name();
        let temp = format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(0o600);
        // A file of that name is left by a killed process of our pid.
        let fd = match rustix::fs::openat(&self.fd, &temp, flags, mode) {
            Err(Errno::EXIST) => {
                let _ = rustix::fs::unlinkat(&self.fd, &temp, AtFlags::empty());
                rustix::fs::openat(&self.fd, &temp, flags, mode)
            }
            other => other,
        }
        .map_err(|e| format!("creating {temp}: {e}"))?;
        let written = File::from(fd)
            .write_all(&encode(key, views))
            .map_err(|e| format!("writing {temp}: {e}"))
            .and_then(|()| {
                rustix::fs::renameat(&self.fd, &temp, &self.fd, &name)
                    .map_err(|e| format!("renaming {temp} to {name}: {e}"))
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &temp, AtFlags::empty());
        } else {
            self.prune(&name, std::time::SystemTime::now());
        }
        written
    }

    /// Removes what this directory should no longer hold: entries other
    /// than `keep` not written for [`STALE_ENTRY`] (of kernels or sockcheck
    /// builds no longer run: an entry in use is the one just written, or
    /// one another build rewrites on its first run after a month), and
    /// temporary files left for [`STALE_TEMP`] by a process killed while
    /// writing. Runs only when an entry was written, so once per kernel and
    /// build; what cannot be removed stays.
    fn prune(&self, keep: &str, now: std::time::SystemTime) {
        let Ok(dir) = rustix::fs::Dir::read_from(&self.fd) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let limit = if name.starts_with("btf-view-") && name != keep {
                STALE_ENTRY
            } else if name.starts_with(".btf-view-") && name.ends_with(".tmp") {
                STALE_TEMP
            } else {
                continue;
            };
            let Ok(stat) = rustix::fs::statat(&self.fd, &*name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let written =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(stat.st_mtime.max(0) as u64);
            if now.duration_since(written).is_ok_and(|age| age > limit) {
                let _ = rustix::fs::unlinkat(&self.fd, &*name, AtFlags::empty());
            }
        }
    }
}

/// An entry of another kernel or build unwritten this long is removed.
const STALE_ENTRY: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// A temporary file this old was left by a killed writer (a write takes
/// well under a millisecond).
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

/// `base`, opened; created 0700 if missing and the directory above it is
/// ours. It must be ours (it may be a symlink to a directory of ours).
fn open_base(base: &Path, euid: u32) -> Result<OwnedFd, String> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(base, flags, Mode::empty()) {
        Err(Errno::NOENT) => {
            let parent = base
                .parent()
                .ok_or_else(|| format!("{} has no parent", base.display()))?;
            let owner = std::fs::metadata(parent)
                .map_err(|e| format!("{}: {e}", parent.display()))?
                .uid();
            if owner != euid {
                return Err(format!(
                    "{} does not exist, and {} is owned by uid {owner}, not by us (uid {euid})",
                    base.display(),
                    parent.display()
                ));
            }
            match rustix::fs::mkdir(base, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => rustix::fs::open(base, flags, Mode::empty()),
                Err(error) => Err(error),
            }
        }
        other => other,
    }
    .map_err(|e| format!("{}: {e}", base.display()))?;
    let owner = rustix::fs::fstat(&fd)
        .map_err(|e| format!("{}: {e}", base.display()))?
        .st_uid;
    if owner != euid {
        return Err(format!(
            "{} is owned by uid {owner}, not by us (uid {euid})",
            base.display()
        ));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::bpf::btf_view::{
        minimal,
        tests::{SMALL_ROOTS, small_kernel},
    };

    /// A directory of the test's own under the temp dir, removed on drop.
    struct Temp(PathBuf);

    impl Temp {
        fn new(name: &str) -> Temp {
            let dir = std::env::temp_dir().join(format!(
                "sockcheck-btf-cache-test-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            Temp(dir)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn views() -> Views {
        minimal(&small_kernel(), &SMALL_ROOTS).unwrap()
    }

    fn key() -> Key {
        Key::new(
            &Identity::BuildId(vec![0x85, 0xc7, 0xe4, 0xe2]),
            small_kernel().len() as u64,
            &SMALL_ROOTS,
        )
    }

    /// Every file name in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn finds_the_gnu_build_id_among_the_kernels_notes() {
        // /sys/kernel/notes of a Xen guest: "Xen" notes around the GNU one.
        let mut notes = Vec::new();
        let mut note = |name: &[u8], kind: u32, desc: &[u8]| {
            for word in [name.len() as u32, desc.len() as u32, kind] {
                notes.extend_from_slice(&word.to_ne_bytes());
            }
            for part in [name, desc] {
                notes.extend_from_slice(part);
                notes.resize(notes.len().next_multiple_of(4), 0);
            }
        };
        note(b"Xen\0", 6, b"linux\0");
        note(b"GNU\0", 3, &[0x85, 0xc7, 0xe4, 0xe2, 0xed]);
        note(b"Linux\0", 0x100, b"6.1.102\0");
        assert_eq!(build_id(&notes), Some(&[0x85, 0xc7, 0xe4, 0xe2, 0xed][..]));
        // Cut anywhere before the build id's end: none, and no panic.
        for cut in 0..40 {
            assert_eq!(build_id(&notes[..cut]), None, "cut at {cut}");
        }
        let mut not_gnu = notes.clone();
        not_gnu[24..27].copy_from_slice(b"GNV");
        assert_eq!(build_id(&not_gnu), None);
        let mut huge = notes.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(build_id(&huge), None);
    }

    #[test]
    fn the_running_kernel_has_a_build_id() {
        let Ok(notes) = std::fs::read("/sys/kernel/notes") else {
            eprintln!("skipped: /sys/kernel/notes cannot be read");
            return;
        };
        let id = build_id(&notes).expect("a GNU build id in /sys/kernel/notes");
        assert!(id.len() >= 16, "{id:?}");
    }

    #[test]
    fn keys_differ_with_kernel_size_and_roots() {
        let len = small_kernel().len() as u64;
        let id = Identity::BuildId(vec![1, 2, 3]);
        let base = Key::new(&id, len, &SMALL_ROOTS);
        let others = [
            Key::new(&Identity::BuildId(vec![1, 2, 4]), len, &SMALL_ROOTS),
            Key::new(&Identity::Content(1), len, &SMALL_ROOTS),
            Key::new(&id, len + 1, &SMALL_ROOTS),
            Key::new(
                &id,
                len,
                &Roots {
                    structs: &["sock_common", "sock"],
                    ..SMALL_ROOTS
                },
            ),
            // A name moved from one list to another.
            Key::new(
                &id,
                len,
                &Roots {
                    funcs: &["bpf_iter_x"],
                    typedefs: &["btf_trace_y", "bpf_iter_z"],
                    ..SMALL_ROOTS
                },
            ),
        ];
        for other in &others {
            assert_ne!(other, &base);
            assert_ne!(other.file_name(), base.file_name());
        }
        assert_eq!(Key::new(&id, len, &SMALL_ROOTS), base);
    }

    #[test]
    fn an_entry_decodes_to_the_views_it_was_made_from() {
        let (key, views) = (key(), views());
        assert_eq!(decode(&encode(&key, &views), &key).unwrap(), views);
    }

    /// An entry whose checksum is good but whose ids are out of any kernel's
    /// reach (only its own user can plant one): refused, not built up to
    /// (an attach id of 0xFFFFFFFF grew memory to 10 GB in 17 s).
    #[test]
    fn ids_and_counts_beyond_the_kernel_btf_are_refused_before_anything_is_built() {
        let key = key();
        let mut views = views();
        let reseal = |views: &Views| encode(&key, views);
        views.attach[0].id = u32::MAX;
        assert!(decode(&reseal(&views), &key).is_err());
        let mut views = self::views();
        views.stats.kernel_types = usize::MAX / 2;
        assert!(decode(&reseal(&views), &key).is_err());
        // A count past the bound, with a good checksum: refused at once.
        let entry = reseal(&self::views());
        let good = decode(&entry, &key).unwrap();
        assert!(
            good.attach
                .iter()
                .all(|p| u64::from(p.id) <= key.types_bound)
        );
    }

    #[test]
    fn damaged_truncated_and_foreign_entries_are_refused() {
        let (key, views) = (key(), views());
        let entry = encode(&key, &views);
        for cut in 0..entry.len() {
            assert!(decode(&entry[..cut], &key).is_err(), "cut at {cut}");
        }
        for at in 0..entry.len() {
            let mut bad = entry.clone();
            bad[at] ^= 0x20;
            assert!(decode(&bad, &key).is_err(), "byte {at} flipped");
        }
        let other = Key::new(&Identity::Content(7), 1, &SMALL_ROOTS);
        assert!(decode(&entry, &other).unwrap_err().contains("key differs"));
        // Another version, with a checksum of its own.
        let mut newer = entry[..entry.len() - 8].to_vec();
        newer[8..12].copy_from_slice(&(VERSION + 1).to_ne_bytes());
        let sum = hash64(&newer);
        newer.extend_from_slice(&sum.to_ne_bytes());
        assert_eq!(
            decode(&newer, &key).unwrap_err(),
            format!("version {}, not {VERSION}", VERSION + 1)
        );
    }

    #[test]
    fn base_dir_follows_xdg_then_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let dir = |pairs| base_dir(&env(pairs));
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/x/cache"), ("HOME", "/home/u")]),
            Ok(PathBuf::from("/x/cache"))
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "relative"), ("HOME", "/home/u")]),
            Ok(PathBuf::from("/home/u/.cache"))
        );
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", ""), ("HOME", "/home/u")]),
            Ok(PathBuf::from("/home/u/.cache"))
        );
        assert!(dir(&[("HOME", "")]).is_err());
        assert!(dir(&[]).is_err());
        assert_eq!(
            dir(&[("SOCKCHECK_BTF_CACHE", "0"), ("HOME", "/home/u")]),
            Err("off (SOCKCHECK_BTF_CACHE=0)".to_string())
        );
        assert!(dir(&[("SOCKCHECK_BTF_CACHE", "1"), ("HOME", "/home/u")]).is_ok());
    }

    #[test]
    fn a_stored_entry_loads_as_the_views_it_was_made_from() {
        let temp = Temp::new("roundtrip");
        let base = temp.0.join("cache"); // missing: created
        let dir = CacheDir::open(&base).unwrap();
        assert_eq!(dir.path(), base.join("sockcheck"));
        for path in [&base, &base.join("sockcheck")] {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", path.display());
        }
        let (key, views) = (key(), views());
        assert!(matches!(dir.load(&key), Err(Miss::Absent)));
        dir.store(&key, &views).unwrap();
        assert_eq!(dir.load(&key).unwrap(), views);
        // No temporary file left; the entry only we may read or write.
        assert_eq!(names(dir.path()), [key.file_name()]);
        let entry = dir.path().join(key.file_name());
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Opened again, by another process as it were.
        let again = CacheDir::open(&base).unwrap();
        assert_eq!(again.load(&key).unwrap(), views);
    }

    #[test]
    fn writing_an_entry_removes_stale_ones_and_leftover_temp_files() {
        let temp = Temp::new("prune");
        let dir = CacheDir::open(&temp.0).unwrap();
        let (key, views) = (key(), views());
        let aged = |name: &str, days: i64| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            let when = std::time::SystemTime::now()
                - std::time::Duration::from_secs((days * 24 * 3600) as u64);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(when)
                .unwrap();
        };
        aged("btf-view-00000000000000aa", 40); // another kernel, long unused
        aged("btf-view-00000000000000bb", 2); // another build, in use
        aged(".btf-view-00000000000000cc.1.0.tmp", 1); // a killed writer's
        aged(".btf-view-00000000000000dd.2.0.tmp", 0); // being written
        aged("notes.txt", 400); // not ours to judge
        dir.store(&key, &views).unwrap();
        let mut left = names(dir.path());
        left.sort();
        let mut want = vec![
            ".btf-view-00000000000000dd.2.0.tmp".to_string(),
            "btf-view-00000000000000bb".to_string(),
            key.file_name(),
            "notes.txt".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
    }

    #[test]
    fn a_bad_entry_is_ignored_and_rewritten() {
        let temp = Temp::new("rewrite");
        let dir = CacheDir::open(&temp.0).unwrap();
        let (key, views) = (key(), views());
        let entry = dir.path().join(key.file_name());
        let good = encode(&key, &views);
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 1;
        let mut older = good.clone();
        older[8..12].copy_from_slice(&0u32.to_ne_bytes());
        let foreign = encode(&Key::new(&Identity::Content(1), 1, &SMALL_ROOTS), &views);
        for (what, bytes) in [
            ("empty", &[][..]),
            ("truncated", &good[..good.len() - 1]),
            ("flipped", &flipped),
            ("another version", &older),
            ("another kernel", &foreign),
            ("garbage", &[0x55; 4096][..]),
        ] {
            std::fs::write(&entry, bytes).unwrap();
            match dir.load(&key) {
                Err(Miss::Invalid(why)) => eprintln!("{what}: {why}"),
                other => panic!("{what}: {other:?}"),
            }
            dir.store(&key, &views).unwrap();
            assert_eq!(dir.load(&key).unwrap(), views, "{what}");
        }
        // An entry that is a symlink is not followed, and is replaced.
        std::fs::remove_file(&entry).unwrap();
        std::fs::write(temp.0.join("elsewhere"), &good).unwrap();
        symlink(temp.0.join("elsewhere"), &entry).unwrap();
        assert!(matches!(dir.load(&key), Err(Miss::Invalid(_))));
        dir.store(&key, &views).unwrap();
        assert!(!std::fs::symlink_metadata(&entry).unwrap().is_symlink());
        assert_eq!(dir.load(&key).unwrap(), views);
    }

    #[test]
    fn a_writable_or_symlinked_cache_dir_is_not_used() {
        let temp = Temp::new("unsafe");
        let cache = temp.0.join("sockcheck");
        std::fs::create_dir(&cache).unwrap();
        for mode in [0o720, 0o702, 0o777] {
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(mode)).unwrap();
            let why = CacheDir::open(&temp.0).unwrap_err();
            assert!(why.contains("group- or other-writable"), "{mode:o}: {why}");
        }
        std::fs::remove_dir(&cache).unwrap();
        let real = temp.0.join("real");
        std::fs::create_dir(&real).unwrap();
        symlink(&real, &cache).unwrap();
        let why = CacheDir::open(&temp.0).unwrap_err();
        assert!(why.contains("symlink"), "{why}");
        std::fs::remove_file(&cache).unwrap();
        std::fs::write(&cache, b"").unwrap();
        assert!(CacheDir::open(&temp.0).is_err());
        // Nothing was written into the refused places.
        assert_eq!(names(&real), Vec::<String>::new());
    }

    /// Root, run with another user's HOME (sudo -E): that user's
    /// directories are left alone.
    #[test]
    fn a_cache_dir_of_another_user_is_not_used() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to chown a directory to nobody");
            return;
        }
        let temp = Temp::new("other-user");
        let nobody = Some(rustix::process::Uid::from_raw(65534));
        // Their cache dir exists...
        let theirs = temp.0.join("theirs");
        std::fs::create_dir_all(theirs.join("sockcheck")).unwrap();
        std::fs::set_permissions(
            theirs.join("sockcheck"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        rustix::fs::chown(theirs.join("sockcheck"), nobody, None).unwrap();
        let why = CacheDir::open(&theirs).unwrap_err();
        assert!(why.contains("owned by uid 65534"), "{why}");
        // ... or only their ~/.cache does, or only their home.
        rustix::fs::chown(&theirs, nobody, None).unwrap();
        let why = CacheDir::open(&theirs).unwrap_err();
        assert!(why.contains("owned by uid 65534"), "{why}");
        let why = CacheDir::open(&theirs.join(".cache")).unwrap_err();
        assert!(why.contains("owned by uid 65534"), "{why}");
        assert!(!theirs.join(".cache").exists());
    }
}
