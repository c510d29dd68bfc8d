/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * sockcheck.h - the few kernel types, helpers and macros sockcheck's BPF
 * programs need. Hand-written on purpose (no vmlinux.h, no libbpf headers).
 *
 * Every kernel struct is declared with preserve_access_index, so it only
 * has to list the members we touch, in any order: the loader (aya) rewrites
 * each access to the running kernel's layout from /sys/kernel/btf/vmlinux
 * (CO-RE). Members that live in anonymous unions/structs in the kernel may be
 * declared flat here; the relocation finds them by name.
 */
#ifndef SOCKCHECK_H
#define SOCKCHECK_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define CORE __attribute__((preserve_access_index))

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_LISTEN 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_RINGBUF 27

/* ---- kernel types (only the members we read) ---- */
struct in6_addr { __u8 s6_addr[16]; } CORE;
struct ns_common { unsigned int inum; } CORE;
struct net { struct ns_common ns; } CORE;
/* With CONFIG_NET_NS, a struct of one pointer; read through skc_net.net. */
typedef struct { struct net *net; } CORE possible_net_t;
struct sock_common {
	__u32 skc_rcv_saddr;          /* network order */
	__u16 skc_num;                /* host order */
	__u16 skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_reuse : 4;  /* SO_REUSEADDR: 0 no, 1 can, 2 force */
	unsigned char skc_reuseport : 1;
	unsigned char skc_ipv6only : 1;
	struct in6_addr skc_v6_rcv_saddr;
	possible_net_t skc_net;       /* the socket's network namespace */
} CORE;
struct socket;
struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;            /* a bitfield before 5.6: read it as one */
	struct socket *sk_socket;
} CORE;
struct inode { __u16 i_mode; unsigned long i_ino; } CORE;
struct file_operations;
struct file {
	const struct file_operations *f_op;
	struct inode *f_inode;
} CORE;
struct socket { struct file *file; } CORE;
struct socket_alloc { struct socket socket; struct inode vfs_inode; } CORE;
struct pid_namespace { struct ns_common ns; } CORE;
struct upid { int nr; struct pid_namespace *ns; } CORE;
struct pid { unsigned int level; struct upid numbers[1]; } CORE;
struct fdtable {
	unsigned int max_fds;
	struct file **fd;             /* struct file *[max_fds] */
	unsigned long *open_fds;      /* bitmap of max_fds bits */
} CORE;
struct files_struct { struct fdtable *fdt; } CORE;
struct task_struct {
	__s32 pid;                    /* global (init pid ns) ids */
	__s32 tgid;
	int exit_signal;              /* < 0 for a thread that is not the leader */
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct files_struct *files;   /* NULL once the task has exited */
} CORE;
struct tcp_sock;
struct seq_file;
struct bpf_iter_meta { struct seq_file *seq; } CORE;

/* iterator contexts (see DEFINE_BPF_ITER_FUNC in the kernel) */
struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;                    /* sk_uid, mapped into the reader's userns */
} CORE;
struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} CORE;
struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
} CORE;

/* ctx of tracepoint sock/inet_sock_set_state */
struct trace_event_raw_inet_sock_set_state {
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;                  /* host order */
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 saddr_v6[16];
} CORE;

/* ---- helpers (numbers are the stable UAPI enum bpf_func_id) ---- */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_seq_write)(struct seq_file *seq, const void *data, __u32 len) = (void *)127;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static struct tcp_sock *(*bpf_skc_to_tcp_sock)(void *sk) = (void *)137;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

/* ---- CO-RE reads through bpf_probe_read_kernel ---- */
enum { FIELD_BYTE_OFFSET = 0, FIELD_BYTE_SIZE = 1, FIELD_LSHIFT_U64 = 4, FIELD_RSHIFT_U64 = 5 };

/* Value of a (possibly bit-) field of *p, zero-extended to u64. Reads the
 * smallest aligned word holding it, then shifts the field's bits out; all
 * four numbers are patched to the running kernel's layout at load time.
 * Little-endian only (the lshift assumes the word sits in the low bytes). */
#define READ_FIELD(p, field) ({                                              \
	__u64 __v = 0;                                                       \
	bpf_probe_read_kernel(&__v,                                          \
		__builtin_preserve_field_info((p)->field, FIELD_BYTE_SIZE),  \
		(const char *)(p) +                                          \
		__builtin_preserve_field_info((p)->field, FIELD_BYTE_OFFSET)); \
	__v <<= __builtin_preserve_field_info((p)->field, FIELD_LSHIFT_U64); \
	__v >>= __builtin_preserve_field_info((p)->field, FIELD_RSHIFT_U64); \
	__v; })

/* Copy a plain (non-bit) field *p->field into dst, relocated. */
#define READ_INTO(dst, p, field) \
	bpf_probe_read_kernel((dst), sizeof(*(dst)), &(p)->field)

/* sock_i_ino(): the inode embedded next to the socket (SOCK_INODE), which is
 * what fstat() on the fd, /proc/PID/fd and /proc/net/tcp show. 0 if no socket. */
static __always_inline __u64 socket_ino(const struct socket *sock)
{
	unsigned long ino = 0;
	if (sock)
		READ_INTO(&ino, (const struct socket_alloc *)sock, vfs_inode.i_ino);
	return ino;
}

#endif
