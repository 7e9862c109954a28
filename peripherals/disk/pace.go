package disk

import (
	"container/heap"
	"math"
	"math/bits"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/dgram"
)

// Pacing of READ replies (protocol version 4). A READ carries the rate
// at which its reply is to leave (diskproto.Request.PaceRate: the
// client's congestion window per RTT, the rate it paces its own WRITE
// data at), so the sender of the data paces it, as TCP pacing and RFC
// 8085 (section 3.1.5) ask: a reply of max I/O then reaches the client's
// queues at the rate it drains them instead of as one burst per request.
//
// A worker sends what is due at once (each session may send paceCredit
// worth of data ahead of its schedule, so a lossless run is not slowed)
// and hands the rest of the reply, with its buffer, to the server's one
// pacer goroutine, which sends each chunk when it is due. No worker sleeps:
// a paced client never holds a worker, and other sessions are served
// meanwhile. Chunks are 64 datagrams (at most one GSO super-frame
// of the user-level stack), as the client paces. The schedule is per session
// (the rate is the session's, whatever its requests), in the manner of
// Linux's fq: a chunk leaves at the session's next slot, and sending it
// moves the slot on by its bytes at the rate.
//
// Hostile rates: a rate below MinPaceRate is raised to it (counted
// pace_floor); a reply that would wait more than maxPaceDelay (its
// session's backlog at its rate), or find the pacer holding MaxPaced bytes
// of buffers, leaves at once (counted pace_overflow), so a tiny rate can
// neither pin a goroutine nor hold memory for long, and a session asking
// for more than it drains gets what version 3 gave everyone. airtime's
// arithmetic cannot overflow.
const (
	// MinPaceRate is the slowest a disk paces a reply, in bytes per
	// second. A client's rate is at least 1.5 x half its window per RTT,
	// and the RTO caps the RTT at a second: 1 MiB/s is below any rate a
	// client of this fabric asks for.
	MinPaceRate = 1 << 20
	// DefaultMaxPaced bounds the reply buffers waiting in the pacer.
	DefaultMaxPaced = 32 << 20
	// paceCredit is how far ahead of its schedule a session may send,
	// as the client's pacer allows.
	paceCredit = 250 * time.Microsecond
	// paceChunk is the datagrams of one paced send.
	paceChunk = 64
	// maxPaceDelay bounds how long a reply waits to be sent: a client
	// that keeps its data in flight under its congestion window never
	// has a backlog above an RTT (cwnd / (1.5 cwnd / RTT)).
	maxPaceDelay = time.Second
)

// pacedReply is the part of a READ reply that waits for its slot: its
// datagrams still to send and the buffer they lie in (from Server.outs).
type pacedReply struct {
	pc   dgram.Conn
	sess *session
	id   uint64 // the READ's request id: its slot is told when the last chunk left
	ob   *[]byte
	msgs []dgram.Message // the reply's datagrams still to send: msgs[next:]
	next int
	rate uint64
	due  time.Time // when msgs' next chunk may leave
	seq  uint64    // FIFO among equal due times
}

// pacer holds the replies waiting for their slots, in a min-heap by due
// time, and the pacing schedule of every session (session.paceNext).
type pacer struct {
	mu    sync.Mutex
	queue paceQueue // a min-heap by (due, seq)
	free  []*pacedReply
	bytes int // buffer bytes held by queue
	seq   uint64
	wake  chan struct{} // 1-buffered: the head of queue may have changed
	stop  chan struct{}
	done  chan struct{}
}

func (p *pacer) init() {
	p.wake = make(chan struct{}, 1)
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
}

// paceRate is the rate a READ's reply is paced at: 0 (unpaced) as asked,
// else at least MinPaceRate.
func (s *Server) paceRate(asked uint64) uint64 {
	if asked != 0 && asked < MinPaceRate {
		s.stats.paceFloor.Add(1)
		return MinPaceRate
	}
	return asked
}

// paceSend sends a READ reply's datagrams msgs (lying in ob) to sess at
// rate bytes/s: what is due now, at once; the rest is queued for the
// pacer goroutine, which then owns ob. It reports whether it kept ob (the
// caller must not reuse it). msgs is not retained.
func (s *Server) paceSend(pc dgram.Conn, sess *session, id uint64, ob *[]byte, msgs []dgram.Message, rate uint64) bool {
	p := &s.pacer
	for len(msgs) > 0 {
		k := min(len(msgs), paceChunk)
		now := time.Now()
		p.mu.Lock()
		due := paceSlot(sess, now)
		if due.After(now) {
			rest := bytesOf(msgs)
			if due.Sub(now)+airtime(sess.paceQueued+rest, rate) > maxPaceDelay || p.bytes+cap(*ob) > s.cfg.MaxPaced {
				// A backlog that long is not a client keeping its data
				// under its window, and the pacer's memory is bounded:
				// the rest leaves now.
				p.mu.Unlock()
				s.stats.paceOverflow.Add(1)
				s.sendAll(pc, msgs)
				return false
			}
			pr := p.get()
			pr.pc, pr.sess, pr.id, pr.ob, pr.rate, pr.due = pc, sess, id, ob, rate, due
			pr.msgs, pr.next = append(pr.msgs[:0], msgs...), 0
			p.bytes += cap(*ob)
			sess.paceQueued += rest
			p.push(pr)
			p.mu.Unlock()
			s.stats.paceWaits.Add(1)
			select {
			case p.wake <- struct{}{}:
			default:
			}
			return true
		}
		sess.paceNext = due.Add(airtime(bytesOf(msgs[:k]), rate))
		p.mu.Unlock()
		s.sendAll(pc, msgs[:k])
		msgs = msgs[k:]
	}
	return false
}

// paceSlot is when sess's next chunk may leave: its schedule, or, for a
// session with nothing queued that has fallen behind it, now less the
// credit. A session with replies queued keeps its schedule however late
// the pacer is: Go's timers wake a sleeping process a millisecond or more
// after the time asked for, and forgiving that lateness at each wake-up
// would cap the rate at the credit per wake-up, not at the rate asked for
// (what a session can catch up is its queue, under its window). Called
// with pacer.mu held.
func paceSlot(sess *session, now time.Time) time.Time {
	if early := now.Add(-paceCredit); sess.paceQueued == 0 && sess.paceNext.Before(early) {
		return early
	}
	return sess.paceNext
}

// airtime is how long n bytes take at rate bytes/s (rate > 0): whole
// seconds, then the rest in 128-bit arithmetic, so no n or rate
// overflows; beyond 2^32 s (far past any bound it is compared with) it
// is the largest Duration.
func airtime(n, rate uint64) time.Duration {
	sec := n / rate
	if sec >= 1<<32 {
		return time.Duration(math.MaxInt64)
	}
	hi, lo := bits.Mul64(n%rate, uint64(time.Second))
	frac, _ := bits.Div64(hi, lo, rate) // hi < rate: n%rate < rate and 1e9 < 2^64
	return time.Duration(sec)*time.Second + time.Duration(frac)
}

// bytesOf is the bytes of msgs.
func bytesOf(msgs []dgram.Message) uint64 {
	var n uint64
	for _, m := range msgs {
		n += uint64(len(m.Buf))
	}
	return n
}

// paceLoop sends the queued replies' chunks as they fall due, until Close.
func (s *Server) paceLoop() {
	p := &s.pacer
	defer close(p.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	var chunk [paceChunk]dgram.Message
	for {
		p.mu.Lock()
		wait := time.Duration(-1)
		for len(p.queue) > 0 {
			now := time.Now()
			pr := p.queue[0]
			if pr.due.After(now) {
				wait = pr.due.Sub(now)
				break
			}
			p.pop()
			due := paceSlot(pr.sess, now)
			if due.After(now) {
				// Another reply of the session took the slot meanwhile.
				pr.due = due
				p.push(pr)
				continue
			}
			k := copy(chunk[:], pr.msgs[pr.next:])
			n := bytesOf(chunk[:k])
			pr.sess.paceNext = due.Add(airtime(n, pr.rate))
			pr.sess.paceQueued -= n
			pr.next += k // not pr.msgs[k:]: the slice keeps its capacity for the next reply
			last := pr.next == len(pr.msgs)
			if last {
				p.bytes -= cap(*pr.ob)
			}
			p.mu.Unlock()
			s.sendAll(pr.pc, chunk[:k])
			clear(chunk[:k])
			p.mu.Lock()
			if last {
				s.outs.Put(pr.ob)
				sess, id := pr.sess, pr.id
				p.put(pr)
				p.mu.Unlock()
				s.sent(sess, id) // takes s.mu, never held with p.mu
				p.mu.Lock()
				continue
			}
			pr.due = paceSlot(pr.sess, time.Now())
			p.push(pr)
		}
		p.mu.Unlock()
		if wait >= 0 {
			t.Reset(wait)
		}
		select {
		case <-p.wake:
			t.Stop() // Go 1.23 timers: no stale value is delivered after Stop
		case <-t.C:
		case <-p.stop:
			p.mu.Lock()
			for _, pr := range p.queue {
				s.outs.Put(pr.ob)
			}
			p.queue, p.bytes = nil, 0
			p.mu.Unlock()
			return
		}
	}
}

// get returns a pacedReply from the free list. Called with mu held.
func (p *pacer) get() *pacedReply {
	if n := len(p.free); n > 0 {
		pr := p.free[n-1]
		p.free = p.free[:n-1]
		return pr
	}
	return &pacedReply{msgs: make([]dgram.Message, 0, 64)}
}

// put returns pr to the free list. Called with mu held.
func (p *pacer) put(pr *pacedReply) {
	clear(pr.msgs[:cap(pr.msgs)])
	pr.msgs, pr.pc, pr.sess, pr.ob = pr.msgs[:0], nil, nil, nil
	p.free = append(p.free, pr)
}

// paceQueue is the pacer's replies as a container/heap, soonest due
// first and first come first among equals.
type paceQueue []*pacedReply

func (q paceQueue) Len() int { return len(q) }
func (q paceQueue) Less(i, j int) bool {
	return q[i].due.Before(q[j].due) || (q[i].due.Equal(q[j].due) && q[i].seq < q[j].seq)
}
func (q paceQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *paceQueue) Push(x any)   { *q = append(*q, x.(*pacedReply)) }
func (q *paceQueue) Pop() any {
	old := *q
	n := len(old) - 1
	pr := old[n]
	old[n] = nil
	*q = old[:n]
	return pr
}

// push adds pr to the heap. Called with mu held.
func (p *pacer) push(pr *pacedReply) {
	p.seq++
	pr.seq = p.seq
	heap.Push(&p.queue, pr)
}

// pop removes the heap's head. Called with mu held.
func (p *pacer) pop() { heap.Pop(&p.queue) }
