package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
)

// TestHostAccess: with host_access, the host's own kernel reaches the
// peripherals' user-level stacks through the testbed's link into the host
// namespace (a link this test's testbed made, named after it), and down
// removes that link.
func TestHostAccess(t *testing.T) {
	privtest.Tool(t, "ping")
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, "host_access: {}\n"+threeNodes))
	st := b.status(b.name)
	for _, n := range st.Nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, "ping", "-c", "2", "-i", "0.05", "-W", "2", "-I", "nstn"+b.name, n.IP).CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), " 0% packet loss") {
			t.Errorf("host kernel ping %s (%s): %v\n%s", n.Name, n.IP, err, out)
		}
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}
