use aya_obj::Object;

use super::*;
use crate::bpf::btf_view::raw::RawBtf;
use crate::bpf::loader::{
    iter_task_fds_object, iter_task_file_object, iter_tcp_object, watch_object,
};

/// `R` against the struct of its name in `object`'s BTF: the same fields,
/// in the same order, at the same offsets, of the same sizes, and the same
/// size in all.
fn check<R: Record>(object: &[u8]) -> Result<(), String> {
    let parsed = Object::parse(object).map_err(|e| e.to_string())?;
    let btf = parsed.btf.ok_or("the object has no BTF")?.to_bytes();
    let c = RawBtf::parse(&btf)?.struct_layout(R::C_NAME)?;
    let rust: Vec<(String, usize, usize)> = R::fields()
        .into_iter()
        .map(|f| (f.name, f.offset, f.size))
        .collect();
    if c.members != rust {
        return Err(format!(
            "struct {}: (field, offset, size) in C {:?}, in Rust {rust:?}",
            R::C_NAME,
            c.members
        ));
    }
    if c.size != size_of::<R>() {
        return Err(format!(
            "struct {}: {} bytes in C, {} in Rust",
            R::C_NAME,
            c.size,
            size_of::<R>()
        ));
    }
    Ok(())
}

#[test]
fn each_record_mirrors_its_c_struct_in_every_object_that_writes_it() {
    check::<ListenerRec>(iter_tcp_object()).unwrap();
    check::<TaskFileRec>(iter_task_fds_object()).unwrap();
    check::<TaskFileRec>(iter_task_file_object()).unwrap();
    check::<ListenEventRec>(watch_object()).unwrap();
}

record! {
    /// `task_file_rec` with two fields of one size swapped: the same
    /// offsets and sizes, other names.
    struct Swapped = "task_file_rec" {
        inode: u64,
        tid: u32,
        tgid: u32,
        fd: u32,
        _pad: u32,
    }
}

record! {
    /// `task_file_rec` with a narrower `fd`: the same size in all.
    struct Narrow = "task_file_rec" {
        inode: u64,
        tgid: u32,
        tid: u32,
        fd: u16,
        _pad0: u16,
        _pad: u32,
    }
}

record! {
    /// `listener_rec` one byte of padding short.
    struct Short = "listener_rec" {
        addr: [u8; 16],
        inode: u64,
        uid: u32,
        family: u16,
        port: u16,
        reuse: u8,
        reuseport: u8,
        v6only: u8,
        _pad: [u8; 4],
    }
}

#[test]
fn a_mirror_that_differs_in_names_field_sizes_or_size_fails_the_check() {
    let swapped = check::<Swapped>(iter_task_file_object()).unwrap_err();
    assert!(swapped.contains("(\"tid\", 8, 4)"), "{swapped}");
    let narrow = check::<Narrow>(iter_task_fds_object()).unwrap_err();
    assert!(narrow.contains("(\"fd\", 16, 2)"), "{narrow}");
    let short = check::<Short>(iter_tcp_object()).unwrap_err();
    assert!(short.contains("(\"_pad\", 35, 4)"), "{short}");
    let absent = check::<ListenEventRec>(iter_tcp_object()).unwrap_err();
    assert_eq!(absent, "no struct listen_event");
}

#[test]
fn a_record_decodes_from_unaligned_bytes_and_not_from_too_few() {
    let rec = TaskFileRec {
        inode: 0x0102_0304_0506_0708,
        tgid: 42,
        tid: 43,
        fd: 7,
        _pad: 0,
    };
    let mut bytes = vec![0xff];
    for word in [rec.inode.to_ne_bytes().as_slice(), &42u32.to_ne_bytes()] {
        bytes.extend_from_slice(word);
    }
    for word in [43u32, 7, 0] {
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    assert_eq!(decode::<TaskFileRec>(&bytes[1..]), Some(rec));
    assert_eq!(decode::<TaskFileRec>(&bytes[1..24]), None);
    let two = [&bytes[1..], &bytes[1..]].concat();
    assert_eq!(decode_all::<TaskFileRec>(&two, "test").unwrap(), [rec, rec]);
    let torn = decode_all::<TaskFileRec>(&two[1..], "test").unwrap_err();
    assert_eq!(
        torn.to_string(),
        "test produced 47 bytes, not a whole number of 24-byte records"
    );
}
