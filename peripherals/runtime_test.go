package peripherals_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/peripheraltest"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// probeKind is a kind with one parameter, one op and one counter: what the
// runtime tests need of a kind, and nothing else.
var probeKind = peripherals.Kind{
	Name:   "probe",
	Params: []peripherals.Param{{Name: "greeting", Doc: "what the hello op answers"}},
	Check: func(ps peripherals.Params) error {
		if g := ps.String("greeting", "hi"); strings.ContainsAny(g, "\n") {
			return errors.New("greeting: one line")
		}
		return nil
	},
	Start: func(ctx context.Context, rt *peripherals.Runtime) (func() error, error) {
		hellos := rt.Counter("hellos")
		greeting := rt.Params().String("greeting", "hi")
		peripherals.HandleArgs(rt, opHello, func(_ context.Context, name string, s *peripherals.Stream) (any, error) {
			hellos.Add(1)
			_ = s.Send("thinking")
			return greeting + " " + name, nil
		})
		rt.AddService("hello/udp:9999")
		return nil, nil
	},
}

const opHello peripherals.Op = "hello"

func init() { peripherals.Register(probeKind) }

func TestRuntimeOnInProcessTestbed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := peripheraltest.New(t, peripheraltest.Options{},
		peripheraltest.Node{Name: "p0", Kind: "probe", Params: peripherals.Params{"greeting": "hello"}},
		peripheraltest.Node{Name: "p1", Kind: "probe"},
	)
	tb.Start(ctx)

	// The kind's op, over the control socket, streaming.
	var reply string
	var streamed []string
	if err := tb.Call(ctx, "p0", opHello, "world", &reply, func(m json.RawMessage) error {
		streamed = append(streamed, string(m))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if reply != "hello world" || len(streamed) != 1 || streamed[0] != `"thinking"` {
		t.Errorf("hello: %q, streamed %q", reply, streamed)
	}
	// The same op in-process.
	if err := tb.Node("p1").Call(ctx, opHello, "you", &reply, nil); err != nil || reply != "hi you" {
		t.Errorf("in-process hello: %q, %v", reply, err)
	}

	// Ping between the two stacks on the in-memory switch.
	var sum peripherals.PingSummary
	if err := tb.Call(ctx, "p0", peripherals.OpPing, peripherals.PingArgs{Dst: tb.Peer("p1").Addr.Addr(), Count: 3, Interval: time.Millisecond}, &sum, nil); err != nil {
		t.Fatal(err)
	}
	if sum.Sent != 3 || sum.Received != 3 {
		t.Errorf("ping: %+v", sum)
	}

	// Status: identity, services, the kind's counter, the stack's counters.
	var st peripherals.Status
	if err := tb.Call(ctx, "p0", peripherals.OpStatus, nil, &st, nil); err != nil {
		t.Fatal(err)
	}
	if st.Node != "p0" || st.Kind != "probe" || st.Addr != tb.Peer("p0").Addr.String() {
		t.Errorf("status identity: %+v", st)
	}
	if st.Counters["hellos"] != 1 || st.RX == 0 || st.TX == 0 {
		t.Errorf("status counters: kind %v, rx %d tx %d", st.Counters, st.RX, st.TX)
	}
	for _, want := range []string{"hello/udp:9999", "bench/udp:5301", "gossip/udp+tcp:7946"} {
		if !strings.Contains(strings.Join(st.Services, " "), want) {
			t.Errorf("services %v lack %s", st.Services, want)
		}
	}

	// Membership: p1 finds p0 by name and kind, and refuses a wrong kind.
	if err := tb.WaitMembership(ctx); err != nil {
		t.Fatal(err)
	}
	if a, err := tb.Node("p1").FindPeer(ctx, "p0", "probe", false); err != nil || a != tb.Peer("p0").Addr.Addr() {
		t.Errorf("FindPeer p0: %v, %v", a, err)
	}
	if _, err := tb.Node("p1").FindPeer(ctx, "p0", "disk", false); err == nil || !strings.Contains(err.Error(), "not a disk") {
		t.Errorf("FindPeer of the wrong kind: %v", err)
	}

	// Errors: an unknown op; the kernel baseline on a link with no kernel
	// interface.
	if err := tb.Call(ctx, "p0", "no-such-op", nil, nil, nil); err == nil || !strings.Contains(err.Error(), "unknown op") {
		t.Errorf("unknown op: %v", err)
	}
	if err := tb.Node("p0").Call(ctx, peripherals.Op("no-such-op"), nil, nil, nil); !errors.Is(err, peripherals.ErrUnknownOp) {
		t.Errorf("in-process unknown op: %v, want ErrUnknownOp", err)
	}
	if err := tb.Call(ctx, "p0", peripherals.OpKernel, true, nil, nil); err == nil || !strings.Contains(err.Error(), "not a kernel interface") {
		t.Errorf("kernel baseline on mem: %v", err)
	}

	// Shutdown over the control socket ends the peripheral.
	if err := tb.Call(ctx, "p1", peripherals.OpShutdown, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-tb.Node("p1").Done():
	case <-ctx.Done():
		t.Fatal("shutdown did not stop p1")
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	addr := netip.MustParsePrefix("10.77.0.10/24")
	for _, x := range []struct {
		name string
		cfg  peripherals.Config
		want error
	}{
		{"unknown kind", peripherals.Config{Name: "x", Kind: "teapot"}, peripherals.ErrUnknownKind},
		{"unknown parameter", peripherals.Config{Name: "x", Kind: "probe", Params: peripherals.Params{"colour": "blue"}}, peripherals.ErrParam},
		{"bad parameter", peripherals.Config{Name: "x", Kind: "probe", Params: peripherals.Params{"greeting": "a\nb"}}, peripherals.ErrParam},
	} {
		l, peer := mem.Pair(mac, net.HardwareAddr{2, 0, 0, 0, 0, 2}, mem.Options{})
		x.cfg.Link, x.cfg.MAC, x.cfg.Addr = l, mac, addr
		rt, err := peripherals.Start(context.Background(), x.cfg)
		if rt != nil {
			rt.Close()
		}
		if !errors.Is(err, x.want) || !errors.Is(err, peripherals.ErrConfig) {
			t.Errorf("%s: %v, want %v", x.name, err, x.want)
		}
		// The runtime owns the link from Start on, so it closed it.
		if _, err := peer.ReadBatch(make([]link.Frame, 1)); err == nil {
			t.Errorf("%s: the link was left open", x.name)
		}
	}
	if _, err := peripherals.Start(context.Background(), peripherals.Config{Name: "x", Kind: "probe"}); !errors.Is(err, peripherals.ErrConfig) {
		t.Errorf("no link: %v", err)
	}
}
