package ipv4

import (
	"sync"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// Defaults for ReassemblerConfig.
const (
	DefaultReassemblyBytes     = 4 << 20
	DefaultReassemblyTimeout   = 30 * time.Second
	DefaultReassemblyDatagrams = 1024
	// fragmentOverhead is charged per held fragment on top of its bytes,
	// so a flood of tiny fragments hits the bound as surely as big ones.
	fragmentOverhead = 64
)

// ReassemblerConfig bounds a Reassembler. Zero fields take the defaults.
type ReassemblerConfig struct {
	MaxBytes     int           // memory held by incomplete datagrams
	MaxDatagrams int           // incomplete datagrams held at once
	Timeout      time.Duration // how long an incomplete datagram may wait
}

type reasmKey struct {
	src, dst [4]byte
	id       uint16
	proto    uint8
}

type fragment struct {
	off  int
	data []byte
}

type datagram struct {
	created time.Time
	hdr     []byte // header of the first fragment (offset 0), once seen
	frags   []fragment
	total   int // payload length, known once the last fragment arrived; -1 before
	have    int
	cost    int
}

// Reassembler rebuilds datagrams from fragments. It is safe for concurrent
// use; the receive loop calls Add and a timer calls Expire.
type Reassembler struct {
	cfg      ReassemblerConfig
	counters *engine.Counters

	mu   sync.Mutex
	m    map[reasmKey]*datagram
	used int
	out  []byte

	// statistics, under mu
	fragments, reassembled uint64
}

// NewReassembler returns a Reassembler that counts drops in c (which may be
// nil).
func NewReassembler(cfg ReassemblerConfig, c *engine.Counters) *Reassembler {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultReassemblyBytes
	}
	if cfg.MaxDatagrams <= 0 {
		cfg.MaxDatagrams = DefaultReassemblyDatagrams
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultReassemblyTimeout
	}
	if c == nil {
		c = new(engine.Counters)
	}
	return &Reassembler{cfg: cfg, counters: c, m: make(map[reasmKey]*datagram)}
}

// ReassemblerStats are the Reassembler's own counters; its drops go to the
// engine counters under the DropFragment* reasons.
type ReassemblerStats struct {
	Fragments   uint64 // fragments accepted into reassembly
	Reassembled uint64 // datagrams completed
	Pending     int    // incomplete datagrams held now
	Bytes       int    // memory charged to them now
}

// Stats returns a snapshot of the counters.
func (r *Reassembler) Stats() ReassemblerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return ReassemblerStats{r.fragments, r.reassembled, len(r.m), r.used}
}

// Add takes one fragment: ip is a validated IPv4 packet (header checksum
// and lengths checked) with MF set or a non-zero offset. When it completes
// a datagram, Add returns the whole IP packet (header of the first
// fragment, flags cleared, lengths and checksum fixed); that slice stays
// valid until the next call to Add. Rejected fragments are counted.
func (r *Reassembler) Add(ip header.IPv4, now time.Time) ([]byte, bool) {
	hl := ip.HeaderLength()
	payload := ip[hl:ip.TotalLength()]
	off := int(ip.FragmentOffset())
	end := off + len(payload)
	more := ip.More()
	if end > header.IPv4MaximumPacket-hl || (more && (len(payload) == 0 || len(payload)%8 != 0)) {
		r.counters.Drop(engine.DropFragmentInvalid)
		return nil, false
	}
	k := reasmKey{ip.Src(), ip.Dst(), ip.ID(), ip.Protocol()}
	cost := len(payload) + fragmentOverhead
	if off == 0 {
		cost += hl
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.m[k]
	if d == nil {
		if cost > r.cfg.MaxBytes {
			r.counters.Drop(engine.DropFragmentMemory)
			return nil, false
		}
		for len(r.m) >= r.cfg.MaxDatagrams {
			r.evictOldestLocked()
		}
		d = &datagram{created: now, total: -1}
		r.m[k] = d
	}
	// Overlap (duplicates included) poisons the whole datagram.
	for _, f := range d.frags {
		if off < f.off+len(f.data) && f.off < end {
			r.dropLocked(k, d, engine.DropFragmentOverlap, 1)
			return nil, false
		}
	}
	if !more {
		if d.total >= 0 && d.total != end {
			r.dropLocked(k, d, engine.DropFragmentInvalid, 1)
			return nil, false
		}
		d.total = end
	}
	if d.total >= 0 {
		for _, f := range d.frags {
			if f.off+len(f.data) > d.total {
				r.dropLocked(k, d, engine.DropFragmentInvalid, 1)
				return nil, false
			}
		}
		if end > d.total {
			r.dropLocked(k, d, engine.DropFragmentInvalid, 1)
			return nil, false
		}
	}
	for r.used+cost > r.cfg.MaxBytes {
		if !r.evictOldestExceptLocked(d) {
			// Only this datagram is left and it alone exceeds the bound.
			r.dropLocked(k, d, engine.DropFragmentMemory, 1)
			return nil, false
		}
	}
	data := make([]byte, len(payload))
	copy(data, payload)
	d.frags = append(d.frags, fragment{off, data})
	if off == 0 {
		d.hdr = append([]byte(nil), ip[:hl]...)
	}
	d.have += len(payload)
	d.cost += cost
	r.used += cost
	r.fragments++
	if d.total < 0 || d.have != d.total || d.hdr == nil {
		return nil, false
	}
	// Complete: no overlaps and no gaps, since the pieces sum to the total.
	n := len(d.hdr) + d.total
	if n > header.IPv4MaximumPacket {
		r.dropLocked(k, d, engine.DropFragmentInvalid, 0)
		return nil, false
	}
	if cap(r.out) < n {
		r.out = make([]byte, n, header.IPv4MaximumPacket)
	}
	out := r.out[:n]
	copy(out, d.hdr)
	for _, f := range d.frags {
		copy(out[len(d.hdr)+f.off:], f.data)
	}
	h := header.IPv4(out)
	h.SetTotalLength(uint16(n))
	out[6] &= 0x40 // keep DF, clear MF and the offset
	out[7] = 0
	h.SetChecksum(0)
	h.SetChecksum(h.CalculateChecksum())
	r.used -= d.cost
	delete(r.m, k)
	r.reassembled++
	return out, true
}

// Expire drops datagrams older than the timeout and returns how many.
func (r *Reassembler) Expire(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, d := range r.m {
		if now.Sub(d.created) >= r.cfg.Timeout {
			r.dropLocked(k, d, engine.DropFragmentTimeout, 0)
			n++
		}
	}
	return n
}

// dropLocked discards d, counting its held fragments and extra more.
func (r *Reassembler) dropLocked(k reasmKey, d *datagram, why engine.DropReason, extra int) {
	r.counters.Drops[why].Add(uint64(len(d.frags) + extra))
	r.used -= d.cost
	delete(r.m, k)
}

func (r *Reassembler) evictOldestLocked() { r.evictOldestExceptLocked(nil) }

func (r *Reassembler) evictOldestExceptLocked(keep *datagram) bool {
	var ok bool
	var oldK reasmKey
	var oldD *datagram
	for k, d := range r.m {
		if d == keep {
			continue
		}
		if !ok || d.created.Before(oldD.created) {
			oldK, oldD, ok = k, d, true
		}
	}
	if ok {
		r.dropLocked(oldK, oldD, engine.DropFragmentMemory, 0)
	}
	return ok
}
