// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * iter/task_file: one record per (task, fd) whose file is a socket with an
 * inode in the `inodes` map. The kernel visits a thread only when its fd
 * table differs from its group leader's, so normally only the leader shows
 * up; when the leader has exited (zombie, no files) every live thread does.
 * Ids are those of the reader's pid namespace (see task_ids_for_reader()).
 */
#include "sockcheck.h"
#include "pidns.h"
#include "owners.h"

SEC("iter/task_file")
int sockcheck_iter_task_file(struct bpf_iter__task_file *ctx)
{
	struct file *file = ctx->file;
	struct task_struct *task = ctx->task;
	struct task_file_rec rec = {};

	if (!file || !task)
		return 0;
	struct inode *inode = file->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFSOCK)
		return 0;
	rec.inode = inode->i_ino;
	if (!bpf_map_lookup_elem(&inodes, &rec.inode))
		return 0;
	task_ids_for_reader(task, &rec.tgid, &rec.tid);
	rec.fd = ctx->fd;
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
