// Package gossip lets peripherals find each other: every peripheral joins
// a memberlist (SWIM) cluster over its own network stack and publishes
// what it is — kind, service ports, capacity — as node metadata. A cpu
// looks disks and displays up by membership instead of by static address,
// and a killed peripheral is declared dead by all the others, then seen
// alive again when its restart rejoins.
//
// Transport carries memberlist over any stack that offers a datagram
// socket and TCP streams (the Network interface): the user-level stack
// (its UDP sockets and stack/tcp) in a testbed, kernel sockets in tests.
// Unlike memberlist's own NetTransport, it never dials from whatever
// namespace the calling thread happens to be in: every packet and stream
// leaves through the Network it was given.
package gossip
