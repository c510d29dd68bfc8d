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
//! as `attach_btf_id`, which must be the kernel's id; so a second, separate
//! view has only the attach points, at their kernel ids, every id below
//! them a 12-byte `const void`. Keeping the two apart keeps those ~64,000
//! fillers out of the relocation's search for candidates.

use std::collections::HashMap;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

const BTF_MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;
const TYPE_HEADER_LEN: usize = 12;

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
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub kernel_bytes: usize,
    pub kernel_types: usize,
    pub kept_types: usize,
    pub relocation_bytes: usize,
    pub attach_ids: usize,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| format!("truncated at byte {at}"))
}

fn kind_of(info: u32) -> u32 {
    (info >> 24) & 0x1f
}

fn vlen_of(info: u32) -> usize {
    (info & 0xffff) as usize
}

/// Bytes after the 12-byte header of a type of this kind.
fn extra_len(kind: u32, vlen: usize) -> Result<usize, String> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        other => return Err(format!("unknown BTF kind {other}")),
    })
}

/// The kernel's BTF, indexed: `offsets[id]` is where type `id` starts in
/// `types` (`offsets[0]`, void, is unused).
struct Kernel<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    offsets: Vec<u32>,
}

impl<'a> Kernel<'a> {
    fn parse(raw: &'a [u8]) -> Result<Self, String> {
        if raw.len() < HEADER_LEN {
            return Err("shorter than a BTF header".into());
        }
        let magic = u16::from_ne_bytes([raw[0], raw[1]]);
        if magic != BTF_MAGIC {
            return Err(format!("bad magic {magic:#06x} (or foreign byte order)"));
        }
        let hdr_len = u32_at(raw, 4)? as usize;
        let section = |off_at: usize| -> Result<&'a [u8], String> {
            let off = hdr_len + u32_at(raw, off_at)? as usize;
            let len = u32_at(raw, off_at + 4)? as usize;
            raw.get(off..off + len)
                .ok_or_else(|| "section out of bounds".to_string())
        };
        let types = section(8)?;
        let strings = section(16)?;
        let mut offsets = vec![0u32];
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4)?;
            offsets.push(at as u32);
            at += TYPE_HEADER_LEN + extra_len(kind_of(info), vlen_of(info))?;
        }
        if at != types.len() {
            return Err("last type runs past the type section".into());
        }
        Ok(Self {
            types,
            strings,
            offsets,
        })
    }

    fn count(&self) -> usize {
        self.offsets.len() - 1
    }

    /// (offset, name_off, info, size_or_type) of type `id` (1..=count).
    fn header(&self, id: u32) -> Result<(usize, u32, u32, u32), String> {
        let at = *self
            .offsets
            .get(id as usize)
            .filter(|_| id != 0)
            .ok_or_else(|| format!("type id {id} out of range"))? as usize;
        Ok((
            at,
            u32_at(self.types, at)?,
            u32_at(self.types, at + 4)?,
            u32_at(self.types, at + 8)?,
        ))
    }

    fn name(&self, name_off: u32) -> &'a [u8] {
        let rest = self.strings.get(name_off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// Whether the string at `name_off` is `name`, without scanning for its
    /// end first (most kernel names differ from every root in byte one).
    fn name_is(&self, name_off: u32, name: &str) -> bool {
        let at = name_off as usize;
        let name = name.as_bytes();
        self.strings.get(at..at + name.len()) == Some(name)
            && self.strings.get(at + name.len()) == Some(&0)
    }

    /// Type ids a type refers to (members, target, element, parameters).
    fn refs(&self, id: u32) -> Result<Vec<u32>, String> {
        let (at, _, info, size_or_type) = self.header(id)?;
        let extra = at + TYPE_HEADER_LEN;
        let vlen = vlen_of(info);
        let mut out = Vec::new();
        match kind_of(info) {
            KIND_PTR | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
            | KIND_TYPE_TAG | KIND_VAR | KIND_DECL_TAG => out.push(size_or_type),
            KIND_ARRAY => {
                out.push(u32_at(self.types, extra)?);
                out.push(u32_at(self.types, extra + 4)?);
            }
            KIND_STRUCT | KIND_UNION => {
                for i in 0..vlen {
                    out.push(u32_at(self.types, extra + 12 * i + 4)?);
                }
            }
            KIND_FUNC_PROTO => {
                out.push(size_or_type);
                for i in 0..vlen {
                    out.push(u32_at(self.types, extra + 8 * i + 4)?);
                }
            }
            KIND_DATASEC => {
                for i in 0..vlen {
                    out.push(u32_at(self.types, extra + 12 * i)?);
                }
            }
            _ => {}
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Keep {
    No,
    /// A named struct/union without its members.
    Stub,
    Exact,
}

/// Writes strings into the new string section once each.
struct Strings<'a> {
    kernel: &'a Kernel<'a>,
    out: Vec<u8>,
    seen: HashMap<u32, u32>,
}

impl Strings<'_> {
    fn get(&mut self, name_off: u32) -> u32 {
        if name_off == 0 {
            return 0;
        }
        if let Some(&new) = self.seen.get(&name_off) {
            return new;
        }
        let new = self.out.len() as u32;
        self.out.extend_from_slice(self.kernel.name(name_off));
        self.out.push(0);
        self.seen.insert(name_off, new);
        new
    }
}

/// The two BTF blobs [`minimal`] makes.
pub(crate) struct Views {
    /// What CO-RE relocation needs, renumbered from 1.
    pub relocation: Vec<u8>,
    /// Only the attach points, at their kernel ids: what aya looks the
    /// `attach_btf_id` up in.
    pub attach: Vec<u8>,
    pub stats: Stats,
}

/// The minimal BTF views for `roots`, from the kernel's raw BTF.
pub(crate) fn minimal(raw: &[u8], roots: &Roots<'_>) -> Result<Views, String> {
    let kernel = Kernel::parse(raw)?;
    let n = kernel.count();

    // Roots by name: one pass over the kernel's types.
    let mut keep = vec![Keep::No; n + 1];
    let mut pinned: Vec<u32> = Vec::new();
    let mut full: Vec<u32> = Vec::new();
    for id in 1..=n as u32 {
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

    // The closure: roots in full, what they refer to as little as will do.
    let mut stack: Vec<u32> = full.iter().chain(&pinned).copied().collect();
    for &id in &full {
        keep[id as usize] = Keep::Exact;
    }
    let mut pending: Vec<u32> = Vec::new();
    for id in stack.drain(..) {
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

    // New ids for the relocation view: every kept type, in kernel order.
    let kept: Vec<u32> = (1..=n as u32)
        .filter(|&id| keep[id as usize] != Keep::No)
        .collect();
    let mut new_id = vec![0u32; n + 1];
    for (i, &id) in kept.iter().enumerate() {
        new_id[id as usize] = i as u32 + 1;
    }

    let mut strings = Strings {
        kernel: &kernel,
        out: vec![0],
        seen: HashMap::new(),
    };
    let remap = |id: u32| new_id[id as usize];
    let mut types: Vec<u8> = Vec::new();
    for &id in &kept {
        let (at, name_off, info, size_or_type) = kernel.header(id)?;
        let kind = kind_of(info);
        let name = strings.get(name_off);
        put(&mut types, name);
        if keep[id as usize] == Keep::Stub {
            put(&mut types, kind << 24);
            put(&mut types, size_or_type);
            continue;
        }
        put(&mut types, info);
        let refers = matches!(
            kind,
            KIND_PTR
                | KIND_TYPEDEF
                | KIND_VOLATILE
                | KIND_CONST
                | KIND_RESTRICT
                | KIND_FUNC
                | KIND_FUNC_PROTO
                | KIND_TYPE_TAG
                | KIND_VAR
                | KIND_DECL_TAG
        );
        put(
            &mut types,
            if refers {
                remap(size_or_type)
            } else {
                size_or_type
            },
        );
        let extra = at + TYPE_HEADER_LEN;
        let word = |i: usize| u32_at(kernel.types, extra + 4 * i);
        let vlen = vlen_of(info);
        match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => put(&mut types, word(0)?),
            KIND_ARRAY => {
                put(&mut types, remap(word(0)?));
                put(&mut types, remap(word(1)?));
                put(&mut types, word(2)?);
            }
            KIND_STRUCT | KIND_UNION => {
                for i in 0..vlen {
                    put(&mut types, strings.get(word(3 * i)?));
                    put(&mut types, remap(word(3 * i + 1)?));
                    put(&mut types, word(3 * i + 2)?);
                }
            }
            KIND_ENUM => {
                for i in 0..vlen {
                    put(&mut types, strings.get(word(2 * i)?));
                    put(&mut types, word(2 * i + 1)?);
                }
            }
            KIND_ENUM64 => {
                for i in 0..vlen {
                    put(&mut types, strings.get(word(3 * i)?));
                    put(&mut types, word(3 * i + 1)?);
                    put(&mut types, word(3 * i + 2)?);
                }
            }
            KIND_FUNC_PROTO => {
                for i in 0..vlen {
                    put(&mut types, strings.get(word(2 * i)?));
                    put(&mut types, remap(word(2 * i + 1)?));
                }
            }
            KIND_DATASEC => {
                for i in 0..vlen {
                    put(&mut types, remap(word(3 * i)?));
                    put(&mut types, word(3 * i + 1)?);
                    put(&mut types, word(3 * i + 2)?);
                }
            }
            _ => {}
        }
    }

    let relocation = blob(&types, &strings.out);

    // The attach view: each pinned type at its kernel id (name and kind
    // only), `const void` below it.
    let last = pinned.iter().copied().max().unwrap_or(0);
    let mut names = vec![0u8];
    let mut types: Vec<u8> = Vec::with_capacity(last as usize * TYPE_HEADER_LEN);
    for id in 1..=last {
        if pinned.contains(&id) {
            let (_, name_off, info, _) = kernel.header(id)?;
            put(&mut types, names.len() as u32);
            names.extend_from_slice(kernel.name(name_off));
            names.push(0);
            put(&mut types, info);
        } else {
            put(&mut types, 0);
            put(&mut types, KIND_CONST << 24);
        }
        put(&mut types, 0);
    }
    let attach = blob(&types, &names);

    let stats = Stats {
        kernel_bytes: raw.len(),
        kernel_types: n,
        kept_types: kept.len(),
        relocation_bytes: relocation.len(),
        attach_ids: last as usize,
    };
    Ok(Views {
        relocation,
        attach,
        stats,
    })
}

fn put(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

/// A BTF blob: header, type section, string section.
fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
    let mut blob = Vec::with_capacity(HEADER_LEN + types.len() + strings.len());
    blob.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
    blob.push(1); // version
    blob.push(0); // flags
    for v in [
        HEADER_LEN as u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        put(&mut blob, v);
    }
    blob.extend_from_slice(types);
    blob.extend_from_slice(strings);
    blob
}
