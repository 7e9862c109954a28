package display_test

import (
	"net/netip"
	"testing"

	"github.com/netstation/netstation/cpu/render"
	"github.com/netstation/netstation/internal/wire/tileproto"
)

// numbered cuts im into numbered 20x18 tiles of frame seq, stream 9.
func numbered(seq uint32) [][]byte {
	im := frame(render.Bars{}, int(seq))
	e := &render.Encoder{TileW: 20, TileH: 18, Encoding: "raw", Stream: 9}
	dg := e.Frame(im, seq)
	dg = dg[:len(dg)-1] // its PRESENT
	out := make([][]byte, len(dg))
	for i, b := range dg {
		hd, p, _ := tileproto.Parse(b)
		hd.Index = uint16(i + 1)
		out[i] = tileproto.Append(nil, &hd, p)
	}
	return out
}

// sink records the REPORTs a display sends.
type sink struct {
	got map[netip.AddrPort][]tileproto.Report
}

func (s *sink) send(dst netip.AddrPort, b []byte) {
	h, p, err := tileproto.Parse(b)
	if err != nil || h.Type != tileproto.TypeReport {
		panic("display sent a bad REPORT")
	}
	r, _ := tileproto.ParseReport(&h, p)
	r.Missing = append([]byte(nil), r.Missing...)
	s.got[dst] = append(s.got[dst], r)
}

var (
	sender = netip.MustParseAddrPort("10.0.0.2:40000")
	notify = netip.MustParseAddrPort("10.0.0.1:50000")
)

func present(flags tileproto.PresentFlags, seq, tiles uint32, tok uint16) []byte {
	return tileproto.AppendPresent(nil, &tileproto.Header{Stream: 9, Frame: seq, Tiles: tiles, Index: tok},
		tileproto.PresentOptions{Flags: flags, Notify: notify})
}

// TestCompleteFrameWaitsForLostTiles: a PRESENT-complete with a tile
// missing presents nothing and lists the tile; once it arrives the frame
// is presented exactly, the sender and the notify address are told, and a
// repeated PRESENT is answered again rather than dropped.
func TestCompleteFrameWaitsForLostTiles(t *testing.T) {
	d := newDisplay(t)
	s := &sink{got: map[netip.AddrPort][]tileproto.Report{}}
	tiles := numbered(1)
	n := uint32(len(tiles))
	lost := map[int]bool{3: true, 17: true}
	for i, b := range tiles {
		if !lost[i] {
			if err := d.ApplyFrom(b, sender, s.send); err != nil {
				t.Fatal(err)
			}
		}
	}
	final := tileproto.PresentAck | tileproto.PresentComplete
	if err := d.ApplyFrom(present(final, 1, n, 1), sender, s.send); err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.Frames != 0 || st.Withheld != 1 {
		t.Fatalf("an incomplete frame was presented: %+v", st)
	}
	r := s.got[sender]
	if len(r) != 1 || r[0].Flags != 0 || r[0].Received != n-2 || !r[0].MissingTile(4) || !r[0].MissingTile(18) || r[0].MissingTile(5) {
		t.Fatalf("report %+v", r)
	}
	if len(s.got[notify]) != 0 {
		t.Fatal("notify told of an unpresented frame")
	}
	for i := range lost {
		d.ApplyFrom(tiles[i], sender, s.send)
	}
	d.ApplyFrom(tiles[5], sender, s.send) // a duplicate changes nothing
	d.ApplyFrom(present(final, 1, n, 2), sender, s.send)
	im, frames := d.Snapshot()
	if frames != 1 {
		t.Fatalf("%d frames presented", frames)
	}
	mustEqual(t, im, frame(render.Bars{}, 1))
	if r := s.got[sender]; len(r) != 2 || r[1].Flags != tileproto.ReportPresented || r[1].Received != n {
		t.Fatalf("reports %+v", r)
	}
	if r := s.got[notify]; len(r) != 1 || r[0].Flags != tileproto.ReportPresented || len(r[0].Missing) != 0 {
		t.Fatalf("notify reports %+v", r)
	}
	// The sender lost our REPORT and asks again.
	if err := d.ApplyFrom(present(final, 1, n, 2), sender, s.send); err != nil {
		t.Fatalf("repeated PRESENT: %v", err)
	}
	if r := s.got[sender]; len(r) != 3 || r[2].Flags != tileproto.ReportPresented {
		t.Fatalf("repeated PRESENT unanswered: %+v", r)
	}
	if st := d.Stats(); st.Frames != 1 || st.TilesLost != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestIncompleteNumberedFrameNeverShown: a numbered frame left incomplete
// when the next one begins is abandoned, not presented by rule; a hold
// checkpoint reports without presenting.
func TestIncompleteNumberedFrameNeverShown(t *testing.T) {
	d := newDisplay(t)
	s := &sink{got: map[netip.AddrPort][]tileproto.Report{}}
	tiles := numbered(1)
	for _, b := range tiles[:len(tiles)/2] {
		d.ApplyFrom(b, sender, s.send)
	}
	d.ApplyFrom(present(tileproto.PresentAck|tileproto.PresentHold, 1, uint32(len(tiles)), 1), sender, s.send)
	if r := s.got[sender]; len(r) != 1 || r[0].Received != uint32(len(tiles)/2) || len(r[0].Missing) != 0 {
		t.Fatalf("hold report %+v", r)
	}
	next := numbered(2)
	for _, b := range next {
		d.ApplyFrom(b, sender, s.send)
	}
	d.ApplyFrom(present(tileproto.PresentAck|tileproto.PresentComplete, 2, uint32(len(next)), 2), sender, s.send)
	im, frames := d.Snapshot()
	if st := d.Stats(); frames != 1 || st.Abandoned != 1 || st.Implicit != 0 {
		t.Fatalf("frames %d, stats %+v", frames, st)
	}
	mustEqual(t, im, frame(render.Bars{}, 2))
}

// TestFloodDuringNumberedFrame: bogus datagrams interleaved with a
// numbered frame — corrupt, outside the screen, numbered past the frame,
// REPORTs, PRESENTs with unknown flags — are dropped and counted, and the
// frame presented is exact.
func TestFloodDuringNumberedFrame(t *testing.T) {
	d := newDisplay(t)
	s := &sink{got: map[netip.AddrPort][]tileproto.Report{}}
	tiles := numbered(1)
	n := uint32(len(tiles))
	junk := [][]byte{
		append(append([]byte(nil), tiles[0][:len(tiles[0])-1]...), tiles[0][len(tiles[0])-1]^0xff), // bad CRC
		tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypeTile, X: w - 1, W: 20, H: 18, Stream: 9, Frame: 1, Tiles: n, Index: 1}, make([]byte, 20*18*4)),
		tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypeTile, W: 20, H: 18, Stream: 9, Frame: 1, Tiles: n, Index: uint16(n + 1)}, make([]byte, 20*18*4)),
		tileproto.AppendReport(nil, &tileproto.Header{Stream: 9, Frame: 1, Tiles: n}, &tileproto.Report{Flags: tileproto.ReportPresented}),
		tileproto.Append(nil, &tileproto.Header{Type: tileproto.TypePresent, Stream: 9, Frame: 1, Tiles: n}, []byte{0xff, 0xff, 0, 0, 0, 0, 0, 0}),
	}
	for i, b := range tiles {
		d.ApplyFrom(b, sender, s.send)
		for _, j := range junk {
			if err := d.ApplyFrom(j, sender, s.send); err == nil {
				t.Fatalf("junk after tile %d accepted", i)
			}
		}
	}
	d.ApplyFrom(present(tileproto.PresentAck|tileproto.PresentComplete, 1, n, 1), sender, s.send)
	im, frames := d.Snapshot()
	if frames != 1 {
		t.Fatalf("%d frames presented", frames)
	}
	mustEqual(t, im, frame(render.Bars{}, 1))
	st := d.Stats()
	var drops uint64
	for _, v := range st.Drops {
		drops += v
	}
	if drops != uint64(len(junk)*len(tiles)) {
		t.Errorf("drops %v, want %d", st.Drops, len(junk)*len(tiles))
	}
}

// TestNumberedTileAllocatesNothing: the tile path stays allocation-free
// with tile numbers and a hold checkpoint's REPORT reuses its buffer.
func TestNumberedTileAllocatesNothing(t *testing.T) {
	d := newDisplay(t)
	tiles := numbered(1)
	var sent int
	send := func(netip.AddrPort, []byte) { sent++ }
	hold := present(tileproto.PresentAck|tileproto.PresentHold, 1, uint32(len(tiles)), 1)
	d.ApplyFrom(hold, sender, send) // the first REPORT sizes the buffer
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		d.ApplyFrom(tiles[i%len(tiles)], sender, send)
		if i%100 == 0 {
			d.ApplyFrom(hold, sender, send)
		}
		i++
	}); a != 0 {
		t.Errorf("%v allocations per numbered tile", a)
	}
	if sent < 10 {
		t.Fatalf("%d reports", sent)
	}
}
