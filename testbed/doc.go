// Package testbed turns a topology (package spec) into a running testbed and
// back into nothing.
//
// The life of a testbed:
//
//	spec (YAML, validated) -> Plan (every kernel name, address and MAC,
//	decided up front, saved as plan.json) -> a supervisor process that
//	creates the fabric, starts and restarts the peripherals, and serves the
//	CLI on a unix socket -> Down.
//
// Everything a testbed creates is written to a journal in its state
// directory before it is created, and every kernel object carries the
// testbed's prefix (nstn-<testbed>-), so Down removes everything even after
// kill -9 of the CLI, the supervisor or any peripheral: it kills the
// processes whose command line names the state directory, deletes the
// journalled links and namespaces, sweeps the prefix, and removes the state
// directory.
//
// The peripheral processes (`netstation node run`) run peripherals/node
// with the configuration NodeConfig derives from the plan: the node's
// identity, kind, parameters, peers and link settings. The kinds are those the binary
// registered (cmd/netstation/kinds.go); the CLI's clients of their ops
// (the demos, bench, snapshots, members) live here too.
package testbed
