//! A minimal view of the kernel's BTF: only the types that CO-RE relocation
//! of sockcheck's programs and their attach points need, a few hundred of
//! the kernel's ~127,000.
//!
//! aya parses whatever BTF it is given into one Rust value per type, and its
//! relocation compares every local type with every target type by name, so
//! the cost of a load grows with the size of the target BTF (~5.5 MB, ~50 ms
//! and ~18 MiB per full parse). [`minimal`] reads the kernel's BTF in place
//! (one `mmap` of `/sys/kernel/btf/vmlinux`, where the kernel allows it, so
//! no copy and none of sysfs's 4 KB reads) and writes a small BTF blob of:
//!
//! - every struct/union named in `roots.structs`, with all its members;
//! - anonymous structs/unions inside those, in full (the relocation looks
//!   through them for members that sockcheck.h declares flat);
//! - for every other type a member or a pointer refers to: the chain of
//!   typedefs, qualifiers, pointers and arrays in full, and a named
//!   struct/union as a stub (its kind, name and size, no members): enough
//!   for the relocation's compatibility check of the last field on a path;
//! - the attach points (`roots.funcs`, `roots.typedefs`).
//!
//! Ids are renumbered: relocations of field offsets and sizes (the only
//! kinds the programs use) never carry a target type id. aya looks the
//! attach points up by name in a `Btf` and hands their index to the kernel
//! as `attach_btf_id`, which must be the kernel's id; so [`minimal`] also
//! returns the attach points (name, kind, kernel id), and `kernel_btf.rs`
//! makes of them a second, separate view with each at its kernel id and a
//! filler at every id below (~64,000). Keeping the two apart keeps those fillers out
//! of the relocation's search for candidates. [`Views`] is what
//! `btf_cache.rs` keeps per kernel.
//!
//! `raw.rs` reads a BTF blob in place, `write.rs` writes the views.

pub(crate) mod raw;
pub(super) mod selftest;
#[cfg(test)]
pub(crate) mod tests;
mod write;

use raw::{KIND_FUNC, KIND_STRUCT, KIND_TYPEDEF, KIND_UNION, RawBtf, kind_of, vlen_of};
pub(crate) use write::attach_blob;
use write::write_relocation;

/// The types to keep, by name.
pub(crate) struct Roots<'a> {
    /// Structs and unions, kept with all their members (every type of that
    /// name and kind).
    pub structs: &'a [&'a str],
    /// Functions (`FUNC`), kept at their kernel ids.
    pub funcs: &'a [&'a str],
    /// Typedefs, kept at their kernel ids.
    pub typedefs: &'a [&'a str],
}

/// What became of the kernel BTF, for `SOCKCHECK_BPF_TRACE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stats {
    pub kernel_bytes: usize,
    pub kernel_types: usize,
    pub kept_types: usize,
    pub relocation_bytes: usize,
    pub attach_ids: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Keep {
    No,
    /// A named struct/union without its members.
    Stub,
    Exact,
}

/// A function or typedef a program attaches to, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachPoint {
    /// The kernel's type id: what the kernel wants as `attach_btf_id`.
    pub id: u32,
    /// The kernel's `info` word: the kind, and a function's linkage.
    pub info: u32,
    pub name: String,
}

impl AttachPoint {
    pub fn is_func(&self) -> bool {
        kind_of(self.info) == KIND_FUNC
    }

    pub fn is_typedef(&self) -> bool {
        kind_of(self.info) == KIND_TYPEDEF
    }

    /// A function's linkage (`BTF_FUNC_STATIC`, `_GLOBAL`, `_EXTERN`).
    pub fn linkage(&self) -> u32 {
        vlen_of(self.info) as u32
    }
}

/// What [`minimal`] makes of the kernel's BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Views {
    /// What CO-RE relocation needs, renumbered from 1: a BTF blob.
    pub relocation: Vec<u8>,
    /// The attach points (`roots.funcs`, `roots.typedefs`), by kernel id.
    pub attach: Vec<AttachPoint>,
    pub stats: Stats,
}

/// The minimal BTF views for `roots`, from the kernel's raw BTF.
pub(crate) fn minimal(raw: &[u8], roots: &Roots<'_>) -> Result<Views, String> {
    let kernel = RawBtf::parse(raw)?;
    let (full, pinned) = find_roots(&kernel, roots)?;
    let keep = closure(&kernel, &full, &pinned)?;
    let kept: Vec<u32> = (1..keep.len() as u32)
        .filter(|&id| keep[id as usize] != Keep::No)
        .collect();
    let relocation = write_relocation(&kernel, &keep, &kept)?;
    let mut attach = Vec::with_capacity(pinned.len());
    for &id in &pinned {
        let (_, name_off, info, _) = kernel.header(id)?;
        attach.push(AttachPoint {
            id,
            info,
            name: String::from_utf8_lossy(kernel.name(name_off)).into_owned(),
        });
    }
    attach.sort_by_key(|point| point.id);
    let stats = Stats {
        kernel_bytes: raw.len(),
        kernel_types: kernel.count(),
        kept_types: kept.len(),
        relocation_bytes: relocation.len(),
        attach_ids: attach.last().map_or(0, |point| point.id as usize),
    };
    Ok(Views {
        relocation,
        attach,
        stats,
    })
}

/// The kernel's ids of the structs/unions to keep in full and of the
/// attach points (one pass over the kernel's types); an error names an
/// attach point the kernel does not have.
fn find_roots(kernel: &RawBtf<'_>, roots: &Roots<'_>) -> Result<(Vec<u32>, Vec<u32>), String> {
    let mut pinned: Vec<u32> = Vec::new();
    let mut full: Vec<u32> = Vec::new();
    for id in 1..=kernel.count() as u32 {
        let (_, name_off, info, _) = kernel.header(id)?;
        let kind = kind_of(info);
        if !matches!(kind, KIND_STRUCT | KIND_UNION | KIND_FUNC | KIND_TYPEDEF) || name_off == 0 {
            continue;
        }
        let named = |list: &[&str]| list.iter().any(|r| kernel.name_is(name_off, r));
        match kind {
            KIND_STRUCT | KIND_UNION if named(roots.structs) => full.push(id),
            KIND_FUNC if named(roots.funcs) => pinned.push(id),
            KIND_TYPEDEF if named(roots.typedefs) => pinned.push(id),
            _ => {}
        }
    }
    for (what, list, kind) in [
        ("function", roots.funcs, KIND_FUNC),
        ("typedef", roots.typedefs, KIND_TYPEDEF),
    ] {
        for name in list {
            let found = pinned.iter().any(|&id| {
                kernel.header(id).is_ok_and(|(_, name_off, info, _)| {
                    kind_of(info) == kind && kernel.name(name_off) == name.as_bytes()
                })
            });
            if !found {
                return Err(format!("the kernel has no {what} {name}"));
            }
        }
    }
    Ok((full, pinned))
}

/// What to keep of each kernel type (indexed by id): the roots in full,
/// what they refer to as little as will do.
fn closure(kernel: &RawBtf<'_>, full: &[u32], pinned: &[u32]) -> Result<Vec<Keep>, String> {
    let mut keep = vec![Keep::No; kernel.count() + 1];
    let mut pending: Vec<u32> = Vec::new();
    for &id in full.iter().chain(pinned) {
        pending.extend(kernel.refs(id)?);
        keep[id as usize] = Keep::Exact;
    }
    while let Some(id) = pending.pop() {
        if id == 0 {
            continue;
        }
        let (_, name_off, info, _) = kernel.header(id)?;
        let want = match kind_of(info) {
            KIND_STRUCT | KIND_UNION if name_off != 0 => Keep::Stub,
            _ => Keep::Exact,
        };
        if keep[id as usize] >= want {
            continue;
        }
        keep[id as usize] = want;
        if want == Keep::Exact {
            pending.extend(kernel.refs(id)?);
        }
    }
    Ok(keep)
}
