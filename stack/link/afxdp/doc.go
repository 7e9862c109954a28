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
// Open creates its sockets (and attaches the XDP program) in the network
// namespace of the calling OS thread. It needs CAP_NET_ADMIN and CAP_BPF
// (root); unprivileged user namespaces cannot load the XDP program.
package afxdp
