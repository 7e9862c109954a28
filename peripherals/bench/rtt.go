package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"
)

// Defaults of RTTOptions.
const (
	DefaultRTTSize    = 64
	DefaultRTTTimeout = 200 * time.Millisecond
	DefaultRTTRetries = 3
)

// RTTOptions shape a request/response run. Zero values take the defaults.
type RTTOptions struct {
	Stack    string        // label for the results
	Size     int           // ping payload bytes, HeaderLen..MaxSize; default 64
	Count    int           // pings; 0 = until Duration
	Duration time.Duration // default 10 s unless Count is set
	// Timeout is how long to wait for a pong before retransmitting the
	// ping; after Retries retransmissions the ping counts as lost.
	Timeout time.Duration
	Retries int
	Gap     time.Duration // pause between a pong and the next ping
	// Interval is the live reporting period (default 1 s); OnInterval, if
	// set, gets each one's figures from the pinging goroutine.
	Interval   time.Duration
	OnInterval func(RTTInterval)
}

// RTTInterval is one live reporting period of a request/response run.
// Start and End are offsets from the run's start.
type RTTInterval struct {
	Start, End         time.Duration
	Pings, Answered    uint64
	Lost, Retransmits  uint64
	Min, P50, P99, Max time.Duration
}

func rttInterval(samples []time.Duration, start, end time.Duration, pings, lost, retx uint64) RTTInterval {
	iv := RTTInterval{Start: start, End: end, Pings: pings, Answered: uint64(len(samples)), Lost: lost, Retransmits: retx}
	if len(samples) > 0 {
		s := &RTTResult{Samples: slices.Clone(samples)}
		slices.Sort(s.Samples)
		iv.Min, iv.P50, iv.P99, iv.Max = s.Samples[0], s.Percentile(50), s.Percentile(99), s.Samples[len(s.Samples)-1]
	}
	return iv
}

func (o *RTTOptions) setDefaults() error {
	if o.Size == 0 {
		o.Size = DefaultRTTSize
	}
	if o.Size < HeaderLen || o.Size > MaxSize {
		return fmt.Errorf("%w: size %d not in %d..%d", ErrOptions, o.Size, HeaderLen, MaxSize)
	}
	if o.Count < 0 || o.Duration < 0 || o.Retries < 0 {
		return fmt.Errorf("%w: negative count, duration or retries", ErrOptions)
	}
	if o.Count == 0 && o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultRTTTimeout
	}
	if o.Retries == 0 {
		o.Retries = DefaultRTTRetries
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	return nil
}

// RTTResult is what a request/response run measured.
type RTTResult struct {
	Stack   string
	Local   netip.AddrPort
	Remote  netip.AddrPort
	Started time.Time
	Elapsed time.Duration
	Size    int
	// Samples are the round-trip times of the answered pings, sorted.
	Samples     []time.Duration
	Pings       uint64 // pings whose answer was awaited
	Sent        uint64 // ping datagrams written, retransmissions included
	Retransmits uint64
	Lost        uint64 // pings never answered after all retries
	Stale       uint64 // pongs for an earlier ping or another test, ignored
}

// Percentile returns the p-th percentile (0 < p <= 100) of the samples by
// the nearest-rank method; zero without samples.
func (r *RTTResult) Percentile(p float64) time.Duration {
	n := len(r.Samples)
	if n == 0 || p <= 0 {
		return 0
	}
	k := int(math.Ceil(p / 100 * float64(n)))
	k = min(max(k, 1), n)
	return r.Samples[k-1]
}

// Mean is the average round-trip time.
func (r *RTTResult) Mean() time.Duration {
	if len(r.Samples) == 0 {
		return 0
	}
	var sum time.Duration
	for _, s := range r.Samples {
		sum += s
	}
	return sum / time.Duration(len(r.Samples))
}

// RunRTT ping-pongs datagrams with an Echo at dst, one outstanding at a
// time, and returns the round-trip times. The pong echoes the ping's send
// timestamp, so an answer to any transmission of a ping measures a true
// round trip. It returns early, without error, when ctx ends.
func RunRTT(ctx context.Context, conn Conn, dst netip.AddrPort, opts RTTOptions) (*RTTResult, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if !dst.IsValid() || dst.Port() == 0 {
		return nil, fmt.Errorf("%w: destination %v", ErrOptions, dst)
	}
	res := &RTTResult{Stack: opts.Stack, Remote: dst, Size: opts.Size}
	if ua, ok := conn.LocalAddr().(interface{ AddrPort() netip.AddrPort }); ok {
		res.Local = ua.AddrPort()
	}
	test := rand.Uint32()
	ping := []Message{{Buf: make([]byte, opts.Size), Addr: dst}}
	in := make([]Message, 8)
	for i := range in {
		in[i].Buf = make([]byte, max(opts.Size, 2048))
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer conn.SetReadDeadline(time.Time{})

	res.Started = time.Now()
	var end time.Time
	if opts.Duration > 0 {
		end = res.Started.Add(opts.Duration)
	}
	// Live reporting: counters at the start of the current interval.
	var ivStart time.Duration
	ivFirst, ivPings, ivLost, ivRetx := 0, uint64(0), uint64(0), uint64(0)
	report := func(end time.Duration) {
		if opts.OnInterval != nil {
			opts.OnInterval(rttInterval(res.Samples[ivFirst:], ivStart, end, res.Pings-ivPings, res.Lost-ivLost, res.Retransmits-ivRetx))
		}
		ivStart, ivFirst, ivPings, ivLost, ivRetx = end, len(res.Samples), res.Pings, res.Lost, res.Retransmits
	}
	for seq := uint64(0); ; seq++ {
		if el := time.Since(res.Started); el-ivStart >= opts.Interval {
			report(el)
		}
		if ctx.Err() != nil || (opts.Count > 0 && seq >= uint64(opts.Count)) ||
			(!end.IsZero() && !time.Now().Before(end)) {
			break
		}
		if seq > 0 && opts.Gap > 0 {
			sleepCtx(ctx, opts.Gap)
		}
		res.Pings++
		answered := false
		for attempt := 0; attempt <= opts.Retries && !answered && ctx.Err() == nil; attempt++ {
			h := header{Kind: kindPing, Attempt: uint8(min(attempt, 255)), Stream: 0, Streams: 1,
				Test: test, Seq: seq, Sent: time.Now().UnixNano()}
			h.encode(ping[0].Buf)
			if _, err := conn.WriteBatch(ping); err != nil {
				if isClosed(err) {
					return nil, fmt.Errorf("bench: rtt: %w", err)
				}
				// Count it as sent and lost: the timeout retransmits.
			}
			res.Sent++
			if attempt > 0 {
				res.Retransmits++
			}
			conn.SetReadDeadline(time.Now().Add(opts.Timeout))
			for !answered {
				n, err := conn.ReadBatch(in)
				now := time.Now().UnixNano()
				for _, m := range in[:n] {
					var p header
					if parseHeader(m.Buf[:m.N], &p) != nil || p.Kind != kindPong || p.Test != test || p.Seq != seq || answered {
						res.Stale++
						continue
					}
					answered = true
					res.Samples = append(res.Samples, time.Duration(now-p.Sent))
				}
				if err != nil {
					if isClosed(err) {
						return nil, fmt.Errorf("bench: rtt: %w", err)
					}
					break // timeout (or ctx): retransmit or give up
				}
			}
		}
		if !answered && ctx.Err() == nil {
			res.Lost++
		}
		if !answered && ctx.Err() != nil {
			res.Pings-- // cut short, not lost
		}
	}
	res.Elapsed = time.Since(res.Started)
	if res.Pings > ivPings {
		report(res.Elapsed)
	}
	slices.Sort(res.Samples)
	return res, nil
}

// RunEcho answers every ping arriving on conn with a pong to its sender
// until ctx ends or conn closes, and returns how many it answered. Other
// datagrams are ignored.
func RunEcho(ctx context.Context, conn Conn) (uint64, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	defer conn.SetReadDeadline(time.Time{})
	msgs := make([]Message, DefaultBatch)
	bufs := make([][]byte, DefaultBatch)
	for i := range bufs {
		bufs[i] = make([]byte, MaxSize)
	}
	out := make([]Message, 0, DefaultBatch)
	var echoed uint64
	for ctx.Err() == nil {
		for i := range msgs {
			msgs[i].Buf = bufs[i]
		}
		n, err := conn.ReadBatch(msgs)
		out = out[:0]
		for _, m := range msgs[:n] {
			var h header
			if parseHeader(m.Buf[:m.N], &h) != nil || h.Kind != kindPing {
				continue
			}
			m.Buf[4] = byte(kindPong)
			out = append(out, Message{Buf: m.Buf[:m.N], Addr: m.Addr})
		}
		if len(out) > 0 {
			w, _ := conn.WriteBatch(out) // a lost pong is the client's retransmission to fix
			echoed += uint64(w)
		}
		if err != nil {
			if isClosed(err) || ctx.Err() != nil {
				return echoed, nil
			}
			if !isTimeout(err) {
				return echoed, fmt.Errorf("bench: echo: %w", err)
			}
		}
	}
	return echoed, nil
}
