// Package ipv4 splits IPv4 datagrams into fragments on send and reassembles
// them on receive (RFC 791, RFC 815), the way a kernel peer expects:
// fragment offsets in 8-byte units, the more-fragments flag on all but the
// last fragment, one identification per datagram.
//
// Reassembly is defensive: its memory is bounded (the oldest datagrams are
// evicted first when a flood fills it), incomplete datagrams time out, and
// any overlap between fragments drops the whole datagram (the rule RFC
// 5722 made mandatory for IPv6, which Linux also applies to IPv4), so
// overlapping-fragment tricks cannot smuggle bytes past a filter.
package ipv4
