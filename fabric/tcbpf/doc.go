// Package tcbpf puts the fabric's kernel-side link impairments and
// anti-spoofing templates on the host-side ports of a testbed's veths, as
// tc BPF programs built with cilium/ebpf's asm package (no clang).
//
// # Attachment
//
// Programs attach as direct-action cls_bpf filters under the port's clsact
// qdisc (created when missing, shared with any other tc user), each at a
// priority of its own: the template at the head of ingress, the impairment
// far behind on both hooks. They chain: each program returns TC_ACT_UNSPEC
// to let the next filter decide (at the end of the chain the frame
// passes), so this package's programs coexist with other tc users and with
// each other. Programs and maps are pinned under [PinRoot] (the BPF
// filesystem is mounted on /sys/fs/bpf when it is not there), one
// directory per namespace and port, so a supervisor attaches and a later
// CLI process [Open]s the same maps to change parameters or read counters;
// a filter is recognised as ours by its program id against the pinned
// program's. [DetachAll] removes a namespace's pins when the testbed
// deletes it (the filters go with the ports).
//
// Not tcx (BPF links, kernel 6.6+), which this package used first:
// attaching or releasing a tcx link, or deleting a port that has one,
// waits for an RCU grace period with the rtnl lock held, so a testbed's
// ports paid one each at up and at down, one after another: 15 ms per port
// attached and 11 ms per port removed with 300 ports, and 6.5 s of the
// 11 s down of 500 peripherals. cls_bpf filters cost 0.1 ms per port
// either way (docs/SCALE.md).
//
// # Impairment: loss, corruption, down
//
// [Attach] puts one program on each direction of a port: ingress sees the
// frames the peripheral sent, egress the frames going to it. Both read one
// parameter map per frame, so [Impairment.Set] takes effect at once
// without reattaching. A seeded impairment is reproducible frame by frame:
// each direction takes a sequence number per frame with an atomic
// fetch-and-add and draws splitmix64(seed + salt + (n+1)·golden), so the
// n-th frame's fate is [Decide](p, dir, n) whatever CPU ran it, and two runs
// of N frames with the same seed drop exactly the same number. The high 32
// bits of the draw decide loss, the low 32 corruption. Without a seed the
// draw is bpf_get_prandom_u32. Down drops everything (a partition).
//
// Corruption flips every bit of the last byte of the IPv4 datagram, which
// the UDP/TCP/ICMP checksum covers. The receiver catches it only if the
// frame carries a complete checksum. A sender that uses checksum offload
// (CHECKSUM_PARTIAL: the kernel stack on veth by default, a user-level
// stack sending NEEDS_CSUM through the virtio-net header) leaves the
// checksum to be computed after the flip, or trusted as already verified,
// so the corruption reaches the application unnoticed: a model of silent
// data corruption, useful for testing end-to-end checks, but not of a bad
// checksum. Netem avoids this by completing the checksum first
// (skb_checksum_help), which no BPF helper does. For checksum-detected
// corruption the sender must not offload checksums (ETHTOOL_STXCSUM off on
// the peripheral's eth0, or a stack that fills checksums itself).
//
// # Delay: no kernel method on this kernel
//
// netem is not compiled in. The BPF alternative, earliest departure time
// (a tc program sets skb->tstamp and the qdisc holds the frame until
// then), needs the fq qdisc (or etf for launch times); this kernel has
// neither, nor cake, fq_codel, sfq, prio, mqprio or the BPF qdisc
// (CONFIG_NET_SCH_BPF). Measured: a tcx egress program setting the
// delivery time 20 ms ahead with bpf_skb_set_tstamp(MONO) left the ping
// RTT at 0.06-0.1 ms with noqueue (veth's default), pfifo, tbf and htb,
// which all ignore skb->tstamp. A BPF program cannot hold a frame (no
// timers on skbs), and tbf's latency only bounds a queue, it does not delay
// an idle link. So delay has to be added in user space: in the user-level
// stack's link layer (stack/link), outside this package.
//
// # Templates
//
// [AttachTemplate] puts a separate program at the head of a port's
// ingress that passes only frames whose Ethernet source is the
// peripheral's MAC and that are IPv4 from its address or ARP whose sender
// MAC and IP are its own; anything else (other ethertypes, VLAN tags,
// frames too short) is dropped and counted by reason. Being a separate
// program at the head, it runs before the impairment whatever the order of
// attachment, so spoofed frames count as spoofed, not as lost, and the two
// are set, replaced and removed independently.
package tcbpf
