/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* pidns.h - task ids as the reader sees them. task_struct's pid/tgid are
 * the init namespace's; a reader in a container needs the numbers of its
 * own pid namespace, found by matching the namespace inode along
 * task->thread_pid->numbers[0..level]. */
#ifndef SOCKCHECK_PIDNS_H
#define SOCKCHECK_PIDNS_H
#include "sockcheck.h"

#define MAX_PID_NS_LEVEL 32

/* Inode of the reader's pid namespace (stat /proc/self/ns/pid), written by
 * userspace before load; 0 = report global (init namespace) ids. */
volatile const __u32 pidns_inum;

/* The number of `pid` in the namespace whose inode is pidns_inum (what
 * getpid()/gettid() return there), 0 if not visible there. */
static __attribute__((noinline)) __u32 pid_nr_in_ns(const struct pid *pid)
{
	unsigned int level = 0;

	if (!pid || READ_INTO(&level, pid, level))
		return 0;
#pragma clang loop unroll(disable)
	for (int i = 0; i <= MAX_PID_NS_LEVEL; i++) {
		const struct upid *upid = &pid->numbers[i];
		struct pid_namespace *ns = 0;
		unsigned int inum = 0;
		int nr = 0;

		if (i > level)
			break;
		READ_INTO(&ns, upid, ns);
		if (!ns || READ_INTO(&inum, ns, ns.inum) || inum != pidns_inum)
			continue;
		READ_INTO(&nr, upid, nr);
		return nr;
	}
	return 0;
}

/* The number of `pid` at `level` if the namespace there is the reader's, as
 * the kernel's pid_nr_ns(): no walk over the levels. */
static __always_inline __u32 pid_nr_at_level(const struct pid *pid, unsigned int level)
{
	const struct upid *upid;
	struct pid_namespace *ns = 0;
	unsigned int deepest = 0, inum = 0;
	int nr = 0;

	if (!pid || level > MAX_PID_NS_LEVEL || READ_INTO(&deepest, pid, level) || deepest < level)
		return 0;
	upid = &pid->numbers[level];
	if (READ_INTO(&ns, upid, ns) || !ns || READ_INTO(&inum, ns, ns.inum) ||
	    inum != pidns_inum || READ_INTO(&nr, upid, nr))
		return 0;
	return nr;
}

/* tgid and tid of `task` as seen from the reader's pid namespace, for an
 * iterator: its program runs in the reader's read(), so the current task
 * is the reader, and the level of its own pid is its namespace's level.
 * With that, no loop over the levels for the verifier to follow (20-40 ms
 * a load in a container, see pid_nr_in_ns()). */
static __always_inline void task_ids_for_reader(const struct task_struct *task, __u32 *tgid,
						__u32 *tid)
{
	const struct task_struct *reader = (const struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = 0;
	struct pid *pid = 0;
	unsigned int level = 0;

	if (!pidns_inum) {
		READ_INTO((__s32 *)tgid, task, tgid);
		READ_INTO((__s32 *)tid, task, pid);
		return;
	}
	*tgid = *tid = 0;
	if (READ_INTO(&pid, reader, thread_pid) || !pid || READ_INTO(&level, pid, level))
		return;
	pid = 0;
	READ_INTO(&pid, task, thread_pid);
	*tid = pid_nr_at_level(pid, level);
	READ_INTO(&leader, task, group_leader);
	pid = 0;
	if (leader)
		READ_INTO(&pid, leader, thread_pid);
	*tgid = pid_nr_at_level(pid, level);
}

/* tgid and tid of `task` as seen from the reader's pid namespace, where the
 * reader is not the current task (a tracepoint): the reader's level is not
 * at hand, so its namespace is looked for along the levels. */
static __always_inline void task_ids(const struct task_struct *task, __u32 *tgid, __u32 *tid)
{
	struct task_struct *leader = 0;
	struct pid *pid = 0;

	if (!pidns_inum) {
		READ_INTO((__s32 *)tgid, task, tgid);
		READ_INTO((__s32 *)tid, task, pid);
		return;
	}
	READ_INTO(&pid, task, thread_pid);
	*tid = pid_nr_in_ns(pid);
	READ_INTO(&leader, task, group_leader);
	pid = 0;
	if (leader)
		READ_INTO(&pid, leader, thread_pid);
	*tgid = pid_nr_in_ns(pid);
}

#endif
