// Package afpacket implements link.Link on a Linux network interface with
// AF_PACKET sockets: recvmmsg (or a TPACKET_V3 receive ring) to receive, a
// TPACKET_V3 transmit ring (or sendmmsg) to transmit, all with
// PACKET_VNET_HDR so checksum offload and 64 KiB GSO super-frames cross a
// veth unsegmented.
//
// # Receive modes
//
// The default receive path (RxRecvmmsg) reads a ring-less packet socket
// with recvmmsg, up to 64 frames per call into buffers sized for 64 KiB
// GSO frames, and waits in the Go netpoller, so the woken reader runs on
// the P that polled. The socket queue hands over complete skbs: nothing
// can be read half-written, and a frame is delivered as soon as it is
// queued. It costs one copy more than a ring, but its buffers can be lent
// (link.Lender): the stack queues a GSO super-frame's datagrams on their
// socket where the kernel wrote them, and recvmmsg reads into other
// buffers of a pool (up to 256) until the reader releases them.
//
// RxRing maps a TPACKET_V3 receive ring. The kernel hands a block to user
// space only when it is full or its retire timer (millisecond granularity)
// fires, and only a retired block (TP_STATUS_USER on the block, stored
// after smp_wmb in prb_close_block) guarantees its packets are complete:
// in tpacket_rcv, several CPUs fill one block at once (the lock is dropped
// before the copy) and a packet's header fields are stored after
// skb_copy_bits with no write barrier, while x86 fast-string stores are not
// ordered with later stores. So RxRing reads retired blocks only, and a
// lone frame waits up to BlockTimeout; it is for bulk receive. (Earlier
// versions read the block still being filled, woken by a "doorbell"
// socket; that is outside the kernel's ABI and was removed.)
//
// A ring reader must also never wrap onto a block it finished in the same
// batch: that block is still TP_STATUS_USER until the next ReadBatch hands
// it back, and reading it again re-delivers old frames ("datagrams from
// the past") and leaves the reader behind the kernel. The stress test
// (linktest.Stress) reproduced exactly that with a 2-block ring.
//
// # Namespaces
//
// Open creates its socket in the network namespace of the calling OS
// thread; the socket stays there whatever thread uses it later. Callers
// that run in the root namespace open links with a locked thread inside the
// target namespace (see internal/nstest's NS.Do).
package afpacket
