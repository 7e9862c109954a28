package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/testbed"
)

// nobody is the unprivileged user the rootless tests run the CLI as.
const nobody = 65534

// newRootlessBed is a bed whose commands run as an ordinary user. Run by
// root, the test becomes that user for every command (setpriv); run by an
// ordinary user (CI's unprivileged pass), it runs them as itself. Either
// way everything the CLI does happens without privileges.
func newRootlessBed(t *testing.T) *bed {
	if os.Geteuid() != 0 {
		privtest.Tool(t, "nsenter")
		return newBedUnchecked(t)
	}
	privtest.Tool(t, "setpriv", "nsenter")
	b := newBed(t)
	b.uid = nobody
	for _, p := range []string{b.state, filepath.Dir(nsBinary)} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, 0o755)
	}
	os.Chmod(nsBinary, 0o755)
	os.Chmod(filepath.Dir(b.state), 0o755) // the test's temp root: traversable
	return b
}

// TestRootless runs the whole user path as an ordinary user: up, every
// pair pings over the user-level stacks, exec, the storage demo (also at
// 1 % and 10 % link-layer loss), and a down that leaves no process or
// state behind.
func TestRootless(t *testing.T) {
	b := newRootlessBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	st := b.status(b.name)
	if st.Phase != testbed.PhaseReady {
		t.Fatalf("status: %+v", st)
	}
	pingAll(t, b, b.name, []string{"cpu0", "disk0", "display0"})
	out := b.must("exec", "-t", b.name, "disk0", "--", "ip", "-o", "link", "show", "eth0")
	if !strings.Contains(out, "eth0") {
		t.Errorf("exec: %s", out)
	}
	out = b.must("demo", "storage", "-t", b.name, "--size", "16MiB", "-o", "json")
	if !strings.Contains(out, `"match": true`) {
		t.Errorf("storage demo: %s", out)
	}
	// Byte-exact under loss in the peripheral's own link layer (rootless:
	// no BPF), at 1 % and 10 %.
	for _, loss := range []string{"1%", "10%"} {
		out = b.must("demo", "storage", "-t", b.name, "--size", "8MiB", "--loss", loss, "--seed", "3", "-o", "json")
		if !strings.Contains(out, `"match": true`) {
			t.Errorf("storage demo at %s loss: %s", loss, out)
		}
	}
	// host access needs root: a one-line explanation, not EPERM.
	out, err := b.run("up", "-f", b.topo(b.name+"h", "host_access: {ip: 10.99.1.254}\nsubnet: 10.99.1.0/24\n"+threeNodes))
	if err == nil || !strings.Contains(out, "needs root") || strings.Contains(out, "operation not permitted") {
		t.Errorf("host access rootless: %v %s", err, out)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

// TestRootlessKill9: kill -9 of a peripheral restarts it; kill -9 of the
// supervisor still lets down clean up.
func TestRootlessKill9(t *testing.T) {
	b := newRootlessBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	st := b.killAndWaitRestart(0)
	pingAll(t, b, b.name, []string{"cpu0", "disk0"})
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}
