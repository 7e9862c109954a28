package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/stack"
)

// Defaults of ReceiverOptions.
const (
	DefaultIdleTimeout = 3 * time.Second
	// idlePoll is how often a receiver that has not started yet checks
	// its context.
	idlePoll = 250 * time.Millisecond
)

// ReceiverOptions shape a receiving run. Zero values take the defaults.
type ReceiverOptions struct {
	Stack    string        // label for the results
	Interval time.Duration // reporting period; default 1 s
	// OnInterval, if set, is called with each interval as it completes,
	// from the receiving goroutine: it must not block for long.
	OnInterval func(Interval)
	// IdleTimeout ends a started test after this long without a datagram,
	// in case every FIN was lost; default 3 s.
	IdleTimeout time.Duration
	Batch       int // datagrams per read, 1..MaxBatch; default DefaultBatch
	BufSize     int // bytes per receive buffer; default MaxSize (longer datagrams are truncated)
}

func (o *ReceiverOptions) setDefaults() error {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Batch == 0 {
		o.Batch = DefaultBatch
	}
	if o.Batch < 1 || o.Batch > MaxBatch {
		return fmt.Errorf("%w: batch %d not in 1..%d", ErrOptions, o.Batch, MaxBatch)
	}
	if o.BufSize == 0 {
		o.BufSize = MaxSize
	}
	if o.BufSize < HeaderLen {
		return fmt.Errorf("%w: buffer %d < %d", ErrOptions, o.BufSize, HeaderLen)
	}
	return nil
}

// recvStream is one stream's receive state, owned by the reading goroutine.
type recvStream struct {
	Totals
	next     uint64  // next sequence number expected
	jitter   float64 // nanoseconds, RFC 3550 estimator
	transit  int64   // last transit time (arrival - send), nanoseconds
	measured bool    // transit is valid
	// Credit: a sender that asked for it (data with Credit set) hears
	// from its stream's socket addr every creditEvery datagrams read.
	addr        netip.AddrPort
	creditEvery uint64
	credited    uint64 // next as last reported
	fin         bool
}

// add counts one data datagram.
func (s *recvStream) add(seq uint64, n int, sent, arrived int64) {
	s.Packets++
	s.Bytes += uint64(n)
	switch {
	case seq >= s.next:
		s.Lost += seq - s.next
		s.next = seq + 1
	default: // counted lost when the later one came; it was only late
		s.OutOfOrder++
		if s.Lost > 0 {
			s.Lost--
		}
	}
	// RFC 3550 section 6.4.1: J += (|D| - J) / 16. Clock offset between
	// the hosts cancels out of D.
	transit := arrived - sent
	if s.measured {
		d := float64(transit - s.transit)
		if d < 0 {
			d = -d
		}
		s.jitter += (d - s.jitter) / 16
	}
	s.transit, s.measured = transit, true
	s.Jitter = time.Duration(s.jitter)
}

// finish applies a FIN: datagrams sent after the last one seen are lost.
func (s *recvStream) finish(sent uint64) {
	if !s.fin && sent > s.next {
		s.Lost += sent - s.next
		s.next = sent
	}
	s.fin = true
}

// RunReceiver counts the datagrams of one test arriving on conn. It
// locks on to the first test whose data it sees and returns when every
// stream's FIN has arrived, after IdleTimeout without datagrams, or when
// ctx ends (with the figures so far and no error). FINs are acknowledged,
// also those of other tests, so an earlier sender stops retrying; pings
// (a sender's probe, or RunRTT) are answered, so one receiver also serves
// as an Echo between tests.
func RunReceiver(ctx context.Context, conn Conn, opts ReceiverOptions) (*Result, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	r := newReceiver(conn, opts)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer conn.SetReadDeadline(time.Time{})
	for ctx.Err() == nil {
		now := time.Now()
		if r.started && r.tick(now) {
			break // idle: the sender is gone
		}
		r.armDeadline(now)
		err := r.read()
		if r.started {
			r.sendCredits()
		}
		if r.started && r.fins == len(r.streams) {
			break
		}
		if err != nil && !isTimeout(err) {
			if isClosed(err) {
				break
			}
			return nil, fmt.Errorf("bench: receive: %w", err)
		}
	}
	return r.result(), nil
}

// read takes one batch off the socket and handles it: lent in place when
// the socket can (a user-level socket's runs of datagrams in its receive
// ring or the link's buffers: no copy), else copied into the receiver's
// buffers.
func (r *receiver) read() error {
	if r.runs != nil {
		n, _, err := r.runs.ReadRuns(r.lent)
		arrived := time.Now()
		for i := range r.lent[:n] {
			run := &r.lent[i]
			r.handleRun(run, arrived)
			run.Payload = nil
			if r.started {
				r.sendCredits() // a run may be 128 datagrams: credit as they are read
			}
		}
		if err == nil {
			r.runs.Release()
		}
		return err
	}
	for i := range r.msgs {
		r.msgs[i].Buf = r.bufs[i]
	}
	n, err := r.conn.ReadBatch(r.msgs)
	arrived := time.Now()
	for i := range r.msgs[:n] {
		r.handle(&r.msgs[i], arrived)
	}
	return err
}

// handleRun accounts for a run's datagrams (a GSO super-frame's, end to
// end, all seg bytes but perhaps the last).
func (r *receiver) handleRun(run *stack.Run, arrived time.Time) {
	p, seg := run.Payload, max(run.Seg, 1)
	if r.started && seg >= HeaderLen {
		p = r.dataRun(p, seg, run.Addr, arrived)
		if len(p) == 0 {
			return
		}
	}
	for {
		k := min(seg, len(p))
		m := Message{Buf: p[:k], N: k, Addr: run.Addr}
		r.handle(&m, arrived)
		if p = p[k:]; len(p) == 0 {
			break
		}
	}
}

// dataRun is handle's data case for the datagrams of a run, the
// receiver's whole per-datagram work in a bulk test: the full-sized data
// datagrams of the test under way at the start of p (of seg bytes each)
// are counted where they lie, with only the header fields the count needs
// read. It returns the rest of p (anything else, and a shorter last
// datagram), for handle.
func (r *receiver) dataRun(p []byte, seg int, from netip.AddrPort, arrived time.Time) []byte {
	test, at := r.res.Test, arrived.UnixNano()
	done := 0
	for len(p) >= seg {
		b := p[:HeaderLen:len(p)]
		if binary.BigEndian.Uint32(b[offMagic:]) != headerMagic || kind(b[offKind]) != kindData || binary.BigEndian.Uint32(b[offTest:]) != test {
			break
		}
		st := int(binary.BigEndian.Uint16(b[offStream:]))
		if st >= len(r.streams) {
			break
		}
		s := &r.streams[st]
		s.add(binary.BigEndian.Uint64(b[offSeq:]), seg, int64(binary.BigEndian.Uint64(b[offSent:])), at)
		if c := uint64(binary.BigEndian.Uint16(b[offCredit:])); c != 0 && (c != s.creditEvery || s.addr != from) {
			s.addr, s.creditEvery = from, c
		}
		p = p[seg:]
		done++
	}
	if done > 0 {
		r.res.Size = max(r.res.Size, seg)
		r.last = arrived
	}
	return p
}

// sendCredits reports to each stream that asked for credit how far the
// receiver has read, once it read creditEvery more datagrams: what this
// application consumed, not what its socket queued.
func (r *receiver) sendCredits() {
	r.credits = r.credits[:0]
	for i := range r.streams {
		s := &r.streams[i]
		if s.creditEvery == 0 || s.next-s.credited < s.creditEvery {
			continue
		}
		s.credited = s.next
		h := header{Kind: kindCredit, Stream: uint16(i), Streams: uint16(len(r.streams)), Test: r.res.Test, Seq: s.next, Sent: time.Now().UnixNano()}
		b := r.creditBufs[len(r.credits)]
		h.encode(b)
		r.credits = append(r.credits, Message{Buf: b, Addr: s.addr})
	}
	if len(r.credits) > 0 {
		_, _ = dgram.WriteAll(r.conn, r.credits) // a lost credit is asked for again (creditProbeAfter)
	}
}

// receiver is the state of one RunReceiver: idle until the first data
// datagram of a test starts it, then counting per stream until every
// stream's FIN or the idle timeout.
type receiver struct {
	conn Conn
	opts ReceiverOptions
	res  *Result
	msgs []Message
	bufs [][]byte
	// runs, when the socket lends datagrams in place, replaces msgs.
	runs dgram.RunReader
	lent []stack.Run
	// credits are the progress reports of one batch (one per stream).
	credits    []Message
	creditBufs [][]byte
	// ack is the one-message batch FIN-ACKs and pongs leave in.
	ack    []Message
	ackBuf []byte

	streams  []recvStream
	started  bool
	fins     int
	last     time.Time // last datagram of the test
	nextTick time.Time
	ivs      intervals
	deadline time.Time // the read deadline set
}

func newReceiver(conn Conn, opts ReceiverOptions) *receiver {
	r := &receiver{conn: conn, opts: opts, res: &Result{Role: RoleReceiver, Stack: opts.Stack},
		msgs: make([]Message, opts.Batch), bufs: make([][]byte, opts.Batch), ackBuf: make([]byte, HeaderLen),
		ivs: intervals{every: opts.Interval, on: opts.OnInterval}}
	if ua, ok := conn.LocalAddr().(interface{ AddrPort() netip.AddrPort }); ok {
		r.res.Local = ua.AddrPort()
	}
	if v := dgram.Runs(conn); v != nil {
		r.runs, r.lent = v, make([]stack.Run, opts.Batch)
	} else {
		for i := range r.bufs {
			r.bufs[i] = make([]byte, opts.BufSize)
		}
	}
	r.ack = []Message{{Buf: r.ackBuf}}
	return r
}

// snapshot copies every stream's totals so far.
func (r *receiver) snapshot() []Totals {
	t := make([]Totals, len(r.streams))
	for i := range r.streams {
		t[i] = r.streams[i].Totals
	}
	return t
}

// tick closes the interval that ended by now, and reports whether the
// test went idle (no datagram for IdleTimeout).
func (r *receiver) tick(now time.Time) (idle bool) {
	if !now.Before(r.nextTick) {
		r.ivs.add(r.snapshot(), now.Sub(r.res.Started))
		r.nextTick = r.nextTick.Add(r.opts.Interval)
		if !r.nextTick.After(now) {
			r.nextTick = now.Add(r.opts.Interval)
		}
	}
	return now.Sub(r.last) >= r.opts.IdleTimeout
}

// armDeadline sets the read deadline to the next event: the next
// interval's end or the idle timeout once started, a short poll before.
func (r *receiver) armDeadline(now time.Time) {
	want := now.Add(idlePoll)
	if r.started {
		want = r.nextTick
		if idle := r.last.Add(r.opts.IdleTimeout); idle.Before(want) {
			want = idle
		}
	}
	if !want.Equal(r.deadline) {
		r.deadline = want
		r.conn.SetReadDeadline(r.deadline)
	}
}

// handle accounts for one datagram: data, a FIN (answered with a
// FIN-ACK), a ping (answered with a pong) or something to ignore.
func (r *receiver) handle(m *Message, arrived time.Time) {
	res := r.res
	var h header
	if parseHeader(m.Buf[:m.N], &h) != nil {
		res.Ignored++
		return
	}
	switch h.Kind {
	case kindData:
		if !r.started && !r.start(&h, m.Addr, arrived) {
			res.Ignored++
			return
		}
		if h.Test != res.Test || int(h.Stream) >= len(r.streams) {
			res.Ignored++
			return
		}
		s := &r.streams[h.Stream]
		s.add(h.Seq, m.N, h.Sent, arrived.UnixNano())
		if h.Credit != 0 {
			s.addr, s.creditEvery = m.Addr, uint64(h.Credit)
		}
		res.Size = max(res.Size, m.N)
		r.last = arrived
	case kindFIN:
		ours := r.started && h.Test == res.Test && int(h.Stream) < len(r.streams)
		var got uint64
		if ours {
			s := &r.streams[h.Stream]
			if !s.fin {
				r.fins++
			}
			s.finish(h.Seq)
			got = s.Packets
			r.last = arrived
		}
		a := header{Kind: kindFINAck, Stream: h.Stream, Streams: h.Streams, Test: h.Test, Seq: got, Sent: h.Sent}
		a.encode(r.ackBuf)
		r.ack[0].Addr = m.Addr
		r.conn.WriteBatch(r.ack) // a lost ack only makes the sender retry
	case kindCredit: // a sender held back by its window asks how far we read
		// This datagram left after every datagram counted in h.Seq, and
		// one flow keeps its order: all of them are read or lost.
		a := h
		a.Sent = time.Now().UnixNano()
		a.encode(r.ackBuf)
		r.ack[0].Addr = m.Addr
		r.conn.WriteBatch(r.ack)
	case kindPing: // a sender's probe before it starts (it also resolves ARP)
		m.Buf[4] = byte(kindPong)
		r.ack[0].Addr = m.Addr
		r.ack[0].Buf = m.Buf[:m.N]
		r.conn.WriteBatch(r.ack)
		r.ack[0].Buf = r.ackBuf
	default:
		res.Ignored++
	}
}

// start begins the test the data datagram h (from addr) belongs to; false
// if h announces no usable number of streams.
func (r *receiver) start(h *header, from netip.AddrPort, arrived time.Time) bool {
	if h.Streams == 0 || h.Streams > MaxStreams {
		return false
	}
	r.started = true
	r.res.Test, r.res.Remote, r.res.Started = h.Test, from, arrived
	r.res.Parallel = int(h.Streams)
	r.streams = make([]recvStream, h.Streams)
	r.credits = make([]Message, 0, h.Streams)
	r.creditBufs = make([][]byte, h.Streams)
	for i := range r.creditBufs {
		r.creditBufs[i] = make([]byte, HeaderLen)
	}
	for i := range r.streams {
		r.streams[i].Stream = i
	}
	r.nextTick = arrived.Add(r.opts.Interval)
	return true
}

// result closes the last interval and sums the streams.
func (r *receiver) result() *Result {
	res := r.res
	if !r.started {
		return res
	}
	end := r.last.Sub(res.Started)
	r.ivs.final(r.snapshot(), max(end, r.ivs.last))
	res.Intervals = r.ivs.list
	res.Streams = r.snapshot()
	for i := range res.Streams {
		res.Streams[i].End = end
	}
	res.Sum = sumOf(res.Streams, 0, end)
	return res
}
