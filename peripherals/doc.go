// Package peripherals is the runtime every virtual peripheral shares, and
// the plug-in API its kinds are written against.
//
// A Runtime brings up a peripheral's own user-level stack on the link it
// is given (Config.Link: AF_PACKET on a testbed node's veth, which has no
// kernel address; stack/link/mem in an in-process testbed), serves the
// control socket with the runtime's own ops (status, ping, shutdown,
// link-layer impairment, the kernel-stack baseline, the bench engine of
// peripherals/bench, the link probes), keeps the kind's counters
// (Runtime.Counter) and joins the testbed's membership (peripherals/gossip)
// through its own stack, publishing its kind, services and metadata.
//
// What a peripheral does on top is its Kind: a name, the topology
// parameters it accepts, and a Start that adds its services to the
// Runtime. Kinds register with one call (Register) in the binary that runs
// them; cpu.Kind, diskkind.Kind (peripherals/disk/diskkind) and
// display.Kind are the built-in three, and peripherals/example/kv is a
// small one written against this API alone (docs/peripherals.md).
//
// The runtime imports no kind and no cpu code: kinds import it, and talk
// to each other only over the network, in the wire formats of
// internal/wire.
package peripherals
