/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* owners.h - what both owner programs (iter_task_fds.bpf.c and its
 * fallback iter_task_file.bpf.c) share: the set of wanted socket inodes and
 * the record of one (socket inode, process, thread, fd). */
#ifndef SOCKCHECK_OWNERS_H
#define SOCKCHECK_OWNERS_H
#include "sockcheck.h"

/* The wanted socket inodes (a set: the value is unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);    /* resized by userspace before load */
	__type(key, __u64);           /* socket inode */
	__type(value, __u8);
} inodes SEC(".maps");

/* Mirrored by `TaskFileRec` in src/bpf/records.rs, whose test checks it
 * against both objects' BTF (field names, offsets, sizes). */
struct task_file_rec {
	__u64 inode;
	__u32 tgid;
	__u32 tid;
	__u32 fd;
	__u32 _pad;
};
_Static_assert(sizeof(struct task_file_rec) == 24, "record layout is shared with src/bpf/records.rs");

/* Never read: keeps the record type in each object's BTF for that test. */
const volatile struct task_file_rec task_file_rec_btf = {};

#endif
