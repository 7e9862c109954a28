// Package afpacket implements link.Link on a Linux network interface with an
// AF_PACKET socket: a TPACKET_V3 receive ring, and a TPACKET_V3 transmit
// ring (or sendmmsg) for transmission, all with PACKET_VNET_HDR so checksum
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
// still filling is complete and may be read at once. What remains is the
// wake-up: poll() on the ring fires only when a block is retired. So each
// link also binds a "doorbell": a ring-less packet socket whose filter keeps
// one byte of every frame and whose receive buffer holds only a few. It
// becomes readable as soon as a frame arrives; ReadBatch empties it, looks
// at the ring once more, and sleeps in poll() on ring, doorbell and an
// eventfd that Close rings. While frames keep coming the doorbell's queue is
// full and the kernel drops its copies cheaply, though not for free: receive
// rate measured 5-10 % lower than without the doorbell (Options.NoDoorbell),
// e.g. 440-460k vs 490-530k pps at 60 B. Measured here: a 60-byte
// round trip between two links p50 15 us / p99 70 us with the doorbell
// (kernel UDP ping-pong, FACTS.md: p50 21 us), 1 ms without it (the block
// timeout). Options.BusyPoll adds a spin on the ring before sleeping (p50
// 3.8 us at the cost of a busy core).
//
// # Namespaces
//
// Open creates its socket in the network namespace of the calling OS
// thread; the socket stays there whatever thread uses it later. Callers
// that run in the root namespace open links with a locked thread inside the
// target namespace (see internal/nstest's NS.Do).
package afpacket
