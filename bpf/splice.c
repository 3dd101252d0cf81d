//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// In-kernel relay for allowed passthrough flows (clawd.yaml `passthrough:
// sockmap`). Once the proxy has decided a raw TCP or SNI-passthrough
// connection, it puts both of its sockets (the agent's, accepted by the
// listener, and the upstream one it dialled) into clawd_sp_socks; from then
// on every segment that arrives on one socket is queued straight onto the
// other's send path, so the bytes never cross into userspace.
//
// Ordering is the whole difficulty: a socket's bytes must either all go
// through the kernel or all through clawd's userspace copy. clawd arms a
// socket only when it knows no byte is waiting in its receive queue; a
// segment that arrives while its socket is not yet armed poisons it, and a
// poisoned socket hands every later segment to userspace too (SK_PASS), where
// clawd copies it in order.

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "GPL";

// peer is written by clawd only: the other socket of the pair and whether
// this socket's bytes may be redirected to it.
struct peer {
	__u64 cookie;
	__u32 armed;
	__u32 _pad;
};

// flow is written by this program only (clawd reads and deletes it).
struct flow {
	__u64 bytes; // redirected to the peer
	__u32 poisoned;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // socket cookie
	__type(value, __u64);
} clawd_sp_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct peer);
} clawd_sp_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct flow);
} clawd_sp_flows SEC(".maps");

SEC("sk_skb/stream_verdict")
int clawd_splice(struct __sk_buff *skb) {
	__u64 c = bpf_get_socket_cookie(skb);
	struct flow *f = bpf_map_lookup_elem(&clawd_sp_flows, &c);
	if (!f)
		return SK_PASS;
	struct peer *p = bpf_map_lookup_elem(&clawd_sp_peers, &c);
	if (!p || !p->armed || f->poisoned) {
		f->poisoned = 1;
		return SK_PASS;
	}
	__u32 len = skb->len;
	// The segment that carries the FIN may be empty: the end of stream is
	// clawd's to pass on (after the data has drained), and an empty skb
	// queued behind a half-close would break the peer's pipe.
	if (len == 0)
		return SK_DROP;
	__u64 to = p->cookie;
	int ret = bpf_sk_redirect_hash(skb, &clawd_sp_socks, &to, 0);
	if (ret == SK_PASS)
		__sync_fetch_and_add(&f->bytes, len);
	return ret;
}
