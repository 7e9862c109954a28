// Package dgram moves batches of UDP datagrams over either stack: the
// user-level stack's sockets (which batch natively and turn runs of equal
// datagrams into GSO super-frames) and kernel sockets through
// golang.org/x/net/ipv4. Protocols written against dgram.Conn — the bench
// engine, the disk server and its client — measure both stacks with the
// same code, so a side-by-side figure compares stacks, not programs.
//
// A kernel socket runs in one of two modes. KernelBest (Kernel, and Of for
// a *net.UDPConn) is the kernel at its best: runs of equal-sized
// datagrams to one peer leave as UDP_SEGMENT super-datagrams built from
// the caller's buffers as iovecs (no copy), the receiver has UDP_GRO on
// and splits each super-frame back into datagrams, and calls are batched
// (sendmmsg/recvmmsg). KernelPlain sends and receives one frame per
// datagram, still batched: the handicapped baseline, kept as a labelled
// extra. Stats proves which offloads a socket used and counts its
// receive-queue overflow (SO_RXQ_OVFL).
package dgram
