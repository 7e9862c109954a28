package stack

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// TestEmittedFramesDecode decodes every frame two stacks exchange with
// gopacket and verifies every checksum with an independent sum.
func TestEmittedFramesDecode(t *testing.T) {
	for _, caps := range []link.Caps{0, link.CapVNetHdr} {
		rec := new(recorder)
		a, b := pair(t, mem.Options{Caps: caps, Drop: rec.hook})
		for _, size := range []int{56, 3000} {
			if _, err := a.Ping(ctxT(t), ipB, size); err != nil {
				t.Fatal(err)
			}
		}
		ca, _ := a.ListenUDP(netip.AddrPortFrom(ipA, 5000))
		cb, _ := b.DialUDP(netip.AddrPortFrom(ipB, 5001), netip.AddrPortFrom(ipA, 5000))
		for _, n := range []int{1, 1472, 9000} {
			if _, err := cb.Write(pattern(n, 1)); err != nil {
				t.Fatal(err)
			}
			ca.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := ca.ReadFrom(make([]byte, 10000)); err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]int{}
		fragBytes := map[uint16]int{}
		for _, f := range rec.take() {
			fr := f.Buf
			pkt := gopacket.NewPacket(fr, layers.LayerTypeEthernet, gopacket.Default)
			if el := pkt.ErrorLayer(); el != nil {
				t.Fatalf("caps %v: gopacket: %v\n%x", caps, el.Error(), fr)
			}
			if a := pkt.Layer(layers.LayerTypeARP); a != nil {
				seen["arp"]++
				continue
			}
			ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			if ip == nil {
				t.Fatalf("neither ARP nor IPv4: %v", pkt)
			}
			if sum16(fr[14:14+int(ip.IHL)*4]) != 0xffff {
				t.Fatalf("bad IP header checksum: %v", pkt)
			}
			if ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0 {
				seen["fragment"]++
				if ip.Flags&layers.IPv4MoreFragments != 0 && len(ip.Payload)%8 != 0 {
					t.Fatalf("fragment payload %d not a multiple of 8", len(ip.Payload))
				}
				if int(ip.FragOffset)*8 != fragBytes[ip.Id] {
					t.Fatalf("fragment offset %d, want %d", int(ip.FragOffset)*8, fragBytes[ip.Id])
				}
				fragBytes[ip.Id] += len(ip.Payload)
				continue
			}
			seg := fr[14+int(ip.IHL)*4 : 14+int(ip.Length)]
			switch ip.Protocol {
			case layers.IPProtocolICMPv4:
				seen["icmp"]++
				if sum16(seg) != 0xffff {
					t.Fatalf("bad ICMP checksum")
				}
			case layers.IPProtocolUDP:
				seen["udp"]++
				v := f.VNet
				if caps&link.CapVNetHdr != 0 {
					if v.Flags&link.VNetNeedsCsum == 0 || v.CsumStart != 34 || v.CsumOffset != 6 {
						t.Fatalf("offload frame without NEEDS_CSUM: %+v", v)
					}
					if err := engine.FinishChecksum(fr, &v); err != nil {
						t.Fatal(err)
					}
				}
				ph := checksum.PseudoHeader([4]byte(ip.SrcIP.To4()), [4]byte(ip.DstIP.To4()), 17, uint16(len(seg)))
				if checksum.Combine(ph, sum16(seg)) != 0xffff {
					t.Fatalf("bad UDP checksum")
				}
			}
		}
		if seen["arp"] < 2 || seen["icmp"] < 2 || seen["udp"] < 2 || seen["fragment"] < 8 {
			t.Fatalf("caps %v: saw %v", caps, seen)
		}
	}
}

// TestGSO sends a batch through a GSO-capable pair: it leaves as UDP_L4
// super-frames shaped the way the kernel expects and arrives as the
// datagrams it stands for.
func TestGSO(t *testing.T) {
	rec := new(recorder)
	a, b := pair(t, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Drop: rec.hook})
	if _, err := a.Ping(ctxT(t), ipB, 1); err != nil { // resolve both ways
		t.Fatal(err)
	}
	ca, _ := a.ListenUDP(netip.AddrPortFrom(ipA, 6000))
	cb, _ := b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 6000))
	const n, size = 40, 1400
	msgs := patterns(n, size)
	rec.take()
	if k, err := cb.WriteBatch(msgs); err != nil || k != n {
		t.Fatalf("WriteBatch: %d, %v", k, err)
	}
	expectBatch(t, ca, msgs)
	frames := rec.take()
	if len(frames) != 1 {
		t.Fatalf("%d frames on the wire, want one super-frame", len(frames))
	}
	f := frames[0]
	v := f.VNet
	// hdr_len asks for the whole frame in the skb's head (gsoHdrLen).
	if v.GSOType != link.GSOUDPL4 || v.GSOSize != size || int(v.HdrLen) != min(len(f.Buf), gsoLinearMax) ||
		v.Flags != link.VNetNeedsCsum || v.CsumStart != 34 || v.CsumOffset != 6 {
		t.Fatalf("vnet header %+v", v)
	}
	total := 28 + n*size
	if len(f.Buf) != 14+total || int(binary.BigEndian.Uint16(f.Buf[16:])) != total ||
		int(binary.BigEndian.Uint16(f.Buf[38:])) != 8+n*size || sum16(f.Buf[14:34]) != 0xffff {
		t.Fatalf("super-frame lengths/IP checksum wrong")
	}
	ph := checksum.PseudoHeader(ipB.As4(), ipA.As4(), 17, uint16(8+n*size))
	if binary.BigEndian.Uint16(f.Buf[40:]) != ph {
		t.Fatalf("UDP checksum field %#x, want pseudo-header sum %#x", binary.BigEndian.Uint16(f.Buf[40:]), ph)
	}
	if a.Stats().GSOFramesIn != 1 || b.Stats().GSOFramesOut != 1 {
		t.Fatalf("GSO counters: in %d out %d", a.Stats().GSOFramesIn, b.Stats().GSOFramesOut)
	}
}

// legacyLink refuses, as a kernel whose UDP_MAX_SEGMENTS is 64 does, any
// UDP_L4 super-frame of more than 64 datagrams with EINVAL, and sends the
// rest.
type legacyLink struct {
	*mem.Link
	refused atomic.Int32
}

func (l *legacyLink) WriteBatch(frames []link.Frame) (int, error) {
	for i, f := range frames {
		v := f.VNet
		if v.GSOType == link.GSOUDPL4 && (len(f.Buf)-udpFrameHeaders+int(v.GSOSize)-1)/int(v.GSOSize) > legacyGSOSegments {
			n, err := l.Link.WriteBatch(frames[:i])
			if err != nil {
				return n, err
			}
			l.refused.Add(1)
			return n, fmt.Errorf("afpacket: sendmmsg: %w", syscall.EINVAL)
		}
	}
	return l.Link.WriteBatch(frames)
}

// TestGSOSegments sends runs of small datagrams: they leave as
// super-frames of up to 128 (UDP_MAX_SEGMENTS of current kernels; 60 B,
// whose 128 fit the slab, see TestGSORunKeepsSlab), and a
// link that refuses more than 64 with EINVAL (older kernels) gets every
// datagram in super-frames of 64 from then on, nothing lost or doubled.
func TestGSOSegments(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			rec := new(recorder)
			o := mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Drop: rec.hook}
			ma, mb := mem.Pair(macA, macB, o)
			var la link.Link = ma
			ll := &legacyLink{Link: ma}
			if legacy {
				la = ll
			}
			a, b := stacksOn(t, la, mb)
			if _, err := a.Ping(ctxT(t), ipB, 1); err != nil {
				t.Fatal(err)
			}
			cb, _ := b.ListenUDP(netip.AddrPortFrom(ipB, 6000))
			ca, _ := a.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipB, 6000))
			const n, size = 300, 60
			msgs := patterns(n, size)
			rec.take()
			for round := 0; round < 2; round++ {
				if k, err := ca.WriteBatch(msgs); err != nil || k != n {
					t.Fatalf("round %d: WriteBatch: %d, %v", round, k, err)
				}
				expectBatch(t, cb, msgs)
			}
			want := []int{128, 128, 44}
			if legacy {
				want = []int{64, 64, 64, 64, 44}
			}
			segs := gsoSegs(rec.take(), size)
			if fmt.Sprint(segs) != fmt.Sprint(append(want, want...)) {
				t.Errorf("super-frames of %v datagrams, want %v twice", segs, want)
			}
			if legacy && ll.refused.Load() != 1 {
				t.Errorf("the link refused %d super-frames, want 1 (then the stack keeps to 64)", ll.refused.Load())
			}
			if d := b.Stats().TotalDrops(); d != 0 {
				t.Errorf("receiver drops: %v", b.Stats().Drops)
			}
		})
	}
}

// gsoSegs is how many datagrams of size bytes each UDP_L4 super-frame
// among frames carries.
func gsoSegs(frames []link.Frame, size int) []int {
	var segs []int
	for _, f := range frames {
		if f.VNet.GSOType == link.GSOUDPL4 {
			segs = append(segs, (len(f.Buf)-42+size-1)/size)
		}
	}
	return segs
}

// TestGSORunKeepsSlab: where a full super-frame would just miss the
// kernel's kmalloc-8k slab (62-64 B datagrams: 128 of 64 B make 8,234 B),
// runs are cut to what fits it (122 at 64 B), and where it would not fit
// the linear head (gsoLinearMax: 127 of 512 B) to what does, in
// WriteBatch and MaxRun alike; other sizes keep the kernel's limit.
func TestGSORunKeepsSlab(t *testing.T) {
	rec := new(recorder)
	ma, mb := mem.Pair(macA, macB, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Drop: rec.hook})
	a, b := stacksOn(t, ma, mb)
	if _, err := a.Ping(ctxT(t), ipB, 1); err != nil {
		t.Fatal(err)
	}
	cb, _ := b.ListenUDP(netip.AddrPortFrom(ipB, 6000))
	ca, _ := a.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipB, 6000))
	for _, c := range []struct{ seg, run, cutTo int }{
		{61, 128, 0}, {62, 126, gsoSlabMax}, {64, 122, gsoSlabMax}, {65, 128, 0},
		{500, 128, 0}, {511, 127, gsoLinearMax}, {512, 126, gsoLinearMax}, {1472, 44, 0},
	} {
		if m := ca.MaxRun(c.seg); m != c.run {
			t.Errorf("MaxRun(%d) = %d, want %d", c.seg, m, c.run)
		}
		if f := udpFrameHeaders + c.run*c.seg; c.cutTo > 0 && (f > c.cutTo || f+c.seg <= c.cutTo) {
			t.Errorf("%d x %d B: a %d B frame, not the most that fits %d", c.run, c.seg, f, c.cutTo)
		}
	}
	msgs := patterns(128, 64)
	rec.take()
	if k, err := ca.WriteBatch(msgs); err != nil || k != len(msgs) {
		t.Fatalf("WriteBatch: %d, %v", k, err)
	}
	expectBatch(t, cb, msgs)
	if segs := gsoSegs(rec.take(), 64); fmt.Sprint(segs) != "[122 6]" {
		t.Errorf("128 x 64 B left as super-frames of %v datagrams, want [122 6]", segs)
	}
}
