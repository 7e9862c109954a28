package tcp

import (
	"time"

	"github.com/netstation/netstation/stack/header"
)

// output sends whatever the connection owes the network: SYN or SYN-ACK,
// a fast retransmission, new data and FIN within the windows, a probe or
// an ACK. One goroutine sends at a time; a caller that finds the sender
// busy leaves a note it picks up (so the receive goroutine never waits
// behind an application writer blocked in the link).
func (c *Conn) output() {
	for {
		if !c.txMu.TryLock() {
			c.txPending.Store(true)
			if !c.txMu.TryLock() {
				return
			}
		}
		c.txPending.Store(false)
		for {
			c.mu.Lock()
			n, more := c.fillLocked()
			c.mu.Unlock()
			if n > 0 {
				if c.rt.Output(c.txSegs[:n]) == nil {
					c.p.st.SegsOut.Add(uint64(n))
				}
				for i := range n {
					c.txSegs[i].Payload = [2][]byte{} // keep no old ring alive
				}
			}
			if !more {
				break
			}
		}
		c.txMu.Unlock()
		if !c.txPending.Load() {
			return
		}
	}
}

// gatherMin is the smallest payload sent from the ring as a piece of its
// own (Gatherer) rather than copied behind the header: a request's or
// reply's few bytes cost less to copy than a longer gather list.
const gatherMin = 2048

// buf returns tx slot i with room for size bytes.
func (c *Conn) buf(i, size int) []byte {
	if cap(c.txBufs[i]) < size {
		c.txBufs[i] = make([]byte, max(size, Headroom+header.TCPMaximumSize+c.mssBase))
	}
	return c.txBufs[i][:size]
}

// optsLocked fills the options of a non-SYN segment. With sizeOnly it
// fills them only as far as their size goes (no clock read, and a
// pending D-SACK stays pending for the segment that carries it).
func (c *Conn) optsLocked(o *header.TCPOptions, sizeOnly bool) {
	if c.tsOK {
		o.HasTS = true
		if !sizeOnly {
			o.TSVal = c.p.tsAt(c.nowLocked())
		}
		o.TSEcr = c.tsRecent
	}
	if c.sackOK && (len(c.ooo) > 0 || c.dsackPending) {
		maxBlocks := 4
		if c.tsOK {
			maxBlocks = 3
		}
		if c.dsackPending { // RFC 2883: the duplicate first, once
			o.SACK[0] = header.SACKBlock{Start: c.dsack.start, End: c.dsack.end}
			o.NumSACK = 1
			c.dsackPending = sizeOnly
		}
		// RFC 2018: the most recently changed block first; ooo[last]
		// is not tracked, so report from the highest down.
		for i := len(c.ooo) - 1; i >= 0 && o.NumSACK < maxBlocks; i-- {
			o.SACK[o.NumSACK] = header.SACKBlock{Start: c.ooo[i].start, End: c.ooo[i].end}
			o.NumSACK++
		}
	}
}

// rcvWndLocked is the free space of the receive ring beyond rcvNxt.
func (c *Conn) rcvWndLocked() int {
	return int(c.rcvRead + uint32(c.rcvCap) - c.rcvNxt)
}

// windowFieldLocked is the window to put in a segment, and records the
// right edge it advertises.
func (c *Conn) windowFieldLocked(syn bool) uint16 {
	w := c.rcvWndLocked()
	if c.finRcvd {
		w = max(w, 0)
	}
	if syn {
		w = min(w, 0xffff)
		c.rcvAdv = c.rcvNxt + uint32(w)
		return uint16(w)
	}
	f := min(w>>c.rcvWS, 0xffff)
	c.rcvAdv = c.rcvNxt + uint32(f)<<c.rcvWS
	return uint16(f)
}

// fillLocked builds the next batch of segments into txSegs. It returns
// how many and whether there may be more to send at once.
//
// The phases run in priority order, each filling slots after the ones
// before it: the handshake (alone in its batch), the head retransmission
// a lost-retransmission check asked for, SACK recovery's holes, a tail
// loss probe, then new data within the windows; a pure ACK or probe only
// if nothing else left.
func (c *Conn) fillLocked() (int, bool) {
	c.beginClockLocked(time.Time{})
	defer c.endClockLocked()
	if n, done := c.fillHandshakeLocked(); done {
		return n, false
	}
	n := 0
	if c.rexmitOne {
		c.rexmitOne = false
		n = c.fillHeadRexmitLocked(n)
	}
	sackRecovery := c.inRecovery && len(c.sacked) > 0
	if sackRecovery {
		n = c.fillSACKRecoveryLocked(n)
	}
	if c.rexmitTail && n < len(c.txSegs) {
		// With every slot taken by SACK recovery (the connection entered
		// it after the probe timer fired) the probe waits for the next
		// batch, which fillLocked's "more" answer asks for at once.
		c.rexmitTail = false
		n = c.fillTailProbeLocked(n)
	}
	n = c.fillNewDataLocked(n, sackRecovery)
	if n == 0 && (c.ackNow || c.probe) {
		// After a timeout sndNxt is rewound (go-back-N); a pure ACK
		// carries the highest sequence number sent, which the peer finds
		// in its window, not an old one it would drop unread.
		seq := c.sndMax
		if c.probe {
			seq = c.sndUna - 1 // an old sequence number: the peer answers with an ACK
		}
		c.buildAckLocked(0, seq)
		c.probe = false
		n = 1
	}
	if n > 0 {
		c.sentAckLocked()
	}
	return n, n == len(c.txSegs)
}

// effectiveMSSLocked is the most payload one segment carries now: the
// send MSS less the options every segment carries (RFC 9293 §3.7.1), at
// least 1, with the TCP header length it was computed for.
func (c *Conn) effectiveMSSLocked() (mss, hdrLen int) {
	hdrLen = c.hdrLenLocked()
	return c.mssForHdrLocked(hdrLen), hdrLen
}

// mssForHdrLocked is the effective MSS beside a TCP header of hdrLen
// bytes (options included).
func (c *Conn) mssForHdrLocked(hdrLen int) int {
	return max(c.mssBase-(hdrLen-header.TCPMinimumSize), 1)
}

// gsoMaxLen is the longest run of whole mss-sized segments one GSO super
// segment carries: an IPv4 packet's 64 KiB limit, less the headers.
func gsoMaxLen(mss, hdrLen int) int {
	return max((0xffff-header.IPv4MinimumSize-hdrLen)/mss*mss, mss)
}

// fillHandshakeLocked is the batch before the connection is synchronized:
// the SYN or SYN-ACK, or an ACK to an unacceptable segment in SYN-RCVD.
// done reports that the state left nothing else to send, n is then the
// batch.
func (c *Conn) fillHandshakeLocked() (n int, done bool) {
	switch {
	case c.state == stateClosed:
		return 0, true
	case (c.state == stateSynSent || c.state == stateSynRcvd) && c.sndNxt == c.iss:
		c.buildSynLocked(0)
		c.sndNxt = c.iss + 1
		if seqGT(c.sndNxt, c.sndMax) {
			c.sndMax = c.sndNxt
		}
		if !c.rttTiming && c.retries == 0 {
			c.rttTiming, c.rttSeq, c.rttTime = true, c.iss, c.nowLocked()
		}
		c.sentAckLocked()
		return 1, true
	case c.state == stateSynSent:
		return 0, true
	case c.state == stateSynRcvd:
		// Only an ACK (to an unacceptable segment) may leave before the
		// handshake completes.
		if c.ackNow {
			c.buildAckLocked(0, c.sndNxt)
			c.sentAckLocked()
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// fillHeadRexmitLocked resends the segment at sndUna into slot n (the
// lost-retransmission check or a tail loss probe in recovery asked for
// it) and returns the next free slot.
func (c *Conn) fillHeadRexmitLocked(n int) int {
	if !seqLT(c.sndUna, c.sndMax) {
		return n
	}
	// Only what was sent before: data beyond sndMax would be
	// acknowledged above sndMax, which we would refuse.
	end := c.sndMax
	if seqGT(end, c.sndEnd) {
		end = c.sndEnd // the FIN
	}
	size := 0
	if seqLT(c.sndUna, end) {
		size = int(end - c.sndUna)
	}
	mss, _ := c.effectiveMSSLocked()
	size = min(size, mss)
	fin := c.finQueued && c.sndUna+uint32(size) == c.sndEnd && seqGT(c.sndMax, c.sndEnd)
	if size == 0 && !fin {
		return n
	}
	c.buildDataLocked(n, c.sndUna, size, fin)
	c.retransmitted()
	if end := c.sndUna + uint32(size); c.inRecovery && seqGT(end, c.rexmitHigh) {
		c.rexmitHigh = end
	}
	c.headRexmitAt = c.nowLocked()
	return n + 1
}

// fillSACKRecoveryLocked resends the holes of the SACK scoreboard
// (RFC 6675 NextSeg, rule 1) while the pipe leaves room in cwnd, from
// slot n on, and returns the next free slot.
func (c *Conn) fillSACKRecoveryLocked(n int) int {
	for n < len(c.txSegs) {
		mss, hl := c.effectiveMSSLocked()
		pipe := c.pipeLocked()
		if pipe+uint32(mss) > c.cwnd {
			break
		}
		maxLen := mss
		if c.p.net.GSO() {
			room := int(c.cwnd-pipe) / mss * mss
			maxLen = min(max(room, mss), gsoMaxLen(mss, hl))
		}
		seq, size, ok := c.nextHoleLocked(maxLen)
		if !ok {
			break
		}
		if seqGEQ(seq, c.sndEnd) {
			break // only the FIN is missing: the timer resends it
		}
		size = min(size, int(c.sndEnd-seq))
		c.buildDataLocked(n, seq, size, false)
		c.rexmitHigh = seq + uint32(size)
		if seq == c.sndUna {
			c.headRexmitAt = c.nowLocked()
		}
		c.retransmitted()
		if c.timerKind != timerRTO && c.timerKind != timerTLP {
			c.armRTO()
		}
		n++
	}
	return n
}

// fillTailProbeLocked resends the last segment sent (and the FIN if it
// was sent) into slot n, the tail loss probe, and returns the next free
// slot.
func (c *Conn) fillTailProbeLocked(n int) int {
	end, fin := c.sndMax, false
	if c.finQueued && seqGT(c.sndMax, c.sndEnd) {
		end, fin = c.sndEnd, true
	}
	if !seqLT(c.sndUna, end) && !fin {
		return n
	}
	size := 0
	if seqLT(c.sndUna, end) {
		mss, _ := c.effectiveMSSLocked()
		size = int(min(end-c.sndUna, uint32(mss)))
	}
	c.buildDataLocked(n, end-uint32(size), size, fin)
	c.retransmitted()
	return n + 1
}

// fillNewDataLocked sends from sndNxt (new data, or after a timeout the
// go-back-N resend that skips SACKed ranges) and the FIN, within the
// send and congestion windows, with sender silly-window avoidance and
// Nagle, from slot n on. It returns the next free slot. In SACK recovery
// the pipe estimate, not sndNxt-sndUna, is what cwnd bounds.
func (c *Conn) fillNewDataLocked(n int, sackRecovery bool) int {
	gso := c.p.net.GSO()
	for n < len(c.txSegs) {
		seq := c.sndNxt
		if end, ok := c.sackedEndAt(seq); ok {
			// Resending after a timeout: skip what the peer holds.
			c.sndNxt = end
			continue
		}
		avail := 0
		if seqLT(seq, c.sndEnd) {
			avail = int(c.sndEnd - seq)
		}
		finPending := c.finQueued && seqLEQ(seq, c.sndEnd)
		if avail == 0 && !(finPending && seq == c.sndEnd) {
			break
		}
		allowed := 0
		if sent := seq - c.sndUna; c.sndWnd > sent {
			allowed = int(c.sndWnd - sent)
		}
		pipe := seq - c.sndUna
		if sackRecovery {
			pipe = c.pipeLocked()
		}
		if c.cwnd > pipe {
			allowed = min(allowed, int(c.cwnd-pipe))
		} else {
			allowed = 0
		}
		mss, hl := c.effectiveMSSLocked()
		maxSeg := mss
		if gso {
			maxSeg = gsoMaxLen(mss, hl)
		}
		size := min(avail, allowed, maxSeg)
		if avail > 0 && size == 0 {
			switch {
			case c.sndWnd == 0 && seq == c.sndUna && c.timerKind != timerPersist:
				c.setTimer(timerPersist, c.rtt.RTO())
			case c.timerKind == timerNone || c.timerKind == timerKeepAlive:
				c.armRTO() // a safety net: data waits, something must wake it
			}
			break
		}
		if size < avail && size < mss && seq != c.sndUna && uint32(size) < c.maxSndWnd/2 {
			// Sender silly-window avoidance: with data in flight, wait for
			// a window worth a full segment or half the peer's largest.
			break
		}
		if size < mss && size == avail && !c.nodelay && seq != c.sndUna && !finPending {
			break // Nagle: one small segment in flight at a time
		}
		fin := finPending && seq+uint32(size) == c.sndEnd
		c.buildDataLocked(n, seq, size, fin)
		if seqLT(seq, c.sndMax) {
			c.retransmitted()
		} else if !c.rttTiming && !c.tsOK {
			c.rttTiming, c.rttSeq, c.rttTime = true, seq, c.nowLocked()
		}
		c.sndNxt = seq + uint32(size)
		if fin {
			c.sndNxt++
		}
		if seqGT(c.sndNxt, c.sndMax) {
			c.sndMax = c.sndNxt
		}
		if c.timerKind != timerRTO && c.timerKind != timerTLP {
			c.armRTO()
		}
		n++
		if fin {
			break
		}
	}
	return n
}

// retransmitted counts one retransmitted segment.
func (c *Conn) retransmitted() {
	c.p.st.RetransSegs.Add(1)
	c.retrans++
}

// sentAckLocked notes that the segment just built acknowledged rcvNxt.
func (c *Conn) sentAckLocked() {
	c.ackNow = false
	c.unacked = 0
	c.lastAckSent = c.rcvNxt
	c.dackArmed = false // a running timer finds nothing due
}

func (c *Conn) hdrLenLocked() int {
	var o header.TCPOptions
	c.optsLocked(&o, true)
	return header.TCPMinimumSize + header.TCPOptionsSize(&o)
}

func (c *Conn) buildSynLocked(i int) {
	f := header.TCPFields{SrcPort: c.key.lport, DstPort: c.key.rport, Seq: c.iss, Flags: header.TCPFlagSYN}
	o := &f.Opts
	o.MSS = uint16(min(c.p.net.MTU()-header.IPv4MinimumSize-header.TCPMinimumSize, 0xffff)) // ours, not the peer's
	active := c.state == stateSynSent
	if active || c.wsOK {
		o.HasWS, o.WS = true, c.p.wsh
	}
	if (active && !c.p.cfg.NoSACK) || c.sackOK {
		o.SACKPermitted = true
	}
	if (active && !c.p.cfg.NoTimestamps) || c.tsOK {
		o.HasTS = true
		o.TSVal = c.p.tsAt(c.nowLocked())
		o.TSEcr = c.tsRecent
	}
	if c.state == stateSynRcvd {
		f.Flags |= header.TCPFlagACK
		f.Ack = c.rcvNxt
	}
	f.Window = c.windowFieldLocked(true)
	b := c.buf(i, Headroom+header.TCPMaximumSize)
	hl := header.TCP(b[Headroom:]).Encode(&f)
	c.txSegs[i] = Segment{Buf: b[:Headroom+hl], HdrLen: hl}
}

func (c *Conn) buildAckLocked(i int, seq uint32) {
	f := header.TCPFields{SrcPort: c.key.lport, DstPort: c.key.rport, Seq: seq, Ack: c.rcvNxt, Flags: header.TCPFlagACK}
	c.optsLocked(&f.Opts, false)
	f.Window = c.windowFieldLocked(false)
	b := c.buf(i, Headroom+header.TCPMaximumSize)
	hl := header.TCP(b[Headroom:]).Encode(&f)
	c.txSegs[i] = Segment{Buf: b[:Headroom+hl], HdrLen: hl}
}

// buildDataLocked builds a segment carrying size bytes from seq (and a
// FIN after them if fin) into slot i.
func (c *Conn) buildDataLocked(i int, seq uint32, size int, fin bool) {
	f := header.TCPFields{SrcPort: c.key.lport, DstPort: c.key.rport, Seq: seq, Ack: c.rcvNxt, Flags: header.TCPFlagACK}
	c.optsLocked(&f.Opts, false)
	f.Window = c.windowFieldLocked(false)
	if size > 0 && seq+uint32(size) == c.sndEnd {
		f.Flags |= header.TCPFlagPSH
	}
	if fin {
		f.Flags |= header.TCPFlagFIN
	}
	hl := header.TCPMinimumSize + header.TCPOptionsSize(&f.Opts)
	b := c.buf(i, Headroom+hl+size)
	header.TCP(b[Headroom:]).Encode(&f)
	s := Segment{Buf: b, HdrLen: hl}
	if size >= gatherMin && c.p.gather {
		// The payload stays in the ring until the link's copy: bytes the
		// writer may reuse meanwhile are only those the peer acknowledged,
		// which it drops as duplicates if this is a retransmission of them.
		s.Buf = b[:Headroom+hl]
		s.Payload[0], s.Payload[1] = ringViews(c.sndBuf, c.sndBase, seq, size)
	} else if size > 0 {
		ringRead(c.sndBuf, c.sndBase, seq, b[Headroom+hl:])
	}
	if mss := c.mssForHdrLocked(hl); size > mss {
		s.GSOSize = mss
		c.p.st.GSOOut.Add(1)
	}
	c.txSegs[i] = s
}

func (c *Conn) rstFields() *header.TCPFields {
	return &header.TCPFields{SrcPort: c.key.lport, DstPort: c.key.rport, Seq: c.sndMax, Ack: c.rcvNxt,
		Flags: header.TCPFlagRST | header.TCPFlagACK}
}

// Timers.

func (c *Conn) setTimer(kind uint8, d time.Duration) {
	c.timerKind = kind
	c.timerDue = c.nowLocked().Add(d)
	if !c.timerAt.IsZero() && !c.timerAt.After(c.timerDue) {
		return // it fires first and arms itself again for timerDue
	}
	c.timerAt = c.timerDue
	c.timer.Reset(d)
}

// stopTimer disarms the timer; a runtime timer still running finds
// nothing due when it fires.
func (c *Conn) stopTimer() {
	c.timerKind = timerNone
}

// armRTO arms the retransmission timer, or first a tail loss probe
// (RFC 8985 §7, simplified): after about two round trips without an ACK,
// the last segment (in recovery: the first hole) goes again, so that a
// lost tail or a lost retransmission draws SACKs and recovery instead of
// waiting out the (200 ms minimum) RTO.
func (c *Conn) armRTO() {
	if srtt := c.rtt.SRTT(); c.sackOK && srtt > 0 && !c.tlpSent &&
		(c.state == stateEstablished || c.state == stateCloseWait || c.state == stateFinWait1) {
		pto := max(2*srtt, 2*time.Millisecond)
		if c.sndMax-c.sndUna <= uint32(c.mssBase) {
			pto += c.p.cfg.DelayedACK // one segment out: the peer may be delaying its ACK
		}
		if rto := c.rtt.RTO(); pto < rto {
			c.setTimer(timerTLP, pto)
			return
		}
	}
	c.setTimer(timerRTO, c.rtt.RTO())
}

// idleTimerLocked sets the timer a connection with nothing in flight runs.
func (c *Conn) idleTimerLocked() {
	switch {
	case c.state == stateFinWait2 && c.appClosed:
		c.setTimer(timerFinWait2, c.p.cfg.FinWait2Timeout)
	case c.kaOn && c.state == stateEstablished:
		c.setTimer(timerKeepAlive, c.kaIdle)
	default:
		c.stopTimer()
	}
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	c.timerAt = time.Time{}
	if c.state == stateClosed || c.timerKind == timerNone {
		c.mu.Unlock()
		return
	}
	if d := time.Until(c.timerDue); d > time.Millisecond { // fired before what is due now
		c.timerAt = c.timerDue
		c.timer.Reset(d)
		c.mu.Unlock()
		return
	}
	switch c.timerKind {
	case timerRTO:
		c.retransmitTimeoutLocked()
	case timerTLP:
		if c.sndUna == c.sndMax {
			c.idleTimerLocked()
			break
		}
		c.tlpSent = true
		if c.inRecovery {
			// In recovery the probe is the head hole again: its
			// retransmission is the likeliest loss when ACKs stop.
			c.rexmitOne = true
		} else {
			c.rexmitTail = true
		}
		c.p.st.TailLossProbes.Add(1)
		c.setTimer(timerRTO, c.rtt.RTO())
	case timerPersist:
		if c.sndWnd == 0 && c.sndEnd != c.sndNxt {
			c.probe = true
			c.p.st.ZeroWindowProbes.Add(1)
			c.rtt.BackoffTo(maxPersist)
			c.setTimer(timerPersist, c.rtt.RTO())
		} else {
			c.timerKind = timerNone
		}
	case timerTimeWait, timerFinWait2:
		c.teardownLocked(nil)
	case timerKeepAlive:
		if idle := time.Since(c.lastRecv); idle < c.kaIdle {
			c.setTimer(timerKeepAlive, c.kaIdle-idle)
			break
		}
		c.kaProbes++
		if c.kaProbes > c.p.cfg.KeepAliveCount {
			c.abortLocked(ErrTimeout)
			break
		}
		c.probe = true
		iv := c.p.cfg.KeepAliveInterval
		if c.kaIdle < iv {
			iv = c.kaIdle
		}
		c.setTimer(timerKeepAlive, iv)
	}
	c.mu.Unlock()
	c.output()
}

// retransmitTimeoutLocked is RFC 6298 §5.4-5.7 with RFC 5681's loss
// window: back off, collapse cwnd, resend from the oldest unacknowledged
// byte (go-back-N; the receiver keeps what it already holds).
func (c *Conn) retransmitTimeoutLocked() {
	if c.sndUna == c.sndMax && c.state.synchronized() {
		c.idleTimerLocked()
		return
	}
	c.retries++
	limit := c.p.cfg.MaxRetries
	if !c.state.synchronized() {
		limit = DefaultSynRetries
	}
	if c.retries > limit {
		if c.state == stateSynSent {
			c.teardownLocked(ErrTimeout)
		} else {
			c.abortLocked(ErrTimeout)
		}
		return
	}
	c.p.st.Timeouts.Add(1)
	mss := uint32(max(c.mssBase, 1))
	if c.state.synchronized() {
		c.ssthresh = c.cubicLossLocked()
		c.cwnd = mss
	}
	c.inRecovery = false
	c.dupAcks = 0
	c.recover = c.sndMax
	c.rtt.Backoff()
	c.rttTiming = false // Karn
	c.sndNxt = c.sndUna
	if c.retries > 1 {
		c.sacked = c.sacked[:0] // the peer may have dropped what it SACKed
	}
	c.armRTO()
}

// ackLaterLocked arms the delayed-ACK timer (lazily, as setTimer): it
// runs in the input path, where c.lastRecv is now.
func (c *Conn) ackLaterLocked() {
	if c.dackArmed {
		return
	}
	c.dackArmed = true
	c.dackDue = c.lastRecv.Add(c.p.cfg.DelayedACK)
	if !c.dackAt.IsZero() && !c.dackAt.After(c.dackDue) {
		return
	}
	c.dackAt = c.dackDue
	if c.dack == nil {
		c.dack = time.AfterFunc(c.p.cfg.DelayedACK, c.onDelayedACK)
		return
	}
	c.dack.Reset(c.p.cfg.DelayedACK)
}

func (c *Conn) onDelayedACK() {
	c.mu.Lock()
	c.dackAt = time.Time{}
	if !c.dackArmed || c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	if d := time.Until(c.dackDue); d > time.Millisecond { // fired before what is due now
		c.dackAt = c.dackDue
		c.dack.Reset(d)
		c.mu.Unlock()
		return
	}
	c.dackArmed = false
	c.ackNow = true
	c.mu.Unlock()
	c.output()
}
