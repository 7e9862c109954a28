package tcp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// Errors of the package. Connection errors wrap the syscall errors Go's
// net package reports for kernel sockets, so errors.Is(err,
// syscall.ECONNRESET) works the same on both stacks.
var (
	ErrClosed         = net.ErrClosed
	ErrConnRefused    = fmt.Errorf("tcp: connection refused: %w", syscall.ECONNREFUSED)
	ErrConnReset      = fmt.Errorf("tcp: connection reset by peer: %w", syscall.ECONNRESET)
	ErrConnAborted    = fmt.Errorf("tcp: connection aborted: %w", syscall.ECONNABORTED)
	ErrTimeout        = fmt.Errorf("tcp: connection timed out: %w", syscall.ETIMEDOUT)
	ErrAddrInUse      = fmt.Errorf("tcp: address in use: %w", syscall.EADDRINUSE)
	ErrAddr           = errors.New("tcp: invalid address")
	ErrNoPorts        = errors.New("tcp: no free ephemeral port")
	ErrWriteAfterShut = fmt.Errorf("tcp: write after CloseWrite: %w", syscall.EPIPE)
)

// Headroom is the room a segment buffer leaves before the TCP header for
// the route's Ethernet and IPv4 headers.
const Headroom = header.EthernetMinimumSize + header.IPv4MinimumSize

// Segment is one outgoing TCP segment or super-frame: Buf[:Headroom] is
// for the route, Buf[Headroom:] the TCP header (checksum field zero) and
// payload. GSOSize > 0 asks the link to cut the payload into segments of
// GSOSize bytes (TCPv4 GSO); the route may then not compute the checksum
// itself.
//
// With a Gatherer network, a data segment may leave its payload where it
// is, in the connection's send ring: Buf then ends after the TCP header,
// Payload holds the payload in one or two pieces, and Buf's capacity has
// room for the payload after the header, so a route that cannot gather
// this frame appends the pieces to Buf and sends it whole. The route
// computes no checksum over Payload itself (the link finishes it).
type Segment struct {
	Buf     []byte
	GSOSize int
	HdrLen  int // TCP header length, options included
	Payload [2][]byte
}

// Gatherer is implemented by a Network whose routes send a segment's
// headers and payload as pieces gathered by the link (Segment.Payload),
// with the checksum offloaded: a super-frame is then never assembled in
// user memory, and the copy into the link is the only one.
type Gatherer interface {
	Gather() bool
}

// Route sends the segments of one connection. The route belongs to one
// connection, and Output is never called concurrently on one route, so it
// may keep scratch state. Output must not retain the buffers.
type Route interface {
	Output(segs []Segment) error
	Close()
}

// Network is what the protocol needs from the layer below.
type Network interface {
	// LocalAddr is the stack's IPv4 address.
	LocalAddr() [4]byte
	// MTU is the largest IP packet one non-GSO frame carries.
	MTU() int
	// GSO reports whether routes take TCPv4 super-frames of up to 64 KiB.
	GSO() bool
	// NewRoute returns a route to remote for segments from localPort.
	NewRoute(remote [4]byte, localPort uint16) (Route, error)
	// Drop counts one received segment dropped for r.
	Drop(r engine.DropReason)
}

// Driver is implemented by a Network whose link a reader with nothing to
// read may drive on its own goroutine before it sleeps (run to
// completion): Drive processes what arrives until ready reports true,
// budget (negative: the network's own) or the deadline (unix nanoseconds,
// 0 for none) passes. It returns at once when the network does not poll
// or the budget is zero.
type Driver interface {
	Drive(ready func() bool, deadline int64, budget time.Duration)
}

// Lender is implemented by a Network whose received segments may lie in
// buffers of the link it can lend (Input's loan, not zero): the payload of
// an in-order super-frame then stays where the kernel wrote it, queued for
// the reader, instead of being copied into the receive ring. Hold takes n
// holds on the buffer of loan (false: none to spare now, the payload is
// copied); Release gives n back and is safe for concurrent use.
type Lender interface {
	Hold(loan uint32, n int) bool
	Release(loan uint32, n int)
}

// Config holds the protocol's tunables; zero fields take the defaults.
type Config struct {
	// MaxBuffer is the largest send and receive buffer of a connection
	// (rounded up to a power of two). Buffers start small and grow on
	// demand. Default 4 MiB: enough for 10+ Gbit/s at veth round trips.
	MaxBuffer int
	// InitialBuffer is the size buffers start at. Default 128 KiB.
	InitialBuffer int
	// Backlog bounds a listener's half-open plus not-yet-accepted
	// connections; SYNs beyond it are dropped and counted. Default 1024.
	Backlog int
	// TimeWait is how long a connection stays in TIME_WAIT. RFC 9293 asks
	// for 2*MSL (4 minutes); a testbed's namespaces do not hold
	// old duplicates that long, so the default is 1 s.
	TimeWait time.Duration
	// MinRTO is the retransmission timeout floor: default 200 ms like
	// Linux, not RFC 6298's 1 s.
	MinRTO time.Duration
	// MaxRetries is how many times a segment is retransmitted on timeout
	// before the connection gives up (default 15; SYNs: 6).
	MaxRetries int
	// DelayedACK is the delayed-ACK timeout (default 40 ms).
	DelayedACK time.Duration
	// FinWait2Timeout bounds FIN_WAIT_2 of a connection the application
	// has closed (default 60 s, like Linux's tcp_fin_timeout).
	FinWait2Timeout time.Duration
	// KeepAliveIdle/Interval/Count are the keepalive defaults (15 s, 15 s, 9).
	KeepAliveIdle, KeepAliveInterval time.Duration
	KeepAliveCount                   int
	// NoSACK and NoTimestamps stop the stack from negotiating SACK
	// (recovery falls back to NewReno) or timestamps: for tests and for
	// comparisons.
	NoSACK, NoTimestamps bool
}

// Defaults for Config.
const (
	DefaultMaxBuffer       = 4 << 20
	DefaultInitialBuffer   = 128 << 10
	DefaultBacklog         = 1024
	DefaultTimeWait        = time.Second
	DefaultMinRTO          = 200 * time.Millisecond
	DefaultMaxRetries      = 15
	DefaultSynRetries      = 6
	DefaultDelayedACK      = 40 * time.Millisecond
	DefaultFinWait2Timeout = 60 * time.Second
	DefaultKeepAliveIdle   = 15 * time.Second
	DefaultKeepAliveCount  = 9
	initialRTO             = time.Second
	maxRTO                 = 120 * time.Second
	maxPersist             = 60 * time.Second // the persist timer backs off to a lower ceiling
	ephemeralFirst         = 49152
	ephemeralCount         = 65536 - ephemeralFirst
)

func (c *Config) setDefaults() {
	if c.MaxBuffer <= 0 {
		c.MaxBuffer = DefaultMaxBuffer
	}
	c.MaxBuffer = pow2(max(c.MaxBuffer, 4096))
	if c.MaxBuffer > 1<<30 {
		c.MaxBuffer = 1 << 30
	}
	if c.InitialBuffer <= 0 {
		c.InitialBuffer = DefaultInitialBuffer
	}
	c.InitialBuffer = min(pow2(max(c.InitialBuffer, 4096)), c.MaxBuffer)
	if c.Backlog <= 0 {
		c.Backlog = DefaultBacklog
	}
	if c.TimeWait <= 0 {
		c.TimeWait = DefaultTimeWait
	}
	if c.MinRTO <= 0 {
		c.MinRTO = DefaultMinRTO
	}
	if c.MaxRetries <= 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.DelayedACK <= 0 {
		c.DelayedACK = DefaultDelayedACK
	}
	if c.FinWait2Timeout <= 0 {
		c.FinWait2Timeout = DefaultFinWait2Timeout
	}
	if c.KeepAliveIdle <= 0 {
		c.KeepAliveIdle = DefaultKeepAliveIdle
	}
	if c.KeepAliveInterval <= 0 {
		c.KeepAliveInterval = DefaultKeepAliveIdle
	}
	if c.KeepAliveCount <= 0 {
		c.KeepAliveCount = DefaultKeepAliveCount
	}
}

func pow2(n int) int {
	p := 1
	for p < n {
		p <<= 1
	}
	return p
}

// fourTuple keys an established (or half-open) connection.
type fourTuple struct {
	raddr        [4]byte
	lport, rport uint16
}

// Protocol is the TCP instance of one stack: its connections, listeners
// and ephemeral ports. Its methods are safe for concurrent use; Deliver,
// Input and Flush belong to the stack's holder of the link's receive turn.
type Protocol struct {
	net    Network
	drv    Driver // net, when it is one
	lender Lender // net, when it is one
	gather bool   // net gathers Segment.Payload
	cfg    Config
	laddr  [4]byte
	wsh    uint8 // our window shift, from MaxBuffer
	epoch  time.Time

	mu        sync.RWMutex
	conns     map[fourTuple]*Conn
	listeners map[uint16]*Listener
	closed    bool
	nextPort  atomic.Uint32

	ctlMu  sync.Mutex // guards ctl and ctlBuf: RSTs for segments without a connection
	ctlBuf []byte

	// flushing is the connections whose output (ACKs, window updates,
	// data the ACKs let go) waits for the end of the receive batch:
	// Flush sends it, once per connection and batch. Used only by the
	// caller of Input and Flush (the holder of the link's receive turn).
	flushing []*Conn

	st Stats
}

// Stats are the protocol's counters.
type Stats struct {
	ActiveOpens, PassiveOpens, EstabResets, AttemptFails atomic.Uint64
	SegsIn, SegsOut, RetransSegs, RstOut, RstIn          atomic.Uint64
	FastRetransmits, Timeouts, DupAcks, OutOfOrder       atomic.Uint64
	GSOOut, GSOIn, ChallengeACKs, ZeroWindowProbes       atomic.Uint64
	TailLossProbes                                       atomic.Uint64
}

// New returns the TCP instance for net.
func New(n Network, cfg Config) *Protocol {
	cfg.setDefaults()
	p := &Protocol{
		net:       n,
		cfg:       cfg,
		laddr:     n.LocalAddr(),
		epoch:     time.Now(),
		conns:     make(map[fourTuple]*Conn),
		listeners: make(map[uint16]*Listener),
		ctlBuf:    make([]byte, Headroom+header.TCPMaximumSize),
	}
	p.drv, _ = n.(Driver)
	p.lender, _ = n.(Lender)
	if g, ok := n.(Gatherer); ok {
		p.gather = g.Gather()
	}
	for p.wsh = 0; p.wsh < header.TCPMaxWindowScale && cfg.MaxBuffer>>p.wsh > 0xffff; p.wsh++ {
	}
	p.nextPort.Store(rand.Uint32N(ephemeralCount))
	return p
}

// Stats returns the protocol's counters.
func (p *Protocol) Stats() *Stats { return &p.st }

// Config returns the configuration in force (defaults filled in).
func (p *Protocol) Config() Config { return p.cfg }

// NumConns returns how many connections (any state but LISTEN) exist.
func (p *Protocol) NumConns() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.conns)
}

// tsNow is our timestamp clock: milliseconds since the protocol started.
func (p *Protocol) tsNow() uint32 { return p.tsAt(p.now()) }

// now is the time from the monotonic clock alone (one vDSO call where
// time.Now makes two): epoch plus the monotonic time elapsed since. Its
// wall reading does not follow clock steps, which the protocol never
// reads: it only compares its times with each other and with time.Now
// (time.Until, time.Since), which use the monotonic readings.
func (p *Protocol) now() time.Time { return p.epoch.Add(time.Since(p.epoch)) }

// tsAt is our timestamp clock at t.
func (p *Protocol) tsAt(t time.Time) uint32 { return uint32(t.Sub(p.epoch) / time.Millisecond) }

// Listen opens a listener on laddr (our address or the unspecified
// address; port 0 picks an ephemeral port).
func (p *Protocol) Listen(laddr netip.AddrPort) (*Listener, error) {
	if a := laddr.Addr(); a.IsValid() && !a.IsUnspecified() && (!a.Is4() || a.As4() != p.laddr) {
		return nil, fmt.Errorf("%w: local %v is not ours", ErrAddr, a)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	port := laddr.Port()
	if port == 0 {
		var err error
		if port, err = p.ephemeralLocked(netip.AddrPort{}); err != nil {
			return nil, err
		}
	}
	if _, ok := p.listeners[port]; ok {
		return nil, fmt.Errorf("%w: port %d", ErrAddrInUse, port)
	}
	l := &Listener{p: p, port: port, accept: make(chan *Conn, p.cfg.Backlog), done: make(chan struct{})}
	l.addr = netip.AddrPortFrom(netip.AddrFrom4(p.laddr), port)
	p.listeners[port] = l
	return l, nil
}

// ephemeralLocked picks a free port; with a valid raddr, a port free for
// that peer is enough. Holds p.mu.
func (p *Protocol) ephemeralLocked(raddr netip.AddrPort) (uint16, error) {
	for range ephemeralCount {
		port := uint16(ephemeralFirst + p.nextPort.Add(1)%ephemeralCount)
		if _, ok := p.listeners[port]; ok {
			continue
		}
		if raddr.IsValid() {
			if _, ok := p.conns[fourTuple{raddr.Addr().As4(), port, raddr.Port()}]; !ok {
				return port, nil
			}
			continue
		}
		inUse := false
		for k := range p.conns {
			if k.lport == port {
				inUse = true
				break
			}
		}
		if !inUse {
			return port, nil
		}
	}
	return 0, ErrNoPorts
}

// Dial opens a connection from laddr (zero value: our address and an
// ephemeral port) to raddr and waits for the handshake, ctx's end, or a
// failure.
func (p *Protocol) Dial(ctx context.Context, laddr, raddr netip.AddrPort) (*Conn, error) {
	if !raddr.Addr().Is4() || raddr.Port() == 0 || raddr.Addr().IsUnspecified() {
		return nil, fmt.Errorf("%w: remote %v", ErrAddr, raddr)
	}
	if a := laddr.Addr(); a.IsValid() && !a.IsUnspecified() && (!a.Is4() || a.As4() != p.laddr) {
		return nil, fmt.Errorf("%w: local %v is not ours", ErrAddr, a)
	}
	r4 := raddr.Addr().As4()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	port := laddr.Port()
	if port == 0 {
		var err error
		if port, err = p.ephemeralLocked(raddr); err != nil {
			p.mu.Unlock()
			return nil, err
		}
	}
	k := fourTuple{r4, port, raddr.Port()}
	if _, ok := p.conns[k]; ok {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: %v -> %v", ErrAddrInUse, port, raddr)
	}
	rt, err := p.net.NewRoute(r4, port)
	if err != nil {
		p.mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	c := p.newConn(k, rt)
	p.conns[k] = c
	p.mu.Unlock()
	p.st.ActiveOpens.Add(1)

	c.mu.Lock()
	c.state = stateSynSent
	c.rcvCap = p.cfg.InitialBuffer // the SYN offers a real window
	c.iss = rand.Uint32()
	c.sndUna, c.sndNxt, c.sndMax, c.sndEnd = c.iss, c.iss, c.iss, c.iss+1
	c.sndBase = c.iss + 1
	c.armRTO()
	c.mu.Unlock()
	c.output()

	select {
	case <-c.estab:
	case <-ctx.Done():
		c.Abort()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: ctx.Err()}
	}
	c.mu.Lock()
	err = c.err
	st := c.state
	c.mu.Unlock()
	if st == stateClosed && err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(raddr), Err: err}
	}
	return c, nil
}

// Close resets every connection and closes every listener.
func (p *Protocol) Close() {
	p.mu.Lock()
	p.closed = true
	ls := make([]*Listener, 0, len(p.listeners))
	for _, l := range p.listeners {
		ls = append(ls, l)
	}
	cs := make([]*Conn, 0, len(p.conns))
	for _, c := range p.conns {
		cs = append(cs, c)
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
	for _, c := range cs {
		c.mu.Lock()
		c.abortLocked(ErrConnAborted) // the peers hear of it by RST
		c.mu.Unlock()
	}
}

func (p *Protocol) remove(c *Conn) {
	p.mu.Lock()
	if p.conns[c.key] == c {
		delete(p.conns, c.key)
	}
	p.mu.Unlock()
}

// Deliver processes one received segment seg (TCP header and payload,
// checksum already verified) from src to dst and sends what it calls for
// at once. gsoSize is the segment size of a received super-frame, 0
// otherwise. It does not retain seg.
func (p *Protocol) Deliver(src, dst [4]byte, seg []byte, gsoSize int) {
	p.Input(src, dst, seg, gsoSize, 0)
	p.Flush()
}

// lendMin is the smallest in-order payload kept in a lent link buffer
// rather than copied into the ring: a super-frame's worth. A segment of
// one MSS would pin a 64 KiB buffer for 1.4 KiB and run the link's pool
// of loans dry.
const lendMin = 8 << 10

// Input is Deliver for a receive batch: what the segment calls for (an
// ACK, data the ACK lets go) is sent by the Flush that ends the batch,
// once per connection however many of its segments the batch held. A
// bulk receiver then acknowledges once per batch, and the ACK leaves
// before the batch's data is read. A non-zero loan says seg lies in a
// buffer the network lends (see Lender): in-order payload of lendMin
// bytes or more may stay there until the reader consumes it. Input and
// Flush belong to one goroutine at a time (the stack's holder of the
// link's receive turn).
func (p *Protocol) Input(src, dst [4]byte, seg []byte, gsoSize int, loan uint32) {
	t := header.TCP(seg)
	if !t.IsValid() {
		p.net.Drop(engine.DropTCPTruncated)
		return
	}
	var in inSeg
	if err := header.ParseTCPOptions(t.Options(), &in.opts); err != nil {
		p.net.Drop(engine.DropTCPBadOptions)
		return
	}
	in.seq, in.ack, in.flags, in.wnd = t.Seq(), t.Ack(), t.Flags(), t.Window()
	in.payload = t.Payload()
	in.sport, in.dport = t.SrcPort(), t.DstPort()
	in.src = src
	if p.lender != nil {
		in.loan = loan
	}
	p.st.SegsIn.Add(1)
	if gsoSize > 0 {
		p.st.GSOIn.Add(1)
	}
	p.mu.RLock()
	c := p.conns[fourTuple{src, in.dport, in.sport}]
	var l *Listener
	if c == nil {
		l = p.listeners[in.dport]
	}
	p.mu.RUnlock()
	switch {
	case c != nil:
		if c.input(&in) && !c.flushing {
			c.flushing = true
			p.flushing = append(p.flushing, c)
		}
	case l != nil && dst == p.laddr:
		l.input(&in)
	default:
		p.net.Drop(engine.DropNoSocket)
		if dst == p.laddr {
			p.resetFor(&in)
		}
	}
}

// Flush ends a receive batch: every connection Input gave a segment to
// sends what it owes.
func (p *Protocol) Flush() {
	for i, c := range p.flushing {
		c.flushing = false
		c.output()
		p.flushing[i] = nil
	}
	p.flushing = p.flushing[:0]
}

// resetFor answers a segment that found no connection (RFC 9293 §3.10.7.1).
func (p *Protocol) resetFor(in *inSeg) {
	if in.flags&header.TCPFlagRST != 0 {
		return
	}
	f := header.TCPFields{SrcPort: in.dport, DstPort: in.sport, Flags: header.TCPFlagRST}
	if in.flags&header.TCPFlagACK != 0 {
		f.Seq = in.ack
	} else {
		f.Ack = in.seq + in.segLen()
		f.Flags |= header.TCPFlagACK
	}
	p.sendCtl(in.src, &f)
}

// sendCtl sends a header-only segment that belongs to no connection.
func (p *Protocol) sendCtl(dst [4]byte, f *header.TCPFields) {
	rt, err := p.net.NewRoute(dst, f.SrcPort)
	if err != nil {
		return
	}
	defer rt.Close()
	p.ctlMu.Lock()
	defer p.ctlMu.Unlock()
	hl := header.TCP(p.ctlBuf[Headroom:]).Encode(f)
	seg := [1]Segment{{Buf: p.ctlBuf[:Headroom+hl], HdrLen: hl}}
	if rt.Output(seg[:]) == nil {
		p.st.SegsOut.Add(1)
		if f.Flags&header.TCPFlagRST != 0 {
			p.st.RstOut.Add(1)
		}
	}
}

// inSeg is a received segment, parsed.
type inSeg struct {
	src          [4]byte
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	wnd          uint16
	opts         header.TCPOptions
	payload      []byte
	loan         uint32 // payload lies in this buffer of p.lender (0: none)
}

// segLen is the sequence space the segment occupies.
func (s *inSeg) segLen() uint32 {
	n := uint32(len(s.payload))
	if s.flags&header.TCPFlagSYN != 0 {
		n++
	}
	if s.flags&header.TCPFlagFIN != 0 {
		n++
	}
	return n
}

func (s *inSeg) has(f uint8) bool { return s.flags&f != 0 }

// Sequence number arithmetic modulo 2^32 (RFC 1982 style).
func seqLT(a, b uint32) bool  { return int32(a-b) < 0 }
func seqLEQ(a, b uint32) bool { return int32(a-b) <= 0 }
func seqGT(a, b uint32) bool  { return int32(a-b) > 0 }
func seqGEQ(a, b uint32) bool { return int32(a-b) >= 0 }
