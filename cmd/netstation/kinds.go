package main

import (
	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk/diskkind"
	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/peripherals/example/kv"
)

// The peripheral kinds this binary knows: topologies may declare nodes of
// them and `netstation node run` runs them. Adding a kind is its package
// and one line here (docs/peripherals.md).
func init() {
	peripherals.Register(cpu.Kind)
	peripherals.Register(diskkind.Kind)
	peripherals.Register(display.Kind)
	peripherals.Register(kv.Kind) // the example kind of docs/peripherals.md
}
