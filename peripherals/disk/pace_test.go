package disk_test

import (
	"bytes"
	"math/rand/v2"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
)

// pacedBed is a disk with one worker and 1 MiB requests on loopback, and
// raw sessions that receive whole segmented READ replies. The disk's
// socket records when each datagram was sent: a loaded machine may read
// them late and all at once, but the pacer never sends one early.
type pacedBed struct {
	srv  *disk.Server
	addr net.Addr
	data []byte
	sent *sendLog
}

// sendLog is a net.PacketConn (not a *net.UDPConn: dgram.Of takes it one
// datagram per call) that records each datagram's destination and time.
type sendLog struct {
	net.PacketConn
	mu sync.Mutex
	to []string
	at []time.Time
}

func (l *sendLog) WriteTo(b []byte, addr net.Addr) (int, error) {
	l.mu.Lock()
	l.to, l.at = append(l.to, addr.String()), append(l.at, time.Now())
	l.mu.Unlock()
	return l.PacketConn.WriteTo(b, addr)
}

// span returns the first and last send times to addr after from.
func (l *sendLog) span(addr net.Addr, from time.Time) (first, last time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, to := range l.to {
		if to == addr.String() && l.at[i].After(from) {
			if first.IsZero() {
				first = l.at[i]
			}
			last = l.at[i]
		}
	}
	return first, last
}

func newPacedBed(t *testing.T, maxPaced int) *pacedBed {
	t.Helper()
	const size = 4 << 20
	path := filepath.Join(t.TempDir(), "d.img")
	srv, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: disk.OpenAccess{},
		MaxIO: 1 << 20, Workers: 1, Datagram: 1472, MaxPaced: maxPaced})
	if err != nil {
		t.Fatal(err)
	}
	spc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dgram.SetKernelBuffers(spc, 8<<20)
	sent := &sendLog{PacketConn: spc}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sent) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		spc.Close()
	})
	b := &pacedBed{srv: srv, addr: spc.LocalAddr(), data: make([]byte, size), sent: sent}
	r := rand.New(rand.NewPCG(5, 6))
	for i := range b.data {
		b.data[i] = byte(r.Uint32())
	}
	s := b.session(t, 1)
	s.write(t, 0, b.data)
	return b
}

type pacedSession struct {
	pc   *net.UDPConn
	srv  net.Addr
	sess uint64
	ep   uint64
	id   uint64
	buf  []byte
}

func (b *pacedBed) session(t *testing.T, id uint64) *pacedSession {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	dgram.SetKernelBuffers(pc, 8<<20)
	t.Cleanup(func() { pc.Close() })
	s := &pacedSession{pc: pc, srv: b.addr, sess: id, buf: make([]byte, 70000)}
	s.send(t, diskproto.Request{Op: diskproto.OpInfo, Tag: 1})
	rep, _, ok := s.recv(t, 5*time.Second)
	if !ok || rep == nil || rep.Status != diskproto.CodeOK {
		t.Fatalf("INFO: %+v", rep)
	}
	s.ep = rep.Epoch
	return s
}

func (s *pacedSession) send(t *testing.T, r diskproto.Request) {
	t.Helper()
	r.Session, r.Epoch = s.sess, s.ep
	if r.Op != diskproto.OpInfo {
		r.ReqID, r.Low = s.id, s.id
		s.id++
	}
	b := make([]byte, diskproto.RequestHeaderSize+len(r.Payload))
	if _, err := r.Marshal(b); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pc.WriteTo(b, s.srv); err != nil {
		t.Fatal(err)
	}
}

// recv returns the next reply header or READ data segment.
func (s *pacedSession) recv(t *testing.T, wait time.Duration) (*diskproto.Reply, *diskproto.Segment, bool) {
	t.Helper()
	s.pc.SetReadDeadline(time.Now().Add(wait))
	n, _, err := s.pc.ReadFrom(s.buf)
	if err != nil {
		return nil, nil, false
	}
	b := s.buf[:n]
	if diskproto.IsSegment(b) {
		seg, err := diskproto.ParseSegment(b)
		if err != nil {
			t.Fatalf("bad segment: %v", err)
		}
		return nil, &seg, true
	}
	rep, err := diskproto.ParseReply(b)
	if err != nil {
		t.Fatalf("bad reply: %v", err)
	}
	return &rep, nil, true
}

// write stores data at off in requests of 60,000 bytes (one datagram
// each on loopback).
func (s *pacedSession) write(t *testing.T, off int, data []byte) {
	t.Helper()
	for pos := 0; pos < len(data); pos += 60000 {
		p := data[pos:min(pos+60000, len(data))]
		s.send(t, diskproto.Request{Op: diskproto.OpWrite, Tag: 2, Offset: uint64(off + pos), Payload: p})
		if rep, _, ok := s.recv(t, 5*time.Second); !ok || rep == nil || rep.Status != diskproto.CodeOK {
			t.Fatalf("WRITE at %d: %+v", off+pos, rep)
		}
	}
}

// read asks for n bytes at off at rate and returns them with the times
// the disk sent the first and last datagram.
func (s *pacedSession) read(t *testing.T, log *sendLog, off, n int, rate uint64) (got []byte, first, last time.Time) {
	t.Helper()
	asked := time.Now()
	defer func() { first, last = log.span(s.pc.LocalAddr(), asked) }()
	s.send(t, diskproto.Request{Op: diskproto.OpRead, Tag: 3, Offset: uint64(off), Length: uint32(n), PaceRate: rate})
	got = make([]byte, n)
	var track diskproto.Assembly
	track.Reset(uint32(n))
	for !track.Complete() {
		rep, seg, ok := s.recv(t, 10*time.Second)
		if !ok {
			t.Fatalf("READ of %d at %d: reply incomplete", n, off)
		}
		switch {
		case rep != nil:
			if rep.Status != diskproto.CodeOK {
				t.Fatalf("READ: %v", rep.Status)
			}
			track.Add(0, 0, len(rep.Payload))
			copy(got, rep.Payload)
		default:
			if _, err := track.Add(int(seg.Index), seg.Offset, len(seg.Data)); err != nil {
				t.Fatal(err)
			}
			copy(got[seg.Offset:], seg.Data)
		}
	}
	return got, first, last
}

// TestPacedReadReply: a READ carrying a pace rate gets its reply spread
// over at least its size at that rate (less the burst allowance), byte
// for byte; a hostile rate of 1 B/s is raised to the floor and counted,
// and while that reply trickles out at the floor, the disk's only worker
// answers another session at once: no goroutine sleeps for a client.
func TestPacedReadReply(t *testing.T) {
	b := newPacedBed(t, 0)
	s := b.session(t, 2)

	// 1 MiB at 16 MiB/s: 62 ms, less one chunk and the 250 us credit.
	got, first, last := s.read(t, b.sent, 0, 1<<20, 16<<20)
	if !bytes.Equal(got, b.data[:1<<20]) {
		t.Fatal("paced reply differs from the data")
	}
	if d := last.Sub(first); d < 45*time.Millisecond {
		t.Errorf("1 MiB paced at 16 MiB/s arrived in %v", d)
	}
	st := b.srv.Stats()
	if st.PacedReads != 1 || st.PaceWaits != 1 || st.PaceFloor != 0 || st.PaceOverflow != 0 {
		t.Errorf("stats after a paced READ: paced %d, waits %d, floor %d, overflow %d",
			st.PacedReads, st.PaceWaits, st.PaceFloor, st.PaceOverflow)
	}

	// Unpaced (rate 0): byte-exact, and not counted as paced.
	if got, _, _ := s.read(t, b.sent, 1<<20, 256<<10, 0); !bytes.Equal(got, b.data[1<<20:1<<20+256<<10]) {
		t.Fatal("unpaced reply differs from the data")
	}
	if st := b.srv.Stats(); st.PacedReads != 1 {
		t.Errorf("paced reads %d after an unpaced one", st.PacedReads)
	}

	// A resend (HAVE: datagram 0 held) is paced too.
	asked := time.Now()
	bm := []byte{0x01}
	s.send(t, diskproto.Request{Op: diskproto.OpRead, Flags: diskproto.FlagHave, Tag: 5, Length: 1 << 20,
		PaceRate: 16 << 20, Payload: bm})
	l := diskproto.Layout{Header: diskproto.ReplyHeaderSize, Length: 1 << 20, Datagram: 1472}
	var rfirst, rlast time.Time
	for got := 1; got < l.Count(); got++ {
		_, seg, ok := s.recv(t, 10*time.Second)
		if !ok || seg == nil {
			t.Fatalf("resend: %d of %d datagrams", got-1, l.Count()-1)
		}
		if !bytes.Equal(seg.Data, b.data[seg.Offset:int(seg.Offset)+len(seg.Data)]) {
			t.Fatalf("resent segment %d differs", seg.Index)
		}
	}
	rfirst, rlast = b.sent.span(s.pc.LocalAddr(), asked)
	if d := rlast.Sub(rfirst); d < 45*time.Millisecond {
		t.Errorf("1 MiB resent at 16 MiB/s arrived in %v", d)
	}
	if st := b.srv.Stats(); st.ResentReads != 1 || st.PacedReads != 2 {
		t.Errorf("resent reads %d, paced %d: want 1 and 2", st.ResentReads, st.PacedReads)
	}

	// 1 B/s: the floor, 1 MiB/s, so about 0.9 s for 896 KiB (within the
	// second a reply may wait).
	slow := b.session(t, 3)
	slowAsked := time.Now()
	slow.send(t, diskproto.Request{Op: diskproto.OpRead, Tag: 4, Length: 896 << 10, PaceRate: 1})
	if _, _, ok := slow.recv(t, 5*time.Second); !ok {
		t.Fatal("no start of the slow reply")
	}
	other := b.session(t, 4)
	got, _, otherDone := other.read(t, b.sent, 2<<20, 64<<10, 0)
	if !bytes.Equal(got, b.data[2<<20:2<<20+64<<10]) {
		t.Fatal("other session's reply differs")
	}
	for got := 1; got < (diskproto.Layout{Header: diskproto.ReplyHeaderSize, Length: 896 << 10, Datagram: 1472}).Count(); got++ {
		if _, _, ok := slow.recv(t, 5*time.Second); !ok {
			t.Fatalf("slow reply: %d datagrams arrived", got)
		}
	}
	slowStart, slowDone := b.sent.span(slow.pc.LocalAddr(), slowAsked)
	if d := slowDone.Sub(slowStart); d < 600*time.Millisecond {
		t.Errorf("896 KiB at the 1 MiB/s floor arrived in %v", d)
	}
	if !otherDone.Before(slowDone) {
		t.Errorf("another session's READ waited for the paced one (sent %v after it)", otherDone.Sub(slowDone))
	}
	if st := b.srv.Stats(); st.PaceFloor != 1 || st.PaceOverflow != 0 {
		t.Errorf("pace_floor %d, pace_overflow %d: want 1 and 0", st.PaceFloor, st.PaceOverflow)
	}
}

// TestPaceOverflow: a reply that would wait beyond the bound (a session
// asking for more at the floor rate than a second drains), or find the
// pacer's memory full, leaves at once, counted; the data stays exact.
func TestPaceOverflow(t *testing.T) {
	t.Run("backlog", func(t *testing.T) {
		b := newPacedBed(t, 0)
		s := b.session(t, 2)
		// 512 KiB and then 1 MiB at the floor: the first takes half a
		// second, the second would wait 1.5 s (over 1 s even alone).
		for i, n := range []uint32{512 << 10, 1 << 20} {
			s.send(t, diskproto.Request{Op: diskproto.OpRead, Tag: uint32(10 + i), Offset: uint64(i) << 20,
				Length: n, PaceRate: disk.MinPaceRate})
		}
		deadline := time.Now().Add(10 * time.Second)
		for b.srv.Stats().PaceOverflow == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if st := b.srv.Stats(); st.PaceOverflow != 1 || st.PacedReads != 2 {
			t.Errorf("overflow %d, paced %d: want 1 and 2", st.PaceOverflow, st.PacedReads)
		}
	})
	t.Run("memory", func(t *testing.T) {
		b := newPacedBed(t, 1) // no room for any buffer
		s := b.session(t, 2)
		got, first, last := s.read(t, b.sent, 0, 1<<20, 16<<20)
		if !bytes.Equal(got, b.data[:1<<20]) {
			t.Fatal("reply differs from the data")
		}
		if st := b.srv.Stats(); st.PaceOverflow != 1 || st.PaceWaits != 0 {
			t.Errorf("overflow %d, waits %d: want 1 and 0 (sent at once in %v)", st.PaceOverflow, st.PaceWaits, last.Sub(first))
		}
	})
}
