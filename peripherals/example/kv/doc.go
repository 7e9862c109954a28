// Package kv is an example peripheral kind: a network-attached key-value
// store, the smallest useful device a user might add to a testbed. It is
// written against the public API of package peripherals alone, and
// docs/peripherals.md walks through it.
//
// A kv node serves a line protocol over TCP (port Port, or the port
// parameter) on its own user-level stack:
//
//	SET <key> <value>   ->  OK
//	GET <key>           ->  VALUE <value>  |  NOTFOUND
//	DEL <key>           ->  OK  |  NOTFOUND
//	anything else       ->  ERR <why>
//
// Keys are 1 to MaxKey bytes without spaces; values run to the end of the
// line, at most MaxValue bytes; a line ends with "\n" (a preceding "\r" is
// dropped). A node holds at most max_keys keys (parameter, default
// DefaultMaxKeys): a SET of a new key beyond that answers "ERR full".
// Its counters (gets, sets, dels, misses, errors) show in
// `netstation status`; the kv-stats control op returns them with the
// number of keys held.
package kv
