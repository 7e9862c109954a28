package tcp

import (
	"testing"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// gsoNet is a Network whose routes take GSO super-frames, so a
// connection's batch holds txBatchGSO segments; nothing is sent.
type gsoNet struct{}

func (gsoNet) LocalAddr() [4]byte { return [4]byte{10, 0, 0, 1} }
func (gsoNet) MTU() int           { return 1500 }
func (gsoNet) GSO() bool          { return true }
func (gsoNet) NewRoute([4]byte, uint16) (Route, error) {
	return discardRoute{}, nil
}
func (gsoNet) Drop(engine.DropReason) {}

// discardRoute sends nowhere.
type discardRoute struct{}

func (discardRoute) Output([]Segment) error { return nil }
func (discardRoute) Close()                 {}

// TestFillTailProbeAfterFullSACKBatch is the state CI's race run met: the
// tail-loss-probe timer set rexmitTail, then ACKs put the connection into
// SACK recovery with more holes than a batch has slots. SACK recovery
// takes every slot; the probe must wait for the next batch, not be
// written past the last slot.
func TestFillTailProbeAfterFullSACKBatch(t *testing.T) {
	p := New(gsoNet{}, Config{})
	c := p.newConn(fourTuple{raddr: [4]byte{10, 0, 0, 2}, lport: 1000, rport: 2000}, discardRoute{})
	t.Cleanup(func() { c.timer.Stop() }) // the retransmission timer the batches armed
	c.state = stateEstablished
	mss := c.mssBase
	const segs = 4 * txBatchGSO
	c.iss = 1000
	c.sndBuf = make([]byte, 1<<16)
	c.sndUna = c.iss + 1
	c.sndNxt = c.sndUna + uint32(segs*mss)
	c.sndMax, c.sndEnd = c.sndNxt, c.sndNxt
	c.sndWnd, c.cwnd = 1<<20, 1<<20
	c.rcvCap = 1 << 16
	c.inRecovery = true
	// Every other segment SACKed: segs/2 one-segment holes.
	for i := 1; i < segs; i += 2 {
		start := c.sndUna + uint32(i*mss)
		c.sacked = append(c.sacked, seqRange{start, start + uint32(mss)})
	}
	c.rexmitTail = true

	c.mu.Lock()
	n, more := c.fillLocked()
	c.mu.Unlock()
	if n != len(c.txSegs) || !more {
		t.Fatalf("fillLocked = %d, %v; want a full batch of %d and more", n, more, len(c.txSegs))
	}
	if !c.rexmitTail {
		t.Fatal("the tail loss probe was dropped, not kept for the next batch")
	}
	// Once the holes are resent the probe goes out.
	for batch := 0; c.rexmitTail; batch++ {
		if batch == segs {
			t.Fatal("no batch sent the waiting tail loss probe")
		}
		c.mu.Lock()
		_, _ = c.fillLocked()
		c.mu.Unlock()
	}
}

// FuzzFillLocked builds send-side states a connection can reach (data in
// flight, rewound after a timeout or not, holes SACKed, a FIN queued or
// sent, recovery, probes and ACKs pending, any windows) and fills batches
// from them: no batch may write past its slots or send outside the
// bytes written, whatever combination of phases is due at once.
func FuzzFillLocked(f *testing.F) {
	f.Add(true, uint32(1000), uint8(32), uint8(4), uint32(0xaaaaaaaa), uint8(0xff), uint8(255), uint16(0xffff))
	f.Add(false, uint32(0xfffff000), uint8(8), uint8(0), uint32(0x5), uint8(0x3c), uint8(2), uint16(1))
	f.Add(true, uint32(7), uint8(0), uint8(0), uint32(0), uint8(0x41), uint8(1), uint16(0))
	f.Fuzz(func(t *testing.T, gso bool, iss uint32, out, unsent uint8, sackMask uint32, flags uint8, cwndSegs uint8, wndSegs uint16) {
		var n Network = gsoNet{}
		if !gso {
			n = plainNet{}
		}
		c := New(n, Config{}).newConn(fourTuple{raddr: [4]byte{10, 0, 0, 2}, lport: 1000, rport: 2000}, discardRoute{})
		t.Cleanup(func() { c.timer.Stop() })
		c.state = stateEstablished
		mss := uint32(c.mssBase)
		c.iss = iss
		c.sndUna = iss + 1
		c.sndMax = c.sndUna + uint32(out)*mss
		c.sndEnd = c.sndMax + uint32(unsent)*mss
		c.finQueued = flags&1 != 0
		if c.finQueued && unsent == 0 && flags&2 != 0 {
			c.sndMax++ // the FIN was sent
		}
		c.sndNxt = c.sndMax
		if flags&4 != 0 {
			c.sndNxt = c.sndUna // rewound by a timeout (go-back-N)
		}
		for i := uint32(1); i < uint32(out) && i < 32; i++ {
			if sackMask&(1<<i) == 0 {
				continue
			}
			start := c.sndUna + i*mss
			if k := len(c.sacked); k > 0 && c.sacked[k-1].end == start {
				c.sacked[k-1].end += mss
			} else {
				c.sacked = append(c.sacked, seqRange{start, start + mss})
			}
		}
		c.inRecovery = flags&8 != 0
		c.rexmitOne = flags&16 != 0
		c.rexmitTail = flags&32 != 0
		c.probe = flags&64 != 0
		c.ackNow = flags&128 != 0
		c.cwnd = uint32(cwndSegs) * mss
		c.sndWnd = uint32(wndSegs) * mss
		c.maxSndWnd = c.sndWnd
		size := 1 << 16
		for size < int(c.sndEnd-c.sndUna)+1 {
			size <<= 1
		}
		c.sndBuf = make([]byte, size)
		c.rcvCap = 1 << 16

		for batch := 0; batch < 8; batch++ {
			c.mu.Lock()
			got, more := c.fillLocked()
			c.mu.Unlock()
			if got > len(c.txSegs) {
				t.Fatalf("batch of %d segments in %d slots", got, len(c.txSegs))
			}
			for i, s := range c.txSegs[:got] {
				seq := header.TCP(s.Buf[Headroom:]).Seq()
				payload := len(s.Buf) - Headroom - s.HdrLen + len(s.Payload[0]) + len(s.Payload[1])
				if c.probe || payload == 0 {
					continue // a probe carries an old sequence number, an ACK none
				}
				if seqLT(seq, c.sndUna) || seqGT(seq+uint32(payload), c.sndEnd) {
					t.Fatalf("segment %d sends [%d, %d) outside the written [%d, %d)",
						i, seq-c.iss, seq+uint32(payload)-c.iss, c.sndUna-c.iss, c.sndEnd-c.iss)
				}
			}
			if seqGT(c.sndNxt, c.sndMax) || seqGT(c.sndMax, c.sndEnd+1) {
				t.Fatalf("after a batch: nxt %d max %d end %d", c.sndNxt-c.iss, c.sndMax-c.iss, c.sndEnd-c.iss)
			}
			if got == 0 || !more {
				break
			}
		}
	})
}

// plainNet is gsoNet without GSO: a batch of txBatchNoGSO MTU segments.
type plainNet struct{ gsoNet }

func (plainNet) GSO() bool { return false }
