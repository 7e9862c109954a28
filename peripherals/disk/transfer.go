package disk

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/internal/wire/tileproto"
)

// Third-party transfer (NASD, ISI Netstation): a TRANSFER order makes the
// disk read a byte range and stream it as display-protocol tiles straight
// to a display; the processor that ordered it sees only the order, the
// reply, and the display's completion REPORTs. The protocol is in
// docs/protocols/disk.md ("Third-party transfer") and display.md.
//
// Flow control and loss: tiles are numbered; after every TransferWindow
// tiles the disk sends a hold checkpoint (PRESENT with PresentHold|Ack)
// and keeps at most TransferInFlight windows unanswered, so the display's
// socket queue never holds more than that many windows of tiles; a loss
// halves that number and a clean frame grows it back (inFlight). The frame ends with
// PRESENT(PresentComplete|Ack): the display presents only a frame whose
// every tile arrived, else it reports the missing ones, which the disk
// sends again. A lost tile never shows as a wrong rectangle. Tiles leave
// paced, in chunks of paceChunk, at 1.5 x the windows in flight per
// minimum checkpoint RTT (tileSender.pace), as READ replies do.

// Transfer tuning.
const (
	// DefaultTransferWindow is the tiles sent between checkpoints, at
	// most TransferWindowBytes of them.
	DefaultTransferWindow = 512
	// TransferWindowBytes caps a window's datagram bytes, so that large
	// (fragmented) tiles get proportionally smaller windows.
	TransferWindowBytes = 1 << 20
	// MaxTransferFrame bounds one frame's bytes (3840 x 2160 RGBA fits):
	// an order holds a frame and its tiles in memory. Larger: CodeTooBig.
	MaxTransferFrame = 32 << 20
	// MaxTransfers bounds the orders running at once; more are dropped
	// (queue_full) and the client's retransmission tries again.
	MaxTransfers = 4
	// transferRTO is the first wait for a REPORT; it doubles per retry.
	transferRTO     = 20 * time.Millisecond
	transferMaxRTO  = 500 * time.Millisecond
	transferRetries = 10
	// transferRounds bounds the retransmission rounds of one frame.
	transferRounds = 16
	// TransferInFlight is the windows that may be unanswered: at most
	// 2,560 tiles of 1,472 B (3.6 MiB), under the user-level stack's
	// socket ring of 4,096 datagrams and 4 MiB. (3 windows measured 5.8-8.6
	// Gbit/s of pixels, 5 windows 6.5-9.3, on the default testbed.)
	TransferInFlight = 5
)

// ErrTransfer: the display did not confirm a frame.
var ErrTransfer = errors.New("disk: transfer: the display did not confirm the frame")

// TransferStats count third-party transfer orders.
type TransferStats struct {
	Orders    uint64 `json:"orders"`    // TRANSFER requests accepted and run
	Completed uint64 `json:"completed"` // orders whose every frame the display presented
	Failed    uint64 `json:"failed"`    // orders that ended with an error reply
	Frames    uint64 `json:"frames"`    // frames presented by the destination
	Tiles     uint64 `json:"tiles"`     // tile datagrams sent, retransmissions included
	Resent    uint64 `json:"resent"`    // of Tiles, retransmissions on the display's report
	Bytes     uint64 `json:"bytes"`     // source bytes read from the backing file
	Timeouts  uint64 `json:"timeouts"`  // REPORTs waited for in vain (checkpoint re-sent)
	// WindowCuts counts the times loss (tiles reported missing, a REPORT
	// waited for in vain) cut the windows a transfer keeps unanswered.
	WindowCuts uint64 `json:"window_cuts"`
	// PaceWaits counts the chunks of tiles that waited for their pacing
	// slot (tileSender.pace).
	PaceWaits uint64 `json:"pace_waits"`
}

type transferCounters struct {
	orders, completed, failed, frames, tiles, resent, bytes, timeouts, cuts, paceWaits atomic.Uint64
	running                                                                            atomic.Int32
}

func (s *Server) transferStats() TransferStats {
	c := &s.xfer
	return TransferStats{Orders: c.orders.Load(), Completed: c.completed.Load(), Failed: c.failed.Load(),
		Frames: c.frames.Load(), Tiles: c.tiles.Load(), Resent: c.resent.Load(), Bytes: c.bytes.Load(),
		Timeouts: c.timeouts.Load(), WindowCuts: c.cuts.Load(), PaceWaits: c.paceWaits.Load()}
}

// transferGeometry checks an order against the request and the tile
// protocol and returns bytes per frame and tiles per frame.
func (s *Server) transferGeometry(req *diskproto.Request, o *diskproto.TransferOrder) (frameBytes, tiles int, code diskproto.Code) {
	bpp := tileproto.Format(o.Format).BytesPerPixel()
	if bpp == 0 {
		return 0, 0, diskproto.CodeBadRequest
	}
	tb := int(o.TileW) * int(o.TileH) * bpp
	frameBytes = int(o.Width) * int(o.Height) * bpp
	tiles = ((int(o.Width) + int(o.TileW) - 1) / int(o.TileW)) * ((int(o.Height) + int(o.TileH) - 1) / int(o.TileH))
	switch {
	case frameBytes > MaxTransferFrame:
		return 0, 0, diskproto.CodeTooBig
	case tb > tileproto.MaxTileBytes || tileproto.HeaderSize+tb > tileproto.MaxDatagram || tiles > 1<<16-1:
		return 0, 0, diskproto.CodeInvalid
	case req.Length == 0 || int(req.Length)%frameBytes != 0:
		return 0, 0, diskproto.CodeInvalid
	case req.Offset > s.size || uint64(req.Length) > s.size-req.Offset:
		return 0, 0, diskproto.CodeRange
	}
	return frameBytes, tiles, diskproto.CodeOK
}

// transfer takes a TRANSFER order from the receive loop: it checks it,
// claims its duplicate-cache slot and runs it in a goroutine of its own.
// Called after the Authorizer accepted the request.
func (s *Server) transfer(pc dgram.Conn, addr netip.AddrPort, req *diskproto.Request) {
	if s.cfg.Listen == nil {
		s.reply(pc, addr, req, diskproto.CodeBadOp, nil)
		return
	}
	o, err := diskproto.ParseTransferOrder(req.Payload)
	if err != nil {
		s.reply(pc, addr, req, diskproto.CodeBadRequest, nil)
		return
	}
	frameBytes, tiles, code := s.transferGeometry(req, &o)
	if code != diskproto.CodeOK {
		s.reply(pc, addr, req, code, nil)
		return
	}
	s.mu.Lock()
	sess := s.sessions[sessionKey{req.Session, addr}]
	if sess == nil || req.Epoch != s.epoch {
		s.mu.Unlock()
		s.reply(pc, addr, req, diskproto.CodeNoSession, nil)
		return
	}
	s.clock++
	sess.lastUse = s.clock
	sess.low = max(sess.low, req.Low)
	w := uint64(len(sess.slots))
	switch {
	case req.ReqID < sess.low:
		s.mu.Unlock()
		s.stats.drop(dropStale)
		return
	case req.ReqID-sess.low >= w:
		s.mu.Unlock()
		s.reply(pc, addr, req, diskproto.CodeWindow, nil)
		return
	}
	sl := &sess.slots[req.ReqID%w]
	if sl.valid && sl.reqID == req.ReqID {
		status, done := sl.status, sl.done
		s.mu.Unlock()
		if !done {
			s.stats.drop(dropInProgress) // the order is running; its reply will come
			return
		}
		s.stats.duplicates.Add(1)
		s.reply(pc, addr, req, status, nil)
		return
	}
	if s.xfer.running.Add(1) > MaxTransfers {
		s.xfer.running.Add(-1)
		s.mu.Unlock()
		s.stats.drop(dropQueueFull)
		return
	}
	*sl = slot{reqID: req.ReqID, valid: true}
	s.mu.Unlock()
	r := *req
	r.Payload = nil // aliases the receive buffer
	go s.runTransfer(pc, addr, r, o, sess, frameBytes, tiles)
}

func (s *Server) runTransfer(pc dgram.Conn, addr netip.AddrPort, req diskproto.Request, o diskproto.TransferOrder,
	sess *session, frameBytes, tiles int) {
	defer s.xfer.running.Add(-1)
	s.xfer.orders.Add(1)
	t0 := time.Now()
	res, err := s.stream(&req, &o, frameBytes, tiles)
	res.Elapsed = time.Since(t0)
	status := diskproto.CodeOK
	switch {
	case err == nil:
		s.xfer.completed.Add(1)
	case errors.Is(err, ErrTransfer):
		status = diskproto.CodeTransfer
	default:
		status = diskproto.CodeIO
	}
	if err != nil {
		s.xfer.failed.Add(1)
		s.log.Warn("disk: transfer failed", "dest", o.Dest, "err", err)
	}
	// A transfer order is one-shot: its capability is used up (its own
	// retransmissions still reach the duplicate cache).
	if ca, ok := s.cfg.Authorizer.(*CapabilityAuthorizer); ok {
		if c, _, err := capability.Parse(req.Capability); err == nil {
			ca.Consume(c)
		}
	}
	s.mu.Lock()
	sl := &sess.slots[req.ReqID%uint64(len(sess.slots))]
	if sl.valid && sl.reqID == req.ReqID {
		sl.done, sl.cached, sl.status = true, true, status
	}
	s.mu.Unlock()
	var payload []byte
	if status == diskproto.CodeOK {
		payload = res.Marshal()
	}
	s.reply(pc, addr, &req, status, payload)
}

// tileSender streams one order's frames over its own socket.
type tileSender struct {
	s      *Server
	conn   dgram.Conn // batches on either stack
	msgs   []dgram.Message
	one    [1]dgram.Message // a PRESENT out, a REPORT in
	dst    netip.AddrPort
	notify netip.AddrPort
	stream uint32
	tiles  [][]byte // the current frame's tile datagrams, by index-1
	ctl    []byte   // a PRESENT being built
	rbuf   []byte
	tok    uint16
	res    *diskproto.TransferResult
	window int
	flight inFlight // windows that may be unanswered: the congestion window
	// lossSeen: the current frame saw a loss (its window was cut).
	lossSeen bool
	// Pacing, the storage protocol's rule at the tiles' layer: chunks of
	// paceChunk tiles at 1.5 x the windows in flight per minimum
	// checkpoint RTT, with paceCredit. The order runs in a goroutine of
	// its own, so waiting here holds up nobody else.
	sentAt   [64]time.Time // when the PRESENT of token t (index t % 64) was last sent
	minRTT   time.Duration // the least PRESENT -> REPORT time; 0: unpaced
	winBytes int           // the datagram bytes of one window of tiles
	paceNext time.Time
}

// cut records a loss: the window shrinks (counted when it did).
func (ts *tileSender) cut() {
	ts.lossSeen = true
	if ts.flight.lost() {
		ts.s.xfer.cuts.Add(1)
	}
}

// inFlight is a transfer's congestion window, counted in tile windows
// (the storage protocol's rule at the tiles' layer): loss halves it,
// never below one window; every frame presented without a loss grows it
// back by one, up to TransferInFlight (what the display's socket queue
// holds).
type inFlight struct{ n int }

func (w *inFlight) windows() int { return max(1, min(w.n, TransferInFlight)) }

// lost cuts the window on a loss; it reports whether it shrank.
func (w *inFlight) lost() bool {
	n := w.windows()
	w.n = max(1, n/2)
	return w.n < n
}

// clean grows the window after a frame presented without loss.
func (w *inFlight) clean() { w.n = min(w.windows()+1, TransferInFlight) }

func (s *Server) stream(req *diskproto.Request, o *diskproto.TransferOrder, frameBytes, tiles int) (diskproto.TransferResult, error) {
	var res diskproto.TransferResult
	pc, err := s.cfg.Listen()
	if err != nil {
		return res, fmt.Errorf("disk: transfer socket: %w", err)
	}
	conn := dgram.Of(pc)
	defer conn.Close()
	ts := &tileSender{s: s, conn: conn, dst: o.Dest, notify: o.Notify, stream: o.Stream, res: &res,
		rbuf: make([]byte, tileproto.MaxDatagram), window: s.cfg.TransferWindow, flight: inFlight{TransferInFlight}}
	if ts.window <= 0 {
		ts.window = DefaultTransferWindow
	}
	format := tileproto.Format(o.Format)
	bpp := format.BytesPerPixel()
	tw, th := int(o.TileW), int(o.TileH)
	ts.window = max(1, min(ts.window, TransferWindowBytes/(tileproto.HeaderSize+tw*th*bpp)))
	ts.winBytes = ts.window * (tileproto.HeaderSize + tw*th*bpp)
	if ts.stream == 0 {
		var b [4]byte
		rand.Read(b[:])
		ts.stream = binary.BigEndian.Uint32(b[:]) | 1
	}
	ts.tiles = make([][]byte, tiles)
	for i := range ts.tiles {
		ts.tiles[i] = make([]byte, 0, tileproto.HeaderSize+tw*th*bpp)
	}
	pix := make([]byte, frameBytes)
	nFrames := int(req.Length) / frameBytes
	repeat := max(1, int(o.Repeat))
	seq := o.Frame
	for r := 0; r < repeat; r++ {
		for f := 0; f < nFrames; f++ {
			if s.closing.Load() {
				return res, ErrClosed
			}
			off := int64(req.Offset) + int64(f*frameBytes)
			if _, err := s.file.ReadAt(pix, off); err != nil && !errors.Is(err, io.EOF) {
				return res, fmt.Errorf("disk: transfer: read: %w", err)
			}
			s.xfer.bytes.Add(uint64(frameBytes))
			// Cut the frame into numbered tiles, row-major.
			i := 0
			for y := 0; y < int(o.Height); y += th {
				h := min(th, int(o.Height)-y)
				for x := 0; x < int(o.Width); x += tw {
					w := min(tw, int(o.Width)-x)
					hd := tileproto.Header{Type: tileproto.TypeTile, Format: format, X: uint16(x), Y: uint16(y),
						W: uint16(w), H: uint16(h), Index: uint16(i + 1), Stream: ts.stream, Frame: seq, Tiles: uint32(tiles)}
					b := tileproto.Append(ts.tiles[i][:0], &hd, nil)
					for row := 0; row < h; row++ {
						po := ((y+row)*int(o.Width) + x) * bpp
						b = append(b, pix[po:po+w*bpp]...)
					}
					ts.tiles[i] = tileproto.Seal(b)
					i++
				}
			}
			if err := ts.frame(seq); err != nil {
				return res, err
			}
			res.Frames++
			s.xfer.frames.Add(1)
			seq++
		}
	}
	return res, nil
}

// frame sends the prepared tiles of frame seq and sees it presented.
func (ts *tileSender) frame(seq uint32) error {
	total := len(ts.tiles)
	acked := ts.tok
	for sent := 0; sent < total; {
		end := min(sent+ts.window, total)
		if err := ts.send(sent, end, nil); err != nil {
			return err
		}
		sent = end
		ts.tok++
		if err := ts.present(seq, tileproto.PresentOptions{Flags: tileproto.PresentHold | tileproto.PresentAck}); err != nil {
			return err
		}
		// At most flight windows unanswered.
		if inflight := uint16(ts.flight.windows()); ts.tok-acked >= inflight {
			want := ts.tok - (inflight - 1)
			if _, err := ts.await(seq, want, tileproto.PresentOptions{Flags: tileproto.PresentHold | tileproto.PresentAck}); err != nil {
				return err
			}
			acked = want
		}
	}
	final := tileproto.PresentOptions{Flags: tileproto.PresentComplete | tileproto.PresentAck, Notify: ts.notify}
	for round := 0; round < transferRounds; round++ {
		ts.tok++
		if err := ts.present(seq, final); err != nil {
			return err
		}
		rep, err := ts.await(seq, ts.tok, final)
		if err != nil {
			return err
		}
		if rep.Flags&tileproto.ReportPresented != 0 {
			if round == 0 && !ts.lossSeen {
				ts.flight.clean()
			}
			ts.lossSeen = false
			return nil
		}
		ts.cut()
		var missing []int
		for i := 1; i <= total; i++ {
			if rep.MissingTile(i) {
				missing = append(missing, i-1)
			}
		}
		if len(missing) == 0 {
			// Withheld without a list: cannot happen with a display of
			// this protocol; resend everything rather than spin.
			for i := range total {
				missing = append(missing, i)
			}
		}
		for k := 0; k < len(missing); k += ts.window {
			part := missing[k:min(k+ts.window, len(missing))]
			if err := ts.send(0, 0, part); err != nil {
				return err
			}
			ts.tok++
			hold := tileproto.PresentOptions{Flags: tileproto.PresentHold | tileproto.PresentAck}
			if err := ts.present(seq, hold); err != nil {
				return err
			}
			if _, err := ts.await(seq, ts.tok, hold); err != nil {
				return err
			}
		}
		ts.res.Resent += uint32(len(missing))
		ts.s.xfer.resent.Add(uint64(len(missing)))
	}
	return fmt.Errorf("%w: frame %d still incomplete after %d rounds", ErrTransfer, seq, transferRounds)
}

// send transmits tiles [from, to), or the listed ones.
func (ts *tileSender) send(from, to int, list []int) error {
	n := to - from
	if list != nil {
		n = len(list)
	}
	ts.res.Tiles += uint32(n)
	ts.s.xfer.tiles.Add(uint64(n))
	at := func(k int) []byte {
		if list != nil {
			return ts.tiles[list[k]]
		}
		return ts.tiles[from+k]
	}
	ts.msgs = ts.msgs[:0]
	for k := 0; k < n; k++ {
		ts.msgs = append(ts.msgs, dgram.Message{Buf: at(k), Addr: ts.dst})
	}
	for msgs := ts.msgs; len(msgs) > 0; {
		k := min(len(msgs), paceChunk)
		ts.pace(len(msgs) == len(ts.msgs))
		if _, err := dgram.WriteAll(ts.conn, msgs[:k]); err != nil {
			return fmt.Errorf("disk: transfer: send: %w", err)
		}
		ts.paid(bytesOf(msgs[:k]))
		msgs = msgs[k:]
	}
	return nil
}

// pace waits for the next chunk's slot: send, then pay (paid), as the
// disk paces READ replies (pace.go). Only the first chunk of a send may
// find the schedule forgotten (an idle sender gets the credit); later
// ones catch up on a sleep that overslept, so the rate is the rate asked
// for, not the credit per timer wake-up.
func (ts *tileSender) pace(first bool) {
	if ts.minRTT <= 0 {
		return
	}
	now := time.Now()
	if early := now.Add(-paceCredit); first && ts.paceNext.Before(early) {
		ts.paceNext = early
	}
	if wait := ts.paceNext.Sub(now); wait > 0 {
		ts.s.xfer.paceWaits.Add(1)
		time.Sleep(wait)
	}
}

// paid moves the pacing slot on by n bytes at the current rate.
func (ts *tileSender) paid(n uint64) {
	if ts.minRTT <= 0 {
		return
	}
	rate := uint64(float64(ts.flight.windows()*ts.winBytes) * 1.5 / ts.minRTT.Seconds())
	ts.paceNext = ts.paceNext.Add(airtime(n, max(rate, MinPaceRate)))
}

// present sends a PRESENT for frame seq carrying the current token.
func (ts *tileSender) present(seq uint32, o tileproto.PresentOptions) error {
	h := tileproto.Header{Stream: ts.stream, Frame: seq, Tiles: uint32(len(ts.tiles)), Index: ts.tok}
	ts.ctl = tileproto.AppendPresent(ts.ctl[:0], &h, o)
	ts.one[0] = dgram.Message{Buf: ts.ctl, Addr: ts.dst}
	ts.sentAt[ts.tok%uint16(len(ts.sentAt))] = time.Now()
	if _, err := dgram.WriteAll(ts.conn, ts.one[:]); err != nil {
		return fmt.Errorf("disk: transfer: send: %w", err)
	}
	return nil
}

// await reads REPORTs until one about frame seq answers token tok or a
// later one; on a timeout it re-sends the latest PRESENT (options o) and
// waits longer.
func (ts *tileSender) await(seq uint32, tok uint16, o tileproto.PresentOptions) (tileproto.Report, error) {
	rto := transferRTO
	for try := 0; ; {
		ts.conn.SetReadDeadline(time.Now().Add(rto))
		ts.one[0] = dgram.Message{Buf: ts.rbuf}
		_, err := ts.conn.ReadBatch(ts.one[:])
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return tileproto.Report{}, fmt.Errorf("disk: transfer: read: %w", err)
			}
			if try++; try > transferRetries {
				return tileproto.Report{}, fmt.Errorf("%w: no REPORT for frame %d from %v", ErrTransfer, seq, ts.dst)
			}
			ts.s.xfer.timeouts.Add(1)
			ts.cut()
			rto = min(2*rto, transferMaxRTO)
			if err := ts.present(seq, o); err != nil {
				return tileproto.Report{}, err
			}
			continue
		}
		if ts.one[0].Addr.Addr() != ts.dst.Addr() {
			continue // only the display reports
		}
		h, p, err := tileproto.Parse(ts.rbuf[:ts.one[0].N])
		if err != nil || h.Type != tileproto.TypeReport || h.Stream != ts.stream || h.Frame != seq || int16(h.Index-tok) < 0 {
			continue
		}
		rep, err := tileproto.ParseReport(&h, p)
		if err != nil {
			continue
		}
		if ts.tok-h.Index < uint16(len(ts.sentAt)) {
			// A re-sent PRESENT moved its time on: a REPORT answering the
			// first gives a short sample, which only paces less.
			if r := time.Since(ts.sentAt[h.Index%uint16(len(ts.sentAt))]); r > 0 && (ts.minRTT == 0 || r < ts.minRTT) {
				ts.minRTT = r
			}
		}
		ts.res.Windows++
		return rep, nil
	}
}
