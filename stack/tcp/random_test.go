package tcp_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/impair"
	"github.com/netstation/netstation/stack/link/mem"
	"github.com/netstation/netstation/stack/tcp"
)

// TestRandomImpairments runs connections through random combinations of
// loss (both ways), corruption, delay, small buffers, a slow reader,
// SACK and timestamps on or off, with and without offloads, moving data
// both ways and closing; every byte must arrive and nothing may stall.
// The seed of each case is in its name; NETSTATION_TCP_SEED=<seed> replays
// that case alone. Corruption is applied
// on one side only: two flipped bytes in one frame can cancel out in the
// 16-bit checksum (a known TCP weakness: a corrupted timestamp then
// wedges PAWS), which is not what this test is about.
func TestRandomImpairments(t *testing.T) {
	n := 12
	if testing.Short() {
		n = 3
	}
	base := uint64(time.Now().UnixNano())
	if v := os.Getenv("NETSTATION_TCP_SEED"); v != "" {
		// Replay one case: NETSTATION_TCP_SEED=<the seed in its name>.
		var err error
		if base, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("NETSTATION_TCP_SEED: %v", err)
		}
		n = 1
	}
	for i := range n {
		seed := base + uint64(i)
		r := rand.New(rand.NewPCG(seed, 1))
		cfg := tcp.Config{NoSACK: r.IntN(3) == 0, NoTimestamps: r.IntN(3) == 0, MinRTO: 20 * time.Millisecond,
			MaxBuffer: []int{8 << 10, 64 << 10, 4 << 20}[r.IntN(3)], InitialBuffer: 4096}
		delay := time.Duration(r.IntN(3)) * 500 * time.Microsecond
		corrupt := uint32(0)
		slow := r.IntN(3) == 0
		caps := []link.Caps{0, link.CapVNetHdr, link.CapVNetHdr | link.CapGSO}[r.IntN(3)]
		if caps == 0 {
			corrupt = uint32(r.IntN(20000))
		}
		lossA, lossB := uint32(r.IntN(50000)), uint32(r.IntN(50000))
		size := 1 << (16 + r.IntN(6))
		name := fmt.Sprintf("seed=%d cfg=%+v caps=%d loss=%d/%d size=%d delay=%v corrupt=%d slow=%v", seed, cfg, caps, lossA, lossB, size, delay, corrupt, slow)
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			var ia, ib *impair.Link
			w := newWorld(t, worldOpts{tcp: cfg, mem: mem.Options{Caps: caps},
				wrapA: func(l link.Link) link.Link { ia = impair.Wrap(l); return ia },
				wrapB: func(l link.Link) link.Link { ib = impair.Wrap(l); return ib }})
			c, s := w.connect(t, 80)
			ia.Set(impair.Params{LossPPM: lossA, Seed: seed, Delay: delay, CorruptPPM: corrupt})
			ib.Set(impair.Params{LossPPM: lossB, Seed: seed + 1})
			a, b := pattern(size, 1), pattern(size/3, 2)
			go func() { c.Write(a); c.CloseWrite() }()
			go func() { s.Write(b); s.CloseWrite() }()
			gotS, gotC := make(chan []byte, 1), make(chan []byte, 1)
			go func() {
				if !slow {
					x, _ := io.ReadAll(s)
					gotS <- x
					return
				}
				var x []byte
				buf := make([]byte, 3000)
				for {
					n, err := s.Read(buf)
					x = append(x, buf[:n]...)
					if err != nil {
						break
					}
					if len(x)%7 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
				gotS <- x
			}()
			go func() { x, _ := io.ReadAll(c); gotC <- x }()
			tm := time.After(60 * time.Second)
			for range 2 {
				select {
				case x := <-gotS:
					if string(x) != string(a) {
						t.Fatalf("%s: server got %d of %d", name, len(x), len(a))
					}
				case x := <-gotC:
					if string(x) != string(b) {
						t.Fatalf("%s: client got %d of %d", name, len(x), len(b))
					}
				case <-tm:
					t.Fatalf("%s: stall\nclient %+v\nserver %+v\nclient %s\nserver %s", name, c.Info(), s.Info(), c.Debug(), s.Debug())
				}
			}
		})
	}
}
