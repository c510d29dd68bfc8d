// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * iter/tcp: one fixed-size record per TCP socket in LISTEN on a watched port.
 * Userspace reads the records from the iterator's seq file.
 */
#include "sockcheck.h"
#include "ports.h"

/* Mirrored by `ListenerRec` in src/bpf/records.rs, whose test checks it
 * against this object's BTF (field names, offsets, sizes). */
struct listener_rec {
	__u8 addr[16];     /* v4: first 4 bytes, network order */
	__u64 inode;       /* sock_i_ino(); 0 when no struct socket */
	__u32 uid;         /* sk_uid */
	__u16 family;      /* AF_INET / AF_INET6 */
	__u16 port;        /* host order */
	__u8 reuse;        /* skc_reuse (SO_REUSEADDR) */
	__u8 reuseport;    /* skc_reuseport */
	__u8 v6only;       /* skc_ipv6only */
	__u8 _pad[5];
};
_Static_assert(sizeof(struct listener_rec) == 40, "record layout is shared with src/bpf/records.rs");

/* Never read: keeps the record type in the object's BTF for that test. */
const volatile struct listener_rec listener_rec_btf = {};

SEC("iter/tcp")
int sockcheck_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct listener_rec rec = {};

	if (!skc)
		return 0;
	/* request (NEW_SYN_RECV) and timewait sockets are only a sock_common:
	 * check the state before treating it as a full socket. */
	if (skc->skc_state != TCP_LISTEN)
		return 0;
	rec.family = skc->skc_family;
	rec.port = skc->skc_num;
	if (!port_watched(rec.port))
		return 0;
	struct sock *sk = (struct sock *)bpf_skc_to_tcp_sock(skc);
	if (!sk)
		return 0;

	if (rec.family == AF_INET)
		READ_INTO((__u32 *)rec.addr, skc, skc_rcv_saddr);
	else if (rec.family == AF_INET6)
		READ_INTO((struct in6_addr *)rec.addr, skc, skc_v6_rcv_saddr);
	else
		return 0;
	rec.inode = socket_ino(sk->sk_socket);
	rec.uid = ctx->uid;
	rec.reuse = READ_FIELD(skc, skc_reuse);
	rec.reuseport = READ_FIELD(skc, skc_reuseport);
	rec.v6only = READ_FIELD(skc, skc_ipv6only);
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
