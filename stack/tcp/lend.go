package tcp

// Received payload on loan. When the network lends the buffers frames
// arrive in (Lender), an in-order super-frame's payload is not copied into
// the receive ring: it stays in the link's buffer, and a chunk queued in
// sequence order says where. The reader's views (Read, ReadFunc) then
// point into the link's buffer, and the buffer goes back to the link once
// the reader has consumed the chunk. The ring's bytes at a lent chunk's
// sequence numbers are simply never written nor read; the window counts
// lent bytes as it counts bytes in the ring, so nothing else changes.
//
// Only data at rcvNxt is lent: chunks then lie below rcvNxt in increasing
// order, and nothing that arrives later (out of order above rcvNxt, or a
// duplicate trimmed away) touches them. Data held out of order is in the
// ring; when a lent segment reaches into it, both hold the same bytes and
// the reader takes the chunk, then the ring from the chunk's end.

// maxLent bounds the chunks one connection keeps on loan: 64 super-frames
// are a 4 MiB window (Config.MaxBuffer's default) of 64 KiB frames. A
// connection with this many out copies instead.
const maxLent = 64

// lentChunk is payload [seq, seq+len(buf)) kept in a buffer of the
// network's, loan.
type lentChunk struct {
	seq  uint32
	loan uint32
	buf  []byte
}

// lentQueue is a connection's chunks on loan, oldest first (guarded by
// Conn.mu; the array is allocated at the first loan).
type lentQueue struct {
	q       *[maxLent]lentChunk
	head, n int
}

func (l *lentQueue) at(i int) *lentChunk { return &l.q[(l.head+i)%maxLent] }

// lendLocked keeps payload, in order at seq == rcvNxt, where the network
// lent it, and reports whether it did; false: the caller copies it.
func (c *Conn) lendLocked(seq uint32, payload []byte, loan uint32) bool {
	l := &c.lent
	if loan == 0 || len(payload) < lendMin || l.n == maxLent {
		return false
	}
	if !c.p.lender.Hold(loan, 1) {
		return false
	}
	if l.q == nil {
		l.q = new([maxLent]lentChunk)
	}
	*l.at(l.n) = lentChunk{seq: seq, loan: loan, buf: payload}
	l.n++
	return true
}

// rcvViewsLocked returns the n readable bytes from rcvRead (n > 0, n at
// most what is readable) as at most two views in place: in a lent chunk,
// in the ring (which may wrap), or a lent chunk and what follows it. They
// may hold fewer than n bytes; a reader takes what it gets and comes back.
func (c *Conn) rcvViewsLocked(n int) (a, b []byte) {
	l := &c.lent
	if l.n == 0 {
		return ringViews(c.rcvBuf, c.irs+1, c.rcvRead, n)
	}
	h := l.at(0)
	if gap := int(int32(h.seq - c.rcvRead)); gap > 0 {
		// Ring data first, up to the chunk.
		return ringViews(c.rcvBuf, c.irs+1, c.rcvRead, min(n, gap))
	}
	off := int(c.rcvRead - h.seq)
	a = h.buf[off:min(len(h.buf), off+n)]
	if rest := n - len(a); rest > 0 {
		// The next piece: the following chunk, or the ring up to it.
		next := c.rcvRead + uint32(len(a))
		if l.n > 1 {
			if h2 := l.at(1); h2.seq == next {
				return a, h2.buf[:min(len(h2.buf), rest)]
			} else if gap := int(int32(h2.seq - next)); gap < rest {
				rest = gap
			}
		}
		b, _ = ringViews(c.rcvBuf, c.irs+1, next, rest)
	}
	return a, b
}

// consumedLocked gives back the chunks the reader is done with (all of
// them below rcvRead).
func (c *Conn) consumedLocked() {
	l := &c.lent
	for l.n > 0 && !seqGT(l.at(0).seq+uint32(len(l.at(0).buf)), c.rcvRead) {
		c.popLentLocked()
	}
}

// releaseLentLocked gives every chunk back: nobody will read them.
func (c *Conn) releaseLentLocked() {
	for c.lent.n > 0 {
		c.popLentLocked()
	}
}

// popLentLocked gives the oldest chunk back to the network.
func (c *Conn) popLentLocked() {
	l := &c.lent
	h := l.at(0)
	c.p.lender.Release(h.loan, 1)
	*h = lentChunk{}
	l.head = (l.head + 1) % maxLent
	l.n--
}

// releaseLentLockedUnlessViewed is releaseLentLocked for Close: while a
// reader's fn still holds views, the reader gives the chunks back when it
// returns (a buffer given back may be overwritten at once).
func (c *Conn) releaseLentLockedUnlessViewed() {
	if !c.viewsOut {
		c.releaseLentLocked()
	}
}
