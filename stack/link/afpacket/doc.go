// Package afpacket implements link.Link on a Linux network interface with an
// AF_PACKET socket: a TPACKET_V3 receive ring and sendmmsg (or a TPACKET_V3
// transmit ring) for transmission, both with PACKET_VNET_HDR so checksum
// offload and 64 KiB GSO super-frames cross a veth unsegmented.
//
// # The TPACKET_V3 latency trap
//
// The kernel hands a TPACKET_V3 block to user space only when the block is
// full or its retire timer (millisecond granularity) fires, and it wakes
// poll() only then. A request/response exchange of a few small frames would
// wait for the timer on every hop. This package does not wait for the block:
// the kernel fills a packet's header (tp_status, tp_len, tp_mac, ...) after
// copying its bytes, and every block is wiped before it is given back, so a
// packet whose header fields are all non-zero in the block the kernel is
// still filling is complete and may be read at once. ReadBatch therefore
// reads packets out of the open block, optionally spins for
// Options.BusyPoll on the next packet's header before sleeping, and sleeps
// in poll() (woken by a block being retired, at the latest after
// Options.BlockTimeout, or by Close).
//
// # Namespaces
//
// Open creates its socket in the network namespace of the calling OS
// thread; the socket stays there whatever thread uses it later. Callers
// that run in the root namespace open links with a locked thread inside the
// target namespace (see internal/nstest's NS.Do).
package afpacket
