package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"strings"
	"time"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/transfer"
	"github.com/netstation/netstation/cpu/workload"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/diskkind"
	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/testbed/spec"
)

// StorageDemoArgs choose the peripherals and shape of the storage demo.
type StorageDemoArgs struct {
	CPU, Disk string
	Args      cpu.StorageArgs // Disk and Local are filled in here
	// LossPPM drops that fraction of frames in both directions on the
	// disk's link (seeded by Args.Seed), per million.
	LossPPM uint32
}

// call runs one control operation on a node.
func call(ctx context.Context, dir, node string, op peripherals.Op, args, out any) error {
	if err := nodeCall(ctx, dir, node, op, args, out, nil); err != nil {
		if errors.Is(err, ErrNodeDown) {
			return err // says which node, in words
		}
		return fmt.Errorf("%s: %s: %w", node, op, err)
	}
	return nil
}

// StorageDemo runs the storage demo on a testbed that is up: cpu writes,
// flushes, reads back and verifies, over the user-level stacks or, for the
// baseline, over kernel sockets in the same namespaces.
func StorageDemo(ctx context.Context, testbed string, a StorageDemoArgs, progress func(workload.Progress)) (*cpu.StorageResult, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	cn, err := plan.Node(a.CPU)
	if err != nil {
		return nil, err
	}
	dn, err := plan.Node(a.Disk)
	if err != nil {
		return nil, err
	}
	if cn.Kind != "cpu" || dn.Kind != "disk" {
		return nil, fmt.Errorf("storage demo needs a cpu and a disk (got %s %s, %s %s)", cn.Name, cn.Kind, dn.Name, dn.Kind)
	}
	if err := checkPath(cn, dn); err != nil {
		return nil, fmt.Errorf("storage demo: %w", err)
	}
	// Always leave the peripherals as we found them: the disk's link
	// settings (which `link set` may have chosen) and the kernel baseline.
	links, err := ShowLinks(ctx, testbed, dn.Name)
	if err != nil || len(links) != 1 {
		return nil, fmt.Errorf("storage demo: read %s's link settings: %v", dn.Name, err)
	}
	before := links[0].Params
	cleanup := func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if a.LossPPM > 0 {
			_, _ = SetLink(c, testbed, LinkChange{Node: dn.Name, LossPPM: &before.LossPPM, Seed: &before.Seed})
		}
		if a.Args.Stack == "kernel" {
			_ = call(c, dir, cn.Name, peripherals.OpKernel, false, nil)
			_ = call(c, dir, dn.Name, peripherals.OpKernel, false, nil)
		}
	}
	defer cleanup()
	if a.LossPPM > 0 {
		// The fabric's loss injection (tc BPF on the disk's port when BPF
		// is available, the peripheral's link layer otherwise).
		seed := a.Args.Seed
		if _, err := SetLink(ctx, testbed, LinkChange{Node: dn.Name, LossPPM: &a.LossPPM, Seed: &seed}); err != nil {
			return nil, err
		}
	}
	// No disk address: cpu finds disk0 by membership (gossip).
	a.Args.Local, a.Args.DiskName = cn.Addr.Addr(), dn.Name
	if a.Args.Stack == "kernel" {
		for _, n := range []*NodePlan{cn, dn} {
			if err := call(ctx, dir, n.Name, peripherals.OpKernel, true, nil); err != nil {
				return nil, err
			}
		}
		a.Args.Local = peripherals.KernelAddr(cn.Addr).Addr()
	}
	var res cpu.StorageResult
	err = nodeCall(ctx, dir, cn.Name, cpu.OpStorage, a.Args, &res, func(m json.RawMessage) error {
		var p workload.Progress
		if progress != nil && json.Unmarshal(m, &p) == nil {
			progress(p)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ctl.ErrRemote) {
			return nil, fmt.Errorf("storage demo on %s: %w", cn.Name, err)
		}
		return nil, err
	}
	res.Report.Options = workload.StorageOptions{Size: a.Args.Size, BlockSize: a.Args.BlockSize, QueueDepth: a.Args.QueueDepth, Seed: a.Args.Seed}
	return &res, nil
}

// DiskStats returns a disk's counters: requests, errors, drops, capability
// refusals by reason, transfer orders.
func DiskStats(ctx context.Context, testbed, node string) (disk.Stats, error) {
	var st disk.Stats
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return st, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	n, err := plan.Node(node)
	if err != nil {
		return st, err
	}
	if n.Kind != spec.KindDisk {
		return st, fmt.Errorf("%s is a %s, not a disk", n.Name, n.Kind)
	}
	err = call(ctx, dir, n.Name, diskkind.OpStats, nil, &st)
	return st, err
}

// RevokeDisk bumps a disk's capability version: every capability minted
// before is refused from now on (and after restarts of the disk); the
// file managers mint at the new version.
//
// On a multi-host testbed the new version is carried to every other host
// that runs nodes (spreadRevocation), so their cpus mint at it; a host
// that could not be told is named in the error, the revocation itself
// stands.
func RevokeDisk(ctx context.Context, testbed, node string) (uint32, error) {
	if _, err := DiskStats(ctx, testbed, node); err != nil {
		return 0, err
	}
	dir := Dir(testbed)
	var r diskkind.RevokeReply
	if err := call(ctx, dir, node, diskkind.OpRevoke, nil, &r); err != nil {
		return 0, err
	}
	if plan, err := LoadPlan(dir); err == nil && plan.MultiHost() {
		n, _ := plan.Node(node)
		if missed := spreadRevocation(ctx, dir, plan, n, r.Version); len(missed) > 0 {
			return r.Version, fmt.Errorf("%w: %s revoked (version %d), but not told: %s; their cpus mint refused capabilities until told",
				ErrRevokeSpread, node, r.Version, strings.Join(missed, ", "))
		}
	}
	return r.Version, nil
}

// ErrRevokeSpread: a revocation took effect on the disk but could not be
// carried to every host of a multi-host testbed.
var ErrRevokeSpread = errors.New("revocation not carried to every host")

// CapabilityDemoResult is what the capability demo saw: every case, and
// the disk's refusal counters accrued meanwhile, by reason.
type CapabilityDemoResult struct {
	Cases   []cpu.AccessCase  `json:"cases"`
	Refused map[string]uint64 `json:"refused"`
	// Version is the disk's capability version before and after the
	// revocation.
	VersionBefore uint32 `json:"version_before"`
	VersionAfter  uint32 `json:"version_after"`
}

// Unexpected names the cases whose answer was not the one wanted: a
// refusal where "ok" was wanted or the reverse, or a refusal the disk did
// not count under the wanted reason.
func (r *CapabilityDemoResult) Unexpected() []string {
	var out []string
	for _, k := range r.Cases {
		switch {
		case (k.Want == "ok") != (k.Code == "ok"):
			out = append(out, fmt.Sprintf("%s: want %s, got %s", k.Name, k.Want, k.Code))
		case k.Want != "ok" && r.Refused[k.Want] == 0:
			out = append(out, fmt.Sprintf("%s: refused, but not counted as %s", k.Name, k.Want))
		}
	}
	return out
}

// CapabilityDemo has the cpu (the file manager) present the disk with
// valid, forged, expired, out-of-range, wrong-rights and replayed
// capabilities, then revokes the disk's capabilities and shows the valid
// one refused and a freshly minted one accepted.
func CapabilityDemo(ctx context.Context, testbed, cpuName, diskName string) (*CapabilityDemoResult, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	cn, err := plan.Node(cpuName)
	if err != nil {
		return nil, err
	}
	if cn.Kind != spec.KindCPU {
		return nil, fmt.Errorf("%s is a %s, not a cpu", cn.Name, cn.Kind)
	}
	if err := plan.checkPathNames(cn.Name, diskName); err != nil {
		return nil, fmt.Errorf("capability demo: %w", err)
	}
	before, err := DiskStats(ctx, testbed, diskName)
	if err != nil {
		return nil, err
	}
	dn, _ := plan.Node(diskName)
	args := cpu.AccessArgs{Disk: dn.Addr.Addr(), DiskName: dn.Name}
	var first cpu.AccessResult
	if err := call(ctx, dir, cn.Name, cpu.OpAccessCheck, args, &first); err != nil {
		return nil, err
	}
	v, err := RevokeDisk(ctx, testbed, dn.Name)
	if err != nil {
		return nil, err
	}
	args.Revoked = first.Valid
	var second cpu.AccessResult
	if err := call(ctx, dir, cn.Name, cpu.OpAccessCheck, args, &second); err != nil {
		return nil, err
	}
	after, err := DiskStats(ctx, testbed, dn.Name)
	if err != nil {
		return nil, err
	}
	res := &CapabilityDemoResult{Cases: append(first.Cases, second.Cases...), Refused: map[string]uint64{},
		VersionBefore: before.Version, VersionAfter: v}
	for k, n := range after.Refused {
		if d := n - before.Refused[k]; d > 0 {
			res.Refused[k] = d
		}
	}
	return res, nil
}

// TransferDemoArgs choose the peripherals and the shape of the transfer
// demo.
type TransferDemoArgs struct {
	CPU, Disk, Display string
	Pattern            string // the test image: a cpu/render pattern
	Frames             int    // times the stored frame is sent (one order)
	TileW, TileH       int
	Offset             uint64 // where on the disk the image is stored
	// Progress, if set, gets a report about every second while the order
	// runs, from the disk's transfer counters.
	Progress func(TransferProgress) `json:"-"`
}

// TransferProgress is the state of a running transfer order, from the
// disk's counters (deltas since the order started).
type TransferProgress struct {
	Frames, TotalFrames int
	Tiles, TotalTiles   uint64 // first transmissions of tiles
	Resent              uint64 // tiles sent again on the display's report
	Timeouts            uint64 // checkpoints the display did not answer in time
	Elapsed             time.Duration
}

// StackBytes is what crossed one peripheral's stack during the transfer.
type StackBytes struct {
	Node    string `json:"node"`
	RxBytes uint64 `json:"rx_bytes"`
	TxBytes uint64 `json:"tx_bytes"`
	RxFrame uint64 `json:"rx_frames"`
	TxFrame uint64 `json:"tx_frames"`
}

// TransferDemoResult is what the transfer demo saw.
type TransferDemoResult struct {
	Width      int    `json:"width"`
	Height     int    `json:"height"`
	ImageBytes int    `json:"image_bytes"` // one frame
	SHA256     string `json:"sha256"`
	Frames     uint32 `json:"frames"`
	// Order is the processor's view: the disk's reply and the display's
	// completion reports.
	Order transfer.Result `json:"order"`
	// Stacks: bytes each peripheral's stack moved during the order.
	Stacks []StackBytes `json:"stacks"`
	// FPS and Mbps: frames presented per second and pixel payload rate,
	// over the disk's time from order to the last frame's confirmation.
	FPS  float64 `json:"fps"`
	Mbps float64 `json:"mbps"`
	// Match: the display's snapshot equals the image pixel for pixel;
	// DiffPixels counts the pixels that differ.
	Match      bool          `json:"match"`
	DiffPixels int           `json:"diff_pixels"`
	Display    display.Stats `json:"display"`
	Disk       disk.Stats    `json:"disk"`
}

// TransferDemo has the cpu render a test image and store it on the disk,
// then order the disk to send it to the display (third-party transfer),
// and checks the display's frame against the image; it reports the bytes
// each peripheral's stack moved during the order.
func TransferDemo(ctx context.Context, testbed string, a TransferDemoArgs) (*TransferDemoResult, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	var nodes [3]*NodePlan
	for i, c := range []struct {
		name string
		kind spec.Kind
	}{{a.CPU, spec.KindCPU}, {a.Disk, spec.KindDisk}, {a.Display, spec.KindDisplay}} {
		n, err := plan.Node(c.name)
		if err != nil {
			return nil, err
		}
		if n.Kind != c.kind {
			return nil, fmt.Errorf("transfer demo: %s is a %s, not a %s", n.Name, n.Kind, c.kind)
		}
		nodes[i] = n
	}
	cn, dn, vn := nodes[0], nodes[1], nodes[2]
	for _, p := range [][2]*NodePlan{{cn, dn}, {dn, vn}} {
		if err := checkPath(p[0], p[1]); err != nil {
			return nil, fmt.Errorf("transfer demo: %w", err)
		}
	}
	ds, err := DisplayStats(ctx, testbed, vn.Name)
	if err != nil {
		return nil, err
	}
	if a.Pattern == "" {
		a.Pattern = "mandelbrot"
	}
	img := cpu.TransferImage{Pattern: a.Pattern, Frame: 30, Width: ds.Width, Height: ds.Height}
	var stored cpu.TransferStoreResult
	// Names only: cpu finds disk and display by membership (gossip).
	if err := call(ctx, dir, cn.Name, cpu.OpTransferStore, cpu.TransferStoreArgs{DiskName: dn.Name,
		Offset: a.Offset, Image: img}, &stored); err != nil {
		return nil, err
	}
	stacks := func() ([]StackBytes, error) {
		var out []StackBytes
		for _, n := range nodes {
			var st peripherals.Status
			if err := call(ctx, dir, n.Name, peripherals.OpStatus, nil, &st); err != nil {
				return nil, err
			}
			out = append(out, StackBytes{Node: n.Name, RxBytes: st.Stack.RxBytes, TxBytes: st.Stack.TxBytes,
				RxFrame: st.Stack.RxFrames, TxFrame: st.Stack.TxFrames})
		}
		return out, nil
	}
	before, err := stacks()
	if err != nil {
		return nil, err
	}
	res := &TransferDemoResult{Width: ds.Width, Height: ds.Height, ImageBytes: stored.Bytes, SHA256: stored.SHA256}
	if a.Progress != nil && a.TileW > 0 && a.TileH > 0 {
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		perFrame := uint64((ds.Width+a.TileW-1)/a.TileW) * uint64((ds.Height+a.TileH-1)/a.TileH)
		go watchTransfer(pctx, testbed, dn.Name, max(a.Frames, 1), perFrame, a.Progress)
	}
	err = call(ctx, dir, cn.Name, cpu.OpTransferOrder, cpu.TransferOrderArgs{DiskName: dn.Name,
		DisplayName: vn.Name, Offset: a.Offset, Width: ds.Width, Height: ds.Height,
		TileW: a.TileW, TileH: a.TileH, Frames: a.Frames}, &res.Order)
	if err != nil {
		return nil, err
	}
	after, err := stacks()
	if err != nil {
		return nil, err
	}
	for i := range after {
		b := before[i]
		res.Stacks = append(res.Stacks, StackBytes{Node: b.Node, RxBytes: after[i].RxBytes - b.RxBytes,
			TxBytes: after[i].TxBytes - b.TxBytes, RxFrame: after[i].RxFrame - b.RxFrame, TxFrame: after[i].TxFrame - b.TxFrame})
	}
	res.Frames = res.Order.Disk.Frames
	if s := res.Order.Disk.Elapsed.Seconds(); s > 0 {
		res.FPS = float64(res.Frames) / s
		res.Mbps = float64(res.Frames) * float64(stored.Bytes) * 8 / 1e6 / s
	}
	pngBytes, _, err := Snapshot(ctx, testbed, vn.Name, 0, 0)
	if err != nil {
		return nil, err
	}
	shot, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		return nil, fmt.Errorf("transfer demo: snapshot: %w", err)
	}
	want, err := img.Render()
	if err != nil {
		return nil, err
	}
	res.DiffPixels = diffPixels(shot, want)
	res.Match = res.DiffPixels == 0
	if res.Display, err = DisplayStats(ctx, testbed, vn.Name); err != nil {
		return nil, err
	}
	if res.Disk, err = DiskStats(ctx, testbed, dn.Name); err != nil {
		return nil, err
	}
	return res, nil
}

// diffPixels counts the pixels where got and want differ (every pixel,
// when their sizes differ).
func diffPixels(got image.Image, want *image.RGBA) int {
	b := want.Rect
	if got.Bounds() != b {
		return b.Dx() * b.Dy()
	}
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r1, g1, b1, a1 := got.At(x, y).RGBA()
			r2, g2, b2, a2 := want.At(x, y).RGBA()
			if r1 != r2 || g1 != g2 || b1 != b2 || a1 != a2 {
				n++
			}
		}
	}
	return n
}

// watchTransfer reports a running order's progress from the disk's
// transfer counters every second until ctx ends.
func watchTransfer(ctx context.Context, testbed, disk string, frames int, perFrame uint64, progress func(TransferProgress)) {
	first, err := DiskStats(ctx, testbed, disk)
	if err != nil {
		return
	}
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := DiskStats(ctx, testbed, disk)
		if err != nil {
			continue
		}
		x, x0 := st.Transfers, first.Transfers
		progress(TransferProgress{Frames: int(x.Frames - x0.Frames), TotalFrames: frames,
			Tiles: (x.Tiles - x0.Tiles) - (x.Resent - x0.Resent), TotalTiles: uint64(frames) * perFrame,
			Resent: x.Resent - x0.Resent, Timeouts: x.Timeouts - x0.Timeouts, Elapsed: time.Since(start)})
	}
}
