package crc_test

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/netstation/netstation/internal/wire/crc"
)

// TestSkippingIsTheFieldLeftOut checks Skipping against the standard
// library over the covered bytes copied out, for a field at the start,
// inside and at the end.
func TestSkippingIsTheFieldLeftOut(t *testing.T) {
	b := make([]byte, 64)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	for _, field := range []int{0, 12, 28, 60} {
		covered := append(append([]byte(nil), b[:field]...), b[field+4:]...)
		if got, want := crc.Skipping(b, field), crc32.Checksum(covered, tab); got != want {
			t.Errorf("field at %d: Skipping = %#x, want %#x", field, got, want)
		}
	}
}

func TestSealValid(t *testing.T) {
	b := make([]byte, 48)
	copy(b, "a header whose CRC field sits at byte 44")
	crc.Seal(b, 44)
	if !crc.Valid(b, 44) {
		t.Fatal("a sealed header is not valid")
	}
	if got := binary.BigEndian.Uint32(b[44:]); got != crc.Sum(b[:44]) {
		t.Fatalf("field at the end: sealed %#x, want the CRC of what precedes it %#x", got, crc.Sum(b[:44]))
	}
	// The field's own bytes do not count: resealing gives the same value.
	before := binary.BigEndian.Uint32(b[44:])
	crc.Seal(b, 44)
	if binary.BigEndian.Uint32(b[44:]) != before {
		t.Fatal("the field's content changed its own checksum")
	}
	for i := range 44 {
		b[i] ^= 1
		if crc.Valid(b, 44) {
			t.Fatalf("a flipped bit at byte %d still valid", i)
		}
		b[i] ^= 1
	}
}

func TestUpdateInPieces(t *testing.T) {
	p := []byte("the payload lies in pieces")
	if crc.Update(crc.Sum(p[:7]), p[7:]) != crc.Sum(p) {
		t.Fatal("Update over pieces differs from Sum over the whole")
	}
}
