package tileproto

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// TestPresentOptionsRoundTrip: flags and the notify address survive;
// malformed options are refused.
func TestPresentOptionsRoundTrip(t *testing.T) {
	o := PresentOptions{Flags: PresentAck | PresentComplete, Notify: netip.MustParseAddrPort("10.77.0.10:4242")}
	b := AppendPresent(nil, &Header{Stream: 3, Frame: 9, Tiles: 2560, Index: 17}, o)
	h, p, err := Parse(b)
	if err != nil || h.Type != TypePresent || h.Index != 17 {
		t.Fatalf("parse: %+v %v", h, err)
	}
	got, err := ParsePresentOptions(p)
	if err != nil || got != o {
		t.Fatalf("options %+v %v, want %+v", got, err, o)
	}
	if b := AppendPresent(nil, &Header{}, PresentOptions{}); len(b) != HeaderSize {
		t.Errorf("a plain PRESENT carries %d bytes", len(b)-HeaderSize)
	}
	for name, p := range map[string][]byte{
		"unknown flag": {0x80, 0, 0, 0, 0, 0, 0, 0},
		"port only":    {0, 1, 0x10, 0, 0, 0, 0, 0},
		"addr only":    {0, 1, 0, 0, 10, 0, 0, 1},
		"short":        {0, 1, 0},
	} {
		if _, err := ParsePresentOptions(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestReportRoundTrip: a REPORT with a missing-tile map parses back, and
// inconsistent ones are refused.
func TestReportRoundTrip(t *testing.T) {
	r := Report{Received: 17, Missing: []byte{0x05, 0x02}} // tiles 1, 3 and 10 of 12
	b := AppendReport(nil, &Header{Stream: 3, Frame: 9, Tiles: 12, Index: 4}, &r)
	h, p, err := Parse(b)
	if err == nil {
		t.Fatalf("received 17 of 12 tiles accepted: %+v", h)
	}
	r.Received = 9
	b = AppendReport(nil, &Header{Stream: 3, Frame: 9, Tiles: 12, Index: 4}, &r)
	if h, p, err = Parse(b); err != nil || h.Type != TypeReport || h.Index != 4 {
		t.Fatalf("parse: %+v %v", h, err)
	}
	got, err := ParseReport(&h, p)
	if err != nil || got.Received != 9 || !bytes.Equal(got.Missing, r.Missing) {
		t.Fatalf("report %+v %v", got, err)
	}
	for i := 1; i <= 12; i++ {
		if want := i == 1 || i == 3 || i == 10; got.MissingTile(i) != want {
			t.Errorf("tile %d missing = %v", i, !want)
		}
	}
	if got.MissingTile(0) || got.MissingTile(13) {
		t.Error("tiles outside the frame reported missing")
	}
	for name, m := range map[string][]byte{"long map": {0, 0, 0}, "bit past the end": {0, 0x10}} {
		bad := Report{Missing: m}
		b := AppendReport(nil, &Header{Tiles: 12}, &bad)
		if _, _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
