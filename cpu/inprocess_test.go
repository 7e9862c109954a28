package cpu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/transfer"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/diskkind"
	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/peripherals/peripheraltest"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

// The kinds, as the netstation binary registers them.
func init() {
	peripherals.Register(cpu.Kind)
	peripherals.Register(diskkind.Kind)
	peripherals.Register(display.Kind)
}

// threeNodes is the demo testbed in one process: cpu0, disk0 (16 MiB,
// checking capabilities) and display0 (160 x 120), on one in-memory
// segment; the disk's key is made as `netstation up` makes it.
func threeNodes(t *testing.T, ctx context.Context) *peripheraltest.Testbed {
	t.Helper()
	tb := peripheraltest.New(t, peripheraltest.Options{},
		peripheraltest.Node{Name: "cpu0", Kind: "cpu"},
		peripheraltest.Node{Name: "disk0", Kind: "disk", Params: peripherals.Params{diskkind.ParamSize: "16777216"}},
		peripheraltest.Node{Name: "display0", Kind: "display", Params: peripherals.Params{display.ParamWidth: "160", display.ParamHeight: "120"}},
	)
	if _, err := capability.CreateKeyFile(peripherals.NodeFile(tb.Dir, "disk0", capability.KeyFileExt), "disk0"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	tb.Start(ctx)
	t1 := time.Now()
	if err := tb.WaitMembership(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %v, membership in %v", t1.Sub(t0), time.Since(t1))
	return tb
}

func diskStats(t *testing.T, ctx context.Context, tb *peripheraltest.Testbed) disk.Stats {
	t.Helper()
	var st disk.Stats
	if err := tb.Call(ctx, "disk0", diskkind.OpStats, nil, &st, nil); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestInProcessStorageDemo: the storage demo (write, flush, read back,
// compare) from cpu0 to disk0, named not addressed, over the user-level
// stacks on an in-memory segment, with a capability cpu0 mints.
func TestInProcessStorageDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := threeNodes(t, ctx)
	const size = 4 << 20
	var res cpu.StorageResult
	progress := 0
	err := tb.Call(ctx, "cpu0", cpu.OpStorage, cpu.StorageArgs{DiskName: "disk0", Size: size, BlockSize: 64 << 10, QueueDepth: 8, Seed: 7},
		&res, func(json.RawMessage) error { progress++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	r := res.Report
	t.Logf("storage demo: write %v, read %v, client %+v, switch %+v", r.Write.Runtime, r.Read.Runtime, res.Client, tb.Switch.Stats())
	if !r.Match || r.SHA256Write == "" || r.SHA256Write != r.SHA256Read {
		t.Fatalf("read back differs: match %v, written %s, read %s", r.Match, r.SHA256Write, r.SHA256Read)
	}
	if r.Write.Bytes != size || r.Read.Bytes != size {
		t.Errorf("moved %d bytes written, %d read; want %d each", r.Write.Bytes, r.Read.Bytes, size)
	}
	st := diskStats(t, ctx, tb)
	if st.BytesWritten < size || st.BytesRead < size {
		t.Errorf("disk0 stored %d and sent %d bytes, want at least %d each", st.BytesWritten, st.BytesRead, size)
	}
	if st.Access != "capability" {
		t.Errorf("disk0 access %q, want capability", st.Access)
	}
	if progress == 0 {
		t.Error("no progress streamed over the control socket")
	}
}

// TestInProcessTransfer: cpu0 stores a test image on disk0, then orders
// disk0 to send it to display0 (third-party transfer); the display's frame
// equals the image pixel for pixel.
func TestInProcessTransfer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := threeNodes(t, ctx)
	img := cpu.TransferImage{Pattern: "mandelbrot", Frame: 30, Width: 160, Height: 120}
	var stored cpu.TransferStoreResult
	if err := tb.Call(ctx, "cpu0", cpu.OpTransferStore, cpu.TransferStoreArgs{DiskName: "disk0", Offset: 1 << 20, Image: img}, &stored, nil); err != nil {
		t.Fatal(err)
	}
	if stored.Bytes != 160*120*4 {
		t.Fatalf("stored %d bytes, want %d", stored.Bytes, 160*120*4)
	}
	var order transfer.Result
	if err := tb.Call(ctx, "cpu0", cpu.OpTransferOrder, cpu.TransferOrderArgs{DiskName: "disk0", DisplayName: "display0",
		Offset: 1 << 20, Width: 160, Height: 120, Frames: 2}, &order, nil); err != nil {
		t.Fatal(err)
	}
	if order.Disk.Frames != 2 {
		t.Errorf("disk sent %d frames, want 2", order.Disk.Frames)
	}
	var pngBytes []byte
	var info display.SnapshotInfo
	if err := tb.Call(ctx, "display0", display.OpSnapshot, display.SnapshotArgs{}, &info, func(m json.RawMessage) error {
		var c display.SnapshotChunk
		if err := json.Unmarshal(m, &c); err != nil {
			return err
		}
		pngBytes = append(pngBytes, c.PNG...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	shot, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		t.Fatal(err)
	}
	want, err := img.Render()
	if err != nil {
		t.Fatal(err)
	}
	if shot.Bounds() != want.Rect {
		t.Fatalf("display frame %v, want %v", shot.Bounds(), want.Rect)
	}
	diff := 0
	for y := 0; y < 120; y++ {
		for x := 0; x < 160; x++ {
			r1, g1, b1, a1 := shot.At(x, y).RGBA()
			r2, g2, b2, a2 := want.At(x, y).RGBA()
			if r1 != r2 || g1 != g2 || b1 != b2 || a1 != a2 {
				diff++
			}
		}
	}
	if diff != 0 {
		t.Errorf("%d of %d pixels differ from the stored image", diff, 160*120)
	}
}

// TestInProcessCapabilityRefusals: cpu0, the file manager, presents disk0
// with forged, expired, out-of-range, wrong-rights and replayed
// capabilities beside a valid one; after disk0 revokes, the old valid one
// is refused and a fresh one works. Every refusal is "access denied" and
// bumps the disk's counter for its reason.
func TestInProcessCapabilityRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tb := threeNodes(t, ctx)
	before := diskStats(t, ctx, tb)
	var first cpu.AccessResult
	if err := tb.Call(ctx, "cpu0", cpu.OpAccessCheck, cpu.AccessArgs{DiskName: "disk0"}, &first, nil); err != nil {
		t.Fatal(err)
	}
	var rev diskkind.RevokeReply
	if err := tb.Call(ctx, "disk0", diskkind.OpRevoke, nil, &rev, nil); err != nil {
		t.Fatal(err)
	}
	if rev.Version != before.Version+1 {
		t.Errorf("revoke: version %d, want %d", rev.Version, before.Version+1)
	}
	var second cpu.AccessResult
	if err := tb.Call(ctx, "cpu0", cpu.OpAccessCheck, cpu.AccessArgs{DiskName: "disk0", Revoked: first.Valid}, &second, nil); err != nil {
		t.Fatal(err)
	}
	after := diskStats(t, ctx, tb)
	want := map[string]bool{"ok": true, "bad_mac": true, "expired": true, "range": true, "rights": true, "replay": true, "revoked": true}
	seen := map[string]int{}
	for _, c := range append(first.Cases, second.Cases...) {
		seen[c.Want]++
		switch {
		case !want[c.Want]:
			t.Errorf("case %q expects %q: not a case this test knows", c.Name, c.Want)
		case c.Want == "ok" && c.Code != "ok":
			t.Errorf("%s: disk answered %q, want ok", c.Name, c.Code)
		case c.Want != "ok" && c.Code != "access denied":
			t.Errorf("%s: disk answered %q, want access denied", c.Name, c.Code)
		case c.Want != "ok" && after.Refused[c.Want] <= before.Refused[c.Want]:
			t.Errorf("%s: disk0's %q refusal counter did not move (%v)", c.Name, c.Want, after.Refused)
		}
	}
	for w := range want {
		if seen[w] == 0 {
			t.Errorf("no case for %q", w)
		}
	}
}

// TestInProcessStorageLoss: the storage demo byte-exact with 10 % of the
// frames on the in-memory segment dropped (seeded), every port, both
// ways, once membership has formed; the requests stay full-sized and the
// disk's feedback drives resends.
func TestInProcessStorageLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var lossy atomic.Bool
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(15, 10))
	drop := func(*link.Frame) bool {
		if !lossy.Load() {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		return rng.IntN(10) == 0
	}
	tb := peripheraltest.New(t, peripheraltest.Options{Link: mem.Options{Drop: drop}},
		peripheraltest.Node{Name: "cpu0", Kind: "cpu"},
		peripheraltest.Node{Name: "disk0", Kind: "disk", Params: peripherals.Params{diskkind.ParamSize: "16777216"}},
	)
	if _, err := capability.CreateKeyFile(peripherals.NodeFile(tb.Dir, "disk0", capability.KeyFileExt), "disk0"); err != nil {
		t.Fatal(err)
	}
	tb.Start(ctx)
	if err := tb.WaitMembership(ctx); err != nil {
		t.Fatal(err)
	}
	lossy.Store(true)
	const size = 8 << 20
	var res cpu.StorageResult
	err := tb.Call(ctx, "cpu0", cpu.OpStorage, cpu.StorageArgs{DiskName: "disk0", Size: size, BlockSize: 1 << 20, QueueDepth: 4, Seed: 9},
		&res, nil)
	lossy.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	r, c := res.Report, res.Client
	t.Logf("10%% loss: write %.1f MiB/s, read %.1f MiB/s; client %+v", r.Write.MiBps(), r.Read.MiBps(), c)
	if !r.Match || r.SHA256Write != r.SHA256Read {
		t.Fatalf("read back differs: written %s, read %s", r.SHA256Write, r.SHA256Read)
	}
	if c.Retransmits == 0 || c.FeedbackResend == 0 {
		t.Errorf("no feedback-driven resends at 10 %% loss: %+v", c)
	}
	if want := uint64(2*size/(256<<10) + 1); c.Requests != want {
		t.Errorf("%d requests, want %d: full-sized requests (256 KiB) plus the flush", c.Requests, want)
	}
}
