package tcp

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/engine"
)

// pairNet is a Network whose routes hand each segment straight to the
// other end's Input and Flush, on the sender's goroutine: what a request
// and its reply cost the protocol itself, with no link and no wake-ups.
// It is a Driver too: with nothing to poll (segments arrive on the
// sender's goroutine), a driving reader spins on ready, as one polling an
// idle link does.
type pairNet struct {
	addr [4]byte
	peer **Protocol
}

func (n *pairNet) LocalAddr() [4]byte     { return n.addr }
func (n *pairNet) MTU() int               { return 1500 }
func (n *pairNet) GSO() bool              { return false }
func (n *pairNet) Drop(engine.DropReason) {}
func (n *pairNet) NewRoute(dst [4]byte, _ uint16) (Route, error) {
	return &pairRoute{n: n}, nil
}

func (n *pairNet) Drive(ready func() bool, deadline int64, budget time.Duration) {
	if budget <= 0 {
		return
	}
	end := time.Now().Add(budget).UnixNano()
	if deadline != 0 {
		end = min(end, deadline)
	}
	for !ready() && time.Now().UnixNano() < end {
		runtime.Gosched()
	}
}

type pairRoute struct{ n *pairNet }

func (r *pairRoute) Output(segs []Segment) error {
	p := *r.n.peer
	for i := range segs {
		p.Input(r.n.addr, p.laddr, segs[i].Buf[Headroom:], 0, 0)
	}
	p.Flush()
	return nil
}
func (r *pairRoute) Close() {}

// newPair connects a client on one pairNet Protocol to a server on the
// other.
func newPair(tb testing.TB) (c, s *Conn) {
	tb.Helper()
	var pa, pb *Protocol
	na := &pairNet{addr: [4]byte{10, 0, 0, 1}, peer: &pb}
	nb := &pairNet{addr: [4]byte{10, 0, 0, 2}, peer: &pa}
	pa, pb = New(na, Config{}), New(nb, Config{})
	tb.Cleanup(func() { pa.Close(); pb.Close() })
	l, err := pb.Listen(netip.AddrPortFrom(netip.AddrFrom4(nb.addr), 7))
	if err != nil {
		tb.Fatal(err)
	}
	c, err = pa.Dial(context.Background(), netip.AddrPort{}, netip.AddrPortFrom(netip.AddrFrom4(nb.addr), 7))
	if err != nil {
		tb.Fatal(err)
	}
	sc, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	return c, sc.(*Conn)
}

// exchange is one request from c and its reply from s; sent, if not nil,
// runs when the request is on its way and again when the server has read
// it (read true).
func exchange(tb testing.TB, c, s *Conn, req, resp []byte, sent func(read bool)) {
	if _, err := c.Write(req); err != nil {
		tb.Fatal(err)
	}
	if sent != nil {
		sent(false)
	}
	if _, err := io.ReadFull(s, resp); err != nil {
		tb.Fatal(err)
	}
	if sent != nil {
		sent(true)
	}
	if _, err := s.Write(resp); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(c, req); err != nil {
		tb.Fatal(err)
	}
}

// TestRequestAckRidesOnReply: a request's ACK waits for the reply (one
// segment each way per exchange, no pure ACK), and the request leaves its
// receiver owing nothing, so the receive batch's Flush passes it by.
func TestRequestAckRidesOnReply(t *testing.T) {
	c, s := newPair(t)
	req, resp := make([]byte, 64), make([]byte, 64)
	for range 10 {
		exchange(t, c, s, req, resp, nil)
	}
	outC, outS := c.p.st.SegsOut.Load(), s.p.st.SegsOut.Load()
	const n = 100
	for range n {
		exchange(t, c, s, req, resp, func(read bool) {
			if read {
				return
			}
			s.mu.Lock()
			owe, dack := s.mayOweLocked(), s.dackArmed
			s.mu.Unlock()
			if owe || !dack {
				t.Fatalf("after a request: server may owe a segment %v (want false), delayed ACK armed %v (want true)", owe, dack)
			}
		})
	}
	if dc, ds := c.p.st.SegsOut.Load()-outC, s.p.st.SegsOut.Load()-outS; dc != n || ds != n {
		t.Errorf("%d exchanges: client sent %d segments, server %d; want %d each", n, dc, ds, n)
	}
	// Owing something still gets the connection flushed: a request the
	// server does not answer is acknowledged when its delayed-ACK timer
	// fires (DefaultDelayedACK), and a window update or FIN goes at once.
	s.mu.Lock()
	s.ackNow = true
	owe := s.mayOweLocked()
	s.ackNow = false
	s.mu.Unlock()
	if !owe {
		t.Error("a connection with an ACK due reports it owes nothing")
	}
}

// TestRingsStartOver: a ring that holds nothing starts over at its
// beginning, so each message of a request/response exchange is written
// and read at the start of the sender's and the receiver's rings (warm
// lines) instead of walking all of them; the bytes still arrive intact.
func TestRingsStartOver(t *testing.T) {
	c, s := newPair(t)
	req, resp := make([]byte, 64), make([]byte, 64)
	for i := range 300 { // 300 x 64 B: past the end of a 16 KiB ring, were it walked
		for j := range req {
			req[j] = byte(i + j)
		}
		exchange(t, c, s, req, resp, func(read bool) {
			if read {
				for j := range resp {
					if resp[j] != byte(i+j) {
						t.Fatalf("exchange %d: byte %d is %d, want %d", i, j, resp[j], byte(i+j))
					}
				}
				return
			}
			c.mu.Lock()
			sndOff := c.sndEnd - c.sndBase
			c.mu.Unlock()
			s.mu.Lock()
			rcvOff := s.rcvNxt - s.rcvBase
			s.mu.Unlock()
			if sndOff != 64 || rcvOff != 64 {
				t.Fatalf("exchange %d: the request ends %d bytes into the client's send ring and %d into the server's receive ring; want 64 and 64", i, sndOff, rcvOff)
			}
		})
	}
}

// TestPollingReaderSeesNews: a reader driving the network (run to
// completion) returns as soon as what it waits for happens, data or the
// peer's FIN or a local Close, not when its poll budget ends: each sets
// the news readReady looks for before it takes the lock.
func TestPollingReaderSeesNews(t *testing.T) {
	const budget = 10 * time.Second // a missed event would wait this out
	for _, ev := range []string{"data", "fin", "close"} {
		t.Run(ev, func(t *testing.T) {
			c, s := newPair(t)
			s.SetPollBudget(budget)
			type res struct {
				n   int
				err error
			}
			done := make(chan res, 1)
			go func() {
				buf := make([]byte, 64)
				n, err := s.Read(buf)
				done <- res{n, err}
			}()
			time.Sleep(20 * time.Millisecond) // the reader is driving by now
			start := time.Now()
			switch ev {
			case "data":
				c.Write(make([]byte, 64))
			case "fin":
				c.CloseWrite()
			case "close":
				s.Close()
			}
			var r res
			select {
			case r = <-done:
			case <-time.After(budget / 2):
				t.Fatalf("%s: the polling reader did not return within %v", ev, budget/2)
			}
			switch {
			case ev == "data" && (r.n != 64 || r.err != nil):
				t.Errorf("data: read %d, %v; want 64, nil", r.n, r.err)
			case ev == "fin" && r.err != io.EOF:
				t.Errorf("fin: read %d, %v; want io.EOF", r.n, r.err)
			case ev == "close" && !errors.Is(r.err, ErrClosed):
				t.Errorf("close: read %d, %v; want ErrClosed", r.n, r.err)
			}
			t.Logf("%s: the reader returned %v after the event", ev, time.Since(start))
		})
	}
}

// BenchmarkRRPair: a 64-byte request and its 64-byte reply between two
// Protocols joined by pairNet: the CPU both ends' TCP spends per round
// trip (Write, Input, Flush, Read at each end), links and wake-ups aside.
func BenchmarkRRPair(b *testing.B) {
	c, s := newPair(b)
	req, resp := make([]byte, 64), make([]byte, 64)
	for range 100 {
		exchange(b, c, s, req, resp, nil)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		exchange(b, c, s, req, resp, nil)
	}
}
