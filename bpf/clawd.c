//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// clawd's kernel side. One copy of these programs is loaded per attached
// container, with that container's listener ports and cgroup ID baked in as
// constants, and attached to the container's cgroup v2 directory (and, for the
// tcx programs, to its network interfaces and to what lies behind them: a veth
// peer in any netns, the lower device of a macvlan/ipvlan/vlan). The shared
// maps are pinned under bpffs, so a restarted daemon finds what its
// predecessor recorded; clawd_self_cg is per copy (see below).
//
// Return values: cgroup hooks return 1 to allow and 0 to refuse (EPERM).

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

char __license[] SEC("license") = "Dual BSD/GPL";

// Socket constants, defined here rather than pulled from libc headers (which
// do not build for the bpf target). Values are the kernel's ABI.
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOL_SOCKET 1
#define SO_BINDTODEVICE 25
#define SO_MARK 36
// Not in Debian 12's uapi headers (tcx arrived in 6.6).
#define TCX_NEXT -1
#define TCX_DROP 2
#ifndef SOL_PACKET
#define SOL_PACKET 263
#endif
#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef SO_BINDTOIFINDEX
#define SO_BINDTOIFINDEX 62
#endif
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef SOL_IP
#define SOL_IP 0
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 41
#endif

// Per-container constants, set by the loader before the programs are loaded.
volatile const __u16 proxy_port = 0; // TCP listener, host byte order
volatile const __u16 dns_port = 0;   // UDP DNS listener, host byte order
volatile const __u8 has_v6 = 0;      // listeners exist on ::1 too
volatile const __u64 container_cgroup = 0;
// read_exe: record the connecting task's executable (see remember). The
// loader sets it, and loads again without it on a kernel that refuses
// bpf_get_current_task_btf in these hooks.
volatile const __u8 read_exe = 0;

// orig is the destination the agent asked for. Layout is part of the pinned
// map ABI: change it only together with the map names' version suffix.
struct orig {
	__u8 addr[16]; // IPv4 in the first 4 bytes when family == 4
	__u16 port;    // network byte order
	__u8 family;   // 4 or 6
	__u8 pad;
	__u32 tgid;   // host PID of the connecting process (was padding: same layout)
	__u64 cgroup; // cgroup the connecting socket belongs to
};

// exe_id is the executable the connecting task ran at connect(): its
// file's device (the kernel's dev_t: major << 20 | minor) and inode, as
// stat(/proc/PID/exe) reports them. Not part of struct orig, whose layout
// is pinned.
struct exe_id {
	__u64 dev;
	__u64 ino;
};

#ifndef CLAWD_PREV
// The kernel's own types, as far as remember reads them; CO-RE relocates
// the offsets against the running kernel's BTF.
struct super_block {
	__u32 s_dev;
} __attribute__((preserve_access_index));
struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));
struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));
struct mm_struct {
	struct file *exe_file;
} __attribute__((preserve_access_index));
struct task_struct {
	struct mm_struct *mm;
} __attribute__((preserve_access_index));
#endif

// tuple_key identifies an accepted connection from the proxy's side: the
// container's network namespace, the client's source port and its family.
struct tuple_key {
	__u64 netns;
	__u16 port; // host byte order
	__u16 family;
	__u32 pad;
};

// listener_key names one of clawd's listeners: the network namespace it is
// in, its port and its socket type (SOCK_STREAM or SOCK_DGRAM). Layout is
// part of the pinned map ABI, like struct orig.
struct listener_key {
	__u64 netns;
	__u16 port; // host byte order
	__u8 type;
	__u8 pad[5];
};

struct counters {
	__u64 redirected; // TCP connects sent to the proxy
	__u64 dns;        // DNS datagrams sent to the DNS listener
	__u64 udp_refused;
	__u64 sock_refused;
	__u64 opt_refused;
	__u64 pkt_dropped; // cgroup_skb drops
	__u64 if_dropped;  // tcx drops on the container's interfaces
};

// Socket cookie -> original destination: getpeername, recvmsg and sockops
// look here.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_ck_v1 SEC(".maps");

// (netns, source port, family) -> original destination, read by the proxy.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tuple_key);
	__type(value, struct orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_tp_v1 SEC(".maps");

// Socket cookie -> executable of the task that connected, and the same by
// (netns, source port, family) once established (sockops), read by the
// proxy with clawd_tp_v1 (issue 16: a process that execs between its
// connect and the accept is caught).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct exe_id);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_xc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct tuple_key);
	__type(value, struct exe_id);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_xt_v1 SEC(".maps");

// mm_struct address -> exe_file replaced since the last exec (prctl
// PR_SET_MM), key 0 -> overflow flag: written by the executable guard
// (guard.c, which documents it), read by remember.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_xf_v1 SEC(".maps");

#ifndef CLAWD_PREV

// EXE_FORGED is the exe_id recorded for a task whose address space had its
// executable replaced (guard.c): no file has this device and inode, so the
// daemon's comparison with /proc/PID/exe fails and the program is unknown.
#define EXE_FORGED 0xffffffffffffffffULL
#endif

// The container's cgroup, one entry (index 0), filled by the daemon with the
// cgroup directory's fd before any program of this copy is attached. Not
// pinned: each loaded copy has its own, kept alive by its programs.
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} clawd_self_cg SEC(".maps");

// Container cgroup ID -> counters. The daemon creates the entry on attach.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_st_v1 SEC(".maps");

// (netns, port, type) of every clawd listener -> cgroup ID of the container
// it serves, written by the daemon when it opens and closes listeners.
// Containers sharing a network namespace (a pod) can reach each other's
// listeners on loopback; the connect and sendmsg hooks refuse a loopback
// destination that is another container's listener, so a container's DNS
// is always decided by its own rule set.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 131072);
	__type(key, struct listener_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_ls_v1 SEC(".maps");

#define COUNT(field)                                                      \
	do {                                                              \
		__u64 key = container_cgroup;                             \
		struct counters *c = bpf_map_lookup_elem(&clawd_st_v1, &key); \
		if (c)                                                    \
			__sync_fetch_and_add(&c->field, 1);               \
	} while (0)

static __always_inline int is_v4_loopback(__u32 ip_be) {
	return (bpf_ntohl(ip_be) >> 24) == 127;
}

static __always_inline int is_v4mapped(__u32 a0, __u32 a1, __u32 a2) {
	return a0 == 0 && a1 == 0 && a2 == bpf_htonl(0x0000ffff);
}

static __always_inline int is_v6_loopback(__u32 a0, __u32 a1, __u32 a2, __u32 a3) {
	if (a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1))
		return 1;
	return is_v4mapped(a0, a1, a2) && is_v4_loopback(a3);
}

// foreign_listener reports whether port (network byte order) on loopback in
// the socket's network namespace is a clawd listener of another container.
static __always_inline int foreign_listener(struct bpf_sock_addr *ctx, __u32 port) {
	struct listener_key k = {};
	k.netns = bpf_get_netns_cookie(ctx);
	k.port = bpf_ntohs((__u16)port);
	k.type = (__u8)ctx->type;
	__u64 *owner = bpf_map_lookup_elem(&clawd_ls_v1, &k);
	return owner && *owner != container_cgroup;
}

// remember runs in the task that connects (or sends): besides the
// destination it records that task's thread group ID, so the proxy can tell
// which program made the connection (policy `binaries:`), and (read_exe)
// the device and inode of the executable it runs now: the daemon resolves
// the TGID through /proc, checks it still belongs to this cgroup and still
// runs that file (no exec since the connect). A task whose address space
// replaced its executable (guard.c's mark, or its overflow flag) is recorded
// as EXE_FORGED instead.
static __always_inline void remember(void *ctx, struct orig *o) {
	__u64 cookie = bpf_get_socket_cookie(ctx);
	o->cgroup = bpf_get_current_cgroup_id();
#ifndef CLAWD_PREV
	o->tgid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	if (read_exe) {
		struct exe_id x = {};
		struct task_struct *t = bpf_get_current_task_btf();
		struct mm_struct *mm = t->mm;
		if (mm) {
			__u64 mk = (__u64)mm, zero = 0;
			__u8 *ov = bpf_map_lookup_elem(&clawd_xf_v1, &zero);
			int forged = bpf_map_lookup_elem(&clawd_xf_v1, &mk) != 0 || (ov && *ov);
			struct file *f = mm->exe_file;
			if (f) {
				struct inode *in = f->f_inode;
				if (in) {
					x.ino = in->i_ino;
					struct super_block *sb = in->i_sb;
					if (sb)
						x.dev = sb->s_dev;
				}
			}
			if (forged) {
				x.dev = EXE_FORGED;
				x.ino = EXE_FORGED;
			}
		}
		if (x.ino)
			bpf_map_update_elem(&clawd_xc_v1, &cookie, &x, BPF_ANY);
		else
			bpf_map_delete_elem(&clawd_xc_v1, &cookie);
	}
#endif
	bpf_map_update_elem(&clawd_ck_v1, &cookie, o, BPF_ANY);
}

// orig6 records a v6 destination; a v4-mapped one is recorded as IPv4.
static __always_inline void orig6(struct orig *o, __u32 a0, __u32 a1, __u32 a2, __u32 a3, int mapped, __u32 port) {
	if (mapped) {
		__builtin_memcpy(o->addr, &a3, 4);
		o->family = 4;
	} else {
		__builtin_memcpy(&o->addr[0], &a0, 4);
		__builtin_memcpy(&o->addr[4], &a1, 4);
		__builtin_memcpy(&o->addr[8], &a2, 4);
		__builtin_memcpy(&o->addr[12], &a3, 4);
		o->family = 6;
	}
	o->port = (__u16)port;
}

// Rewrites a v6 destination to the local listener on port. A v4-mapped
// destination goes to the v4-mapped loopback so IPv4 listeners answer it;
// without a v6 listener every v6 destination does (a dual-stack socket can).
static __always_inline void to_local6(struct bpf_sock_addr *ctx, int mapped, __u16 port) {
	if (mapped || !has_v6) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(port);
}

SEC("cgroup/connect4")
int clawd_connect4(struct bpf_sock_addr *ctx) {
	__u32 ip = ctx->user_ip4;
	__u32 port = ctx->user_port;
	int dns = port == bpf_htons(53);

	// The container's own loopback stays inside its network namespace
	// (but not another container's listener in a shared one); DNS is
	// always ours, wherever the agent sends it.
	if (is_v4_loopback(ip) && !dns) {
		if (foreign_listener(ctx, port)) {
			if (ctx->type == SOCK_DGRAM)
				COUNT(udp_refused);
			return 0;
		}
		return 1;
	}

	struct orig o = {};
	__builtin_memcpy(o.addr, &ip, 4);
	o.port = (__u16)port;
	o.family = 4;

	if (ctx->type == SOCK_STREAM) {
		remember(ctx, &o);
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(proxy_port);
		COUNT(redirected);
		return 1;
	}
	if (ctx->type == SOCK_DGRAM && dns) {
		remember(ctx, &o);
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(dns_port);
		COUNT(dns);
		return 1;
	}
	COUNT(udp_refused);
	return 0;
}

SEC("cgroup/connect6")
int clawd_connect6(struct bpf_sock_addr *ctx) {
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__u32 port = ctx->user_port;
	int dns = port == bpf_htons(53);
	int mapped = is_v4mapped(a0, a1, a2);

	if (is_v6_loopback(a0, a1, a2, a3) && !dns) {
		if (foreign_listener(ctx, port)) {
			if (ctx->type == SOCK_DGRAM)
				COUNT(udp_refused);
			return 0;
		}
		return 1;
	}

	struct orig o = {};
	orig6(&o, a0, a1, a2, a3, mapped, port);

	if (ctx->type == SOCK_STREAM) {
		remember(ctx, &o);
		to_local6(ctx, mapped, proxy_port);
		COUNT(redirected);
		return 1;
	}
	if (ctx->type == SOCK_DGRAM && dns) {
		remember(ctx, &o);
		to_local6(ctx, mapped, dns_port);
		COUNT(dns);
		return 1;
	}
	COUNT(udp_refused);
	return 0;
}

// sendmsg hooks see unconnected UDP (sendto/sendmsg/sendmmsg with an address).
SEC("cgroup/sendmsg4")
int clawd_sendmsg4(struct bpf_sock_addr *ctx) {
	__u32 ip = ctx->user_ip4;
	__u32 port = ctx->user_port;

	if (port == bpf_htons(53)) {
		struct orig o = {};
		__builtin_memcpy(o.addr, &ip, 4);
		o.port = (__u16)port;
		o.family = 4;
		remember(ctx, &o);
		ctx->user_ip4 = bpf_htonl(0x7f000001);
		ctx->user_port = bpf_htons(dns_port);
		COUNT(dns);
		return 1;
	}
	if (is_v4_loopback(ip) && !foreign_listener(ctx, port))
		return 1;
	COUNT(udp_refused);
	return 0;
}

SEC("cgroup/sendmsg6")
int clawd_sendmsg6(struct bpf_sock_addr *ctx) {
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	__u32 port = ctx->user_port;
	int mapped = is_v4mapped(a0, a1, a2);

	if (port == bpf_htons(53)) {
		struct orig o = {};
		orig6(&o, a0, a1, a2, a3, mapped, port);
		remember(ctx, &o);
		to_local6(ctx, mapped, dns_port);
		COUNT(dns);
		return 1;
	}
	if (is_v6_loopback(a0, a1, a2, a3) && !foreign_listener(ctx, port))
		return 1;
	COUNT(udp_refused);
	return 0;
}

// recvmsg hooks make DNS answers appear to come from the resolver the agent
// asked. They cannot refuse anything.
// restore4 rewrites 127.0.0.1:port back to the socket's original
// destination, if it has one.
static __always_inline int restore4(struct bpf_sock_addr *ctx, __u16 port) {
	if (ctx->user_port != bpf_htons(port) || ctx->user_ip4 != bpf_htonl(0x7f000001))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig *o = bpf_map_lookup_elem(&clawd_ck_v1, &cookie);
	if (!o || o->family != 4)
		return 1;
	__u32 ip;
	__builtin_memcpy(&ip, o->addr, 4);
	ctx->user_ip4 = ip;
	ctx->user_port = o->port;
	return 1;
}

SEC("cgroup/recvmsg4")
int clawd_recvmsg4(struct bpf_sock_addr *ctx) {
	return restore4(ctx, dns_port);
}

static __always_inline int restore6(struct bpf_sock_addr *ctx, __u16 port) {
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	if (ctx->user_port != bpf_htons(port) || !is_v6_loopback(a0, a1, a2, a3))
		return 1;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig *o = bpf_map_lookup_elem(&clawd_ck_v1, &cookie);
	if (!o)
		return 1;
	__u32 w[4] = {};
	if (o->family == 4) {
		w[2] = bpf_htonl(0x0000ffff);
		__builtin_memcpy(&w[3], o->addr, 4);
	} else {
		__builtin_memcpy(w, o->addr, 16);
	}
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = o->port;
	return 1;
}

SEC("cgroup/recvmsg6")
int clawd_recvmsg6(struct bpf_sock_addr *ctx) {
	return restore6(ctx, dns_port);
}

// getpeername hooks: the agent sees the address it dialled, not the listener.
SEC("cgroup/getpeername4")
int clawd_getpeername4(struct bpf_sock_addr *ctx) {
	return restore4(ctx, proxy_port);
}

SEC("cgroup/getpeername6")
int clawd_getpeername6(struct bpf_sock_addr *ctx) {
	return restore6(ctx, proxy_port);
}

// sockops re-keys a redirected connection, once established, by what the
// proxy can see on its accepted socket: netns, client port and family.
SEC("sockops")
int clawd_sockops(struct bpf_sock_ops *skops) {
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (bpf_ntohl(skops->remote_port) != proxy_port)
		return 1;
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct orig *o = bpf_map_lookup_elem(&clawd_ck_v1, &cookie);
	if (!o)
		return 1;

	struct tuple_key k = {};
	k.netns = bpf_get_netns_cookie(skops);
	k.port = (__u16)skops->local_port;
	k.family = 6;
	if (skops->family == 2 /* AF_INET */)
		k.family = 4;
	else if (is_v4mapped(skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2]))
		k.family = 4;
	struct orig v = *o;
#ifndef CLAWD_PREV
	// The executable first: the proxy reads clawd_tp_v1 once accepted,
	// and this entry with it. No record: remove a stale one of the same
	// tuple (an earlier connection from the same port).
	struct exe_id *x = bpf_map_lookup_elem(&clawd_xc_v1, &cookie);
	if (x) {
		struct exe_id xv = *x;
		bpf_map_update_elem(&clawd_xt_v1, &k, &xv, BPF_ANY);
	} else {
		bpf_map_delete_elem(&clawd_xt_v1, &k);
	}
#endif
	bpf_map_update_elem(&clawd_tp_v1, &k, &v, BPF_ANY);
	return 1;
}

// Only TCP and UDP sockets in AF_INET/AF_INET6: no raw, ICMP "ping", SCTP,
// MPTCP or UDP-Lite. Other families never reach this hook (see tcx below).
SEC("cgroup/sock_create")
int clawd_sock_create(struct bpf_sock *sk) {
	__u32 family = sk->family;
	__u32 type = sk->type;
	__u32 proto = sk->protocol;

	if (family != 2 /* AF_INET */ && family != 10 /* AF_INET6 */)
		return 1;
	if (type == SOCK_STREAM && proto == IPPROTO_TCP)
		return 1;
	if (type == SOCK_DGRAM && proto == IPPROTO_UDP)
		return 1;
	COUNT(sock_refused);
	return 0;
}

// Options that would let a socket escape the redirect or the egress filter.
SEC("cgroup/setsockopt")
int clawd_setsockopt(struct bpf_sockopt *ctx) {
	__s32 level = ctx->level;
	__s32 name = ctx->optname;
	int bad = 0;

	if (level == SOL_SOCKET)
		bad = name == SO_MARK || name == SO_BINDTODEVICE || name == SO_BINDTOIFINDEX;
	else if (level == SOL_IP)
		bad = name == IP_TRANSPARENT;
	else if (level == SOL_IPV6)
		bad = name == IPV6_TRANSPARENT;
#ifndef CLAWD_PREV
	// Defence in depth only: the kernel skips this hook for 32-bit (compat)
	// setsockopt calls, so the frame-level programs below stay the rule.
	// PACKET_QDISC_BYPASS sends frames past tcx egress; AF_XDP sockets
	// need SOL_XDP options (UMEM, rings) to send anything.
	else if (level == SOL_PACKET)
		bad = name == PACKET_QDISC_BYPASS;
	else if (level == SOL_XDP)
		bad = 1;
#endif
	if (bad) {
		COUNT(opt_refused);
		return 0;
	}
	// Leave the option buffer to the kernel untouched (also for options
	// longer than a page, which the program cannot see in full).
	if (ctx->optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

// Defence in depth: the container's own sockets may only send on loopback.
// This also cuts connections opened before the container was attached.
SEC("cgroup_skb/egress")
int clawd_egress(struct __sk_buff *skb) {
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u32 daddr;
		if (bpf_skb_load_bytes(skb, offsetof(struct iphdr, daddr), &daddr, 4) == 0 &&
		    is_v4_loopback(daddr))
			return 1;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		__u32 d[4];
		if (bpf_skb_load_bytes(skb, offsetof(struct ipv6hdr, daddr), d, 16) == 0 &&
		    is_v6_loopback(d[0], d[1], d[2], d[3]))
			return 1;
	}
	COUNT(pkt_dropped);
	return 0;
}

// tcx programs on the container's interfaces (egress inside the container,
// ingress on a veth peer, wherever it lives) drop every frame: with clawd
// attached no legitimate packet of the container crosses them, since the
// proxy dials from the host. This is what stops AF_PACKET, which no cgroup
// inet hook sees. A packet socket with PACKET_QDISC_BYPASS (and AF_XDP in
// copy mode) skips tcx egress and goes straight to the driver: for a veth that
// is the peer's ingress, hence the second program.
SEC("tcx/egress")
int clawd_tcx_egress(struct __sk_buff *skb) {
	COUNT(if_dropped);
	return TCX_DROP;
}

SEC("tcx/ingress")
int clawd_tcx_ingress(struct __sk_buff *skb) {
	COUNT(if_dropped);
	return TCX_DROP;
}

// A macvlan, ipvlan or vlan interface hands its frames to its lower device,
// which other containers and the host share: there only the container's
// frames may be dropped. A frame that reaches the lower device from the
// container without crossing the container-side tcx egress program (which
// drops everything) came from a packet or XDP socket, and carries that socket:
// bpf_skb_under_cgroup matches it, in any child cgroup too. Source MAC or IP
// would not do: a packet socket writes whatever it likes there. Egress covers
// frames to the wire; ingress covers a macvlan in bridge mode handing a
// unicast frame to a sibling macvlan on the same lower device.
static __always_inline int lower(struct __sk_buff *skb) {
	if (bpf_skb_under_cgroup(skb, &clawd_self_cg, 0) != 1)
		return TCX_NEXT;
	COUNT(if_dropped);
	return TCX_DROP;
}

SEC("tcx/egress")
int clawd_lower_egress(struct __sk_buff *skb) {
	return lower(skb);
}

SEC("tcx/ingress")
int clawd_lower_ingress(struct __sk_buff *skb) {
	return lower(skb);
}
