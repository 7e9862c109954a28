package main

import (
	"bytes"
	"context"
	byteorder "encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/cpu/transfer"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/testbed"
)

// TestCapabilitiesByDefault: a disk checks capabilities unless the
// topology opens it. Its key sits in the state directory, readable by the
// owner only; the storage demo (cpu0 minting) works; forged, expired,
// out-of-range, wrong-rights and replayed capabilities are refused and
// counted by reason; after a revocation the old capability is refused,
// a fresh one works, and so does the storage demo.
func TestCapabilitiesByDefault(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	key := filepath.Join(b.state, b.name, "nodes", "disk0.key")
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatalf("no key file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	var st struct {
		Access  string `json:"access"`
		Version uint32 `json:"capability_version"`
	}
	if err := json.Unmarshal([]byte(b.must("disk", "stats", "-t", b.name, "disk0", "-o", "json")), &st); err != nil || st.Access != "capability" {
		t.Fatalf("disk0 access %q (%v), want capability", st.Access, err)
	}

	out := b.must("demo", "capabilities", "-t", b.name, "-o", "json")
	var res testbed.CapabilityDemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := map[string]bool{"ok": true, "bad_mac": true, "expired": true, "range": true, "rights": true, "replay": true, "revoked": true}
	seen := map[string]int{}
	for _, c := range res.Cases {
		seen[c.Want]++
		if !want[c.Want] {
			t.Errorf("case %q expects %q: not a case this test knows", c.Name, c.Want)
		}
		switch {
		case c.Want == "ok" && c.Code != "ok":
			t.Errorf("%s: disk answered %q, want ok", c.Name, c.Code)
		case c.Want != "ok" && c.Code != "access denied":
			t.Errorf("%s: disk answered %q, want access denied", c.Name, c.Code)
		}
		if c.Want != "ok" && res.Refused[c.Want] == 0 {
			t.Errorf("%s: disk0's %q refusal counter did not move (refused: %v)", c.Name, c.Want, res.Refused)
		}
	}
	for w := range want {
		if seen[w] == 0 {
			t.Errorf("no case for %q", w)
		}
	}
	if res.VersionAfter != res.VersionBefore+1 {
		t.Errorf("version %d -> %d, want a bump by one", res.VersionBefore, res.VersionAfter)
	}
	// The file manager mints at the new version: the storage demo still works.
	out = b.must("demo", "storage", "-t", b.name, "--size", "4MiB", "-o", "json")
	if !strings.Contains(out, `"match": true`) {
		t.Errorf("storage demo after revocation:\n%s", out)
	}
	// A revocation survives a restart of the disk: the version is on disk.
	b.must("disk", "revoke", "-t", b.name, "disk0")
	var disk0 int
	for i, n := range b.status(b.name).Nodes {
		if n.Name == "disk0" {
			disk0 = i
		}
	}
	b.killAndWaitRestart(disk0)
	var stats []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		out, err := b.run("disk", "stats", "-t", b.name, "disk0", "-o", "json")
		if err == nil {
			stats = []byte(out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("disk0 after its restart: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := json.Unmarshal(stats, &st); err != nil || st.Version != res.VersionAfter+1 || st.Access != "capability" {
		t.Errorf("after a second revoke and a restart: version %d access %q (%v), want %d", st.Version, st.Access, err, res.VersionAfter+1)
	}
}

// TestDiskOpenMode: open mode only when the topology asks; then the
// storage demo runs with the all-zero capability and there is no key.
func TestDiskOpenMode(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk, disk: {access: open}}
`))
	if _, err := os.Stat(filepath.Join(b.state, b.name, "nodes", "disk0.key")); err == nil {
		t.Errorf("an open disk got a key file")
	}
	out := b.must("disk", "stats", "-t", b.name, "disk0", "-o", "json")
	if !strings.Contains(out, `"access": "open"`) {
		t.Errorf("disk0 not in open mode:\n%s", out)
	}
	out = b.must("demo", "storage", "-t", b.name, "--size", "4MiB", "-o", "json")
	if !strings.Contains(out, `"match": true`) {
		t.Errorf("storage demo in open mode:\n%s", out)
	}
	if out, err := b.run("demo", "capabilities", "-t", b.name); err == nil || !strings.Contains(out, "open mode") {
		t.Errorf("capability demo on an open disk: %v\n%s", err, out)
	}
}

// startCapture captures on a node's port until the returned stop is
// called; stop returns the pcap file's path.
func startCapture(t *testing.T, b *bed, node string) func() string {
	t.Helper()
	out := filepath.Join(t.TempDir(), node+".pcap")
	c := b.cmd("capture", "-t", b.name, node, "-w", out)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill() })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "capturing") {
		if time.Now().After(deadline) {
			t.Fatalf("capture did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return func() string {
		if err := c.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if err := c.Wait(); err != nil {
			t.Fatalf("capture after Ctrl-C: %v\n%s", err, stderr.String())
		}
		return out
	}
}

// TestTransferDemo: the third-party transfer puts the image on display0
// pixel for pixel, display0 tells cpu0, and none of the image crosses
// cpu0: its stack counters stay far below the image's size, and a capture
// of cpu0's port holds the TRANSFER order but not one tile.
func TestTransferDemo(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	stop := startCapture(t, b, "cpu0")
	const frames = 5
	out := b.must("demo", "transfer", "-t", b.name, "--frames", "5", "-o", "json")
	pcap := stop()
	var res testbed.TransferDemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if !res.Match || res.DiffPixels != 0 {
		t.Errorf("display0 differs from the image in %d pixels", res.DiffPixels)
	}
	if res.Frames != frames || res.Order.Notified != frames {
		t.Errorf("%d frames sent, %d reported on screen to cpu0; want %d", res.Frames, res.Order.Notified, frames)
	}
	image := uint64(res.ImageBytes)
	if image != 1280*720*4 {
		t.Errorf("image of %d bytes", image)
	}
	by := map[string]testbed.StackBytes{}
	for _, s := range res.Stacks {
		by[s.Node] = s
	}
	c, d, v := by["cpu0"], by["disk0"], by["display0"]
	t.Logf("cpu0 rx %d tx %d, disk0 tx %d, display0 rx %d bytes; %.1f frames/s, %.0f Mbit/s",
		c.RxBytes, c.TxBytes, d.TxBytes, v.RxBytes, res.FPS, res.Mbps)
	if c.RxBytes == 0 || c.RxBytes > image/100 || c.TxBytes > image/100 {
		t.Errorf("cpu0 moved rx %d, tx %d bytes during the transfer: want some, and far below one image (%d)", c.RxBytes, c.TxBytes, image)
	}
	if d.TxBytes < frames*image || v.RxBytes < frames*image {
		t.Errorf("disk0 sent %d, display0 received %d bytes: less than %d frames of %d", d.TxBytes, v.RxBytes, frames, image)
	}
	if res.Disk.Transfers.Completed == 0 || res.Display.Withheld != 0 && res.Disk.Transfers.Resent == 0 {
		t.Errorf("disk transfers %+v, display %+v", res.Disk.Transfers, res.Display)
	}

	// The capture: the order went out, the reports came in, no tile did.
	f, err := os.Open(pcap)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var orders, reports, tiles, udpBytes int
	for {
		data, _, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok {
			continue
		}
		pl := u.Payload
		udpBytes += len(pl)
		if len(pl) < 4 {
			continue
		}
		switch byteorder.BigEndian.Uint16(pl) {
		case 0x4E44: // the storage protocol: op 6 is TRANSFER
			if pl[3] == 6 {
				orders++
			}
		case tileproto.Magic:
			switch tileproto.Type(pl[3]) {
			case tileproto.TypeTile:
				tiles++
			case tileproto.TypeReport:
				reports++
			}
		}
	}
	t.Logf("cpu0's port: %d TRANSFER datagrams, %d REPORTs, %d tiles, %d UDP payload bytes", orders, reports, tiles, udpBytes)
	if orders == 0 || reports < frames {
		t.Errorf("the capture missed the order (%d) or the reports (%d): is it capturing cpu0?", orders, reports)
	}
	// (udpBytes also holds the image's storage writes before the order,
	// as far as the capture decodes them: the stack counters above are
	// the byte count of the order alone.)
	if tiles != 0 {
		t.Errorf("%d tiles crossed cpu0's port", tiles)
	}
}

// TestTransferRefusedOnTestbed: over the real testbed, a TRANSFER whose
// capability is bound to another destination, or a replayed order, is
// refused with access denied and counted by disk0; nothing reaches the
// display.
func TestTransferRefusedOnTestbed(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	dir := filepath.Join(b.state, b.name)
	plan, err := testbed.LoadPlan(dir)
	if err != nil {
		t.Fatal(err)
	}
	dn, _ := plan.Node("disk0")
	vn, _ := plan.Node("display0")
	kf, err := capability.ReadKeyFile(testbed.NodeKey(dir, "disk0"))
	if err != nil {
		t.Fatal(err)
	}
	display := netip.AddrPortFrom(vn.Addr.Addr(), tileproto.Port)
	const w, h = 1280, 720
	mint := func(dst netip.AddrPort) []byte {
		v, err := capability.ReadVersion(testbed.NodeCapVersion(dir, "disk0"))
		if err != nil {
			t.Fatal(err)
		}
		c := capability.Mint(capability.TransferKey(kf.Key, dst), capability.Capability{DiskID: kf.DiskID, Length: w * h * 4,
			Rights: capability.RightRead, Expiry: time.Now().Add(time.Minute).Unix(), Version: v, Nonce: capability.NewNonce()})
		return c[:]
	}
	order := func(c []byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var res transfer.Result
		return ctl.Call(ctx, testbed.NodeSock(dir, "cpu0"), "transfer-order", cpu.TransferOrderArgs{
			Disk: dn.Addr.Addr(), DiskName: "disk0", Display: display, Width: w, Height: h, Capability: c}, &res, nil)
	}
	refused := func() map[string]uint64 {
		var st struct {
			Refused map[string]uint64 `json:"refused"`
		}
		if err := json.Unmarshal([]byte(b.must("disk", "stats", "-t", b.name, "disk0", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Refused
	}
	before := refused()
	if err := order(mint(netip.AddrPortFrom(vn.Addr.Addr(), tileproto.Port+1))); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("order with a capability for another destination: %v", err)
	}
	if n := refused()["bad_mac"]; n != before["bad_mac"]+1 {
		t.Errorf("bad_mac refusals %d -> %d", before["bad_mac"], n)
	}
	var ds struct {
		Datagrams uint64 `json:"datagrams"`
	}
	if err := json.Unmarshal([]byte(b.must("display", "stats", "-t", b.name, "display0", "-o", "json")), &ds); err != nil || ds.Datagrams != 0 {
		t.Errorf("the refused order reached the display: %d datagrams (%v)", ds.Datagrams, err)
	}
	good := mint(display)
	if err := order(good); err != nil {
		t.Fatalf("a valid order: %v", err)
	}
	if err := order(good); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("replayed order: %v", err)
	}
	if n := refused()["replay"]; n != before["replay"]+1 {
		t.Errorf("replay refusals %d -> %d", before["replay"], n)
	}
}

// TestTransferLossyLink: with frames lost on display0's link (the
// fabric's loss injection), the disk re-sends the tiles the display
// reports missing and the frame on screen is still exact.
func TestTransferLossyLink(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	b.must("link", "set", "-t", b.name, "display0", "--loss", "2%", "--seed", "5")
	out := b.must("demo", "transfer", "-t", b.name, "--frames", "10", "-o", "json")
	var res testbed.TransferDemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	t.Logf("%d frames, %d tiles re-sent, %d withheld presents, %d of %d reported to cpu0",
		res.Frames, res.Disk.Transfers.Resent, res.Display.Withheld, res.Order.Notified, res.Frames)
	if !res.Match || res.Frames != 10 {
		t.Errorf("match %v (%d pixels differ), %d frames", res.Match, res.DiffPixels, res.Frames)
	}
	if res.Disk.Transfers.Resent == 0 || res.Display.Withheld == 0 {
		t.Errorf("2%% loss and nothing re-sent or withheld: %+v", res.Disk.Transfers)
	}
}

// TestRootlessTransferAndCapabilities: an ordinary user's testbed gets
// keys too (files of the user, mode 0600), refuses bad capabilities and
// carries the transfer exactly.
func TestRootlessTransferAndCapabilities(t *testing.T) {
	b := newRootlessBed(t)
	b.must("up", "-f", b.topo(b.name, threeNodes))
	out := b.must("demo", "capabilities", "-t", b.name, "-o", "json")
	var caps testbed.CapabilityDemoResult
	if err := json.Unmarshal([]byte(out), &caps); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	for _, c := range caps.Cases {
		if (c.Want == "ok") != (c.Code == "ok") {
			t.Errorf("%s: disk answered %q, want %q", c.Name, c.Code, c.Want)
		}
	}
	out = b.must("demo", "transfer", "-t", b.name, "--frames", "3", "-o", "json")
	var res testbed.TransferDemoResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if !res.Match || res.Frames != 3 {
		t.Errorf("match %v (%d pixels differ), %d frames", res.Match, res.DiffPixels, res.Frames)
	}
	b.must("down", b.name)
	b.assertGone(b.name)
}
