package arp

import (
	"testing"
	"time"

	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
)

var (
	mac = [6]byte{2, 0, 0, 0, 0, 1}
	ip  = [4]byte{10, 0, 0, 1}
	hop = [4]byte{10, 0, 0, 2}
	hw  = [6]byte{2, 0, 0, 0, 0, 2}
)

func TestResolveFlushesPending(t *testing.T) {
	c := New(Config{MaxPending: 2})
	now := time.Now()
	if _, ok := c.Lookup(hop, now); ok {
		t.Fatal("empty cache hit")
	}
	frame := make([]byte, 60)
	req, drop := c.Enqueue(hop, link.Frame{Buf: frame}, now)
	if !req || drop {
		t.Fatalf("first miss: request %v drop %v", req, drop)
	}
	req, _ = c.Enqueue(hop, link.Frame{Buf: frame}, now)
	_, drop = c.Enqueue(hop, link.Frame{Buf: frame}, now)
	if req || !drop {
		t.Fatalf("queue bound: request %v drop %v", req, drop)
	}
	out := c.Learn(hop, hw, now)
	if len(out) != 2 || header.Ethernet(out[0].Buf).Dst() != hw {
		t.Fatalf("flushed %d frames", len(out))
	}
	if m, ok := c.Lookup(hop, now); !ok || m != hw {
		t.Fatal("not learned")
	}
	if _, ok := c.Lookup(hop, now.Add(DefaultTimeout)); ok {
		t.Fatal("entry outlived its timeout")
	}
}

func TestRetriesThenFail(t *testing.T) {
	c := New(Config{Retries: 3, RetryInterval: time.Second})
	t0 := time.Now()
	c.Enqueue(hop, link.Frame{Buf: make([]byte, 60)}, t0)
	var retries int
	var dropped int
	for i := 1; i <= 5; i++ {
		r, d := c.Tick(t0.Add(time.Duration(i)*time.Second), nil)
		retries += len(r)
		dropped += d
	}
	st := c.Stats()
	if retries != 2 || dropped != 1 || st.Failed != 1 || st.Pending != 0 {
		t.Fatalf("retries %d dropped %d stats %+v", retries, dropped, st)
	}
}

func TestSeededEntriesArePermanent(t *testing.T) {
	c := New(Config{})
	t0 := time.Now()
	other := [4]byte{10, 0, 0, 3}
	c.Learn(other, hw, t0) // an ordinary entry beside the seeded one
	c.Seed(map[[4]byte][6]byte{hop: hw})
	if st := c.Stats(); st.Entries != 2 || st.Learned != 2 {
		t.Fatalf("after seeding: %+v", st)
	}
	later := t0.Add(10 * DefaultTimeout)
	c.Tick(later, nil)
	if m, ok := c.Lookup(hop, later); !ok || m != hw {
		t.Fatal("seeded entry expired")
	}
	if _, ok := c.Lookup(other, later); ok {
		t.Fatal("learned entry outlived its timeout")
	}
	if st := c.Stats(); st.Entries != 1 {
		t.Fatalf("the expired entry was not forgotten: %+v", st)
	}
	// A peer that answers from a new Ethernet address is followed, and
	// its entry stays permanent.
	moved := [6]byte{2, 0, 0, 0, 0, 9}
	c.Learn(hop, moved, later)
	even := later.Add(10 * DefaultTimeout)
	c.Tick(even, nil)
	if m, ok := c.Lookup(hop, even); !ok || m != moved {
		t.Fatalf("moved seeded entry: %x %v", m, ok)
	}
}

// TestTickForgetsOnlyWhenDue: the expiry scan waits for the earliest
// entry that may go, and forgets it then.
func TestTickForgetsOnlyWhenDue(t *testing.T) {
	c := New(Config{Timeout: time.Second})
	t0 := time.Now()
	c.Learn(hop, hw, t0)
	c.Tick(t0.Add(1500*time.Millisecond), nil) // expired, not yet forgotten
	if st := c.Stats(); st.Entries != 1 {
		t.Fatalf("forgotten early: %+v", st)
	}
	c.Tick(t0.Add(2*time.Second), nil)
	if st := c.Stats(); st.Entries != 0 {
		t.Fatalf("not forgotten: %+v", st)
	}
}

func TestEncode(t *testing.T) {
	b := make([]byte, FrameSize)
	EncodeRequest(b, mac, ip, hop)
	a := header.ARP(b[14:])
	if header.Ethernet(b).Dst() != header.Broadcast || !a.IsValid() || a.Op() != header.ARPRequest ||
		a.SenderMAC() != mac || a.SenderAddr() != ip || a.TargetAddr() != hop {
		t.Fatalf("request %x", b)
	}
	EncodeReply(b, mac, ip, hw, hop)
	if header.Ethernet(b).Dst() != hw || a.Op() != header.ARPReply || a.TargetMAC() != hw {
		t.Fatalf("reply %x", b)
	}
}

func FuzzARP(f *testing.F) {
	b := make([]byte, FrameSize)
	EncodeRequest(b, hw, hop, ip)
	f.Add(b[14:])
	EncodeReply(b, hw, hop, mac, ip)
	f.Add(b[14:])
	f.Fuzz(func(t *testing.T, pkt []byte) {
		a := header.ARP(pkt)
		if !a.IsValid() {
			return
		}
		c := New(Config{MaxPending: 4})
		now := time.Now()
		c.Enqueue(a.SenderAddr(), link.Frame{Buf: make([]byte, 60)}, now)
		out := c.Learn(a.SenderAddr(), a.SenderMAC(), now)
		if len(out) != 1 {
			t.Fatalf("flushed %d", len(out))
		}
		if m, ok := c.Lookup(a.SenderAddr(), now); !ok || m != a.SenderMAC() {
			t.Fatal("lookup after learn")
		}
		c.Tick(now.Add(3*DefaultTimeout), nil)
		if c.Stats().Entries != 0 {
			t.Fatal("stale entry kept")
		}
	})
}
