package tcp_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/tcp"
)

// TestMSSHonoured: segments never carry more than the peer's MSS.
func TestMSSHonoured(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	a := r.activeOpen(7200) // the peer said MSS 1000
	if _, err := a.c.Write(pattern(5000, 1)); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 5000 {
		s := r.expect("data")
		if len(s.Payload) > 1000 {
			t.Fatalf("segment of %d bytes, peer MSS 1000", len(s.Payload))
		}
		got += len(s.Payload)
		a.r.send(a.rport, a.lport, a.rnxt, s.Seq+uint32(len(s.Payload)), flagACK, nil, header.TCPOptions{})
	}
}

// TestNagle: with Nagle on, a second small write waits for the ACK of
// the first; with it off (the default) it leaves at once.
func TestNagle(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	a := r.activeOpen(7201)
	a.c.Write([]byte("a"))
	s1 := r.expectData()
	a.c.Write([]byte("b"))
	s2 := r.expectData() // no delay by default
	a.r.send(a.rport, a.lport, a.rnxt, s2.Seq+1, flagACK, nil, header.TCPOptions{})
	time.Sleep(10 * time.Millisecond)
	a.c.SetNoDelay(false)
	a.c.Write([]byte("c"))
	s3 := r.expectData()
	a.c.Write([]byte("d"))
	a.c.Write([]byte("e"))
	r.silent(30 * time.Millisecond)
	a.r.send(a.rport, a.lport, a.rnxt, s3.Seq+1, flagACK, nil, header.TCPOptions{})
	s4 := r.expectData()
	if string(s4.Payload) != "de" || s4.Seq != s1.Seq+3 {
		t.Fatalf("after the ACK: %q at %d", s4.Payload, s4.Seq)
	}
}

// TestDelayedACK: one small segment is acknowledged after the delayed-ACK
// timeout, a second full one at once.
func TestDelayedACK(t *testing.T) {
	r := newRawPeer(t, tcp.Config{DelayedACK: 300 * time.Millisecond})
	a := r.activeOpen(7202)
	start := time.Now()
	a.send(flagACK, []byte("x"), a.iss+1)
	ack := r.expectFlags("A")
	if d := time.Since(start); d < 250*time.Millisecond || ack.Ack != a.rnxt {
		t.Fatalf("ACK of one small segment after %v (ack %d)", d, ack.Ack)
	}
	start = time.Now()
	a.send(flagACK, pattern(1000, 0), a.iss+1)
	a.send(flagACK, pattern(1000, 0), a.iss+1)
	ack = r.expectFlags("A")
	if d := time.Since(start); d > 200*time.Millisecond || ack.Ack != a.rnxt {
		t.Fatalf("ACK of two full segments after %v (ack %d, want %d)", d, ack.Ack, a.rnxt)
	}
}

// TestTimestampsAndPAWS: timestamps are echoed, and a segment with an
// older timestamp than the last one is dropped and answered with an ACK
// (RFC 7323 §5).
func TestTimestampsAndPAWS(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	l, err := r.s.ListenTCP(netip.AddrPortFrom(ipA, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ts := func(v uint32) header.TCPOptions { return header.TCPOptions{HasTS: true, TSVal: v} }
	syn := header.TCPOptions{MSS: 1460, HasTS: true, TSVal: 1000, HasWS: true, WS: 3}
	r.send(2000, 80, 10, 0, flagSYN, nil, syn)
	sa := r.expectFlags("SA")
	var echo uint32
	var wsSeen bool
	for _, o := range sa.Options {
		switch o.OptionType {
		case layers.TCPOptionKindTimestamps:
			echo = be32(o.OptionData[4:])
		case layers.TCPOptionKindWindowScale:
			wsSeen = true
		}
	}
	if echo != 1000 || !wsSeen {
		t.Fatalf("SYN-ACK echoes TS %d (want 1000), window scale %v", echo, wsSeen)
	}
	r.send(2000, 80, 11, sa.Seq+1, flagACK, nil, ts(1001))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r.send(2000, 80, 11, sa.Seq+1, flagACK, []byte("new"), ts(1002))
	buf := make([]byte, 10)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "new" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	// An old timestamp on new data: dropped, ACKed with the old rcvNxt.
	r.send(2000, 80, 14, sa.Seq+1, flagACK, []byte("old"), ts(900))
	deadline := time.Now().Add(3 * time.Second)
	for {
		s := r.expectFlags("A")
		if s.Ack == 14 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ACK of 14 (last %d)", s.Ack)
		}
	}
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("PAWS let %q through", buf[:n])
	}
	// Window scaling in use: the advertised window, scaled by our shift,
	// exceeds 64 KiB only if the shift is there; at least it is not the
	// unscaled buffer size.
	r.send(2000, 80, 14, sa.Seq+1, flagACK, []byte("x"), ts(1003))
	for {
		s := r.expectFlags("A")
		if s.Ack == 15 {
			if s.Window == 0 || int(s.Window) >= 64<<10 {
				t.Fatalf("window field %d with scaling on", s.Window)
			}
			break
		}
	}
}

// TestFastRetransmitWithinSent: a fast retransmission resends only what
// was sent before, even when more data waits behind a small window (a
// regression: resending unsent bytes made the peer acknowledge beyond
// what we had sent, and we refused its ACKs for good).
func TestFastRetransmitWithinSent(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	a := r.activeOpen(7203)
	// Shrink the window to 500 bytes, then give the stack 5000 to send.
	r.window = 500
	a.r.send(a.rport, a.lport, a.rnxt, a.iss+1, flagACK, nil, header.TCPOptions{})
	// The stack takes the ACK in on its receive goroutine: a write
	// before it has (-race on a loaded machine) sends a full segment in
	// the old window.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		in := a.c.Info()
		if in.SendWindow == 500<<in.SendWS {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("send window %d 10 s after the peer shrank it to 500 (scale %d)", in.SendWindow, in.SendWS)
		}
	}
	a.c.Write(pattern(5000, 3))
	s := r.expectData()
	if len(s.Payload) != 500 {
		t.Fatalf("first segment %d bytes with a 500-byte window", len(s.Payload))
	}
	r.silent(20 * time.Millisecond)
	for range 3 {
		a.r.send(a.rport, a.lport, a.rnxt, a.iss+1, flagACK, nil, header.TCPOptions{})
	}
	re := r.expectData()
	if re.Seq != a.iss+1 || len(re.Payload) > 500 {
		t.Fatalf("fast retransmission: %d bytes at %d; only 500 were sent at %d", len(re.Payload), re.Seq, a.iss+1)
	}
}

// TestDSACK: a segment received twice (a retransmission the first copy
// of which arrived, as after reordering on the path) is acknowledged with
// a D-SACK block naming the duplicate (RFC 2883), once; a sender that
// retransmitted for nothing learns so. Checked with gopacket's decoder.
func TestDSACK(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	l, err := r.s.ListenTCP(netip.AddrPortFrom(ipA, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r.send(2001, 80, 10, 0, flagSYN, nil, header.TCPOptions{MSS: 1460, SACKPermitted: true})
	sa := r.expectFlags("SA")
	r.send(2001, 80, 11, sa.Seq+1, flagACK, nil, header.TCPOptions{})
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sack := func(s *layers.TCP) [][2]uint32 {
		var out [][2]uint32
		for _, o := range s.Options {
			if o.OptionType == layers.TCPOptionKindSACK {
				for b := o.OptionData; len(b) >= 8; b = b[8:] {
					out = append(out, [2]uint32{be32(b), be32(b[4:])})
				}
			}
		}
		return out
	}
	data := pattern(1000, 5)
	r.send(2001, 80, 11, sa.Seq+1, flagACK, data, header.TCPOptions{})
	r.send(2001, 80, 1011, sa.Seq+1, flagACK, data, header.TCPOptions{})
	for ack := r.expectFlags("A"); ack.Ack != 2011; ack = r.expectFlags("A") {
		if len(sack(ack)) != 0 {
			t.Fatalf("SACK blocks %v with nothing out of order or duplicated", sack(ack))
		}
	}
	// The second segment again: acknowledged at once, with a D-SACK.
	r.send(2001, 80, 1011, sa.Seq+1, flagACK, data, header.TCPOptions{})
	ack := r.expectFlags("A")
	if got := sack(ack); ack.Ack != 2011 || len(got) != 1 || got[0] != [2]uint32{1011, 2011} {
		t.Fatalf("ACK of a duplicate: ack %d, SACK %v; want ack 2011 and a D-SACK [1011, 2011)", ack.Ack, got)
	}
	// Reported once: new data is acknowledged without it.
	r.send(2001, 80, 2011, sa.Seq+1, flagACK, data, header.TCPOptions{})
	r.send(2001, 80, 3011, sa.Seq+1, flagACK, data, header.TCPOptions{})
	for ack = r.expectFlags("A"); ack.Ack != 4011; ack = r.expectFlags("A") {
	}
	if got := sack(ack); len(got) != 0 {
		t.Fatalf("the D-SACK came again: %v", got)
	}
}
