package tcp_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/mem"
)

// Two stacks on an in-memory link: a server that echoes one line in
// upper case, and a client that dials it.
func Example() {
	la, lb := mem.Pair(macA, macB, mem.Options{})
	server, _ := stack.New(la, stack.Config{Addr: netip.MustParsePrefix("10.9.0.1/24")})
	client, _ := stack.New(lb, stack.Config{Addr: netip.MustParsePrefix("10.9.0.2/24")})
	defer server.Close()
	defer client.Close()

	l, _ := server.ListenTCP(netip.MustParseAddrPort("10.9.0.1:7"))
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		for i := range b {
			b[i] &^= 0x20
		}
		c.Write(b)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.DialTCP(ctx, netip.AddrPort{}, netip.MustParseAddrPort("10.9.0.1:7"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Write([]byte("hello"))
	c.CloseWrite()
	reply, _ := io.ReadAll(c)
	fmt.Printf("%s\n", reply)
	// Output: HELLO
}
