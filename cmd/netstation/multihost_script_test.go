package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
)

// TestMultiHostScript runs docs/MULTIHOST.md's one-machine recipe,
// scripts/multihost-local.sh, as a user would: three hosts up, a testbed
// across two of them, a ping through the tunnel, everything down and gone.
func TestMultiHostScript(t *testing.T) {
	privtest.Root(t)
	privtest.Tool(t, "nsenter")
	pfx := "ms" + uniqueName()[1:5]
	root := t.TempDir()
	script := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, "../../scripts/multihost-local.sh", args...)
		c.Env = append(os.Environ(), "NETSTATION="+nsBinary, "MH_PREFIX="+pfx, "MH_ROOT="+root)
		out, err := c.CombinedOutput()
		return string(out), err
	}
	gone := func() []string {
		out, _ := exec.Command("ip", "netns", "list").Output()
		var left []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, pfx) {
				left = append(left, l)
			}
		}
		return left
	}
	t.Cleanup(func() {
		if out, err := script("down"); err != nil {
			t.Errorf("down: %v\n%s", err, out)
		}
		if left := gone(); len(left) > 0 {
			t.Errorf("namespaces left: %v", left)
		}
		// No agent of this run survives down (its key file is this
		// test's own).
		if out, err := exec.Command("pgrep", "-af", "--", "--key-file "+root+"/cluster.key").Output(); err == nil {
			t.Errorf("agents left running after down:\n%s", out)
		}
	})
	if out, err := script("up", "3"); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := script("run", "h1", "hosts")
		if strings.Count(out, "alive") >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents did not all join:\n%s", out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	name := uniqueName()
	topo := root + "/topo.yaml"
	if err := os.WriteFile(topo, []byte(fmt.Sprintf("name: %s\nhosts: [h1, h2]\nnodes:\n  - {name: cpu0, kind: cpu, host: h1}\n  - {name: disk0, kind: disk, host: h2, disk: {access: open}}\n", name)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := script("run", "h1", "up", "-f", topo); err != nil {
		t.Fatalf("run h1 up: %v\n%s", err, out)
	}
	_, _ = script("run", "h1", "ping", "-t", name, "cpu0", "disk0", "-c", "1") // ARP across the tunnel
	if out, err := script("run", "h1", "ping", "-t", name, "cpu0", "disk0", "-c", "3"); err != nil || !strings.Contains(out, "3 received") {
		t.Errorf("ping across the simulated hosts: %v\n%s", err, out)
	}
	if out, err := script("run", "h1", "down", name); err != nil {
		t.Errorf("run h1 down: %v\n%s", err, out)
	}
}
