// Package peripheraltest runs a whole testbed in one process, without
// privileges: every node a peripherals.Runtime of its registered kind, on a
// port of one in-memory learning switch (stack/link/mem.Switch), with its
// control socket in a temporary state directory and the membership joined
// over the user-level stacks, as on a real testbed. Only the link differs:
// what a testbed's node process opens with AF_PACKET on a veth into a
// bridge, this package plugs into the switch.
//
// It is for end-to-end tests of kinds and of the protocols between them
// (the cpu's storage demo against a disk, a transfer from disk to display,
// capability refusals), fast enough for every `go test` and `-race`.
package peripheraltest
