package cpu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/cpu/transfer"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/internal/wire/tileproto"
	"github.com/netstation/netstation/stack"
)

// TransferImage names the test image of the transfer demo: a pattern of
// cpu/render drawn at one of its frame numbers, Width x Height RGBA.
type TransferImage struct {
	Pattern string `json:"pattern"`
	Frame   int    `json:"frame"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
}

// Render draws the image (so the demo can check the display against it
// without the image crossing the network).
func (ti TransferImage) Render() (*image.RGBA, error) {
	pat, err := render.PatternByName(ti.Pattern)
	if err != nil {
		return nil, err
	}
	if ti.Width <= 0 || ti.Height <= 0 || ti.Width > 65535 || ti.Height > 65535 {
		return nil, fmt.Errorf("transfer demo: image size %dx%d", ti.Width, ti.Height)
	}
	im := image.NewRGBA(image.Rect(0, 0, ti.Width, ti.Height))
	pat.Draw(im, ti.Frame)
	return im, nil
}

// TransferStoreArgs ask the processor to render the test image and store
// it on the disk at Offset.
type TransferStoreArgs struct {
	Disk     netip.Addr    `json:"disk"`
	DiskName string        `json:"disk_name"`
	Offset   uint64        `json:"offset"`
	Image    TransferImage `json:"image"`
}

// TransferStoreResult says what was stored.
type TransferStoreResult struct {
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// StoreTransferImage renders a.Image and writes it to the disk (a
// capability with the write and flush rights on exactly that range),
// then flushes.
func StoreTransferImage(ctx context.Context, st *stack.Stack, mgr *manager.Manager, a TransferStoreArgs) (*TransferStoreResult, error) {
	im, err := a.Image.Render()
	if err != nil {
		return nil, err
	}
	grant, err := mgr.Mint(a.DiskName, a.Disk, manager.Grant{Offset: a.Offset, Length: uint64(len(im.Pix)),
		Rights: capability.RightWrite | capability.RightFlush, Lifetime: 10 * time.Minute})
	if err != nil {
		return nil, err
	}
	pc, err := st.ListenUDP(netip.AddrPortFrom(st.Addr(), 0))
	if err != nil {
		return nil, err
	}
	// One frame per request: storing the image is not what the demo
	// measures, and unfragmented requests survive a lossy link.
	c, err := storage.Dial(pc, net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Disk, diskproto.Port)),
		storage.Options{Capability: grant, MaxRequest: 1344})
	if err != nil {
		return nil, fmt.Errorf("transfer demo: disk %v: %w", a.Disk, err)
	}
	defer c.Close()
	if _, err := c.WriteAt(ctx, im.Pix, int64(a.Offset), false); err != nil {
		return nil, fmt.Errorf("transfer demo: store the image: %w", err)
	}
	if err := c.Flush(ctx); err != nil {
		return nil, fmt.Errorf("transfer demo: flush: %w", err)
	}
	sum := sha256.Sum256(im.Pix)
	return &TransferStoreResult{Bytes: len(im.Pix), SHA256: hex.EncodeToString(sum[:])}, nil
}

// TransferOrderArgs ask the processor to order one third-party transfer
// of a stored frame from the disk to the display.
type TransferOrderArgs struct {
	Disk     netip.Addr     `json:"disk"`
	DiskName string         `json:"disk_name"`
	Display  netip.AddrPort `json:"display"` // port 0: tileproto.Port
	// DisplayName, with Display unset, names the display for the
	// processor to find by membership (gossip); DiskName likewise.
	DisplayName string `json:"display_name,omitempty"`
	Offset      uint64 `json:"offset"`
	Width       int    `json:"width"`
	Height      int    `json:"height"`
	TileW       int    `json:"tile_w"`
	TileH       int    `json:"tile_h"`
	Frames      int    `json:"frames"` // times the frame is sent
	// Capability, when set, is sent instead of one minted here: a test
	// hook for refused orders.
	Capability []byte `json:"capability,omitempty"`
}

// OrderTransfer mints a transfer capability (the read right on the
// frame's range, bound to the display) and sends the disk one TRANSFER
// order; it returns once the disk has answered and the display has
// reported the last frame on screen.
func OrderTransfer(ctx context.Context, st *stack.Stack, mgr *manager.Manager, a TransferOrderArgs) (*transfer.Result, error) {
	if a.Display.Port() == 0 {
		a.Display = netip.AddrPortFrom(a.Display.Addr(), tileproto.Port)
	}
	if a.TileW == 0 || a.TileH == 0 {
		a.TileW, a.TileH = render.DefaultTileW, render.DefaultTileH
	}
	a.Frames = max(a.Frames, 1)
	if a.Width <= 0 || a.Height <= 0 || a.Width > 65535 || a.Height > 65535 || a.TileW > 65535 || a.TileH > 65535 || a.Frames > 65535 {
		return nil, fmt.Errorf("transfer: bad geometry %dx%d, tile %dx%d, %d frames", a.Width, a.Height, a.TileW, a.TileH, a.Frames)
	}
	length := uint64(a.Width) * uint64(a.Height) * 4
	var grant [capability.Size]byte
	if a.Capability != nil {
		if len(a.Capability) != capability.Size {
			return nil, fmt.Errorf("transfer: capability of %d bytes", len(a.Capability))
		}
		copy(grant[:], a.Capability)
	} else {
		var err error
		grant, err = mgr.MintTransfer(a.DiskName, a.Disk, manager.Grant{Offset: a.Offset, Length: length,
			Rights: capability.RightRead, Lifetime: 10 * time.Minute}, a.Display)
		if err != nil {
			return nil, err
		}
	}
	pc, err := st.ListenUDP(netip.AddrPortFrom(st.Addr(), 0))
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	// Resolve both peers first: the stack holds few datagrams while ARP
	// is pending.
	for _, dst := range []netip.Addr{a.Disk, a.Display.Addr()} {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, _ = st.Ping(pctx, dst, 8)
		cancel()
	}
	o := transfer.Order{Disk: netip.AddrPortFrom(a.Disk, diskproto.Port), Capability: grant,
		Offset: a.Offset, Length: uint32(length),
		TransferOrder: diskproto.TransferOrder{Dest: a.Display, Notify: pc.LocalAddr().(*net.UDPAddr).AddrPort(),
			Width: uint16(a.Width), Height: uint16(a.Height), Format: uint8(tileproto.FormatRGBA),
			TileW: uint16(a.TileW), TileH: uint16(a.TileH), Repeat: uint16(a.Frames),
			Stream: rand.Uint32() | 1, Frame: rand.Uint32()}}
	return transfer.Run(ctx, pc, o)
}
