package workload

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Device is what the storage workload drives: cpu/storage's Client.
type Device interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) (int, error)
	Flush(ctx context.Context) error
}

// StorageOptions shape the storage demo.
type StorageOptions struct {
	Size       int64 // bytes written and read back
	BlockSize  int   // bytes per I/O
	QueueDepth int   // I/Os in flight
	Seed       uint64
	// Progress, if set, is called about every 200 ms from the workload's
	// goroutine.
	Progress func(Progress)
}

// Progress reports a running phase. The workload fills in the phase and
// the bytes; the caller that owns the protocol client adds its health
// (Retransmits, SinceReply, Refusal), so that a display can say why a run
// stalls.
type Progress struct {
	Phase   string        `json:"phase"`
	Done    int64         `json:"done"`
	Total   int64         `json:"total"`
	Elapsed time.Duration `json:"elapsed"`

	Retransmits uint64        `json:"retransmits,omitempty"`    // the client's, so far
	SinceReply  time.Duration `json:"since_reply_ns,omitempty"` // since the disk last answered
	Refusal     string        `json:"refusal,omitempty"`        // the latest error code the disk answered
}

// Latency holds completion-latency percentiles in nanoseconds.
type Latency struct {
	Min, Mean, Max       int64
	P50, P90, P99, P99_9 int64
	Samples              int
}

// PhaseStats are one direction's figures.
type PhaseStats struct {
	Bytes   int64         `json:"bytes"`
	IOs     int64         `json:"ios"`
	Runtime time.Duration `json:"runtime"`
	Lat     Latency       `json:"lat"`
}

// MiBps is the phase's bandwidth in MiB/s.
func (p PhaseStats) MiBps() float64 { return float64(p.Bytes) / (1 << 20) / p.Runtime.Seconds() }

// MBps is the phase's bandwidth in MB/s.
func (p PhaseStats) MBps() float64 { return float64(p.Bytes) / 1e6 / p.Runtime.Seconds() }

// IOPS is the phase's I/O rate.
func (p PhaseStats) IOPS() float64 { return float64(p.IOs) / p.Runtime.Seconds() }

// StorageReport is the storage demo's result.
type StorageReport struct {
	Options     StorageOptions `json:"-"`
	Stack       string         `json:"stack"`
	Write       PhaseStats     `json:"write"`
	Flush       time.Duration  `json:"flush"`
	Read        PhaseStats     `json:"read"`
	SHA256Write string         `json:"sha256_written"`
	SHA256Read  string         `json:"sha256_read"`
	Match       bool           `json:"match"`
}

// ErrMismatch: the data read back differs from the data written.
var ErrMismatch = errors.New("data read back differs from data written")

// fill writes block i's seeded content into b: a PCG stream keyed by the
// seed and the block number. Not cryptographic, and need not be: it has to
// be reproducible and incompressible, and cheap, since it runs in the
// write phase's critical path (ChaCha8 cost a fifth of the processor's
// time there).
// It yields the processor every yieldEvery bytes.
func fill(b []byte, seed uint64, i int64) {
	r := rand.NewPCG(seed, uint64(i)^0x9e3779b97f4a7c15)
	for len(b) >= 8 {
		n := min(len(b), yieldEvery) &^ 7
		for k := 0; k < n; k += 8 {
			binary.LittleEndian.PutUint64(b[k:], r.Uint64())
		}
		b = b[n:]
		runtime.Gosched()
	}
	if len(b) > 0 {
		var t [8]byte
		binary.LittleEndian.PutUint64(t[:], r.Uint64())
		copy(b, t[:])
	}
}

// yieldEvery is how much data the workload generates or hashes between
// yields of the processor. A peripheral runs on one P (GOMAXPROCS=1), and
// a block's generation or SHA-256 (about a millisecond per MiB each) holds
// it: the storage client's reader and timers wait behind it, a reply
// sits unread in the socket, the round-trip times it sees swing by
// milliseconds, and its tail-loss probes fired for about one request in
// eight on a lossless link (netstation demo storage: 272 retransmissions
// of 2,049 requests). Yielding every 64 KiB lets them run within tens of
// microseconds.
const yieldEvery = 64 << 10

// hashYielding writes b to h, yielding the processor every yieldEvery
// bytes.
func hashYielding(h hash.Hash, b []byte) {
	for len(b) > 0 {
		n := min(len(b), yieldEvery)
		h.Write(b[:n])
		b = b[n:]
		runtime.Gosched()
	}
}

// RunStorage writes Size bytes of seeded data in BlockSize I/Os with
// QueueDepth in flight, flushes, reads everything back the same way and
// compares SHA-256 digests of the streams (hashed in offset order).
func RunStorage(ctx context.Context, d Device, o StorageOptions) (*StorageReport, error) {
	if o.BlockSize <= 0 || o.Size <= 0 || o.QueueDepth <= 0 {
		return nil, fmt.Errorf("workload: size, block size and queue depth must be positive")
	}
	if o.Size%int64(o.BlockSize) != 0 {
		return nil, fmt.Errorf("workload: size %d is not a multiple of the block size %d", o.Size, o.BlockSize)
	}
	r := &StorageReport{Options: o}
	var err error
	var wsum, rsum []byte
	if r.Write, wsum, err = phase(ctx, "write", d, o); err != nil {
		return r, err
	}
	t0 := time.Now()
	if err := d.Flush(ctx); err != nil {
		return r, fmt.Errorf("flush: %w", err)
	}
	r.Flush = time.Since(t0)
	if r.Read, rsum, err = phase(ctx, "read", d, o); err != nil {
		return r, err
	}
	r.SHA256Write, r.SHA256Read = hex.EncodeToString(wsum), hex.EncodeToString(rsum)
	r.Match = r.SHA256Write == r.SHA256Read
	if !r.Match {
		return r, ErrMismatch
	}
	return r, nil
}

type slot struct {
	buf  []byte
	done chan error
}

// phase runs one direction. Blocks are issued in order into a ring of
// 2*QueueDepth buffers with QueueDepth in flight; a hasher consumes them in
// offset order, so the digest is of the stream as laid out on the disk.
func phase(ctx context.Context, name string, d Device, o StorageOptions) (PhaseStats, []byte, error) {
	n := o.Size / int64(o.BlockSize)
	ring := make([]slot, 2*o.QueueDepth)
	for i := range ring {
		ring[i] = slot{buf: make([]byte, o.BlockSize), done: make(chan error, 1)}
	}
	lats := make([]int64, n)
	sem := make(chan struct{}, o.QueueDepth)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := sha256.New()
	start := time.Now()
	lastProgress := start
	var wg sync.WaitGroup
	var firstErr error
	issue := func(i int64) {
		s := &ring[i%int64(len(ring))]
		if name == "write" {
			fill(s.buf, o.Seed, i)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t := time.Now()
			var err error
			if name == "write" {
				_, err = d.WriteAt(ctx, s.buf, i*int64(o.BlockSize), false)
			} else {
				_, err = d.ReadAt(ctx, s.buf, i*int64(o.BlockSize))
			}
			lats[i] = time.Since(t).Nanoseconds()
			s.done <- err
		}()
	}
	next := int64(0)
	for ; next < n && next < int64(len(ring)); next++ {
		issue(next)
	}
	for i := int64(0); i < n; i++ {
		s := &ring[i%int64(len(ring))]
		if err := <-s.done; err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s at offset %d: %w", name, i*int64(o.BlockSize), err)
			cancel()
		}
		if firstErr == nil {
			hashYielding(h, s.buf)
		}
		if next < n && firstErr == nil {
			issue(next)
			next++
		}
		if o.Progress != nil && time.Since(lastProgress) > 200*time.Millisecond {
			lastProgress = time.Now()
			o.Progress(Progress{Phase: name, Done: (i + 1) * int64(o.BlockSize), Total: o.Size, Elapsed: time.Since(start)})
		}
		if firstErr != nil && next >= i+1 {
			// Drain what is in flight, then stop.
			for j := i + 1; j < next; j++ {
				<-ring[j%int64(len(ring))].done
			}
			break
		}
	}
	wg.Wait()
	st := PhaseStats{Bytes: o.Size, IOs: n, Runtime: time.Since(start), Lat: latency(lats)}
	if o.Progress != nil {
		o.Progress(Progress{Phase: name, Done: o.Size, Total: o.Size, Elapsed: st.Runtime})
	}
	return st, h.Sum(nil), firstErr
}

func latency(ns []int64) Latency {
	if len(ns) == 0 {
		return Latency{}
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	var sum int64
	for _, v := range s {
		sum += v
	}
	pct := func(p float64) int64 { return s[min(len(s)-1, int(p/100*float64(len(s))))] }
	return Latency{Min: s[0], Max: s[len(s)-1], Mean: sum / int64(len(s)),
		P50: pct(50), P90: pct(90), P99: pct(99), P99_9: pct(99.9), Samples: len(s)}
}

// Text writes an fio-style human report.
func (r *StorageReport) Text(w io.Writer) {
	fmt.Fprintf(w, "storage: %s over UDP (%s stack), bs=%d, iodepth=%d\n",
		fmtBytes(r.Options.Size), r.Stack, r.Options.BlockSize, r.Options.QueueDepth)
	for _, p := range []struct {
		name string
		s    PhaseStats
	}{{"write", r.Write}, {r.readLabel(), r.Read}} {
		fmt.Fprintf(w, "  %s: IOPS=%.0f, BW=%.1fMiB/s (%.1fMB/s)(%s/%.3fs)\n", p.name, p.s.IOPS(), p.s.MiBps(), p.s.MBps(), fmtBytes(p.s.Bytes), p.s.Runtime.Seconds())
		l := p.s.Lat
		fmt.Fprintf(w, "    clat (usec): min=%.0f, max=%.0f, avg=%.1f\n", us(l.Min), us(l.Max), us(l.Mean))
		fmt.Fprintf(w, "    clat percentiles (usec): 50.00th=[%.0f], 90.00th=[%.0f], 99.00th=[%.0f], 99.90th=[%.0f]\n",
			us(l.P50), us(l.P90), us(l.P99), us(l.P99_9))
	}
	fmt.Fprintf(w, "  flush: %.3fms\n", float64(r.Flush.Microseconds())/1e3)
	verdict := "MATCH"
	if !r.Match {
		verdict = "MISMATCH"
	}
	if r.SHA256Write == "per-block" {
		fmt.Fprintf(w, "  verify: every block read checked against the data written there: %s\n", verdict)
		return
	}
	fmt.Fprintf(w, "  verify: sha256 written %s..., read %s... %s\n", short(r.SHA256Write), short(r.SHA256Read), verdict)
}

func (r *StorageReport) readLabel() string {
	if r.SHA256Write == "per-block" {
		return "randread"
	}
	return "read"
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

func us(ns int64) float64 { return float64(ns) / 1e3 }

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// FioJSON renders the report with fio's JSON field names (fio 3.x
// --output-format=json: jobs[].read/write with io_bytes, bw in KiB/s,
// bw_bytes, iops, runtime in ms, clat_ns with percentile keys).
func (r *StorageReport) FioJSON() ([]byte, error) {
	dir := func(p PhaseStats) map[string]any {
		l := p.Lat
		return map[string]any{
			"io_bytes": p.Bytes, "io_kbytes": p.Bytes / 1024, "total_ios": p.IOs,
			"bw_bytes": int64(float64(p.Bytes) / p.Runtime.Seconds()), "bw": int64(float64(p.Bytes) / 1024 / p.Runtime.Seconds()),
			"iops": p.IOPS(), "runtime": p.Runtime.Milliseconds(),
			"clat_ns": map[string]any{
				"min": l.Min, "max": l.Max, "mean": l.Mean, "N": l.Samples,
				"percentile": map[string]int64{"50.000000": l.P50, "90.000000": l.P90, "99.000000": l.P99, "99.900000": l.P99_9},
			},
		}
	}
	out := map[string]any{
		"fio version": "netstation-storage-demo",
		"timestamp":   time.Now().Unix(),
		"global options": map[string]string{
			"bs": fmt.Sprint(r.Options.BlockSize), "iodepth": fmt.Sprint(r.Options.QueueDepth), "size": fmt.Sprint(r.Options.Size),
		},
		"jobs": []map[string]any{{
			"jobname": "storage-" + r.Stack, "error": 0,
			"write": dir(r.Write), "read": dir(r.Read),
			"sync":       map[string]any{"total_ios": 1, "lat_ns": map[string]int64{"mean": r.Flush.Nanoseconds()}},
			"netstation": map[string]any{"stack": r.Stack, "sha256_written": r.SHA256Write, "sha256_read": r.SHA256Read, "match": r.Match},
		}},
	}
	return json.MarshalIndent(out, "", "  ")
}

// RunRandRead fills Size bytes sequentially (as RunStorage's write
// phase), flushes, then reads Size/BlockSize blocks at seeded random
// aligned offsets with QueueDepth in flight, checking every block against
// the data written there. The report's Read phase is the random reads.
func RunRandRead(ctx context.Context, d Device, o StorageOptions) (*StorageReport, error) {
	if o.BlockSize <= 0 || o.Size <= 0 || o.QueueDepth <= 0 || o.Size%int64(o.BlockSize) != 0 {
		return nil, fmt.Errorf("workload: size must be a positive multiple of a positive block size, queue depth positive")
	}
	r := &StorageReport{Options: o}
	var err error
	if r.Write, _, err = phase(ctx, "write", d, o); err != nil {
		return r, err
	}
	t0 := time.Now()
	if err := d.Flush(ctx); err != nil {
		return r, fmt.Errorf("flush: %w", err)
	}
	r.Flush = time.Since(t0)
	n := o.Size / int64(o.BlockSize)
	lats := make([]int64, n)
	next := make(chan int64)
	errs := make(chan error, o.QueueDepth)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bad int64
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < o.QueueDepth; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, want := make([]byte, o.BlockSize), make([]byte, o.BlockSize)
			for i := range next {
				blk := int64(rand.New(rand.NewPCG(o.Seed, uint64(i))).Uint64N(uint64(n)))
				t := time.Now()
				if _, err := d.ReadAt(ctx, got, blk*int64(o.BlockSize)); err != nil {
					errs <- fmt.Errorf("randread at block %d: %w", blk, err)
					cancel()
					return
				}
				lats[i] = time.Since(t).Nanoseconds()
				fill(want, o.Seed, blk)
				if string(got) != string(want) {
					mu.Lock()
					bad++
					mu.Unlock()
				}
			}
		}()
	}
	for i := int64(0); i < n && ctx.Err() == nil; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
		}
		if o.Progress != nil && i%1024 == 0 {
			o.Progress(Progress{Phase: "randread", Done: i * int64(o.BlockSize), Total: o.Size, Elapsed: time.Since(start)})
		}
	}
	close(next)
	wg.Wait()
	r.Read = PhaseStats{Bytes: o.Size, IOs: n, Runtime: time.Since(start), Lat: latency(lats)}
	select {
	case err := <-errs:
		return r, err
	default:
	}
	r.Match = bad == 0
	r.SHA256Write, r.SHA256Read = "per-block", fmt.Sprintf("%d of %d blocks differ", bad, n)
	if !r.Match {
		return r, ErrMismatch
	}
	r.SHA256Read = "per-block"
	return r, nil
}
