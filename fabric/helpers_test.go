package fabric

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/netstation/netstation/internal/privtest"
	"golang.org/x/sys/unix"
)

var testSeq atomic.Uint32

// testPrefix returns a name prefix owned by this test (short enough to
// leave room in a 15-byte interface name) and registers a Cleanup of
// everything named with it, which runs even when the test fails.
func testPrefix(t testing.TB) string {
	t.Helper()
	privtest.Root(t)
	p := fmt.Sprintf("f%s%d-", strconv.FormatInt(int64(os.Getpid()), 36), testSeq.Add(1))
	t.Cleanup(func() {
		if err := Cleanup(p); err != nil {
			t.Errorf("cleanup %s: %v", p, err)
		}
	})
	return p
}

// nsInode returns the inode of the namespace mounted under name.
func nsInode(t testing.TB, name string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(NetnsDir, name), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// readIn reads a file (a /proc/sys entry) from inside ns.
func readIn(t testing.TB, ns, path string) string {
	t.Helper()
	var out string
	if err := Do(ns, func() error {
		b, err := os.ReadFile(path)
		out = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatalf("read %s in %s: %v", path, ns, err)
	}
	return out
}

// threadsAtHome fails t if any thread of this process is in a network
// namespace other than the one of /proc/self (the process's own).
func threadsAtHome(t testing.TB) {
	t.Helper()
	home, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		got, err := os.Readlink(filepath.Join("/proc/self/task", task.Name(), "ns/net"))
		if err != nil {
			continue // the thread ended meanwhile
		}
		if got != home {
			t.Errorf("thread %s is in %s, not in the process's %s", task.Name(), got, home)
		}
	}
}
