package storage

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/rtt"
)

// Errors of the client. Refusals wrap both ErrRefused and the server's
// diskproto.Code, so errors.Is(err, diskproto.CodeRange) works.
var (
	// ErrTimeout: a request got no reply after every retransmission while
	// the disk kept answering other requests.
	ErrTimeout = errors.New("storage: request timed out")
	// ErrDiskGone: a request got no reply and neither did anything else
	// sent since it started (or the connection failed): the disk is down
	// or unreachable.
	ErrDiskGone = errors.New("storage: disk gone")
	// ErrRefused: the disk answered with an error code.
	ErrRefused = errors.New("storage: request refused")
	// ErrClosed: the client was closed.
	ErrClosed = fmt.Errorf("storage: client closed: %w", net.ErrClosed)
	// ErrBadOptions: Dial's options or the server's INFO are unusable.
	ErrBadOptions = errors.New("storage: bad options")
	// ErrVersion: the disk speaks another version of the storage
	// protocol (it answered a probe in that version, or refused ours
	// with CodeVersion).
	ErrVersion = errors.New("storage: protocol version mismatch")
)

// Defaults of Options' zero fields.
const (
	DefaultInitialRTO = 50 * time.Millisecond
	DefaultMinRTO     = 20 * time.Millisecond // 5 ms retransmitted spuriously when peripherals share two busy cores
	DefaultMaxRTO     = time.Second
	DefaultMaxRetries = 12
)

// Options tune a Client. The zero value is usable.
type Options struct {
	// Window caps outstanding requests; 0 or more than the server
	// advertises means the server's window.
	Window int
	// MaxRequest caps the data of one request; 0 or more than the
	// server's MaxIO means MaxIO. Lossy paths need no small requests:
	// lost datagrams are resent selectively (protocol version 3).
	MaxRequest int
	// Capability is sent in every request; all zero for a disk in open
	// mode.
	Capability [diskproto.CapabilitySize]byte
	// InitialRTO is the timeout before the first RTT sample; MinRTO and
	// MaxRTO clamp the computed one (RFC 6298 with its 1 s floor lowered:
	// this is a LAN protocol).
	InitialRTO, MinRTO, MaxRTO time.Duration
	// MaxRetries is how often one request is retransmitted before it
	// fails with ErrTimeout or ErrDiskGone.
	MaxRetries int
	// Datagram is the size WRITE requests and READ replies are cut to
	// (header and data segments): the path MTU less the IP and UDP
	// headers. Default diskproto.DefaultDatagram; diskproto.MaxDatagram
	// sends up to 64 KiB of data per datagram, which the stacks fragment.
	Datagram int
	// WindowBytes caps the READ and WRITE data outstanding; 0 or more
	// than the server advertises means the server's. Our own receive
	// queue must hold a window of READ replies.
	WindowBytes int
}

// Info describes the remote disk, from its INFO reply.
type Info struct {
	Size      int64
	BlockSize int
	Window    int // the server's window
	MaxIO     int // the server's largest request
	// WindowBytes is the READ and WRITE data the server lets a session
	// have in flight.
	WindowBytes int
	OpenAccess  bool
	Epoch       uint64 // the server instance; changes when it restarts
}

// Stats are a client's counters.
type Stats struct {
	Requests     uint64        `json:"requests"`      // first transmissions
	Retransmits  uint64        `json:"retransmits"`   // later ones
	Timeouts     uint64        `json:"timeouts"`      // requests given up
	Refused      uint64        `json:"refused"`       // error replies ending a request
	LateReplies  uint64        `json:"late_replies"`  // replies for no outstanding request (duplicates)
	BadReplies   uint64        `json:"bad_replies"`   // unparsable or corrupt replies
	Reopens      uint64        `json:"reopens"`       // sessions reopened after the disk restarted
	BytesRead    uint64        `json:"bytes_read"`    // READ data received
	BytesWritten uint64        `json:"bytes_written"` // WRITE data acknowledged
	SRTT         time.Duration `json:"srtt_ns"`
	RTTVar       time.Duration `json:"rttvar_ns"`
	RTO          time.Duration `json:"rto_ns"`

	// Loss recovery (protocol version 3): SACKs received for WRITEs,
	// resends the disk's feedback drove (SACKs, and READ replies whose
	// last datagram arrived with others missing), the datagrams those
	// resent, probes sent when the retransmission timer fired, loss
	// events (window reductions) and the congestion window now.
	SACKs          uint64 `json:"sacks"`
	FeedbackResend uint64 `json:"feedback_resends"`
	ResentDgrams   uint64 `json:"resent_datagrams"`
	Probes         uint64 `json:"probes"`
	LossEvents     uint64 `json:"loss_events"`
	Cwnd           int64  `json:"cwnd_bytes"`
	// Answers to retransmissions (version 5): "in progress" (the disk
	// has the request; its reply follows) and "sent" (a READ's reply
	// left the disk; with nothing of it here, asked for again).
	InProgress  uint64 `json:"in_progress"`
	SentAnswers uint64 `json:"sent_answers"`
	// PaceRate is the rate (bytes/s) data is paced at now: this client's
	// WRITE data and, carried in every READ (version 4), the disk's
	// replies; 0 before the first RTT sample (unpaced).
	PaceRate uint64 `json:"pace_rate"`
	// SinceReply is the time since the disk last answered anything (0
	// before the first answer): what a progress display shows when a run
	// stalls. LastRefusal is the latest error code the disk answered.
	SinceReply  time.Duration `json:"since_reply_ns"`
	LastRefusal string        `json:"last_refusal,omitempty"`
	// Kernel describes a kernel socket's batches (nil on the user-level
	// stack): whether the runs of equal-sized datagrams went as
	// UDP_SEGMENT super-datagrams and came back as UDP_GRO super-frames.
	Kernel *KernelSocket `json:"kernel_socket,omitempty"`
}

// KernelSocket is what a kernel socket's batches became.
type KernelSocket struct {
	Mode                string  `json:"mode"` // "kernel" (UDP_SEGMENT + UDP_GRO) or "kernel-plain"
	GSO, GRO            bool    // the socket segments / coalesces
	DatagramsPerSend    float64 `json:"datagrams_per_send"`
	DatagramsPerReceive float64 `json:"datagrams_per_receive"`
}

// Client is a connection to one disk. See the package comment.
type Client struct {
	pc       dgram.Conn
	server   netip.AddrPort
	opts     Options
	session  uint64
	window   uint64
	winBytes int64
	maxReq   int
	calls    sync.Pool // *call, each with its buffer, timer and done channel

	mu        sync.Mutex
	info      Info
	epoch     uint64
	slots     []*call // indexed by request id modulo window
	next, low uint64  // next request id; lowest one outstanding (or next)
	inflight  int64   // READ and WRITE data outstanding
	// waitq holds the calls waiting for room in the window, first come
	// first served; the head is woken (its wake channel) when room may
	// have freed. Waking every waiter at each settle, as a closed
	// channel did, woke eight or so goroutines per request at queue
	// depth 16 to let one through (and allocated a channel each time).
	waitq     []*call
	tag       uint32
	lastReply time.Time
	infoSeen  chan struct{} // closed and replaced on every INFO reply
	reopening bool
	closed    bool
	readerErr error
	rtt       rtt.Estimator // RFC 6298, one for the session (requests time out on their own timers)
	// Congestion control (AIMD on bytes): cwnd caps the READ and WRITE
	// data in flight below winBytes; a loss event (at most one per
	// smoothed RTT) multiplies it by 7/10, never below minCwnd; every
	// acknowledged byte grows it back (by the byte below ssthresh, by
	// Datagram x 8 per window above). lossUntil ends the current event.
	cwnd, ssthresh, minCwnd int64
	lossUntil               time.Time
	minRTT                  time.Duration // the least RTT sample of the last minRTTWindow: the pacer's
	minRTTAt                time.Time
	lastRefusal             diskproto.Code
	peerVersion             uint8 // a reply of another protocol version came: its version byte

	pace  pacer
	chunk int // datagrams per paced send: one GSO super-frame's worth
	// runs is pc when it sends gathered GSO runs (the user-level stack):
	// a WRITE's data then leaves from the caller's buffer, not a copy.
	runs runGatherer
	// burst lets one gathered WRITE transmission at a time sum and send
	// its data: the sum reads the caller's buffer into the cache and the
	// socket's copy of each run follows at once, where runs of the other
	// callers' bursts came between (at queue depth 16, megabytes of them:
	// the data was read from memory twice) and each run's turn at the
	// socket was a lock handed over.
	burst sync.Mutex

	readerDone chan struct{}
	st         struct {
		requests, retransmits, timeouts, refused, late, bad, reopens, bytesRead, bytesWritten atomic.Uint64
		sacks, feedback, resent, probes, losses                                               atomic.Uint64
		inProgress, sentAnswers                                                               atomic.Uint64
	}
}

// pacer spaces a client's datagrams at the congestion window per smoothed
// RTT (times paceGain), allowing bursts of paceCredit.
type pacer struct {
	mu   sync.Mutex
	next time.Time
}

// minProbe is the least time before a tail-loss probe.
const minProbe = 2 * time.Millisecond

// minRTTWindow is how long a minimum RTT sample stands.
const minRTTWindow = 10 * time.Second

const (
	paceGain   = 1.5
	paceCredit = 250 * time.Microsecond
)

// call is one outstanding request. Calls are pooled with their buffer,
// timer and done channel, so steady-state I/O does not allocate them.
type call struct {
	op     diskproto.Op
	reqID  uint64
	off    int64
	length int64           // data, counted against the byte window
	buf    []byte          // the laid-out request (header and segments)
	msgs   []dgram.Message // its datagrams, in buf: whole, or (gathered) their headers alone
	// body is, for a WRITE sent gathered (runGatherer), each datagram's
	// data: a slice of the caller's buffer, sent after msgs[i].Buf. Empty
	// when the datagrams lie whole in buf.
	body [][]byte
	// unsummed is a gathered WRITE's data whose CRC the header still
	// lacks: transmit sums it just before the first transmission.
	unsummed []byte
	dst      []byte // READ destination
	track    diskproto.Assembly
	crc      uint32                    // a segmented READ reply's PayloadCRC, from its header
	sum      diskproto.RunningChecksum // of dst, taken as datagrams are copied in
	req      diskproto.Request         // the request's header fields (READ: rebuilt with a bitmap on resends)
	acked    []byte                    // WRITE: the disk's latest SACK bitmap of the datagrams it holds
	have     []byte                    // READ: the bitmap sent with FlagHave (reused)
	round    uint8                     // the latest transmission's round: its tag's low byte
	expired  int                       // consecutive timer expiries without feedback
	// silent counts the consecutive expiries after which nothing at all
	// had come from the disk since the call's latest transmission: only
	// those back the timer off. An expiry while the disk answers other
	// requests is a lost datagram on a live path, and doubling the timer
	// for it made the tail of a lossy run (10 %: a probe lost as well)
	// wait hundreds of milliseconds with the disk answering all along.
	silent   int
	out      []dgram.Message // the datagrams of the transmission being sent
	outBody  [][]byte        // and their data, for a gathered WRITE (body)
	pieces   [][]byte        // scratch: one gathered run's pieces
	sendMu   sync.Mutex
	sends    [4]transmission // the latest transmissions, for RTT samples
	nsend    int
	first    time.Time
	lastData time.Time     // READ: when a datagram of its reply last arrived fresh
	timer    *time.Timer   // fires expire; reused across incarnations
	deadline time.Time     // when the current arming of timer is due; zero when unarmed
	done     chan struct{} // receives one value when settled
	wake     chan struct{} // 1-buffered: room may have freed in the window (waitq)
	err      error
	settled  bool
}

type transmission struct {
	tag uint32
	at  time.Time
}

// Dial opens a session with the disk at server over pc: it sends INFO,
// retransmitting as any request, and returns once the disk answered. The
// Client owns pc from the call on: Close closes it, and so does a failed
// Dial.
func Dial(pc net.PacketConn, server net.Addr, opts Options) (*Client, error) {
	ua, ok := server.(*net.UDPAddr)
	if !ok {
		pc.Close()
		return nil, fmt.Errorf("%w: server address %v is not a UDP address", ErrBadOptions, server)
	}
	srv := ua.AddrPort()
	srv = netip.AddrPortFrom(srv.Addr().Unmap(), srv.Port())
	if opts.Datagram == 0 {
		opts.Datagram = diskproto.DefaultDatagram
	}
	if opts.InitialRTO <= 0 {
		opts.InitialRTO = DefaultInitialRTO
	}
	if opts.MaxRTO <= 0 {
		opts.MaxRTO = DefaultMaxRTO
	}
	if opts.MinRTO <= 0 {
		// The default floor, but never above a ceiling the caller chose.
		opts.MinRTO = min(DefaultMinRTO, opts.MaxRTO)
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = DefaultMaxRetries
	}
	if opts.Window < 0 || opts.MaxRequest < 0 || opts.WindowBytes < 0 || opts.MinRTO > opts.MaxRTO ||
		opts.Datagram < diskproto.MinDatagram || opts.Datagram > diskproto.MaxDatagram {
		pc.Close()
		return nil, fmt.Errorf("%w: negative window or request size, MinRTO > MaxRTO, or datagram size %d not in [%d, %d]",
			ErrBadOptions, opts.Datagram, diskproto.MinDatagram, diskproto.MaxDatagram)
	}
	var r [8]byte
	rand.Read(r[:])
	c := &Client{
		pc:         dgram.Of(pc),
		server:     srv,
		opts:       opts,
		session:    binary.BigEndian.Uint64(r[:]) | 1,
		tag:        binary.BigEndian.Uint32(r[2:]),
		infoSeen:   make(chan struct{}),
		rtt:        rtt.New(rtt.Config{Initial: opts.InitialRTO, Min: opts.MinRTO, Max: opts.MaxRTO}),
		readerDone: make(chan struct{}),
		chunk:      64, // the user-level stack's GSO super-frame
	}
	if m, ok := dgram.ModeOf(c.pc); ok && m == dgram.KernelBest {
		// Whole UDP_SEGMENT super-datagrams (2 x 44 at 1472 B), not 44 +
		// 20: a 256 KiB WRITE leaves in 5 frames instead of 6, and the
		// fabric's loss drops frames, so each fewer is a loss event fewer.
		c.chunk = dgram.GSOBatch(opts.Datagram)
	}
	if rg, ok := c.pc.(runGatherer); ok && rg.MaxRun(opts.Datagram) > 1 {
		c.runs = rg
	}
	go c.reader()
	if err := c.hello(context.Background()); err != nil {
		c.Close()
		return nil, err
	}
	c.mu.Lock()
	info := c.info
	c.mu.Unlock()
	c.window = uint64(info.Window)
	if opts.Window > 0 && opts.Window < info.Window {
		c.window = uint64(opts.Window)
	}
	c.maxReq = info.MaxIO
	if opts.MaxRequest > 0 && opts.MaxRequest < info.MaxIO {
		c.maxReq = opts.MaxRequest
	}
	c.winBytes = int64(info.WindowBytes)
	if opts.WindowBytes > 0 && int64(opts.WindowBytes) < c.winBytes {
		c.winBytes = int64(opts.WindowBytes)
	}
	// READ replies land in our own receive queue: keep a window of them
	// to half of it, and no request larger than the window, since a
	// burst the queue cannot hold loses the same tail every time.
	if rb := dgram.ReceiveBuffer(c.pc, opts.Datagram); rb > 0 {
		c.winBytes = min(c.winBytes, int64(max(rb/2, diskproto.MinDatagram)))
	}
	// WRITEs from a kernel socket are a frame per datagram: no more in
	// flight than the receiving CPU's backlog takes in one burst.
	if bl := dgram.BurstLimit(c.pc, opts.Datagram); bl > 0 {
		c.winBytes = min(c.winBytes, int64(max(bl, diskproto.MinDatagram)))
	}
	if int64(c.maxReq) > c.winBytes {
		c.maxReq = int(c.winBytes)
		if c.maxReq >= info.BlockSize {
			c.maxReq -= c.maxReq % info.BlockSize
		}
	}
	c.mu.Lock()
	c.slots = make([]*call, c.window)
	// Start at the flow-control window (a LAN: the disk told us what its
	// queue holds) and never shrink below half of it (or two full
	// requests), so losses that are not congestion (a lossy link) keep
	// requests large and pipelined: no fallback to tiny requests. What
	// overflows on this fabric is a socket queue, which the flow-control
	// window already keeps from overflowing; the congestion window
	// covers a slower bottleneck (a rate-limited link) and other senders.
	c.cwnd, c.ssthresh = c.winBytes, c.winBytes
	c.minCwnd = min(c.winBytes, max(2*int64(c.maxReq), c.winBytes/2))
	c.mu.Unlock()
	c.calls.New = func() any {
		cl := &call{buf: make([]byte, diskproto.RequestHeaderSize), done: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
		cl.timer = time.AfterFunc(time.Hour, func() { c.expire(cl) })
		cl.timer.Stop()
		return cl
	}
	return c, nil
}

// hello sends INFO until the disk answers, then returns. It opens the
// session at Dial and reopens it after the disk restarted.
func (c *Client) hello(ctx context.Context) error {
	var b [diskproto.RequestHeaderSize]byte
	start := time.Now()
	for try := 0; try <= c.opts.MaxRetries; try++ {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return ErrClosed
		}
		seen := c.infoSeen
		req := diskproto.Request{Op: diskproto.OpInfo, Tag: c.nextTag(), Session: c.session,
			Low: c.low, Capability: c.opts.Capability}
		wait := c.rtt.BackedOff(try)
		c.mu.Unlock()
		n, _ := req.Marshal(b[:])
		m := [1]dgram.Message{{Buf: b[:n], Addr: c.server}}
		if _, err := c.pc.WriteBatch(m[:]); err != nil && errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("%w: %w", ErrDiskGone, err)
		}
		if try == 1 {
			// No answer yet: also ask in versions 3 and 2, whose disks
			// drop ours unanswered (a disk of version 4 parses our
			// header and answers CodeVersion itself). If the disk speaks
			// one of them, say so instead of timing out.
			var old [diskproto.RequestHeaderSize]byte
			for v := uint8(3); v >= 2; v-- {
				m[0].Buf = old[:diskproto.LegacyRequest(old[:], b[:n], v)]
				_, _ = c.pc.WriteBatch(m[:])
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-seen:
			t.Stop()
			c.mu.Lock()
			err := c.readerErr
			switch {
			case c.peerVersion != 0 && c.info.MaxIO == 0:
				err = fmt.Errorf("%w: the disk at %v speaks version %d of the storage protocol, this client version %d: run the same netstation on both ends",
					ErrVersion, c.server, c.peerVersion, diskproto.Version)
			case err == nil && c.info.MaxIO == 0:
				err = fmt.Errorf("%w: INFO refused", ErrRefused)
			}
			c.mu.Unlock()
			return err
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-c.readerDone:
			t.Stop()
			return c.failure()
		}
	}
	return fmt.Errorf("%w: no INFO reply from %v in %v", ErrDiskGone, c.server, time.Since(start).Round(time.Millisecond))
}

func (c *Client) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readerErr != nil {
		return c.readerErr
	}
	return ErrClosed
}

// nextTag returns a fresh tag. Called with mu held.
func (c *Client) nextTag() uint32 {
	c.tag++
	return c.tag
}

// Info describes the disk, as its latest INFO reply did.
func (c *Client) Info() Info {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Stats returns a snapshot of the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	srtt, rttvar, rto, cwnd, rate := c.rtt.SRTT(), c.rtt.RTTVar(), c.rtt.RTO(), c.cwnd, c.paceRate()
	var sinceReply time.Duration
	if !c.lastReply.IsZero() {
		sinceReply = time.Since(c.lastReply)
	}
	refusal := ""
	if c.lastRefusal != 0 {
		refusal = c.lastRefusal.String()
	}
	c.mu.Unlock()
	return Stats{
		Requests: c.st.requests.Load(), Retransmits: c.st.retransmits.Load(), Timeouts: c.st.timeouts.Load(),
		Refused: c.st.refused.Load(), LateReplies: c.st.late.Load(), BadReplies: c.st.bad.Load(),
		Reopens: c.st.reopens.Load(), BytesRead: c.st.bytesRead.Load(), BytesWritten: c.st.bytesWritten.Load(),
		SRTT: srtt, RTTVar: rttvar, RTO: rto, Kernel: kernelSocket(c.pc),

		SACKs: c.st.sacks.Load(), FeedbackResend: c.st.feedback.Load(), ResentDgrams: c.st.resent.Load(),
		Probes: c.st.probes.Load(), LossEvents: c.st.losses.Load(), Cwnd: cwnd, PaceRate: rate,
		InProgress: c.st.inProgress.Load(), SentAnswers: c.st.sentAnswers.Load(),
		SinceReply: sinceReply, LastRefusal: refusal,
	}
}

func kernelSocket(c dgram.Conn) *KernelSocket {
	ks, ok := dgram.Stats(c)
	if !ok {
		return nil
	}
	k := &KernelSocket{Mode: ks.Mode.String(), GSO: ks.GSO && ks.GSOSends > 0, GRO: ks.GRO && ks.GROBuffers > 0}
	if ks.SendMessages > 0 {
		k.DatagramsPerSend = float64(ks.DatagramsSent) / float64(ks.SendMessages)
	}
	if ks.RecvBuffers > 0 {
		k.DatagramsPerReceive = float64(ks.DatagramsReceived) / float64(ks.RecvBuffers)
	}
	return k
}

// Close fails every outstanding request with ErrClosed, stops the reader
// and closes the PacketConn.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	var pending []*call
	for _, cl := range c.slots {
		if cl != nil {
			pending = append(pending, cl)
		}
	}
	for _, cl := range pending {
		c.settle(cl, ErrClosed)
	}
	c.mu.Unlock()
	err := c.pc.Close()
	<-c.readerDone
	return err
}

// ReadAt reads len(p) bytes at off. It returns the number of bytes read
// before the first failed request and that request's error.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return c.do(ctx, diskproto.OpRead, p, off, int64(len(p)), 0)
}

// WriteAt writes p at off. With fua the data is on stable storage when
// WriteAt returns without error; otherwise after a later Flush.
func (c *Client) WriteAt(ctx context.Context, p []byte, off int64, fua bool) (int, error) {
	var f diskproto.Flags
	if fua {
		f = diskproto.FlagFUA
	}
	return c.do(ctx, diskproto.OpWrite, p, off, int64(len(p)), f)
}

// Flush returns once every write acknowledged before it was called is on
// stable storage.
func (c *Client) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	cl, err := c.start(ctx, diskproto.OpFlush, 0, 0, 0, nil, nil)
	if err != nil {
		return err
	}
	return c.wait(ctx, cl)
}

// Trim discards n bytes at off; they read back as zeros.
func (c *Client) Trim(ctx context.Context, off, n int64) error {
	_, err := c.do(ctx, diskproto.OpTrim, nil, off, n, 0)
	return err
}

// do splits one I/O into requests, pipelines them and waits for all.
func (c *Client) do(ctx context.Context, op diskproto.Op, p []byte, off, n int64, flags diskproto.Flags) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	size := c.info.Size
	c.mu.Unlock()
	if off < 0 || n < 0 || off > size || n > size-off {
		return 0, fmt.Errorf("storage: %v of %d bytes at %d: %w (disk size %d)", op, n, off, diskproto.CodeRange, size)
	}
	if n == 0 {
		return 0, nil
	}
	chunk := int64(c.maxReq)
	calls := make([]*call, 0, (n+chunk-1)/chunk)
	var err error
	for pos := int64(0); pos < n; pos += chunk {
		l := min(chunk, n-pos)
		var payload, dst []byte
		switch op {
		case diskproto.OpWrite:
			payload = p[pos : pos+l]
		case diskproto.OpRead:
			dst = p[pos : pos+l]
		}
		cl, e := c.start(ctx, op, off+pos, uint32(l), flags, payload, dst)
		if e != nil {
			err = e
			break
		}
		calls = append(calls, cl)
	}
	done, failed := 0, false
	for i, cl := range calls {
		e := c.wait(ctx, cl)
		if e != nil && err == nil {
			err = e
		}
		if e != nil {
			failed = true
		}
		if !failed {
			done += int(min(chunk, n-int64(i)*chunk))
		}
	}
	if op == diskproto.OpRead {
		c.st.bytesRead.Add(uint64(done))
	} else if op == diskproto.OpWrite {
		c.st.bytesWritten.Add(uint64(done))
	}
	return done, err
}

// start waits for room in the window, then sends one request.
func (c *Client) start(ctx context.Context, op diskproto.Op, off int64, length uint32, flags diskproto.Flags, payload, dst []byte) (*call, error) {
	cl := c.calls.Get().(*call)
	req := diskproto.Request{Op: op, Flags: flags, Length: length, Session: c.session,
		ReplyDatagram: uint16(c.opts.Datagram),
		Offset:        uint64(off), Capability: c.opts.Capability, Payload: payload}
	queued := false
	for {
		c.mu.Lock()
		if c.closed {
			c.leaveQueue(cl, queued)
			c.mu.Unlock()
			c.calls.Put(cl)
			return nil, ErrClosed
		}
		// First come, first served: a request starts only with nobody
		// queued before it. One request larger than the byte window
		// still goes, alone.
		first := len(c.waitq) == 0 || (queued && c.waitq[0] == cl)
		if first && c.next < c.low+c.window && (c.inflight+int64(length) <= min(c.winBytes, c.cwnd) || c.inflight == 0) {
			if queued {
				c.waitq = append(c.waitq[:0], c.waitq[1:]...)
			}
			break
		}
		if !queued {
			select {
			case <-cl.wake: // a wake-up left from the call's earlier incarnation
			default:
			}
			c.waitq = append(c.waitq, cl)
			queued = true
		}
		c.mu.Unlock()
		select {
		case <-cl.wake:
		case <-ctx.Done():
			c.mu.Lock()
			c.leaveQueue(cl, true)
			c.mu.Unlock()
			c.calls.Put(cl)
			return nil, ctx.Err()
		}
	}
	// Reset under mu: an expire of the call's previous incarnation may
	// still be waiting for mu (it will find no armed deadline and leave).
	cl.op, cl.off, cl.dst, cl.nsend, cl.err, cl.settled, cl.deadline = op, off, dst, 0, nil, false, time.Time{}
	cl.acked, cl.expired, cl.silent, cl.lastData = cl.acked[:0], 0, 0, time.Time{}
	cl.reqID = c.next
	c.next++
	c.slots[cl.reqID%c.window] = cl
	req.ReqID = cl.reqID
	cl.length = 0
	if op == diskproto.OpRead || op == diskproto.OpWrite {
		cl.length = int64(length)
		c.inflight += cl.length
	}
	if c.next < c.low+c.window && c.inflight+int64(length) <= min(c.winBytes, c.cwnd) {
		c.wakeNext() // room for the next waiter too
	}
	if op == diskproto.OpRead {
		cl.track.Reset(length)
		cl.sum.Reset()
	}
	cl.first = time.Now()
	c.mu.Unlock()
	cl.req = req
	cl.req.Payload = nil
	c.layOut(cl, &req)
	c.st.requests.Add(1)
	c.transmit(cl, cl.reqID, sendAll)
	return cl, nil
}

// What one transmission of a request sends.
type sendKind int

const (
	// sendAll: every datagram (the first transmission; a WRITE the disk
	// holds nothing of or got corrupted; a READ with nothing held).
	sendAll sendKind = iota
	// sendMissing: feedback said which datagrams arrived: a WRITE resends
	// the others (the disk's SACK), a READ asks for the others (a READ
	// with FlagHave).
	sendMissing
	// sendProbe: the timer fired without feedback. A WRITE resends its
	// header's datagram with FlagReport, which the disk answers with its
	// status or a SACK; a READ asks for what it lacks.
	sendProbe
)

// transmit (re)sends cl with a fresh tag, the current low-water mark and
// epoch, and arms its retransmission timer. kind says which datagrams.
// Resends run in goroutines of their own (the pacer may make them wait),
// so id names the request meant: a pooled call may have moved on.
func (c *Client) transmit(cl *call, id uint64, kind sendKind) {
	cl.sendMu.Lock()
	defer cl.sendMu.Unlock()
	// Under mu, before the call's fields are read: a resend goroutine may
	// come after its call was settled, and wait() clears the call (under
	// mu, once sendMu is free) for the pool. Past this check, holding
	// sendMu keeps it from doing so until transmit returns.
	c.mu.Lock()
	if cl.settled || cl.reqID != id {
		c.mu.Unlock()
		return
	}
	gathered, unsummed := cl.op == diskproto.OpWrite && len(cl.body) > 0, cl.unsummed
	cl.unsummed = nil
	c.mu.Unlock()
	if gathered {
		c.burst.Lock()
		defer c.burst.Unlock()
		if unsummed != nil { // the first transmission: sealed below
			diskproto.SetRequestDataCRC(cl.msgs[0].Buf, diskproto.Checksum(unsummed))
		}
	}
	c.mu.Lock()
	if cl.settled || cl.reqID != id {
		c.mu.Unlock()
		return
	}
	tag := c.nextTag()
	cl.round = uint8(tag)
	low, epoch := c.low, c.epoch
	cl.sends[cl.nsend%len(cl.sends)] = transmission{tag, time.Now()}
	cl.nsend++
	// The timer starts once the burst has left (at the end, below), not
	// while it waits for the socket behind other requests' bursts or for
	// the pacer: started here, it fired for about one request in eight at
	// queue depth 16 on a loaded machine, some still being sent.
	c.disarm(cl)
	cl.out, cl.outBody = cl.out[:0], cl.outBody[:0]
	if cl.op == diskproto.OpRead {
		// The request alone, with the bitmap of what arrived if anything did.
		req := cl.req
		req.Tag, req.Low, req.Epoch = tag, low, epoch
		// The disk paces the reply at the rate we pace our own data.
		req.PaceRate = c.paceRate()
		var have []byte
		switch {
		case kind != sendAll:
			have = cl.track.Held(cl.have[:0])
		case cl.nsend > 1:
			// All of it again (the disk said it sent the reply and
			// nothing of it came, or it came corrupt, or the disk
			// restarted): an empty bitmap, which the disk runs, where a
			// READ without one gets CodeSent.
			have = append(cl.have[:0], 0)
		}
		cl.have = have[:0]
		if len(have) > 0 {
			req.Flags |= diskproto.FlagHave
			req.Payload = have
		}
		if need := diskproto.RequestHeaderSize + len(have); cap(cl.buf) < need {
			cl.buf = make([]byte, need)
		}
		n, _ := req.Marshal(cl.buf[:cap(cl.buf)])
		cl.out = append(cl.out, dgram.Message{Buf: cl.buf[:n], Addr: c.server})
	} else {
		flags := cl.req.Flags
		switch {
		case kind == sendProbe && len(cl.msgs) > 1:
			flags |= diskproto.FlagReport
			cl.out = append(cl.out, cl.msgs[0])
			cl.outBody = append(cl.outBody, cl.body[:min(len(cl.body), 1)]...)
		case kind == sendMissing && len(cl.acked) > 0:
			for i, m := range cl.msgs {
				if !diskproto.BitmapHas(cl.acked, i) {
					cl.out = append(cl.out, m)
					if len(cl.body) > 0 {
						cl.outBody = append(cl.outBody, cl.body[i])
					}
				}
			}
		default:
			cl.out = append(cl.out, cl.msgs...)
			cl.outBody = append(cl.outBody, cl.body...)
		}
		if len(cl.out) > 0 && &cl.out[0].Buf[0] == &cl.msgs[0].Buf[0] {
			diskproto.RewriteRequestFlags(cl.msgs[0].Buf[:diskproto.RequestHeaderSize], flags, tag, low, epoch)
		}
	}
	if cl.nsend > 1 {
		c.st.resent.Add(uint64(len(cl.out)))
	}
	c.mu.Unlock()
	// Every segment carries the round; the last one asks for a report.
	// This seals each segment header sent (layOut left them unsealed).
	for i, m := range cl.out {
		if diskproto.IsSegment(m.Buf) {
			var f diskproto.SegmentFlags
			if i == len(cl.out)-1 {
				f = diskproto.FlagLast
			}
			diskproto.SetSegmentRound(m.Buf, f, uint8(tag))
		}
	}
	var err error
	if len(cl.outBody) > 0 {
		err = c.sendGathered(cl)
	} else {
		err = c.sendWhole(cl)
	}
	if errors.Is(err, net.ErrClosed) {
		c.mu.Lock()
		c.settle(cl, fmt.Errorf("%w: %w", ErrDiskGone, err))
		c.mu.Unlock()
		return
	}
	// Other send errors (ENOBUFS, unreachable) count as lost datagrams:
	// the retransmission timer is armed.
	c.mu.Lock()
	if !cl.settled && cl.reqID == id && cl.deadline.IsZero() {
		c.arm(cl)
	}
	c.mu.Unlock()
}

// sendWhole sends cl.out, datagrams that lie whole in their buffers, in
// chunks of c.chunk at the pace, and returns the first error.
func (c *Client) sendWhole(cl *call) error {
	for msgs := cl.out; len(msgs) > 0; {
		k := min(len(msgs), c.chunk)
		bytes := 0
		for _, m := range msgs[:k] {
			bytes += len(m.Buf)
		}
		c.pacing(bytes, len(msgs) == len(cl.out))
		if _, err := dgram.WriteAll(c.pc, msgs[:k]); err != nil {
			return err
		}
		msgs = msgs[k:]
	}
	return nil
}

// sendGathered sends cl.out with their data cl.outBody (a WRITE laid out
// for gathering: layOut), in runs of equal-sized datagrams (the message's
// last may be shorter) of at most c.chunk, each run one gathered GSO
// super-frame (stack.UDPConn.WriteRunGather) at the pace. It returns the
// first error.
func (c *Client) sendGathered(cl *call) error {
	size := func(i int) int { return len(cl.out[i].Buf) + len(cl.outBody[i]) }
	for i := 0; i < len(cl.out); {
		seg := size(i)
		limit := max(min(c.chunk, c.runs.MaxRun(seg)), 1)
		j := i + 1
		for j < len(cl.out) && j-i < limit && size(j) == seg {
			j++
		}
		if j < len(cl.out) && j-i < limit && size(j) < seg {
			j++ // the message's last datagram, the short one
		}
		pieces, bytes := cl.pieces[:0], 0
		for k := i; k < j; k++ {
			pieces = append(pieces, cl.out[k].Buf, cl.outBody[k])
			bytes += size(k)
		}
		c.pacing(bytes, i == 0)
		_, err := c.runs.WriteRunGather(c.server, seg, pieces)
		clear(pieces) // do not keep the caller's buffer alive
		cl.pieces = pieces[:0]
		if err != nil {
			return err
		}
		i = j
	}
	return nil
}

// disarm stops cl's retransmission timer. Called with mu held.
func (c *Client) disarm(cl *call) {
	cl.deadline = time.Time{}
	cl.timer.Stop()
}

// arm (re)arms cl's retransmission timer for its latest transmission.
// Called with mu held.
func (c *Client) arm(cl *call) {
	rto := c.rtt.BackedOff(cl.silent)
	if probe := c.probeTime(); probe > 0 {
		rto = min(rto, probe<<min(cl.expired, 16))
	}
	cl.deadline = time.Now().Add(rto)
	cl.timer.Reset(rto)
}

// probeTime is the time from a transmission (or the latest datagram of a
// READ's reply) to the first tail-loss probe; 0 before the first RTT
// sample (the RTO then). Called with mu held.
func (c *Client) probeTime() time.Duration {
	if srtt := c.rtt.SRTT(); srtt > 0 {
		// The first timer is a tail-loss probe (RFC 8985's PTO): two
		// smoothed RTTs, not the RTO, since losing the last datagram of
		// a burst, a request, a reply or a SACK is otherwise a whole RTO
		// (at least MinRTO, 20 ms: 20 times a lossless 256 KiB request
		// here). What a probe sends is small (a WRITE's header; a READ's
		// request for what it lacks; a READ that holds nothing yet is
		// answered "in progress" or "sent", version 5). Every request
		// waits SRTT + 4 RTTVAR (RFC 6298's RTO without its floor) if
		// longer: an RTT sample here times the requests queued ahead at
		// the disk and at both sockets as much as the path, and varies
		// with them; two SRTTs alone re-read about one READ in twelve
		// spuriously on a loaded machine with no loss at all (when only
		// a READ holding nothing waited longer), and probed about one
		// WRITE in six. A READ whose reply is arriving is probed only
		// that long after its latest datagram (expire), as RFC 8985
		// re-arms its probe timer on every acknowledgement.
		// A probe lost as well (one in ten at 10 % loss, counting its
		// answer) is probed again after twice as long, and so on up to
		// the timer above, rather than after the RTO: its floor, MinRTO,
		// was that one lost probe's whole cost (20 ms on a 1 ms path),
		// and at 10 % loss one READ in a hundred or so (its request and
		// its probe, or their replies' first super-frames, lost) held a
		// whole run up by it. A probe the disk answers "in progress"
		// (version 5) starts the doubling over (dispatch): before, the
		// disk dropped it, and at queue depth 16 probes of READs queued
		// behind others doubled up to the 20 ms cap and counted as
		// losses, with the disk answering all along.
		return max(2*srtt, minProbe, srtt+4*c.rtt.RTTVar())
	}
	return 0
}

// pacing waits until bytes may leave: the congestion window per minimum
// RTT (of the last minRTTWindow), times paceGain, with paceCredit of
// burst: the base RTT, since the smoothed one grows with the queues and
// the disk's work, and pacing by it would throttle the path it measures.
// Unpaced before the first RTT sample. Only a transmission's first chunk
// may find the schedule forgotten (an idle sender gets the credit); later
// ones catch up on a sleep that overslept (Go's timers wake a millisecond
// or more late), so the rate is the rate asked for, not the credit per
// wake-up.
func (c *Client) pacing(bytes int, first bool) {
	c.mu.Lock()
	rate := float64(c.paceRate())
	c.mu.Unlock()
	if rate == 0 {
		return
	}
	p := &c.pace
	p.mu.Lock()
	now := time.Now()
	if first && p.next.Before(now.Add(-paceCredit)) {
		p.next = now.Add(-paceCredit)
	}
	p.next = p.next.Add(time.Duration(float64(bytes) / rate * 1e9))
	wait := p.next.Sub(now)
	p.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}

// paceRate is the rate in bytes per second at which data is sent, ours
// (pacing) and the disk's READ replies (the request's PaceRate): the
// congestion window per minimum RTT, times paceGain; 0 (unpaced) before
// the first RTT sample. Called with mu held.
func (c *Client) paceRate() uint64 {
	if c.minRTT <= 0 || c.cwnd <= 0 {
		return 0
	}
	return uint64(float64(c.cwnd) * paceGain / c.minRTT.Seconds())
}

// sample feeds an RTT sample to the estimator and to the windowed
// minimum the pacer uses. Called with mu held.
func (c *Client) sample(r time.Duration) {
	c.rtt.Sample(r)
	now := time.Now()
	if c.minRTT == 0 || r < c.minRTT || now.Sub(c.minRTTAt) > minRTTWindow {
		c.minRTT, c.minRTTAt = r, now
	}
}

// lossEvent shrinks the congestion window: by 3/10 on feedback that
// datagrams were lost, to its floor on a timeout; once per smoothed RTT.
// Called with mu held.
func (c *Client) lossEvent(timeout bool) {
	now := time.Now()
	if now.Before(c.lossUntil) && !timeout {
		return
	}
	c.st.losses.Add(1)
	c.lossUntil = now.Add(max(c.rtt.SRTT(), c.opts.MinRTO/4))
	c.cwnd = max(c.cwnd*7/10, c.minCwnd)
	if timeout {
		c.cwnd = c.minCwnd
	}
	c.ssthresh = max(c.cwnd, c.minCwnd)
}

// acked grows the congestion window by n acknowledged bytes. Called with
// mu held.
func (c *Client) acked(n int64) {
	if c.cwnd < c.ssthresh {
		c.cwnd += n
	} else {
		c.cwnd += max(n*int64(c.opts.Datagram)*8/max(c.cwnd, 1), 1)
	}
	c.cwnd = min(c.cwnd, c.winBytes)
}

// layOut marshals req into cl.buf: the header alone, or for a WRITE the
// header's datagram and the data segments (diskproto.Layout), and points
// cl.msgs at the datagrams. On a socket that gathers (runGatherer) a
// WRITE's data is not copied: cl.msgs are the datagrams' headers and
// cl.body their data, slices of the caller's buffer, which WriteAt does
// not return before the request ends (the copy was 7 % of the process's
// CPU samples in BenchmarkUserStackStorage's WRITEs). Elsewhere
// the data is copied once, here, and its checksum taken from the caller's
// buffer in runs just copied, while they are in cache. Every
// retransmission resends these bytes with a fresh tag in the header.
func (c *Client) layOut(cl *call, req *diskproto.Request) {
	payload := req.Payload
	req.Payload = nil
	if req.Op == diskproto.OpWrite {
		req.Length = uint32(len(payload))
	}
	l := diskproto.Layout{Header: diskproto.RequestHeaderSize, Length: len(payload), Datagram: c.opts.Datagram}
	count := l.Count()
	cl.msgs = cl.msgs[:0]
	cl.body = cl.body[:0]
	cl.unsummed = nil
	if c.runs != nil && len(payload) > 0 {
		// Gathered: buf holds the headers alone (the request's, then
		// each segment's), the data stays in the caller's buffer, and
		// the link copies both into the frame.
		size := l.Header + (count-1)*diskproto.SegmentHeaderSize
		if cap(cl.buf) < size {
			cl.buf = make([]byte, size)
		}
		cl.buf = cl.buf[:size]
		for i := range count {
			da, db, off := l.Data(i)
			h := cl.buf[:l.Header]
			if i > 0 {
				a := l.Header + (i-1)*diskproto.SegmentHeaderSize
				h = cl.buf[a : a+diskproto.SegmentHeaderSize]
				diskproto.PutSegmentFields(h, false, uint16(i), uint32(off), req.Session, req.ReqID) // sealed by transmit
			}
			cl.msgs = append(cl.msgs, dgram.Message{Buf: h, Addr: c.server})
			cl.body = append(cl.body, payload[off:off+db-da])
		}
		// The sum is one pass over the caller's buffer, contiguous, taken
		// by transmit right before the data leaves (burst).
		cl.unsummed = payload
		req.MarshalHeader(cl.buf)
		return
	}
	size := l.Size()
	if cap(cl.buf) < size {
		cl.buf = make([]byte, size)
	}
	cl.buf = cl.buf[:size]
	var sum uint32
	summed := 0 // payload[:summed] is in sum
	for i := range count {
		a, b := l.Span(i)
		da, db, off := l.Data(i)
		if i > 0 {
			diskproto.PutSegmentFields(cl.buf[a:], false, uint16(i), uint32(off), req.Session, req.ReqID) // sealed by transmit
		}
		end := off + copy(cl.buf[da:db], payload[off:])
		if end-summed >= diskproto.SumRun || i == count-1 {
			// Summed from the caller's buffer, contiguous, in runs
			// just copied (still in cache): CRC-32C over a datagram's
			// share alone runs at half the speed (RunningChecksum).
			sum = diskproto.UpdateChecksum(sum, payload[summed:end])
			summed = end
		}
		cl.msgs = append(cl.msgs, dgram.Message{Buf: cl.buf[a:b], Addr: c.server})
	}
	req.PayloadCRC = sum // the header goes last: it carries the sum
	req.MarshalHeader(cl.buf)
}

// expire runs when cl's timer fires: retransmit, or give up. A firing
// that is not due — left over from an earlier arming or an earlier
// incarnation of the pooled call — does nothing.
func (c *Client) expire(cl *call) {
	c.mu.Lock()
	now := time.Now()
	if cl.settled || cl.deadline.IsZero() || now.Before(cl.deadline) {
		c.mu.Unlock()
		return
	}
	if !cl.lastData.IsZero() {
		// A READ's reply is arriving: not lost, only queued behind
		// others (at the disk's workers, the pacer or our socket). Probe
		// only once it stopped for a probe time; a lost tail is found then
		// (or by the reply's LAST datagram, at once).
		if next := cl.lastData.Add(c.probeTime()); now.Before(next) {
			cl.deadline = next
			cl.timer.Reset(next.Sub(now))
			c.mu.Unlock()
			return
		}
	}
	heard := cl.nsend > 0 && c.lastReply.After(cl.sends[(cl.nsend-1)%len(cl.sends)].at)
	if heard {
		cl.silent = 0
	} else {
		cl.silent++
	}
	// Give up after MaxRetries expiries that were all silent (the disk
	// is gone or cut off: as soon as ever), or, while the disk answers
	// other requests, once MaxRetries expiries took at least as long as
	// the backed-off schedule would have. A request whose probes the
	// disk answers "in progress" never gets here (dispatch resets
	// expired): a slow FLUSH waits as long as the disk works on it.
	if cl.expired >= c.opts.MaxRetries && (cl.silent > cl.expired || time.Since(cl.first) >= c.patience()) {
		c.st.timeouts.Add(1)
		kind := ErrTimeout
		if !c.lastReply.After(cl.first) {
			kind = ErrDiskGone
		}
		c.settle(cl, fmt.Errorf("%w: %v at offset %d: no reply to %d transmissions in %v",
			kind, cl.op, cl.off, cl.nsend, time.Since(cl.first).Round(time.Millisecond)))
		c.mu.Unlock()
		return
	}
	if cl.expired > 0 {
		// A probe went unanswered too. With the disk silent the path is
		// worse than a lost datagram (a tail-loss probe alone, RFC 8985,
		// leaves the window): the window drops to its floor. With the
		// disk answering others it is one more loss event.
		c.lossEvent(!heard)
	}
	cl.expired++
	id := cl.reqID
	c.mu.Unlock()
	c.st.retransmits.Add(1)
	c.st.probes.Add(1)
	c.transmit(cl, id, sendProbe)
}

// patience is how long MaxRetries expiries take with the timer backed off
// at each: the least time a request the disk keeps answering others
// through is given before it fails. Called with mu held.
func (c *Client) patience() time.Duration {
	var p time.Duration
	for i := range c.opts.MaxRetries {
		p += c.rtt.BackedOff(i)
	}
	return p
}

// settle ends cl with err and frees its window slot. Called with mu held.
func (c *Client) settle(cl *call, err error) {
	if cl.settled {
		return
	}
	cl.settled = true
	cl.err = err
	cl.deadline = time.Time{}
	if err == nil {
		c.acked(cl.length)
	}

	c.inflight -= cl.length
	cl.length = 0
	cl.timer.Stop()
	if i := cl.reqID % uint64(max(len(c.slots), 1)); len(c.slots) > 0 && c.slots[i] == cl {
		c.slots[i] = nil
	}
	for c.low < c.next && c.slots[c.low%c.window] == nil {
		c.low++
	}
	cl.done <- struct{}{}
	c.wakeNext()
}

// wakeNext wakes the first call waiting for room, if any. Called with mu
// held.
func (c *Client) wakeNext() {
	if len(c.waitq) > 0 {
		select {
		case c.waitq[0].wake <- struct{}{}:
		default: // already woken
		}
	}
}

// leaveQueue takes cl out of the queue for room (if queued) and passes
// on a wake-up it may have taken. Called with mu held.
func (c *Client) leaveQueue(cl *call, queued bool) {
	if !queued {
		return
	}
	for i, w := range c.waitq {
		if w == cl {
			c.waitq = append(c.waitq[:i], c.waitq[i+1:]...)
			break
		}
	}
	c.wakeNext()
}

// wait waits for cl; on ctx's end it abandons cl (the disk may still run it).
func (c *Client) wait(ctx context.Context, cl *call) error {
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.mu.Lock()
		c.settle(cl, ctx.Err())
		c.mu.Unlock()
		<-cl.done
	}
	// A concurrent retransmission may still be in WriteTo with the buffer.
	cl.sendMu.Lock()
	cl.sendMu.Unlock()
	c.mu.Lock()
	err := cl.err
	cl.dst = nil
	clear(cl.body) // the caller's buffer: not kept past the call
	clear(cl.outBody)
	cl.body, cl.outBody = cl.body[:0], cl.outBody[:0]
	c.mu.Unlock()
	c.calls.Put(cl)
	return err
}

// runGatherer is a socket that sends a run of datagrams gathered from
// pieces as one GSO super-frame (stack.UDPConn).
type runGatherer interface {
	MaxRun(seg int) int
	WriteRunGather(dst netip.AddrPort, seg int, pieces [][]byte) (int, error)
}

var _ runGatherer = (*stack.UDPConn)(nil)

// viewReader is a socket that lends received datagrams instead of
// copying them out (stack.UDPConn): the reader copies a READ segment from
// the socket's ring straight into the caller's buffer.
type viewReader interface {
	ReadViews(views []stack.View) (int, error)
	Release()
}

var _ viewReader = (*stack.UDPConn)(nil)

// reader receives and dispatches replies and READ data segments until
// the PacketConn fails. It reads in batches: lent views on a user-level
// socket (nothing in a datagram is kept past its handling), copies
// otherwise; and it takes mu once per batch, not once per datagram: with
// the callers' goroutines waiting for mu, every release handed it over
// (a wake-up each): sync.Mutex.Unlock was 7 % of the process's CPU
// samples in BenchmarkUserStackStorage (WRITEs and READs), now under 1 %.
func (c *Client) reader() {
	defer close(c.readerDone)
	const batch = 64
	if vr, ok := c.pc.(viewReader); ok {
		views := make([]stack.View, batch)
		for {
			n, err := vr.ReadViews(views)
			if err != nil && n <= 0 {
				if c.readFailed(err) {
					return
				}
				continue
			}
			c.mu.Lock()
			now := time.Now()
			for i := range views[:n] {
				c.received(views[i].Payload, now)
			}
			c.mu.Unlock()
			vr.Release()
		}
	}
	msgs := make([]dgram.Message, batch)
	for i := range msgs {
		msgs[i].Buf = make([]byte, diskproto.MaxDatagram+1)
	}
	for {
		n, err := c.pc.ReadBatch(msgs)
		if err != nil && n <= 0 {
			if c.readFailed(err) {
				return
			}
			continue
		}
		c.mu.Lock()
		now := time.Now()
		for i := range msgs[:n] {
			c.received(msgs[i].Buf[:min(msgs[i].N, len(msgs[i].Buf))], now)
		}
		c.mu.Unlock()
	}
}

// readFailed handles a receive error: a deadline is not one (false: read
// on); anything else ends every call and the reader (true).
func (c *Client) readFailed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	c.mu.Lock()
	if !c.closed {
		c.readerErr = fmt.Errorf("%w: receive: %w", ErrDiskGone, err)
		for _, cl := range c.slots {
			if cl != nil {
				c.settle(cl, c.readerErr)
			}
		}
		c.closed = true
	}
	c.mu.Unlock()
	return true
}

// received handles one datagram from the disk, which arrived at now. b
// is valid only during the call: nothing may keep it. Called with mu
// held, as are the handlers below it.
func (c *Client) received(b []byte, now time.Time) {
	if diskproto.IsSACK(b) {
		c.sack(b, now)
		return
	}
	if diskproto.IsSegment(b) {
		c.segment(b, now)
		return
	}
	rep, err := diskproto.ParseReply(b)
	if err != nil || rep.Session != c.session {
		// A reply in another version that does not refuse that
		// version (a disk of our version refuses our probe in
		// the old one) is a disk of that version.
		if v, ok := diskproto.PeerVersion(b, c.session); ok && binary.BigEndian.Uint16(b[4:]) != uint16(diskproto.CodeVersion) {
			c.otherVersion(v)
		}
		c.st.bad.Add(1)
		return
	}
	c.dispatch(&rep, now)
}

// segment places one data segment of a READ reply into its call's
// destination.
func (c *Client) segment(b []byte, now time.Time) {
	seg, err := diskproto.ParseSegment(b)
	if err != nil || !seg.Reply || seg.Session != c.session {
		c.st.bad.Add(1)
		return
	}
	c.lastReply = now // the disk is answering (expire: a live path)
	cl := c.outstanding(seg.ReqID, diskproto.OpRead)
	if cl == nil {
		c.st.late.Add(1)
		return
	}
	fresh, err := cl.track.Add(int(seg.Index), seg.Offset, len(seg.Data))
	if err != nil {
		c.st.bad.Add(1)
		return
	}
	if fresh {
		cl.placed(int(seg.Offset), copy(cl.dst[seg.Offset:], seg.Data))
		cl.lastData = c.lastReply
	}
	if seg.Flags&diskproto.FlagLast != 0 && !cl.track.Complete() && c.answersRecent(cl, seg.Round) {
		// The end of the disk's burst and datagrams are missing: ask for
		// just those, now (the resend may wait for the pacer: not here).
		c.lossEvent(false)
		cl.expired, cl.silent = 0, 0
		id := cl.reqID // under mu: once released, the call may be settled and reused
		c.st.feedback.Add(1)
		c.st.retransmits.Add(1)
		go c.transmit(cl, id, sendMissing)
		return
	}
	c.readDone(cl)
}

// answersRecent reports whether a READ reply's burst of round r should
// drive a resend: it answers the latest transmission, or an earlier one
// of the last four while the latest has had a smoothed RTT to be answered
// (the disk dropped it as in progress and answered the earlier one).
// Called with mu held.
func (c *Client) answersRecent(cl *call, r uint8) bool {
	if cl.nsend == 0 {
		return false
	}
	if r == cl.round {
		return true
	}
	latest := cl.sends[(cl.nsend-1)%len(cl.sends)]
	if time.Since(latest.at) < c.rtt.SRTT() {
		return false
	}
	for _, s := range cl.sends[:min(cl.nsend, len(cl.sends))] {
		if uint8(s.tag) == r {
			return true
		}
	}
	return false
}

// sack handles the disk's report on a WRITE whose data is still arriving:
// the datagrams not in its bitmap are resent. Only the report asked by
// the latest transmission counts; older ones describe what has been
// resent since.
func (c *Client) sack(b []byte, now time.Time) {
	sk, err := diskproto.ParseSACK(b)
	if err != nil || sk.Session != c.session {
		c.st.bad.Add(1)
		return
	}
	c.lastReply = now
	cl := c.outstanding(sk.ReqID, diskproto.OpWrite)
	if cl == nil {
		c.st.late.Add(1)
		return
	}
	c.st.sacks.Add(1)
	if cl.nsend == 0 {
		return
	}
	latest := cl.sends[(cl.nsend-1)%len(cl.sends)].tag
	current := (sk.Tag != 0 && sk.Tag == latest) || (sk.Tag == 0 && sk.Round == cl.round)
	if sk.Tag != 0 {
		for _, s := range cl.sends[:min(cl.nsend, len(cl.sends))] {
			if s.tag == sk.Tag {
				c.sample(now.Sub(s.at))
				break
			}
		}
	}
	if !current {
		return
	}
	cl.acked = append(cl.acked[:0], sk.Bitmap...)
	cl.silent = 0 // the disk answers
	if len(cl.acked) > 0 {
		cl.expired = 0 // progress: the timer starts over
	} else {
		// The disk holds nothing: the header was lost, or the disk has
		// no room to assemble. Not progress: counted like an expiry, so
		// that a disk that keeps refusing room ends the request instead
		// of a resend loop.
		cl.expired++
		if cl.expired > c.opts.MaxRetries {
			c.st.timeouts.Add(1)
			c.settle(cl, fmt.Errorf("%w: %v at offset %d: the disk held none of it after %d transmissions in %v",
				ErrTimeout, cl.op, cl.off, cl.nsend, time.Since(cl.first).Round(time.Millisecond)))
			return
		}
	}
	// Every datagram not held is lost, even when a probe asked: the
	// datagrams were sent before the probe, which arrived (RACK's rule,
	// RFC 8985: delivery order, not time, tells loss on one path).
	missing := 0
	for i := range cl.msgs {
		if !diskproto.BitmapHas(cl.acked, i) {
			missing++
		}
	}
	if missing == 0 {
		// It holds everything: the reply is coming (or lost: the timer
		// probes).
		return
	}
	if sk.Tag == 0 {
		c.lossEvent(false) // a burst's end arrived with datagrams missing
	}
	kind := sendMissing
	if len(cl.acked) == 0 {
		kind = sendAll // it holds nothing: the header's datagram was lost
	}
	id := cl.reqID // under mu: once released, the call may be settled and reused
	c.st.feedback.Add(1)
	c.st.retransmits.Add(1)
	go c.transmit(cl, id, kind)
}

// otherVersion records that the disk answered in another protocol
// version: Dial fails with ErrVersion. Called with mu held.
func (c *Client) otherVersion(v uint8) {
	if c.peerVersion == 0 {
		c.peerVersion = v
		close(c.infoSeen)
		c.infoSeen = make(chan struct{})
	}
}

// outstanding returns the outstanding call with request id reqID and
// operation op, or nil. Called with mu held.
func (c *Client) outstanding(reqID uint64, op diskproto.Op) *call {
	if len(c.slots) == 0 || reqID < c.low || reqID >= c.next {
		return nil
	}
	cl := c.slots[reqID%c.window]
	if cl == nil || cl.reqID != reqID || cl.op != op || cl.settled {
		return nil
	}
	return cl
}

// placed extends cl's running checksum over data just copied into dst
// at off (n bytes). Called with mu held.
func (cl *call) placed(off, n int) { cl.sum.Placed(cl.dst, off, n) }

// readDone settles a segmented READ once all of its reply has arrived and
// checks out; a reply that arrived whole but corrupt is asked for again.
// Called with mu held.
func (c *Client) readDone(cl *call) {
	if !cl.track.Complete() {
		return
	}
	if cl.sum.Sum(cl.dst) != cl.crc {
		cl.track.Reset(uint32(len(cl.dst)))
		cl.sum.Reset()
		id := cl.reqID // under mu: once released, the call may be settled and reused
		c.st.bad.Add(1)
		c.st.retransmits.Add(1)
		go c.transmit(cl, id, sendAll)
		return
	}
	c.settle(cl, nil)
}

// dispatch handles a reply (header, status, READ's first datagram) that
// arrived at now. Called with mu held.
func (c *Client) dispatch(rep *diskproto.Reply, now time.Time) {
	c.lastReply = now
	if rep.Op == diskproto.OpInfo {
		c.onInfo(rep)
		return
	}
	cl := c.outstanding(rep.ReqID, rep.Op)
	if cl == nil {
		c.st.late.Add(1)
		return
	}
	switch rep.Status {
	case diskproto.CodeInProgress:
		// The disk has the request and is running it (or still sending
		// its reply): the probe was answered, the reply follows. Probe
		// again at the first timer, not a doubled one, and no loss. Not
		// an RTT sample: it times the path, not the disk's work, and
		// would pull the probe timer below the replies' round trip.
		c.st.inProgress.Add(1)
		cl.expired, cl.silent = 0, 0
		c.arm(cl)
		return
	case diskproto.CodeSent:
		c.st.sentAnswers.Add(1)
		if cl.op != diskproto.OpRead {
			c.st.bad.Add(1)
			return
		}
		cl.expired, cl.silent = 0, 0
		if cl.track.Any() {
			// What is missing is found by the reply's last datagram
			// (feedback) or, if that was lost, the next probe.
			c.arm(cl)
			return
		}
		// The whole reply left before this answer, on the same path, and
		// none of it came: lost. Ask for all of it again.
		c.lossEvent(false)
		id := cl.reqID // under mu: once released, the call may be settled and reused
		c.st.retransmits.Add(1)
		go c.transmit(cl, id, sendAll)
		return
	}
	for i, s := range cl.sends[:min(cl.nsend, len(cl.sends))] {
		// A WRITE's reply echoes the tag of the latest header sent, which
		// may predate resent segments: a sample only when that header went
		// with the latest burst (else it would time the recovery, Karn).
		if s.tag == rep.Tag && (cl.op != diskproto.OpWrite || i == (cl.nsend-1)%len(cl.sends)) {
			c.sample(now.Sub(s.at))
			break
		}
	}
	switch rep.Status {
	case diskproto.CodeOK:
		if cl.op == diskproto.OpRead {
			if int(rep.Length) != len(cl.dst) {
				c.st.bad.Add(1)
				return
			}
			fresh, err := cl.track.Add(0, 0, len(rep.Payload))
			if err != nil {
				c.st.bad.Add(1)
				return
			}
			if fresh {
				cl.placed(0, copy(cl.dst, rep.Payload))
				cl.crc = rep.PayloadCRC
				cl.lastData = now
			}
			c.readDone(cl)
			return
		}
		c.settle(cl, nil)
	case diskproto.CodeNoSession:
		// The disk restarted (or evicted us): reopen, then retransmit.
		reopen := !c.reopening && !c.closed
		c.reopening = true
		if reopen {
			go c.reopen()
		}
	case diskproto.CodeChecksum:
		cl.acked = cl.acked[:0]
		id := cl.reqID // under mu: once released, the call may be settled and reused
		// corrupted on the way: send it again now
		c.st.retransmits.Add(1)
		go c.transmit(cl, id, sendAll)
	default:
		c.st.refused.Add(1)
		c.lastRefusal = rep.Status
		c.settle(cl, fmt.Errorf("%w: %v at offset %d: %w", ErrRefused, cl.op, cl.off, rep.Status))
	}
}

// onInfo handles an INFO reply. Called with mu held.
func (c *Client) onInfo(rep *diskproto.Reply) {
	var info diskproto.InfoPayload
	var err error
	if rep.Status == diskproto.CodeOK {
		info, err = diskproto.ParseInfo(rep.Payload)
	} else if rep.Status == diskproto.CodeVersion {
		err = fmt.Errorf("%w: the disk at %v refused version %d of the storage protocol", ErrVersion, c.server, diskproto.Version)
	} else {
		err = fmt.Errorf("%w: INFO: %w", ErrRefused, rep.Status)
	}
	if err != nil && c.info.MaxIO == 0 {
		c.readerErr = err // Dial reports it
	}
	var resend []*call
	var ids []uint64
	if err == nil {
		if c.epoch != 0 && c.epoch != rep.Epoch {
			c.st.reopens.Add(1)
			for _, cl := range c.slots {
				if cl != nil {
					resend = append(resend, cl)
					ids = append(ids, cl.reqID)
					cl.acked = cl.acked[:0]
				}
			}
		}
		c.epoch = rep.Epoch
		c.info = Info{Size: int64(info.Size), BlockSize: int(info.BlockSize), Window: int(info.Window),
			MaxIO: int(info.MaxIO), OpenAccess: info.Features&diskproto.FeatureOpenAccess != 0, Epoch: rep.Epoch,
			WindowBytes: int(info.WindowBytes)}
		c.reopening = false
	}
	close(c.infoSeen)
	c.infoSeen = make(chan struct{})
	for i, cl := range resend {
		c.st.retransmits.Add(1)
		go c.transmit(cl, ids[i], sendAll)
	}
}

func (c *Client) reopen() {
	err := c.hello(context.Background())
	c.mu.Lock()
	c.reopening = false
	c.mu.Unlock()
	_ = err // outstanding requests time out on their own if the disk stays away
}
