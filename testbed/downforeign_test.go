package testbed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/privtest"
)

// A testbed brought up with another NETSTATION_STATE_DIR is refused by
// down (its processes would outlive a sweep of its namespaces); once
// nothing runs in them, they are leftovers and down sweeps them.
func TestDownForeignTestbed(t *testing.T) {
	privtest.Root(t)
	privtest.Tool(t, "ip", "sleep")
	t.Setenv("NETSTATION_STATE_DIR", t.TempDir())
	name := fmt.Sprintf("dfor%d", os.Getpid()%100000)
	ns := Prefix(name) + "n0"
	if err := fabric.CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fabric.DeleteNetns(ns) })

	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _, _ = sleeper.Process.Wait() })
	// ip netns exec enters the namespace before it execs sleep.
	deadline := time.Now().Add(10 * time.Second)
	for len(fabric.NetnsUsers([]string{ns})) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the sleeper never showed in the namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}

	err := Down(context.Background(), name)
	if !errors.Is(err, ErrForeign) {
		t.Fatalf("down of a testbed another state directory owns: %v, want ErrForeign", err)
	}
	if !fabric.NetnsExists(ns) {
		t.Fatal("down refused but deleted the namespace anyway")
	}
	t.Log(err)

	_ = sleeper.Process.Kill()
	_, _ = sleeper.Process.Wait()
	if err := Down(context.Background(), name); err != nil {
		t.Fatalf("down of leftover namespaces: %v", err)
	}
	if fabric.NetnsExists(ns) {
		t.Fatal("leftover namespace not swept")
	}
	if err := Down(context.Background(), name); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second down: %v, want ErrNotFound", err)
	}
}
