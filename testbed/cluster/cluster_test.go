package cluster

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/spec"
)

func TestDesiredFDB(t *testing.T) {
	top, err := spec.Parse("mh.yaml", []byte(`name: mh
subnet: 10.77.0.0/24
hosts: [h1, h2, h3]
segments: [{name: a}, {name: b}]
nodes:
  - {name: cpu0, kind: cpu, host: h1, segment: a}
  - {name: disk0, kind: disk, host: h2, segment: a}
  - {name: disk1, kind: disk, host: h3, segment: a}
  - {name: display0, kind: display, host: h2, segment: b}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := top.Resolve(netip.Prefix{}); err != nil {
		t.Fatal(err)
	}
	plan, err := testbed.NewPlan(top)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.ForHost("h1", netip.MustParseAddr("10.99.0.1"), 1450); err != nil {
		t.Fatal(err)
	}
	h2, h3 := netip.MustParseAddr("10.99.0.2"), netip.MustParseAddr("10.99.0.3")
	macOf := func(n string) string { nd, _ := plan.Node(n); return nd.MAC }

	// Every peer alive: flood to both, each remote node of the segment
	// to its host, nothing for the local node or other segments' nodes.
	got := entries(DesiredFDB(plan, "a", map[string]netip.Addr{"h2": h2, "h3": h3}))
	want := []string{"00:00:00:00:00:00 -> 10.99.0.2", "00:00:00:00:00:00 -> 10.99.0.3",
		macOf("disk0") + " -> 10.99.0.2", macOf("disk1") + " -> 10.99.0.3"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("segment a:\n got %v\nwant %v", got, want)
	}
	// h3 dead: its entries go.
	got = entries(DesiredFDB(plan, "a", map[string]netip.Addr{"h2": h2}))
	want = []string{"00:00:00:00:00:00 -> 10.99.0.2", macOf("disk0") + " -> 10.99.0.2"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("segment a without h3:\n got %v\nwant %v", got, want)
	}
	// A member that is not one of the testbed's hosts gets nothing.
	got = entries(DesiredFDB(plan, "b", map[string]netip.Addr{"h2": h2, "h9": netip.MustParseAddr("10.99.0.9")}))
	want = []string{"00:00:00:00:00:00 -> 10.99.0.2", macOf("display0") + " -> 10.99.0.2"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("segment b:\n got %v\nwant %v", got, want)
	}
}

func entries(es []fabric.FDBEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.String())
	}
	return out
}

func TestMergeStatus(t *testing.T) {
	st := func(phase string, nodes ...string) testbed.Status {
		s := testbed.Status{Name: "mh", Subnet: "10.77.0.0/24", Phase: phase}
		for _, ip := range nodes {
			s.Nodes = append(s.Nodes, testbed.NodeStatus{Name: "n" + ip, IP: ip})
		}
		return s
	}
	hosts := []string{"h1", "h2", "h3"}
	all := map[string]hostStatus{
		"h2": {Found: true, Hosts: hosts, Status: st(testbed.PhaseReady, "10.77.0.11")},
		"h1": {Found: true, Hosts: hosts, Status: st(testbed.PhaseReady, "10.77.0.10")},
		"h3": {Found: true, Hosts: hosts, Status: st(testbed.PhaseReady, "10.77.0.12", "10.77.0.9")},
	}
	m := mergeStatus("mh", all, nil)
	if m.Phase != testbed.PhaseReady || m.Error != "" || len(m.Nodes) != 4 || m.Nodes[0].IP != "10.77.0.9" || m.Nodes[3].IP != "10.77.0.12" {
		t.Errorf("all ready: %+v", m)
	}
	delete(all, "h3")
	m = mergeStatus("mh", all, map[string]string{"h3": "connection refused"})
	if m.Phase != "degraded" || !strings.Contains(m.Error, "host h3 not answering (connection refused)") {
		t.Errorf("h3 away: phase %s error %q", m.Phase, m.Error)
	}
	// A peer's answer with a malformed address sorts, it does not panic.
	all["h2"] = hostStatus{Found: true, Hosts: hosts, Status: st(testbed.PhaseReady, "not-an-ip")}
	if m = mergeStatus("mh", all, nil); len(m.Nodes) != 2 {
		t.Errorf("malformed address: %+v", m.Nodes)
	}
	all["h1"] = hostStatus{Found: true, Hosts: hosts, Status: st(testbed.PhaseFailed, "10.77.0.10")}
	if m = mergeStatus("mh", all, nil); m.Phase != testbed.PhaseFailed {
		t.Errorf("one failed: phase %s", m.Phase)
	}
}

// freePort returns a TCP and UDP port free on 127.0.0.1 just now.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if u, err := net.ListenPacket("udp", l.Addr().String()); err == nil {
			u.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

func startAgent(t *testing.T, name string, join ...string) (*Agent, Config) {
	t.Helper()
	return startAgentKey(t, name, nil, join...)
}

func startAgentKey(t *testing.T, name string, key []byte, join ...string) (*Agent, Config) {
	t.Helper()
	cfg := Config{
		Key:  key,
		Name: name, Bind: netip.MustParseAddr("127.0.0.1"),
		GossipPort: freePort(t), RPCPort: freePort(t), Join: join,
		ReconcileInterval: 200 * time.Millisecond, RejoinInterval: 200 * time.Millisecond,
		Socket: filepath.Join(t.TempDir(), "agent.sock"),
		Log:    slog.New(slog.DiscardHandler),
	}
	a, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, cfg
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stateOf(a *Agent, name string) string {
	for _, m := range a.Members() {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// Two agents on loopback (different ports): membership with metadata,
// a tombstone carried to a host that joins later, the control socket's
// answers, and a clean leave.
func TestAgentsOnLoopback(t *testing.T) {
	t.Setenv("NETSTATION_STATE_DIR", t.TempDir())
	a, acfg := startAgent(t, "h1")
	// A testbed downed while h2 is away: h2 learns of it when it joins.
	if _, err := a.down(t.Context(), "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("down of a testbed no host has: %v, want ErrNotFound", err)
	}
	b, _ := startAgent(t, "h2", netip.AddrPortFrom(acfg.Bind, uint16(acfg.GossipPort)).String())
	waitFor(t, "h1 and h2 to see each other", func() bool { return stateOf(a, "h2") == StateAlive && stateOf(b, "h1") == StateAlive })
	for _, m := range b.Members() {
		if m.Name == "h1" && (m.RPCPort != acfg.RPCPort || m.MTU < 1500 || m.Addr != acfg.Bind) {
			t.Errorf("h2's view of h1: %+v (metadata lost?)", m)
		}
	}
	if b.tomb("gone").IsZero() {
		t.Error("the tombstone did not reach the host that joined later")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var ms []Member
	if err := ctl.Call(ctx, acfg.Socket, "members", nil, &ms, nil); err != nil || len(ms) != 2 || !ms[0].Self {
		t.Errorf("members over the socket: %+v, %v", ms, err)
	}
	// Placement on a host without an agent is refused before anything
	// is made; so is a topology the spec rejects.
	err := ctl.Call(ctx, acfg.Socket, "up", UpArgs{Source: "t.yaml", YAML: []byte("name: mh\nhosts: [h1, h3]\nnodes: [{name: a, kind: cpu, host: h3}]\n")}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no agent for host h3") || !strings.Contains(err.Error(), "live agents: h1, h2") {
		t.Errorf("up on an unknown host: %v", err)
	}
	err = ctl.Call(ctx, acfg.Socket, "up", UpArgs{Source: "t.yaml", YAML: []byte("name: mh\nhosts: [h1]\nnodes: [{name: a, kind: cpu, host: h9}]\n")}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), `unknown host "h9"`) {
		t.Errorf("up with a node on a host not listed: %v", err)
	}
	if err := ctl.Call(ctx, acfg.Socket, "call", CallArgs{Host: "h7", Testbed: "x", Target: "cpu0", Op: "status"}, nil, nil); err == nil || !strings.Contains(err.Error(), "no agent for host h7") {
		t.Errorf("call to an unknown host: %v", err)
	}
	// A target that is not a plain name is refused by the peer.
	if _, err := b.hostCall(ctx, CallArgs{Testbed: "../etc", Target: "x", Op: "status"}, nil); err == nil {
		t.Error("host-call accepted a path as testbed name")
	}

	b.Close()
	waitFor(t, "h1 to see h2 leave", func() bool { return stateOf(a, "h2") == StateLeft })
}

func TestStartRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Name: "Bad_Name", Bind: netip.MustParseAddr("127.0.0.1")},
		{Name: "h1"},
		{Name: "h1", Bind: netip.MustParseAddr("::1")},
		{Name: "h1", Bind: netip.MustParseAddr("192.0.2.77")}, // not ours
	} {
		if a, err := Start(cfg); err == nil {
			a.Close()
			t.Errorf("Start(%+v) accepted", cfg)
		}
	}
}

// FuzzMergeRemoteState: another agent's push/pull state is untrusted
// input; it must never panic, and only well-formed, recent tombstones
// may be taken.
func FuzzMergeRemoteState(f *testing.F) {
	f.Add([]byte(`{"lab":"2026-01-02T03:04:05Z"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"x":"not a time"}`))
	f.Add([]byte(`[1,2,3]`))
	f.Fuzz(func(t *testing.T, buf []byte) {
		a := &Agent{kick: make(chan struct{}, 1), tombs: map[string]time.Time{}, hosts: map[string]*Member{}}
		(*delegate)(a).MergeRemoteState(buf, false)
		for name, ts := range a.tombs {
			if time.Since(ts) > tombstoneTTL {
				t.Fatalf("stale tombstone %q %v kept", name, ts)
			}
		}
		_ = (*delegate)(a).LocalState(false)
	})
}

// With a cluster key, only agents holding it join, and a peer request
// must carry a fresh MAC.
func TestAgentsWithKey(t *testing.T) {
	t.Setenv("NETSTATION_STATE_DIR", t.TempDir())
	key := []byte("0123456789abcdef-cluster-secret")
	a, acfg := startAgentKey(t, "h1", key)
	seed := netip.AddrPortFrom(acfg.Bind, uint16(acfg.GossipPort)).String()
	b, _ := startAgentKey(t, "h2", key, seed)
	waitFor(t, "h1 and h2 (same key) to see each other", func() bool { return stateOf(a, "h2") == StateAlive && stateOf(b, "h1") == StateAlive })
	if n := len(b.list(t.Context())); n != 0 {
		t.Errorf("list over signed RPC: %d testbeds", n)
	}
	c, _ := startAgentKey(t, "h3", []byte("another-secret-of-some-length"), seed)
	time.Sleep(time.Second) // five rejoin periods
	if stateOf(a, "h3") != "" || stateOf(c, "h1") == StateAlive {
		t.Errorf("an agent with another key joined: h1 sees h3 %q, h3 sees h1 %q", stateOf(a, "h3"), stateOf(c, "h1"))
	}

	rpc := netip.AddrPortFrom(acfg.Bind, uint16(acfg.RPCPort)).String()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	// Unsigned, signed with another key, and a replay of an old request.
	if err := ctl.CallNet(ctx, "tcp", rpc, "host-list", signed{Time: time.Now().UnixNano()}, nil, nil); err == nil || !strings.Contains(err.Error(), ErrUnauthenticated.Error()) {
		t.Errorf("unsigned: %v", err)
	}
	if err := c.callPeer(ctx, rpc, "host-list", nil, nil, nil); err == nil || !strings.Contains(err.Error(), "bad or missing MAC") {
		t.Errorf("another key: %v", err)
	}
	old := signed{Time: time.Now().Add(-2 * maxSkew).UnixNano()}
	old.MAC = a.mac("host-list", old.Time, nil)
	if err := ctl.CallNet(ctx, "tcp", rpc, "host-list", old, nil, nil); err == nil || !strings.Contains(err.Error(), "replayed") {
		t.Errorf("replay: %v", err)
	}
	if err := b.callPeer(ctx, rpc, "host-list", nil, nil, nil); err != nil {
		t.Errorf("signed with the key: %v", err)
	}
}
