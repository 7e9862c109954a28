package tcp_test

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/tcp"
)

const (
	flagSYN = header.TCPFlagSYN
	flagACK = header.TCPFlagACK
	flagFIN = header.TCPFlagFIN
	flagRST = header.TCPFlagRST
)

// active is a connection the stack opened to the raw peer.
type active struct {
	r     *rawPeer
	c     *tcp.Conn
	iss   uint32 // the stack's ISS
	rnxt  uint32 // the raw peer's next sequence number
	lport uint16 // the stack's port
	rport uint16
}

func (r *rawPeer) activeOpen(rport uint16) *active {
	r.t.Helper()
	type res struct {
		c   *tcp.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := r.s.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipB, rport))
		ch <- res{c, err}
	}()
	syn := r.expectFlags("S")
	var mss, ws, sackOK, ts bool
	for _, o := range syn.Options {
		switch o.OptionType {
		case layers_MSS:
			mss = be16(o.OptionData) == 1460
		case layers_WS:
			ws = true
		case layers_SACKOK:
			sackOK = true
		case layers_TS:
			ts = true
		}
	}
	if !mss || !ws || !sackOK || !ts {
		r.t.Errorf("SYN options: MSS 1460 %v, window scale %v, SACK-permitted %v, timestamps %v", mss, ws, sackOK, ts)
	}
	a := &active{r: r, iss: syn.Seq, rnxt: 5000, lport: uint16(syn.SrcPort), rport: rport}
	// SYN-ACK with MSS only: no window scaling, no timestamps.
	r.send(rport, a.lport, 4999, a.iss+1, flagSYN|flagACK, nil, header.TCPOptions{MSS: 1000})
	ack := r.expectFlags("A")
	if ack.Seq != a.iss+1 || ack.Ack != 5000 {
		r.t.Fatalf("handshake ACK seq %d ack %d, want %d %d", ack.Seq, ack.Ack, a.iss+1, 5000)
	}
	x := <-ch
	if x.err != nil {
		r.t.Fatal(x.err)
	}
	a.c = x.c
	r.t.Cleanup(func() { a.c.Abort() })
	return a
}

func (a *active) send(flags uint8, payload []byte, ack uint32) {
	a.r.send(a.rport, a.lport, a.rnxt, ack, flags, payload, header.TCPOptions{})
	a.rnxt += uint32(len(payload))
	if flags&(flagFIN|flagSYN) != 0 {
		a.rnxt++
	}
}

func (a *active) state(want string) {
	a.r.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for a.c.State() != want {
		if time.Now().After(deadline) {
			a.r.t.Fatalf("state %s, want %s", a.c.State(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// toState drives a fresh active connection into state.
func toState(t *testing.T, r *rawPeer, state string, port uint16) *active {
	t.Helper()
	a := r.activeOpen(port)
	switch state {
	case "ESTABLISHED":
	case "FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT":
		a.c.Close()
		fin := r.expectFlags("AF")
		if fin.Seq != a.iss+1 {
			t.Fatalf("FIN seq %d, want %d", fin.Seq, a.iss+1)
		}
		switch state {
		case "FIN-WAIT-2", "TIME-WAIT":
			a.send(flagACK, nil, a.iss+2)
			a.state("FIN-WAIT-2")
			if state == "TIME-WAIT" {
				a.send(flagFIN|flagACK, nil, a.iss+2)
				r.expectFlags("A")
			}
		case "CLOSING":
			a.send(flagFIN|flagACK, nil, a.iss+1)
			if ack := r.expectFlags("A"); ack.Ack != a.rnxt {
				t.Fatalf("ACK of FIN: %d, want %d", ack.Ack, a.rnxt)
			}
		}
	case "CLOSE-WAIT", "LAST-ACK":
		a.send(flagFIN|flagACK, nil, a.iss+1)
		r.expectFlags("A")
		if state == "LAST-ACK" {
			a.state("CLOSE-WAIT")
			a.c.CloseWrite()
			r.expectFlags("AF")
		}
	default:
		t.Fatalf("no way to %s", state)
	}
	a.state(state)
	return a
}

// TestRSTInEveryState: an exact RST ends the connection in every
// synchronized state; an in-window inexact one draws a challenge ACK and
// changes nothing (RFC 9293 §3.10.7.4, RFC 5961 §3.2).
func TestRSTInEveryState(t *testing.T) {
	for i, state := range []string{"ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSING", "TIME-WAIT", "CLOSE-WAIT", "LAST-ACK"} {
		t.Run(state, func(t *testing.T) {
			r := newRawPeer(t, tcp.Config{TimeWait: 10 * time.Second})
			a := toState(t, r, state, uint16(7000+i))
			// Inexact but in the window: challenge ACK.
			a.r.send(a.rport, a.lport, a.rnxt+100, 0, flagRST, nil, header.TCPOptions{})
			if ack := r.expectFlags("A"); ack.Ack != a.rnxt {
				t.Fatalf("challenge ACK acks %d, want %d", ack.Ack, a.rnxt)
			}
			a.state(state)
			// Outside the window: ignored (no RST in reply to a RST).
			a.r.send(a.rport, a.lport, a.rnxt-100000, 0, flagRST, nil, header.TCPOptions{})
			r.silent(20 * time.Millisecond)
			a.state(state)
			a.r.send(a.rport, a.lport, a.rnxt, 0, flagRST, nil, header.TCPOptions{})
			a.state("CLOSED")
			waitConns(t, r.s, 0)
			r.silent(20 * time.Millisecond)
			if state == "ESTABLISHED" || state == "CLOSE-WAIT" {
				if _, err := a.c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("write after RST: %v", err)
				}
			}
			if state == "ESTABLISHED" {
				if _, err := a.c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("read after RST: %v", err)
				}
			}
		})
	}
}

// TestSynSentRST: a RST with an acceptable ACK refuses the dial; one
// without an ACK, or with a wrong one, is ignored.
func TestSynSentRST(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := r.s.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipB, 99))
		errc <- err
	}()
	syn := r.expectFlags("S")
	lport := uint16(syn.SrcPort)
	r.send(99, lport, 0, 0, flagRST, nil, header.TCPOptions{}) // no ACK: ignored
	r.send(99, lport, 0, syn.Seq+7, flagRST|flagACK, nil, header.TCPOptions{})
	// A bad ACK without RST draws a RST carrying that ACK as its sequence.
	r.send(99, lport, 0, syn.Seq+7, flagACK, nil, header.TCPOptions{})
	if rst := r.expectFlags("R"); rst.Seq != syn.Seq+7 {
		t.Fatalf("RST seq %d, want %d", rst.Seq, syn.Seq+7)
	}
	select {
	case err := <-errc:
		t.Fatalf("dial ended early: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	r.send(99, lport, 0, syn.Seq+1, flagRST|flagACK, nil, header.TCPOptions{})
	if err := <-errc; !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial: %v, want ECONNREFUSED", err)
	}
	waitConns(t, r.s, 0)
}

// TestSynRcvdRST: a RST in SYN-RECEIVED of a passive open drops the
// half-open connection; the listener goes on.
func TestSynRcvdRST(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	l, err := r.s.ListenTCP(netip.AddrPortFrom(ipA, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r.send(1234, 80, 100, 0, flagSYN, nil, header.TCPOptions{MSS: 1400})
	sa := r.expectFlags("SA")
	if sa.Ack != 101 {
		t.Fatalf("SYN-ACK acks %d", sa.Ack)
	}
	waitConns(t, r.s, 1)
	r.send(1234, 80, 101, 0, flagRST, nil, header.TCPOptions{})
	waitConns(t, r.s, 0)
	// The same peer again, completing the handshake this time.
	r.send(1234, 80, 500, 0, flagSYN, nil, header.TCPOptions{})
	sa = r.expectFlags("SA")
	r.send(1234, 80, 501, sa.Seq+1, flagACK, []byte("hi"), header.TCPOptions{})
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "hi" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

// TestNoSocketRST: the answers of a port nobody listens on, and of a
// listener to a stray ACK (RFC 9293 §3.10.7.1-2).
func TestNoSocketRST(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	r.send(1000, 81, 700, 0, flagSYN, []byte("abc"), header.TCPOptions{})
	rst := r.expectFlags("AR")
	if rst.Seq != 0 || rst.Ack != 704 {
		t.Fatalf("RST for a SYN: seq %d ack %d, want 0 704", rst.Seq, rst.Ack)
	}
	r.send(1000, 81, 700, 12345, flagACK, nil, header.TCPOptions{})
	if rst := r.expectFlags("R"); rst.Seq != 12345 {
		t.Fatalf("RST for an ACK: seq %d, want 12345", rst.Seq)
	}
	r.send(1000, 81, 700, 12345, flagRST|flagACK, nil, header.TCPOptions{})
	r.silent(20 * time.Millisecond)

	l, err := r.s.ListenTCP(netip.AddrPortFrom(netip.IPv4Unspecified(), 81))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r.send(1000, 81, 700, 999, flagACK, nil, header.TCPOptions{})
	if rst := r.expectFlags("R"); rst.Seq != 999 {
		t.Fatalf("listener's RST for an ACK: seq %d", rst.Seq)
	}
	r.send(1000, 81, 700, 0, flagRST, nil, header.TCPOptions{})
	r.send(1000, 81, 700, 0, flagFIN, nil, header.TCPOptions{})
	r.silent(20 * time.Millisecond)
	waitConns(t, r.s, 0)
}

// TestSimultaneousOpen: our SYN crosses the peer's (RFC 9293 figure 8).
func TestSimultaneousOpen(t *testing.T) {
	r := newRawPeer(t, tcp.Config{})
	type res struct {
		c   *tcp.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := r.s.DialTCP(ctx, netip.AddrPortFrom(ipA, 4000), netip.AddrPortFrom(ipB, 5000))
		ch <- res{c, err}
	}()
	syn := r.expectFlags("S")
	r.send(5000, 4000, 9000, 0, flagSYN, nil, header.TCPOptions{MSS: 1460})
	sa := r.expectFlags("SA")
	if sa.Seq != syn.Seq || sa.Ack != 9001 {
		t.Fatalf("SYN-ACK seq %d ack %d, want %d 9001", sa.Seq, sa.Ack, syn.Seq)
	}
	// Our own SYN-ACK crosses theirs: theirs is old now and draws an ACK.
	r.send(5000, 4000, 9000, syn.Seq+1, flagSYN|flagACK, nil, header.TCPOptions{MSS: 1460})
	r.expectFlags("A")
	r.send(5000, 4000, 9001, syn.Seq+1, flagACK, []byte("x"), header.TCPOptions{})
	x := <-ch
	if x.err != nil {
		t.Fatal(x.err)
	}
	defer x.c.Abort()
	buf := make([]byte, 1)
	x.c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := x.c.Read(buf); n != 1 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	if x.c.State() != "ESTABLISHED" {
		t.Fatal(x.c.State())
	}
}

// TestCloseOrders drives orderly close both ways and a simultaneous close
// between two stacks, and checks who lingers in TIME-WAIT.
func TestCloseOrders(t *testing.T) {
	for _, order := range []string{"client-first", "server-first", "simultaneous"} {
		t.Run(order, func(t *testing.T) {
			w := newWorld(t, worldOpts{tcp: tcp.Config{TimeWait: 300 * time.Millisecond}})
			c, s := w.connect(t, 80)
			buf := make([]byte, 8)
			switch order {
			case "client-first":
				c.Close()
				s.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := s.Read(buf); err != io.EOF {
					t.Fatalf("server read: %v", err)
				}
				waitState(t, c, "FIN-WAIT-2")
				waitState(t, s, "CLOSE-WAIT")
				s.Close()
				waitState(t, c, "TIME-WAIT")
				waitState(t, s, "CLOSED")
				waitState(t, c, "CLOSED")
			case "server-first":
				s.Close()
				c.SetReadDeadline(time.Now().Add(3 * time.Second))
				if _, err := c.Read(buf); err != io.EOF {
					t.Fatalf("client read: %v", err)
				}
				c.Close()
				waitState(t, s, "TIME-WAIT")
				waitState(t, c, "CLOSED")
				waitState(t, s, "CLOSED")
			case "simultaneous":
				// Both FINs leave before either arrives: hold B's link
				// side by closing both under one lock-step.
				done := make(chan struct{})
				go func() { c.Close(); close(done) }()
				s.Close()
				<-done
				waitState(t, c, "CLOSED")
				waitState(t, s, "CLOSED")
			}
			waitConns(t, w.a, 0)
			waitConns(t, w.b, 0)
		})
	}
}

func waitState(t *testing.T, c *tcp.Conn, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for c.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", c.State(), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// TestSimultaneousCloseRaw: our FIN crosses the peer's: CLOSING, then
// TIME-WAIT once ours is acknowledged.
func TestSimultaneousCloseRaw(t *testing.T) {
	r := newRawPeer(t, tcp.Config{TimeWait: 50 * time.Millisecond})
	a := toState(t, r, "CLOSING", 7100)
	a.send(flagACK, nil, a.iss+2)
	a.state("TIME-WAIT")
	a.state("CLOSED")
	waitConns(t, r.s, 0)
}

// TestTimeWaitReuse: a SYN above the old sequence space for a 4-tuple in
// TIME-WAIT opens a new connection at once (even with an older
// timestamp); a retransmitted FIN in TIME-WAIT is acknowledged again.
func TestTimeWaitReuse(t *testing.T) {
	r := newRawPeer(t, tcp.Config{TimeWait: 10 * time.Second})
	l, err := r.s.ListenTCP(netip.AddrPortFrom(ipA, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ts := func(v uint32) header.TCPOptions { return header.TCPOptions{HasTS: true, TSVal: v} }
	r.send(3000, 80, 100, 0, flagSYN, nil, header.TCPOptions{MSS: 1460, HasTS: true, TSVal: 5000})
	sa := r.expectFlags("SA")
	r.send(3000, 80, 101, sa.Seq+1, flagACK, nil, ts(5001))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	fin := r.expectFlags("AF")
	r.send(3000, 80, 101, fin.Seq+1, flagACK|flagFIN, nil, ts(5002))
	r.expectFlags("A")
	waitState(t, c.(*tcp.Conn), "TIME-WAIT")
	// The peer did not see our ACK and sends its FIN again.
	r.send(3000, 80, 101, fin.Seq+1, flagACK|flagFIN, nil, ts(5003))
	if ack := r.expectFlags("A"); ack.Ack != 102 {
		t.Fatalf("ACK of a retransmitted FIN: %d", ack.Ack)
	}
	r.send(3000, 80, 900000, 0, flagSYN, nil, header.TCPOptions{MSS: 1460, HasTS: true, TSVal: 7})
	sa2 := r.expectFlags("SA")
	if sa2.Ack != 900001 {
		t.Fatalf("SYN-ACK of the new incarnation acks %d", sa2.Ack)
	}
	r.send(3000, 80, 900001, sa2.Seq+1, flagACK, nil, ts(8))
	c2, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
}

// TestTimeWaitHoldsNoRings: a connection waiting out TIME-WAIT has
// nothing left to send or read, so it gives its rings back (a busy
// server holds a TIME-WAIT's worth of closed connections).
func TestTimeWaitHoldsNoRings(t *testing.T) {
	w := newWorld(t, worldOpts{tcp: tcp.Config{TimeWait: 10 * time.Second}})
	c, s := w.connect(t, 80)
	if _, err := c.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if c.Info().SendBuffer == 0 {
		t.Fatal("a connection that wrote has no send ring")
	}
	c.Close()
	if _, err := s.Read(make([]byte, 8)); err != io.EOF {
		t.Fatalf("server read: %v", err)
	}
	s.Close()
	waitState(t, c, "TIME-WAIT")
	if got := c.Info().SendBuffer; got != 0 {
		t.Fatalf("in TIME-WAIT the send ring is %d bytes, want none", got)
	}
}
