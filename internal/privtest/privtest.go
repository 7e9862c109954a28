// Package privtest decides what a test that needs privileges does when it
// lacks them: skip on a developer's laptop, fail in CI. CI sets
// NETSTATION_REQUIRE_PRIV=1, so a privileged test can never pass by being
// skipped there.
package privtest

import (
	"os"
	"os/exec"
	"testing"
)

// Required reports whether NETSTATION_REQUIRE_PRIV=1 is set.
func Required() bool { return os.Getenv("NETSTATION_REQUIRE_PRIV") == "1" }

func missing(t testing.TB, why string) {
	t.Helper()
	if Required() {
		t.Fatalf("NETSTATION_REQUIRE_PRIV=1 but %s", why)
	}
	t.Skipf("skipped: %s (set NETSTATION_REQUIRE_PRIV=1 to make this a failure)", why)
}

// Root skips (or, under NETSTATION_REQUIRE_PRIV=1, fails) the test unless it
// runs with euid 0.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "the test needs root (network namespaces, veth, AF_PACKET)")
	}
}

// Tool skips (or fails) the test unless every named program is on PATH.
func Tool(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing(t, "the test needs "+n+" on PATH")
		}
	}
}
