package main

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/testbed"
)

// Block layout of the durability test: every 4 KiB block says which block
// and which version of it it is, and seals that with a CRC, so a torn,
// misplaced or stale block is recognised on read-back.
const (
	durBlock   = 4096
	durExtent  = 16 // blocks per WRITE: 64 KiB, 45 datagrams of 1472 B
	durExtents = 32 // 2 MiB under test
	durWriters = 4
	durMagic   = 0x6e737464757261 // "nstdura"
)

func stampBlock(b []byte, block, version uint64) {
	binary.LittleEndian.PutUint64(b[0:], durMagic)
	binary.LittleEndian.PutUint64(b[8:], block)
	binary.LittleEndian.PutUint64(b[16:], version)
	r := rand.New(rand.NewPCG(block, version))
	for i := 28; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	binary.LittleEndian.PutUint32(b[24:], crc32.ChecksumIEEE(b[28:]))
}

// parseBlock returns the block's version; ok is false for anything but an
// intact stamp of block (all zeros: version 0, ok).
func parseBlock(b []byte, block uint64) (version uint64, ok bool) {
	if binary.LittleEndian.Uint64(b[0:]) == 0 {
		for _, c := range b {
			if c != 0 {
				return 0, false
			}
		}
		return 0, true
	}
	if binary.LittleEndian.Uint64(b[0:]) != durMagic || binary.LittleEndian.Uint64(b[8:]) != block ||
		binary.LittleEndian.Uint32(b[24:]) != crc32.ChecksumIEEE(b[28:]) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[16:]), true
}

// durLedger is what the client was promised: per block the newest version
// acknowledged, and the newest one durable (FUA, or acknowledged before a
// FLUSH that completed).
type durLedger struct {
	mu      sync.Mutex
	issued  [durExtents * durExtent]uint64
	acked   [durExtents * durExtent]uint64
	durable [durExtents * durExtent]uint64
}

// TestDiskSurvivesKill9 is the storage issue's crash test on a real
// testbed: the host's kernel (through host access) writes to disk0's
// user-level stack with segmented 64 KiB WRITEs, some FUA, with FLUSHes
// between, kill -9s the disk peripheral while writes are in flight, lets
// the supervisor restart it, and reads everything back: every block must
// be intact and at least as new as its newest durable version. Several
// rounds, each on the data the previous ones left.
func TestDiskSurvivesKill9(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, "host_access: {}\n"+threeNodes))
	plan := b.plan()
	host := plan.Host.Addr.Addr()
	disk, err := plan.Node("disk0")
	if err != nil {
		t.Fatal(err)
	}
	diskAddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(disk.Addr.Addr(), diskproto.Port))
	// The test is the disk's file manager: it mints with the key the
	// testbed made for disk0, as cpu0 does.
	dir := filepath.Join(b.state, b.name)
	fm := manager.New()
	fm.Add(manager.Disk{Name: "disk0", Addr: disk.Addr.Addr(),
		KeyPath: testbed.NodeKey(dir, "disk0"), VersionPath: testbed.NodeCapVersion(dir, "disk0")})
	dial := func() *storage.Client {
		t.Helper()
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, 0)))
		if err != nil {
			t.Fatal(err)
		}
		grant, err := fm.Mint("disk0", disk.Addr.Addr(), manager.WholeDisk(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		c, err := storage.Dial(pc, diskAddr, storage.Options{MaxRetries: 6, MaxRTO: 200 * time.Millisecond, Capability: grant})
		if err != nil {
			t.Fatalf("dial disk0 from the host: %v", err)
		}
		return c
	}
	diskIndex := -1
	for i, n := range b.status(b.name).Nodes {
		if n.Name == "disk0" {
			diskIndex = i
		}
	}
	var led durLedger
	r := rand.New(rand.NewPCG(7, 7))
	const rounds = 6
	for round := range rounds {
		c := dial()
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var acks, fuas, flushes int64
		var cntMu sync.Mutex
		for w := range durWriters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				wr := rand.New(rand.NewPCG(uint64(round), uint64(w)))
				buf := make([]byte, durBlock*durExtent)
				for ctx.Err() == nil {
					ext := uint64(w + durWriters*wr.IntN(durExtents/durWriters)) // each writer owns its extents
					fua := wr.IntN(4) == 0
					led.mu.Lock()
					vers := make([]uint64, durExtent)
					for i := range durExtent {
						blk := ext*durExtent + uint64(i)
						led.issued[blk]++
						vers[i] = led.issued[blk]
					}
					led.mu.Unlock()
					for i := range durExtent {
						stampBlock(buf[i*durBlock:(i+1)*durBlock], ext*durExtent+uint64(i), vers[i])
					}
					if _, err := c.WriteAt(ctx, buf, int64(ext*durExtent*durBlock), fua); err != nil {
						return
					}
					led.mu.Lock()
					for i := range durExtent {
						blk := ext*durExtent + uint64(i)
						led.acked[blk] = max(led.acked[blk], vers[i])
						if fua {
							led.durable[blk] = max(led.durable[blk], vers[i])
						}
					}
					led.mu.Unlock()
					cntMu.Lock()
					acks++
					if fua {
						fuas++
					}
					cntMu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() { // the flusher
			defer wg.Done()
			for ctx.Err() == nil {
				time.Sleep(15 * time.Millisecond)
				led.mu.Lock()
				snap := led.acked
				led.mu.Unlock()
				if err := c.Flush(ctx); err != nil {
					return
				}
				led.mu.Lock()
				for i, v := range snap {
					led.durable[i] = max(led.durable[i], v)
				}
				led.mu.Unlock()
				cntMu.Lock()
				flushes++
				cntMu.Unlock()
			}
		}()

		time.Sleep(time.Duration(150+r.IntN(250)) * time.Millisecond)
		// On a loaded machine the first acknowledgements can take longer
		// than the random delay: kill only once something was acknowledged
		// and flushed, so every round proves something.
		for wait := time.Now().Add(15 * time.Second); time.Now().Before(wait); time.Sleep(10 * time.Millisecond) {
			cntMu.Lock()
			ready := acks > 0 && flushes > 0
			cntMu.Unlock()
			if ready {
				break
			}
		}
		before := b.status(b.name).Nodes[diskIndex]
		if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // writes still in flight meet a dead disk
		cancel()
		wg.Wait()
		c.Close()
		waitRestarted(t, b, diskIndex, before)
		cntMu.Lock()
		if acks == 0 || flushes == 0 {
			t.Fatalf("round %d: %d writes and %d flushes acknowledged before the kill: the test proved nothing", round, acks, flushes)
		}
		t.Logf("round %d: %d writes acknowledged (%d FUA), %d flushes, then kill -9", round, acks, fuas, flushes)
		cntMu.Unlock()

		c = dial()
		all := make([]byte, durExtents*durExtent*durBlock)
		rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := c.ReadAt(rctx, all, 0); err != nil {
			t.Fatalf("round %d: read back: %v", round, err)
		}
		rcancel()
		c.Close()
		led.mu.Lock()
		for blk := range led.durable {
			v, ok := parseBlock(all[blk*durBlock:(blk+1)*durBlock], uint64(blk))
			if !ok {
				t.Fatalf("round %d: block %d is torn or misplaced", round, blk)
			}
			if v < led.durable[blk] || v > led.issued[blk] {
				t.Fatalf("round %d: block %d holds version %d; durable %d, issued %d: an acknowledged write was lost",
					round, blk, v, led.durable[blk], led.issued[blk])
			}
			// What is on the disk now is what later rounds build on.
			led.acked[blk], led.durable[blk] = v, v
		}
		led.mu.Unlock()
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}

// waitRestarted waits until the supervisor has restarted node i after
// the kill of before's process.
func waitRestarted(t *testing.T, b *bed, i int, before testbed.NodeStatus) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := b.status(b.name).Nodes[i]
		if n.Restarts > before.Restarts && n.State == testbed.StateRunning && n.PID != before.PID && n.PID != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(errors.New("disk0 not restarted after kill -9"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
