package stack

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/tcp"
)

// pollPair is pair with Config.PollBudget on both stacks.
func pollPair(t testing.TB, budget time.Duration) (*Stack, *Stack) {
	t.Helper()
	la, lb := mem.Pair(macA, macB, mem.Options{})
	a, err := New(la, Config{Addr: netip.PrefixFrom(ipA, 24), PollBudget: budget})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(lb, Config{Addr: netip.PrefixFrom(ipB, 24), PollBudget: budget})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestPollBudgetUDP: with a poll budget, UDP request/response works and
// readers take frames off the link themselves (run to completion); a
// read deadline still ends a read that polls.
func TestPollBudgetUDP(t *testing.T) {
	a, b := pollPair(t, 20*time.Millisecond)
	srv, err := a.ListenUDP(netip.AddrPortFrom(ipA, 7))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	cl, err := b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 7))
	if err != nil {
		t.Fatal(err)
	}
	req, resp := pattern(64, 1), make([]byte, 2048)
	for i := range 500 {
		if _, err := cl.Write(req); err != nil {
			t.Fatal(err)
		}
		cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := cl.Read(resp)
		if err != nil || !bytes.Equal(resp[:n], req) {
			t.Fatalf("exchange %d: %d bytes, %v", i, n, err)
		}
	}
	// Which goroutine takes a frame is up to the scheduler here (the
	// receive goroutine, woken too, may win the turn while the echo
	// server yields between polls): TestZeroAllocsPolling checks that
	// readers do take them.
	t.Logf("frames taken by polling readers: server %d, client %d", a.Stats().PolledFrames, b.Stats().PolledFrames)
	t0 := time.Now()
	cl.SetReadDeadline(t0.Add(5 * time.Millisecond)) // shorter than the budget
	if _, err := cl.Read(resp); err == nil {
		t.Fatal("read without an answer returned no error")
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("read deadline 5 ms ended the read after %v", d)
	}
}

// TestPollBudgetTCPOrder: bulk TCP both ways between polling readers
// arrives whole and in order; frames taken by readers and by the receive
// goroutine are never processed out of order (no segment counted out of
// order on a loss-free link).
func TestPollBudgetTCPOrder(t *testing.T) {
	a, b := pollPair(t, 5*time.Millisecond)
	l, err := a.ListenTCP(netip.AddrPortFrom(ipA, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c) // echo: reads poll, writes go out from the reader
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipA, 80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := pattern(4<<20, 3)
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		done <- err
	}()
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echoed data differs")
	}
	for name, s := range map[string]*Stack{"server": a, "client": b} {
		st := s.Stats()
		// (Tail loss probes may fire on a busy machine, and their
		// duplicates draw duplicate ACKs: timers, not disorder.)
		if st.TCP.OutOfOrder != 0 {
			t.Errorf("%s: %d segments out of order on a loss-free link", name, st.TCP.OutOfOrder)
		}
		t.Logf("%s: %d of %d frames taken by polling readers; %d TLPs, %d timeouts, %d fast retransmits", name, st.PolledFrames, st.RxFrames, st.TCP.TailLossProbes, st.TCP.Timeouts, st.TCP.FastRetransmits)
	}
}

// TestZeroAllocsPolling: readers take the frames themselves, and the
// polling read path allocates nothing either.
func TestZeroAllocsPolling(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	a, b := pollPair(t, 20*time.Millisecond)
	rx, err := a.ListenUDP(netip.AddrPortFrom(ipA, 8000))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 8000))
	if err != nil {
		t.Fatal(err)
	}
	msg, buf := pattern(64, 0), make([]byte, 2048)
	for range 3 { // ARP, buffers
		tx.Write(msg)
		if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	}
	before := a.Stats().PolledFrames
	allocs := testing.AllocsPerRun(2000, func() {
		if _, err := tx.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, _, err := rx.ReadFromUDPAddrPort(buf); err != nil || n != len(msg) {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per packet", allocs)
	}
	// The datagram is queued on the link before the read starts, and the
	// reader polls before the woken receive goroutine gets to run, as a
	// rule (here most are the reader's; the bound leaves room for a
	// loaded machine's scheduling).
	if p := a.Stats().PolledFrames - before; p == 0 {
		t.Errorf("none of 2001 datagrams taken by the polling reader")
	} else {
		t.Logf("%d of 2001 datagrams taken by the polling reader", p)
	}
}

// TestSocketPollBudget: a socket's own budget (SetPollBudget, as
// SO_BUSY_POLL) turns polling on for its readers alone on a stack that
// does not poll, and a budget of zero turns it off on one that does.
func TestSocketPollBudget(t *testing.T) {
	exchange := func(t *testing.T, a, b *Stack, budget time.Duration) uint64 {
		rx, err := a.ListenUDP(netip.AddrPortFrom(ipA, 8001))
		if err != nil {
			t.Fatal(err)
		}
		defer rx.Close()
		rx.SetPollBudget(budget)
		tx, err := b.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(ipA, 8001))
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Close()
		msg, buf := pattern(64, 0), make([]byte, 2048)
		before := a.Stats().PolledFrames
		for i := range 500 {
			if _, err := tx.Write(msg); err != nil {
				t.Fatal(err)
			}
			rx.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, _, err := rx.ReadFromUDPAddrPort(buf); err != nil || n != len(msg) {
				t.Fatalf("datagram %d: %d bytes, %v", i, n, err)
			}
		}
		return a.Stats().PolledFrames - before
	}
	t.Run("on", func(t *testing.T) {
		a, b := pollPair(t, 0)
		// As in TestZeroAllocsPolling: the datagram is on the link before
		// the read starts, so the reader's poll takes it, as a rule.
		if p := exchange(t, a, b, 20*time.Millisecond); p == 0 {
			t.Error("none of 500 datagrams taken by the socket's polling reader")
		} else {
			t.Logf("%d of 500 taken by the polling reader", p)
		}
	})
	t.Run("off", func(t *testing.T) {
		a, b := pollPair(t, 20*time.Millisecond)
		if p := exchange(t, a, b, 0); p != 0 {
			t.Errorf("%d datagrams taken by polling with the socket's budget at zero", p)
		}
	})
}

// TestConnPollBudget: a TCP connection's own budget (SetPollBudget) turns
// polling on for its reader on a stack that does not poll: an echo of a
// bulk stream, read by Read and by ReadFunc in turn, arrives whole and in
// order while the server's reader polls.
func TestConnPollBudget(t *testing.T) {
	a, b := pollPair(t, 0)
	const total = 4 << 20
	l, err := a.ListenTCP(netip.AddrPortFrom(ipA, 81))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tcp.Conn)
		tc.SetPollBudget(5 * time.Millisecond)
		buf := make([]byte, 16<<10)
		// ReadFunc waits for a low-water mark unless less is asked for:
		// ask no more than the stream still holds.
		for i, left := 0, total; left > 0; i++ {
			var n int
			if i%2 == 0 {
				n, err = tc.Read(buf)
			} else {
				n, err = tc.ReadFunc(min(len(buf), left), func(x, y []byte) int { return copy(buf, x) })
			}
			if err != nil {
				return
			}
			left -= n
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := b.DialTCP(ctx, netip.AddrPort{}, netip.AddrPortFrom(ipA, 81))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := a.Stats().PolledFrames
	data := pattern(total, 3)
	go c.Write(data)
	got := make([]byte, len(data))
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo of 4 MiB: %v", err)
	}
	// Who takes a frame is up to the scheduler on the mem link (the
	// receive goroutine, woken too, often wins: see TestPollBudgetUDP);
	// TestSocketPollBudget checks a socket's budget deterministically.
	t.Logf("%d frames taken by the polling reader", a.Stats().PolledFrames-before)
}

// busyPollLink records the link busy-poll budget the stack sets.
type busyPollLink struct {
	*mem.Link
	budget atomic.Int64
}

func (l *busyPollLink) SetBusyPoll(d time.Duration) { l.budget.Store(int64(d)) }

var _ link.BusyPoller = (*busyPollLink)(nil)

// TestLinkPollArmedBySockets: the link busy-polls only while a socket
// that asked for it (UDPOptions.LinkPoll) is open, with the largest
// budget asked for; other sockets leave it asleep.
func TestLinkPollArmedBySockets(t *testing.T) {
	la, lb := mem.Pair(macA, macB, mem.Options{})
	bl := &busyPollLink{Link: la}
	s, err := New(bl, Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer lb.Close()
	want := func(d time.Duration) {
		t.Helper()
		if got := time.Duration(bl.budget.Load()); got != d {
			t.Fatalf("link busy-poll budget %v, want %v", got, d)
		}
	}
	plain, err := s.ListenUDP(netip.AddrPortFrom(ipA, 0))
	if err != nil {
		t.Fatal(err)
	}
	want(0)
	short, err := s.ListenUDPOptions(netip.AddrPortFrom(ipA, 0), UDPOptions{LinkPoll: 50 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	want(50 * time.Microsecond)
	long, err := s.ListenUDPOptions(netip.AddrPortFrom(ipA, 0), UDPOptions{LinkPoll: 200 * time.Microsecond})
	if err != nil {
		t.Fatal(err)
	}
	want(200 * time.Microsecond)
	long.Close()
	long.Close() // a second Close counts nothing out
	want(50 * time.Microsecond)
	plain.Close()
	want(50 * time.Microsecond)
	short.Close()
	want(0)
}
