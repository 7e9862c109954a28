package afpacket

import (
	"sync/atomic"

	"github.com/netstation/netstation/stack/link"
)

// The RxRecvmmsg path lends its receive buffers (link.Lender): a frame's
// buffer may stay with the stack, its datagrams queued on a socket where
// the kernel wrote them, until the socket's reader is done; recvmmsg then
// reads into other buffers of a pool that grows on demand up to
// maxRxSlots. The loan is what removes the copy from the link's buffer to
// the socket's ring.
const (
	// maxRxSlots bounds the pool: rxSlotSize bytes each (about 64 KiB,
	// whose pages are touched only as far as frames reach), 16 MiB of
	// address space in all. Beyond it the stack copies.
	maxRxSlots = 256
	// lendLimit is the most slots out on loan at once: the rest are kept
	// for recvmmsg's next batch, so it always finds rxSockBatch free.
	lendLimit = maxRxSlots - rxSockBatch
)

var _ link.Lender = (*Link)(nil)

// rxSlot is one receive buffer of the pool.
type rxSlot struct {
	buf      []byte       // rxSlotSize bytes; set before the slot is first used
	refs     atomic.Int32 // holds out on loan
	assigned bool         // an iovec of the next recvmmsg points here (reader only)
}

// rxPool is the RxRecvmmsg buffers. slots never moves (lenders and
// releasers index it from any goroutine); n, next and at belong to the
// reader (Link.rxMu).
type rxPool struct {
	slots []rxSlot
	n     int   // slots with a buffer
	next  int   // where the search for a free slot resumes
	at    []int // slot each recvmmsg message reads into
	held  atomic.Int32
}

func (p *rxPool) init() {
	p.slots = make([]rxSlot, maxRxSlots)
	p.at = make([]int, rxSockBatch)
	for i := range p.at {
		p.at[i] = p.grow()
	}
}

// grow gives the pool one more buffer and returns its slot (assigned).
func (p *rxPool) grow() int {
	i := p.n
	p.slots[i].buf = make([]byte, rxSlotSize)
	p.slots[i].assigned = true
	p.n++
	return i
}

// free finds a slot neither on loan nor assigned, growing the pool if
// none is. One always exists: at most lendLimit slots are on loan.
func (p *rxPool) free() int {
	for range p.n {
		i := p.next
		if p.next++; p.next == p.n {
			p.next = 0
		}
		s := &p.slots[i]
		if !s.assigned && s.refs.Load() == 0 {
			s.assigned = true
			return i
		}
	}
	return p.grow()
}

// refill points the first want messages at buffers nobody holds: a
// message whose buffer went on loan gets a free one.
func (r *rxSock) refill(want int) {
	p := &r.pool
	for m := range want {
		s := &p.slots[p.at[m]]
		if s.refs.Load() == 0 {
			continue
		}
		s.assigned = false
		i := p.free()
		p.at[m] = i
		r.iovs[m].Base = &p.slots[i].buf[0]
	}
}

// Hold implements link.Lender: n holds on the buffer of loan (a slot
// index plus one), refused when lendLimit slots are out already.
func (l *Link) Hold(loan uint32, n int) bool {
	p := &l.rs.pool
	if loan == 0 || int(loan) > len(p.slots) || n <= 0 {
		return false
	}
	s := &p.slots[loan-1]
	if s.refs.Load() == 0 {
		if p.held.Load() >= lendLimit {
			return false
		}
		p.held.Add(1)
	}
	s.refs.Add(int32(n))
	return true
}

// Release implements link.Lender.
func (l *Link) Release(loan uint32, n int) {
	p := &l.rs.pool
	if loan == 0 || int(loan) > len(p.slots) {
		return
	}
	switch r := p.slots[loan-1].refs.Add(-int32(n)); {
	case r == 0:
		p.held.Add(-1)
	case r < 0:
		panic("afpacket: receive buffer released more often than held")
	}
}

// LoanBuf implements link.Lender.
func (l *Link) LoanBuf(loan uint32) []byte { return l.rs.pool.slots[loan-1].buf }

// LentBuffers is how many receive buffers are on loan now.
func (l *Link) LentBuffers() int { return int(l.rs.pool.held.Load()) }
