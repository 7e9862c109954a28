package tcp

import (
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/stack/rtt"
)

// tcpState is a connection state of RFC 9293 §3.3.2.
type tcpState uint8

const (
	stateClosed tcpState = iota
	stateSynSent
	stateSynRcvd
	stateEstablished
	stateFinWait1
	stateFinWait2
	stateCloseWait
	stateClosing
	stateLastAck
	stateTimeWait
)

var stateNames = [...]string{"CLOSED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
	"FIN-WAIT-2", "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"}

func (s tcpState) String() string { return stateNames[s] }

// synchronized reports whether the state is past the handshake.
func (s tcpState) synchronized() bool { return s >= stateEstablished }

// timer kinds of the connection's main timer.
const (
	timerNone uint8 = iota
	timerRTO
	timerPersist
	timerTimeWait
	timerFinWait2
	timerKeepAlive
	timerTLP
)

// seqRange is the out-of-order data held in the receive ring: [start, end).
type seqRange struct{ start, end uint32 }

const maxOOORanges = 32

// txBatch is how many segments one Route.Output call carries: super-frames
// are 64 KiB each, so a few do; without GSO a batch of MTU frames.
const (
	txBatchGSO   = 4
	txBatchNoGSO = 32
)

// Conn is a TCP connection. It satisfies net.Conn; Read and Write may be
// called concurrently with each other and with Close.
type Conn struct {
	p            *Protocol
	key          fourTuple
	rt           Route
	laddr, raddr netip.AddrPort

	mu       sync.Mutex // guards everything below up to the tx side
	state    tcpState
	err      error // why the connection ended, if abnormally
	listener *Listener
	queued   bool // handed to the listener's accept queue
	estab    chan struct{}
	estabSig bool

	// Send sequence space. Data byte seq s lives at sndBuf[(s-sndBase)&mask].
	iss, sndUna, sndNxt, sndMax uint32
	sndEnd                      uint32 // seq after the last byte written
	sndWnd, maxSndWnd           uint32
	sndWl1, sndWl2              uint32
	sndBuf                      []byte
	finQueued                   bool
	appClosed                   bool // Close was called: nobody reads any more
	mssBase                     int  // min(peer MSS, our MTU-40): header options come out of it
	sndWS, rcvWS                uint8
	wsOK, tsOK, sackOK          bool
	tsRecent, lastAckSent       uint32
	nodelay                     bool

	// Congestion control (NewReno, RFC 5681/6582) and RTO (RFC 6298).
	cwnd, ssthresh uint32
	cc             cubic
	dupAcks        int
	inRecovery     bool
	recover        uint32
	rexmitOne      bool
	sacked         []seqRange    // SACK scoreboard: ranges above sndUna the peer holds
	rexmitHigh     uint32        // SACK recovery: holes below this were retransmitted
	headRexmitAt   time.Time     // when the hole at sndUna was (last) retransmitted
	rexmitTail     bool          // send the tail loss probe with the next output
	tlpSent        bool          // a probe is out since sndUna last moved
	rtt            rtt.Estimator // RFC 6298 SRTT, RTTVAR, RTO
	rttTiming      bool
	rttSeq         uint32
	rttTime        time.Time
	retries        int

	// The timers are lazy: timerKind and timerDue say what is due when,
	// timerAt when the runtime timer fires (zero: it does not). A timer
	// that may fire too early is left running, and its firing arms it
	// again for what is due then (or for nothing): a request/response
	// connection arms and disarms the retransmission and delayed-ACK
	// timers on every message, and a runtime timer operation each time
	// was a tenth of its CPU.
	timer     *time.Timer
	timerKind uint8
	timerDue  time.Time
	timerAt   time.Time
	dack      *time.Timer
	dackArmed bool
	dackDue   time.Time
	dackAt    time.Time // when dack fires (zero: it does not)
	probe     bool      // send a window (or keepalive) probe with the next output
	sendRST   bool

	// clk is the clock read of the locked operation under way while clkOn
	// (a received segment's input, a batch's fill), read once on first
	// use (nowLocked): every timestamp, RTT sample and timer of the
	// operation shares it. An exchange read the clock eight times at both
	// ends, each a time.Now (wall and monotonic clocks, two vDSO calls):
	// a third of BenchmarkRRPair's CPU in this VM.
	clk   time.Time
	clkOn bool

	// Keepalive.
	kaOn     bool
	kaIdle   time.Duration
	kaProbes int
	lastRecv time.Time

	// Receive sequence space. Byte seq s lives at rcvBuf[(s-rcvBase)&mask].
	irs, rcvNxt, rcvRead uint32
	// rcvBase and sndBase are the sequence numbers at each ring's start:
	// the first data byte's, moved up to the next byte whenever a ring
	// holds nothing (rebaseRecvLocked, rebaseSendLocked), so that
	// request/response traffic keeps writing and reading the same warm
	// first lines of each ring instead of walking all of it (a cold line
	// or two per message each way: the UDP socket rings restart so too).
	rcvBase, sndBase uint32
	rcvBuf           []byte // allocated at the first data copied; rcvCap long
	rcvCap           int
	lent             lentQueue // in-order data left in the network's buffers
	viewsOut         bool      // a reader's fn holds views of the receive buffer
	ooo              []seqRange
	// dsack is a duplicate just received, reported once as the first
	// SACK block of the next segment (D-SACK, RFC 2883): a sender that
	// retransmitted for nothing (reordering on the path) learns so and
	// widens its reordering window instead of retransmitting again.
	dsack        seqRange
	dsackPending bool
	finRcvd      bool
	oooFin       bool
	oooFinSeq    uint32
	rcvAdv       uint32 // right edge of the window last advertised
	ackNow       bool
	unacked      int // bytes received and not yet acknowledged
	rdLowat      int // a waiting ReadFunc wants this much readable before it is woken
	// rdSleep and wrSleep: a reader (writer) is, or is about to be,
	// asleep on rdWake (wrWake) for data (room). Data and ACKs wake only
	// a sleeper: a reader that polls the network itself, or a writer
	// that never waits, is not sent a wake-up per segment (a channel
	// operation each, and a stale token its next wait wakes to).
	rdSleep, wrSleep bool
	rcvSinceGrow     int // bytes received since the ring last grew
	maxSnd, maxRcv   int // ring size limits (SetWriteBuffer, SetReadBuffer)
	lingerZero       bool
	retrans          uint64
	bytesAcked       uint64
	bytesReceived    uint64

	// flushing: queued on Protocol.flushing (its receive turn's holder only).
	flushing bool

	// Transmit side: one goroutine at a time builds and sends.
	txMu      sync.Mutex
	txPending atomic.Bool
	txSegs    []Segment
	txBufs    [][]byte

	rdMu, wrMu       sync.Mutex // serialise readers, and writers
	rdWake, wrWake   chan struct{}
	rdDL, wrDL       atomic.Int64
	rdTimer, wrTimer *time.Timer
	rdReady          func() bool // c.readReady as a func value, made once
	// rdNews is set, after c.mu's holder changed it, when something a
	// polling reader waits for may have happened (in-order data, the
	// peer's FIN, an error, Close); the reader clears it before it looks.
	// readReady is called between two polls of the link: without news it
	// answers with one load instead of taking c.mu.
	rdNews atomic.Bool
	// pollBudget is SetPollBudget's; negative: the network's own.
	pollBudget atomic.Int64
}

var _ net.Conn = (*Conn)(nil)

func (p *Protocol) newConn(k fourTuple, rt Route) *Conn {
	c := &Conn{
		p:       p,
		key:     k,
		rt:      rt,
		laddr:   netip.AddrPortFrom(netip.AddrFrom4(p.laddr), k.lport),
		raddr:   netip.AddrPortFrom(netip.AddrFrom4(k.raddr), k.rport),
		estab:   make(chan struct{}),
		rdWake:  make(chan struct{}, 1),
		wrWake:  make(chan struct{}, 1),
		nodelay: true,
		rtt: rtt.New(rtt.Config{Initial: initialRTO, Min: p.cfg.MinRTO, Max: maxRTO,
			Granularity: time.Millisecond}),
		kaIdle: p.cfg.KeepAliveIdle,
		maxSnd: p.cfg.MaxBuffer,
		maxRcv: p.cfg.MaxBuffer,
	}
	c.rdReady = c.readReady
	c.pollBudget.Store(-1)
	c.mssBase = p.net.MTU() - 40
	batch := txBatchNoGSO
	if p.net.GSO() {
		batch = txBatchGSO
	}
	c.txSegs = make([]Segment, batch)
	c.txBufs = make([][]byte, batch)
	c.timer = time.AfterFunc(time.Hour, c.onTimer)
	c.timer.Stop()
	return c
}

// nowLocked is the clock for the operation under way (see clk), or a
// fresh read outside one.
func (c *Conn) nowLocked() time.Time {
	if !c.clkOn {
		return c.p.now()
	}
	if c.clk.IsZero() {
		c.clk = c.p.now()
	}
	return c.clk
}

// beginClockLocked and endClockLocked bracket an operation whose clock
// reads share one (see clk); t, if not zero, is a read already made.
func (c *Conn) beginClockLocked(t time.Time) { c.clkOn, c.clk = true, t }
func (c *Conn) endClockLocked()              { c.clkOn, c.clk = false, time.Time{} }

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// LocalAddr returns the local address.
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.laddr) }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.raddr) }

// LocalAddrPort returns the local address.
func (c *Conn) LocalAddrPort() netip.AddrPort { return c.laddr }

// RemoteAddrPort returns the peer's address.
func (c *Conn) RemoteAddrPort() netip.AddrPort { return c.raddr }

// State returns the RFC 9293 name of the connection's state.
func (c *Conn) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.String()
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// SetNoDelay turns Nagle's algorithm off (true, the default, as in Go's
// net package) or on.
func (c *Conn) SetNoDelay(noDelay bool) error {
	c.mu.Lock()
	c.nodelay = noDelay
	c.mu.Unlock()
	if noDelay {
		c.output()
	}
	return nil
}

// SetReadBuffer limits how far the receive ring (and so the window) may
// grow: to about bytes (a power of two, at least 4 KiB, at most
// Config.MaxBuffer). The ring never shrinks below what it already
// advertised.
func (c *Conn) SetReadBuffer(bytes int) error {
	c.mu.Lock()
	c.maxRcv = min(pow2(max(bytes, 4096)), c.p.cfg.MaxBuffer)
	c.mu.Unlock()
	return nil
}

// SetWriteBuffer limits how far the send ring may grow: to about bytes
// (a power of two, at least 4 KiB, at most Config.MaxBuffer).
func (c *Conn) SetWriteBuffer(bytes int) error {
	c.mu.Lock()
	c.maxSnd = min(pow2(max(bytes, 4096)), c.p.cfg.MaxBuffer)
	c.mu.Unlock()
	return nil
}

// SetLinger with sec == 0 makes Close reset the connection (abortive
// close) instead of finishing it with a FIN; any other value restores the
// default, a background orderly close (a positive linger time is not
// waited for).
func (c *Conn) SetLinger(sec int) error {
	c.mu.Lock()
	c.lingerZero = sec == 0
	c.mu.Unlock()
	return nil
}

// SetKeepAlive turns keepalive probes on or off (off by default).
func (c *Conn) SetKeepAlive(on bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.kaOn = on
	c.kaProbes = 0
	c.lastRecv = time.Now()
	if on && c.timerKind == timerNone && c.state == stateEstablished {
		c.setTimer(timerKeepAlive, c.kaIdle)
	}
	return nil
}

// SetKeepAlivePeriod sets the idle time before the first probe (and the
// interval between probes).
func (c *Conn) SetKeepAlivePeriod(d time.Duration) error {
	if d <= 0 {
		d = c.p.cfg.KeepAliveIdle
	}
	c.mu.Lock()
	c.kaIdle = d
	c.mu.Unlock()
	return nil
}

// SetDeadline sets both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes pending and future reads fail with an error
// wrapping os.ErrDeadlineExceeded once t has passed; zero clears it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.rdDL.Store(unixNano(t))
	wake(c.rdWake)
	return nil
}

// SetWriteDeadline is SetReadDeadline for writes.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.wrDL.Store(unixNano(t))
	wake(c.wrWake)
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// wait blocks until ch is signalled or the deadline passes.
func wait(ch chan struct{}, dl *atomic.Int64, tm **time.Timer) error {
	d := dl.Load()
	if d == 0 {
		<-ch
		return nil
	}
	left := time.Duration(d - time.Now().UnixNano())
	if left <= 0 {
		return os.ErrDeadlineExceeded
	}
	if *tm == nil {
		*tm = time.NewTimer(left)
	} else {
		(*tm).Reset(left)
	}
	select {
	case <-ch:
	case <-(*tm).C:
	}
	(*tm).Stop()
	return nil
}

func deadlinePassed(dl *atomic.Int64) bool {
	d := dl.Load()
	return d != 0 && time.Now().UnixNano() >= d
}

// readableLocked is the in-order data waiting for the reader.
func (c *Conn) readableLocked() int {
	n := int(c.rcvNxt - c.rcvRead)
	if c.finRcvd {
		n--
	}
	return n
}

// readReady reports whether Read need not wait: data, the peer's FIN, an
// error or a closed connection.
func (c *Conn) readReady() bool {
	if !c.rdNews.Load() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.readableLocked()
	return n > 0 && n >= c.rdLowat || c.finRcvd || c.err != nil || c.appClosed || c.state == stateClosed
}

// readEndLocked is what a reader with nothing to read gets when no more
// will come: io.EOF after the peer's FIN or once closed, or the
// connection's error; nil while data may still arrive. c.mu is held.
func (c *Conn) readEndLocked() error {
	switch {
	case c.finRcvd, c.state == stateClosed && c.err == nil:
		return io.EOF
	case c.err != nil:
		return c.opError("read", c.err)
	}
	return nil
}

// drive lets a reader with nothing to read drive the network itself for
// the connection's poll budget (run to completion); c.p.drv is set.
func (c *Conn) drive() {
	c.p.drv.Drive(c.rdReady, c.rdDL.Load(), time.Duration(c.pollBudget.Load()))
}

// SetPollBudget sets how long a reader of this connection that finds
// nothing to read drives the network itself before it sleeps (run to
// completion, as SO_BUSY_POLL; 0 turns it off), when the network is a
// Driver that can poll. Without it the network's own budget applies. A
// server whose clients wait on each reply (NBD at queue depth 1) buys its
// latency with CPU time on this connection alone.
func (c *Conn) SetPollBudget(d time.Duration) { c.pollBudget.Store(int64(max(d, 0))) }

// Read reads data in order; io.EOF after the peer's FIN. With nothing to
// read it first drives the network itself when that is a Driver.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return c.read(len(b), false, func(x, y []byte) int {
		n := copy(b, x)
		return n + copy(b[n:], y)
	})
}

// ReadFunc is Read without the copy out: it waits as Read does until data
// is readable, then lends fn views of up to max bytes of it in place in the
// receive ring, a and then b (b is empty unless the data wraps around the
// ring's end). fn returns how many of those bytes it used, from the start;
// they are consumed as by Read and the window opens. ReadFunc returns
// that count, or 0 and Read's error (io.EOF after the peer's FIN).
//
// The views are valid only while fn runs. fn runs without the
// connection's lock, so the receive path goes on filling the ring around
// them (the bytes lent are not overwritten before they are consumed), and
// it must not call the Conn's read methods. A payload that goes straight
// from the ring into a file (an NBD WRITE) is copied once instead of
// twice.
func (c *Conn) ReadFunc(max int, fn func(a, b []byte) int) (int, error) {
	if max <= 0 {
		return 0, nil
	}
	return c.read(max, true, fn)
}

// read is Read and ReadFunc: it waits until data is readable (with bulk,
// a low-water mark's worth), then lends fn views of up to max bytes and
// consumes what fn used.
func (c *Conn) read(max int, bulk bool, fn func(a, b []byte) int) (int, error) {
	c.rdMu.Lock()
	defer c.rdMu.Unlock()
	drove := false
	for {
		if deadlinePassed(&c.rdDL) {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		c.rdNews.Store(false) // what came before is seen below, under c.mu
		c.mu.Lock()
		if c.appClosed {
			c.mu.Unlock()
			return 0, c.opError("read", ErrClosed)
		}
		// Lend at least a low-water mark's worth (an eighth of the ring)
		// unless less is asked for or no more will come: a bulk reader
		// wakes, and writes, once per many segments instead of once per
		// super-frame. The window stays open meanwhile: the mark is well
		// below the free ring.
		lowat := 1
		if bulk {
			lowat = min(max, c.rcvCap/8)
		}
		avail := c.readableLocked()
		if avail > 0 && (avail >= lowat || c.finRcvd || c.err != nil || c.state == stateClosed) {
			c.rdLowat = 0
			a, b := c.rcvViewsLocked(min(max, avail))
			c.viewsOut = true
			c.mu.Unlock()
			n := fn(a, b)
			if n < 0 || n > len(a)+len(b) {
				panic("tcp: ReadFunc's fn used more than it was lent")
			}
			c.mu.Lock()
			c.viewsOut = false
			if c.appClosed {
				c.releaseLentLocked() // Close left them to us
			}
			if n == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			c.rcvRead += uint32(n)
			c.consumedLocked()
			update := c.windowUpdateLocked()
			c.mu.Unlock()
			if update {
				c.output()
			}
			return n, nil
		}
		if err := c.readEndLocked(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
		c.rdLowat = lowat // the receive path wakes us only past it
		drive := !drove && c.p.drv != nil && lowat <= 1
		c.rdSleep = !drive
		c.mu.Unlock()
		// Only a reader waiting for the next byte drives the network: one
		// waiting for a low-water mark's worth waits for many segments,
		// whose latency polling does not buy, and it would take them off
		// the link itself (in buffers the link does not lend, so copied,
		// and spinning between them) while the receive goroutine, woken
		// by the netpoller, takes them in lent buffers and acknowledges
		// them as promptly. Under fio's 1 MiB NBD WRITEs this was a quarter
		// less CPU per byte in disk0 (1.10 against 1.48 s per GiB).
		if drive {
			// rdLowat (at most 1 here) stays: the next look resets it or
			// sets it again, and readReady asks for one byte either way.
			drove = true
			c.drive()
			continue
		}
		err := wait(c.rdWake, &c.rdDL, &c.rdTimer)
		c.mu.Lock()
		c.rdSleep = false
		if err != nil {
			c.rdLowat = 0
			c.mu.Unlock()
			return 0, c.opError("read", err)
		}
		c.mu.Unlock()
	}
}

// Buffered is how many bytes a Read would return at once now.
func (c *Conn) Buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.readableLocked(), 0)
}

// windowUpdateLocked decides, after a read, whether the window opened
// enough to tell the peer now (Linux's rule: what we advertised is at most
// half the buffer and the new window at least doubles it).
func (c *Conn) windowUpdateLocked() bool {
	if !c.state.synchronized() || c.finRcvd {
		return false
	}
	adv := int(int32(c.rcvAdv - c.rcvNxt))
	if 2*adv > c.rcvCap {
		return false
	}
	nw := c.rcvWndLocked()
	if nw >= 2*adv && nw >= c.mssBase {
		c.ackNow = true
		return true
	}
	return false
}

// Write writes all of b unless the connection fails or the write deadline
// passes; it returns when b is in the send buffer.
func (c *Conn) Write(b []byte) (int, error) {
	c.wrMu.Lock()
	defer c.wrMu.Unlock()
	n := 0
	for n < len(b) || len(b) == 0 {
		if deadlinePassed(&c.wrDL) {
			return n, c.opError("write", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
		if err := c.writeErrLocked(); err != nil {
			c.mu.Unlock()
			return n, c.opError("write", err)
		}
		if len(b) == 0 {
			c.mu.Unlock()
			return 0, nil
		}
		if c.sndBuf == nil { // a connection that never writes never pays for a ring
			c.sndBuf = make([]byte, c.p.cfg.InitialBuffer)
		}
		c.rebaseSendLocked()
		queued := int(c.sndEnd - c.sndUnaData())
		free := len(c.sndBuf) - queued
		if free < len(b)-n && len(c.sndBuf) < c.maxSnd {
			c.growSendLocked(queued + len(b) - n)
			free = len(c.sndBuf) - queued
		}
		if free > 0 {
			k := ringWrite(c.sndBuf, c.sndBase, c.sndEnd, b[n:n+min(free, len(b)-n)])
			c.sndEnd += uint32(k)
			n += k
			c.mu.Unlock()
			c.output()
			continue
		}
		c.wrSleep = true // woken by the ACK that makes room
		c.mu.Unlock()
		if err := wait(c.wrWake, &c.wrDL, &c.wrTimer); err != nil {
			return n, c.opError("write", err)
		}
	}
	return n, nil
}

// WriteFunc is Write without the copy in: it lends fn views of free space
// in the send ring, a and then b (b is empty unless the space wraps
// around the ring's end), up to max bytes in all; fn fills them from the
// start and returns how many bytes it filled, which are then sent as if
// written. It waits, as Write does, until the ring has room for
// min(max, a quarter of the ring), growing the ring toward its limit
// first. It returns the count fn returned, or 0 and Write's error.
//
// The views are valid only while fn runs. fn runs without the
// connection's lock, so segments already queued go on being sent and
// acknowledged around them, and it must not call the Conn's write
// methods. A file read straight into the views (pread, an NBD READ's
// reply) is copied once instead of twice.
func (c *Conn) WriteFunc(max int, fn func(a, b []byte) int) (int, error) {
	if max <= 0 {
		return 0, nil
	}
	c.wrMu.Lock()
	defer c.wrMu.Unlock()
	for {
		if deadlinePassed(&c.wrDL) {
			return 0, c.opError("write", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
		if err := c.writeErrLocked(); err != nil {
			c.mu.Unlock()
			return 0, c.opError("write", err)
		}
		if c.sndBuf == nil {
			c.sndBuf = make([]byte, c.p.cfg.InitialBuffer)
		}
		queued := int(c.sndEnd - c.sndUnaData())
		if len(c.sndBuf)-queued < max && len(c.sndBuf) < c.maxSnd {
			c.growSendLocked(queued + max)
		}
		free := len(c.sndBuf) - queued
		if free > 0 && free >= min(max, len(c.sndBuf)/4) {
			a, b := ringViews(c.sndBuf, c.sndBase, c.sndEnd, min(free, max))
			c.mu.Unlock()
			n := fn(a, b)
			if n < 0 || n > len(a)+len(b) {
				panic("tcp: WriteFunc's fn filled more than it was lent")
			}
			if n == 0 {
				return 0, nil
			}
			c.mu.Lock()
			if err := c.writeErrLocked(); err != nil { // closed meanwhile
				c.mu.Unlock()
				return 0, c.opError("write", err)
			}
			c.sndEnd += uint32(n)
			c.mu.Unlock()
			c.output()
			return n, nil
		}
		c.wrSleep = true // woken by the ACK that makes room
		c.mu.Unlock()
		if err := wait(c.wrWake, &c.wrDL, &c.wrTimer); err != nil {
			return 0, c.opError("write", err)
		}
	}
}

func (c *Conn) writeErrLocked() error {
	switch {
	case c.err != nil:
		return c.err
	case c.appClosed:
		return ErrClosed
	case c.finQueued:
		return ErrWriteAfterShut
	case c.state == stateEstablished || c.state == stateCloseWait:
		return nil
	}
	return ErrClosed
}

// sndUnaData is the sequence number of the oldest unacknowledged data
// byte (the SYN is not data).
func (c *Conn) sndUnaData() uint32 {
	if c.sndUna == c.iss {
		return c.iss + 1
	}
	return c.sndUna
}

// rebaseSendLocked starts the send ring over at sndEnd when it holds
// nothing the peer has not acknowledged. Write calls it (under wrMu, so
// no WriteFunc views are out), WriteFunc does not: its callers fill large
// views, for which the ring's warm first lines buy nothing. A segment
// still on its way to the link with views of the ring (Gatherer) carries
// acknowledged bytes only, which the peer drops as duplicates, as it
// does when a writer reuses their place without a rebase.
func (c *Conn) rebaseSendLocked() {
	if c.sndUnaData() == c.sndEnd && c.sndBase != c.sndEnd && c.state.synchronized() {
		c.sndBase = c.sndEnd
	}
}

func (c *Conn) growSendLocked(want int) {
	size := min(pow2(max(want, 2*len(c.sndBuf))), c.maxSnd)
	if size <= len(c.sndBuf) {
		return
	}
	nb := make([]byte, size)
	from := c.sndUnaData()
	ringCopy(nb, c.sndBuf, c.sndBase, from, int(c.sndEnd-from))
	c.sndBuf = nb
}

func (c *Conn) growRecvLocked() {
	size := min(2*c.rcvCap, c.maxRcv)
	if !c.wsOK {
		size = min(size, 1<<16)
	}
	if size <= c.rcvCap {
		return
	}
	c.rcvCap = size
	if c.rcvBuf == nil {
		return
	}
	nb := make([]byte, size)
	ringCopy(nb, c.rcvBuf, c.rcvBase, c.rcvRead, len(c.rcvBuf))
	c.rcvBuf = nb
}

// CloseWrite sends a FIN after the data already written (shutdown(SHUT_WR)).
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	err := c.shutWriteLocked()
	c.mu.Unlock()
	c.output()
	if err != nil {
		return c.opError("close", err)
	}
	return nil
}

func (c *Conn) shutWriteLocked() error {
	if c.err != nil {
		return c.err
	}
	switch c.state {
	case stateSynRcvd, stateEstablished:
		c.finQueued = true
		c.state = stateFinWait1
	case stateCloseWait:
		c.finQueued = true
		c.state = stateLastAck
	case stateSynSent:
		c.teardownLocked(nil)
	case stateClosed:
		return ErrClosed
	}
	return nil
}

// Close closes the connection: a FIN follows the data already written,
// and the connection finishes its close in the background. Unread data,
// or data arriving later, resets the connection (as Linux does).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.appClosed {
		c.mu.Unlock()
		return c.opError("close", ErrClosed)
	}
	c.appClosed = true
	c.rdNews.Store(true)
	c.releaseLentLockedUnlessViewed() // nobody reads them any more
	if c.lingerZero || (c.readableLocked() > 0 && c.state.synchronized()) {
		c.abortLocked(ErrConnAborted)
	} else {
		c.shutWriteLocked()
		if c.state == stateFinWait2 {
			c.setTimer(timerFinWait2, c.p.cfg.FinWait2Timeout)
		}
	}
	c.mu.Unlock()
	wake(c.rdWake)
	wake(c.wrWake)
	c.output()
	return nil
}

// Abort resets the connection at once (SO_LINGER 0).
func (c *Conn) Abort() {
	c.mu.Lock()
	c.appClosed = true
	c.rdNews.Store(true)
	c.releaseLentLockedUnlessViewed()
	c.abortLocked(ErrConnAborted)
	c.mu.Unlock()
}

// abortLocked sends a RST (in synchronized states) and tears down.
func (c *Conn) abortLocked(err error) {
	if c.state == stateClosed {
		return
	}
	if c.state != stateSynSent && c.state != stateTimeWait {
		c.p.sendCtl(c.key.raddr, c.rstFields())
	}
	c.teardownLocked(err)
}

// teardownLocked moves to CLOSED: it unregisters the connection, stops
// its timers and wakes everyone waiting.
func (c *Conn) teardownLocked(err error) {
	if c.state == stateClosed {
		return
	}
	if c.listener != nil && !c.queued {
		c.listener.pending.Add(-1)
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	c.state = stateClosed
	c.rdNews.Store(true)
	c.timer.Stop()
	c.timerKind, c.timerAt = timerNone, time.Time{}
	if c.dack != nil {
		c.dack.Stop()
		c.dackArmed, c.dackAt = false, time.Time{}
	}
	c.p.remove(c)
	c.rt.Close()
	if !c.estabSig {
		c.estabSig = true
		close(c.estab)
	}
	wake(c.rdWake)
	wake(c.wrWake)
}

// Info is a snapshot of a connection's internals, in the spirit of
// Linux's struct tcp_info (iperf3 reports some of these).
type Info struct {
	State             string
	SRTT, RTTVar, RTO time.Duration
	MSS               int    // payload bytes per segment, before options
	Cwnd, Ssthresh    uint32 // bytes
	SendWindow        uint32 // the peer's advertised window, bytes
	RecvWindow        int    // our free receive space, bytes
	SendBuffer        int    // ring sizes, bytes
	RecvBuffer        int
	Unacked           uint32 // bytes sent and not acknowledged
	InRecovery        bool
	WindowScale       bool
	Timestamps, SACK  bool
	SendWS, RecvWS    uint8
	Retries           int
	Retransmits       uint64 // segments retransmitted, over the connection's life
	BytesAcked        uint64 // data bytes the peer acknowledged
	BytesReceived     uint64 // data bytes received in order
}

// Info returns a snapshot of the connection's internals.
func (c *Conn) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Info{
		State: c.state.String(), SRTT: c.rtt.SRTT(), RTTVar: c.rtt.RTTVar(), RTO: c.rtt.RTO(),
		MSS: c.mssBase, Cwnd: c.cwnd, Ssthresh: c.ssthresh, SendWindow: c.sndWnd,
		RecvWindow: max(c.rcvWndLocked(), 0), SendBuffer: len(c.sndBuf), RecvBuffer: c.rcvCap,
		Unacked: c.sndMax - c.sndUna, InRecovery: c.inRecovery,
		WindowScale: c.wsOK, Timestamps: c.tsOK, SACK: c.sackOK, SendWS: c.sndWS, RecvWS: c.rcvWS,
		Retries: c.retries, Retransmits: c.retrans, BytesAcked: c.bytesAcked, BytesReceived: c.bytesReceived,
	}
}
