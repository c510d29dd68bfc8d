// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * Watch TCP sockets entering or leaving LISTEN on watched ports and push one
 * `listen_event` per transition into the `events` ring buffer. A transition
 * the ring buffer has no room for (the reader is behind) is counted in
 * `lost` instead, so userspace can say how many it never saw.
 *
 * Two entry points on the same kernel hook; userspace loads one of them:
 *  - tracepoint/sock/inet_sock_set_state: the classic tracepoint (needs
 *    tracefs mounted to look up its id);
 *  - tp_btf/inet_sock_set_state: the BTF-typed raw tracepoint, which needs
 *    no tracefs.
 */
#include "sockcheck.h"
#include "pidns.h"
#include "ports.h"

/* Here rather than in sockcheck.h, whose every line shift changes the line
 * info of all the objects. */
#define BPF_MAP_TYPE_PERCPU_ARRAY 6

/* The default size; userspace may set another (`--ring-size`) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

/* Events dropped because bpf_ringbuf_reserve failed, per CPU (no cache line
 * shared between CPUs); userspace sums the CPUs. The add is still atomic: a
 * tracepoint program runs with migration, not preemption, disabled, so two
 * tasks may run it on one CPU at once. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Mirrored by `ListenEventRec` in src/bpf/records.rs, whose test checks it
 * against this object's BTF (field names, offsets, sizes). */
struct listen_event {
	__u64 ktime_ns;
	__u64 inode;
	__u32 tgid;
	__u32 tid;
	__u8 comm[16];
	__u8 addr[16];     /* v4: first 4 bytes, network order */
	__u16 family;
	__u16 port;        /* host order */
	__u8 oldstate;
	__u8 newstate;
	__u8 reuseport;
	__u8 _pad0;
	__u32 netns;       /* inode of the socket's network namespace, 0 if unknown */
	__u8 _pad[4];
};
_Static_assert(sizeof(struct listen_event) == 72, "record layout is shared with src/bpf/records.rs");

/* Never read: keeps the record type in the object's BTF for that test. */
const volatile struct listen_event listen_event_btf = {};

/* Inode of the socket's network namespace (as /proc/PID/ns/net shows it),
 * 0 if it cannot be read. */
static __always_inline __u32 netns_inum(const struct sock *sk)
{
	struct net *net = 0;
	unsigned int inum = 0;

	READ_INTO(&net, &sk->__sk_common.skc_net, net);
	if (net)
		READ_INTO(&inum, net, ns.inum);
	return inum;
}

/* Everything but the address; returns the reserved event or NULL. */
static __always_inline struct listen_event *
begin(const struct sock *sk, int oldstate, int newstate, __u16 family, __u16 port)
{
	if (oldstate != TCP_LISTEN && newstate != TCP_LISTEN)
		return 0;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (!port_watched(port))
		return 0;
	struct listen_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);

		if (n)
			__sync_fetch_and_add(n, 1);
		return 0;
	}
	struct socket *sock = 0;

	READ_INTO(&sock, sk, sk_socket);
	e->ktime_ns = bpf_ktime_get_ns();
	e->inode = socket_ino(sock);
	task_ids((const struct task_struct *)bpf_get_current_task(), &e->tgid, &e->tid);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	e->family = family;
	e->port = port;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->reuseport = READ_FIELD(&sk->__sk_common, skc_reuseport);
	e->netns = netns_inum(sk);
	return e;
}

SEC("tracepoint/sock/inet_sock_set_state")
int sockcheck_watch_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	struct listen_event *e = begin(ctx->skaddr, ctx->oldstate, ctx->newstate,
				       ctx->family, ctx->sport);
	if (!e)
		return 0;
	/* a direct copy out of the ctx is rejected by the verifier */
	if (e->family == AF_INET)
		bpf_probe_read_kernel(e->addr, 4, ctx->saddr);
	else
		bpf_probe_read_kernel(e->addr, 16, ctx->saddr_v6);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int sockcheck_watch_btf(unsigned long long *ctx)
{
	/* TP_PROTO(const struct sock *sk, const int oldstate, const int newstate) */
	const struct sock *sk = (const struct sock *)ctx[0];
	const struct sock_common *skc = &sk->__sk_common;

	if (READ_FIELD(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	struct listen_event *e = begin(sk, (int)ctx[1], (int)ctx[2],
				       READ_FIELD(skc, skc_family),
				       READ_FIELD(skc, skc_num));
	if (!e)
		return 0;
	if (e->family == AF_INET)
		READ_INTO((__u32 *)e->addr, skc, skc_rcv_saddr);
	else
		READ_INTO((struct in6_addr *)e->addr, skc, skc_v6_rcv_saddr);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
