// Package tcp is netstation's user-level TCP (RFC 9293) for the stack
// package: connections that satisfy net.Conn, a net.Listener, and the
// demultiplexer that hands received segments to them.
//
// The package does not know about Ethernet, IPv4, ARP or links: it talks
// to the layer below through the small Network and Route interfaces, which
// package stack implements (stack/tcp.go). Segments leave in buffers with
// Headroom bytes in front, where the route writes the link and IP headers,
// so a segment is built once and never copied again on its way out.
//
// What is implemented:
//   - the RFC 9293 state machine: active, passive and simultaneous open;
//     orderly close in either order and simultaneous close; TIME_WAIT
//     (Config.TimeWait, 1 s by default: a testbed does not need 2*MSL);
//     RST generation and acceptance per §3.10.7, with RFC 5961 challenge
//     ACKs for in-window RSTs and SYNs;
//   - options: MSS, window scaling and timestamps (RFC 7323: RTTM and
//     PAWS), SACK-permitted and SACK blocks (RFC 2018) both ways;
//   - reliability: RTO per RFC 6298 with Karn's rule and exponential
//     backoff (minimum 200 ms like Linux, not the RFC's 1 s), fast
//     retransmit; recovery with a SACK scoreboard and the RFC 6675 pipe
//     estimate (holes first, data SACKed is not resent even after a
//     timeout), NewReno (RFC 6582) when the peer has no SACK; delayed ACKs
//     (every second full segment or 40 ms), zero-window probes on a
//     persist timer, keepalive, Nagle (off by default, as Go's net package
//     sets TCP_NODELAY);
//   - congestion control: slow start from an initial window of 10
//     segments (RFC 6928), CUBIC (RFC 9438) in congestion avoidance;
//   - speed: with a GSO-capable route, sends leave as TCPv4 super-frames of
//     up to 64 KiB, their payload gathered by the link straight from the
//     send ring (Gatherer: only the headers are built apart); received
//     super-frames are taken as they are; payload is
//     copied at most once, into ring buffers indexed by sequence number
//     that grow on demand up to Config.MaxBuffer (4 MiB by default) and
//     hold out-of-order data in place. When the network lends the buffers
//     frames arrive in (Lender), a super-frame's payload is not copied at
//     all, in order or out of order (unless it overlaps data held out of
//     order): it stays in the link's buffer until the reader has consumed
//     it (lend.go). Segments are taken in receive batches (Input),
//     and each connection sends what the batch calls for once, when the
//     batch ends (Flush): a bulk receiver acknowledges once per batch. The
//     steady state allocates nothing per segment.
package tcp
