package disk

import (
	"math/bits"
	"net/netip"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/stack"
)

// READ replies gathered from the mapping. On a socket that gathers a run of
// datagrams from pieces into one GSO super-frame (the user-level stack's
// UDPConn.WriteRunGather), a READ's reply datagrams are their headers (the
// reply's, each segment's 32 bytes) around slices of the mapped backing
// file itself: the kernel's copy into the frame is the only copy of the
// data on the disk's side, where readReply copies it out of the mapping
// into a laid-out buffer first (18 % of the CPU samples of a READ run in
// BenchmarkUserStackStorage, with the kernel's own copy beside it). The
// data CRC is one pass over the range in the mapping, not a datagram's
// share at a time (CRC-32C over 1,440 bytes runs at a quarter to a half of
// its speed over long runs), and it leaves the range in cache for the kernel's copy.
//
// The CRC must vouch for the bytes the kernel copies: between the pass
// and the send a WRITE (or an NBD write, or a TRIM) to the same range
// would change them, and the client would get data its CRC does not match
// (a retry, or with a resend under HAVE, data of two moments). So the
// range is held, shared, from the CRC pass until the last datagram was
// handed to the socket, and every write to the device takes it exclusive
// (rangeLocks): the reply is a snapshot (readReply holds the range too,
// while it copies, so that no reply mixes two writes). The time held is
// the sending of max I/O (a few super-frames); a write to the range waits
// at most that. The part of a paced reply that is not due at once is
// copied out (under the hold) and queued for the pacer, as before.

// runGatherer is a socket that sends a run of datagrams gathered from
// pieces as one GSO super-frame (stack.UDPConn).
type runGatherer interface {
	MaxRun(seg int) int
	WriteRunGather(dst netip.AddrPort, seg int, pieces [][]byte) (int, error)
}

var _ runGatherer = (*stack.UDPConn)(nil)

// rangeStripe is the span of the device one range lock covers; ranges
// further apart than rangeStripes stripes share a lock (a false conflict,
// never a missed one).
const (
	rangeStripeShift = 20 // 1 MiB
	rangeStripes     = 64
)

// rangeLocks serializes writes to the device against gathered READ
// replies of the same bytes. A range takes the stripes it touches in
// ascending order, so two ranges never wait for each other in a cycle.
type rangeLocks struct {
	stripes [rangeStripes]sync.RWMutex
}

// mask is the set of stripes [off, off+n) touches (n > 0).
func (r *rangeLocks) mask(off, n int64) uint64 {
	first, last := uint64(off)>>rangeStripeShift, uint64(off+n-1)>>rangeStripeShift
	if last-first >= rangeStripes-1 {
		return ^uint64(0)
	}
	var m uint64
	for c := first; c <= last; c++ {
		m |= 1 << (c % rangeStripes)
	}
	return m
}

// lock takes the stripes of [off, off+n): exclusive for a write, shared
// for a gathered read. It returns the mask unlock wants.
func (r *rangeLocks) lock(off, n int64, write bool) uint64 {
	if n <= 0 {
		return 0
	}
	m := r.mask(off, n)
	for rest := m; rest != 0; rest &= rest - 1 {
		l := &r.stripes[bits.TrailingZeros64(rest)]
		if write {
			l.Lock()
		} else {
			l.RLock()
		}
	}
	return m
}

// unlock releases what lock took.
func (r *rangeLocks) unlock(m uint64, write bool) {
	for rest := m; rest != 0; rest &= rest - 1 {
		l := &r.stripes[bits.TrailingZeros64(rest)]
		if write {
			l.Unlock()
		} else {
			l.RUnlock()
		}
	}
}

// gatherScratch is a worker's reusable state for gathered replies.
type gatherScratch struct {
	hdrs   []byte   // the reply header, then each segment's header
	pieces [][]byte // one run's pieces: header, data, header, data, ...
	sizes  []int    // the datagrams to send (by index), in order
}

// readGathered answers READ j straight from the mapping, gathered (see
// above), if its socket gathers and every page of its range is mapped and
// held; handled false leaves the READ to readReply (nothing was sent or
// recorded). Otherwise it did what readReply does: the slot marked done
// and sending before the data leaves, the last datagram sent marked
// FlagLast, the round in every segment, the reply paced at the rate asked
// for, and kept reports that the pacer took obuf (the part of the reply
// not yet due, copied into it).
func (s *Server) readGathered(j *job, g runGatherer, obuf *[]byte, w *workerScratch) (status diskproto.Code, handled, kept bool) {
	req := &j.req
	l := s.replyLayout(req)
	if g.MaxRun(l.Datagram) < min(l.Count(), 2) {
		// No GSO runs, or datagrams larger than a frame (IP fragments):
		// datagram by datagram is readReply's.
		return 0, false, false
	}
	off, n := int64(req.Offset), int64(req.Length)
	held := s.ranges.lock(off, n, false)
	defer s.ranges.unlock(held, false)
	s.mem.mu.RLock()
	defer s.mem.mu.RUnlock()
	if s.mem.b == nil || !s.allHeld(off, n) {
		return 0, false, false
	}
	data := s.mem.b[off : off+n]
	var crc uint32
	if err := guardFault(func() { crc = diskproto.Checksum(data) }); err != nil {
		s.log.Warn("disk: read failed", "off", req.Offset, "len", req.Length, "err", err)
		s.finish(j, diskproto.CodeIO, false)
		return diskproto.CodeIO, true, false
	}
	count := l.Count()
	g2 := &w.gather
	hsize := l.Header + (count-1)*diskproto.SegmentHeaderSize
	if cap(g2.hdrs) < hsize {
		g2.hdrs = make([]byte, hsize)
	}
	hdrs := g2.hdrs[:hsize]
	have, last := s.replyPlan(req, count, crc, hdrs)
	send := g2.sizes[:0]
	for i := range count {
		if diskproto.BitmapHas(have, i) {
			continue
		}
		if i > 0 {
			putReadSegment(hdrs[l.Header+(i-1)*diskproto.SegmentHeaderSize:], req, l, i, last)
		}
		send = append(send, i)
	}
	g2.sizes = send[:0]
	// header and data of datagram i
	piece := func(i int) (h, d []byte) {
		a, b, dataOff := l.Data(i)
		if i == 0 {
			h = hdrs[:l.Header]
		} else {
			h = hdrs[l.Header+(i-1)*diskproto.SegmentHeaderSize:][:diskproto.SegmentHeaderSize]
		}
		return h, data[dataOff : dataOff+b-a]
	}
	s.countRead(req, have != nil, len(send))
	s.stats.gathered.Add(1)
	s.sending(j)
	rate := s.paceRate(req.PaceRate)
	if rate != 0 {
		s.stats.pacedReads.Add(1)
	}
	run := min(g.MaxRun(l.Datagram), paceChunk)
	for k := 0; k < len(send); {
		// A run: consecutive datagrams to send, all full-sized but the
		// message's last (always last in a run: it is the last index).
		e := min(k+max(run, 1), len(send))
		bytes := 0
		pieces := g2.pieces[:0]
		for _, i := range send[k:e] {
			h, d := piece(i)
			pieces = append(pieces, h, d)
			bytes += len(h) + len(d)
		}
		if rate != 0 && !s.paceDue(j.sess, uint64(bytes), rate) {
			// Not due: the rest waits for the pacer, copied out of the
			// mapping (under the hold) into obuf, as readReply lays it out.
			clear(pieces)
			g2.pieces = pieces[:0]
			w.msgs = w.msgs[:0]
			ob := *obuf
			for _, i := range send[k:] {
				h, d := piece(i)
				a, b := l.Span(i)
				copy(ob[a:], h)
				copy(ob[a+len(h):b], d)
				w.msgs = append(w.msgs, dgram.Message{Buf: ob[a:b], Addr: j.addr})
			}
			if s.paceSend(j.pc, j.sess, req.ReqID, obuf, w.msgs, rate) {
				return diskproto.CodeOK, true, true // the pacer calls sent
			}
			s.sent(j.sess, req.ReqID)
			return diskproto.CodeOK, true, false
		}
		if _, err := g.WriteRunGather(j.addr, l.Datagram, pieces); err != nil {
			s.stats.drops[dropSendFailed].Add(uint64(e - k))
		}
		clear(pieces) // do not keep the mapping's slices
		g2.pieces = pieces[:0]
		k = e
	}
	s.sent(j.sess, req.ReqID)
	return diskproto.CodeOK, true, false
}

// paceDue reports whether bytes of sess's reply may leave now at rate,
// and if so books them on its schedule, as paceSend does for a chunk it
// sends at once.
func (s *Server) paceDue(sess *session, bytes, rate uint64) bool {
	p := &s.pacer
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	due := paceSlot(sess, now)
	if due.After(now) {
		return false
	}
	sess.paceNext = due.Add(airtime(bytes, rate))
	return true
}
