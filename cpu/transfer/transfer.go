package transfer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/internal/wire/tileproto"
)

// Errors of Run.
var (
	ErrNoAnswer = errors.New("transfer: the disk does not answer")
	ErrNotified = errors.New("transfer: the display did not report completion")
)

// retransmit is the first wait before an unanswered request is sent
// again; it doubles up to maxRetransmit. A TRANSFER runs for as long as
// its frames take: the disk drops the retransmissions that arrive
// meanwhile (in_progress) and answers once.
const (
	retransmit    = 200 * time.Millisecond
	maxRetransmit = 2 * time.Second
)

// Order is one third-party transfer.
type Order struct {
	Disk       netip.AddrPort // the disk's storage port
	Capability [diskproto.CapabilitySize]byte
	Offset     uint64 // the source range
	Length     uint32
	diskproto.TransferOrder
}

// Result is what the processor learnt: the disk's account and the
// display's completion reports.
type Result struct {
	Disk diskproto.TransferResult `json:"disk"`
	// Notified counts REPORTs from the display saying a frame of the
	// order is on screen; LastFrame is the newest such frame.
	Notified  uint32        `json:"notified"`
	LastFrame uint32        `json:"last_frame"`
	Elapsed   time.Duration `json:"elapsed"`
}

// Run sends o from pc and waits until the disk has answered and, when
// o.Notify is set (to pc's address), the display has reported the order's
// last frame presented. It does not close pc.
func Run(ctx context.Context, pc net.PacketConn, o Order) (*Result, error) {
	var r [8]byte
	rand.Read(r[:])
	session := binary.BigEndian.Uint64(r[:]) | 1
	tag := binary.BigEndian.Uint32(r[2:])
	disk := net.UDPAddrFromAddrPort(o.Disk)
	buf := make([]byte, diskproto.MaxDatagram+1)
	req := make([]byte, diskproto.RequestHeaderSize+diskproto.TransferOrderSize)
	res := &Result{}
	t0 := time.Now()

	frames := uint32(0)
	if fb := uint64(o.Width) * uint64(o.Height) * uint64(tileproto.Format(o.Format).BytesPerPixel()); fb > 0 {
		frames = uint32(uint64(o.Length)/fb) * uint32(max(1, o.Repeat))
	}
	last := o.Frame + frames - 1

	// exchange sends req[:n] until a reply to it arrives; display REPORTs
	// read meanwhile are counted.
	exchange := func(n int, reqID, epoch uint64) (diskproto.Reply, error) {
		var sentAt time.Time
		wait := time.Duration(0)
		for {
			if time.Since(sentAt) >= wait {
				wait = min(max(2*wait, retransmit), maxRetransmit)
				tag++
				diskproto.RewriteRequest(req[:n], tag, reqID, epoch)
				if _, err := pc.WriteTo(req[:n], disk); err != nil {
					return diskproto.Reply{}, fmt.Errorf("transfer: send: %w", err)
				}
				sentAt = time.Now()
			}
			if err := ctx.Err(); err != nil {
				return diskproto.Reply{}, fmt.Errorf("%w: %w", ErrNoAnswer, err)
			}
			pc.SetReadDeadline(sentAt.Add(wait))
			m, _, err := pc.ReadFrom(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				return diskproto.Reply{}, fmt.Errorf("transfer: read: %w", err)
			}
			if res.count(buf[:m], &o, last) {
				continue
			}
			rep, err := diskproto.ParseReply(buf[:m])
			if err != nil || rep.Session != session || rep.ReqID != reqID {
				continue
			}
			return rep, nil
		}
	}

	info := diskproto.Request{Op: diskproto.OpInfo, Session: session}
	n, err := info.Marshal(req)
	if err != nil {
		return nil, err
	}
	rep, err := exchange(n, 0, 0)
	if err != nil {
		return nil, err
	}
	if rep.Status != diskproto.CodeOK {
		return nil, fmt.Errorf("transfer: INFO: %w", rep.Status)
	}
	epoch := rep.Epoch
	order := o.TransferOrder.Marshal()
	tr := diskproto.Request{Op: diskproto.OpTransfer, Session: session, ReqID: 1, Low: 1, Epoch: epoch,
		Offset: o.Offset, Length: o.Length, Capability: o.Capability, Payload: order[:]}
	if n, err = tr.Marshal(req); err != nil {
		return nil, err
	}
	rep, err = exchange(n, 1, epoch)
	if err != nil {
		return nil, err
	}
	if rep.Status != diskproto.CodeOK {
		return res, fmt.Errorf("transfer refused: %w", rep.Status)
	}
	if len(rep.Payload) > 0 {
		if res.Disk, err = diskproto.ParseTransferResult(rep.Payload); err != nil {
			return res, err
		}
	}
	// The display tells us in the same instant the disk learns it; its
	// REPORT may trail the disk's reply a little. Notify REPORTs are not
	// retransmitted: on a lossy path some may be missing, and the disk's
	// OK (the display confirmed every frame to it) is the authority. None
	// at all is an error.
	if o.Notify.IsValid() {
		deadline := time.Now().Add(time.Second)
		for !res.done(last, frames) {
			pc.SetReadDeadline(deadline)
			m, _, err := pc.ReadFrom(buf)
			if err != nil {
				if res.Notified == 0 {
					return res, fmt.Errorf("%w: none of %d frames reported (%v)", ErrNotified, frames, err)
				}
				break
			}
			res.count(buf[:m], &o, last)
		}
	}
	res.Elapsed = time.Since(t0)
	return res, nil
}

// count takes a display REPORT about the order's stream, and reports
// whether b was one (of any stream).
func (r *Result) count(b []byte, o *Order, last uint32) bool {
	h, p, err := tileproto.Parse(b)
	if err != nil {
		return false
	}
	if h.Type != tileproto.TypeReport || (o.Stream != 0 && h.Stream != o.Stream) {
		return true
	}
	rep, err := tileproto.ParseReport(&h, p)
	if err != nil || rep.Flags&tileproto.ReportPresented == 0 {
		return true
	}
	if r.Notified == 0 || int32(h.Frame-r.LastFrame) > 0 {
		r.LastFrame = h.Frame
	}
	r.Notified++
	return true
}

func (r *Result) done(last, frames uint32) bool {
	return frames == 0 || (r.Notified > 0 && r.LastFrame == last)
}
