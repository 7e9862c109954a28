// Package afxdp implements link.Link with an AF_XDP socket (XSK) in copy
// mode, the only mode a veth offers.
//
// Two shapes are offered. The full XSK link transmits through the XSK's
// transmit ring and receives through an XDP program (built with cilium/ebpf's
// asm package, no clang) that redirects every frame of queue 0 to the socket;
// attaching it switches the veth to its native-XDP receive path. The mixed
// link (the default, RxAFPacket) transmits through the XSK and receives
// through an afpacket.Link: on this machine kind XSK transmit is the fastest
// transmit path and AF_PACKET the fastest receive path.
//
// AF_XDP carries no virtio-net header: the XSK transmit path can neither
// leave a checksum to the kernel nor send GSO super-frames, so Caps reports
// neither and MaxFrame is MTU+14 for both shapes. The mixed link's receive
// half still reports the kernel's checksum state in each frame's VNetHdr
// (NEEDS_CSUM from a kernel peer on veth) and drops, counted, GSO
// super-frames longer than MaxFrame. The full XSK link gets no checksum
// state at all, and on a veth a kernel sender's frames arrive unfinished:
// a kernel UDP datagram reached the XSK's ring with the pseudo-header sum
// in its checksum field (CHECKSUM_PARTIAL; XDP has nothing to pass that
// on with), which fails the stack's checksum check. So the full XSK link
// suits peers that finish their checksums (our stacks, a kernel with tx
// checksumming off on its veth); the mixed link talks to any peer.
//
// # Polling (run to completion)
//
// Both shapes implement link.Poller. The full XSK link's receive ring is
// memory shared with the kernel: a reader that drives the link itself
// (stack.Config.PollBudget) sees a frame with no system call, as soon as
// the sending CPU has run the veth's NAPI and the XDP program inside its
// own transmit call and copied the frame into UMEM. The goroutine blocked
// in ReadBatch waits in the Go netpoller on a duplicate of the XSK's
// descriptor (the socket signals readability when it fills the ring), and
// it and pollers take frames in turns (link.RxTurn), so frames are
// processed once and in order. A poller that finds the ring empty yields
// the CPU, as afpacket's does, and looks again as soon as it is back (what
// a peer on the same CPU sent meanwhile costs no further round of the
// caller's loop). The mixed link polls its AF_PACKET half.
//
// On BenchmarkRR (stack/interop; 64-byte request/response, our stack at
// both ends, each process pinned, GOMAXPROCS=1), the full XSK link with
// polling readers ("user-xsk-poll") beats polling AF_PACKET's recvmmsg
// ("user-poll") and, on one CPU, kernel sockets. afpacket's TPACKET_V2
// ring (afpacket.RxFrameRing, "user-ring-poll") beats it in turn across
// CPUs, by 1.5-2.5 us of p50: its transmit call runs no XDP program and
// makes no copy but the ring's (docs/ARCHITECTURE.md, "Request/response
// latency"). 5 runs on 2026-12-01, 22:45-22:49 UTC,
// with other work on the machine (load 6-27), p50 in us, same run:
//
//	                  user-xsk-poll  user-poll  kernel (same CPU) / kernel-busypoll (across)
//	TCP, same CPU     8.1-12.9       11.1-16.7  11.5-17.8   xsk/kernel 0.65-0.81
//	UDP, same CPU     7.3-11.3       10.3-18.5  11.6-20.4   0.44-0.72
//	TCP, across CPUs  6.5-9.1        7.9-11.4   5.9-8.0     1.09-1.31
//	UDP, across CPUs  5.8-8.1        7.8-9.8    5.8-7.4     0.86-1.27
//
// On one CPU its UDP p99 stayed under the kernel's in all 5 runs, its TCP
// p99 over it in 4; across CPUs the kernel's busy polling kept p99 at
// 66-122 us where ours reached 78-1712. Two quieter runs at 23:25 (load
// 5-12): p50 xsk/kernel 0.52-0.62 (TCP) and 0.58-0.64 (UDP) on one CPU,
// 1.03 (TCP) and 0.86-1.07 (UDP) against busy polling across CPUs, and p99
// under the kernel's in 7 of the 8 rows. Each XSK send costs the sender
// about as much as an AF_PACKET send (2-2.5 us in copy mode, the
// receiver's XDP program and copy included): two of them are most of a
// round trip across CPUs. Reproduce with go test -run '^$' -bench
// 'BenchmarkRR/(tcp|udp)/same-cpu/(user-poll|user-xsk-poll|kernel)$'
// -benchtime 20000x ./stack/interop, and cross-cpu with kernel-busypoll.
//
// That the blocked reader waits in the netpoller has a price, though not
// where it first seemed: the XSK stays registered with the runtime's epoll
// instance, so every frame the socket receives runs sock_def_readable and
// an epoll callback inside the sender's transmit call (and wakes the
// receiver's netpoller thread when one sleeps in epoll_wait). In a profile
// of a BenchmarkRR client (udp/cross-cpu/user-xsk-poll, 2026-12-02) that
// wake-up was half of the client's sendto samples, and timing kick's
// sendto gave p50 2.6-2.9 us with the XSK out of every epoll instance
// against 3.2-3.5 us in it (3 alternating rounds, loaded machine). But the
// ring is published (xsk_flush) before the wake-up, so the peer's poller
// already has the frame: those rounds' round trips were no shorter. Taking
// the XSK out of the reader's epoll while pollers run took 0.5-1 us off
// the cross-CPU TCP p50 and 0.3 us off UDP's (3 sets of 6-10 alternating
// rounds), but TCP's p99 rose in every set; not landed (see
// docs/ARCHITECTURE.md, "Request/response latency").
//
// kick sends a few frames (a request, a reply) with a raw system call:
// MSG_DONTWAIT cannot block, and entersyscall/exitsyscall cost 0.1-0.3 us
// per call here. The poller's sched_yield stays an ordinary system call:
// raw, it halves a poll round (~0.3 against ~0.6 us) but the runtime cannot
// hand the processor on while the yielder is off the CPU, and p99 across
// CPUs rose from 0.06-0.4 ms to 0.7-3 ms (3 alternating rounds).
//
// A copy-mode XSK cannot busy-poll. Since Linux 6.13 ("xsk: Bring back
// busy polling support") an XSK takes its NAPI id at bind time and only in
// zero-copy mode, which veth lacks; received frames no longer set it. On
// this machine kind (Linux 6.18) SO_INCOMING_NAPI_ID on the XSK stays 0
// after frames arrive (GRO on, so the veth's NAPI exists), and with
// SO_BUSY_POLL and SO_PREFER_BUSY_POLL set, and napi_defer_hard_irqs and
// gro_flush_timeout on the veth, recvfrom(MSG_DONTWAIT) ran no NAPI: frames
// waited for the gro_flush_timeout timer (a throwaway experiment). So the
// sender's CPU always does the receive work, and no option here turns busy
// polling on.
//
// Open creates its sockets (and attaches the XDP program) in the network
// namespace of the calling OS thread. It needs CAP_NET_ADMIN and CAP_BPF
// (root); unprivileged user namespaces cannot load the XDP program.
package afxdp
