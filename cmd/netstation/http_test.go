package main

import (
	"bytes"
	"context"
	"image/png"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
)

// TestDisplayHTTP: the display serves HTTP on port 80 of its own
// user-level stack (stack/tcp); curl, on the host's kernel stack through
// host access, fetches its PNG snapshot, which decodes to the display's
// size, and its live page.
func TestDisplayHTTP(t *testing.T) {
	privtest.Tool(t, "curl")
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, "host_access: {}\n"+`nodes:
  - {name: cpu0, kind: cpu}
  - {name: display0, kind: display, display: {width: 320, height: 200}}
`))
	b.must("demo", "display", "-t", b.name, "--frames", "5")
	var ip string
	for _, n := range b.status(b.name).Nodes {
		if n.Name == "display0" {
			ip = n.IP
		}
	}
	curl := func(path string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "curl", "-sS", "--fail", "--max-time", "10", "--interface", "nstn"+b.name,
			"http://"+ip+path).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", path, err)
		}
		return out
	}
	img, err := png.Decode(bytes.NewReader(curl("/snapshot.png")))
	if err != nil {
		t.Fatalf("snapshot does not decode: %v", err)
	}
	if r := img.Bounds(); r.Dx() != 320 || r.Dy() != 200 {
		t.Fatalf("snapshot is %v, want 320x200", r)
	}
	if page := string(curl("/")); !strings.Contains(page, "display0") || !strings.Contains(page, "/stream.png") {
		t.Fatalf("page: %s", page)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}
