package afpacket

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/netstation/netstation/internal/linktest"
	"github.com/netstation/netstation/stack/link"
)

// TestAcceptFilter runs the accept filter in x/net/bpf's interpreter, an
// implementation independent of ours and of the kernel's.
func TestAcceptFilter(t *testing.T) {
	p := netip.MustParsePrefix("10.77.0.11/24")
	raw := acceptFilter(p, 0x40000)
	var insns []bpf.RawInstruction
	for _, f := range raw {
		insns = append(insns, bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K})
	}
	vm, err := bpf.NewVM(mustDisassemble(t, insns))
	if err != nil {
		t.Fatal(err)
	}
	frame := func(etype uint16, off int, ip [4]byte) []byte {
		b := make([]byte, 64)
		b[12], b[13] = byte(etype>>8), byte(etype)
		copy(b[off:], ip[:])
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want bool
	}{
		{"arp for us", frame(0x0806, 38, [4]byte{10, 77, 0, 11}), true},
		{"arp for other", frame(0x0806, 38, [4]byte{198, 18, 0, 11}), false},
		{"ipv4 to us", frame(0x0800, 30, [4]byte{10, 77, 0, 11}), true},
		{"ipv4 broadcast", frame(0x0800, 30, [4]byte{255, 255, 255, 255}), true},
		{"ipv4 subnet broadcast", frame(0x0800, 30, [4]byte{10, 77, 0, 255}), true},
		{"ipv4 to kernel address", frame(0x0800, 30, [4]byte{198, 18, 0, 11}), false},
		{"ipv6", frame(0x86dd, 30, [4]byte{10, 77, 0, 11}), false},
	}
	for _, c := range cases {
		n, err := vm.Run(c.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := n > 0; got != c.want {
			t.Errorf("%s: accepted=%v, want %v", c.name, got, c.want)
		}
	}
}

func mustDisassemble(t *testing.T, raw []bpf.RawInstruction) []bpf.Instruction {
	out, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("filter does not disassemble")
	}
	return out
}

// TestAcceptFilterLive: with Accept set, a link in either receive mode
// delivers IPv4 to its address and nothing addressed elsewhere.
func TestAcceptFilterLive(t *testing.T) {
	for _, rx := range []RxMode{RxRecvmmsg, RxRing, RxFrameRing} {
		t.Run(rx.String(), func(t *testing.T) {
			w := linktest.NewPair(t, 1500)
			la := open(t, w.A, "vA", Options{})
			lb := open(t, w.B, "vB", Options{Rx: rx, Accept: netip.MustParsePrefix("10.9.0.2/24")})
			cb := collect(t, lb)
			udp := func(dst byte, port uint16) link.Frame {
				return linktest.UDPFrame(w.MACB, w.MACA, [4]byte{10, 9, 0, 1}, [4]byte{10, 9, 0, dst}, port, port, make([]byte, 20), false, 0)
			}
			other := []link.Frame{{Buf: linktest.Frame(w.MACB, w.MACA, 60, 1)}, udp(3, 7001)}
			if _, err := la.WriteBatch(append(other, udp(2, 7002))); err != nil {
				t.Fatal(err)
			}
			r := cb.next(t, 2*time.Second, func(received) bool { return true })
			if len(r.buf) < 42 || r.buf[33] != 2 || r.buf[37] != 7002&0xff {
				t.Fatalf("first delivered frame is not the one for 10.9.0.2: % x", r.buf[:min(len(r.buf), 42)])
			}
		})
	}
}
