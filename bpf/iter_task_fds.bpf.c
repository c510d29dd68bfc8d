// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * iter/task: one record per (task, fd) whose file is a socket with a
 * wanted inode, the records iter/task_file.bpf.c gives, found by walking
 * each task's fd table here instead of having iter/task_file hand over
 * every open file (fget/fput and a program run per file: ~25 ms for 90,000
 * fds before any work; this walk takes ~17 ms in all).
 *
 * The tasks walked are exactly those iter/task_file visits: a thread only
 * when its fd table differs from its group leader's, so normally only the
 * leader shows up; when the leader has exited (zombie, no files) every live
 * thread does. Ids are those of the reader's pid namespace (see
 * task_ids_for_reader()).
 *
 * The walk: the words of fdt->open_fds, and for each the fd[] entries of
 * its set bits, BATCH at a time (bpf_loop, 5.17+). A socket is a file
 * whose f_op is socket_file_ops, learnt from a socket of the reader's own
 * (reader_socket_fd); only then are its inode and i_ino read. Everything is
 * read with bpf_probe_read_kernel: the verifier takes the fd array and the
 * bitmap as plain numbers.
 *
 * A record of inode 0 is not a socket but a failure, its fd says which
 * (WALK_*); userspace then uses iter/task_file.
 */
#include "sockcheck.h"
#include "pidns.h"
#include "owners.h"

/* Up to FEW_INODES wanted inodes, written by userspace before load, are
 * compared here instead of looked up in the map (a hash lookup per socket
 * file costs more than a few compares); unused slots are 0, which no socket
 * inode is. With more, use_inode_map is set and the map has them all. */
#define FEW_INODES 8
volatile const __u64 few_inodes[FEW_INODES];
volatile const __u8 use_inode_map;

static __always_inline int wanted_inode(__u64 ino)
{
	if (use_inode_map)
		return bpf_map_lookup_elem(&inodes, &ino) != 0;
#pragma clang loop unroll(full)
	for (int i = 0; i < FEW_INODES; i++)
		if (few_inodes[i] == ino)
			return 1;
	return 0;
}


/* An fd of the reader (sockcheck itself, the task that reads the
 * iterator) on a socket, written by userspace before load: its file's f_op
 * is socket_file_ops, which every socket's file has and no other file. */
volatile const __s32 reader_socket_fd = -1;

#define WALK_TOO_LONG 1           /* a table needs more than one bpf_loop */
#define WALK_NO_SOCKET_FOPS 2     /* reader_socket_fd is not a socket */

/* Up to BATCH fds are looked at together: their files are independent
 * loads, which the CPU overlaps (each file, and each socket's inode, is a
 * cache miss: most of the cost of the walk). */
#define BATCH 4

/* A walk over one fd table: only numbers, so that a global function can
 * take it (as memory) and change it. */
struct walk {
	__u64 fd;                     /* fdt->fd: struct file *[max_fds] */
	__u64 open_fds;               /* fdt->open_fds: unsigned long[] */
	__u64 socket_fops;            /* see socket_fops() */
	__u64 word;                   /* bits of open_fds not walked yet ... */
	__u32 base;                   /* ... the fd of its bit 0 */
	__u32 next_word;              /* index in open_fds of the next word */
	__u32 words;                  /* words in open_fds */
	__u32 max_fds;
	__u32 tgid;
	__u32 tid;
	__u64 zero;                   /* 0, see walk_step() */
	struct task_file_rec out[BATCH];   /* records of the last step */
};

/* Index of the lowest set bit of x (x != 0), without a table or a branch:
 * BPF has no ctz instruction (and clang 14 crashes lowering
 * __builtin_ctzll for it), so count the bits below it. */
static __always_inline __u32 lowest_bit(__u64 x)
{
	x = (x & -x) - 1;
	x -= (x >> 1) & 0x5555555555555555ULL;
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

/* Word `x` of open_fds minus its lowest set bit; that bit's fd-array entry
 * address in *slot (0 if x is empty or the fd is past max_fds), its fd in
 * *nr. Branch-free, so it adds no paths for the verifier. */
static __always_inline __u64 take_fd(const struct walk *w, __u64 x, __u64 *slot, __u32 *nr)
{
	__u64 fd = w->base + lowest_bit(x);
	__u64 ok = ((x | -x) >> 63) & ((fd - w->max_fds) >> 63);   /* x && fd < max_fds */

	*nr = fd;
	*slot = (w->fd + fd * sizeof(struct file *)) & -ok;
	return x & (x - 1);
}

/* One step of a walk: loads the next word of open_fds, or looks at its
 * next BATCH open fds. Returns -1 when the table is done, else a mask of
 * the entries of w->out that are records of wanted sockets.
 *
 * Global, not static, so the verifier checks it once, on its own: to the
 * bpf_loop callback that calls it, *w is just memory it changed, and the
 * verifier is done with that callback in two passes. Inside, every value
 * starts as w->zero, a 0 the verifier cannot see: it then never learns
 * which way a branch goes from a constant, and the paths of the BATCH fds
 * merge instead of multiplying. */
__attribute__((noinline)) int walk_step(struct walk *w)
{
	__u64 slot[BATCH], file[BATCH], fops[BATCH], inode[BATCH], ino[BATCH];
	__u32 nr[BATCH];
	int hits = 0;

	if (!w)
		return -1;
	if (!w->word) {
		if (w->next_word >= w->words ||
		    bpf_probe_read_kernel(&w->word, sizeof(w->word),
					  (const void *)w->open_fds + (__u64)w->next_word * 8))
			return -1;
		w->base = w->next_word * 64;
		w->next_word++;
		return 0;
	}
	__u64 word = w->word;
#pragma clang loop unroll(full)
	for (int k = 0; k < BATCH; k++) {
		word = take_fd(w, word, &slot[k], &nr[k]);
		inode[k] = ino[k] = w->zero;
	}
	w->word = word;
	/* Phase by phase, so that the BATCH cache misses of a phase are in
	 * flight together. The first two read for every entry (address 0,
	 * past the end of a word, fails fast and yields 0): fewer branches,
	 * fewer paths for the verifier. */
#pragma clang loop unroll(full)
	for (int k = 0; k < BATCH; k++)
		bpf_probe_read_kernel(&file[k], sizeof(file[k]), (const void *)slot[k]);
#pragma clang loop unroll(full)
	for (int k = 0; k < BATCH; k++)
		READ_INTO(&fops[k], (struct file *)file[k], f_op);
#pragma clang loop unroll(full)
	for (int k = 0; k < BATCH; k++)
		if (fops[k] == w->socket_fops) {
			READ_INTO(&inode[k], (struct file *)file[k], f_inode);
			READ_INTO(&ino[k], (struct inode *)inode[k], i_ino);
		}
#pragma clang loop unroll(full)
	for (int k = 0; k < BATCH; k++) {
		w->out[k].inode = ino[k];
		w->out[k].tgid = w->tgid;
		w->out[k].tid = w->tid;
		w->out[k].fd = nr[k];
		w->out[k]._pad = 0;
		if (inode[k] && ino[k] && wanted_inode(ino[k]))
			hits |= 1 << k;
	}
	return hits;
}

/* Walk state and where its records go: the bpf_loop callback's ctx. */
struct walk_ctx {
	struct seq_file *seq;
	struct walk w;
};

/* bpf_loop callback: one step, and its records. Returns 1 (stop) when the
 * table is done. */
static long walk_callback(__u64 i, void *ctx)
{
	struct walk_ctx *c = ctx;
	int hits = walk_step(&c->w);

	if (hits < 0)
		return 1;
#pragma clang loop unroll(full)
	for (int k = 0; k < BATCH; k++)
		if (hits & (1 << k))
			bpf_seq_write(c->seq, &c->w.out[k], sizeof(c->w.out[k]));
	return 0;
}

#define MAX_LOOPS (1 << 23)       /* BPF_MAX_LOOPS */

/* The fd table of `files`: 0 and the fd array, the open_fds bitmap and
 * max_fds in *t, or -1 if there is none.
 *
 * Pointers are read with bpf_probe_read_kernel, not loaded directly (as
 * task->files): each direct load of a pointer member costs the verifier
 * ~1.5 ms on 6.18, against ~0.01 ms for a helper call. */
struct fd_table {
	const void *fd;               /* fdt->fd: struct file *[max_fds] */
	const void *open_fds;         /* fdt->open_fds: unsigned long[] */
	__u32 max_fds;
};

static __always_inline int fd_table(const struct files_struct *files, struct fd_table *t)
{
	struct fdtable *fdt = 0;

	if (!files || READ_INTO(&fdt, files, fdt) || !fdt)
		return -1;
	if (READ_INTO(&t->max_fds, fdt, max_fds) || READ_INTO(&t->fd, fdt, fd) ||
	    READ_INTO(&t->open_fds, fdt, open_fds))
		return -1;
	return t->max_fds && t->fd && t->open_fds ? 0 : -1;
}

/* socket_file_ops, learnt from the reader's own socket (see
 * reader_socket_fd); NULL if that fd is not a socket. */
static __always_inline const void *socket_fops(void)
{
	const struct task_struct *reader = (const void *)bpf_get_current_task();
	struct files_struct *files = 0;
	struct file *file = 0;
	struct inode *inode = 0;
	const void *fops = 0;
	struct fd_table t = {};
	__u16 mode = 0;

	if (READ_INTO(&files, reader, files) || fd_table(files, &t) ||
	    reader_socket_fd < 0 || reader_socket_fd >= t.max_fds)
		return 0;
	if (bpf_probe_read_kernel(&file, sizeof(file), t.fd + reader_socket_fd * sizeof(file)) ||
	    !file || READ_INTO(&fops, file, f_op) || READ_INTO(&inode, file, f_inode) || !inode)
		return 0;
	if (READ_INTO(&mode, inode, i_mode) || (mode & S_IFMT) != S_IFSOCK)
		return 0;
	return fops;
}

/* Emits a record of inode 0: the walk failed, `why` is a WALK_*. */
static __always_inline void walk_failed(struct seq_file *seq, const struct walk *w, __u32 why)
{
	struct task_file_rec rec = { .tgid = w->tgid, .tid = w->tid, .fd = why };

	bpf_seq_write(seq, &rec, sizeof(rec));
}

/* iter/task_file's choice of tasks: a thread that is not its group's
 * leader (thread_group_leader(): exit_signal >= 0) and shares the leader's
 * fd table is skipped, its files are the leader's. Returns the task's
 * files, NULL if it is skipped or has none. */
static __always_inline const struct files_struct *own_files(const struct task_struct *task)
{
	struct files_struct *files = 0, *leader_files = 0;
	struct task_struct *leader = 0;
	int exit_signal = 0;

	if (READ_INTO(&files, task, files) || !files || READ_INTO(&exit_signal, task, exit_signal))
		return 0;
	if (exit_signal >= 0)
		return files;
	if (READ_INTO(&leader, task, group_leader) || !leader ||
	    READ_INTO(&leader_files, leader, files))
		return 0;
	return files == leader_files ? 0 : files;
}

SEC("iter/task")
int sockcheck_iter_task_fds(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	struct walk_ctx c = {};
	struct fd_table t = {};

	if (!task || fd_table(own_files(task), &t))
		return 0;
	c.seq = ctx->meta->seq;
	task_ids_for_reader(task, &c.w.tgid, &c.w.tid);
	c.w.socket_fops = (__u64)socket_fops();
	if (!c.w.socket_fops) {
		walk_failed(c.seq, &c.w, WALK_NO_SOCKET_FOPS);
		return 0;
	}
	c.w.fd = (__u64)t.fd;
	c.w.open_fds = (__u64)t.open_fds;
	c.w.max_fds = t.max_fds;
	c.w.words = (t.max_fds + 63) / 64;
	/* One step per BATCH open fds and per word of open_fds: a bpf_loop
	 * (BPF_MAX_LOOPS steps) walks tables of up to some 30M open fds. */
	if (bpf_loop(MAX_LOOPS, walk_callback, &c, 0) >= MAX_LOOPS)
		walk_failed(c.seq, &c.w, WALK_TOO_LONG);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
