package checksum

import (
	"bytes"
	"testing"
)

// FuzzPartial compares Partial with the naive reference for any bytes, any
// starting offset into them (so every alignment is reached) and any initial
// sum.
func FuzzPartial(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint8(0))
	f.Add([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, uint16(0), uint8(0)) // RFC 1071
	f.Add([]byte{0xab}, uint16(0xffff), uint8(0))
	f.Add(bytes.Repeat([]byte{0xff}, 131), uint16(0xffff), uint8(3))
	f.Add(bytes.Repeat([]byte{0xff, 0x00}, 100), uint16(1), uint8(1))
	f.Add(make([]byte, 1500), uint16(0), uint8(7))
	f.Add(carryEdgeData(), uint16(0), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, initial uint16, offset uint8) {
		if int(offset) > len(data) {
			offset = uint8(len(data))
		}
		b := data[offset:]
		if got, want := Partial(b, initial), referencePartial(b, initial); got != want {
			t.Fatalf("len %d offset %d initial %#04x: Partial = %#04x, reference %#04x",
				len(b), offset, initial, got, want)
		}
	})
}
