package kv_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/example/kv"
	"github.com/netstation/netstation/peripherals/peripheraltest"
)

func init() { peripherals.Register(kv.Kind) }

// client is a line-protocol client over a net.Conn.
type client struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func (c *client) do(req string) string {
	c.t.Helper()
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c.c, "%s\n", req); err != nil {
		c.t.Fatalf("%s: %v", req, err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("%s: %v", req, err)
	}
	return strings.TrimSuffix(line, "\n")
}

// TestKVOnInProcessTestbed brings up two kv nodes on an in-memory segment
// and talks to kv0 over TCP from kv1's user-level stack.
func TestKVOnInProcessTestbed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := peripheraltest.New(t, peripheraltest.Options{},
		peripheraltest.Node{Name: "kv0", Kind: "kv", Params: peripherals.Params{kv.ParamMaxKeys: "2"}},
		peripheraltest.Node{Name: "kv1", Kind: "kv"},
	)
	tb.Start(ctx)
	from := tb.Node("kv1").Stack()
	conn, err := from.DialTCP(ctx, netip.AddrPortFrom(from.Addr(), 0), netip.AddrPortFrom(tb.Peer("kv0").Addr.Addr(), kv.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := &client{t: t, c: conn, r: bufio.NewReader(conn)}
	for _, x := range []struct{ req, want string }{
		{"GET a", "NOTFOUND"},
		{"SET a hello world", "OK"},
		{"GET a", "VALUE hello world"},
		{"SET b 2", "OK"},
		{"SET c 3", "ERR full"},
		{"SET a again", "OK"}, // an existing key still takes a new value when full
		{"DEL b", "OK"},
		{"DEL b", "NOTFOUND"},
		{"PUT a 1", `ERR bad request: unknown command "PUT" (GET, SET or DEL)`},
		{"GET a b", "ERR bad request: GET takes one key"},
		{"GET " + strings.Repeat("k", kv.MaxKey+1), fmt.Sprintf("ERR bad request: a key is 1 to %d bytes", kv.MaxKey)},
		{"GET a", "VALUE again"},
	} {
		if got := c.do(x.req); got != x.want {
			t.Errorf("%.20q: got %q, want %q", x.req, got, x.want)
		}
	}
	var st kv.Stats
	if err := tb.Call(ctx, "kv0", kv.OpStats, nil, &st, nil); err != nil {
		t.Fatal(err)
	}
	want := kv.Stats{Keys: 1, Gets: 3, Sets: 3, Dels: 2, Misses: 2, Errors: 4}
	if st != want {
		t.Errorf("kv-stats %+v, want %+v", st, want)
	}
	var status peripherals.Status
	if err := tb.Call(ctx, "kv0", peripherals.OpStatus, nil, &status, nil); err != nil {
		t.Fatal(err)
	}
	if status.Kind != "kv" || status.Counters["kv_sets"] != 3 || status.Counters["kv_errors"] != 4 {
		t.Errorf("status: kind %q, counters %v", status.Kind, status.Counters)
	}
	found := false
	for _, s := range status.Services {
		found = found || s == fmt.Sprintf("kv/tcp:%d", kv.Port)
	}
	if !found {
		t.Errorf("services %v lack kv/tcp:%d", status.Services, kv.Port)
	}

	// A line past the limit is answered with an error and the connection
	// closed, not buffered without bound.
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go fmt.Fprintf(conn, "SET big %s\n", strings.Repeat("v", kv.MaxValue+200))
	line, _ := c.r.ReadString('\n')
	if !strings.HasPrefix(line, "ERR line longer than") {
		t.Errorf("long line: got %q", line)
	}
}

func TestKVParams(t *testing.T) {
	for _, x := range []struct {
		ps peripherals.Params
		ok bool
	}{
		{nil, true},
		{peripherals.Params{kv.ParamPort: "7000", kv.ParamMaxKeys: "10"}, true},
		{peripherals.Params{kv.ParamPort: "0"}, false},
		{peripherals.Params{kv.ParamPort: "70000"}, false},
		{peripherals.Params{kv.ParamMaxKeys: "many"}, false},
		{peripherals.Params{kv.ParamMaxKeys: "0"}, false},
		{peripherals.Params{"colour": "blue"}, false},
	} {
		if err := kv.Kind.CheckParams(x.ps); (err == nil) != x.ok {
			t.Errorf("%v: err %v, want ok=%v", x.ps, err, x.ok)
		}
	}
}

func TestParseRequest(t *testing.T) {
	for _, x := range []struct {
		line string
		want kv.Request
		ok   bool
	}{
		{"GET k", kv.Request{Cmd: kv.CmdGet, Key: "k"}, true},
		{"SET k v w", kv.Request{Cmd: kv.CmdSet, Key: "k", Value: "v w"}, true},
		{"SET k ", kv.Request{Cmd: kv.CmdSet, Key: "k", Value: ""}, true},
		{"DEL k", kv.Request{Cmd: kv.CmdDel, Key: "k"}, true},
		{"SET k", kv.Request{}, false},
		{"GET", kv.Request{}, false},
		{"GET ", kv.Request{}, false},
		{"get k", kv.Request{}, false},
		{"", kv.Request{}, false},
	} {
		got, err := kv.ParseRequest(x.line)
		if (err == nil) != x.ok || got != x.want {
			t.Errorf("%q: got %+v, %v; want %+v ok=%v", x.line, got, err, x.want, x.ok)
		}
	}
}

// FuzzParseRequest: any line parses or is refused with ErrRequest, never
// panics, and what parses stays within the limits and prints back to
// itself.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{"GET a", "SET a b c", "DEL a", "SET  x", "GET a b", "\x00", "SET k " + strings.Repeat("v", kv.MaxValue+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		req, err := kv.ParseRequest(line)
		if err != nil {
			return
		}
		if req.Key == "" || len(req.Key) > kv.MaxKey || strings.Contains(req.Key, " ") || len(req.Value) > kv.MaxValue {
			t.Fatalf("%q parsed to %+v, out of the limits", line, req)
		}
		back := string(req.Cmd) + " " + req.Key
		if req.Cmd == kv.CmdSet {
			back += " " + req.Value
		}
		if back != line {
			t.Fatalf("%q parsed to %+v, which prints as %q", line, req, back)
		}
	})
}
