// Package disktest has test helpers for the storage protocol: a
// net.PacketConn wrapper that loses, duplicates and reorders datagrams
// with a seeded generator, so tests of both ends are reproducible.
package disktest

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Impairment says what a LossyConn does to the datagrams it sends. Each
// probability is in [0, 1] and applies independently per datagram.
type Impairment struct {
	Loss      float64       // drop the datagram
	Duplicate float64       // send it twice
	Reorder   float64       // hold it back for a random delay up to MaxDelay
	MaxDelay  time.Duration // default 2 ms
	Seed      uint64
}

// LossyConn impairs the datagrams written through it; reads pass through.
type LossyConn struct {
	net.PacketConn
	imp Impairment

	mu  sync.Mutex
	rng *rand.Rand

	Sent, Dropped, Duplicated, Reordered atomic.Uint64
}

// NewLossyConn wraps pc.
func NewLossyConn(pc net.PacketConn, imp Impairment) *LossyConn {
	if imp.MaxDelay <= 0 {
		imp.MaxDelay = 2 * time.Millisecond
	}
	return &LossyConn{PacketConn: pc, imp: imp, rng: rand.New(rand.NewPCG(imp.Seed, imp.Seed^0x9e3779b97f4a7c15))}
}

// WriteTo sends b to addr, or not, or twice, or late. It always reports
// success, as a lossy network would.
func (c *LossyConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	drop := c.rng.Float64() < c.imp.Loss
	dup := c.rng.Float64() < c.imp.Duplicate
	late := c.rng.Float64() < c.imp.Reorder
	delay := time.Duration(c.rng.Int64N(int64(c.imp.MaxDelay)) + 1)
	c.mu.Unlock()
	c.Sent.Add(1)
	if drop {
		c.Dropped.Add(1)
		return len(b), nil
	}
	copies := 1
	if dup {
		c.Duplicated.Add(1)
		copies = 2
	}
	if late {
		c.Reordered.Add(1)
		cp := append([]byte(nil), b...)
		time.AfterFunc(delay, func() {
			for range copies {
				c.PacketConn.WriteTo(cp, addr)
			}
		})
		return len(b), nil
	}
	for range copies {
		if _, err := c.PacketConn.WriteTo(b, addr); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}
