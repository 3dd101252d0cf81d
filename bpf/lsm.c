//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Optional layer, loaded only where the kernel allows BPF LSM programs (not
// under lockdown, "bpf" in the LSM list): refuse socket families that no
// cgroup inet hook sees (AF_PACKET, AF_VSOCK, AF_XDP, ...) at socket() time.
// Where it cannot load, the tcx programs in clawd.c drop those families'
// frames on the container's interfaces instead.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char __license[] SEC("license") = "GPL";

#define AF_UNIX 1
#define AF_INET 2
#define AF_INET6 10
#define AF_NETLINK 16

// lsm_cgroup programs return 1 to allow and 0 to refuse (EPERM).
SEC("lsm_cgroup/socket_create")
int BPF_PROG(clawd_socket_create, int family, int type, int protocol, int kern) {
	if (kern)
		return 1; // sockets the kernel makes for itself
	// Local IPC, routing queries (getaddrinfo uses netlink) and IP, which the
	// cgroup inet hooks in clawd.c police.
	if (family == AF_UNIX || family == AF_NETLINK || family == AF_INET || family == AF_INET6)
		return 1;
	return 0;
}
