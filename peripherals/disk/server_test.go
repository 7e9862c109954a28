package disk_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
)

// rawClient speaks the protocol by hand, to send what a Client never would.
type rawClient struct {
	t    *testing.T
	pc   *net.UDPConn
	srv  net.Addr
	sess uint64
	ep   uint64
	buf  []byte
}

func setup(t *testing.T, size int64) (*disk.Server, *rawClient) {
	t.Helper()
	srv, err := disk.NewServer(disk.Config{Path: filepath.Join(t.TempDir(), "d.img"), Size: size,
		Authorizer: disk.OpenAccess{}, Window: 4, Datagram: diskproto.MaxDatagram}) // whole replies: rawClient reads one datagram
	if err != nil {
		t.Fatal(err)
	}
	spc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	spc.SetReadBuffer(4 << 20)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(spc) }()
	cpc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		spc.Close()
		cpc.Close()
	})
	return srv, &rawClient{t: t, pc: cpc, srv: spc.LocalAddr(), sess: 42, buf: make([]byte, 70000)}
}

func (c *rawClient) send(b []byte) {
	if _, err := c.pc.WriteTo(b, c.srv); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) marshal(r diskproto.Request) []byte {
	r.Session = c.sess
	if r.Op != diskproto.OpInfo && r.Epoch == 0 {
		r.Epoch = c.ep
	}
	b := make([]byte, diskproto.RequestHeaderSize+len(r.Payload))
	if _, err := r.Marshal(b); err != nil {
		c.t.Fatal(err)
	}
	return b
}

// recv returns the next reply, or ok=false after a short wait.
func (c *rawClient) recv(wait time.Duration) (diskproto.Reply, bool) {
	c.pc.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.pc.ReadFrom(c.buf)
	if err != nil {
		return diskproto.Reply{}, false
	}
	rep, err := diskproto.ParseReply(c.buf[:n])
	if err != nil {
		c.t.Fatalf("server sent an unparsable reply: %v", err)
	}
	return rep, true
}

// replyWait is how long a test waits for a reply it expects; drainIdle is
// how long a quiet socket must stay quiet before a test counts its replies
// as drained. Both leave room for a loaded machine: they cost time only
// when something is wrong (a silence a test expects is checked with short
// waits of its own, which a slow machine can only make easier to pass).
const (
	replyWait = 5 * time.Second
	drainIdle = time.Second
)

func (c *rawClient) do(r diskproto.Request) diskproto.Reply {
	c.t.Helper()
	c.send(c.marshal(r))
	rep, ok := c.recv(replyWait)
	if !ok {
		c.t.Fatalf("no reply to %v", r.Op)
	}
	if rep.Tag != r.Tag || rep.ReqID != r.ReqID || rep.Op != r.Op {
		c.t.Fatalf("reply %+v does not echo request tag %d id %d op %v", rep, r.Tag, r.ReqID, r.Op)
	}
	return rep
}

func (c *rawClient) hello() {
	rep := c.do(diskproto.Request{Op: diskproto.OpInfo, Tag: 1})
	if rep.Status != diskproto.CodeOK {
		c.t.Fatalf("INFO: %v", rep.Status)
	}
	c.ep = rep.Epoch
}

func (c *rawClient) read(id, low uint64, off uint64, n uint32) []byte {
	rep := c.do(diskproto.Request{Op: diskproto.OpRead, Tag: uint32(1000 + id), ReqID: id, Low: low, Offset: off, Length: n})
	if rep.Status != diskproto.CodeOK {
		c.t.Fatalf("READ: %v", rep.Status)
	}
	return append([]byte(nil), rep.Payload...)
}

// TestReplayedWriteCannotOverwrite replays an older WRITE after a newer
// one to the same block, both while the old one is still inside the
// window (the duplicate cache answers it) and after the client's
// low-water mark passed it (the server drops it as stale).
func TestReplayedWriteCannotOverwrite(t *testing.T) {
	srv, c := setup(t, 1<<20)
	c.hello()
	a, b := bytes.Repeat([]byte{'A'}, 4096), bytes.Repeat([]byte{'B'}, 4096)
	oldWrite := c.marshal(diskproto.Request{Op: diskproto.OpWrite, Tag: 10, ReqID: 0, Low: 0, Payload: a})
	c.send(oldWrite)
	if rep, _ := c.recv(replyWait); rep.Status != diskproto.CodeOK {
		t.Fatalf("first write: %v", rep.Status)
	}
	if rep := c.do(diskproto.Request{Op: diskproto.OpWrite, Tag: 11, ReqID: 1, Low: 0, Payload: b}); rep.Status != diskproto.CodeOK {
		t.Fatal(rep.Status)
	}

	// In window: the cached reply comes back, the data stays B.
	c.send(oldWrite)
	rep, ok := c.recv(replyWait)
	if !ok || rep.Status != diskproto.CodeOK || rep.ReqID != 0 {
		t.Fatalf("replay in window: reply %+v %v, want the cached OK", rep, ok)
	}
	if srv.Stats().Duplicates != 1 {
		t.Fatalf("duplicates = %d, want 1", srv.Stats().Duplicates)
	}
	if got := c.read(2, 0, 0, 4096); !bytes.Equal(got, b) {
		t.Fatal("replayed WRITE inside the window overwrote newer data")
	}

	// Below the low-water mark: dropped unanswered, counted stale.
	c.read(3, 3, 0, 1) // tells the server ids < 3 are finished
	c.send(oldWrite)
	if rep, ok := c.recv(100 * time.Millisecond); ok {
		t.Fatalf("stale replay answered: %+v", rep)
	}
	if got := c.read(4, 4, 0, 4096); !bytes.Equal(got, b) {
		t.Fatal("stale replayed WRITE overwrote newer data")
	}
	if d := srv.Stats().Drops["stale"]; d != 1 {
		t.Fatalf("stale drops = %d, want 1 (%+v)", d, srv.Stats())
	}

	// A replay from before a restart carries an old epoch.
	c.ep++
	if rep := c.do(diskproto.Request{Op: diskproto.OpRead, Tag: 50, ReqID: 5, Low: 5, Length: 1}); rep.Status != diskproto.CodeNoSession {
		t.Fatalf("old epoch: %v, want no session", rep.Status)
	}
}

func TestHostileRequests(t *testing.T) {
	const size = 1 << 20
	srv, c := setup(t, size)
	c.hello()
	code := func(name string, r diskproto.Request, want diskproto.Code) {
		t.Helper()
		if rep := c.do(r); rep.Status != want {
			t.Errorf("%s: status %v, want %v", name, rep.Status, want)
		}
	}
	code("offset past end", diskproto.Request{Op: diskproto.OpRead, Tag: 2, Offset: size, Length: 1}, diskproto.CodeRange)
	code("length past end", diskproto.Request{Op: diskproto.OpRead, Tag: 3, Offset: size - 10, Length: 11}, diskproto.CodeRange)
	code("offset overflow", diskproto.Request{Op: diskproto.OpTrim, Tag: 4, Offset: ^uint64(0) - 5, Length: 10}, diskproto.CodeRange)
	code("length 0", diskproto.Request{Op: diskproto.OpRead, Tag: 5}, diskproto.CodeInvalid)
	code("huge", diskproto.Request{Op: diskproto.OpRead, Tag: 6, Length: 1 << 30}, diskproto.CodeTooBig)
	code("no session", diskproto.Request{Op: diskproto.OpRead, Tag: 7, Length: 1, Epoch: c.ep + 1}, diskproto.CodeNoSession)
	code("outside window", diskproto.Request{Op: diskproto.OpRead, Tag: 8, ReqID: 4, Length: 1}, diskproto.CodeWindow)
	code("capability in open mode", diskproto.Request{Op: diskproto.OpRead, Tag: 9, Length: 1, Capability: [64]byte{1}}, diskproto.CodeDenied)
	code("flush with a range", diskproto.Request{Op: diskproto.OpFlush, Tag: 10, Length: 1}, diskproto.CodeBadRequest)

	// Corruptions that leave the header trustworthy get an error reply.
	w := c.marshal(diskproto.Request{Op: diskproto.OpWrite, Tag: 20, Payload: []byte("payload")})
	w[len(w)-1] ^= 1
	c.send(w)
	if rep, ok := c.recv(replyWait); !ok || rep.Status != diskproto.CodeChecksum {
		t.Errorf("bad payload CRC: %+v %v, want checksum error", rep, ok)
	}
	u := c.marshal(diskproto.Request{Op: 9, Tag: 21}) // below 0x40: the top bits say reply and segment
	c.send(u)
	if rep, ok := c.recv(replyWait); !ok || rep.Status != diskproto.CodeBadOp {
		t.Errorf("unknown opcode: %+v %v, want bad op", rep, ok)
	}
	// Those that do not are dropped and counted.
	h := c.marshal(diskproto.Request{Op: diskproto.OpRead, Tag: 22, Length: 1})
	h[30] ^= 1
	c.send(h)
	c.send(h[:50])
	c.send(nil)
	if rep, ok := c.recv(100 * time.Millisecond); ok {
		t.Errorf("answered an untrustworthy header: %+v", rep)
	}

	// A flood of garbage and mutated requests, then the disk still works.
	r := rand.New(rand.NewPCG(1, 2))
	valid := c.marshal(diskproto.Request{Op: diskproto.OpWrite, Tag: 30, ReqID: 1, Payload: make([]byte, 512)})
	for i := range 20000 {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, r.IntN(300))
			for j := range b {
				b[j] = byte(r.Uint32())
			}
		} else {
			b = append([]byte(nil), valid...)
			b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
		}
		c.pc.WriteTo(b, c.srv)
	}
	for { // drain the error replies
		if _, ok := c.recv(drainIdle); !ok {
			break
		}
	}
	if got := c.read(2, 0, 0, 16); len(got) != 16 {
		t.Fatal("disk does not answer after the flood")
	}
	st := srv.Stats()
	t.Logf("stats after hostile requests: %+v", st)
	if st.Drops["short"] == 0 || st.Drops["header_checksum"] == 0 || st.Errors["out_of_range"] < 3 ||
		st.Errors["payload_checksum"] == 0 || st.Errors["unknown_operation"] == 0 {
		t.Errorf("drops and errors not counted: %+v", st)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]disk.Config{
		"no authorizer":  {Path: filepath.Join(dir, "a"), Size: 4096},
		"unaligned size": {Path: filepath.Join(dir, "b"), Size: 1000, Authorizer: disk.OpenAccess{}},
		"no size":        {Path: filepath.Join(dir, "c"), Authorizer: disk.OpenAccess{}},
		"huge max I/O":   {Path: filepath.Join(dir, "d"), Size: 4096, MaxIO: diskproto.MaxIOLimit + 1, Authorizer: disk.OpenAccess{}},
	} {
		if _, err := disk.NewServer(cfg); !errors.Is(err, disk.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	// Data survives a restart; a smaller configured size is refused.
	p := filepath.Join(dir, "keep")
	s, err := disk.NewServer(disk.Config{Path: p, Size: 8192, Authorizer: disk.OpenAccess{}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := disk.NewServer(disk.Config{Path: p, Size: 4096, Authorizer: disk.OpenAccess{}}); !errors.Is(err, disk.ErrConfig) {
		t.Errorf("shrinking: %v, want ErrConfig", err)
	}
	s, err = disk.NewServer(disk.Config{Path: p, Authorizer: disk.OpenAccess{}})
	if err != nil || s.Info().Size != 8192 {
		t.Fatalf("reopen with size 0: %v", err)
	}
	s.Close()
}

// segmentedWrite lays out a WRITE of data as the client does: the header's
// datagram and data segments of dgram bytes each.
func (c *rawClient) segmentedWrite(id, low uint64, off uint64, data []byte, dgram int, tag uint32) [][]byte {
	l := diskproto.Layout{Header: diskproto.RequestHeaderSize, Length: len(data), Datagram: dgram}
	buf := make([]byte, l.Size())
	req := diskproto.Request{Op: diskproto.OpWrite, Tag: tag, Length: uint32(len(data)), Session: c.sess, ReqID: id,
		Low: low, Epoch: c.ep, Offset: off, PayloadCRC: diskproto.Checksum(data)}
	req.MarshalHeader(buf)
	var out [][]byte
	for i := range l.Count() {
		a, b := l.Span(i)
		da, db, o := l.Data(i)
		if i > 0 {
			diskproto.PutSegmentHeader(buf[a:], false, uint16(i), uint32(o), c.sess, id)
		}
		copy(buf[da:db], data[o:])
		out = append(out, buf[a:b])
	}
	return out
}

// TestSegmentedWrite drives the server's assembly with a raw client: a
// lost segment holds the WRITE back until a retransmission brings it,
// orphans and impossible segments are counted drops, and data whose
// assembled CRC fails is refused with a checksum error, never written.
func TestSegmentedWrite(t *testing.T) {
	srv, c := setup(t, 1<<20)
	c.hello()
	data := bytes.Repeat([]byte("segmented write "), 1000) // 16000 B: 11 datagrams of 1472
	dgrams := c.segmentedWrite(0, 0, 4096, data, 1472, 100)
	if len(dgrams) < 5 {
		t.Fatalf("only %d datagrams", len(dgrams))
	}
	for i, b := range dgrams {
		if i != 3 {
			c.send(b)
		}
	}
	if rep, ok := c.recv(100 * time.Millisecond); ok {
		t.Fatalf("answered a WRITE missing a segment: %+v", rep)
	}
	// The retransmission: a fresh tag, every datagram again; what arrived
	// before still counts, so losing others this time does not matter.
	re := c.segmentedWrite(0, 0, 4096, data, 1472, 101)
	c.send(re[0])
	c.send(re[3])
	rep, ok := c.recv(replyWait)
	if !ok || rep.Status != diskproto.CodeOK || rep.Tag != 101 {
		t.Fatalf("retransmission: %+v %v, want OK for tag 101", rep, ok)
	}
	if got := c.read(1, 0, 4096, uint32(len(data))); !bytes.Equal(got, data) {
		t.Fatal("assembled WRITE read back wrong")
	}

	// A segment of a WRITE that has finished is an orphan; one that comes
	// before its header's datagram is kept (version 3: the SACK then asks
	// for the header alone); impossible ones are refused.
	orphan := c.segmentedWrite(0, 0, 4096, data, 1472, 102)
	c.send(orphan[2])
	early := c.segmentedWrite(2, 0, 0, data, 1472, 102)
	c.send(early[2]) // its header has not come
	bad := append([]byte(nil), early[1]...)
	diskproto.PutSegmentHeader(bad, false, 0xffff, 1344, c.sess, 2)
	c.send(bad)
	// Corrupt data: the assembled CRC fails.
	corrupt := c.segmentedWrite(2, 0, 0, data, 1472, 103)
	for i, b := range corrupt {
		if i == 4 {
			b[len(b)-1] ^= 1
		}
		c.send(b)
	}
	rep, ok = c.recv(replyWait)
	if !ok || rep.Status != diskproto.CodeChecksum {
		t.Fatalf("corrupt assembled data: %+v %v, want a checksum error", rep, ok)
	}
	if got := c.read(3, 0, 0, 16); !bytes.Equal(got, make([]byte, 16)) {
		t.Fatal("corrupt WRITE reached the disk")
	}
	st := srv.Stats()
	if st.Drops["orphan_segment"] != 1 || st.Drops["bad_segment"] != 1 || st.DupSegments == 0 {
		t.Fatalf("segment drops not counted: %+v", st)
	}

	// The header last: every segment first, then the header's datagram.
	// (A READ moves the session's low-water mark first: segments carry
	// none, and the server keeps segments only of ids in its window.)
	c.read(5, 4, 0, 16)
	late := c.segmentedWrite(4, 4, 8192, data, 1472, 104)
	for _, b := range late[1:] {
		c.send(b)
	}
	c.send(late[0])
	rep, ok = c.recv(replyWait)
	if !ok || rep.Status != diskproto.CodeOK || rep.Tag != 104 {
		t.Fatalf("header after its segments: %+v %v, want OK for tag 104", rep, ok)
	}
	if got := c.read(6, 4, 8192, uint32(len(data))); !bytes.Equal(got, data) {
		t.Fatal("WRITE assembled header last read back wrong")
	}
}

// TestRetransmissionAnswers (version 5): a retransmission of a request the
// disk is still running is answered "in progress" (it was dropped, so the
// client's timer backed off as if the probe were lost); one of a READ
// whose reply has left, without FlagHave, is answered "sent", not with
// the data read and sent a second time; with FlagHave and an empty
// bitmap the READ runs again and sends all of it.
func TestRetransmissionAnswers(t *testing.T) {
	srv, c := setup(t, 1<<20)
	hold := make(chan struct{})
	disk.SetRunHook(srv, func(r *diskproto.Request) {
		if r.ReqID == 1 || r.ReqID == 2 {
			<-hold
		}
	})
	c.hello()
	data := bytes.Repeat([]byte("retransmission answers"), 200)[:4096]
	if rep := c.do(diskproto.Request{Op: diskproto.OpWrite, Tag: 5, ReqID: 0, Offset: 8192, Length: 4096, Payload: data}); rep.Status != diskproto.CodeOK {
		t.Fatalf("WRITE: %v", rep.Status)
	}
	read := diskproto.Request{Op: diskproto.OpRead, Tag: 11, ReqID: 1, Offset: 8192, Length: 4096}
	c.send(c.marshal(read))
	write := diskproto.Request{Op: diskproto.OpWrite, Tag: 21, ReqID: 2, Offset: 0, Length: 4096, Payload: data}
	c.send(c.marshal(write))
	// Both are held running: their retransmissions are answered.
	for _, r := range []diskproto.Request{read, write} {
		r.Tag++
		if rep := c.do(r); rep.Status != diskproto.CodeInProgress {
			t.Fatalf("%v retransmitted while running: %v, want %v", r.Op, rep.Status, diskproto.CodeInProgress)
		}
	}
	close(hold)
	got := map[uint32]diskproto.Reply{}
	for len(got) < 2 {
		rep, ok := c.recv(replyWait)
		if !ok {
			t.Fatalf("replies of the held requests: got %d of 2", len(got))
		}
		rep.Payload = append([]byte(nil), rep.Payload...)
		got[rep.Tag] = rep
	}
	if rep := got[11]; rep.Status != diskproto.CodeOK || !bytes.Equal(rep.Payload, data) {
		t.Fatalf("READ reply: %v, %d bytes", rep.Status, len(rep.Payload))
	}
	if rep := got[21]; rep.Status != diskproto.CodeOK {
		t.Fatalf("WRITE reply: %v", rep.Status)
	}
	before := srv.Stats().BytesRead
	// The reply may arrive before its worker has marked it sent: until
	// then the answer is "in progress".
	for deadline := time.Now().Add(replyWait); ; {
		read.Tag++
		rep := c.do(read)
		if rep.Status == diskproto.CodeInProgress && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
			continue
		}
		if rep.Status != diskproto.CodeSent || len(rep.Payload) != 0 {
			t.Fatalf("READ retransmitted after its reply left: %v with %d bytes, want %v and none", rep.Status, len(rep.Payload), diskproto.CodeSent)
		}
		break
	}
	if _, ok := c.recv(50 * time.Millisecond); ok {
		t.Fatal("a second reply to the retransmission")
	}
	read.Tag, read.Flags, read.Payload = read.Tag+1, diskproto.FlagHave, []byte{0}
	if rep := c.do(read); rep.Status != diskproto.CodeOK || !bytes.Equal(rep.Payload, data) {
		t.Fatalf("READ asked again with an empty bitmap: %v, %d bytes", rep.Status, len(rep.Payload))
	}
	st := srv.Stats()
	if st.BytesRead != before || st.ResentReads != 1 {
		t.Errorf("read %d bytes more and resent %d READs, want 0 and 1", st.BytesRead-before, st.ResentReads)
	}
	if st.Errors["in_progress"] < 2 || st.Errors["reply_sent"] != 1 {
		t.Errorf("answers counted: %v", st.Errors)
	}
}
