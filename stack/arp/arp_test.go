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
