// Package nstest gives privileged tests network namespaces and veth pairs
// of their own. Every namespace is named with a prefix derived from the
// test's name and the process id, so parallel test binaries never collide,
// and is removed by t.Cleanup even when the test fails.
package nstest

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

var seq atomic.Uint32

// NS is a named network namespace owned by one test.
type NS struct {
	Name   string
	Handle *netlink.Handle // netlink handle acting inside the namespace
	fd     netns.NsHandle
}

// New creates a namespace for t (calling privtest.Root first) and registers
// its removal. label is a short human hint ("a", "kernel", ...).
func New(t testing.TB, label string) *NS {
	t.Helper()
	privtest.Root(t)
	h := fnv.New32a()
	h.Write([]byte(t.Name()))
	name := fmt.Sprintf("nst%06x-%d-%d-%s", h.Sum32()&0xffffff, os.Getpid(), seq.Add(1), label)
	fd, err := newNamed(name)
	if err != nil {
		t.Fatalf("nstest: create namespace %s: %v", name, err)
	}
	ns := &NS{Name: name, fd: fd}
	t.Cleanup(func() {
		if ns.Handle != nil {
			ns.Handle.Close()
		}
		fd.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("nstest: delete namespace %s: %v", name, err)
		}
	})
	hd, err := netlink.NewHandleAt(fd)
	if err != nil {
		t.Fatalf("nstest: netlink handle in %s: %v", name, err)
	}
	ns.Handle = hd
	lo, err := hd.LinkByName("lo")
	if err == nil {
		_ = hd.LinkSetUp(lo)
	}
	return ns
}

// newNamed creates a named namespace without leaving the calling thread
// in it.
func newNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	defer orig.Close()
	fd, err := netns.NewNamed(name)
	if rerr := netns.Set(orig); rerr != nil {
		// The thread is stuck in the new namespace: keep it locked so the
		// runtime destroys it instead of reusing it.
		return fd, fmt.Errorf("restore namespace: %w", rerr)
	}
	runtime.UnlockOSThread()
	return fd, err
}

// FD returns the namespace's handle (owned by NS; do not close).
func (ns *NS) FD() netns.NsHandle { return ns.fd }

// Do runs fn on a locked OS thread inside the namespace. Sockets fn opens
// stay in the namespace after it returns.
func (ns *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns.fd); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("restore namespace: %w", err) // thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

// Command returns a command that runs argv inside the namespace via
// `ip netns exec`.
func (ns *NS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name}, argv...)...)
}

// Run runs argv inside the namespace with a timeout and returns its
// combined output.
func (ns *NS) Run(t testing.TB, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := ns.Command(ctx, argv...).CombinedOutput()
	return string(out), err
}

// Veth creates a veth pair with one end (nameA) in a and the other (nameB)
// in b, both up, and returns the two links as seen in their namespaces.
func Veth(t testing.TB, a *NS, nameA string, b *NS, nameB string, mtu int) (netlink.Link, netlink.Link) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = nameA
	if mtu > 0 {
		attrs.MTU = mtu
	}
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: nameB, PeerNamespace: netlink.NsFd(int(b.fd))}
	if err := a.Handle.LinkAdd(v); err != nil {
		t.Fatalf("nstest: veth %s/%s: %v", nameA, nameB, err)
	}
	la, err := a.Handle.LinkByName(nameA)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	lb, err := b.Handle.LinkByName(nameB)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	if mtu > 0 {
		_ = b.Handle.LinkSetMTU(lb, mtu)
	}
	for _, x := range []struct {
		h *netlink.Handle
		l netlink.Link
	}{{a.Handle, la}, {b.Handle, lb}} {
		if err := x.h.LinkSetUp(x.l); err != nil {
			t.Fatalf("nstest: up %s: %v", x.l.Attrs().Name, err)
		}
	}
	la, _ = a.Handle.LinkByName(nameA)
	lb, _ = b.Handle.LinkByName(nameB)
	return la, lb
}

// AddrAdd gives link an address (CIDR form, e.g. "10.9.0.1/24") inside ns.
func (ns *NS) AddrAdd(t testing.TB, l netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatalf("nstest: %v", err)
	}
	if err := ns.Handle.AddrAdd(l, a); err != nil {
		t.Fatalf("nstest: addr %s on %s: %v", cidr, l.Attrs().Name, err)
	}
}
