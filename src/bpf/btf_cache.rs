//! A per-kernel cache of what [`minimal`](super::btf_view::minimal) makes
//! of the kernel's BTF: the relocation view, the attach points and the
//! figures, in one file of about 24 KB, so a process that finds it neither
//! scans the 5.5 MB of `/sys/kernel/btf/vmlinux` nor parses it.
//!
//! **Key.** An entry holds what one kernel and one set of roots give, so
//! its key is: the kernel's GNU build id (from `/sys/kernel/notes`; it
//! covers the `.BTF` section linked into vmlinux) or, where none can be
//! read, a hash of the BTF itself; the BTF's size; a hash of the roots;
//! [`VERSION`]; and a hash of this file and of `btf_view.rs` (with its parts), so a sockcheck
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

mod dir;
pub(super) mod selftest;
#[cfg(test)]
mod tests;

pub(crate) use dir::{CacheDir, Miss, base_dir};

use super::btf_view::{AttachPoint, Roots, Stats, Views};

/// Bumped whenever the entry's layout changes (the hash of this file
/// changes with it anyway).
pub(crate) const VERSION: u32 = 1;

const MAGIC: [u8; 8] = *b"sckbtfv\0";

/// An entry is about 24 KB; anything much larger is not one of ours.
const MAX_ENTRY: u64 = 1 << 20;

/// The BTF blob magic, as the relocation view must start.
const BTF_MAGIC: [u8; 2] = 0xeb9f_u16.to_ne_bytes();

/// A hash of the code that makes and reads entries: the reduction
/// (`btf_view.rs` and its `raw.rs` and `write.rs`) and the format (this file).
const CODE_HASH: u64 = hash64(include_bytes!("btf_view.rs"))
    ^ hash64(include_bytes!("btf_view/raw.rs")).rotate_left(1)
    ^ hash64(include_bytes!("btf_view/write.rs")).rotate_left(2)
    ^ hash64(include_bytes!("btf_cache.rs")).rotate_left(3);

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
