package bench

import "time"

// delta turns two cumulative snapshots into one interval's figures. The
// jitter is the running estimate at the interval's end, as iperf3 reports.
func delta(prev, cur []Totals, start, end time.Duration) Interval {
	iv := Interval{Streams: make([]Totals, len(cur))}
	for i, c := range cur {
		var p Totals
		if i < len(prev) {
			p = prev[i]
		}
		iv.Streams[i] = Totals{
			Stream:     c.Stream,
			Start:      start,
			End:        end,
			Bytes:      c.Bytes - p.Bytes,
			Packets:    c.Packets - p.Packets,
			Lost:       sub(c.Lost, p.Lost),
			OutOfOrder: c.OutOfOrder - p.OutOfOrder,
			Jitter:     c.Jitter,
		}
	}
	iv.Sum = sumOf(iv.Streams, start, end)
	return iv
}

// sub is a-b floored at zero: a receiver's loss count shrinks when a
// datagram it counted lost arrives late.
func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// intervals accumulates the per-interval figures of a run from
// cumulative snapshots.
type intervals struct {
	every    time.Duration
	on       func(Interval)
	prev     []Totals // snapshot at the end of the last interval
	prevPrev []Totals // and at its start
	last     time.Duration
	list     []Interval
}

// add reports the interval ending at end.
func (r *intervals) add(cur []Totals, end time.Duration) {
	iv := delta(r.prev, cur, r.last, end)
	r.prevPrev, r.prev, r.last = r.prev, cur, end
	r.list = append(r.list, iv)
	if r.on != nil {
		r.on(iv)
	}
}

// final closes the run at end. A tail shorter than a tenth of an interval
// would show wild rates from a handful of datagrams, so, as iperf3 does
// not print such a tail, it is folded into the previous interval (already
// reported live) and the intervals still add up to the totals.
func (r *intervals) final(cur []Totals, end time.Duration) {
	n := len(r.list)
	if end-r.last >= r.every/10 || n == 0 {
		if end > r.last || n == 0 {
			r.add(cur, end)
		}
		return
	}
	r.list[n-1] = delta(r.prevPrev, cur, r.list[n-1].Sum.Start, end)
	r.prev, r.last = cur, end
}

// reporter samples a sender's counters every interval from its own
// goroutine.
type reporter struct {
	intervals
	started time.Time
	snap    func() []Totals
	stopc   chan struct{}
	done    chan struct{}
}

func newReporter(started time.Time, every time.Duration, on func(Interval), snap func() []Totals) *reporter {
	r := &reporter{intervals: intervals{every: every, on: on}, started: started, snap: snap,
		stopc: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *reporter) loop() {
	defer close(r.done)
	next := r.started.Add(r.every)
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-r.stopc:
			return
		case <-t.C:
		}
		r.add(r.snap(), time.Since(r.started))
		next = next.Add(r.every)
		t.Reset(time.Until(next))
	}
}

// stop ends the sampling and reports the final partial interval.
func (r *reporter) stop(end time.Duration) {
	close(r.stopc)
	<-r.done
	r.final(r.snap(), end)
}
