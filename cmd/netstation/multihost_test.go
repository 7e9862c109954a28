package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/cluster"
	"github.com/vishvananda/netlink"
)

// The multi-host tests simulate hosts with namespaces: each "host" is a
// namespace with one veth onto an underlay bridge (in a namespace of its
// own) and runs `netstation agent` inside it, with a state root of its
// own. The hosts share this kernel, so their testbed namespaces share
// /run/netns: that is what the per-host fabric namespace names and the
// host-limited teardown are for.

// simHost is one simulated host.
type simHost struct {
	name  string
	ns    *nstest.NS
	addr  string // underlay address
	state string // NETSTATION_STATE_DIR of its agent and CLI
	log   string // the agent's log file
	agent *exec.Cmd
}

type simCluster struct {
	t     *testing.T
	ul    *nstest.NS
	hosts []*simHost
}

// newSimCluster starts n simulated hosts h1..hn on 10.99.0.0/24 with
// agents that join h1, and waits until every agent sees every other alive.
// Everything is removed on cleanup, even when the test fails.
func newSimCluster(t *testing.T, n int) *simCluster {
	t.Helper()
	c := &simCluster{t: t, ul: nstest.New(t, "ul")}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ulbr"
	if err := c.ul.Handle.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		t.Fatal(err)
	}
	br, err := c.ul.Handle.LinkByName("ulbr")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ul.Handle.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		h := &simHost{name: fmt.Sprintf("h%d", i), ns: nstest.New(t, fmt.Sprintf("h%d", i)), addr: fmt.Sprintf("10.99.0.%d", i), state: t.TempDir()}
		eth, port := nstest.Veth(t, h.ns, "eth0", c.ul, fmt.Sprintf("p%d", i), 1500)
		if err := c.ul.Handle.LinkSetMaster(port, br); err != nil {
			t.Fatal(err)
		}
		a, _ := netlink.ParseAddr(h.addr + "/24")
		if err := h.ns.Handle.AddrAdd(eth, a); err != nil {
			t.Fatal(err)
		}
		c.hosts = append(c.hosts, h)
	}
	// Cleanups run last-registered first: testbeds down, then agents
	// stopped, then (nstest's) host namespaces deleted.
	t.Cleanup(c.stopAgents)
	t.Cleanup(c.downAll)
	for _, h := range c.hosts {
		c.startAgent(h)
	}
	c.waitMembers(30 * time.Second)
	return c
}

func (c *simCluster) startAgent(h *simHost) {
	c.t.Helper()
	h.log = filepath.Join(c.t.TempDir(), h.name+"-agent.log")
	f, err := os.Create(h.log)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	key := filepath.Join(c.t.TempDir(), "cluster.key")
	if err := os.WriteFile(key, []byte("simulated-hosts-share-this-secret\n"), 0o600); err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(nsBinary, "agent", "--name", h.name, "--bind", h.addr, "--join", c.hosts[0].addr,
		"--reconcile", "1s", "--rejoin", "1s", "--key-file", key)
	cmd.Env = append(os.Environ(), "NETSTATION_STATE_DIR="+h.state)
	cmd.Stdout, cmd.Stderr = f, f
	// Born in the host's namespace, in this mount namespace (so the
	// named namespaces it makes are visible to everyone, as on one host).
	if err := fabric.StartIn(h.ns.Name, cmd); err != nil {
		c.t.Fatal(err)
	}
	h.agent = cmd
}

func (c *simCluster) stopAgents() {
	for _, h := range c.hosts {
		if h.agent == nil {
			continue
		}
		_ = h.agent.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- h.agent.Wait() }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = h.agent.Process.Kill()
			<-done
		}
		if c.t.Failed() {
			b, _ := os.ReadFile(h.log)
			c.t.Logf("agent %s log:\n%s", h.name, b)
		}
	}
}

// downAll removes every testbed from every host, through the agents and
// then locally, and checks that no namespace of theirs is left.
func (c *simCluster) downAll() {
	for _, h := range c.hosts {
		c.run(h, "down", "--all")
	}
	for _, h := range c.hosts {
		names, _ := os.ReadDir(h.state)
		for _, n := range names {
			if n.IsDir() {
				c.t.Errorf("%s: state of testbed %s left behind", h.name, n.Name())
			}
		}
	}
}

// run runs the CLI on host h and returns its combined output.
func (c *simCluster) run(h *simHost, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nsBinary, args...)
	cmd.Env = append(os.Environ(), "NETSTATION_STATE_DIR="+h.state)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := fabric.StartIn(h.ns.Name, cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return out.String(), err
}

func (c *simCluster) must(h *simHost, args ...string) string {
	c.t.Helper()
	out, err := c.run(h, args...)
	if err != nil {
		c.t.Fatalf("%s: netstation %s: %v\n%s", h.name, strings.Join(args, " "), err, out)
	}
	return out
}

// status is testbed tb's status as seen from h (status -o json is a list
// of testbeds, one with -t).
func (c *simCluster) status(h *simHost, tb string) (testbed.Status, error) {
	c.t.Helper()
	var st []testbed.Status
	out := c.must(h, "status", "-t", tb, "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		return testbed.Status{}, fmt.Errorf("status -o json from %s: %v\n%s", h.name, err, out)
	}
	return st[0], nil
}

// members is h's view of the cluster.
func (c *simCluster) members(h *simHost) map[string]cluster.Member {
	out, err := c.run(h, "hosts", "-o", "json")
	if err != nil {
		return nil
	}
	var ms []cluster.Member
	if json.Unmarshal([]byte(out), &ms) != nil {
		return nil
	}
	m := map[string]cluster.Member{}
	for _, x := range ms {
		m[x.Name] = x
	}
	return m
}

// waitState waits until every host in viewers sees host in state, and
// returns how long that took.
func (c *simCluster) waitState(viewers []*simHost, host, state string, limit time.Duration) time.Duration {
	c.t.Helper()
	t0 := time.Now()
	for {
		all := true
		for _, v := range viewers {
			if c.members(v)[host].State != state {
				all = false
				break
			}
		}
		if all {
			return time.Since(t0)
		}
		if time.Since(t0) > limit {
			c.t.Fatalf("%s not %s for all of %v within %v", host, state, names(viewers), limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *simCluster) waitMembers(limit time.Duration) {
	c.t.Helper()
	for _, h := range c.hosts {
		c.waitState(c.hosts, h.name, cluster.StateAlive, limit)
	}
}

func names(hs []*simHost) []string {
	var out []string
	for _, h := range hs {
		out = append(out, h.name)
	}
	return out
}

// topo writes a topology file and returns its path.
func (c *simCluster) topo(body string) string {
	p := filepath.Join(c.t.TempDir(), "topo.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// present returns which of the testbed's namespaces exist on this kernel.
func present(name string) []string {
	left, _ := fabric.ListNetns(testbed.Prefix(name))
	return left
}

// testbedProcs lists the processes (supervisors, peripherals) of any
// simulated host's testbed.
func (c *simCluster) testbedProcs() []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		s := strings.ReplaceAll(string(cl), "\x00", " ")
		for _, h := range c.hosts {
			if strings.Contains(s, "--state "+h.state+"/") {
				out = append(out, e.Name()+": "+s)
			}
		}
	}
	return out
}

// vxlanLinks lists VXLAN devices in the given namespaces.
func vxlanLinks(t *testing.T, nss ...string) []string {
	var out []string
	for _, ns := range nss {
		h, err := fabric.Handle(ns)
		if err != nil {
			continue
		}
		links, _ := h.LinkList()
		h.Close()
		for _, l := range links {
			if l.Type() == "vxlan" {
				out = append(out, ns+"/"+l.Attrs().Name)
			}
		}
	}
	return out
}

// in returns c acting for t (a subtest), so that Fatal stops only t.
func (c *simCluster) in(t *testing.T) *simCluster {
	cc := *c
	cc.t = t
	return &cc
}

func uniqueName() string {
	var b [3]byte
	rand.Read(b[:])
	return "m" + hex.EncodeToString(b[:])
}

// pingOK pings until a reply comes or limit passes, and returns how long
// it took.
func (c *simCluster) pingOK(h *simHost, tb, from, to string, limit time.Duration) time.Duration {
	c.t.Helper()
	t0 := time.Now()
	for {
		out, err := c.run(h, "ping", "-t", tb, from, to, "-c", "1", "-W", "500ms")
		if err == nil {
			return time.Since(t0)
		}
		if time.Since(t0) > limit {
			c.t.Fatalf("%s: ping %s -> %s: no reply within %v:\n%s", h.name, from, to, limit, out)
		}
	}
}

// TestMultiHost carries one testbed over three simulated hosts: cpu0 on
// h1, disk0 on h2, display0 on h3. Pings, the storage demo and the bench
// cross hosts; h2's underlay link is cut and restored; down from h1
// removes everything everywhere; a down while h2 is away reaches it when
// it is back.
func TestMultiHost(t *testing.T) {
	c := newSimCluster(t, 3)
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	name := uniqueName()
	file := c.topo(fmt.Sprintf(`name: %s
hosts: [h1, h2, h3]
nodes:
  - {name: cpu0, kind: cpu, host: h1}
  - {name: disk0, kind: disk, host: h2}
  - {name: display0, kind: display, host: h3}
`, name))
	out := c.must(h1, "up", "-f", file)
	if !strings.Contains(out, "across h1, h2, h3 (MTU 1450)") {
		t.Errorf("up output:\n%s", out)
	}
	t.Logf("up:\n%s", out)

	t.Run("layout", func(t *testing.T) {
		c := c.in(t)
		// Each host built its own fabric namespace with a VXLAN device
		// on the bridge, and only its own node.
		for _, h := range c.hosts {
			fab := testbed.Prefix(name) + "fabric-" + h.name
			if got := vxlanLinks(t, fab); len(got) != 1 {
				t.Errorf("%s: vxlan devices %v, want one", h.name, got)
			}
			plan, err := testbed.LoadPlan(filepath.Join(h.state, name))
			if err != nil {
				t.Fatal(err)
			}
			if local := plan.LocalNodes(); len(local) != 1 || plan.MTU != 1450 || plan.Local != h.name {
				t.Errorf("%s: plan for %s, MTU %d, local nodes %v", h.name, plan.Local, plan.MTU, local)
			}
			entries, err := fabric.FDB(fab, "vx_0")
			if err != nil || len(entries) != 4 { // flood to 2 hosts + 2 remote nodes
				t.Errorf("%s: fdb %v (%v), want 4 entries", h.name, entries, err)
			}
		}
		// The peripherals' links fit inside the tunnel.
		hd, err := fabric.Handle(testbed.Prefix(name) + "disk0")
		if err != nil {
			t.Fatal(err)
		}
		defer hd.Close()
		if l, err := hd.LinkByName("eth0"); err != nil || l.Attrs().MTU != 1450 {
			t.Errorf("disk0's link: %v %v, want MTU 1450", l, err)
		}
		// status from any host shows every host's nodes.
		st, err := c.status(h2, name)
		if err != nil {
			t.Fatal(err)
		}
		where := map[string]string{}
		for _, n := range st.Nodes {
			where[n.Name] = n.Host + "/" + n.State
		}
		if st.Phase != testbed.PhaseReady || where["cpu0"] != "h1/running" || where["disk0"] != "h2/running" || where["display0"] != "h3/running" {
			t.Errorf("status from h2: phase %s, nodes %v (%s)", st.Phase, where, st.Error)
		}
		if out := c.must(h3, "status"); !strings.Contains(out, "HOST") || !strings.Contains(out, "h1    cpu0") {
			t.Errorf("status table from h3:\n%s", out)
		}
		// exec works where the node runs, and says where that is elsewhere.
		if out := c.must(h2, "exec", "-t", name, "disk0", "--", "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1450") {
			t.Errorf("exec on h2:\n%s", out)
		}
		if out, err := c.run(h1, "exec", "-t", name, "disk0", "--", "true"); err == nil || !strings.Contains(out, "disk0 runs on host h2: run exec there") {
			t.Errorf("exec of a node on another host: %v\n%s", err, out)
		}
	})

	t.Run("ping", func(t *testing.T) {
		c := c.in(t)
		for _, p := range []struct {
			h        *simHost
			from, to string
		}{{h1, "cpu0", "disk0"}, {h1, "cpu0", "display0"}, {h3, "display0", "disk0"}, {h2, "disk0", "cpu0"}} {
			// One echo first: it resolves ARP across the tunnel, which on a
			// loaded machine (the full test suite on two cores) can take
			// longer than one echo's timeout. The next three must all return.
			_, _ = c.run(p.h, "ping", "-t", name, p.from, p.to, "-c", "1")
			out := c.must(p.h, "ping", "-t", name, p.from, p.to, "-c", "3")
			if !strings.Contains(out, "3 received") {
				t.Errorf("ping %s -> %s:\n%s", p.from, p.to, out)
			}
			t.Logf("%s -> %s: %s", p.from, p.to, lastLine(out))
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		c := c.in(t)
		// cpu0 (h1) is disk0's (h2) file manager; the revocation the demo
		// makes on h2 reaches h1's version file through the agents, so
		// the fresh capability works, and so does everything after.
		out, err := c.run(h1, "demo", "capabilities", "-t", name)
		if err != nil || strings.Contains(out, "UNEXPECTED") || !strings.Contains(out, "capability version 0 -> 1") {
			t.Fatalf("demo capabilities across hosts: %v\n%s", err, out)
		}
		t.Logf("demo capabilities across hosts:\n%s", out)
		// A grant from h3 (which holds display0) mints at the new version.
		var g testbed.Grant
		if err := json.Unmarshal([]byte(c.must(h3, "disk", "grant", "-t", name, "disk0", "-o", "json")), &g); err != nil || g.Version != 1 {
			t.Errorf("grant on h3 after the revoke: %v %+v", err, g)
		}
	})

	t.Run("storage", func(t *testing.T) {
		c := c.in(t)
		// cpu0 (h1) writes to disk0 (h2) through the tunnel; the demo's
		// calls to disk0 go through the agents. It runs after the
		// capability demo's revocation.
		out := c.must(h1, "demo", "storage", "-t", name, "--size", "32MiB", "-o", "json")
		var f fioJob
		if err := json.Unmarshal([]byte(out), &f); err != nil || len(f.Jobs) != 1 {
			t.Fatalf("json: %v\n%s", err, out)
		}
		j := f.Jobs[0]
		if !j.Netstation.Match || j.Write.BW <= 0 || j.Read.BW <= 0 {
			t.Errorf("storage across hosts: %+v", j)
		}
		t.Logf("storage across hosts (cpu0@h1 -> disk0@h2, 32 MiB, user stack): write %.1f MiB/s, read %.1f MiB/s",
			float64(j.Write.BW)/1024, float64(j.Read.BW)/1024)
	})

	t.Run("bench", func(t *testing.T) {
		c := c.in(t)
		out := c.must(h1, "bench", "-t", name, "--from", "cpu0", "--to", "disk0", "--stack", "both",
			"--time", "2s", "--size", "1472", "--rtt", "200", "-J")
		var both struct {
			Summary []struct {
				Size int `json:"size"`
				User *struct {
					Gbps float64 `json:"gbit_per_second"`
				} `json:"user"`
				Kern *struct {
					Gbps float64 `json:"gbit_per_second"`
				} `json:"kernel_gso_gro"`
				Ratio float64 `json:"ratio_user_over_best_kernel"`
			} `json:"summary"`
		}
		if err := json.Unmarshal([]byte(out), &both); err != nil || len(both.Summary) != 1 {
			t.Fatalf("bench JSON: %v\n%s", err, out)
		}
		s := both.Summary[0]
		if s.User == nil || s.Kern == nil || s.User.Gbps <= 0 || s.Kern.Gbps <= 0 {
			t.Fatalf("bench across hosts: %+v\n%s", s, out)
		}
		t.Logf("bench across hosts (cpu0@h1 -> disk0@h2, UDP %d B): user %.3f Gbit/s, kernel %.3f Gbit/s, user/kernel %.2f",
			s.Size, s.User.Gbps, s.Kern.Gbps, s.Ratio)
	})

	t.Run("partition", func(t *testing.T) {
		c := c.in(t)
		eth, err := h2.ns.Handle.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if err := h2.ns.Handle.LinkSetDown(eth); err != nil {
			t.Fatal(err)
		}
		dead := c.waitState([]*simHost{h1, h3}, "h2", cluster.StateDead, 60*time.Second)
		t.Logf("h2's underlay link cut: h1 and h3 mark it dead after %.1fs", dead.Seconds())
		// status from h1 says which host is missing.
		if st, err := c.status(h1, name); err == nil {
			if st.Phase != "degraded" || !strings.Contains(st.Error, "h2") {
				t.Errorf("status while h2 is away: %s %q", st.Phase, st.Error)
			}
		}
		if err := h2.ns.Handle.LinkSetUp(eth); err != nil {
			t.Fatal(err)
		}
		alive := c.waitState([]*simHost{h1, h3}, "h2", cluster.StateAlive, 60*time.Second)
		t.Logf("h2's link restored: alive again for h1 and h3 after %.1fs", alive.Seconds())
		took := c.pingOK(h1, name, "cpu0", "disk0", 30*time.Second)
		t.Logf("cross-host ping cpu0 -> disk0 answers %.1fs after h2 is seen alive", took.Seconds())
		// Right after a partition heals, the cut-off host's own stale
		// verdicts (it saw everyone else die) flap the others briefly.
		c.waitMembers(30 * time.Second)
	})

	t.Run("down", func(t *testing.T) {
		c := c.in(t)
		out := c.must(h1, "down", name)
		for _, h := range c.hosts {
			if !strings.Contains(out, h.name+": down") {
				t.Errorf("down output lacks %s:\n%s", h.name, out)
			}
		}
		if left := present(name); len(left) > 0 {
			t.Errorf("namespaces left: %v", left)
		}
		if p := c.testbedProcs(); len(p) > 0 {
			t.Errorf("processes left: %v", p)
		}
		var nss []string
		for _, h := range c.hosts {
			nss = append(nss, h.ns.Name)
			if _, err := os.Stat(filepath.Join(h.state, name)); !os.IsNotExist(err) {
				t.Errorf("%s: state directory left (%v)", h.name, err)
			}
		}
		if v := vxlanLinks(t, nss...); len(v) > 0 {
			t.Errorf("vxlan devices left in the hosts' namespaces: %v", v)
		}
	})

	t.Run("down-while-away", func(t *testing.T) {
		c := c.in(t)
		c.must(h1, "up", "-f", file, "-q")
		eth, _ := h2.ns.Handle.LinkByName("eth0")
		if err := h2.ns.Handle.LinkSetDown(eth); err != nil {
			t.Fatal(err)
		}
		c.waitState([]*simHost{h1}, "h2", cluster.StateDead, 60*time.Second)
		out := c.must(h1, "down", name)
		if !strings.Contains(out, "h2: dead, not reachable") {
			t.Errorf("down should say h2 is away:\n%s", out)
		}
		// h2's part is still there: nobody could reach it.
		disk0 := testbed.Prefix(name) + "disk0"
		if !fabric.NetnsExists(disk0) {
			t.Fatal("h2's part vanished while h2 was cut off")
		}
		if err := h2.ns.Handle.LinkSetUp(eth); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		for fabric.NetnsExists(disk0) || len(present(name)) > 0 {
			if time.Since(t0) > 60*time.Second {
				t.Fatalf("h2 kept its part of the downed testbed: %v", present(name))
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("h2 removed its part of the testbed downed while it was away %.1fs after its link came back", time.Since(t0).Seconds())
		// The supervisor exits after its teardown removed the namespaces:
		// give it a moment (a loaded machine), then none may be left.
		p := c.testbedProcs()
		for t1 := time.Now(); len(p) > 0 && time.Since(t1) < 15*time.Second; p = c.testbedProcs() {
			time.Sleep(100 * time.Millisecond)
		}
		if len(p) > 0 {
			t.Errorf("processes left 15 s after the namespaces went: %v", p)
		}
	})
}

// TestMultiHostPlacement: a node on a host the topology does not list,
// and a listed host without an agent, are refused with a clear message
// before anything is created. Then two segments with automatic placement
// and host access come up from a third host that holds no part: each
// segment is its own VXLAN network, and host access on the first host
// reaches a node on the other.
func TestMultiHostPlacement(t *testing.T) {
	c := newSimCluster(t, 3)
	h1 := c.hosts[0]
	name := uniqueName()
	for _, tc := range []struct {
		what, body, want string
	}{
		{"unknown host", "hosts: [h1, h2]\nnodes:\n  - {name: cpu0, kind: cpu, host: h1}\n  - {name: disk0, kind: disk, host: h7}\n",
			`nodes[1].host: unknown host "h7" (hosts: h1, h2)`},
		{"no agent", "hosts: [h1, h2, h4]\nnodes:\n  - {name: cpu0, kind: cpu, host: h1}\n  - {name: disk0, kind: disk, host: h4}\n",
			"no agent for host h4: the topology places nodes there but no live agent has that name (live agents: h1, h2, h3); nothing was created"},
	} {
		out, err := c.run(h1, "up", "-f", c.topo("name: "+name+"\n"+tc.body))
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: err %v, output:\n%s\nwant %q", tc.what, err, out, tc.want)
		}
		if left := present(name); len(left) > 0 {
			t.Errorf("%s: namespaces created: %v", tc.what, left)
		}
		for _, h := range c.hosts {
			if _, err := os.Stat(filepath.Join(h.state, name)); !os.IsNotExist(err) {
				t.Errorf("%s: %s has state for the testbed", tc.what, h.name)
			}
		}
	}

	h3 := c.hosts[2]
	out := c.must(h3, "up", "-f", c.topo("name: "+name+`
hosts: [h1, h2]
host_access: {segment: front}
segments: [{name: front}, {name: back}]
nodes:
  - {name: cpu0, kind: cpu, segment: front}
  - {name: disk0, kind: disk, segment: front}
  - {name: disk1, kind: disk, segment: back}
  - {name: cpu1, kind: cpu, segment: back}
`))
	for _, want := range []string{"cpu0 ", "on h1", "disk0 ", "on h2"} {
		if !strings.Contains(out, want) {
			t.Errorf("up from h3:\n%s", out)
		}
	}
	if _, err := os.Stat(filepath.Join(h3.state, name)); !os.IsNotExist(err) {
		t.Errorf("h3 holds no node yet has state for the testbed")
	}
	// Placement alternates: cpu0 h1, disk0 h2, disk1 h1, cpu1 h2.
	c.pingOK(h1, name, "cpu0", "disk0", 10*time.Second)
	c.pingOK(h1, name, "disk1", "cpu1", 10*time.Second)
	if out, err := c.run(h1, "ping", "-t", name, "cpu0", "disk1", "-c", "1", "-W", "300ms"); err == nil {
		t.Errorf("segments front and back are joined:\n%s", out)
	}
	// The kernel of h1 reaches disk0 on h2 through host access.
	st, err := c.status(h3, name)
	if err != nil || st.Phase != testbed.PhaseReady || len(st.Nodes) != 4 {
		t.Fatalf("status from h3: %v %+v", err, st)
	}
	if out, err := h1.ns.Run(t, 10*time.Second, "ping", "-c", "1", "-W", "2", st.Nodes[1].IP); err != nil {
		t.Errorf("host access on h1 to %s (disk0 on h2): %v\n%s", st.Nodes[1].IP, err, out)
	}
	c.must(h3, "down", name)
	if left := present(name); len(left) > 0 {
		t.Errorf("namespaces left: %v", left)
	}
	if out, _ := h1.ns.Run(t, 5*time.Second, "ip", "link", "show", "nstn"+name); !strings.Contains(out, "does not exist") {
		t.Errorf("host link left on h1: %s", out)
	}
}

// TestMultiHostWithoutAgent: a topology with hosts needs an agent here.
func TestMultiHostWithoutAgent(t *testing.T) {
	b := newBed(t)
	out, err := b.run("up", "-f", b.topo(b.name, "hosts: [h1]\nnodes: [{name: a, kind: cpu}]\n"))
	if err == nil || !strings.Contains(out, "no agent running on this host") || !strings.Contains(out, "netstation agent") {
		t.Errorf("err %v, output:\n%s", err, out)
	}
	if left := b.namespaces(); len(left) > 0 {
		t.Errorf("namespaces created: %v", left)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
