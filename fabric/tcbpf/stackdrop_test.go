package tcbpf

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/nstest"
	"golang.org/x/sys/unix"
)

// tapSocket opens a packet socket on ifname inside ns bound to every
// protocol, as the user-level stack's link does, so it sees frames at the
// taps, before tc ingress.
func tapSocket(t *testing.T, ns *nstest.NS, ifname string) int {
	t.Helper()
	fd := -1
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		t.Fatalf("tap socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return fd
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// tapCount reads fd until it is quiet and counts the frames carrying marker.
func tapCount(t *testing.T, fd int, marker string) int {
	t.Helper()
	buf := make([]byte, 2048)
	n := 0
	for {
		m, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) {
			return n
		}
		if err != nil {
			t.Fatalf("tap read: %v", err)
		}
		if bytes.Contains(buf[:m], []byte(marker)) {
			n++
		}
	}
}

// TestStackDropSparesTheKernel: frames to the user-level stack's address
// (one the namespace's kernel lacks) reach a packet socket on the port
// whether or not the stack drop is attached, but the kernel's IP receive
// sees them (InAddrErrors) only without it; frames to the kernel's own
// address reach its sockets with the drop attached, and detaching it
// restores the kernel's view.
func TestStackDropSparesTheKernel(t *testing.T) {
	a, b, _ := fabricOf(t, true)
	macA, macB := a.eth.Attrs().HardwareAddr, b.eth.Attrs().HardwareAddr
	// 10.79.0.200: a high last byte, so a sign-extended comparison of the
	// address would never match.
	user := net.IPv4(10, 79, 0, 200).To4()
	tap := tapSocket(t, b.ns, "eth0")
	const n = 20
	round := func(name string) (tapped int, addrErrors uint64) {
		t.Helper()
		frames := make([][]byte, n)
		for i := range frames {
			frames[i] = udpTo(t, macA, macB, a.ip, user, fmt.Sprintf("%s-%02d", name, i))
		}
		before := snmp(t, b.ns, "Ip:")["InAddrErrors"]
		rawSend(t, a.ns, "eth0", frames...)
		tapped = tapCount(t, tap, name+"-")
		return tapped, snmp(t, b.ns, "Ip:")["InAddrErrors"] - before
	}
	if tapped, errs := round("without"); tapped != n || errs != n {
		t.Fatalf("without the drop: tap saw %d of %d frames, the kernel counted %d InAddrErrors, want %d and %d", tapped, n, errs, n, n)
	}
	if err := AttachStackDrop(b.ns.Name, "eth0", netipFrom(user)); err != nil {
		t.Fatal(err)
	}
	if err := AttachStackDrop(b.ns.Name, "eth0", netipFrom(user)); err != nil {
		t.Fatalf("attach again (replace): %v", err)
	}
	if tapped, errs := round("with"); tapped != n || errs != 0 {
		t.Fatalf("with the drop: tap saw %d of %d frames, the kernel counted %d InAddrErrors, want %d and 0", tapped, n, errs, n)
	}
	// The kernel's own address still gets through to its socket.
	err := b.ns.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: b.ip, Port: 9001})
		if err != nil {
			return err
		}
		defer c.Close()
		rawSend(t, a.ns, "eth0", udpTo(t, macA, macB, a.ip, b.ip, "kernel"))
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		m, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return fmt.Errorf("kernel socket: %w", err)
		}
		if string(buf[:m]) != "kernel" {
			return fmt.Errorf("kernel socket read %q", buf[:m])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := DetachStackDrop(b.ns.Name, "eth0"); err != nil {
		t.Fatal(err)
	}
	if tapped, errs := round("detached"); tapped != n || errs != n {
		t.Fatalf("detached: tap saw %d of %d frames, the kernel counted %d InAddrErrors, want %d and %d", tapped, n, errs, n, n)
	}
	if err := DetachStackDrop(b.ns.Name, "eth0"); err != nil {
		t.Fatalf("detach twice: %v", err)
	}
	if err := AttachStackDrop(b.ns.Name, "eth0", netip.MustParseAddr("fe80::1")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("IPv6 address: %v, want ErrInvalid", err)
	}
}
