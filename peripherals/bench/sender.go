package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/stack"
)

// Defaults of SenderOptions, ReceiverOptions and RTTOptions.
const (
	DefaultSize       = 1472 // fills a 1500-byte MTU
	DefaultDuration   = 10 * time.Second
	DefaultInterval   = time.Second
	DefaultFINTimeout = 100 * time.Millisecond
	DefaultFINRetries = 10
	// maxWriteErrors in a row, with nothing sent, end a stream with an error.
	maxWriteErrors = 10000
	// DefaultWindow is the credit window bench runs by default: a stream
	// stays at most this many datagrams ahead of what the receiving
	// application has read. It is far below what the receiving socket
	// holds (64 MiB in a bench run), so the receiver cannot overflow,
	// and large enough to keep the sender busy across the credit's round
	// trip on a loaded machine.
	DefaultWindow = 4096
	// MaxWindow bounds Window: the receiver reports every Window/4
	// datagrams, a 16-bit field.
	MaxWindow = 4 * 0xffff
	// creditProbeAfter is how long a stream held back by its window waits
	// for a credit before it asks for one (a lost credit, or data lost at
	// the window's tail, would otherwise stall it for good); it asks again
	// after twice as long, up to creditProbeMax.
	creditProbeAfter = 2 * time.Millisecond
	creditProbeMax   = 64 * time.Millisecond
)

// ErrOptions is wrapped by errors about invalid options.
var ErrOptions = errors.New("bench: invalid options")

// SenderOptions shape a sending run. Zero values take the defaults.
type SenderOptions struct {
	Stack    string        // label for the results, e.g. "user" or "kernel"
	Size     int           // datagram payload bytes, HeaderLen..MaxSize; default 1472
	Duration time.Duration // how long to send; default 10 s, unless Count is set
	Count    uint64        // datagrams per stream; 0 = no limit (then Duration applies)
	Rate     float64       // target payload bits/s over all streams; 0 = as fast as possible
	// Window, if set, makes each stream stay at most Window datagrams
	// ahead of what the receiving application has read: the receiver
	// reports its progress every Window/4 datagrams (kindCredit), so a
	// sender that outruns its receiver is slowed by it instead of filling
	// its buffers until they drop. 0: no credit (Rate alone paces).
	Window   int
	Batch    int           // datagrams per write, 1..MaxBatch; default DefaultBatch
	Parallel int           // streams, 1..MaxStreams; default 1
	Interval time.Duration // reporting period; default 1 s
	// OnInterval, if set, is called with each interval as it completes
	// (from a goroutine of the run; it should not block for long).
	OnInterval func(Interval)
	// FINTimeout and FINRetries bound the end-of-test handshake.
	FINTimeout time.Duration
	FINRetries int
}

func (o *SenderOptions) setDefaults() error {
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	if o.Size < HeaderLen || o.Size > MaxSize {
		return fmt.Errorf("%w: size %d not in %d..%d", ErrOptions, o.Size, HeaderLen, MaxSize)
	}
	if o.Duration == 0 && o.Count == 0 {
		o.Duration = DefaultDuration
	}
	if o.Duration < 0 || o.Rate < 0 {
		return fmt.Errorf("%w: negative duration or rate", ErrOptions)
	}
	if o.Window < 0 || o.Window > MaxWindow || (o.Window > 0 && o.Window < 4) {
		return fmt.Errorf("%w: window %d not 0 or in 4..%d", ErrOptions, o.Window, MaxWindow)
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.Batch < 1 || o.Batch > MaxBatch {
		return fmt.Errorf("%w: batch %d not in 1..%d", ErrOptions, o.Batch, MaxBatch)
	}
	if o.Parallel == 0 {
		o.Parallel = 1
	}
	if o.Parallel < 1 || o.Parallel > MaxStreams {
		return fmt.Errorf("%w: parallel %d not in 1..%d", ErrOptions, o.Parallel, MaxStreams)
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.FINTimeout <= 0 {
		o.FINTimeout = DefaultFINTimeout
	}
	if o.FINRetries <= 0 {
		o.FINRetries = DefaultFINRetries
	}
	return nil
}

// RunSender sends to dst over conn until the duration or count is reached
// or ctx ends, and returns what it sent. With Parallel > 1 the streams
// share conn (each has its own stream id); RunSenderStreams gives each
// stream its own socket, as iperf3 does.
func RunSender(ctx context.Context, conn Conn, dst netip.AddrPort, opts SenderOptions) (*Result, error) {
	if opts.Parallel <= 0 {
		opts.Parallel = 1
	}
	if opts.Parallel > MaxStreams {
		return nil, fmt.Errorf("%w: parallel %d > %d", ErrOptions, opts.Parallel, MaxStreams)
	}
	conns := make([]Conn, opts.Parallel)
	for i := range conns {
		conns[i] = conn
	}
	return RunSenderStreams(ctx, conns, dst, opts)
}

// RunSenderStreams runs one stream per conn (opts.Parallel is set to
// len(conns)). The end-of-test handshake runs over conns[0].
func RunSenderStreams(ctx context.Context, conns []Conn, dst netip.AddrPort, opts SenderOptions) (*Result, error) {
	opts.Parallel = len(conns)
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if !dst.IsValid() || dst.Port() == 0 {
		return nil, fmt.Errorf("%w: destination %v", ErrOptions, dst)
	}
	res := &Result{
		Role: RoleSender, Stack: opts.Stack, Remote: dst, Test: rand.Uint32(),
		Size: opts.Size, Parallel: opts.Parallel, Duration: opts.Duration, Rate: opts.Rate, Window: opts.Window,
	}
	if ua, ok := conns[0].LocalAddr().(interface{ AddrPort() netip.AddrPort }); ok {
		res.Local = ua.AddrPort()
	}
	streams := make([]*sendStream, len(conns))
	for i := range streams {
		streams[i] = newSendStream(res, i, opts, dst)
	}
	pps := 0.0
	if opts.Rate > 0 {
		pps = opts.Rate / 8 / float64(opts.Size) / float64(len(streams))
	}

	// Probe first, as iperf3's control connection does: it finds out that
	// a receiver is there and resolves the peer's link address, so the
	// first batch is not lost in a neighbour queue.
	res.Reached = probe(ctx, conns[0], dst, res.Test, opts)

	// Credits come back on the streams' sockets: one reader per socket
	// hands them to its streams while they send.
	var credits *creditReaders
	if opts.Window > 0 {
		credits = startCredits(conns, streams, res.Test)
	}

	res.Started = time.Now()
	var deadline time.Time
	if opts.Duration > 0 {
		deadline = res.Started.Add(opts.Duration)
	}
	// The watchdog unblocks writers stuck past the end (a lost wake-up
	// must not hang the run): it expires the write deadlines.
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		var timeout <-chan time.Time
		if !deadline.IsZero() {
			t := time.NewTimer(time.Until(deadline) + time.Second)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-stopWatch:
			return
		case <-ctx.Done():
		case <-timeout:
		}
		for _, c := range conns {
			c.SetWriteDeadline(time.Now())
		}
	}()

	rep := newReporter(res.Started, opts.Interval, opts.OnInterval, func() []Totals {
		t := make([]Totals, len(streams))
		for i, s := range streams {
			t[i] = Totals{Stream: i, Packets: s.packets.Load(), Bytes: s.bytes.Load()}
		}
		return t
	})
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() { errs[i] = s.run(ctx, conns[i], res.Started, deadline, pps) })
	}
	wg.Wait()
	if credits != nil {
		credits.stop()
	}
	end := time.Since(res.Started)
	rep.stop(end)
	close(stopWatch)
	<-watchDone
	for _, c := range conns {
		c.SetWriteDeadline(time.Time{})
	}

	res.Intervals = rep.list
	for i, s := range streams {
		res.Streams = append(res.Streams, Totals{Stream: i, End: end, Packets: s.packets.Load(), Bytes: s.bytes.Load()})
		res.WriteErrors += s.writeErrors
		res.CreditWaits += s.creditWaits
		res.CreditProbes += s.creditProbes
	}
	res.Sum = sumOf(res.Streams, 0, end)
	res.FINAcked = finish(conns[0], dst, res, opts)
	return res, errors.Join(errs...)
}

// sendStream is one stream's sending loop and its counters, which the
// reporter reads while it runs.
type sendStream struct {
	id          int
	hdr         header
	msgs        []Message
	count       uint64
	batch       int
	writeErrors uint64
	// Credit (Window > 0): the stream may send up to credited + window.
	window       uint64
	creditWaits  uint64 // times the window held the stream back
	creditProbes uint64 // credits asked for after creditProbeAfter
	creditTimer  *time.Timer
	probe        []Message
	_            [64]byte
	packets      atomic.Uint64
	bytes        atomic.Uint64
	_            [64]byte
	credited     atomic.Uint64 // datagrams the receiver read (or lost), as it last reported
	waiting      atomic.Bool   // the stream is blocked on its window
	creditReady  chan struct{} // a credit came while waiting
}

func newSendStream(res *Result, id int, o SenderOptions, dst netip.AddrPort) *sendStream {
	s := &sendStream{
		id:    id,
		hdr:   header{Kind: kindData, Stream: uint16(id), Streams: uint16(o.Parallel), Test: res.Test},
		msgs:  make([]Message, o.Batch),
		count: o.Count,
		batch: o.Batch,
	}
	if o.Window > 0 {
		s.window = uint64(o.Window)
		s.hdr.Credit = uint16(max(1, o.Window/4))
		s.creditReady = make(chan struct{}, 1)
		s.probe = []Message{{Buf: make([]byte, HeaderLen), Addr: dst}}
	}
	// One backing array, the datagrams back to back: a kernel socket
	// then hands a run of them to UDP_SEGMENT as one iovec, as a program
	// that builds its super-datagram in one buffer does (dgram merges
	// adjacent buffers); a 64 B run of 128 separate iovecs costs the
	// kernel's copy a loop step per datagram.
	backing := make([]byte, len(s.msgs)*o.Size)
	for i := range s.msgs {
		s.msgs[i] = Message{Buf: backing[i*o.Size : (i+1)*o.Size], Addr: dst}
	}
	return s
}

func (s *sendStream) run(ctx context.Context, c Conn, start, deadline time.Time, pps float64) error {
	var sent uint64
	failures := 0
	rw, _ := c.(runWriter)
	for ctx.Err() == nil {
		now := time.Now()
		if !deadline.IsZero() && !now.Before(deadline) {
			break
		}
		n := uint64(s.batch)
		if s.count > 0 {
			n = min(n, s.count-sent)
			if n == 0 {
				break
			}
		}
		if pps > 0 {
			due := uint64(now.Sub(start).Seconds()*pps) + 1
			if due <= sent {
				next := start.Add(time.Duration(float64(sent) / pps * float64(time.Second)))
				if !deadline.IsZero() && next.After(deadline) {
					next = deadline
				}
				sleepCtx(ctx, time.Until(next))
				continue
			}
			n = min(n, due-sent)
		}
		if s.window > 0 {
			room := s.room(sent)
			if room == 0 {
				if !s.waitCredit(ctx, c, sent, deadline) {
					break
				}
				continue
			}
			n = min(n, room)
		}
		ts := now.UnixNano()
		var w int
		var err error
		// Asked before every write: a socket lowers it when the kernel
		// refuses a segmentation (a datagram larger than the path's MTU,
		// sent in IP fragments, cannot be a UDP_SEGMENT run).
		maxRun := 0
		if rw != nil {
			maxRun = rw.MaxRun(len(s.msgs[0].Buf))
		}
		if mr := uint64(maxRun); mr > 1 && n > mr {
			// Whole runs, the rest in the next write: a batch of 128
			// where a run holds 122 (stack.UDPConn.MaxRun at 64 B) would
			// otherwise leave a super-frame of 6 each time.
			n -= n % mr
		}
		if maxRun > 1 {
			w, err = s.writeRuns(rw, n, sent, ts)
		} else {
			for i := range n {
				h := s.hdr
				h.Seq, h.Sent = sent+i, ts
				h.encode(s.msgs[i].Buf)
			}
			w, err = c.WriteBatch(s.msgs[:n])
		}
		if w > 0 {
			sent += uint64(w)
			s.packets.Add(uint64(w))
			s.bytes.Add(uint64(w * len(s.msgs[0].Buf)))
		}
		if err == nil {
			failures = 0
			continue
		}
		if isClosed(err) || ctx.Err() != nil {
			return nil
		}
		if isTimeout(err) && !deadline.IsZero() && !time.Now().Before(deadline) {
			return nil // the watchdog ended a blocked write
		}
		s.writeErrors++
		if w == 0 {
			failures++
			if failures >= maxWriteErrors {
				return fmt.Errorf("bench: stream %d: %d writes failed in a row: %w", s.id, failures, err)
			}
			time.Sleep(20 * time.Microsecond) // let a full queue drain (ENOBUFS)
		}
	}
	return nil
}

// runWriter is a socket that lets a sender write datagrams in place, a
// GSO super-frame's run at a time (stack.UDPConn's BeginRun/EndRun): in
// the link's transmit slot when the link lends them, so the payload is
// never copied on the way out.
type runWriter interface {
	MaxRun(seg int) int
	BeginRun(dst netip.AddrPort, seg, count int) ([]byte, error)
	EndRun() (int, error)
}

var _ runWriter = (*stack.UDPConn)(nil)

// writeRuns sends n datagrams, numbered from sent, as runs of at most
// MaxRun written in place: each datagram's header is written where it
// leaves from, and its payload bytes are left as they are (zeros, as in
// the buffers of the copying path, WriteBatch).
func (s *sendStream) writeRuns(rw runWriter, n, sent uint64, ts int64) (int, error) {
	size := len(s.msgs[0].Buf)
	dst := s.msgs[0].Addr
	done := 0
	for uint64(done) < n {
		k := min(int(n)-done, rw.MaxRun(size)) // lowered by a refused run (see run)
		buf, err := rw.BeginRun(dst, size, k)
		if err != nil {
			return done, err
		}
		for i := range k {
			h := s.hdr
			h.Seq, h.Sent = sent+uint64(done+i), ts
			h.encode(buf[i*size:])
		}
		m, err := rw.EndRun()
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// room is how many datagrams the window lets the stream send now.
func (s *sendStream) room(sent uint64) uint64 {
	ahead := sent - min(sent, s.credited.Load())
	if ahead >= s.window {
		return 0
	}
	return s.window - ahead
}

// credit records the receiver's progress (credits may come out of order:
// a probe's answer can pass a regular report).
func (s *sendStream) credit(seq uint64) {
	for {
		old := s.credited.Load()
		if seq <= old {
			return
		}
		if s.credited.CompareAndSwap(old, seq) {
			break
		}
	}
	if s.waiting.Load() && s.waiting.CompareAndSwap(true, false) {
		select {
		case s.creditReady <- struct{}{}:
		default:
		}
	}
}

// waitCredit blocks the stream until the window opens, asking the
// receiver for its progress every creditProbeAfter; false when the test
// ends first.
func (s *sendStream) waitCredit(ctx context.Context, c Conn, sent uint64, deadline time.Time) bool {
	s.creditWaits++
	probeAfter := creditProbeAfter
	for {
		s.waiting.Store(true)
		if s.room(sent) > 0 {
			s.waiting.Store(false)
			return true
		}
		wait := probeAfter
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				s.waiting.Store(false)
				return false
			}
			wait = min(wait, left)
		}
		if s.creditTimer == nil {
			s.creditTimer = time.NewTimer(wait)
		} else {
			s.creditTimer.Reset(wait)
		}
		select {
		case <-s.creditReady:
			s.creditTimer.Stop()
		case <-ctx.Done():
			s.creditTimer.Stop()
			s.waiting.Store(false)
			return false
		case <-s.creditTimer.C:
			// Everything sent before this probe has been read or lost
			// by the time the receiver reads it: its answer opens the
			// window even if the window's last datagrams were lost.
			h := s.hdr
			h.Kind, h.Seq, h.Sent = kindCredit, sent, time.Now().UnixNano()
			h.encode(s.probe[0].Buf)
			_, _ = c.WriteBatch(s.probe)
			s.creditProbes++
			// A receiver that is merely slow answers in its turn: ask
			// less often the longer it takes.
			probeAfter = min(2*probeAfter, creditProbeMax)
		}
	}
}

// creditReaders read the receiver's credits on the senders' sockets.
type creditReaders struct {
	conns   []Conn
	done    atomic.Bool
	running sync.WaitGroup
}

func startCredits(conns []Conn, streams []*sendStream, test uint32) *creditReaders {
	cr := &creditReaders{}
	for _, c := range conns {
		if !slices.Contains(cr.conns, c) {
			cr.conns = append(cr.conns, c)
		}
	}
	for _, c := range cr.conns {
		cr.running.Go(func() { cr.read(c, streams, test) })
	}
	return cr
}

func (cr *creditReaders) read(c Conn, streams []*sendStream, test uint32) {
	in := make([]Message, 16)
	bufs := make([][]byte, len(in))
	for i := range bufs {
		bufs[i] = make([]byte, 256)
	}
	for !cr.done.Load() {
		for i := range in {
			in[i].Buf = bufs[i]
		}
		n, err := c.ReadBatch(in)
		for _, m := range in[:n] {
			var h header
			if parseHeader(m.Buf[:m.N], &h) == nil && h.Kind == kindCredit && h.Test == test && int(h.Stream) < len(streams) {
				streams[h.Stream].credit(h.Seq)
			}
		}
		if err != nil && !isTimeout(err) {
			return // closed
		}
	}
}

// stop ends the readers (their sockets' read deadlines expire) and
// clears the deadlines for the end-of-test handshake.
func (cr *creditReaders) stop() {
	cr.done.Store(true)
	for _, c := range cr.conns {
		c.SetReadDeadline(time.Now())
	}
	cr.running.Wait()
	for _, c := range cr.conns {
		c.SetReadDeadline(time.Time{})
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// probe pings the receiver until it answers or the retries run out.
func probe(ctx context.Context, c Conn, dst netip.AddrPort, test uint32, o SenderOptions) bool {
	out := []Message{{Buf: make([]byte, HeaderLen), Addr: dst}}
	in := make([]Message, 8)
	for i := range in {
		in[i].Buf = make([]byte, 256)
	}
	defer c.SetReadDeadline(time.Time{})
	for try := 0; try < o.FINRetries && ctx.Err() == nil; try++ {
		h := header{Kind: kindPing, Attempt: uint8(try), Streams: uint16(o.Parallel), Test: test, Sent: time.Now().UnixNano()}
		h.encode(out[0].Buf)
		_, _ = c.WriteBatch(out) // a lost ping is sent again after FINTimeout
		c.SetReadDeadline(time.Now().Add(o.FINTimeout))
		for {
			n, err := c.ReadBatch(in)
			for _, m := range in[:n] {
				var p header
				if parseHeader(m.Buf[:m.N], &p) == nil && p.Kind == kindPong && p.Test == test {
					return true
				}
			}
			if err != nil {
				break
			}
		}
	}
	return false
}

// finish sends every stream's FIN (holding the datagrams it sent) until
// the receiver acknowledges them all or the retries run out.
func finish(c Conn, dst netip.AddrPort, res *Result, o SenderOptions) bool {
	acked := make([]bool, len(res.Streams))
	left := len(acked)
	out := make([]Message, 0, len(acked))
	in := make([]Message, MaxBatch)
	for i := range in {
		in[i].Buf = make([]byte, 256)
	}
	defer c.SetReadDeadline(time.Time{})
	for try := 0; try < o.FINRetries && left > 0; try++ {
		out = out[:0]
		for i, t := range res.Streams {
			if acked[i] {
				continue
			}
			b := make([]byte, HeaderLen)
			h := header{Kind: kindFIN, Stream: uint16(i), Streams: uint16(len(acked)), Test: res.Test, Seq: t.Packets, Sent: time.Now().UnixNano()}
			h.encode(b)
			out = append(out, Message{Buf: b, Addr: dst})
		}
		_, _ = dgram.WriteAll(c, out) // a lost FIN is sent again after FINTimeout
		c.SetReadDeadline(time.Now().Add(o.FINTimeout))
		for left > 0 {
			n, err := c.ReadBatch(in)
			for _, m := range in[:n] {
				var h header
				if parseHeader(m.Buf[:m.N], &h) != nil || h.Kind != kindFINAck || h.Test != res.Test ||
					int(h.Stream) >= len(acked) || acked[h.Stream] {
					continue
				}
				acked[h.Stream] = true
				left--
			}
			if err != nil {
				break
			}
		}
	}
	return left == 0
}
