package tcbpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/netstation/netstation/internal/privtest"
)

// udpFrame returns an Ethernet/IPv4/UDP frame with payload.
func udpFrame(srcMAC net.HardwareAddr, src netip.Addr, payload int) []byte {
	b := make([]byte, 14+20+8+payload)
	copy(b[0:6], []byte{2, 0, 0, 0, 0, 2})
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payload))
	ip[8] = 64
	ip[9] = 17
	s := src.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[20:], 1000)
	binary.BigEndian.PutUint16(ip[22:], 2000)
	binary.BigEndian.PutUint16(ip[24:], uint16(8+payload))
	for i := range payload {
		ip[28+i] = byte(i)
	}
	return b
}

// arpFrame returns an ARP request from (sha, spa).
func arpFrame(ethSrc, sha net.HardwareAddr, spa netip.Addr) []byte {
	b := make([]byte, 14+28)
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], ethSrc)
	binary.BigEndian.PutUint16(b[12:], 0x0806)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], 0x0800)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:14], sha)
	s := spa.As4()
	copy(a[14:18], s[:])
	copy(a[24:28], []byte{10, 0, 0, 2})
	return b
}

type impairObjs struct {
	params, seq, counters *ebpf.Map
	progs                 [2]*ebpf.Program
}

func newImpairObjs(t testing.TB) *impairObjs {
	t.Helper()
	privtest.Root(t)
	o := &impairObjs{}
	var err error
	o.params, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: paramsSize, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.params.Close() })
	o.seq, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.seq.Close() })
	o.counters, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2 * counterKind})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.counters.Close() })
	for d := range 2 {
		p, err := loadProgram("ns_imp_test", impairInstructions(d, o.params, o.seq, o.counters))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		o.progs[d] = p
	}
	return o
}

type templateObjs struct {
	params, counters *ebpf.Map
	prog             *ebpf.Program
}

// newTemplateObjs loads a template program for mac and ip with maps of its
// own, all closed when t ends.
func newTemplateObjs(t testing.TB, mac net.HardwareAddr, ip netip.Addr) *templateObjs {
	t.Helper()
	privtest.Root(t)
	val, err := templateValue(mac, ip)
	if err != nil {
		t.Fatal(err)
	}
	o := &templateObjs{}
	o.params, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: tplParamsSize, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.params.Close() })
	if err := o.params.Put(uint32(0), val); err != nil {
		t.Fatal(err)
	}
	o.counters, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: tplSlots})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.counters.Close() })
	o.prog, err = loadProgram("ns_tpl_test", templateInstructions(o.params, o.counters))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.prog.Close() })
	return o
}

// runOnce runs prog on frame and returns its verdict and output frame.
func runOnce(t *testing.T, p *ebpf.Program, frame []byte) (int32, []byte) {
	t.Helper()
	out := make([]byte, len(frame)+256)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Repeat: 1}
	ret, err := p.Run(opts)
	if err != nil {
		t.Fatalf("run on % x: %v", frame, err)
	}
	return int32(ret), opts.DataOut
}

// TestImpairMatchesDecide runs the kernel program frame by frame through
// BPF_PROG_TEST_RUN and checks every frame's fate against the Go model.
func TestImpairMatchesDecide(t *testing.T) {
	o := newImpairObjs(t)
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	frame := udpFrame(mac, netip.MustParseAddr("10.0.0.1"), 32)
	const n = 3000
	for _, p := range []Params{
		{LossPPM: 50_000, CorruptPPM: 100_000, Seed: 7},
		{LossPPM: 500_000, CorruptPPM: 0, Seed: 1 << 63},
		{LossPPM: 0, CorruptPPM: 1_000_000, Seed: 3},
	} {
		if err := o.params.Put(uint32(0), p.marshal()); err != nil {
			t.Fatal(err)
		}
		for dir := range 2 {
			if err := o.seq.Put(uint32(dir), uint64(0)); err != nil {
				t.Fatal(err)
			}
			var drops, corrupts int
			for i := range uint64(n) {
				wantDrop, wantCorrupt := Decide(p, Direction(dir), i)
				ret, out := runOnce(t, o.progs[dir], frame)
				if wantDrop != (ret == actShot) {
					t.Fatalf("%+v dir %d frame %d: verdict %d, Decide says drop=%v", p, dir, i, ret, wantDrop)
				}
				if ret == actShot {
					drops++
					continue
				}
				if ret != actNext {
					t.Fatalf("verdict %d", ret)
				}
				changed := !bytes.Equal(out[:len(frame)], frame)
				if changed != wantCorrupt {
					t.Fatalf("%+v dir %d frame %d: changed=%v, Decide says corrupt=%v", p, dir, i, changed, wantCorrupt)
				}
				if changed {
					corrupts++
					last := len(frame) - 1
					if out[last] != ^frame[last] || !bytes.Equal(out[:last], frame[:last]) {
						t.Fatalf("corruption is not the last byte flipped: % x", out[:len(frame)])
					}
				}
			}
			t.Logf("%+v dir %d: %d dropped, %d corrupted of %d", p, dir, drops, corrupts, n)
		}
	}
}

// TestDecideRates checks that the model's rates are the asked ones and the
// two directions differ.
func TestDecideRates(t *testing.T) {
	p := Params{LossPPM: 50_000, CorruptPPM: 10_000, Seed: 99}
	const n = 1_000_000
	var drops, corrupts, same int
	for i := range uint64(n) {
		d, c := Decide(p, Ingress, i)
		d2, _ := Decide(p, Egress, i)
		if d {
			drops++
		}
		if c {
			corrupts++
		}
		if d == d2 {
			same++
		}
	}
	if drops < 49_000 || drops > 51_000 {
		t.Errorf("drops %d of %d, want ~5%%", drops, n)
	}
	// Corruption applies to the frames not dropped: 1% of 95%.
	if corrupts < 9_000 || corrupts > 10_000 {
		t.Errorf("corruptions %d of %d, want ~0.95%%", corrupts, n)
	}
	if same == n {
		t.Error("ingress and egress draw the same sequence")
	}
	if d, _ := Decide(Params{Down: true}, Ingress, 0); !d {
		t.Error("Down does not drop")
	}
	if d, c := Decide(Params{Seed: 5}, Ingress, 0); d || c {
		t.Error("zero rates impair")
	}
}

// TestImpairDownAndUnseeded checks Down and the unseeded path's rate.
func TestImpairDownAndUnseeded(t *testing.T) {
	o := newImpairObjs(t)
	frame := udpFrame(net.HardwareAddr{2, 0, 0, 0, 0, 1}, netip.MustParseAddr("10.0.0.1"), 32)
	o.params.Put(uint32(0), Params{Down: true, LossPPM: 0}.marshal())
	if ret, _ := runOnce(t, o.progs[0], frame); ret != actShot {
		t.Fatalf("Down: verdict %d", ret)
	}
	o.params.Put(uint32(0), Params{}.marshal())
	if ret, _ := runOnce(t, o.progs[0], frame); ret != actNext {
		t.Fatalf("no impairment: verdict %d", ret)
	}
	o.params.Put(uint32(0), Params{LossPPM: 200_000}.marshal())
	const n = 5000
	drops := 0
	for range n {
		if ret, _ := runOnce(t, o.progs[1], frame); ret == actShot {
			drops++
		}
	}
	// 20% of 5000: binomial sd ~28; allow 6 sd.
	if drops < 830 || drops > 1170 {
		t.Errorf("unseeded 20%% loss dropped %d of %d", drops, n)
	}
	// Counters: ingress passed 1, blocked 1; egress dropped = drops.
	for _, c := range []struct {
		key  uint32
		want uint64
	}{{kindPassed, 1}, {kindBlocked, 1}, {counterKind + kindDropped, uint64(drops)}, {counterKind + kindPassed, uint64(n - drops)}} {
		got, err := sumPerCPU(o.counters, c.key)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("counter %d = %d, want %d", c.key, got, c.want)
		}
	}
}

// TestImpairCorruptOnlyIPv4Payload checks that frames without an IPv4
// payload are never altered.
func TestImpairCorruptOnlyIPv4Payload(t *testing.T) {
	o := newImpairObjs(t)
	o.params.Put(uint32(0), Params{CorruptPPM: PPM, Seed: 1}.marshal())
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	arp := arpFrame(mac, mac, netip.MustParseAddr("10.0.0.1"))
	hdrOnly := udpFrame(mac, netip.MustParseAddr("10.0.0.1"), 0)
	binary.BigEndian.PutUint16(hdrOnly[16:], 20) // tot_len = IP header only
	short := arp[:20]
	for name, f := range map[string][]byte{"arp": arp, "ip header only": hdrOnly, "short": short} {
		ret, out := runOnce(t, o.progs[0], f)
		if ret != actNext || !bytes.Equal(out[:len(f)], f) {
			t.Errorf("%s: verdict %d, changed %v", name, ret, !bytes.Equal(out[:len(f)], f))
		}
	}
	if got, _ := sumPerCPU(o.counters, kindCorrupted); got != 0 {
		t.Errorf("corrupted counter %d", got)
	}
}

// TestTemplateProgram checks the template's verdict and reason for each
// kind of frame.
func TestTemplateProgram(t *testing.T) {
	privtest.Root(t)
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	other := net.HardwareAddr{2, 0, 0, 0, 0, 9}
	ip := netip.MustParseAddr("10.0.0.1")
	bad := netip.MustParseAddr("10.0.0.66")
	o := newTemplateObjs(t, mac, ip)
	params, counters, p := o.params, o.counters, o.prog
	ipv6 := udpFrame(mac, ip, 40) // test_run wants a full IPv6 header
	binary.BigEndian.PutUint16(ipv6[12:], 0x86dd)
	cases := []struct {
		name   string
		frame  []byte
		slot   int
		verdct int32
	}{
		{"own udp", udpFrame(mac, ip, 10), tplPassed, actNext},
		{"own arp", arpFrame(mac, mac, ip), tplPassed, actNext},
		{"wrong mac", udpFrame(other, ip, 10), tplBadMAC, actShot},
		{"wrong ip", udpFrame(mac, bad, 10), tplBadIP, actShot},
		{"arp wrong sha", arpFrame(mac, other, ip), tplBadARP, actShot},
		{"arp wrong spa", arpFrame(mac, mac, bad), tplBadARP, actShot},
		{"ipv6", ipv6, tplBadType, actShot},
		{"runt arp", arpFrame(mac, mac, ip)[:30], tplRunt, actShot},
	}
	for _, c := range cases {
		before, _ := sumPerCPU(counters, uint32(c.slot))
		ret, _ := runOnce(t, p, c.frame)
		after, _ := sumPerCPU(counters, uint32(c.slot))
		if ret != c.verdct || after != before+1 {
			t.Errorf("%s: verdict %d (want %d), counter %d -> %d", c.name, ret, c.verdct, before, after)
		}
	}
	// MAC-only template: any source IP passes.
	val, _ := templateValue(mac, netip.Addr{})
	params.Put(uint32(0), val)
	if ret, _ := runOnce(t, p, udpFrame(mac, bad, 10)); ret != actNext {
		t.Errorf("MAC-only template dropped a frame from its MAC: %d", ret)
	}
	if _, err := templateValue(mac[:5], ip); err == nil {
		t.Error("5-byte MAC accepted")
	}
	if _, err := templateValue(mac, netip.MustParseAddr("::1")); err == nil {
		t.Error("IPv6 address accepted")
	}
}
