package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/fabric/capture"
	"github.com/netstation/netstation/internal/ctl"
)

// CaptureFabric names the whole fabric as a capture target.
const CaptureFabric = "fabric"

// CaptureArgs ask the supervisor for a capture (its "capture" op).
type CaptureArgs struct {
	// ID names the capture for "capture-stop".
	ID      string `json:"id"`
	Target  string `json:"target"` // a node, or CaptureFabric
	Count   int    `json:"count,omitempty"`
	Snaplen int    `json:"snaplen,omitempty"`
	Raw     bool   `json:"raw,omitempty"` // GSO super-frames whole (capture.Options.Raw)
	Filter  string `json:"filter,omitempty"`
}

// captureChunk is one streamed message of a capture: Ready once the
// socket filters, then pcap bytes.
type captureChunk struct {
	Ready bool   `json:"ready,omitempty"`
	Data  []byte `json:"data,omitempty"`
}

// Chunks of the pcap stream: flushed when this full or this old, so that a
// live reader (-w - into tshark) sees frames within a fraction of a second.
const (
	captureChunkSize  = 128 << 10
	captureChunkDelay = 200 * time.Millisecond
)

// Capture writes what crosses the named testbed's fabric to w as a pcap
// stream: the fabric-side port of one node (both directions), or with
// target CaptureFabric every frame entering the fabric once. The testbed's
// supervisor captures (it may enter the fabric's namespace, rootless too)
// and streams the file. It stops after opts.Count frames, or when ctx
// ends: then the supervisor is told to stop and the frames that arrived
// before are still written (a normal stop, nil error). opts.Ready is called
// once the capture filters.
func Capture(ctx context.Context, testbed, target string, w io.Writer, opts capture.Options) (capture.Stats, error) {
	if _, _, err := CapturePoint(testbed, target); err != nil {
		return capture.Stats{}, err
	}
	if opts.Filter != "" {
		if _, err := capture.ParseFilter(opts.Filter); err != nil {
			return capture.Stats{}, err
		}
	}
	id := fmt.Sprintf("%d-%d", time.Now().UnixNano(), captureSeq.Add(1))
	args := CaptureArgs{ID: id, Target: target, Count: opts.Count, Snaplen: opts.Snaplen, Filter: opts.Filter, Raw: opts.Raw}
	// The call outlives ctx: a Ctrl-C becomes capture-stop, and the call
	// ends when the supervisor has sent the last frames.
	callCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopped := context.AfterFunc(ctx, func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := supervisorCall(sctx, testbed, "capture-stop", id, nil); err != nil {
			cancel() // the supervisor is gone: give up at once
		}
	})
	defer stopped()
	var st capture.Stats
	var werr error
	err := ctl.Call(callCtx, supervisorSock(Dir(testbed)), "capture", args, &st, func(m json.RawMessage) error {
		var c captureChunk
		if err := json.Unmarshal(m, &c); err != nil {
			return err
		}
		if c.Ready && opts.Ready != nil {
			opts.Ready()
		}
		if len(c.Data) > 0 && werr == nil {
			_, werr = w.Write(c.Data)
		}
		return werr
	})
	if err != nil {
		return st, fmt.Errorf("testbed %s: capture: %w", testbed, err)
	}
	return st, werr
}

// CapturePoint resolves a capture target of the named testbed (a node, or
// CaptureFabric) to the fabric's namespace and the node's fabric-side port
// ("" for the whole fabric).
func CapturePoint(testbed, target string) (ns, port string, err error) {
	plan, err := LoadPlan(Dir(testbed))
	if err != nil {
		return "", "", fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	return plan.capturePoint(target)
}

func (p *Plan) capturePoint(target string) (ns, port string, err error) {
	if target != CaptureFabric {
		n, err := p.Node(target)
		if err != nil {
			return "", "", err
		}
		port = n.Port
	}
	return p.FabricNS, port, nil
}

var captureSeq atomic.Uint64

// captures are the supervisor's running captures by ID, for capture-stop.
var (
	capturesMu sync.Mutex
	captures   = map[string]context.CancelFunc{}
)

// handleCapture serves the supervisor's "capture" and "capture-stop" ops.
func (s *supervisor) handleCapture(ctx context.Context, req ctl.Request, stream *ctl.Stream) (any, error) {
	if req.Op == "capture-stop" {
		var id string
		if err := req.Decode(&id); err != nil {
			return nil, err
		}
		capturesMu.Lock()
		stop := captures[id]
		capturesMu.Unlock()
		if stop != nil {
			stop()
		}
		return nil, nil
	}
	var a CaptureArgs
	if err := req.Decode(&a); err != nil {
		return nil, err
	}
	ns, port, err := s.plan.capturePoint(a.Target)
	if err != nil {
		return nil, err
	}
	// The capture stops on capture-stop (its frames are then drained and
	// sent) or when the client goes away (ctx).
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	if a.ID != "" {
		capturesMu.Lock()
		captures[a.ID] = stop
		capturesMu.Unlock()
		defer func() {
			capturesMu.Lock()
			delete(captures, a.ID)
			capturesMu.Unlock()
		}()
	}
	cw := &chunkWriter{stream: stream, done: make(chan struct{})}
	go cw.flushEvery(captureChunkDelay)
	st, err := capture.Run(cctx, ns, port, cw, capture.Options{
		Count: a.Count, Snaplen: a.Snaplen, Filter: a.Filter, Raw: a.Raw,
		Ready: func() { _ = stream.Send(captureChunk{Ready: true}) },
	})
	if ferr := cw.close(); err == nil {
		err = ferr
	}
	return st, err
}

// chunkWriter sends what is written to it as captureChunks.
type chunkWriter struct {
	mu     sync.Mutex
	buf    []byte
	err    error
	stream *ctl.Stream
	done   chan struct{}
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= captureChunkSize {
		c.flushLocked()
	}
	return len(p), c.err
}

func (c *chunkWriter) flushLocked() {
	if len(c.buf) == 0 || c.err != nil {
		return
	}
	c.err = c.stream.Send(captureChunk{Data: c.buf})
	c.buf = c.buf[:0]
}

func (c *chunkWriter) flushEvery(d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.mu.Lock()
			c.flushLocked()
			c.mu.Unlock()
		}
	}
}

func (c *chunkWriter) close() error {
	close(c.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
	return c.err
}
