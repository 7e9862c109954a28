package ipv4

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

var src, dst = [4]byte{10, 0, 0, 2}, [4]byte{10, 0, 0, 1}

// fragments cuts payload into fragments for mtu with WriteFragment.
func fragments(payload []byte, mtu int, id uint16) [][]byte {
	f := header.IPv4Fields{ID: id, TTL: 64, Protocol: header.ProtocolUDP, Src: src, Dst: dst}
	var out [][]byte
	for off := 0; off < len(payload); {
		b := make([]byte, mtu)
		var n int
		n, off = WriteFragment(b, &f, payload, off, mtu)
		out = append(out, b[:n])
	}
	return out
}

func TestFragmentShape(t *testing.T) {
	payload := make([]byte, 9008)
	fr := fragments(payload, 1500, 7)
	if len(fr) != FragmentCount(len(payload), 1500) || len(fr) != 7 {
		t.Fatalf("%d fragments, FragmentCount says %d", len(fr), FragmentCount(len(payload), 1500))
	}
	next := 0
	for i, b := range fr {
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || !ip.IsChecksumValid() || ip.ID() != 7 {
			t.Fatalf("fragment %d invalid", i)
		}
		if int(ip.FragmentOffset()) != next {
			t.Fatalf("fragment %d at %d, want %d", i, ip.FragmentOffset(), next)
		}
		if last := i == len(fr)-1; ip.More() == last {
			t.Fatalf("fragment %d: MF %v", i, ip.More())
		}
		if len(b) > 1500 || (ip.More() && (len(b)-20)%8 != 0) {
			t.Fatalf("fragment %d: %d bytes", i, len(b))
		}
		next += len(b) - 20
	}
}

func TestReassembleAnyOrder(t *testing.T) {
	payload := make([]byte, 5000)
	for i := range payload {
		payload[i] = byte(i * 13)
	}
	fr := fragments(payload, 1500, 9)
	r := NewReassembler(ReassemblerConfig{}, nil)
	order := []int{3, 0, 2, 1}
	for k, i := range order {
		out, ok := r.Add(header.IPv4(fr[i]), time.Now())
		if ok != (k == len(order)-1) {
			t.Fatalf("step %d: complete=%v", k, ok)
		}
		if ok {
			ip := header.IPv4(out)
			if !ip.IsValid(len(out)) || !ip.IsChecksumValid() || ip.IsFragment() || !bytes.Equal(ip.Payload(), payload) {
				t.Fatal("reassembled datagram wrong")
			}
		}
	}
	if st := r.Stats(); st.Pending != 0 || st.Bytes != 0 || st.Reassembled != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOverlapDropsWholeDatagram(t *testing.T) {
	var c engine.Counters
	r := NewReassembler(ReassemblerConfig{}, &c)
	fr := fragments(make([]byte, 4000), 1500, 1)
	r.Add(header.IPv4(fr[0]), time.Now())
	dup := append([]byte(nil), fr[0]...) // a duplicate overlaps too
	if _, ok := r.Add(header.IPv4(dup), time.Now()); ok {
		t.Fatal("duplicate completed a datagram")
	}
	if c.Drops[engine.DropFragmentOverlap].Load() != 2 || r.Stats().Pending != 0 || r.Stats().Bytes != 0 {
		t.Fatalf("overlap drops %d, stats %+v", c.Drops[engine.DropFragmentOverlap].Load(), r.Stats())
	}
	// The rest alone never completes.
	for _, f := range fr[1:] {
		if _, ok := r.Add(header.IPv4(f), time.Now()); ok {
			t.Fatal("completed without its first fragment")
		}
	}
}

func TestTimeout(t *testing.T) {
	var c engine.Counters
	r := NewReassembler(ReassemblerConfig{Timeout: time.Second}, &c)
	t0 := time.Now()
	r.Add(header.IPv4(fragments(make([]byte, 4000), 1500, 1)[0]), t0)
	if n := r.Expire(t0.Add(500 * time.Millisecond)); n != 0 {
		t.Fatalf("expired %d early", n)
	}
	if n := r.Expire(t0.Add(time.Second)); n != 1 || c.Drops[engine.DropFragmentTimeout].Load() != 1 || r.Stats().Bytes != 0 {
		t.Fatalf("expired %d, stats %+v", n, r.Stats())
	}
}

func TestMemoryBoundUnderFlood(t *testing.T) {
	var c engine.Counters
	const bound = 32 << 10
	r := NewReassembler(ReassemblerConfig{MaxBytes: bound, MaxDatagrams: 1 << 20}, &c)
	for id := range 5000 {
		r.Add(header.IPv4(fragments(make([]byte, 3000), 1500, uint16(id))[0]), time.Now())
		if st := r.Stats(); st.Bytes > bound {
			t.Fatalf("after %d: %d bytes held, bound %d", id, st.Bytes, bound)
		}
	}
	if c.Drops[engine.DropFragmentMemory].Load() == 0 {
		t.Fatal("nothing evicted")
	}
	// A complete datagram still gets through after the flood.
	var ok bool
	for _, f := range fragments(make([]byte, 3000), 1500, 60000) {
		_, ok = r.Add(header.IPv4(f), time.Now())
	}
	if !ok {
		t.Fatal("datagram lost after flood")
	}
}

func FuzzReassembly(f *testing.F) {
	for _, fr := range fragments(make([]byte, 3000), 1500, 5) {
		f.Add(fr, uint16(0))
	}
	f.Add(fragments(make([]byte, 100), 68, 1)[0], uint16(8))
	f.Fuzz(func(t *testing.T, b []byte, shift uint16) {
		// Feed b as a fragment, then a shifted copy, into a small
		// reassembler; whatever comes out must be a valid datagram and the
		// bound must hold.
		const bound = 16 << 10
		r := NewReassembler(ReassemblerConfig{MaxBytes: bound, MaxDatagrams: 8}, nil)
		ip := header.IPv4(b)
		if !ip.IsValid(len(b)) || !ip.IsFragment() {
			return
		}
		now := time.Now()
		for i := range 3 {
			c := append([]byte(nil), b...)
			fo := binary.BigEndian.Uint16(c[6:])
			binary.BigEndian.PutUint16(c[6:], fo+uint16(i)*shift)
			if out, ok := r.Add(header.IPv4(c), now); ok {
				o := header.IPv4(out)
				if !o.IsValid(len(out)) || !o.IsChecksumValid() || o.IsFragment() {
					t.Fatalf("bad datagram out: %x", out)
				}
			}
			if r.Stats().Bytes > bound {
				t.Fatal("bound exceeded")
			}
		}
		r.Expire(now.Add(time.Hour))
		if st := r.Stats(); st.Bytes != 0 || st.Pending != 0 {
			t.Fatalf("leftovers %+v", st)
		}
	})
}
