package bench_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/netstation/netstation/peripherals/bench"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/link/mem"
)

// Two user-level stacks on an in-memory link: a sender streams 1000
// datagrams to a receiver, and the two sides merge into one report.
func Example() {
	la, lb := mem.Pair(net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{})
	a, _ := stack.New(la, stack.Config{Addr: netip.MustParsePrefix("10.0.0.1/24")})
	b, _ := stack.New(lb, stack.Config{Addr: netip.MustParsePrefix("10.0.0.2/24")})
	defer a.Close()
	defer b.Close()
	out, _ := a.ListenUDP(netip.MustParseAddrPort("10.0.0.1:0"))
	in, _ := b.ListenUDP(netip.MustParseAddrPort("0.0.0.0:5201"))

	ctx := context.Background()
	var recv *bench.Result
	var wg sync.WaitGroup
	wg.Go(func() { recv, _ = bench.RunReceiver(ctx, bench.User(in), bench.ReceiverOptions{Stack: "user"}) })
	sent, _ := bench.RunSender(ctx, bench.User(out), netip.MustParseAddrPort("10.0.0.2:5201"),
		bench.SenderOptions{Stack: "user", Size: 512, Count: 1000, Rate: 100e6})
	wg.Wait()

	rep := bench.Merge(sent, recv)
	fmt.Println("sent", rep.End.SumSent.Packets, "received", recv.Sum.Packets,
		"lost", rep.End.Sum.LostPackets, "bytes", rep.End.SumReceived.Bytes)
	// Output:
	// sent 1000 received 1000 lost 0 bytes 512000
}
