package mem

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/netstation/netstation/stack/link"
)

// Switch is an in-memory learning Ethernet switch: the test double of a
// testbed segment's bridge, so that several stacks share one broadcast
// domain (ARP, membership gossip, a cpu talking to disks and displays)
// in one process without privileges.
//
// Each Port is a Pair whose far end the switch reads. A frame goes to the
// port its destination MAC was learned on, or to every other port when the
// destination is broadcast, multicast or not yet learned. Like a bridge,
// and unlike a Pair, the switch never blocks a sender on a slow receiver:
// a frame for a port whose queue is full is dropped and counted
// (SwitchStats.Dropped), so stacks that reply from their receive loop
// cannot deadlock through it.
type Switch struct {
	opts  Options
	mu    sync.Mutex
	ports []*Link // the switch's ends
	fdb   map[[6]byte]*Link
	wg    sync.WaitGroup
	done  chan struct{}
	once  sync.Once

	forwarded, flooded, dropped atomic.Uint64
}

// SwitchStats counts what a Switch did with frames.
type SwitchStats struct {
	Forwarded uint64 // frames sent to the one port their destination was learned on
	Flooded   uint64 // frames sent to every other port
	Dropped   uint64 // copies not delivered: the receiving port's queue was full
}

// NewSwitch returns a switch whose ports are links with options o (MTU,
// offloads, queue depth; Drop applies to frames entering the switch).
func NewSwitch(o Options) *Switch {
	return &Switch{opts: o, fdb: map[[6]byte]*Link{}, done: make(chan struct{})}
}

// Port plugs a new port into the switch and returns the link a stack uses,
// with hardware address mac. Closing that link unplugs it.
func (s *Switch) Port(mac net.HardwareAddr) *Link {
	host, sw := Pair(mac, nil, s.opts)
	s.mu.Lock()
	s.ports = append(s.ports, sw)
	s.mu.Unlock()
	s.wg.Add(1)
	go s.forward(sw)
	return host
}

// Stats reports the switch's counters.
func (s *Switch) Stats() SwitchStats {
	return SwitchStats{Forwarded: s.forwarded.Load(), Flooded: s.flooded.Load(), Dropped: s.dropped.Load()}
}

// Close closes every port and waits for the forwarding goroutines.
func (s *Switch) Close() error {
	s.once.Do(func() { close(s.done) })
	s.mu.Lock()
	ports := append([]*Link(nil), s.ports...)
	s.mu.Unlock()
	for _, p := range ports {
		p.Close()
	}
	s.wg.Wait()
	return nil
}

// forward reads the frames the stack behind port sends and delivers them.
func (s *Switch) forward(port *Link) {
	defer s.wg.Done()
	frames := make([]link.Frame, 64)
	for {
		n, err := port.ReadBatch(frames)
		if err != nil {
			s.unplug(port)
			return
		}
		for i := range frames[:n] {
			s.deliver(port, &frames[i])
		}
	}
}

func (s *Switch) unplug(port *Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range s.ports {
		if p == port {
			s.ports = append(s.ports[:i], s.ports[i+1:]...)
			break
		}
	}
	for mac, p := range s.fdb {
		if p == port {
			delete(s.fdb, mac)
		}
	}
}

func (s *Switch) deliver(from *Link, f *link.Frame) {
	if len(f.Buf) < 14 {
		s.dropped.Add(1)
		return
	}
	var dst, src [6]byte
	copy(dst[:], f.Buf[0:6])
	copy(src[:], f.Buf[6:12])
	s.mu.Lock()
	if src[0]&1 == 0 {
		s.fdb[src] = from
	}
	to, known := s.fdb[dst]
	var targets []*Link
	if dst[0]&1 == 0 && known {
		if to != from {
			targets = []*Link{to}
		}
		s.forwarded.Add(1)
	} else {
		for _, p := range s.ports {
			if p != from {
				targets = append(targets, p)
			}
		}
		s.flooded.Add(1)
	}
	s.mu.Unlock()
	for _, p := range targets {
		if !p.offer(f) {
			s.dropped.Add(1)
		}
	}
}

// offer queues a copy of f for the other end of l without blocking; false
// when that end's queue is full or the link is closed.
func (l *Link) offer(f *link.Frame) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	bp := l.pool.Get().(*[]byte)
	*bp = append((*bp)[:0], f.Buf...)
	select {
	case l.tx <- memFrame{link.Frame{Buf: *bp, VNet: f.VNet}, bp}:
		l.notifyPeer()
		return true
	default:
		*bp = (*bp)[:0]
		l.pool.Put(bp)
		return false
	}
}
