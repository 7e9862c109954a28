// Package dgram moves batches of UDP datagrams over either stack: the
// user-level stack's sockets (which batch natively and turn runs of equal
// datagrams into GSO super-frames) and kernel sockets (recvmmsg and
// sendmmsg through golang.org/x/net/ipv4). Protocols written against
// dgram.Conn — the bench engine, the disk server and its client — measure
// both stacks with the same code, so a side-by-side figure compares stacks,
// not programs.
package dgram
