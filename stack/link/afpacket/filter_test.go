package afpacket

import (
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
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
