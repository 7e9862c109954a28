package tcp

import (
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// input processes one segment for the connection (RFC 9293 §3.10.7.3
// for SYN-SENT, §3.10.7.4 for the other states). It reports whether the
// connection may owe the network a segment now (the caller runs output,
// at the latest when its receive batch ends).
func (c *Conn) input(in *inSeg) bool {
	c.mu.Lock()
	c.beginClockLocked(time.Time{})
	reuse := c.inputLocked(in)
	c.endClockLocked()
	owe := c.mayOweLocked()
	c.mu.Unlock()
	if reuse {
		// A new SYN for the 4-tuple of a connection in TIME-WAIT: the old
		// one is gone now; the listener takes the SYN (RFC 6191 spirit).
		c.p.mu.RLock()
		l := c.p.listeners[in.dport]
		c.p.mu.RUnlock()
		if l != nil {
			l.input(in)
		}
		return false
	}
	return owe
}

// mayOweLocked reports whether output could send anything now: false
// only when fillLocked certainly builds nothing (an established
// connection with no ACK, probe or retransmission due, nothing unsent
// and no FIN queued), as after a request whose ACK waits for the reply.
// Flush then skips the connection instead of taking its locks for nothing.
func (c *Conn) mayOweLocked() bool {
	return c.state != stateEstablished || c.ackNow || c.probe || c.rexmitOne || c.rexmitTail ||
		c.inRecovery || c.finQueued || c.sndNxt != c.sndEnd
}

func (c *Conn) dropLocked(r engine.DropReason) { c.p.net.Drop(r) }

func (c *Conn) inputLocked(in *inSeg) (reuse bool) {
	switch c.state {
	case stateClosed:
		c.dropLocked(engine.DropNoSocket)
		c.p.resetFor(in)
		return false
	case stateSynSent:
		c.synSentLocked(in)
		return false
	}
	c.lastRecv = c.nowLocked()
	c.kaProbes = 0

	// A new SYN above the old sequence space ends a TIME-WAIT at once
	// (before PAWS: a new incarnation's timestamps need not be larger).
	if c.state == stateTimeWait && in.has(header.TCPFlagSYN) && !in.has(header.TCPFlagACK) && !in.has(header.TCPFlagRST) &&
		seqGT(in.seq, c.rcvNxt) {
		c.teardownLocked(nil)
		return true
	}

	// PAWS (RFC 7323 §5): a timestamp older than the last one is a
	// segment from an earlier incarnation or wrap.
	if c.tsOK && in.opts.HasTS && !in.has(header.TCPFlagRST) && int32(in.opts.TSVal-c.tsRecent) < 0 {
		c.dropLocked(engine.DropTCPOutOfWindow)
		c.ackNow = true
		return false
	}

	// Acceptability (§3.10.7.4, first check).
	segLen := in.segLen()
	wnd := uint32(max(c.rcvWndLocked(), 0))
	ok := false
	switch {
	case segLen == 0 && wnd == 0:
		ok = in.seq == c.rcvNxt
	case segLen == 0:
		ok = seqLEQ(c.rcvNxt, in.seq) && seqLT(in.seq, c.rcvNxt+wnd)
	case wnd == 0:
		// Zero window: still take the ACK (and RST) of an in-order
		// segment; its data is trimmed away below.
		ok = in.seq == c.rcvNxt
	default:
		last := in.seq + segLen - 1
		ok = (seqLEQ(c.rcvNxt, in.seq) && seqLT(in.seq, c.rcvNxt+wnd)) ||
			(seqLEQ(c.rcvNxt, last) && seqLT(last, c.rcvNxt+wnd))
	}
	if !ok {
		if !in.has(header.TCPFlagRST) {
			c.ackNow = true
		}
		// A duplicate (all of it left of rcvNxt): its data is old but its
		// ACK may be news, as when both sides retransmit after losing
		// each other's ACKs; like 4.4BSD, keep it as a pure ACK.
		dup := segLen > 0 && seqLEQ(in.seq+segLen, c.rcvNxt) && in.has(header.TCPFlagACK) &&
			!in.has(header.TCPFlagRST) && !in.has(header.TCPFlagSYN)
		if !dup {
			c.dropLocked(engine.DropTCPOutOfWindow)
			return false
		}
		if n := len(in.payload); n > 0 { // D-SACK it (RFC 2883)
			c.dsack, c.dsackPending = seqRange{start: in.seq, end: in.seq + uint32(n)}, true
		}
		in.payload = in.payload[:0]
		in.flags &^= header.TCPFlagFIN
	}

	// RST (RFC 5961 §3.2: only an exact match resets; others in the
	// window get a challenge ACK).
	if in.has(header.TCPFlagRST) {
		c.p.st.RstIn.Add(1)
		if in.seq != c.rcvNxt {
			c.p.st.ChallengeACKs.Add(1)
			c.ackNow = true
			return false
		}
		switch c.state {
		case stateSynRcvd:
			if c.listener != nil {
				c.teardownLocked(nil) // back to LISTEN: the listener never saw it
			} else {
				c.teardownLocked(ErrConnRefused)
			}
		case stateEstablished, stateFinWait1, stateFinWait2, stateCloseWait:
			c.p.st.EstabResets.Add(1)
			c.teardownLocked(ErrConnReset)
		default: // CLOSING, LAST-ACK, TIME-WAIT
			c.teardownLocked(nil)
		}
		return false
	}

	// SYN in a synchronized state (or a second SYN in SYN-RECEIVED):
	// RFC 5961 §4 challenge ACK.
	if in.has(header.TCPFlagSYN) {
		if c.state == stateSynRcvd && in.seq == c.irs && !in.has(header.TCPFlagACK) {
			c.sndNxt = c.iss // a retransmitted SYN: send the SYN-ACK again
			return false
		}
		c.p.st.ChallengeACKs.Add(1)
		c.dropLocked(engine.DropTCPBadState)
		c.ackNow = true
		return false
	}

	if !in.has(header.TCPFlagACK) {
		c.dropLocked(engine.DropTCPBadState)
		return false
	}

	// RFC 7323 §4.3: remember the timestamp of a segment that covers the
	// last ACK we sent.
	if c.tsOK && in.opts.HasTS && seqLEQ(in.seq, c.lastAckSent) {
		c.tsRecent = in.opts.TSVal
	}

	if c.state == stateSynRcvd {
		if !(seqLT(c.sndUna, in.ack) && seqLEQ(in.ack, c.sndMax)) {
			c.dropLocked(engine.DropTCPBadState)
			c.p.resetFor(in)
			return false
		}
		c.state = stateEstablished
		c.sndWnd = uint32(in.wnd) << c.sndWS
		c.maxSndWnd = max(c.maxSndWnd, c.sndWnd)
		c.sndWl1, c.sndWl2 = in.seq, in.ack
		c.establishedLocked()
		if c.state == stateClosed {
			return false
		}
		if c.finQueued { // Close or CloseWrite while half-open
			c.state = stateFinWait1
		}
	}

	if !c.ackLocked(in) {
		return false
	}
	if c.state == stateClosed {
		return false
	}

	// Segment text.
	seq, payload, fin := in.seq, in.payload, in.has(header.TCPFlagFIN)
	if len(payload) > 0 || fin {
		if seqLT(seq, c.rcvNxt) {
			d := c.rcvNxt - seq
			if n := min(int(d), len(payload)); n > 0 {
				c.dsack, c.dsackPending = seqRange{start: seq, end: seq + uint32(n)}, true
				c.ackNow = true
			}
			if int(d) >= len(payload) {
				if int(d) > len(payload) {
					fin = false // the FIN, too, is old
				}
				payload = payload[:0]
			} else {
				payload = payload[d:]
			}
			seq = c.rcvNxt
		}
		right := c.rcvRead + uint32(c.rcvCap)
		if seqGT(seq+uint32(len(payload)), right) {
			if seqGEQ(seq, right) {
				payload = payload[:0]
			} else {
				payload = payload[:right-seq]
			}
			fin = false
		}
	}
	if len(payload) > 0 {
		switch c.state {
		case stateEstablished, stateFinWait1, stateFinWait2:
			if c.appClosed {
				// Nobody will read this: tell the peer (RFC 2525 §2.17).
				c.abortLocked(ErrConnAborted)
				return false
			}
			c.dataLocked(seq, payload, in)
		default:
			payload = payload[:0] // after the peer's FIN: ignore
		}
	} else if len(in.payload) > 0 {
		c.ackNow = true // a duplicate or beyond the window: tell where we are
	}
	if fin {
		end := seq + uint32(len(payload))
		if end == c.rcvNxt {
			c.finLocked()
		} else if c.state.synchronized() && seqGT(end, c.rcvNxt) {
			c.oooFin, c.oooFinSeq = true, end
		}
	}
	return false
}

// synSentLocked is §3.10.7.3.
func (c *Conn) synSentLocked(in *inSeg) {
	ackOK := false
	if in.has(header.TCPFlagACK) {
		if seqLEQ(in.ack, c.iss) || seqGT(in.ack, c.sndMax) {
			c.dropLocked(engine.DropTCPBadState)
			if !in.has(header.TCPFlagRST) {
				c.p.resetFor(in)
			}
			return
		}
		ackOK = true
	}
	if in.has(header.TCPFlagRST) {
		c.p.st.RstIn.Add(1)
		if ackOK {
			c.p.st.AttemptFails.Add(1)
			c.teardownLocked(ErrConnRefused)
		} else {
			c.dropLocked(engine.DropTCPBadState)
		}
		return
	}
	if !in.has(header.TCPFlagSYN) {
		c.dropLocked(engine.DropTCPBadState)
		return
	}
	c.acceptSyn(in)
	if ackOK {
		c.sndUna = in.ack
		c.sndWnd = uint32(in.wnd) // never scaled in a SYN
		c.maxSndWnd = c.sndWnd
		c.sndWl1, c.sndWl2 = in.seq, in.ack
		if c.tsOK && in.opts.TSEcr != 0 {
			c.rtt.Sample(time.Duration(c.p.tsAt(c.nowLocked())-in.opts.TSEcr) * time.Millisecond)
		} else if c.rttTiming {
			c.rtt.Sample(c.nowLocked().Sub(c.rttTime))
		}
		c.rttTiming = false
		c.retries = 0
		c.state = stateEstablished
		c.ackNow = true
		c.stopTimer()
		c.establishedLocked()
		return
	}
	// Simultaneous open: answer with SYN-ACK on the same ISS.
	c.state = stateSynRcvd
	c.sndNxt = c.iss
	c.sndWnd = uint32(in.wnd)
	c.sndWl1, c.sndWl2 = in.seq, in.ack
}

// acceptSyn takes the peer's ISN and options from its SYN.
func (c *Conn) acceptSyn(in *inSeg) {
	c.irs = in.seq
	c.rcvNxt = in.seq + 1
	c.rcvBase = c.rcvNxt
	c.rcvRead = c.rcvNxt
	o := &in.opts
	peerMSS := 536 // RFC 9293 default
	if o.MSS != 0 {
		peerMSS = int(o.MSS)
	}
	c.mssBase = max(min(peerMSS, c.p.net.MTU()-header.IPv4MinimumSize-header.TCPMinimumSize), 64)
	c.wsOK = o.HasWS
	if c.wsOK {
		c.sndWS, c.rcvWS = o.WS, c.p.wsh
	} else {
		c.sndWS, c.rcvWS = 0, 0
	}
	c.tsOK = o.HasTS && !c.p.cfg.NoTimestamps
	c.tsRecent = o.TSVal
	c.sackOK = o.SACKPermitted && !c.p.cfg.NoSACK
	if c.rcvCap == 0 {
		size := c.p.cfg.InitialBuffer
		if !c.wsOK {
			size = min(size, 1<<16)
		}
		c.rcvCap = size // the ring itself waits for the first data
	}
}

// establishedLocked runs once the handshake completes.
func (c *Conn) establishedLocked() {
	mss := uint32(c.mssBase)
	c.cwnd = 10 * mss // RFC 6928
	c.ssthresh = 1 << 30
	c.recover = c.iss
	c.lastRecv = c.nowLocked()
	if c.listener != nil {
		c.queued = true
		c.listener.established(c)
	}
	if !c.estabSig {
		c.estabSig = true
		close(c.estab)
	}
	wake(c.wrWake)
}

// ackLocked processes the acknowledgment field (§3.10.7.4, fifth
// check) with congestion control. False means drop the segment.
func (c *Conn) ackLocked(in *inSeg) bool {
	ack := in.ack
	if seqGT(ack, c.sndMax) {
		c.dropLocked(engine.DropTCPOutOfWindow)
		c.ackNow = true
		return false
	}
	oldWnd := c.sndWnd
	if seqLT(c.sndWl1, in.seq) || (c.sndWl1 == in.seq && seqLEQ(c.sndWl2, ack)) {
		c.sndWnd = uint32(in.wnd) << c.sndWS
		c.maxSndWnd = max(c.maxSndWnd, c.sndWnd)
		c.sndWl1, c.sndWl2 = in.seq, ack
		if c.sndWnd > 0 && c.timerKind == timerPersist {
			c.rtt.Restore() // the persist timer's back-off ends with the zero window
			c.stopTimer()
		}
	}
	mss := uint32(c.mssBase)
	sackNews := c.takeSACKLocked(&in.opts)
	if seqGT(ack, c.sndUna) {
		acked := ack - c.sndUna
		data := acked
		if c.sndUna == c.iss {
			data-- // the SYN
		}
		if c.finQueued && ack == c.sndEnd+1 {
			data-- // the FIN
		}
		c.bytesAcked += uint64(data)
		if c.tsOK && in.opts.TSEcr != 0 {
			c.rtt.Sample(time.Duration(c.p.tsAt(c.nowLocked())-in.opts.TSEcr) * time.Millisecond)
		} else if c.rttTiming && seqGT(ack, c.rttSeq) {
			c.rtt.Sample(c.nowLocked().Sub(c.rttTime))
			c.rttTiming = false
		}
		c.sndUna = ack
		if seqLT(c.sndNxt, c.sndUna) {
			c.sndNxt = c.sndUna
		}
		c.pruneSACKLocked()
		c.retries = 0
		c.tlpSent = false
		switch {
		case c.inRecovery && seqGEQ(ack, c.recover):
			// Full ACK (RFC 6582 §3.2 step 3).
			c.inRecovery = false
			c.cwnd = min(c.ssthresh, max(c.sndMax-c.sndUna, mss)+mss)
		case c.inRecovery && len(c.sacked) > 0:
			// SACK recovery: the hole loop resends; cwnd stays at ssthresh
			// and the pipe estimate paces (RFC 6675). The new head hole's
			// retransmission, if any, gets a round trip from now.
			c.headRexmitAt = c.lastRecv
		case c.inRecovery:
			// Partial ACK: resend the next hole, deflate.
			c.rexmitOne = true
			if acked > c.cwnd {
				c.cwnd = mss
			} else {
				c.cwnd -= acked
			}
			if acked >= mss {
				c.cwnd += mss
			}
		case c.cwnd < c.ssthresh:
			c.cwnd += acked // slow start; stretch ACKs of super-frames count in full
		default:
			c.cubicAckLocked(acked, c.lastRecv)
		}
		// A window the peer's never allows is no window (RFC 7661's
		// concern): growth stops at twice the largest it advertised.
		c.cwnd = max(min(c.cwnd, max(2*c.maxSndWnd, 10*mss), 1<<30), mss) // never below one segment: a zero cwnd with nothing in flight would stall
		c.dupAcks = 0
		if c.sndUna == c.sndMax {
			c.idleTimerLocked()
		} else {
			c.armRTO()
		}
		if c.wrSleep {
			c.wrSleep = false
			wake(c.wrWake)
		}
		finAcked := c.finQueued && c.sndUna == c.sndEnd+1
		switch c.state {
		case stateFinWait1:
			if finAcked {
				c.state = stateFinWait2
				c.idleTimerLocked()
			}
		case stateClosing:
			if finAcked {
				c.enterTimeWaitLocked()
			}
		case stateLastAck:
			if finAcked {
				c.teardownLocked(nil)
				return false
			}
		}
		return true
	}
	// A lost retransmission (RACK's idea, simplified): in SACK recovery,
	// if the head hole was retransmitted more than a round trip ago and
	// ACKs still report it missing, send it again instead of waiting for
	// the retransmission timer.
	if c.inRecovery && len(c.sacked) > 0 && ack == c.sndUna && seqLT(c.sndUna, c.rexmitHigh) &&
		!c.headRexmitAt.IsZero() && c.lastRecv.Sub(c.headRexmitAt) > c.rtt.SRTT()+c.rtt.SRTT()/4+200*time.Microsecond {
		c.rexmitOne = true
		c.headRexmitAt = c.lastRecv
	}
	// Duplicate ACK (RFC 5681 §2 definition; with SACK, one that reports
	// new data held).
	if ack == c.sndUna && len(in.payload) == 0 && !in.has(header.TCPFlagFIN) && c.sndMax != c.sndUna &&
		(c.sndWnd == oldWnd || sackNews) {
		c.dupAcks++
		c.p.st.DupAcks.Add(1)
		// RFC 6675 §5: DupThresh duplicate ACKs, or more than
		// DupThresh-1 segments' worth SACKed, start recovery.
		lossSeen := c.dupAcks >= 3 || c.sackedBytesLocked() >= 3*mss || (c.tlpSent && len(c.sacked) > 0)
		switch {
		case lossSeen && !c.inRecovery && seqGEQ(ack, c.recover):
			c.p.st.FastRetransmits.Add(1)
			c.ssthresh = c.cubicLossLocked()
			c.recover = c.sndMax
			c.inRecovery = true
			c.rttTiming = false
			c.rexmitOne = true // the first hole goes at once (RFC 6675 §5 step 4.3)
			if len(c.sacked) > 0 {
				c.rexmitHigh = c.sndUna
				c.cwnd = c.ssthresh
			} else {
				c.cwnd = c.ssthresh + 3*mss
			}
		case c.dupAcks > 3 && c.inRecovery && len(c.sacked) == 0:
			c.cwnd += mss
		}
	}
	if c.state == stateTimeWait && in.has(header.TCPFlagFIN) {
		c.ackNow = true
		c.enterTimeWaitLocked()
	}
	return true
}

// dataLocked takes in-window payload starting at seq (trimmed so that
// seq >= rcvNxt and the end is inside the window).
func (c *Conn) dataLocked(seq uint32, payload []byte, in *inSeg) {
	// Receive buffer autotuning, coarse: grow (up to MaxBuffer) when the
	// ring is half full, or when four rings' worth arrived since the last
	// growth: a bulk flow gets a window for long fat paths within a few
	// MiB, a request/response connection keeps its small ring.
	if c.rcvCap < c.maxRcv {
		c.rcvSinceGrow += len(payload)
		used := int(c.rcvNxt-c.rcvRead) + len(payload)
		if 2*used > c.rcvCap || c.rcvSinceGrow >= 4*c.rcvCap {
			c.growRecvLocked()
			c.rcvSinceGrow = 0
		}
	}
	if seq == c.rcvNxt {
		c.rebaseRecvLocked()
		if !c.lendLocked(seq, payload, in.loan) {
			c.ringWriteLocked(seq, payload)
		}
		before := c.rcvNxt
		c.rcvNxt += uint32(len(payload))
		hadOOO := len(c.ooo) > 0
		c.mergeOOOLocked()
		c.bytesReceived += uint64(c.rcvNxt - before)
		if c.oooFin && c.oooFinSeq == c.rcvNxt {
			c.oooFin = false
			c.finLocked()
		}
		c.rdNews.Store(true)
		if c.rdSleep && c.readableLocked() >= c.rdLowat {
			c.rdSleep = false
			wake(c.rdWake)
		}
		// Linux's rule (__tcp_ack_snd_check): acknowledge at once when
		// more than one full-sized segment is unacknowledged (every second
		// segment of a bulk flow, every GSO super-frame), else delay. Small
		// requests (an NBD or RPC header, tens of bytes) then get their
		// ACK on the reply instead of one pure ACK (a send) per pair.
		c.unacked += len(payload)
		if hadOOO || c.unacked > c.mssBase {
			c.ackNow = true
		} else {
			c.ackLaterLocked()
		}
		return
	}
	// Out of order: keep it in place (lent when it overlaps nothing held,
	// lend.go), acknowledge at once (a duplicate ACK carrying SACK blocks).
	c.p.st.OutOfOrder.Add(1)
	end := seq + uint32(len(payload))
	fresh := c.oooFreeLocked(seq, end)
	if !c.addOOOLocked(seq, end) {
		c.dropLocked(engine.DropTCPOutOfOrderFull)
	} else if !fresh || !c.lendLocked(seq, payload, in.loan) {
		c.ringWriteLocked(seq, payload)
	}
	c.ackNow = true
}

// ringWriteLocked copies payload into the receive ring at seq.
func (c *Conn) ringWriteLocked(seq uint32, payload []byte) {
	if c.rcvBuf == nil { // a connection that never receives never pays for a ring
		c.rcvBuf = make([]byte, c.rcvCap)
	}
	ringWrite(c.rcvBuf, c.rcvBase, seq, payload)
}

// rebaseRecvLocked starts the receive ring over at rcvNxt when it holds
// nothing: all read, nothing out of order, no chunk lent, no views out.
func (c *Conn) rebaseRecvLocked() {
	if c.rcvRead == c.rcvNxt && len(c.ooo) == 0 && c.lent.n == 0 && !c.viewsOut {
		c.rcvBase = c.rcvNxt
	}
}

// oooFreeLocked reports whether no byte of [start, end) is held out of
// order yet.
func (c *Conn) oooFreeLocked(start, end uint32) bool {
	for _, r := range c.ooo {
		if seqLT(start, r.end) && seqLT(r.start, end) {
			return false
		}
	}
	return true
}

// addOOOLocked records [start, end) as held, merging neighbours.
func (c *Conn) addOOOLocked(start, end uint32) bool {
	i := 0
	for i < len(c.ooo) && seqLT(c.ooo[i].end, start) {
		i++
	}
	// ooo[i] is the first range that ends at or after start.
	if i < len(c.ooo) && seqLEQ(c.ooo[i].start, end) {
		r := &c.ooo[i]
		if seqLT(start, r.start) {
			r.start = start
		}
		if seqGT(end, r.end) {
			r.end = end
		}
		// Swallow the ranges the grown one now reaches.
		j := i + 1
		for j < len(c.ooo) && seqLEQ(c.ooo[j].start, r.end) {
			if seqGT(c.ooo[j].end, r.end) {
				r.end = c.ooo[j].end
			}
			j++
		}
		c.ooo = append(c.ooo[:i+1], c.ooo[j:]...)
		return true
	}
	if len(c.ooo) >= maxOOORanges {
		return false
	}
	if c.ooo == nil {
		c.ooo = make([]seqRange, 0, maxOOORanges)
	}
	c.ooo = append(c.ooo, seqRange{})
	copy(c.ooo[i+1:], c.ooo[i:])
	c.ooo[i] = seqRange{start, end}
	return true
}

// mergeOOOLocked advances rcvNxt over held ranges it now reaches.
func (c *Conn) mergeOOOLocked() {
	k := 0
	for k < len(c.ooo) && seqLEQ(c.ooo[k].start, c.rcvNxt) {
		if seqGT(c.ooo[k].end, c.rcvNxt) {
			c.rcvNxt = c.ooo[k].end
		}
		k++
	}
	if k > 0 {
		c.ooo = append(c.ooo[:0], c.ooo[k:]...)
	}
}

// finLocked takes the peer's FIN, which is next in sequence.
func (c *Conn) finLocked() {
	if c.finRcvd {
		c.ackNow = true
		return
	}
	c.finRcvd = true
	c.rcvNxt++
	c.ackNow = true
	c.rdNews.Store(true)
	wake(c.rdWake)
	switch c.state {
	case stateSynRcvd, stateEstablished:
		c.state = stateCloseWait
	case stateFinWait1:
		if c.finQueued && c.sndUna == c.sndEnd+1 {
			c.enterTimeWaitLocked()
		} else {
			c.state = stateClosing
		}
	case stateFinWait2:
		c.enterTimeWaitLocked()
	case stateTimeWait:
		c.enterTimeWaitLocked()
	}
}

func (c *Conn) enterTimeWaitLocked() {
	c.state = stateTimeWait
	// Every way into TIME_WAIT has our FIN acknowledged, so nothing is
	// left to send; once the reader has taken what arrived, nothing is
	// left to read either. A connection waiting out TIME_WAIT then holds
	// no rings: a busy server has a TIME_WAIT's worth of closed
	// connections (1,300 at 1,300 HTTP requests/s, which held 500 MiB of
	// rings in the display).
	c.sndBuf = nil
	if c.readableLocked() == 0 {
		c.rcvBuf = nil
	}
	c.dackArmed = false
	c.setTimer(timerTimeWait, c.p.cfg.TimeWait)
	wake(c.wrWake)
}
