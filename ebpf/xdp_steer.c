// SPDX-License-Identifier: (MIT OR GPL-2.0)
//
// wirespeed XDP steering program.
//
// Steers WireGuard transport data messages (type 4) that arrive on a UDP port
// listed in PORTS and are addressed to one of this host's own addresses
// (LOCAL4 / LOCAL6) into the AF_XDP socket registered for the receiving queue
// (XSKS[rx_queue_index]); everything else -- handshakes, cookies, traffic
// this host forwards for others, anything it cannot parse -- goes to the
// kernel with XDP_PASS.
//
// Parsed: Ethernet II with at most one 802.1Q / 802.1ad tag; IPv4 with
// options (IHL honoured), fragments passed; IPv6 whose next header is UDP
// (extension headers are not walked: anything else is passed); UDP.
//
// Built by dataplane/build.rs with `clang -O2 -g -target bpf`; loaded by
// dataplane/src/xdp/program.rs (aya). See README.md beside this file.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

// Indices into STATS. Keep in sync with dataplane/src/xdp/program.rs.
#define STAT_STEERED 0   // redirected into an AF_XDP socket (XDP_REDIRECT)
#define STAT_PASSED 1    // well-formed, not ours (or not type 4): XDP_PASS
#define STAT_MALFORMED 2 // headers truncated or invalid: XDP_PASS
#define STAT_NO_SOCKET 3 // would steer, but XSKS[rx_queue] empty: XDP_PASS
#define STAT_NOT_LOCAL 4 // transport-shaped, but not to a local address: XDP_PASS
#define STAT_COUNT 5

// WireGuard transport data: type 4, three reserved zero bytes, receiver
// index (4), counter (8), then at least the 16-byte Poly1305 tag.
#define WG_TRANSPORT_TYPE 4
#define WG_TRANSPORT_MIN_LEN 32

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

// UDP destination ports to steer. Key: the port in NETWORK byte order, exactly
// as it appears in the UDP header (the loader stores `port.to_be()`). Value: an
// opaque tag owned by the loader (which interface/tenant added the port).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} PORTS SEC(".maps");

// This host's own addresses (network byte order, as in the IP header), kept
// current by the loader from the kernel's address list. A transport message
// to any other address is being forwarded (this host routes or NATs for
// others, a container behind it uses the same port): it belongs to the
// kernel, not to us. An empty map steers nothing.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} LOCAL4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct in6_addr);
	__type(value, __u8);
} LOCAL6 SEC(".maps");

// AF_XDP sockets, indexed by NIC rx queue.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} XSKS SEC(".maps");

// Per-CPU packet counters, indexed by the STAT_* constants above.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} STATS SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

static __always_inline void count(__u32 index)
{
	__u64 *slot = bpf_map_lookup_elem(&STATS, &index);
	if (slot)
		*slot += 1; // per-CPU slot: no atomic needed
}

static __always_inline int pass(__u32 index)
{
	count(index);
	return XDP_PASS;
}

SEC("xdp")
int xdp_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct udphdr *udp;
	// The destination address, copied to the stack (map keys live there);
	// looked up only once the packet is otherwise one to steer.
	__u32 daddr4 = 0;
	struct in6_addr daddr6 = {};
	int is_v6 = 0;

	// Ethernet, optionally one VLAN tag.
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return pass(STAT_MALFORMED);
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_hdr *vlan = l3;
		if ((void *)(vlan + 1) > data_end)
			return pass(STAT_MALFORMED);
		proto = vlan->encapsulated_proto;
		l3 = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > data_end)
			return pass(STAT_MALFORMED);
		if (ip->version != 4 || ip->ihl < 5)
			return pass(STAT_MALFORMED);
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return pass(STAT_PASSED);
		if (ip->protocol != IPPROTO_UDP)
			return pass(STAT_PASSED);
		__u32 ihl_bytes = (__u32)ip->ihl * 4; // 20..60
		udp = l3 + ihl_bytes;
		daddr4 = ip->daddr;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > data_end)
			return pass(STAT_MALFORMED);
		if (ip6->version != 6)
			return pass(STAT_MALFORMED);
		if (ip6->nexthdr != IPPROTO_UDP)
			return pass(STAT_PASSED);
		udp = (void *)(ip6 + 1);
		daddr6 = ip6->daddr;
		is_v6 = 1;
	} else {
		return pass(STAT_PASSED);
	}

	if ((void *)(udp + 1) > data_end)
		return pass(STAT_MALFORMED);

	__u16 dport = udp->dest; // network byte order, as PORTS is keyed
	if (!bpf_map_lookup_elem(&PORTS, &dport))
		return pass(STAT_PASSED);

	// WireGuard message header: type (1), reserved zeros (3), then at least
	// receiver (4) + counter (8) + Poly1305 tag (16) for a transport message.
	__u8 *msg = (void *)(udp + 1);
	if ((void *)(msg + WG_TRANSPORT_MIN_LEN) > data_end)
		return pass(STAT_PASSED); // short datagram: let the kernel socket judge
	__u32 udp_len = bpf_ntohs(udp->len);
	if (udp_len < sizeof(*udp) + WG_TRANSPORT_MIN_LEN)
		return pass(STAT_PASSED);
	if ((void *)udp + udp_len > data_end)
		return pass(STAT_MALFORMED); // UDP length beyond the frame: truncated
	if (msg[0] != WG_TRANSPORT_TYPE || msg[1] != 0 || msg[2] != 0 || msg[3] != 0)
		return pass(STAT_PASSED); // handshake init/response, cookie, other
	// Checked last, so the counter names exactly what the check costs others:
	// transport messages of forwarded traffic that now reach their host.
	void *local = is_v6 ? bpf_map_lookup_elem(&LOCAL6, &daddr6)
			    : bpf_map_lookup_elem(&LOCAL4, &daddr4);
	if (!local)
		return pass(STAT_NOT_LOCAL);

	int action = bpf_redirect_map(&XSKS, ctx->rx_queue_index, XDP_PASS);
	count(action == XDP_REDIRECT ? STAT_STEERED : STAT_NO_SOCKET);
	return action;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
