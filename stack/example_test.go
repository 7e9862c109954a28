package stack_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/mem"
)

// Two stacks on an in-memory veth pair exchange a datagram.
func Example() {
	la, lb := mem.Pair(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{})
	a, _ := stack.New(la, stack.Config{Addr: netip.MustParsePrefix("10.0.0.1/24")})
	b, _ := stack.New(lb, stack.Config{Addr: netip.MustParsePrefix("10.0.0.2/24")})
	defer a.Close()
	defer b.Close()

	server, _ := a.ListenUDP(netip.MustParseAddrPort("0.0.0.0:9"))
	client, _ := b.DialUDP(netip.AddrPort{}, netip.MustParseAddrPort("10.0.0.1:9"))
	client.Write([]byte("hello"))

	buf := make([]byte, 100)
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, _ := server.ReadFrom(buf)
	fmt.Printf("%s from %v\n", buf[:n], from.(*net.UDPAddr).IP)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := b.Ping(ctx, netip.MustParseAddr("10.0.0.1"), 56)
	fmt.Println("ping error:", err)
	// Output:
	// hello from 10.0.0.2
	// ping error: <nil>
}
