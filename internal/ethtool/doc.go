// Package ethtool reads and sets the two offloads netstation switches, GRO
// and TSO, through the legacy SIOCETHTOOL commands.
//
// They matter on a veth for more than coalescing. With GRO on, the veth's
// receive side runs as a NAPI instance (Linux 5.13 and later), and only a
// socket whose packets arrive through NAPI can busy-poll (SO_BUSY_POLL).
// But veth_xmit hands a packet to that NAPI only if the sending veth has no
// TSO, or the packet is a local socket's UDP with GRO forwarding on the
// receiver (veth_skb_is_eligible_for_gro): TCP from a kernel socket takes
// NAPI only with TSO off on the sender. The kernel-at-its-best latency
// baseline needs exactly that. The calls act on the network namespace of
// the calling OS thread.
package ethtool
