package tcp

import (
	"testing"

	"github.com/netstation/netstation/stack/engine"
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
