package engine_test

import (
	"fmt"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// A flow table finds the most specific owner of a received packet.
func ExampleFlowTable() {
	var ft engine.FlowTable[string]
	ft.Insert(engine.FlowKey{Proto: header.ProtocolUDP, LocalPort: 53}, "dns listener")
	ft.Insert(engine.FlowKey{Proto: header.ProtocolUDP, LocalAddr: [4]byte{10, 0, 0, 1}, LocalPort: 53,
		RemoteAddr: [4]byte{10, 0, 0, 7}, RemotePort: 5353}, "connected client")
	a, _ := ft.Lookup(header.ProtocolUDP, [4]byte{10, 0, 0, 1}, 53, [4]byte{10, 0, 0, 7}, 5353)
	b, _ := ft.Lookup(header.ProtocolUDP, [4]byte{10, 0, 0, 1}, 53, [4]byte{10, 0, 0, 8}, 5353)
	fmt.Println(a)
	fmt.Println(b)
	fmt.Println(engine.DropUDPBadChecksum)
	// Output:
	// connected client
	// dns listener
	// udp bad checksum
}
