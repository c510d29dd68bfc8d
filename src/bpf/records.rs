//! The records the programs write, as `#[repr(C)]` mirrors of their C
//! structs, and their decoding from the bytes an iterator or the ring
//! buffer hands over.
//!
//! Each mirror has the C struct's fields, names and order: `struct
//! listener_rec` of `bpf/iter_tcp.bpf.c`, `struct task_file_rec` of
//! `bpf/owners.h` (both owner programs) and `struct listen_event` of
//! `bpf/watch.bpf.c`. The tests below check every mirror against the BTF of
//! each object that writes it (field names, offsets, sizes, and the size of
//! the whole): the C side keeps its record type in its object's BTF with an
//! unread `.rodata` global of that type.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::BpfError;

pub(super) const AF_INET: u16 = libc::AF_INET as u16;
pub(super) const AF_INET6: u16 = libc::AF_INET6 as u16;

/// A field of a record: its name, byte offset and size.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

mod sealed {
    pub trait Sealed {}
}

/// A field type any bytes of its size are a valid value of, with no padding
/// inside: the fixed-width integers and arrays of them. Sealed: the impls
/// below are all there are, so a `bool`, `char`, enum, struct or
/// reference field cannot be made one from outside this module.
pub(super) trait Pod: sealed::Sealed + Copy {}

macro_rules! pod_integers {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Pod for $t {}
    )*};
}
pod_integers!(u8, u16, u32, u64, i8, i16, i32, i64);

impl<T: Pod, const N: usize> sealed::Sealed for [T; N] {}
impl<T: Pod, const N: usize> Pod for [T; N] {}

/// A record the programs write.
///
/// # Safety
///
/// Only for `#[repr(C)]` structs whose fields are all [`Pod`], so that any
/// bytes of its size are a valid value ([`decode`] copies them in). The
/// `record!` macro is the one implementor and checks the fields at compile
/// time.
pub(super) unsafe trait Record: Copy {
    /// The C struct's name.
    #[cfg(test)]
    const C_NAME: &'static str;
    /// Every field, in order.
    #[cfg(test)]
    fn fields() -> Vec<Field>;
}

/// Declares a `#[repr(C)]` mirror of a C record struct and implements
/// [`Record`] for it: every field must be [`Pod`] (an integer or an array
/// of them), else it does not compile.
macro_rules! record {
    (
        $(#[$meta:meta])*
        struct $name:ident = $c_name:literal {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub(super) struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        // Every field is `Pod`: a field of any other type fails to compile.
        const _: fn() = || {
            fn assert_pod<T: Pod>() {}
            $(assert_pod::<$ty>();)*
        };
        // SAFETY: `#[repr(C)]`, and every field is `Pod` (asserted just
        // above), so any bytes of a field's size are a valid value of it and
        // any bytes of the struct's size a valid struct: implicit padding,
        // if a mirror had any, would stay padding in the copy and never be
        // read as a field (the production mirrors have none: explicit
        // `_pad` fields, offsets and size checked against the BTF).
        unsafe impl Record for $name {
            #[cfg(test)]
            const C_NAME: &'static str = $c_name;
            #[cfg(test)]
            fn fields() -> Vec<Field> {
                vec![$(Field {
                    name: stringify!($field).to_owned(),
                    offset: std::mem::offset_of!($name, $field),
                    size: std::mem::size_of::<$ty>(),
                }),*]
            }
        }
    };
}

record! {
    /// `struct listener_rec` of `bpf/iter_tcp.bpf.c`: one TCP listener.
    struct ListenerRec = "listener_rec" {
        /// v4: the first 4 bytes, network order.
        addr: [u8; 16],
        /// `sock_i_ino()`; 0 when there is no `struct socket`.
        inode: u64,
        /// `sk_uid`.
        uid: u32,
        family: u16,
        /// Host order.
        port: u16,
        /// `skc_reuse` (SO_REUSEADDR).
        reuse: u8,
        reuseport: u8,
        v6only: u8,
        _pad: [u8; 5],
    }
}

record! {
    /// `struct task_file_rec` of `bpf/owners.h`: one (socket inode, process,
    /// thread, fd). An inode of 0 is the fd walk saying it could not walk
    /// the table of `tgid`, why in `fd`.
    struct TaskFileRec = "task_file_rec" {
        inode: u64,
        tgid: u32,
        tid: u32,
        fd: u32,
        _pad: u32,
    }
}

record! {
    /// `struct listen_event` of `bpf/watch.bpf.c`: one socket entering or
    /// leaving LISTEN.
    struct ListenEventRec = "listen_event" {
        ktime_ns: u64,
        inode: u64,
        tgid: u32,
        tid: u32,
        comm: [u8; 16],
        /// v4: the first 4 bytes, network order.
        addr: [u8; 16],
        family: u16,
        /// Host order.
        port: u16,
        oldstate: u8,
        newstate: u8,
        reuseport: u8,
        _pad0: u8,
        /// Inode of the socket's network namespace, 0 if unknown.
        netns: u32,
        _pad: [u8; 4],
    }
}

/// The record at the start of `bytes`, if they hold a whole one.
pub(super) fn decode<R: Record>(bytes: &[u8]) -> Option<R> {
    if bytes.len() < size_of::<R>() {
        return None;
    }
    // SAFETY: at least `size_of::<R>()` readable bytes, read unaligned; any
    // bytes are a valid `R` (the contract of `Record`).
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<R>()) })
}

/// An iterator's output: records of one type back to back, nothing else.
pub(super) fn decode_all<R: Record>(raw: &[u8], program: &'static str) -> Result<Vec<R>, BpfError> {
    let size = size_of::<R>();
    if !raw.len().is_multiple_of(size) {
        return Err(BpfError::TornRecords {
            program,
            len: raw.len(),
            record: size,
        });
    }
    Ok(raw.chunks_exact(size).filter_map(decode).collect())
}

/// A record's address: IPv4 in the first 4 bytes for `AF_INET`, else IPv6.
pub(super) fn ip_addr(family: u16, addr: [u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    }
}

#[cfg(test)]
mod tests;
