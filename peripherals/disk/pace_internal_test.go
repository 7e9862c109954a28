package disk

import (
	"math"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// countConn is a dgram.Conn that counts the datagrams sent.
type countConn struct {
	dgram.Conn // nil: only WriteBatch is called
	n          atomic.Int64
}

func (c *countConn) WriteBatch(msgs []dgram.Message) (int, error) {
	c.n.Add(int64(len(msgs)))
	return len(msgs), nil
}

// pacedServer is a disk server with only its pacer running (stopped at
// the test's end), a connection that counts what it sends, and a session.
func pacedServer(t *testing.T) (*Server, *countConn, *session) {
	s := &Server{cfg: Config{MaxPaced: DefaultMaxPaced}}
	s.outs.New = func() any { b := make([]byte, 300<<10); return &b }
	s.pacer.init()
	go s.paceLoop()
	t.Cleanup(func() { close(s.pacer.stop); <-s.pacer.done })
	return s, &countConn{}, &session{slots: make([]slot, 4)}
}

// TestPacedSendAllocs: a paced reply, part sent by the worker and the rest
// queued for the pacer goroutine and sent by it, allocates nothing in the
// steady state (the pacer's records, heap and message slices are reused).
func TestPacedSendAllocs(t *testing.T) {
	s, conn, sess := pacedServer(t)
	to := netip.MustParseAddrPort("10.0.0.1:9")
	var msgs []dgram.Message
	ob := s.outs.Get().(*[]byte)
	for i := range 180 { // a 256 KiB reply in 1,472-byte datagrams
		msgs = append(msgs, dgram.Message{Buf: (*ob)[i*1472 : (i+1)*1472], Addr: to})
	}
	s.outs.Put(ob)
	var sent int64
	reply := func() {
		ob := s.outs.Get().(*[]byte)
		if !s.paceSend(conn, sess, 1, ob, msgs, 200<<20) { // 1.4 ms of air: the pacer sends most of it
			s.outs.Put(ob)
		}
		sent += int64(len(msgs))
		for conn.n.Load() < sent || !s.pacerIdle() {
			time.Sleep(50 * time.Microsecond)
		}
	}
	for range 5 {
		reply() // warm up: the pacer's free list and heap
	}
	waits := s.stats.paceWaits.Load()
	if a := testing.AllocsPerRun(50, reply); a > 0 {
		t.Errorf("%.1f allocations per paced reply", a)
	}
	if s.stats.paceWaits.Load() == waits {
		t.Error("no reply waited for the pacer: the test tested the worker's path only")
	}
}

// FuzzPaceArithmetic: whatever rate a READ asks for and whatever bytes a
// session queues, the rate paced at is 0 or at least MinPaceRate, and the
// airtime is non-negative, monotone in the bytes and never above what
// MinPaceRate gives (no overflow, no wrap-around into a short wait).
func FuzzPaceArithmetic(f *testing.F) {
	for _, seed := range [][2]uint64{{0, 0}, {1, 1 << 20}, {math.MaxUint64, math.MaxUint64}, {1500, 94_208}, {MinPaceRate - 1, 1 << 40}} {
		f.Add(seed[0], seed[1])
	}
	s := &Server{}
	f.Fuzz(func(t *testing.T, asked, n uint64) {
		n = min(n, math.MaxUint64-1)
		rate := s.paceRate(asked)
		if asked == 0 {
			if rate != 0 {
				t.Fatalf("rate 0 paced at %d", rate)
			}
			return
		}
		if rate < MinPaceRate || (asked >= MinPaceRate && rate != asked) {
			t.Fatalf("asked %d, paced at %d", asked, rate)
		}
		d, d1 := airtime(n, rate), airtime(n+1, rate)
		if d < 0 || d1 < d || d > airtime(n, MinPaceRate) {
			t.Fatalf("airtime(%d, %d) = %v, of one byte more %v", n, rate, d, d1)
		}
		if want := float64(n) / float64(rate) * 1e9; want < 1<<62 && math.Abs(float64(d)-want) > 1+want*1e-9 {
			t.Fatalf("airtime(%d, %d) = %v, want %.0f ns", n, rate, d, want)
		}
	})
}

// pacerIdle reports whether the pacer holds nothing: every buffer it took
// is back in its pool.
func (s *Server) pacerIdle() bool {
	s.pacer.mu.Lock()
	defer s.pacer.mu.Unlock()
	return len(s.pacer.queue) == 0 && s.pacer.bytes == 0 && len(s.pacer.free) > 0
}

// TestPacedReplySent: a READ whose reply the pacer finishes stays
// "sending" (its retransmissions answered in progress) until the pacer's
// last chunk left, then is marked sent.
func TestPacedReplySent(t *testing.T) {
	s, conn, sess := pacedServer(t)
	sess.slots[1] = slot{reqID: 5, valid: true}
	j := &job{req: diskproto.Request{ReqID: 5}, sess: sess}
	s.sending(j)
	to := netip.MustParseAddrPort("10.0.0.1:9")
	ob := s.outs.Get().(*[]byte)
	var msgs []dgram.Message
	for i := range 180 {
		msgs = append(msgs, dgram.Message{Buf: (*ob)[i*1472 : (i+1)*1472], Addr: to})
	}
	if !s.paceSend(conn, sess, 5, ob, msgs, MinPaceRate*50) { // 5 ms of air: the pacer sends most of it
		t.Fatal("the reply did not wait for the pacer")
	}
	s.mu.Lock()
	sending := sess.slots[1].sending
	s.mu.Unlock()
	if !sending && conn.n.Load() < int64(len(msgs)) {
		t.Fatal("marked sent before the pacer sent its last chunk")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		sl := sess.slots[1]
		s.mu.Unlock()
		if !sl.sending {
			if n := conn.n.Load(); n != int64(len(msgs)) {
				t.Fatalf("marked sent with %d of %d datagrams sent", n, len(msgs))
			}
			if !sl.done || !sl.valid {
				t.Fatalf("slot %+v", sl)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never marked sent (%d of %d datagrams sent)", conn.n.Load(), len(msgs))
		}
	}
}
