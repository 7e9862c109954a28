package tcp

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// Listener accepts connections on one port. It satisfies net.Listener.
type Listener struct {
	p       *Protocol
	port    uint16
	addr    netip.AddrPort
	accept  chan *Conn
	pending atomic.Int32 // half-open plus queued, bounded by the backlog
	done    chan struct{}
	once    sync.Once
	dl      atomic.Int64 // accept deadline, unix ns
	kick    chan struct{}
	kmu     sync.Mutex
}

var _ net.Listener = (*Listener)(nil)

// Accept waits for the next established connection.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptTCP() }

// AcceptTCP is Accept returning the concrete type.
func (l *Listener) AcceptTCP() (*Conn, error) {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		var timer <-chan time.Time
		if dl := l.dl.Load(); dl != 0 {
			d := time.Until(time.Unix(0, dl))
			if d <= 0 {
				return nil, l.opError(os.ErrDeadlineExceeded)
			}
			if t == nil {
				t = time.NewTimer(d)
			} else {
				t.Reset(d)
			}
			timer = t.C
		}
		select {
		case c := <-l.accept:
			l.pending.Add(-1)
			c.mu.Lock()
			c.listener = nil
			c.mu.Unlock()
			return c, nil
		case <-l.done:
			return nil, l.opError(ErrClosed)
		case <-timer:
		case <-l.kicker():
		}
	}
}

func (l *Listener) kicker() chan struct{} {
	l.kmu.Lock()
	defer l.kmu.Unlock()
	if l.kick == nil {
		l.kick = make(chan struct{})
	}
	return l.kick
}

// SetDeadline sets the deadline for Accept; the zero time clears it.
func (l *Listener) SetDeadline(t time.Time) error {
	if t.IsZero() {
		l.dl.Store(0)
	} else {
		l.dl.Store(t.UnixNano())
	}
	l.kmu.Lock()
	if l.kick != nil {
		close(l.kick)
		l.kick = nil
	}
	l.kmu.Unlock()
	return nil
}

func (l *Listener) opError(err error) error {
	return &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: err}
}

// Close stops listening; connections not yet accepted are reset.
func (l *Listener) Close() error {
	err := ErrClosed
	l.once.Do(func() {
		err = nil
		l.p.mu.Lock()
		if l.p.listeners[l.port] == l {
			delete(l.p.listeners, l.port)
		}
		l.p.mu.Unlock()
		close(l.done)
		for {
			select {
			case c := <-l.accept:
				c.Abort()
				continue
			default:
			}
			break
		}
	})
	return err
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }

// AddrPort returns the listening address.
func (l *Listener) AddrPort() netip.AddrPort { return l.addr }

// input handles a segment for the LISTEN state (RFC 9293 §3.10.7.2).
func (l *Listener) input(in *inSeg) {
	p := l.p
	switch {
	case in.has(header.TCPFlagRST):
		p.net.Drop(engine.DropTCPBadState)
		return
	case in.has(header.TCPFlagACK):
		p.net.Drop(engine.DropTCPBadState)
		p.resetFor(in)
		return
	case !in.has(header.TCPFlagSYN):
		p.net.Drop(engine.DropTCPBadState)
		return
	}
	select {
	case <-l.done:
		p.net.Drop(engine.DropNoSocket)
		p.resetFor(in)
		return
	default:
	}
	if int(l.pending.Add(1)) > p.cfg.Backlog {
		l.pending.Add(-1)
		p.net.Drop(engine.DropTCPListenOverflow)
		return
	}
	k := fourTuple{in.src, in.dport, in.sport}
	rt, err := p.net.NewRoute(in.src, l.port)
	if err != nil {
		l.pending.Add(-1)
		return
	}
	c := p.newConn(k, rt)
	c.listener = l
	p.mu.Lock()
	if _, ok := p.conns[k]; ok || p.closed {
		p.mu.Unlock()
		l.pending.Add(-1)
		rt.Close()
		return
	}
	p.conns[k] = c
	p.mu.Unlock()
	p.st.PassiveOpens.Add(1)

	c.mu.Lock()
	c.state = stateSynRcvd
	c.iss = rand.Uint32()
	c.sndUna, c.sndNxt, c.sndMax, c.sndEnd = c.iss, c.iss, c.iss, c.iss+1
	c.sndBase = c.iss + 1
	c.acceptSyn(in)
	c.armRTO()
	c.mu.Unlock()
	c.output()
}

// established hands c to Accept. The backlog reserved its slot.
func (l *Listener) established(c *Conn) {
	select {
	case <-l.done:
		c.teardownLocked(ErrConnAborted)
		l.pending.Add(-1)
	case l.accept <- c:
	default: // cannot happen: pending bounds the queue
		c.teardownLocked(ErrConnAborted)
		l.pending.Add(-1)
	}
}
