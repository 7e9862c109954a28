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
// Chunks are kept in increasing order of seq: data at rcvNxt, and data
// out of order that overlaps nothing held yet (lendOOOLocked), each
// inserted at its place. Every byte below rcvNxt is then in a chunk or in
// the ring (data copied in order, or out of order when it could not be
// lent), and where both hold a byte they hold the same one: the reader
// takes a chunk from where it has read to, and the ring up to the next
// chunk. Chunks may overlap (a segment at rcvNxt reaching into data held
// out of order): the reader reads each from the point it has read to and
// gives back every chunk that ends below it. Out-of-order data is lent
// because a kernel sender on a veth sends from two CPUs at once (from its
// own sendmsg and from the softirq of the receiver's ACK, which here runs
// on the receiver's CPU), and its frames then reach the packet socket out
// of order: under fio's NBD WRITEs 10-13 % of disk0's segments did, and
// each was copied into the ring.

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

// lendLocked keeps payload at seq (in order at rcvNxt, or out of order
// overlapping nothing held: see the comment above) where the network lent
// it, and reports whether it did; false: the caller copies it.
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
	// Its place: after every chunk that starts at or before seq. Data
	// out of order is the tail's, so the walk is short.
	i := l.n
	for i > 0 && seqGT(l.at(i-1).seq, seq) {
		*l.at(i) = *l.at(i - 1)
		i--
	}
	*l.at(i) = lentChunk{seq: seq, loan: loan, buf: payload}
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
		return ringViews(c.rcvBuf, c.rcvBase, c.rcvRead, n)
	}
	h := l.at(0)
	if gap := int(int32(h.seq - c.rcvRead)); gap > 0 {
		// Ring data first, up to the chunk.
		return ringViews(c.rcvBuf, c.rcvBase, c.rcvRead, min(n, gap))
	}
	off := int(c.rcvRead - h.seq)
	a = h.buf[off:min(len(h.buf), off+n)]
	if rest := n - len(a); rest > 0 {
		// The next piece: the following chunk, or the ring up to it.
		next := c.rcvRead + uint32(len(a))
		if l.n > 1 {
			h2 := l.at(1)
			gap := int(int32(h2.seq - next))
			switch {
			case gap == 0:
				return a, h2.buf[:min(len(h2.buf), rest)]
			case gap < 0: // overlapping chunks: the reader comes back for it
				return a, nil
			case gap < rest:
				rest = gap
			}
		}
		b, _ = ringViews(c.rcvBuf, c.rcvBase, next, rest)
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
