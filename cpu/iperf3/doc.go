// Package iperf3 is a server compatible with stock iperf3 clients
// (esnet/iperf 3.x): the control protocol on one TCP port — the 37-byte
// cookie, the one-byte state machine, JSON messages with a 4-byte
// big-endian length — and the tests it drives: TCP (-P parallel streams,
// -R reverse) and UDP (-u, with iperf3's datagram header and its stream
// set-up handshake), for the time the client asks (-t). The server's
// figures go back to the client in EXCHANGE_RESULTS, so `iperf3 -c ... -J`
// shows both sides. The bidirectional test (--bidir) is refused cleanly
// with "not implemented".
//
// A Server speaks over the standard interfaces: net.Listener for the
// control and TCP data connections (iperf3's streams connect to the same
// port), and a DatagramConn, which both the kernel's *net.UDPConn and the
// user-level stack's *stack.UDPConn satisfy, for UDP streams. One test
// runs at a time, as with iperf3 -s; a client arriving meanwhile is told
// ACCESS_DENIED.
package iperf3
