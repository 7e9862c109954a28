// Package afpacket implements link.Link on a Linux network interface with
// AF_PACKET sockets: recvmmsg (or a TPACKET_V3 or V2 receive ring) to receive, a
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
// RxFrameRing maps a TPACKET_V2 receive ring instead: fixed 2 KiB slots,
// each with a status word that tpacket_rcv stores after the frame and its
// header, behind a full barrier (smp_mb before __packet_set_status). A
// slot that reads TP_STATUS_USER is complete whatever other CPUs are
// filling, so the reader takes frames one by one as they land, with no
// block and no timer, and a poller (link.Poller) takes them with loads
// from ring memory, no system call. It is the latency path: a 64-byte
// frame sent by one sendto (PACKET_QDISC_BYPASS) is in the peer's ring
// when the call returns, the veth's receive path having run on the
// sending CPU with no XDP program and no copy but the ring's. A throwaway
// probe (raw frames ping-ponged between two namespaces, one thread per
// CPU, 20,000 exchanges, 2026-12-02, load 2-5) timed that sendto at
// p50 1.4-1.8 us and the round trip at 2.5-2.7 us, against 2.8-3.0 and
// 5.5-5.9 us for the full AF_XDP link (XSK sendto, XDP program, copy into
// UMEM). Frames longer than a slot (GSO super-frames) are not cut:
// with PACKET_COPY_THRESH the kernel queues the whole skb on the socket
// before it publishes the slot (TP_STATUS_COPY), in slot order, and the
// reader takes a run of them with one recvmmsg into lendable buffers, so
// order holds across both kinds. Small frames are views of their slot until the next
// ReadBatch; a slot is given back then, in ring order, and a batch never
// walks more slots than it may deliver, so it cannot wrap onto its own.
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
