package cpu

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/header"
)

// StorageArgs ask the processor to run the storage demo against a disk.
type StorageArgs struct {
	Disk       netip.Addr `json:"disk"`      // the disk's address on the chosen stack
	DiskName   string     `json:"disk_name"` // its node name: the file manager's key
	Local      netip.Addr `json:"local"`     // our address on the chosen stack
	Stack      string     `json:"stack"`     // "user" or "kernel"
	Size       int64      `json:"size"`
	BlockSize  int        `json:"bs"`
	QueueDepth int        `json:"qd"`
	Seed       uint64     `json:"seed"`
	// MaxRequest caps one protocol request's data (0: the disk's maximum),
	// whatever the loss: the protocol resends lost datagrams selectively
	// (version 3), so small requests no longer pay on lossy paths.
	MaxRequest int `json:"max_request"`
	// Datagram is the size requests and replies are cut to (0: the MTU
	// less the IP and UDP headers, so nothing is IP-fragmented).
	Datagram int `json:"datagram"`
	// Pattern: "seq" (write, flush, read back, compare digests) or
	// "randread" (fill, flush, random reads each checked).
	Pattern string `json:"pattern"`
}

// StorageResult is the demo's outcome.
type StorageResult struct {
	Report workload.StorageReport `json:"report"`
	Client storage.Stats          `json:"client"`
}

// RunStorage runs the storage demo from this processor: it opens a UDP
// socket on the user-level stack st (or on the kernel's, for the
// baseline), has mgr mint a capability for the whole disk (the all-zero
// one for a disk in open mode), dials the disk and runs
// workload.RunStorage. progress may be nil.
func RunStorage(ctx context.Context, st *stack.Stack, mgr *manager.Manager, a StorageArgs, progress func(workload.Progress)) (*StorageResult, error) {
	grant, err := mgr.Mint(a.DiskName, a.Disk, manager.WholeDisk(0))
	if err != nil {
		return nil, fmt.Errorf("storage demo: capability: %w", err)
	}
	var pc net.PacketConn
	switch a.Stack {
	case "user", "":
		a.Stack = "user"
		pc, err = st.ListenUDP(netip.AddrPortFrom(st.Addr(), 0))
	case "kernel":
		var kc *net.UDPConn
		kc, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Local, 0)))
		if err == nil {
			dgram.SetKernelBuffers(kc, 8<<20)
			pc = kc
		}
	default:
		return nil, fmt.Errorf("unknown stack %q (user or kernel)", a.Stack)
	}
	if err != nil {
		return nil, fmt.Errorf("storage demo: socket: %w", err)
	}
	opts := storage.Options{MaxRequest: a.MaxRequest, Datagram: a.Datagram, Capability: grant}
	if opts.Datagram == 0 {
		opts.Datagram = st.MTU() - header.IPv4MinimumSize - header.UDPMinimumSize
	}
	c, err := storage.Dial(pc, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Disk, diskproto.Port)), opts)
	if err != nil {
		return nil, fmt.Errorf("storage demo: disk %v: %w", a.Disk, err)
	}
	defer c.Close()
	if a.Size > c.Info().Size {
		return nil, fmt.Errorf("storage demo: %d bytes do not fit the disk's %d", a.Size, c.Info().Size)
	}
	if progress != nil {
		hctx, stop := context.WithCancel(ctx)
		defer stop()
		progress = withHealth(hctx, c, progress)
	}
	o := workload.StorageOptions{Size: a.Size, BlockSize: a.BlockSize, QueueDepth: a.QueueDepth, Seed: a.Seed, Progress: progress}
	var rep *workload.StorageReport
	switch a.Pattern {
	case "seq", "":
		rep, err = workload.RunStorage(ctx, c, o)
	case "randread":
		rep, err = workload.RunRandRead(ctx, c, o)
	default:
		return nil, fmt.Errorf("unknown pattern %q (seq or randread)", a.Pattern)
	}
	res := &StorageResult{Client: c.Stats()}
	if rep != nil {
		rep.Stack = a.Stack
		res.Report = *rep
	}
	return res, err
}

// healthEvery is how often the storage demo reports while nothing
// completes, so that a stalled run is seen as one and explained.
const healthEvery = time.Second

// withHealth returns a progress function that adds the client's health
// (retransmits, time since the disk last answered, its latest refusal) to
// every report and repeats the latest report every healthEvery until ctx
// ends, even when no I/O completes.
func withHealth(ctx context.Context, c *storage.Client, progress func(workload.Progress)) func(workload.Progress) {
	var mu sync.Mutex
	var last workload.Progress
	lastAt := time.Now()
	send := func(p workload.Progress) { // with mu held
		st := c.Stats()
		p.Retransmits, p.SinceReply, p.Refusal = st.Retransmits, st.SinceReply, st.LastRefusal
		progress(p)
	}
	go func() {
		t := time.NewTicker(healthEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mu.Lock()
			p := last
			if p.Phase == "" {
				p.Phase = "starting"
			}
			p.Elapsed += time.Since(lastAt)
			send(p)
			mu.Unlock()
		}
	}()
	return func(p workload.Progress) {
		mu.Lock()
		defer mu.Unlock()
		last, lastAt = p, time.Now()
		send(p)
	}
}
