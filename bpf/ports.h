/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* ports.h - the set of TCP ports a program reports on. Userspace writes it
 * into .rodata before load (aya EbpfLoader::override_global), so the
 * verifier sees constants and nothing can change it afterwards. */
#ifndef SOCKCHECK_PORTS_H
#define SOCKCHECK_PORTS_H
#include "sockcheck.h"

#define MAX_PORTS 64
volatile const __u16 watched_ports[MAX_PORTS];
volatile const __u32 n_watched_ports; /* 0 = every port */

static __always_inline int port_watched(__u16 port)
{
	if (n_watched_ports == 0)
		return 1;
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i >= n_watched_ports)
			break;
		if (watched_ports[i] == port)
			return 1;
	}
	return 0;
}

#endif
