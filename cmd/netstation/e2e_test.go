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

	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/spec"
)

// The end-to-end tests drive the real binary, as a user would: build it
// once, then run `netstation up/status/ping/down` against testbeds named
// uniquely per test, with a state root of the test's own.

var nsBinary string

func TestMain(m *testing.M) {
	// $NETSTATION_BIN names a prebuilt binary: CI's unprivileged pass runs
	// this test binary as an ordinary user, who has no Go toolchain cache.
	if nsBinary = os.Getenv("NETSTATION_BIN"); nsBinary != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "netstation-e2e")
	if err != nil {
		panic(err)
	}
	nsBinary = filepath.Join(dir, "netstation")
	out, err := exec.Command("go", "build", "-o", nsBinary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// bed is one test's world: a state root and a unique testbed name.
type bed struct {
	t     testing.TB
	state string
	name  string
	// uid, when non-zero, runs every command as that user (via setpriv):
	// the rootless mode of issue #9.
	uid int
}

func newBed(t testing.TB) *bed {
	t.Helper()
	privtest.Root(t)
	return newBedUnchecked(t)
}

// newBedUnchecked is newBed for tests that need no privilege.
func newBedUnchecked(t testing.TB) *bed {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	bd := &bed{t: t, state: t.TempDir(), name: "t" + hex.EncodeToString(b[:])}
	t.Cleanup(func() {
		// Always leave nothing behind, even when the test failed midway.
		bd.run("down", "--all")
		if left := bd.namespaces(); len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	return bd
}

func (b *bed) argv(args ...string) []string {
	if b.uid == 0 {
		return append([]string{nsBinary}, args...)
	}
	return append([]string{"setpriv", fmt.Sprintf("--reuid=%d", b.uid), fmt.Sprintf("--regid=%d", b.uid),
		"--clear-groups", "--inh-caps=-all", nsBinary}, args...)
}

func (b *bed) cmd(args ...string) *exec.Cmd {
	a := b.argv(args...)
	c := exec.Command(a[0], a[1:]...)
	c.Env = append(os.Environ(), "NETSTATION_STATE_DIR="+b.state, "HOME="+b.state)
	return c
}

func (b *bed) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := b.argv(args...)
	c := exec.CommandContext(ctx, a[0], a[1:]...)
	c.Env = append(os.Environ(), "NETSTATION_STATE_DIR="+b.state, "HOME="+b.state)
	out, err := c.CombinedOutput()
	return string(out), err
}

func (b *bed) must(args ...string) string {
	b.t.Helper()
	out, err := b.run(args...)
	if err != nil {
		b.t.Fatalf("netstation %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// topo writes a topology file for this bed and returns its path.
func (b *bed) topo(name, body string) string {
	dir := b.t.TempDir()
	p := filepath.Join(dir, "topo.yaml")
	if err := os.WriteFile(p, []byte("name: "+name+"\n"+body), 0o644); err != nil {
		b.t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // readable by the unprivileged user of rootless beds
	return p
}

const threeNodes = `nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk}
  - {name: display0, kind: display}
`

func (b *bed) status(name string) testbed.Status {
	b.t.Helper()
	out := b.must("status", "-t", name, "-o", "json")
	var st []testbed.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 {
		b.t.Fatalf("status json: %v\n%s", err, out)
	}
	return st[0]
}

func (b *bed) namespaces() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var left []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.HasPrefix(f[0], testbed.Prefix(b.name)) {
			left = append(left, f[0])
		}
	}
	return left
}

func (b *bed) procs() []string {
	out, _ := exec.Command("pgrep", "-af", b.state).Output()
	return strings.Fields(string(out))
}

// assertGone checks that nothing of the testbed remains.
func (b *bed) assertGone(name string) {
	b.t.Helper()
	if left := b.namespaces(); len(left) > 0 {
		b.t.Errorf("namespaces remain: %v", left)
	}
	if _, err := os.Stat(filepath.Join(b.state, name)); !os.IsNotExist(err) {
		b.t.Errorf("state directory remains (%v)", err)
	}
	if p := b.procs(); len(p) > 0 {
		b.t.Errorf("processes remain: %v", p)
	}
	if out, _ := exec.Command("ip", "link", "show", "nstn"+name).CombinedOutput(); !bytes.Contains(out, []byte("does not exist")) {
		b.t.Errorf("host link remains: %s", out)
	}
}

func pingAll(t testing.TB, b *bed, name string, nodes []string) {
	t.Helper()
	for _, a := range nodes {
		for _, c := range nodes {
			if a == c {
				continue
			}
			out, err := b.run("ping", "-t", name, "-c", "2", "-i", "10ms", a, c)
			if err != nil || !strings.Contains(out, "2 received") {
				t.Errorf("ping %s -> %s: %v\n%s", a, c, err, out)
			}
		}
	}
}

func TestUpPingDown(t *testing.T) {
	b := newBed(t)
	f := b.topo(b.name, threeNodes)
	b.must("up", "-f", f)
	st := b.status(b.name)
	if st.Phase != testbed.PhaseReady || len(st.Nodes) != 3 {
		t.Fatalf("status: %+v", st)
	}
	var names []string
	for _, n := range st.Nodes {
		if n.State != testbed.StateRunning || n.PID == 0 {
			t.Errorf("node %s: state %s pid %d", n.Name, n.State, n.PID)
		}
		names = append(names, n.Name)
		// The peripheral's address belongs to its user-level stack: the
		// kernel must have no IPv4 or IPv6 address on the fabric port.
		out := b.must("exec", "-t", b.name, n.Name, "--", "ip", "-o", "addr", "show", "dev", "eth0")
		if strings.Contains(out, "inet") {
			t.Errorf("kernel has an address on %s's port: %s", n.Name, out)
		}
	}
	// Nor on the fabric side: the bridge and every port in the fabric
	// namespace carry no address either.
	if out, err := exec.Command("ip", "netns", "exec", testbed.Prefix(b.name)+"fabric", "ip", "-o", "addr", "show").CombinedOutput(); err != nil {
		t.Errorf("fabric namespace: %v %s", err, out)
	} else {
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.Contains(l, "inet") && !strings.Contains(l, " lo ") {
				t.Errorf("kernel address on a fabric port: %s", l)
			}
		}
	}
	pingAll(t, b, b.name, names)
	// A second up is a no-op, and says that the running processes stay.
	if out := b.must("up", "-f", f); !strings.Contains(out, "is already up") {
		t.Errorf("second up did not say the testbed was already up:\n%s", out)
	}
	st2 := b.status(b.name)
	for i := range st.Nodes {
		if st.Nodes[i].PID != st2.Nodes[i].PID {
			t.Errorf("second up restarted %s", st.Nodes[i].Name)
		}
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

// TestLinkRx: a node whose topology asks for link.rx framering runs its
// port on the frame ring (as its peripheral reports it), the others on
// the default, and they reach each other.
func TestLinkRx(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `nodes:
  - {name: cpu0, kind: cpu, link: {rx: framering}}
  - {name: disk0, kind: disk}
`))
	want := map[string]string{"cpu0": spec.LinkRxFrameRing, "disk0": spec.LinkRxBatch}
	for _, n := range b.status(b.name).Nodes {
		if n.Link == nil || n.Link.Rx != want[n.Name] {
			t.Errorf("%s: link %+v, want rx %s", n.Name, n.Link, want[n.Name])
		}
	}
	pingAll(t, b, b.name, []string{"cpu0", "disk0"})
	if out := b.must("link", "show", "-t", b.name); !strings.Contains(out, "framering") {
		t.Errorf("link show does not name the frame ring:\n%s", out)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

// killAndWaitRestart kill -9s node i and waits until the supervisor has
// restarted it.
func (b *bed) killAndWaitRestart(i int) testbed.Status {
	b.t.Helper()
	st := b.status(b.name)
	victim := st.Nodes[i]
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		b.t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		st = b.status(b.name)
		n := st.Nodes[i]
		if n.Restarts >= 1 && n.State == testbed.StateRunning && n.PID != victim.PID && n.PID != 0 {
			return st
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("peripheral not restarted: %+v", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKilledPeripheralRestarts(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	st := b.killAndWaitRestart(1)
	pingAll(t, b, b.name, []string{"cpu0", st.Nodes[1].Name})
	// kill -9 the supervisor too: down must still remove everything.
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

// TestKillCLIDuringUp kill -9s the CLI at several points of a bring-up
// (which takes about 100 ms here, so some of these land mid-way and some
// after the supervisor took over); down must remove everything each time.
func TestKillCLIDuringUp(t *testing.T) {
	b := newBed(t)
	f := b.topo(b.name, threeNodes)
	for _, d := range []time.Duration{2 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond, 60 * time.Millisecond} {
		c := b.cmd("up", "-f", f)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		c.Process.Kill()
		c.Wait()
		// Killed before it created anything, down has nothing to remove
		// and says so; otherwise it must succeed.
		if out, err := b.run("down", b.name); err != nil && !strings.Contains(out, "no such testbed") {
			t.Fatalf("down after kill at %v: %v\n%s", d, err, out)
		}
		b.assertGone(b.name)
	}
}

func TestTwoTestbedsDownAll(t *testing.T) {
	b := newBed(t)
	second := b.name + "b"
	b.must("up", "-f", b.topo(b.name, threeNodes))
	b.must("up", "-f", b.topo(second, threeNodes))
	s1, s2 := b.status(b.name), b.status(second)
	if s1.Subnet == s2.Subnet {
		t.Errorf("both testbeds on %s", s1.Subnet)
	}
	pingAll(t, b, second, []string{"cpu0", "disk0"})
	out := b.must("down", "--all")
	if !strings.Contains(out, b.name) || !strings.Contains(out, second) {
		t.Errorf("down --all: %s", out)
	}
	b.assertGone(b.name)
	b.assertGone(second)
}

func TestBrokenTopologyCreatesNothing(t *testing.T) {
	b := newBed(t)
	cases := map[string]struct{ body, want string }{
		"unknown key":  {threeNodes + "colour: blue\n", ":6:"},
		"duplicate":    {"nodes:\n  - {name: a, kind: cpu}\n  - {name: a, kind: cpu}\n", ":4:"},
		"bad cidr":     {"subnet: 10.1.2.3/33\n" + threeNodes, ":2:"},
		"outside":      {"subnet: 10.9.9.0/24\nnodes:\n  - {name: a, kind: cpu, ip: 10.9.8.1}\n", ":4:"},
		"unknown kind": {"nodes:\n  - {name: a, kind: toaster}\n", ":3:"},
	}
	for name, c := range cases {
		f := b.topo(b.name, c.body)
		for _, verb := range []string{"validate", "up"} {
			out, err := b.run(verb, "-f", f)
			if err == nil {
				t.Errorf("%s/%s: accepted\n%s", name, verb, out)
				continue
			}
			if !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") > 6 {
				t.Errorf("%s/%s: want a short error naming line %s, got:\n%s", name, verb, c.want, out)
			}
		}
	}
	if left := b.namespaces(); len(left) > 0 {
		t.Errorf("a broken file created namespaces: %v", left)
	}
	if ents, _ := os.ReadDir(b.state); len(ents) > 0 {
		t.Errorf("a broken file created state: %v", ents)
	}
}

// TestNameTakenElsewhere: a testbed whose kernel names are in use by a
// testbed of another state root is refused, not adopted.
func TestNameTakenElsewhere(t *testing.T) {
	b := newBed(t)
	f := b.topo(b.name, threeNodes)
	b.must("up", "-f", f)
	other := &bed{t: t, state: t.TempDir(), name: b.name}
	out, err := other.run("up", "-f", f)
	if err == nil || !strings.Contains(out, "exist but no testbed") {
		t.Fatalf("second state root's up: %v\n%s", err, out)
	}
	st := b.status(b.name)
	if st.Phase != testbed.PhaseReady {
		t.Errorf("first testbed disturbed: %+v", st)
	}
	pingAll(t, b, b.name, []string{"cpu0", "disk0"})
	b.must("down", b.name)
	b.assertGone(b.name)
}
