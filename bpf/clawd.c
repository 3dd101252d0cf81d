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
//
// Kernel fast path (issue 18; the daemon's `fast-path:`, constant fast_path
// here). A TCP connect whose destination the container's rule set allows by
// address and port alone (policy.FastPath compiles the table: never a
// special, host or container address) is let through unchanged: no proxy.
// The connect hooks record the socket in clawd_fl_v1; that record, with the
// packet's destination matching it, is the only thing that lets a frame of
// a container's socket past the egress filters below (besides the ARP and
// neighbour discovery the kernel itself sends for it). sockops reports each such
// flow's open and close (with bytes) to the daemon over clawd_ev_v1, which
// writes them as audit lines with path "kernel". The daemon replaces the
// whole table at once on a policy reload and cuts the flows it no longer
// allows (SOCK_DESTROY). Everything else goes to the proxy as before.

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
volatile const __u8 fast_path = 0;  // kernel fast path enabled (see above)

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

// Fast-path table: (container cgroup, family, address prefix) -> the TCP
// ports its addresses may reach directly. An entry with n == 0 passes
// nothing (it shadows a broader prefix: an excluded range, a narrower deny).
struct fp_key {
	__u32 prefixlen; // 96 + the address prefix length
	__u32 cg[2];     // container cgroup ID, low word first
	__u32 family;    // 4 or 6
	__u8 addr[16];   // IPv4 in the first 4 bytes
};

#define FP_SPANS 15
struct fp_ports {
	__u16 n;
	__u16 lo[FP_SPANS]; // inclusive ranges, host byte order
	__u16 hi[FP_SPANS];
};

// One slot holding the current table: the daemon builds a new trie and
// swaps it in with one update, so a reload is atomic for every container.
// An empty slot (no table yet) passes nothing.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);
		__uint(max_entries, 262144);
		__uint(key_size, sizeof(struct fp_key));
		__uint(value_size, sizeof(struct fp_ports));
		__uint(map_flags, BPF_F_NO_PREALLOC);
	});
} clawd_fp_v1 SEC(".maps");

// flow is one fast-path connection. Layout is part of the pinned map ABI.
struct flow {
	__u8 daddr[16]; // IPv4 in the first 4 bytes when family == 4
	__u8 saddr[16]; // set once established
	__u16 dport;    // host byte order
	__u16 sport;    // host byte order, set once established
	__u8 family;    // 4 or 6 (a v4-mapped destination is 4)
	__u8 established;
	__u8 fin_in; // the peer's FIN arrived (it counts in bytes_received)
	__u8 closed; // TCP closed: the record stays for its last frames
	__u32 tgid;
	// close_lost: the close event found no room in the ring buffer (set
	// with closed). The daemon writes the flow's close_lost line and
	// clears it: a closed record alone cannot tell a lost close from a
	// read one the LRU has not reclaimed yet. Carved from padding, so
	// the record keeps its size and offsets (pinned map ABI).
	__u8 close_lost;
	// open_lost: the open event found no room. The record stays so
	// that the daemon, running or started later, finds the flow (its
	// Fast Open SYN may have carried data) and writes its lines, then
	// deletes it; meanwhile its packets are dropped (fast_packet).
	__u8 open_lost;
	__u8 pad2[2];
	__u64 cgroup; // the container's cgroup (container_cgroup)
	__u64 netns;  // network namespace cookie
};

// Socket cookie -> fast-path flow. LRU: records of closed flows and of
// connects that failed before TCP started are reclaimed; a live flow
// evicted under pressure loses its packets (fails closed).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_fl_v1 SEC(".maps");

#define FP_EV_OPEN 1
#define FP_EV_CLOSE 2
// FP_EV_CONNECT: TCP starts connecting (before its first SYN, which may
// carry Fast Open data). The daemon holds the flow from here, no line.
#define FP_EV_CONNECT 3
struct fp_event {
	__u64 cookie;
	__u64 bytes_sent; // bytes_acked
	__u64 bytes_received;
	struct flow f;
	__u32 kind; // FP_EV_OPEN, FP_EV_CLOSE or FP_EV_CONNECT
	__u32 pad;
	__u64 ns; // bpf_ktime_get_ns() (CLOCK_MONOTONIC) when it happened
};

// Keeps struct fp_event in the BTF for the Go bindings.
const struct fp_event *unused_fp_event __attribute__((unused));
const struct fp_key *unused_fp_key __attribute__((unused));
const struct fp_ports *unused_fp_ports __attribute__((unused));

// Fast-path events for the daemon's audit log. Past FP_EV_ROOM bytes
// unread, connects no longer take the fast path (fast_connect).
#define FP_EV_ROOM (1 << 19)
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_ev_v1 SEC(".maps");

struct fp_counters {
	__u64 fast;    // TCP connects let through in the kernel
	__u64 ev_lost; // events the ring buffer had no room for
};

// Container cgroup ID -> fast-path counters (apart from clawd_st_v1, whose
// layout is pinned ABI).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct fp_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} clawd_fc_v1 SEC(".maps");

#define COUNT(field)                                                      \
	do {                                                              \
		__u64 key = container_cgroup;                             \
		struct counters *c = bpf_map_lookup_elem(&clawd_st_v1, &key); \
		if (c)                                                    \
			__sync_fetch_and_add(&c->field, 1);               \
	} while (0)

#define FCOUNT(field)                                                     \
	do {                                                              \
		__u64 key = container_cgroup;                             \
		struct fp_counters *c = bpf_map_lookup_elem(&clawd_fc_v1, &key); \
		if (c)                                                    \
			__sync_fetch_and_add(&c->field, 1);               \
	} while (0)

#ifndef CLAWD_PREV
// Defence in depth under the compiled table, which already excludes every
// special range: IPv4 loopback, private, link-local, shared, multicast,
// reserved and "this network" never take the fast path.
static __always_inline int v4_ordinary(__u32 ip_be) {
	__u32 h = bpf_ntohl(ip_be);
	__u32 a = h >> 24;
	if (a == 0 || a == 10 || a == 127 || a >= 224)
		return 0;
	if ((h >> 16) == 0xa9fe || (h >> 20) == 0xac1 || (h >> 16) == 0xc0a8 || (h >> 22) == (100 << 2 | 1))
		return 0;
	return 1;
}

// IPv6: only global unicast (2000::/3), and not the Teredo or 6to4 ranges,
// which carry IPv4 addresses.
static __always_inline int v6_ordinary(__u32 a0) {
	__u32 h = bpf_ntohl(a0);
	if ((h >> 29) != 1)
		return 0;
	return h != 0x20010000 && (h >> 16) != 0x2002;
}

// fast_lookup asks the current table whether family/addr (4 words, network
// order) may be reached on port (host order).
static __always_inline int fast_lookup(__u32 family, __u32 a0, __u32 a1, __u32 a2, __u32 a3, __u16 port) {
	__u32 zero = 0;
	void *trie = bpf_map_lookup_elem(&clawd_fp_v1, &zero);
	if (!trie)
		return 0;
	struct fp_key k = {};
	k.cg[0] = (__u32)container_cgroup;
	k.cg[1] = (__u32)(container_cgroup >> 32);
	k.family = family;
	__builtin_memcpy(&k.addr[0], &a0, 4);
	if (family == 4) {
		k.prefixlen = 96 + 32;
	} else {
		k.prefixlen = 96 + 128;
		__builtin_memcpy(&k.addr[4], &a1, 4);
		__builtin_memcpy(&k.addr[8], &a2, 4);
		__builtin_memcpy(&k.addr[12], &a3, 4);
	}
	struct fp_ports *v = bpf_map_lookup_elem(trie, &k);
	if (!v)
		return 0;
	for (int i = 0; i < FP_SPANS; i++) {
		if (i >= v->n)
			break;
		if (port >= v->lo[i] && port <= v->hi[i])
			return 1;
	}
	return 0;
}

// fast_connect lets a TCP connect through unchanged when the table allows
// its destination, recording the socket's flow; without a record (the map
// refused it) the connect takes the proxy path. Any other connect of the
// socket drops a record a previous connect left.
static __always_inline int fast_connect(struct bpf_sock_addr *ctx, __u32 family, __u32 a0, __u32 a1, __u32 a2, __u32 a3, __u32 port) {
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u16 p = bpf_ntohs((__u16)port);
	int ok = fast_path && ctx->type == SOCK_STREAM;
	if (ok)
		ok = family == 4 ? v4_ordinary(a0) : v6_ordinary(a0);
	if (ok)
		ok = fast_lookup(family, a0, a1, a2, a3, p);
	// Every fast connection must reach the audit log (its open and close
	// events): with the event ring buffer half full (the daemon behind or
	// gone) new connects take the proxy path, which audits them itself.
	if (ok && bpf_ringbuf_query(&clawd_ev_v1, BPF_RB_AVAIL_DATA) > FP_EV_ROOM)
		ok = 0;
	if (!ok) {
		if (fast_path)
			bpf_map_delete_elem(&clawd_fl_v1, &cookie);
		return 0;
	}
	struct flow f = {};
	__builtin_memcpy(&f.daddr[0], &a0, 4);
	if (family == 6) {
		__builtin_memcpy(&f.daddr[4], &a1, 4);
		__builtin_memcpy(&f.daddr[8], &a2, 4);
		__builtin_memcpy(&f.daddr[12], &a3, 4);
	}
	f.dport = p;
	f.family = (__u8)family;
	f.tgid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	f.cgroup = container_cgroup;
	f.netns = bpf_get_netns_cookie(ctx);
	if (bpf_map_update_elem(&clawd_fl_v1, &cookie, &f, BPF_ANY) != 0)
		return 0;
	FCOUNT(fast);
	return 1;
}

// fast_packet reports whether skb belongs to a fast-path flow: its socket
// has a record and the packet goes where the record says (TCP, destination
// address and port). A packet or XDP socket has no record.
static __always_inline int fast_packet(struct __sk_buff *skb) {
	__u64 cookie = bpf_get_socket_cookie(skb);
	if (!cookie)
		return 0;
	struct flow *f = bpf_map_lookup_elem(&clawd_fl_v1, &cookie);
	if (!f || f->open_lost)
		return 0;
	__u32 off;
	__u8 proto;
	if (skb->protocol == bpf_htons(ETH_P_IP) && f->family == 4) {
		__u8 vihl;
		__u32 d;
		if (bpf_skb_load_bytes_relative(skb, 0, &vihl, 1, BPF_HDR_START_NET) ||
		    bpf_skb_load_bytes_relative(skb, offsetof(struct iphdr, protocol), &proto, 1, BPF_HDR_START_NET) ||
		    bpf_skb_load_bytes_relative(skb, offsetof(struct iphdr, daddr), &d, 4, BPF_HDR_START_NET))
			return 0;
		__u32 want;
		__builtin_memcpy(&want, f->daddr, 4);
		if (d != want)
			return 0;
		off = (vihl & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6) && f->family == 6) {
		__u32 d[4], w[4];
		if (bpf_skb_load_bytes_relative(skb, offsetof(struct ipv6hdr, nexthdr), &proto, 1, BPF_HDR_START_NET) ||
		    bpf_skb_load_bytes_relative(skb, offsetof(struct ipv6hdr, daddr), d, 16, BPF_HDR_START_NET))
			return 0;
		__builtin_memcpy(w, f->daddr, 16);
		if (d[0] != w[0] || d[1] != w[1] || d[2] != w[2] || d[3] != w[3])
			return 0;
		off = sizeof(struct ipv6hdr);
	} else {
		return 0;
	}
	if (proto != IPPROTO_TCP)
		return 0;
	__u16 dport;
	if (bpf_skb_load_bytes_relative(skb, off + 2, &dport, 2, BPF_HDR_START_NET))
		return 0;
	return bpf_ntohs(dport) == f->dport;
}

// neighbour_frame reports whether skb is address resolution the kernel
// itself sends: ARP (no socket) and IPv6 neighbour and router discovery
// (the namespace's own ICMPv6 socket, hop limit 255). A fast-path flow needs
// its gateway resolved. A packet or XDP socket's frames carry that socket
// and never pass here; a container's own raw ICMPv6 socket cannot be made
// after attach (sock_create), and one made before sends nothing past
// cgroup_skb/egress, which has no such exception.
static __always_inline int neighbour_frame(struct __sk_buff *skb) {
	struct bpf_sock *sk = skb->sk;
	if (skb->protocol == bpf_htons(ETH_P_ARP))
		return !sk;
	if (skb->protocol != bpf_htons(ETH_P_IPV6))
		return 0;
	if (sk) {
		sk = bpf_sk_fullsock(sk);
		if (!sk || sk->family != 10 /* AF_INET6 */ || sk->type != 3 /* SOCK_RAW */ || sk->protocol != IPPROTO_ICMPV6)
			return 0;
	}
	__u8 nh, hops, type;
	if (bpf_skb_load_bytes_relative(skb, offsetof(struct ipv6hdr, nexthdr), &nh, 1, BPF_HDR_START_NET) ||
	    bpf_skb_load_bytes_relative(skb, offsetof(struct ipv6hdr, hop_limit), &hops, 1, BPF_HDR_START_NET) ||
	    bpf_skb_load_bytes_relative(skb, sizeof(struct ipv6hdr), &type, 1, BPF_HDR_START_NET))
		return 0;
	return nh == IPPROTO_ICMPV6 && hops == 255 && type >= 133 && type <= 137;
}
#endif

// fast_frame is what the tcx programs let past: fast-path flows and the
// address resolution they need, and only with the fast path on.
static __always_inline int fast_frame(struct __sk_buff *skb) {
#ifndef CLAWD_PREV
	if (fast_path)
		return fast_packet(skb) || neighbour_frame(skb);
#endif
	return 0;
}

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

#ifndef CLAWD_PREV
	// Allowed by address and port alone: no proxy (see the header).
	if (fast_connect(ctx, 4, ip, 0, 0, 0, port))
		return 1;
#endif

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

#ifndef CLAWD_PREV
	// A v4-mapped destination is judged, and recorded, as IPv4.
	if (mapped ? fast_connect(ctx, 4, a3, 0, 0, 0, port) : fast_connect(ctx, 6, a0, a1, a2, a3, port))
		return 1;
#endif

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
// proxy can see on its accepted socket: netns, client port and family. It
// also follows fast-path flows (fast_sockops): the kernel is their only
// witness, so their open and close reach the audit log from here.
#ifndef CLAWD_PREV
// fast_source records the flow's source address and port (bound by the
// time TCP connects).
static __always_inline void fast_source(struct bpf_sock_ops *skops, struct flow *f) {
	if (f->family == 4) {
		__u32 l = skops->local_ip4;
		__builtin_memcpy(f->saddr, &l, 4);
	} else {
		// One 4-byte load each: the verifier refuses a merged one.
		__u32 l0 = *(volatile __u32 *)&skops->local_ip6[0];
		__u32 l1 = *(volatile __u32 *)&skops->local_ip6[1];
		__u32 l2 = *(volatile __u32 *)&skops->local_ip6[2];
		__u32 l3 = *(volatile __u32 *)&skops->local_ip6[3];
		__builtin_memcpy(&f->saddr[0], &l0, 4);
		__builtin_memcpy(&f->saddr[4], &l1, 4);
		__builtin_memcpy(&f->saddr[8], &l2, 4);
		__builtin_memcpy(&f->saddr[12], &l3, 4);
	}
	if (f->family == 4 && skops->family == 10 /* AF_INET6, v4-mapped */) {
		__u32 l3 = *(volatile __u32 *)&skops->local_ip6[3];
		__builtin_memcpy(f->saddr, &l3, 4);
	}
	f->sport = (__u16)skops->local_port;
}

// fast_sockops follows a fast-path flow: when TCP starts connecting it
// asks for state callbacks and reports the connect, once established it
// reports the open, and it reports the close with its bytes.
static __always_inline int fast_sockops(struct bpf_sock_ops *skops) {
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct flow *f = bpf_map_lookup_elem(&clawd_fl_v1, &cookie);
	if (!f)
		return 0;
	if (f->open_lost)
		return 1; // cut, the daemon's to report (see struct flow)
	__u32 kind = 0;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		// tcp_connect, before the first SYN is built or sent: a Fast
		// Open SYN carries data, so the flow must be known to the
		// daemon from here (the open event comes only with the
		// SYN-ACK). The source is already bound.
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		fast_source(skops, f);
		kind = FP_EV_CONNECT;
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	// A simultaneous open (the remote's SYN crossed ours) reaches
	// ESTABLISHED through SYN_RECV, reported as passive: the same open.
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		fast_source(skops, f);
		f->established = 1;
		kind = FP_EV_OPEN;
		break;
	case BPF_SOCK_OPS_STATE_CB:
		// args[0] is the old state, args[1] the new one.
		if (skops->args[1] == BPF_TCP_CLOSE_WAIT || skops->args[1] == BPF_TCP_CLOSING ||
		    (skops->args[1] == BPF_TCP_CLOSE && skops->args[0] == BPF_TCP_FIN_WAIT2))
			f->fin_in = 1;
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		kind = FP_EV_CLOSE;
		break;
	default:
		return 1;
	}
	struct fp_event *e = bpf_ringbuf_reserve(&clawd_ev_v1, sizeof(*e), 0);
	if (e) {
		e->cookie = cookie;
		e->kind = kind;
		e->pad = 0;
		e->ns = bpf_ktime_get_ns();
		e->f = *f;
		// The kernel's counters include the SYN and FIN sequence
		// numbers: payload bytes are what the audit line reports.
		__u64 acked = skops->bytes_acked, rcvd = skops->bytes_received;
		__u32 old = skops->args[0];
		int fin_out = kind == FP_EV_CLOSE && skops->snd_una == skops->snd_nxt &&
			      (old == BPF_TCP_FIN_WAIT1 || old == BPF_TCP_FIN_WAIT2 || old == BPF_TCP_CLOSING || old == BPF_TCP_LAST_ACK);
		if (f->established && acked > 0)
			acked--;
		if (fin_out && acked > 0)
			acked--;
		if (f->fin_in && rcvd > 0)
			rcvd--;
		// Never established: nothing was acknowledged, but a Fast Open
		// SYN may have carried data the upstream read. What was sent
		// past the SYN is reported (an upper bound, never less).
		if (kind == FP_EV_CLOSE && !f->established) {
			__u32 sent = skops->snd_nxt - skops->snd_una;
			if (sent > 1)
				acked = sent - 1;
		}
		e->bytes_sent = acked;
		e->bytes_received = rcvd;
		bpf_ringbuf_submit(e, 0);
	} else {
		FCOUNT(ev_lost);
		// A connect nobody will hear of: the flow's record goes, so
		// its packets (its first SYN too) stop at the egress filters
		// and it carries nothing unaudited. A lost open (its SYN, with
		// any Fast Open data, has left) or close is marked on the
		// record, which stays: the daemon, running or started later,
		// writes the flow's missing lines from the mark.
		if (kind == FP_EV_CONNECT) {
			bpf_map_delete_elem(&clawd_fl_v1, &cookie);
			return 1;
		}
		if (kind == FP_EV_OPEN) {
			f->open_lost = 1;
			return 1;
		}
		f->close_lost = 1;
	}
	// A closed flow's record stays (the LRU reclaims it): its last ACK
	// or reset, still queued on a veth or sent by its TIME_WAIT socket,
	// must pass too. A dead socket sends nothing else.
	if (kind == FP_EV_CLOSE)
		f->closed = 1;
	return 1;
}
#endif

SEC("sockops")
int clawd_sockops(struct bpf_sock_ops *skops) {
#ifndef CLAWD_PREV
	if (fast_path && fast_sockops(skops))
		return 1;
#endif
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

// Defence in depth: the container's own sockets may only send on loopback
// (and fast-path flows to where their record says). This also cuts
// connections opened before the container was attached.
SEC("cgroup_skb/egress")
int clawd_egress(struct __sk_buff *skb) {
#ifndef CLAWD_PREV
	if (fast_path && fast_packet(skb))
		return 1;
#endif
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
// ingress on a veth peer, wherever it lives) drop every frame but those of
// fast-path flows and the address resolution they need (fast_frame): with
// clawd attached no other legitimate packet of the container crosses them,
// since the proxy dials from the host. This is what stops AF_PACKET, which no cgroup
// inet hook sees. A packet socket with PACKET_QDISC_BYPASS (and AF_XDP in
// copy mode) skips tcx egress and goes straight to the driver: for a veth that
// is the peer's ingress, hence the second program.
SEC("tcx/egress")
int clawd_tcx_egress(struct __sk_buff *skb) {
	if (fast_frame(skb))
		return TCX_NEXT;
	COUNT(if_dropped);
	return TCX_DROP;
}

SEC("tcx/ingress")
int clawd_tcx_ingress(struct __sk_buff *skb) {
	if (fast_frame(skb))
		return TCX_NEXT;
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
	if (fast_frame(skb))
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
