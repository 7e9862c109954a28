// Package link defines how a user-level stack moves Ethernet frames in and
// out of the world: the batch-first Link interface, the virtio-net header
// that carries checksum-offload and GSO metadata beside each frame, and the
// capability bits a link advertises.
//
// Implementations live in sub-packages: mem (an in-memory pair for tests and
// benchmarks without root), afpacket (TPACKET_V3 rings on a veth) and afxdp.
package link
