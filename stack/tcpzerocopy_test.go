package stack

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/impair"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/tcp"
)

// tcpLent connects a client on a plain mem link to a server on a stack
// whose link lends its receive buffers (at most limit out at once).
// The client's frames are lost at lossPPM (once connected), so segments
// also arrive out of order; with reorder the server's link delivers its
// frames in swapped pairs.
func tcpLent(t *testing.T, limit int32, lossPPM uint32, reorder ...bool) (client, server *tcp.Conn, srv *Stack, l *lendingLink) {
	t.Helper()
	la, lb := mem.Pair(macA, macB, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
	l = newLendingLink(la, limit)
	l.reorder = len(reorder) > 0 && reorder[0]
	lossy := impair.Wrap(lb)
	a, b := stacksOn(t, l, lossy)
	ln, err := a.ListenTCP(netip.AddrPortFrom(ipA, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	client, err = b.DialTCP(ctxT(t), netip.AddrPort{}, netip.AddrPortFrom(ipA, 9000))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-acc:
		server = c.(*tcp.Conn)
	case <-time.After(5 * time.Second):
		t.Fatal("no accept")
	}
	lossy.Set(impair.Params{LossPPM: lossPPM, Seed: 1})
	return client, server, a, l
}

// randomBytes is a stream no shift of which repeats it (unlike pattern).
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// waitHeld waits until the link has want buffers on loan.
func waitHeld(t *testing.T, l *lendingLink, want int32) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); l.held.Load() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("%d buffers on loan, want %d", l.held.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTCPLent: a TCP stream into a stack whose link lends its buffers
// arrives whole and in order through Read and through ReadFunc taking
// parts of what it is lent, the super-frames' payloads are lent rather
// than copied, and every buffer goes back to the link once read. With
// the link's loans capped low, the rest is copied and the stream is the
// same, and so it is with losses and with frames delivered out of order
// (data held out of order is lent where it overlaps nothing held, else
// copied; a retransmission may then overlap chunks on loan).
func TestTCPLent(t *testing.T) {
	for _, c := range []struct {
		limit   int32
		loss    uint32
		reorder bool
	}{{7, 0, false}, {1, 0, false}, {7, 20000, false}, {7, 0, true}, {7, 20000, true}, {2, 0, true}} {
		limit := c.limit
		client, server, st, l := tcpLent(t, limit, c.loss, c.reorder)
		data := randomBytes(6<<20+1234, uint64(limit))
		werr := make(chan error, 1)
		go func() {
			_, err := client.Write(data)
			client.CloseWrite()
			werr <- err
		}()
		server.SetReadDeadline(time.Now().Add(30 * time.Second)) // a stream gone wrong fails, not hangs
		got := make([]byte, 0, len(data))
		buf := make([]byte, 100<<10)
		for i := 0; ; i++ {
			var n int
			var err error
			if i%2 == 0 {
				n, err = server.Read(buf[:[]int{100 << 10, 1000, 7, 64 << 10}[i/2%4]])
				got = append(got, buf[:n]...)
			} else {
				n, err = server.ReadFunc(1<<20, func(a, b []byte) int {
					take := len(a) + len(b)
					if i%3 == 0 && take > 1 {
						take = take/2 + 1 // the rest is lent again
					}
					k := min(take, len(a))
					got = append(got, a[:k]...)
					got = append(got, b[:take-k]...)
					return take
				})
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("limit %d: read after %d bytes: %v", limit, len(got), err)
			}
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			i := 0
			for i < min(len(got), len(data)) && got[i] == data[i] {
				i++
			}
			t.Fatalf("limit %d: got %d bytes, want %d; first difference at %d", limit, len(got), len(data), i)
		}
		if lent := st.Stats().LentFramesIn; lent == 0 {
			t.Errorf("limit %d: no super-frame lent", limit)
		}
		if c.loss > 0 && client.Info().Retransmits == 0 {
			t.Errorf("loss %d ppm: nothing retransmitted", c.loss)
		}
		if ooo := st.Stats().TCP.OutOfOrder; c.reorder && ooo == 0 {
			t.Errorf("limit %d, reordered: no segment arrived out of order", limit)
		}
		waitHeld(t, l, 0)
	}
}

// TestTCPLentClose: data left unread on loan goes back to the link when
// the connection is closed.
func TestTCPLentClose(t *testing.T) {
	client, server, st, l := tcpLent(t, 7, 0)
	data := randomBytes(512<<10, 9)
	if _, err := client.Write(data); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); server.Buffered() < len(data); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes arrived", server.Buffered(), len(data))
		}
		time.Sleep(time.Millisecond)
	}
	if st.Stats().LentFramesIn == 0 || l.held.Load() == 0 {
		t.Fatalf("nothing on loan (%d lent, %d held)", st.Stats().LentFramesIn, l.held.Load())
	}
	// Read some, from inside a lent chunk, then close with the rest unread.
	buf := make([]byte, 3000)
	if _, err := io.ReadFull(server, buf); err != nil || !bytes.Equal(buf, data[:3000]) {
		t.Fatalf("read: %v, equal %v", err, bytes.Equal(buf, data[:3000]))
	}
	server.Close()
	waitHeld(t, l, 0)
}

// gatherLink is a mem link that gathers as afpacket does (one frame given
// as pieces); it assembles the frame in a buffer of its own, as the
// kernel's copy would, and counts the frames it gathered.
type gatherLink struct {
	link.Link
	gathered atomic.Int64
}

func (g *gatherLink) WriteGather(v link.VNetHdr, pieces [][]byte) error {
	var b []byte
	for _, p := range pieces {
		b = append(b, p...)
	}
	g.gathered.Add(1)
	_, err := g.Link.WriteBatch([]link.Frame{{Buf: b, VNet: v}})
	return err
}

// TestTCPGather: on a link that gathers, bulk data leaves from the send
// ring as pieces and arrives whole; small writes (below gatherMin) are
// copied behind their header. On a link that refuses to gather (an
// impairment wrapper over one that cannot), the route assembles the frame
// and the stream is the same.
func TestTCPGather(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		la, lb := mem.Pair(macA, macB, mem.Options{Caps: link.CapVNetHdr | link.CapGSO, Depth: 4096})
		var lnk link.Link
		g := &gatherLink{Link: lb}
		lnk = g
		if refuse {
			lnk = impair.Wrap(lb) // mem does not gather: ErrNoGather
		}
		a, b := stacksOn(t, la, lnk)
		ln, err := a.ListenTCP(netip.AddrPortFrom(ipA, 9001))
		if err != nil {
			t.Fatal(err)
		}
		acc := make(chan net.Conn, 1)
		go func() {
			c, _ := ln.Accept()
			acc <- c
		}()
		client, err := b.DialTCP(ctxT(t), netip.AddrPort{}, netip.AddrPortFrom(ipA, 9001))
		if err != nil {
			t.Fatal(err)
		}
		server := <-acc
		ln.Close()
		data := randomBytes(5<<20+333, 5)
		werr := make(chan error, 1)
		go func() {
			// Small and large writes.
			for off := 0; off < len(data); {
				n := min(len(data)-off, []int{100, 300 << 10, 7}[off%3])
				if _, err := client.Write(data[off : off+n]); err != nil {
					werr <- err
					return
				}
				off += n
			}
			werr <- client.CloseWrite()
		}()
		server.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(server)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-werr; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("refuse %v: got %d bytes, want %d, equal %v", refuse, len(got), len(data), bytes.Equal(got, data))
		}
		if !refuse && g.gathered.Load() == 0 {
			t.Error("no segment gathered")
		}
		server.Close()
	}
}
