package bench

import (
	"context"
	"fmt"
	"net/netip"
	"time"
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
	fin      bool
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
	res := &Result{Role: RoleReceiver, Stack: opts.Stack}
	if ua, ok := conn.LocalAddr().(interface{ AddrPort() netip.AddrPort }); ok {
		res.Local = ua.AddrPort()
	}
	msgs := make([]Message, opts.Batch)
	bufs := make([][]byte, opts.Batch)
	for i := range msgs {
		bufs[i] = make([]byte, opts.BufSize)
	}
	ackBuf := make([]byte, HeaderLen)
	ack := []Message{{Buf: ackBuf}}

	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer conn.SetReadDeadline(time.Time{})

	var (
		streams  []recvStream
		started  bool
		fins     int
		last     time.Time // last datagram of the test
		nextTick time.Time
		ivs      = intervals{every: opts.Interval, on: opts.OnInterval}
		deadline time.Time
	)
	snapshot := func() []Totals {
		t := make([]Totals, len(streams))
		for i := range streams {
			t[i] = streams[i].Totals
		}
		return t
	}
	for {
		if ctx.Err() != nil {
			break
		}
		now := time.Now()
		if started {
			if !now.Before(nextTick) {
				ivs.add(snapshot(), now.Sub(res.Started))
				nextTick = nextTick.Add(opts.Interval)
				if !nextTick.After(now) {
					nextTick = now.Add(opts.Interval)
				}
			}
			if now.Sub(last) >= opts.IdleTimeout {
				break
			}
		}
		want := now.Add(idlePoll)
		if started {
			want = nextTick
			if idle := last.Add(opts.IdleTimeout); idle.Before(want) {
				want = idle
			}
		}
		if !want.Equal(deadline) {
			deadline = want
			conn.SetReadDeadline(deadline)
		}
		for i := range msgs {
			msgs[i].Buf = bufs[i]
		}
		n, err := conn.ReadBatch(msgs)
		arrived := time.Now()
		for _, m := range msgs[:n] {
			var h header
			if parseHeader(m.Buf[:m.N], &h) != nil {
				res.Ignored++
				continue
			}
			switch h.Kind {
			case kindData:
				if !started {
					if h.Streams == 0 || h.Streams > MaxStreams {
						res.Ignored++
						continue
					}
					started = true
					res.Test, res.Remote, res.Started = h.Test, m.Addr, arrived
					res.Parallel = int(h.Streams)
					streams = make([]recvStream, h.Streams)
					for i := range streams {
						streams[i].Stream = i
					}
					nextTick = arrived.Add(opts.Interval)
				}
				if h.Test != res.Test || int(h.Stream) >= len(streams) {
					res.Ignored++
					continue
				}
				streams[h.Stream].add(h.Seq, m.N, h.Sent, arrived.UnixNano())
				res.Size = max(res.Size, m.N)
				last = arrived
			case kindFIN:
				ours := started && h.Test == res.Test && int(h.Stream) < len(streams)
				var got uint64
				if ours {
					s := &streams[h.Stream]
					if !s.fin {
						fins++
					}
					s.finish(h.Seq)
					got = s.Packets
					last = arrived
				}
				a := header{Kind: kindFINAck, Stream: h.Stream, Streams: h.Streams, Test: h.Test, Seq: got, Sent: h.Sent}
				a.encode(ackBuf)
				ack[0].Addr = m.Addr
				conn.WriteBatch(ack) // a lost ack only makes the sender retry
			case kindPing: // a sender's probe before it starts (it also resolves ARP)
				m.Buf[4] = byte(kindPong)
				ack[0].Addr = m.Addr
				ack[0].Buf = m.Buf[:m.N]
				conn.WriteBatch(ack)
				ack[0].Buf = ackBuf
			default:
				res.Ignored++
			}
		}
		if started && fins == len(streams) {
			break
		}
		if err != nil && !isTimeout(err) {
			if isClosed(err) {
				break
			}
			return nil, fmt.Errorf("bench: receive: %w", err)
		}
	}
	if !started {
		return res, nil
	}
	end := last.Sub(res.Started)
	ivs.final(snapshot(), max(end, ivs.last))
	res.Intervals = ivs.list
	res.Streams = snapshot()
	for i := range res.Streams {
		res.Streams[i].End = end
	}
	res.Sum = sumOf(res.Streams, 0, end)
	return res, nil
}
