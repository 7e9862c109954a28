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
// super-frames longer than MaxFrame.
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
// polling readers ("user-xsk-poll") beat polling AF_PACKET ("user-poll")
// on one CPU: in one run on 2026-12-01 with other work on the machine, TCP p50 8.5 vs
// 10.0 us and UDP 8.5 vs 10.3 us (kernel sockets 12.5 and 11.8 us); across
// two CPUs the gain was smaller (TCP 7.7 vs 9.1 us) and the kernel's busy
// polling stayed ahead (6.5 us). Each XSK send costs the sender about as
// much as an AF_PACKET send (2-2.5 us in copy mode, the receiver's XDP
// program and copy included), so two of them are most of the round trip.
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
