use super::raw::*;
use super::selftest::listing;
use super::write::{blob, put};
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
    let kernel = RawBtf::parse(&views.relocation).unwrap();
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
