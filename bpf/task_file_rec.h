/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* task_file_rec.h - the record of both owner programs (iter_task_fds.bpf.c
 * and its fallback iter_task_file.bpf.c): one (socket inode, process,
 * thread, fd). */
#ifndef SOCKCHECK_TASK_FILE_REC_H
#define SOCKCHECK_TASK_FILE_REC_H
#include "sockcheck.h"

/* Must match `TASK_FILE_RECORD` in src/bpf.rs (24 bytes). */
struct task_file_rec {
	__u64 inode;
	__u32 tgid;
	__u32 tid;
	__u32 fd;
	__u32 _pad;
};
_Static_assert(sizeof(struct task_file_rec) == 24, "record layout is shared with src/bpf.rs");

#endif
