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
//! returns the attach points (name, kind, kernel id), and `bpf.rs` makes of
//! them a second, separate view with each at its kernel id and a filler at
//! every id below (~64,000). Keeping the two apart keeps those fillers out
//! of the relocation's search for candidates. [`Views`] is what
//! `btf_cache.rs` keeps per kernel.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    let kernel = Kernel::parse(raw)?;
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
fn find_roots(kernel: &Kernel<'_>, roots: &Roots<'_>) -> Result<(Vec<u32>, Vec<u32>), String> {
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
fn closure(kernel: &Kernel<'_>, full: &[u32], pinned: &[u32]) -> Result<Vec<Keep>, String> {
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

/// The relocation view: every kept type, in kernel order, renumbered from 1.
fn write_relocation(kernel: &Kernel<'_>, keep: &[Keep], kept: &[u32]) -> Result<Vec<u8>, String> {
    let mut new_id = vec![0u32; keep.len()];
    for (i, &id) in kept.iter().enumerate() {
        new_id[id as usize] = i as u32 + 1;
    }
    let mut strings = Strings {
        kernel,
        out: vec![0],
        seen: HashMap::new(),
    };
    let mut types: Vec<u8> = Vec::new();
    for &id in kept {
        let (_, name_off, info, size_or_type) = kernel.header(id)?;
        let name = strings.get(name_off);
        put(&mut types, name);
        if keep[id as usize] == Keep::Stub {
            put(&mut types, kind_of(info) << 24);
            put(&mut types, size_or_type);
        } else {
            write_exact(&mut types, &mut strings, &new_id, id)?;
        }
    }
    Ok(blob(&types, &strings.out))
}

/// Type `id` after its name: its `info`, and the rest as the kernel has
/// it, with type ids renumbered by `new_id` and strings moved to `strings`.
fn write_exact(
    types: &mut Vec<u8>,
    strings: &mut Strings<'_>,
    new_id: &[u32],
    id: u32,
) -> Result<(), String> {
    let kernel = strings.kernel;
    let (at, _, info, size_or_type) = kernel.header(id)?;
    let kind = kind_of(info);
    let remap = |id: u32| new_id[id as usize];
    put(types, info);
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
        types,
        if refers {
            remap(size_or_type)
        } else {
            size_or_type
        },
    );
    let extra = at + TYPE_HEADER_LEN;
    let word = |i: usize| u32_at(kernel.types, extra + 4 * i);
    let vlen = vlen_of(info);
    // Per member: which words are a string offset (S), a type id (T) or
    // copied as they are (V).
    let (layout, n): (&[Word], usize) = match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => (&[Word::V], 1),
        KIND_ARRAY => (&[Word::T, Word::T, Word::V], 1),
        KIND_STRUCT | KIND_UNION => (&[Word::S, Word::T, Word::V], vlen),
        KIND_ENUM => (&[Word::S, Word::V], vlen),
        KIND_ENUM64 => (&[Word::S, Word::V, Word::V], vlen),
        KIND_FUNC_PROTO => (&[Word::S, Word::T], vlen),
        KIND_DATASEC => (&[Word::T, Word::V, Word::V], vlen),
        _ => (&[], 0),
    };
    for i in 0..n * layout.len() {
        let value = word(i)?;
        put(
            types,
            match layout[i % layout.len()] {
                Word::S => strings.get(value),
                Word::T => remap(value),
                Word::V => value,
            },
        );
    }
    Ok(())
}

/// What a word after a type's header holds (see [`write_exact`]).
#[derive(Clone, Copy)]
enum Word {
    S,
    T,
    V,
}

/// A BTF blob with only `points`, each at its kernel id (name and kind),
/// and a 12-byte `const void` at every other id below the last: what aya
/// can look a typedef's `attach_btf_id` up in (aya-obj 0.6 has no public
/// constructor of a typedef to build it with, as `bpf.rs` builds the view
/// of functions).
pub(crate) fn attach_blob(points: &[AttachPoint]) -> Vec<u8> {
    let last = points.iter().map(|point| point.id).max().unwrap_or(0);
    let mut names = vec![0u8];
    let mut types: Vec<u8> = Vec::with_capacity(last as usize * TYPE_HEADER_LEN);
    for id in 1..=last {
        if let Some(point) = points.iter().find(|point| point.id == id) {
            put(&mut types, names.len() as u32);
            names.extend_from_slice(point.name.as_bytes());
            names.push(0);
            put(&mut types, point.info);
        } else {
            put(&mut types, 0);
            put(&mut types, KIND_CONST << 24);
        }
        put(&mut types, 0);
    }
    blob(&types, &names)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a BTF blob from types given as (name, kind, vlen, size or
    /// type, words after the header), names as text; a word of
    /// `NAME + i` is the offset of the `i`th member name in `names`.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        count: u32,
    }

    impl Builder {
        pub fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                count: 0,
            }
        }

        pub fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }

        /// Adds a type; returns its id.
        pub fn add(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            size_or_type: u32,
            extra: &[u32],
        ) -> u32 {
            let name = self.name(name);
            put(&mut self.types, name);
            put(&mut self.types, (kind << 24) | vlen);
            put(&mut self.types, size_or_type);
            for &word in extra {
                put(&mut self.types, word);
            }
            self.count += 1;
            self.count
        }

        pub fn blob(&self) -> Vec<u8> {
            blob(&self.types, &self.strings)
        }
    }

    /// A small kernel: the ids and what [`minimal`] must keep of them.
    pub(crate) fn small_kernel() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.add("int", KIND_INT, 0, 4, &[32]); // 1
        let (a, p, u) = (b.name("a"), b.name("p"), b.name("u"));
        // 2: the root, with a pointer to `other` and an anonymous union.
        let root = b.add(
            "sock_common",
            KIND_STRUCT,
            3,
            16,
            &[a, int, 0, p, 3, 64, u, 6, 32],
        );
        let ptr = b.add("", KIND_PTR, 0, 4, &[]); // 3
        let x = b.name("x");
        let other = b.add("other", KIND_STRUCT, 1, 4, &[x, int, 0]); // 4: a stub
        let y = b.name("y");
        let unrelated = b.add("unrelated", KIND_STRUCT, 1, 4, &[y, int, 0]); // 5: dropped
        let union = b.add("", KIND_UNION, 1, 4, &[x, int, 0]); // 6: in full
        let proto = b.add("", KIND_FUNC_PROTO, 1, int, &[0, ptr]); // 7
        let func = b.add("bpf_iter_x", KIND_FUNC, 1, proto, &[]); // 8
        let typedef = b.add("btf_trace_y", KIND_TYPEDEF, 0, ptr, &[]); // 9
        let late = b.add("bpf_iter_z", KIND_FUNC, 0, proto, &[]); // 10
        assert_eq!(
            (root, ptr, other, unrelated, union, func, typedef, late),
            (2, 3, 4, 5, 6, 8, 9, 10)
        );
        b.blob()
    }

    pub(crate) const SMALL_ROOTS: Roots<'static> = Roots {
        structs: &["sock_common"],
        funcs: &["bpf_iter_x", "bpf_iter_z"],
        typedefs: &["btf_trace_y"],
    };

    /// (name, kind, vlen) of every type of a BTF blob.
    fn listing(raw: &[u8]) -> Vec<(String, u32, usize)> {
        let kernel = Kernel::parse(raw).unwrap();
        (1..=kernel.count() as u32)
            .map(|id| {
                let (_, name_off, info, _) = kernel.header(id).unwrap();
                let name = String::from_utf8(kernel.name(name_off).to_vec()).unwrap();
                (name, kind_of(info), vlen_of(info))
            })
            .collect()
    }

    #[test]
    fn keeps_roots_in_full_and_what_they_point_to_as_stubs() {
        let views = minimal(&small_kernel(), &SMALL_ROOTS).unwrap();
        let kept = listing(&views.relocation);
        let want: Vec<(String, u32, usize)> = [
            ("int", KIND_INT, 0),
            ("sock_common", KIND_STRUCT, 3),
            ("", KIND_PTR, 0),
            ("other", KIND_STRUCT, 0), // a stub: no members
            ("", KIND_UNION, 1),
            ("", KIND_FUNC_PROTO, 1),
            ("bpf_iter_x", KIND_FUNC, 1),
            ("btf_trace_y", KIND_TYPEDEF, 0),
            ("bpf_iter_z", KIND_FUNC, 0),
        ]
        .into_iter()
        .map(|(n, k, v)| (n.to_string(), k, v))
        .collect();
        assert_eq!(kept, want);
        assert_eq!(
            views.attach,
            vec![
                AttachPoint {
                    id: 8,
                    info: (KIND_FUNC << 24) | 1,
                    name: "bpf_iter_x".into()
                },
                AttachPoint {
                    id: 9,
                    info: KIND_TYPEDEF << 24,
                    name: "btf_trace_y".into()
                },
                AttachPoint {
                    id: 10,
                    info: KIND_FUNC << 24,
                    name: "bpf_iter_z".into()
                },
            ]
        );
        assert!(views.attach[0].is_func() && views.attach[0].linkage() == 1);
        assert!(views.attach[1].is_typedef());
        assert_eq!(
            views.stats,
            Stats {
                kernel_bytes: small_kernel().len(),
                kernel_types: 10,
                kept_types: 9,
                relocation_bytes: views.relocation.len(),
                attach_ids: 10,
            }
        );
        // aya takes it, and finds the members by name.
        let btf = aya::Btf::parse(&views.relocation, aya::Endianness::default()).unwrap();
        let id = btf
            .id_by_type_name_kind("sock_common", aya_obj::btf::BtfKind::Struct)
            .unwrap();
        assert_eq!(id, 2);
    }

    #[test]
    fn renumbers_references_to_the_kept_types() {
        let views = minimal(&small_kernel(), &SMALL_ROOTS).unwrap();
        let kernel = Kernel::parse(&views.relocation).unwrap();
        // sock_common's members: a: int (1), p: the pointer (3), u: the
        // union, 6 in the kernel and 5 here.
        assert_eq!(kernel.refs(2).unwrap(), vec![1, 3, 5]);
        // The pointer points at the stub of `other`, still 4.
        assert_eq!(kernel.refs(3).unwrap(), vec![4]);
        // The functions' prototype moved from 7 to 6.
        assert_eq!(kernel.refs(7).unwrap(), vec![6]);
        assert_eq!(kernel.refs(9).unwrap(), vec![6]);
        let (_, name_off, _, _) = kernel.header(2).unwrap();
        assert!(kernel.name_is(name_off, "sock_common"));
    }

    #[test]
    fn a_missing_attach_point_is_an_error() {
        for (roots, want) in [
            (
                Roots {
                    funcs: &["bpf_iter_nope"],
                    ..SMALL_ROOTS
                },
                "the kernel has no function bpf_iter_nope",
            ),
            (
                Roots {
                    typedefs: &["bpf_iter_x"],
                    ..SMALL_ROOTS
                },
                "the kernel has no typedef bpf_iter_x",
            ),
        ] {
            assert_eq!(minimal(&small_kernel(), &roots).unwrap_err(), want);
        }
    }

    #[test]
    fn malformed_btf_is_an_error_not_a_panic() {
        let raw = small_kernel();
        assert!(minimal(&raw[..10], &SMALL_ROOTS).is_err());
        let mut bad_magic = raw.clone();
        bad_magic[0] ^= 0xff;
        assert!(minimal(&bad_magic, &SMALL_ROOTS).is_err());
        for cut in (HEADER_LEN..raw.len()).step_by(7) {
            let _ = minimal(&raw[..cut], &SMALL_ROOTS);
        }
    }

    #[test]
    fn the_attach_blob_has_each_point_at_its_id() {
        let views = minimal(&small_kernel(), &SMALL_ROOTS).unwrap();
        let blob = attach_blob(&views.attach);
        assert_eq!(
            listing(&blob),
            [
                ("", KIND_CONST, 0),
                ("", KIND_CONST, 0),
                ("", KIND_CONST, 0),
                ("", KIND_CONST, 0),
                ("", KIND_CONST, 0),
                ("", KIND_CONST, 0),
                ("", KIND_CONST, 0),
                ("bpf_iter_x", KIND_FUNC, 1),
                ("btf_trace_y", KIND_TYPEDEF, 0),
                ("bpf_iter_z", KIND_FUNC, 0),
            ]
            .map(|(n, k, v)| (n.to_string(), k, v))
        );
    }

    /// The kernel's own BTF, where it can be read (no privilege needed).
    #[test]
    fn the_running_kernel_has_every_root() {
        let Ok(raw) = std::fs::read(crate::bpf::KERNEL_BTF) else {
            eprintln!("skipped: no kernel BTF at {}", crate::bpf::KERNEL_BTF);
            return;
        };
        let views = minimal(&raw, &crate::bpf::BTF_ROOTS).unwrap();
        let names: Vec<&str> = views.attach.iter().map(|p| p.name.as_str()).collect();
        for name in [
            "bpf_iter_tcp",
            "bpf_iter_task_file",
            "btf_trace_inet_sock_set_state",
        ] {
            assert!(names.contains(&name), "{names:?}");
        }
        let kept = listing(&views.relocation);
        for root in crate::bpf::BTF_ROOTS.structs {
            assert!(
                kept.iter()
                    .any(|(n, k, v)| n == root && *k == KIND_STRUCT && *v > 0),
                "{root} not kept in full"
            );
        }
        assert_eq!(views.stats.kept_types, kept.len());
        assert!(
            views.relocation.len() < 64 * 1024,
            "{}",
            views.relocation.len()
        );
    }
}
