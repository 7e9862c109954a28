package engine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrInUse is returned by FlowTable.Insert for a key that is taken.
var ErrInUse = errors.New("engine: flow already registered")

// ErrNotFound is returned by FlowTable.Remove for an unknown key.
var ErrNotFound = errors.New("engine: flow not registered")

// FlowKey identifies a flow from the local side. A zero LocalAddr is the
// wildcard local address; zero RemoteAddr and RemotePort the wildcard peer.
type FlowKey struct {
	Proto      uint8
	LocalAddr  [4]byte
	LocalPort  uint16
	RemoteAddr [4]byte
	RemotePort uint16
}

// String formats k for error messages.
func (k FlowKey) String() string {
	return fmt.Sprintf("proto %d %d.%d.%d.%d:%d <- %d.%d.%d.%d:%d", k.Proto,
		k.LocalAddr[0], k.LocalAddr[1], k.LocalAddr[2], k.LocalAddr[3], k.LocalPort,
		k.RemoteAddr[0], k.RemoteAddr[1], k.RemoteAddr[2], k.RemoteAddr[3], k.RemotePort)
}

// FlowTable maps flows to endpoints of type E. Lookup is lock-free (it
// reads an immutable snapshot through an atomic pointer); Insert and
// Remove serialise on a mutex and publish a fresh copy, which suits tables
// that change at socket rate and are read at packet rate.
type FlowTable[E any] struct {
	mu sync.Mutex
	m  atomic.Pointer[flowSnapshot[E]]
}

// The four key shapes Lookup tries, most specific first.
const (
	shapeExact        = iota // local addr, local port, remote addr, remote port
	shapeAnyLocalConn        // wildcard local addr, connected to a remote
	shapeListener            // local addr, wildcard remote
	shapeAnyListener         // wildcard local addr, wildcard remote
	numShapes
)

type flowSnapshot[E any] struct {
	m map[FlowKey]E
	// shapes counts the keys of each shape, so Lookup skips the hash
	// probes for shapes nobody registered (a listener-only table costs
	// one probe, not four).
	shapes [numShapes]int
}

func shapeOf(k FlowKey) int {
	local := k.LocalAddr != [4]byte{}
	remote := k.RemoteAddr != [4]byte{} || k.RemotePort != 0
	switch {
	case local && remote:
		return shapeExact
	case remote:
		return shapeAnyLocalConn
	case local:
		return shapeListener
	}
	return shapeAnyListener
}

// Lookup finds the endpoint for a received packet: the exact 5-tuple
// first, then a connected flow on the wildcard local address, then a
// listener on the local address, then a listener on the wildcard address.
func (t *FlowTable[E]) Lookup(proto uint8, laddr [4]byte, lport uint16, raddr [4]byte, rport uint16) (E, bool) {
	var zero E
	snap := t.m.Load()
	if snap == nil {
		return zero, false
	}
	m := snap.m
	if snap.shapes[shapeExact] > 0 {
		if e, ok := m[FlowKey{proto, laddr, lport, raddr, rport}]; ok {
			return e, true
		}
	}
	if snap.shapes[shapeAnyLocalConn] > 0 {
		if e, ok := m[FlowKey{proto, [4]byte{}, lport, raddr, rport}]; ok {
			return e, true
		}
	}
	if snap.shapes[shapeListener] > 0 {
		if e, ok := m[FlowKey{Proto: proto, LocalAddr: laddr, LocalPort: lport}]; ok {
			return e, true
		}
	}
	if snap.shapes[shapeAnyListener] > 0 {
		if e, ok := m[FlowKey{Proto: proto, LocalPort: lport}]; ok {
			return e, true
		}
	}
	return zero, false
}

// Get returns the endpoint registered under exactly k.
func (t *FlowTable[E]) Get(k FlowKey) (E, bool) {
	var zero E
	snap := t.m.Load()
	if snap == nil {
		return zero, false
	}
	e, ok := snap.m[k]
	return e, ok
}

// Insert registers e under k.
func (t *FlowTable[E]) Insert(k FlowKey, e E) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := &flowSnapshot[E]{m: make(map[FlowKey]E, 1+t.Len())}
	if old := t.m.Load(); old != nil {
		if _, ok := old.m[k]; ok {
			return fmt.Errorf("%w: %v", ErrInUse, k)
		}
		for kk, v := range old.m {
			n.m[kk] = v
		}
		n.shapes = old.shapes
	}
	n.m[k] = e
	n.shapes[shapeOf(k)]++
	t.m.Store(n)
	return nil
}

// Remove unregisters k.
func (t *FlowTable[E]) Remove(k FlowKey) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.m.Load()
	if old == nil {
		return fmt.Errorf("%w: %v", ErrNotFound, k)
	}
	if _, ok := old.m[k]; !ok {
		return fmt.Errorf("%w: %v", ErrNotFound, k)
	}
	n := &flowSnapshot[E]{m: make(map[FlowKey]E, len(old.m)), shapes: old.shapes}
	for kk, v := range old.m {
		if kk != k {
			n.m[kk] = v
		}
	}
	n.shapes[shapeOf(k)]--
	t.m.Store(n)
	return nil
}

// PortInUse reports whether any flow of proto binds lport.
func (t *FlowTable[E]) PortInUse(proto uint8, lport uint16) bool {
	snap := t.m.Load()
	if snap == nil {
		return false
	}
	for k := range snap.m {
		if k.Proto == proto && k.LocalPort == lport {
			return true
		}
	}
	return false
}

// Len returns the number of registered flows.
func (t *FlowTable[E]) Len() int {
	if snap := t.m.Load(); snap != nil {
		return len(snap.m)
	}
	return 0
}
