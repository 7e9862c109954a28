package arp

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
)

// Defaults for Config.
const (
	DefaultTimeout       = 60 * time.Second
	DefaultRetryInterval = time.Second
	DefaultRetries       = 3
	DefaultMaxPending    = 64
)

// Config tunes a Cache. Zero fields take the defaults.
type Config struct {
	Timeout       time.Duration // lifetime of a resolved entry
	RetryInterval time.Duration // time between requests for one address
	Retries       int           // requests sent before giving up
	MaxPending    int           // frames queued per unresolved address
}

type entry struct {
	mac     [6]byte
	expires int64 // unix nanoseconds; permanent for a seeded entry
}

// permanent is the expiry of a seeded entry: never.
const permanent = math.MaxInt64

type pending struct {
	frames []link.Frame
	tries  int
	next   time.Time
}

// Stats are the cache's counters.
type Stats struct {
	Entries      int
	Pending      int    // addresses being resolved
	Learned      uint64 // entries added or refreshed
	Misses       uint64 // lookups that queued a frame
	Retries      uint64 // requests sent again
	Failed       uint64 // addresses given up after all retries
	QueueDropped uint64 // frames dropped: queue full or resolution failed
}

// Cache maps IPv4 addresses to MAC addresses.
type Cache struct {
	cfg      Config
	resolved atomic.Pointer[map[[4]byte]entry]

	mu      sync.Mutex
	pending map[[4]byte]*pending
	// soonest is the earliest time (unix nanoseconds) an entry may be
	// forgotten: Tick scans the entries only from then on, so a cache of
	// permanent entries costs a tick nothing however many it holds.
	soonest int64

	learned, misses, retries, failed, queueDropped atomic.Uint64
}

// New returns an empty cache.
func New(cfg Config) *Cache {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.Retries <= 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	c := &Cache{cfg: cfg, pending: make(map[[4]byte]*pending), soonest: permanent}
	m := map[[4]byte]entry{}
	c.resolved.Store(&m)
	return c
}

// Lookup returns the MAC for ip if a live entry exists. It takes no lock
// and does not allocate.
func (c *Cache) Lookup(ip [4]byte, now time.Time) ([6]byte, bool) {
	e, ok := (*c.resolved.Load())[ip]
	if !ok || now.UnixNano() >= e.expires {
		return [6]byte{}, false
	}
	return e.mac, true
}

// Seed adds permanent entries (an entry of ip that is already there
// becomes permanent), as `ip neigh add ... nud permanent` does: a testbed
// knows every address and Ethernet address on a segment, and without them
// each of n peers broadcasts a request for each other one, n² frames that
// every one of n peers must read (issue 16: 1,000 peripherals drowned in
// them). A seeded entry never expires; an ARP packet from ip with another
// Ethernet address replaces the address and keeps it permanent. Seeded
// entries count as learned.
func (c *Cache) Seed(entries map[[4]byte][6]byte) {
	if len(entries) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.resolved.Load()
	n := make(map[[4]byte]entry, len(old)+len(entries))
	for k, v := range old {
		n[k] = v
	}
	for ip, mac := range entries {
		n[ip] = entry{mac, permanent}
	}
	c.resolved.Store(&n)
	c.learned.Add(uint64(len(entries)))
}

// Known reports whether ip has an entry (live or expired) or is being
// resolved: RFC 826 updates such entries from any ARP packet seen.
func (c *Cache) Known(ip [4]byte) bool {
	if _, ok := (*c.resolved.Load())[ip]; ok {
		return true
	}
	c.mu.Lock()
	_, ok := c.pending[ip]
	c.mu.Unlock()
	return ok
}

// Learn records ip -> mac and returns the frames that were waiting for it,
// with their destination MAC filled in; the caller transmits them.
func (c *Cache) Learn(ip [4]byte, mac [6]byte, now time.Time) []link.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.resolved.Load()
	if e, ok := old[ip]; !ok || e.mac != mac || e.expires-now.UnixNano() < int64(c.cfg.Timeout)/2 {
		exp := now.Add(c.cfg.Timeout).UnixNano()
		if ok && e.expires == permanent {
			exp = permanent // a seeded entry follows a new address, and stays
		}
		n := make(map[[4]byte]entry, len(old)+1)
		for k, v := range old {
			n[k] = v
		}
		n[ip] = entry{mac, exp}
		c.resolved.Store(&n)
		if exp != permanent {
			c.soonest = min(c.soonest, exp+int64(c.cfg.Timeout))
		}
	}
	c.learned.Add(1)
	p := c.pending[ip]
	if p == nil {
		return nil
	}
	delete(c.pending, ip)
	for i := range p.frames {
		header.Ethernet(p.frames[i].Buf).SetDst(mac)
	}
	return p.frames
}

// Enqueue keeps a copy of frame until ip resolves. It reports whether the
// caller should send a request now (the first miss for ip) and whether the
// frame was dropped because the queue for ip is full.
func (c *Cache) Enqueue(ip [4]byte, f link.Frame, now time.Time) (request, dropped bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.misses.Add(1)
	p := c.pending[ip]
	if p == nil {
		p = &pending{tries: 1, next: now.Add(c.cfg.RetryInterval)}
		c.pending[ip] = p
		request = true
	}
	if len(p.frames) >= c.cfg.MaxPending {
		c.queueDropped.Add(1)
		return request, true
	}
	p.frames = append(p.frames, link.Frame{Buf: append([]byte(nil), f.Buf...), VNet: f.VNet})
	return request, false
}

// Tick advances timers: it appends to retry the addresses whose request
// should be sent again, gives up on those that used every retry (their
// queued frames are dropped and counted) and forgets expired entries.
// It returns retry and the number of frames dropped.
func (c *Cache) Tick(now time.Time, retry [][4]byte) ([][4]byte, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dropped := 0
	for ip, p := range c.pending {
		if now.Before(p.next) {
			continue
		}
		if p.tries >= c.cfg.Retries {
			dropped += len(p.frames)
			c.queueDropped.Add(uint64(len(p.frames)))
			c.failed.Add(1)
			delete(c.pending, ip)
			continue
		}
		p.tries++
		p.next = now.Add(c.cfg.RetryInterval)
		c.retries.Add(1)
		retry = append(retry, ip)
	}
	if now.UnixNano() < c.soonest {
		return retry, dropped
	}
	old := *c.resolved.Load()
	n := make(map[[4]byte]entry, len(old))
	c.soonest = permanent
	for k, e := range old {
		if forget := e.expires + int64(c.cfg.Timeout); e.expires == permanent || now.UnixNano() < forget {
			n[k] = e
			if e.expires != permanent {
				c.soonest = min(c.soonest, forget)
			}
		}
	}
	if len(n) != len(old) {
		c.resolved.Store(&n)
	}
	return retry, dropped
}

// Idle reports whether Tick has nothing to do now or later: no address
// being resolved and no entry that will expire (seeded ones never do).
// The stack stops its timer while the cache and the reassembler are idle.
func (c *Cache) Idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) == 0 && c.soonest == permanent
}

// Stats returns a snapshot of the counters.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	np := len(c.pending)
	c.mu.Unlock()
	return Stats{
		Entries:      len(*c.resolved.Load()),
		Pending:      np,
		Learned:      c.learned.Load(),
		Misses:       c.misses.Load(),
		Retries:      c.retries.Load(),
		Failed:       c.failed.Load(),
		QueueDropped: c.queueDropped.Load(),
	}
}

// FrameSize is the length of the ARP frames Encode writes (Ethernet
// header plus ARP, padded to the 60-byte Ethernet minimum).
const FrameSize = 60

// EncodeRequest writes a broadcast who-has request for target into
// b[:FrameSize]. A gratuitous ARP is a request with target == ours.
func EncodeRequest(b []byte, mac [6]byte, ours, target [4]byte) {
	encode(b, header.Broadcast, &header.ARPFields{
		Op: header.ARPRequest, SenderMAC: mac, SenderAddr: ours, TargetAddr: target,
	})
}

// EncodeReply writes the answer to a request from (dstMAC, dstAddr) into
// b[:FrameSize].
func EncodeReply(b []byte, mac [6]byte, ours [4]byte, dstMAC [6]byte, dstAddr [4]byte) {
	encode(b, dstMAC, &header.ARPFields{
		Op: header.ARPReply, SenderMAC: mac, SenderAddr: ours, TargetMAC: dstMAC, TargetAddr: dstAddr,
	})
}

func encode(b []byte, dst [6]byte, f *header.ARPFields) {
	b = b[:FrameSize]
	header.Ethernet(b).Encode(&header.EthernetFields{Dst: dst, Src: f.SenderMAC, Type: header.EtherTypeARP})
	header.ARP(b[header.EthernetMinimumSize:]).Encode(f)
	clear(b[header.EthernetMinimumSize+header.ARPSize:])
}
