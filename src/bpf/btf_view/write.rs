//! Writing BTF blobs: the relocation view of the kept kernel types, and
//! the attach blob.

use std::collections::HashMap;

use super::raw::*;
use super::{AttachPoint, Keep};

/// Writes strings into the new string section once each.
struct Strings<'a> {
    kernel: &'a RawBtf<'a>,
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

/// The relocation view: every kept type, in kernel order, renumbered from 1.
pub(super) fn write_relocation(
    kernel: &RawBtf<'_>,
    keep: &[Keep],
    kept: &[u32],
) -> Result<Vec<u8>, String> {
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
/// constructor of a typedef to build it with, as `kernel_btf.rs` builds the view
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

pub(super) fn put(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

/// A BTF blob: header, type section, string section.
pub(super) fn blob(types: &[u8], strings: &[u8]) -> Vec<u8> {
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
