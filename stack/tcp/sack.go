package tcp

import "github.com/netstation/netstation/stack/header"

// The sender's SACK scoreboard (RFC 2018, loss recovery after RFC 6675,
// simplified): the ranges above sndUna the peer holds. During recovery
// every hole below the highest SACKed byte counts as lost; holes are
// retransmitted in order (rexmitHigh marks how far) while the estimated
// pipe leaves room in cwnd, before any new data.

// addRange merges [start, end) into the sorted, disjoint ranges rs (whose
// capacity bounds its length); false means there was no room.
func addRange(rs *[]seqRange, start, end uint32) bool {
	r := *rs
	i := 0
	for i < len(r) && seqLT(r[i].end, start) {
		i++
	}
	if i < len(r) && seqLEQ(r[i].start, end) {
		x := &r[i]
		if seqLT(start, x.start) {
			x.start = start
		}
		if seqGT(end, x.end) {
			x.end = end
		}
		j := i + 1
		for j < len(r) && seqLEQ(r[j].start, x.end) {
			if seqGT(r[j].end, x.end) {
				x.end = r[j].end
			}
			j++
		}
		*rs = append(r[:i+1], r[j:]...)
		return true
	}
	if len(r) == cap(r) {
		return false
	}
	r = append(r, seqRange{})
	copy(r[i+1:], r[i:])
	r[i] = seqRange{start, end}
	*rs = r
	return true
}

// takeSACKLocked records the blocks of an ACK. It returns whether they
// told something new.
func (c *Conn) takeSACKLocked(o *header.TCPOptions) bool {
	if !c.sackOK || o.NumSACK == 0 {
		return false
	}
	if c.sacked == nil {
		c.sacked = make([]seqRange, 0, maxOOORanges)
	}
	news := false
	for i := range o.NumSACK {
		b := o.SACK[i]
		// Only blocks about data in flight count (a D-SACK below sndUna,
		// or nonsense above sndMax, does not).
		if !seqLT(b.Start, b.End) || seqLEQ(b.Start, c.sndUna) || seqGT(b.End, c.sndMax) {
			continue
		}
		before := c.sackedBytesLocked()
		addRange(&c.sacked, b.Start, b.End)
		if c.sackedBytesLocked() != before {
			news = true
		}
	}
	return news
}

// pruneSACKLocked forgets what sndUna now covers.
func (c *Conn) pruneSACKLocked() {
	k := 0
	for k < len(c.sacked) && seqLEQ(c.sacked[k].end, c.sndUna) {
		k++
	}
	if k > 0 {
		c.sacked = append(c.sacked[:0], c.sacked[k:]...)
	}
	if len(c.sacked) > 0 && seqLT(c.sacked[0].start, c.sndUna) {
		c.sacked[0].start = c.sndUna
	}
}

func (c *Conn) sackedBytesLocked() uint32 {
	var n uint32
	for _, r := range c.sacked {
		n += r.end - r.start
	}
	return n
}

// pipeLocked estimates the bytes in the network (RFC 6675 §4): what was
// sent and not acknowledged, minus what the peer holds, minus the holes
// below the highest SACKed byte not yet retransmitted (lost).
func (c *Conn) pipeLocked() uint32 {
	inFlight := c.sndNxt - c.sndUna
	if len(c.sacked) == 0 {
		return inFlight
	}
	sacked := c.sackedBytesLocked()
	var lost uint32
	prev := c.sndUna
	for _, r := range c.sacked {
		if seqLT(prev, r.start) { // hole [prev, r.start)
			from := prev
			if seqGT(c.rexmitHigh, from) {
				from = c.rexmitHigh
			}
			if seqLT(from, r.start) {
				lost += r.start - from
			}
		}
		prev = r.end
	}
	if sacked+lost > inFlight {
		return 0
	}
	return inFlight - sacked - lost
}

// nextHoleLocked returns the next hole to retransmit (at most max bytes)
// at or after rexmitHigh and below the highest SACKed byte.
func (c *Conn) nextHoleLocked(maxLen int) (seq uint32, size int, ok bool) {
	from := c.sndUna
	if seqGT(c.rexmitHigh, from) {
		from = c.rexmitHigh
	}
	for _, r := range c.sacked {
		if seqLT(from, r.start) {
			return from, min(int(r.start-from), maxLen), true
		}
		if seqLT(from, r.end) {
			from = r.end
		}
	}
	return 0, 0, false
}

// sackedEndAt returns the end of the SACKed range holding seq, if any.
func (c *Conn) sackedEndAt(seq uint32) (uint32, bool) {
	for _, r := range c.sacked {
		if seqLEQ(r.start, seq) && seqLT(seq, r.end) {
			return r.end, true
		}
	}
	return 0, false
}
