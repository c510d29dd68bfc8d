//! A check of [`minimal`] on the running kernel's BTF, for `tests/it`
//! (through [`crate::selftest`]): a kernel may have none, and a unit test
//! cannot report that as a skip. It returns `Err(why)` when there is none
//! to read, and panics on a mismatch. No privilege needed.

use super::minimal;
use super::raw::{KIND_STRUCT, RawBtf, kind_of, vlen_of};
use crate::bpf::kernel_btf::{BTF_ROOTS, selftest::running_kernels_btf};

/// (name, kind, vlen) of every type of a BTF blob.
pub(in crate::bpf) fn listing(raw: &[u8]) -> Vec<(String, u32, usize)> {
    let kernel = RawBtf::parse(raw).unwrap();
    (1..=kernel.count() as u32)
        .map(|id| {
            let (_, name_off, info, _) = kernel.header(id).unwrap();
            let name = String::from_utf8(kernel.name(name_off).to_vec()).unwrap();
            (name, kind_of(info), vlen_of(info))
        })
        .collect()
}

/// The views of the running kernel keep every root: the attach points of
/// the programs, and each root struct in full, in under 64 KB.
pub fn the_running_kernel_has_every_root() -> Result<(), String> {
    let raw = running_kernels_btf()?;
    let views = minimal(&raw, &BTF_ROOTS).unwrap();
    let names: Vec<&str> = views.attach.iter().map(|p| p.name.as_str()).collect();
    for name in [
        "bpf_iter_tcp",
        "bpf_iter_task_file",
        "btf_trace_inet_sock_set_state",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
    let kept = listing(&views.relocation);
    for root in BTF_ROOTS.structs {
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
    Ok(())
}
