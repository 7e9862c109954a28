// Package arp resolves IPv4 next hops to Ethernet addresses (RFC 826) for a
// user-level stack: a cache whose entries time out, requests retried a
// bounded number of times, and a bounded queue of frames per unresolved
// address that leave as soon as the answer arrives.
//
// Lookups on the send path take no lock: resolved entries live in an
// immutable map behind an atomic pointer that is replaced when an entry is
// learned. Only misses (and the timer) take the mutex.
package arp
