package fabric

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

func TestNetnsLifecycle(t *testing.T) {
	p := testPrefix(t)
	a, b := p+"a", p+"b"
	for _, n := range []string{a, b} {
		if err := CreateNetns(n); err != nil {
			t.Fatal(err)
		}
	}
	ino := nsInode(t, a)
	if err := CreateNetns(a); err != nil {
		t.Fatalf("second create: %v", err)
	}
	if nsInode(t, a) != ino {
		t.Fatal("second create replaced the namespace")
	}
	if !NetnsExists(a) || NetnsExists(p+"none") {
		t.Fatal("NetnsExists wrong")
	}
	got, err := ListNetns(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{a, b}) {
		t.Fatalf("ListNetns(%q) = %v", p, got)
	}

	// Loopback up, IPv6 off for everything born in the namespace.
	h, err := Handle(a)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("lo not up: %v", lo.Attrs().Flags)
	}
	for _, k := range []string{"all", "default", "lo"} {
		if v := readIn(t, a, "/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6"); v != "1" {
			t.Errorf("%s disable_ipv6 = %s", k, v)
		}
	}

	if err := DeleteNetns(a); err != nil {
		t.Fatal(err)
	}
	if NetnsExists(a) {
		t.Fatal("exists after delete")
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, a)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file left behind: %v", err)
	}
	if err := DeleteNetns(a); err != nil {
		t.Fatalf("delete of an absent namespace: %v", err)
	}
	if _, err := OpenNetns(a); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenNetns of a deleted namespace: %v", err)
	}
	if err := Do(a, func() error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Do in a deleted namespace: %v", err)
	}
}

// A file under /run/netns with nothing mounted on it (a crash between
// creating the file and mounting) is not a namespace, is replaced by
// CreateNetns and removed by DeleteNetns.
func TestNetnsLeftoverFile(t *testing.T) {
	p := testPrefix(t)
	stale := p + "stale"
	if err := CreateNetns(p + "x"); err != nil { // makes sure /run/netns exists
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(NetnsDir, stale), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if NetnsExists(stale) {
		t.Fatal("a plain file counts as a namespace")
	}
	if _, err := OpenNetns(stale); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenNetns of a plain file: %v", err)
	}
	if err := CreateNetns(stale); err != nil {
		t.Fatal(err)
	}
	if !NetnsExists(stale) {
		t.Fatal("leftover file not replaced by a namespace")
	}
	if err := os.WriteFile(filepath.Join(NetnsDir, p+"stale2"), nil, 0o444); err != nil {
		t.Fatal(err)
	}
	if err := DeleteNetns(p + "stale2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, p+"stale2")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("leftover file not removed")
	}
}

func TestBadNames(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", "x\x00"} {
		if err := checkNetnsName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("namespace name %q accepted", n)
		}
	}
	for _, n := range []string{"", "..", "a/b", "a:b", "a b", "sixteen-chars-xx", "tab\t"} {
		if err := checkIfName(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("interface name %q accepted", n)
		}
	}
	for _, n := range []string{"eth0", "fifteen-chars-x", "br.7", "v-disk0"} {
		if err := checkIfName(n); err != nil {
			t.Errorf("interface name %q refused: %v", n, err)
		}
	}
	if err := Cleanup(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Cleanup(\"\") = %v, want ErrInvalid", err)
	}
}

func TestStartIn(t *testing.T) {
	p := testPrefix(t)
	ns := p + "s"
	if err := CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	want := "net:[" + strconv.FormatUint(nsInode(t, ns), 10) + "]"
	for range 5 {
		cmd := exec.Command("sleep", "30")
		if err := StartIn(ns, cmd); err != nil {
			t.Fatal(err)
		}
		got, err := os.Readlink("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net")
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("child in %s, want %s", got, want)
		}
	}
	threadsAtHome(t)
}

// Do restores the thread even for a caller that holds LockOSThread and for
// a function that panics, and reports fn's error.
func TestDoRestoresThread(t *testing.T) {
	p := testPrefix(t)
	ns := p + "d"
	if err := CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	want := "net:[" + strconv.FormatUint(nsInode(t, ns), 10) + "]"
	errBoom := errors.New("boom")
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var inside string
		err := Do(ns, func() error {
			var err error
			inside, err = os.Readlink("/proc/thread-self/ns/net")
			if err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Errorf("Do error = %v, want errBoom", err)
		}
		if inside != want {
			t.Errorf("fn ran in %s, want %s", inside, want)
		}
	}()
	<-done
	func() {
		defer func() {
			if r := recover(); r != "in ns" {
				t.Errorf("recovered %v, want the panic of fn", r)
			}
		}()
		_ = Do(ns, func() error { panic("in ns") })
	}()
	threadsAtHome(t)
}

// Concurrent creators of one name all succeed and make one namespace.
func TestCreateNetnsConcurrent(t *testing.T) {
	p := testPrefix(t)
	ns := p + "cc"
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- CreateNetns(ns) }()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got, _ := ListNetns(p); !slices.Equal(got, []string{ns}) {
		t.Errorf("namespaces %v", got)
	}
	if !NetnsExists(ns) {
		t.Error("namespace missing")
	}
}
