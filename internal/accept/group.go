package accept

import (
	"fmt"
	"net"
	"sync"
)

// ErrClosed: the Group was closed before the call.
var ErrClosed = fmt.Errorf("accept: group closed: %w", net.ErrClosed)

// Group is the connection bookkeeping of a server with any number of
// listeners: each connection is served on a goroutine of its own, and
// Close ends them all at once (every listener and every connection
// closed, their goroutines waited for). A connection belongs to the Group
// from its Accept until someone calls Release on it, so a server may hand
// one on (iperf3's stream connections go to the test that owns them) and
// Close still finds it. The zero value is ready.
type Group struct {
	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// Serve runs Loop on ln until Close or a fatal Accept error, and serve on
// a goroutine of its own for every connection, with the connection's
// place in ln's accept order (from 0: goroutines may start in another
// order); serve (or whoever it hands the connection to) calls Release
// when done with it. It returns nil after
// Close or when ln was closed, ErrClosed when the Group was closed before
// the call, and Loop's error otherwise. opts.Stopped may add a shutdown
// of the caller's own to the Group's.
func (g *Group) Serve(ln net.Listener, serve func(c net.Conn, n uint64), opts Options) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrClosed
	}
	if g.lns == nil {
		g.lns = make(map[net.Listener]struct{})
	}
	g.lns[ln] = struct{}{}
	g.wg.Add(1)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.lns, ln)
		g.mu.Unlock()
		g.wg.Done()
	}()
	stopped := opts.Stopped
	opts.Stopped = func() bool { return g.Closed() || (stopped != nil && stopped()) }
	var n uint64
	return Loop(ln, func(c net.Conn) {
		if !g.track(c) {
			c.Close() // closing: the next Accept fails and Stopped ends the loop
			return
		}
		go func(k uint64) {
			defer g.wg.Done() // track counted this goroutine
			serve(c, k)
		}(n)
		n++
	}, opts)
}

// Run serves a connection accepted elsewhere in the caller's goroutine,
// tracked as Serve's are (Close closes it and waits for Run to return);
// serve calls Release when done with it. It returns ErrClosed, with c
// closed, when the Group is closed.
func (g *Group) Run(c net.Conn, serve func(net.Conn)) error {
	if !g.track(c) {
		c.Close()
		return ErrClosed
	}
	defer g.wg.Done()
	serve(c)
	return nil
}

// track adds c and one goroutine to the Group, unless it is closed.
func (g *Group) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	if g.conns == nil {
		g.conns = make(map[net.Conn]struct{})
	}
	g.conns[c] = struct{}{}
	g.wg.Add(1)
	return true
}

// Release closes c and forgets it.
func (g *Group) Release(c net.Conn) {
	c.Close()
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// Closed reports whether Close (or Shut) was called.
func (g *Group) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Shut closes every listener and connection of the Group and refuses new
// ones, without waiting; it returns false when the Group was already
// shut. A server with more to stop (a socket of its own) stops it between
// Shut and Wait.
func (g *Group) Shut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.closed = true
	for ln := range g.lns {
		ln.Close()
	}
	for c := range g.conns {
		c.Close()
	}
	return true
}

// Wait waits for every goroutine of Serve and Run to return.
func (g *Group) Wait() { g.wg.Wait() }

// Close is Shut then Wait; it returns ErrClosed when the Group was
// already shut.
func (g *Group) Close() error {
	if !g.Shut() {
		return ErrClosed
	}
	g.Wait()
	return nil
}
