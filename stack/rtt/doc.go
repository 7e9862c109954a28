// Package rtt is the retransmission-timeout estimator of RFC 6298, shared
// by every sender that times its own retransmissions: the TCP of package
// stack/tcp and the storage protocol's client in cpu/storage.
//
// It holds no lock and reads no clock: the caller measures round trips
// (Karn's rule is the caller's, since only it knows which samples are
// ambiguous) and serializes access.
package rtt
