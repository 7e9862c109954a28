// Package linktest holds what the privileged tests and benchmarks of the
// link implementations (stack/link/afpacket, stack/link/afxdp) share: a
// pair of test-owned namespaces joined by a veth, test frames, a kernel UDP
// peer, the transmit, receive and round-trip benchmark loops, so that
// every link is measured the same way, and a stress check (Stress) that
// verifies every frame a link delivers under full load.
//
// It imports no link implementation (their in-package tests import it), only
// the link interface: implementation-specific counters come in as funcs.
package linktest
