package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// vmMatch runs the compiled program in x/net/bpf's interpreter (an
// implementation independent of ours) and reports whether it accepts.
func vmMatch(t testing.TB, prog []unix.SockFilter, frame []byte) bool {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(prog))
	for i, in := range prog {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("program has instructions the interpreter does not know: %v", insns)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatalf("program rejected by the interpreter: %v", err)
	}
	n, err := vm.Run(frame)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return n != 0
}

type frameSpec struct {
	etype      uint16
	proto      uint8
	src, dst   [4]byte
	sport, dpt uint16
	frag       uint16
	ihl        int
}

func buildFrame(s frameSpec) []byte {
	if s.etype == unix.ETH_P_ARP {
		b := make([]byte, 42)
		binary.BigEndian.PutUint16(b[12:], s.etype)
		copy(b[28:32], s.src[:])
		copy(b[38:42], s.dst[:])
		return b
	}
	ihl := s.ihl
	if ihl == 0 {
		ihl = 5
	}
	b := make([]byte, 14+ihl*4+8+4)
	binary.BigEndian.PutUint16(b[12:], s.etype)
	b[14] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(b[20:], s.frag)
	b[23] = s.proto
	copy(b[26:30], s.src[:])
	copy(b[30:34], s.dst[:])
	l4 := 14 + ihl*4
	binary.BigEndian.PutUint16(b[l4:], s.sport)
	binary.BigEndian.PutUint16(b[l4+2:], s.dpt)
	return b
}

func TestFilterSemantics(t *testing.T) {
	a := [4]byte{10, 0, 0, 1}
	b := [4]byte{10, 0, 0, 2}
	udp := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: unix.IPPROTO_UDP, src: a, dst: b, sport: 5000, dpt: 53})
	udpOpts := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: unix.IPPROTO_UDP, src: a, dst: b, sport: 5000, dpt: 53, ihl: 6})
	frag := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: unix.IPPROTO_UDP, src: a, dst: b, sport: 5000, dpt: 53, frag: 10})
	icmp := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: unix.IPPROTO_ICMP, src: b, dst: a})
	tcp := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: unix.IPPROTO_TCP, src: a, dst: b, sport: 80, dpt: 40000})
	arp := buildFrame(frameSpec{etype: unix.ETH_P_ARP, src: a, dst: b})
	cases := []struct {
		expr  string
		frame []byte
		want  bool
	}{
		{"udp", udp, true}, {"udp", icmp, false}, {"icmp", icmp, true}, {"arp", arp, true},
		{"arp", udp, false}, {"ip", tcp, true}, {"tcp", tcp, true},
		{"port 53", udp, true}, {"port 53", udpOpts, true}, {"port 53", frag, false},
		{"dst port 53", udp, true}, {"src port 53", udp, false}, {"port 80", tcp, true},
		{"host 10.0.0.1", udp, true}, {"src host 10.0.0.1", icmp, false}, {"dst host 10.0.0.1", icmp, true},
		{"host 10.0.0.2", arp, true}, {"src host 10.0.0.2", arp, false},
		{"udp and port 53", udp, true}, {"udp and port 54", udp, false},
		{"icmp or arp", arp, true}, {"icmp or arp", udp, false}, {"not arp", udp, true},
		{"!(udp || icmp) && host 10.0.0.1", tcp, true}, {"not (udp or icmp) and host 10.0.0.1", udp, false},
		{"udp", udp[:20], false}, {"not udp", udp[:10], false},
	}
	for _, c := range cases {
		f, err := ParseFilter(c.expr)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		prog, err := f.Program(0xffff)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(c.frame); got != c.want {
			t.Errorf("%q Match = %v, want %v", c.expr, got, c.want)
		}
		if got := vmMatch(t, prog, c.frame); got != c.want {
			t.Errorf("%q program = %v, want %v", c.expr, got, c.want)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	for _, e := range []string{"udp and", "port", "port 70000", "host 1.2.3", "host ::1", "(udp", "udp)", "foo", "src udp",
		"not not not not not not not not not not not not not not not not not not udp"} {
		if _, err := ParseFilter(e); !errors.Is(err, ErrFilter) {
			t.Errorf("%q: err %v, want ErrFilter", e, err)
		}
	}
	if f, err := ParseFilter("  "); f != nil || err != nil {
		t.Errorf("empty filter: %v %v", f, err)
	}
	var nilF *Filter
	if !nilF.Match(nil) {
		t.Error("nil filter rejects")
	}
}

// checkAgree parses expr and, if it parses, checks that the compiled
// program and Match agree on frame.
func checkAgree(t testing.TB, expr string, frame []byte) {
	f, err := ParseFilter(expr)
	if err != nil {
		if !errors.Is(err, ErrFilter) {
			t.Fatalf("%q: error not ErrFilter: %v", expr, err)
		}
		return
	}
	if f == nil {
		return
	}
	prog, err := f.Program(1500)
	if err != nil {
		t.Fatalf("%q parsed but does not compile: %v", expr, err)
	}
	if got, want := vmMatch(t, prog, frame), f.Match(frame); got != want {
		t.Fatalf("%q on % x: program %v, Match %v", expr, frame, got, want)
	}
	// The normalised text parses to the same filter.
	g, err := ParseFilter(f.String())
	if err != nil || g.Match(frame) != f.Match(frame) {
		t.Fatalf("%q: normalised %q differs (%v)", expr, f.String(), err)
	}
}

// TestFilterRandomAgree compares compiled programs with Match on random
// expressions and frames.
func TestFilterRandomAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	words := []string{"udp", "tcp", "icmp", "arp", "ip", "host 10.0.0.1", "src host 10.0.0.2", "dst host 10.0.0.1",
		"port 53", "src port 80", "dst port 40000"}
	for range 3000 {
		expr := ""
		for i := range 1 + r.IntN(5) {
			if i > 0 {
				expr += []string{" and ", " or "}[r.IntN(2)]
			}
			if r.IntN(3) == 0 {
				expr += "not "
			}
			expr += words[r.IntN(len(words))]
		}
		s := frameSpec{
			etype: []uint16{unix.ETH_P_IP, unix.ETH_P_ARP, 0x86dd}[r.IntN(3)],
			proto: []uint8{1, 6, 17, 47}[r.IntN(4)],
			src:   [4]byte{10, 0, 0, byte(1 + r.IntN(2))}, dst: [4]byte{10, 0, 0, byte(1 + r.IntN(2))},
			sport: []uint16{53, 80, 40000}[r.IntN(3)], dpt: []uint16{53, 80, 40000}[r.IntN(3)],
			frag: uint16(r.IntN(2) * 5), ihl: 5 + r.IntN(3),
		}
		frame := buildFrame(s)
		frame = frame[:r.IntN(len(frame)+1)]
		checkAgree(t, expr, frame)
	}
}

func FuzzFilter(f *testing.F) {
	udp := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: 17, src: [4]byte{10, 0, 0, 1}, dst: [4]byte{10, 0, 0, 2}, sport: 53, dpt: 9})
	arp := buildFrame(frameSpec{etype: unix.ETH_P_ARP, src: [4]byte{10, 0, 0, 1}})
	for _, e := range []string{"udp", "port 53 and host 10.0.0.1", "not (arp or icmp)", "src port 9 || !tcp", "((udp))", "host", ")"} {
		f.Add(e, udp)
		f.Add(e, arp)
	}
	f.Fuzz(func(t *testing.T, expr string, frame []byte) {
		checkAgree(t, expr, frame)
	})
}

func ExampleParseFilter() {
	f, err := ParseFilter("udp and (port 53 or host 10.0.0.9) && !arp")
	if err != nil {
		panic(err)
	}
	prog, _ := f.Program(65535)
	fmt.Println(f, "-", len(prog), "classic BPF instructions")
	_, err = ParseFilter("port http")
	fmt.Println(err)
	// Output:
	// udp and ( port 53 or host 10.0.0.9 ) && ! arp - 31 classic BPF instructions
	// capture: filter "port http": port wants a number 0-65535, got "http": bad capture filter
}

func BenchmarkFilterMatch(b *testing.B) {
	f, err := ParseFilter("udp and (port 53 or host 10.0.0.9)")
	if err != nil {
		b.Fatal(err)
	}
	frame := buildFrame(frameSpec{etype: unix.ETH_P_IP, proto: 17, src: [4]byte{10, 0, 0, 1}, dst: [4]byte{10, 0, 0, 9}, sport: 1000, dpt: 2000})
	for b.Loop() {
		if !f.Match(frame) {
			b.Fatal("no match")
		}
	}
}
