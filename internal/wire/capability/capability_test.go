package capability_test

import (
	"bytes"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

var testCap = capability.Capability{DiskID: 7, Offset: 4096, Length: 1 << 20,
	Rights: capability.RightRead | capability.RightWrite, Expiry: 1_900_000_000, Version: 3, Nonce: 0x0123456789abcdef}

func TestRoundTrip(t *testing.T) {
	key := capability.NewKey()
	cases := []capability.Capability{
		testCap,
		{}, // every field zero still encodes non-zero: the format byte
		{DiskID: math.MaxUint32, Offset: 0, Length: math.MaxUint64, Rights: capability.RightsAll,
			Expiry: math.MaxInt64, Version: math.MaxUint32, Nonce: math.MaxUint64},
		{Expiry: -1}, // always expired, still well-formed
	}
	for _, c := range cases {
		b := capability.Mint(key, c)
		if b == [capability.Size]byte{} {
			t.Fatalf("Mint(%+v) is the all-zero field", c)
		}
		got, err := capability.Verify(key, b)
		if err != nil || got != c {
			t.Fatalf("Verify(Mint(%+v)) = %+v, %v", c, got, err)
		}
		p, mac, err := capability.Parse(b)
		if err != nil || p != c || !bytes.Equal(mac[:], b[capability.Size-capability.MACSize:]) {
			t.Fatalf("Parse = %+v, %x, %v", p, mac, err)
		}
	}
}

// TestLayout pins the documented encoding (docs/protocols/disk.md).
func TestLayout(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, capability.KeySize)
	b := capability.Mint(key, testCap)
	want := []byte{1, 3, 0, 0, 0, 0, 0, 7, // format, rights, reserved, disk id
		0, 0, 0, 0, 0, 0, 0x10, 0, // offset
		0, 0, 0, 0, 0, 0x10, 0, 0, // length
		0, 0, 0, 0, 0x71, 0x3f, 0xb3, 0x00, // expiry 1.9e9
		0, 0, 0, 3, // version
		0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef} // nonce
	if !bytes.Equal(b[:44], want) {
		t.Fatalf("sealed bytes\n got %x\nwant %x", b[:44], want)
	}
	if capability.Size != diskproto.CapabilitySize || capability.MACSize*8 < 128 {
		t.Fatalf("size %d, MAC %d bits", capability.Size, capability.MACSize*8)
	}
}

func TestTamperAnyBit(t *testing.T) {
	key := capability.NewKey()
	b := capability.Mint(key, testCap)
	for i := range capability.Size {
		for bit := range 8 {
			x := b
			x[i] ^= 1 << bit
			c, err := capability.Verify(key, x)
			if !errors.Is(err, capability.ErrBadMAC) && !errors.Is(err, capability.ErrFormat) {
				t.Fatalf("byte %d bit %d flipped: Verify = %+v, %v; want ErrBadMAC or ErrFormat", i, bit, c, err)
			}
		}
	}
}

func TestWrongKey(t *testing.T) {
	b := capability.Mint(capability.NewKey(), testCap)
	if _, err := capability.Verify(capability.NewKey(), b); !errors.Is(err, capability.ErrBadMAC) {
		t.Fatalf("other key: %v, want ErrBadMAC", err)
	}
	short := make([]byte, capability.MinKeySize-1)
	if _, err := capability.Verify(short, capability.Mint(short, testCap)); !errors.Is(err, capability.ErrKey) {
		t.Fatalf("short key: %v, want ErrKey", err)
	}
}

func TestParseErrors(t *testing.T) {
	key := capability.NewKey()
	if _, _, err := capability.Parse([capability.Size]byte{}); !errors.Is(err, capability.ErrNone) {
		t.Fatalf("all-zero: %v, want ErrNone", err)
	}
	if _, err := capability.Verify(key, [capability.Size]byte{}); !errors.Is(err, capability.ErrNone) {
		t.Fatalf("Verify all-zero: %v, want ErrNone", err)
	}
	mutate := map[string]func(*[capability.Size]byte){
		"format 0":       func(b *[capability.Size]byte) { b[0] = 0 },
		"format 2":       func(b *[capability.Size]byte) { b[0] = 2 },
		"reserved":       func(b *[capability.Size]byte) { b[3] = 1 },
		"rights 0x10":    func(b *[capability.Size]byte) { b[1] |= 0x10 },
		"range overflow": func(b *[capability.Size]byte) { copy(b[16:24], bytes.Repeat([]byte{0xff}, 8)) },
	}
	for name, m := range mutate {
		b := capability.Mint(key, testCap)
		m(&b)
		if _, _, err := capability.Parse(b); !errors.Is(err, capability.ErrFormat) {
			t.Errorf("%s: Parse = %v, want ErrFormat", name, err)
		}
	}
	// Minting fields Parse rejects gives a capability no disk accepts.
	bad := testCap
	bad.Rights = 0x80
	if _, err := capability.Verify(key, capability.Mint(key, bad)); !errors.Is(err, capability.ErrFormat) {
		t.Fatalf("minted undefined rights: %v, want ErrFormat", err)
	}
}

func TestCovers(t *testing.T) {
	c := capability.Capability{Offset: 100, Length: 50}
	for _, tc := range []struct {
		off, n uint64
		want   bool
	}{
		{100, 50, true}, {100, 0, true}, {149, 1, true}, {150, 0, true},
		{99, 1, false}, {149, 2, false}, {150, 1, false}, {100, 51, false},
		{math.MaxUint64, 1, false}, {120, math.MaxUint64, false}, {0, 0, false},
	} {
		if got := c.Covers(tc.off, tc.n); got != tc.want {
			t.Errorf("[100,150) covers [%d,+%d) = %v, want %v", tc.off, tc.n, got, tc.want)
		}
	}
	all := capability.Capability{Length: math.MaxUint64}
	if !all.Covers(math.MaxUint64-10, 10) || all.Covers(math.MaxUint64-10, 11) {
		t.Fatal("whole-space capability bounds wrong")
	}
}

func TestExpired(t *testing.T) {
	c := capability.Capability{Expiry: 1000}
	if c.Expired(time.Unix(999, 999_999_999)) || !c.Expired(time.Unix(1000, 0)) {
		t.Fatal("expiry is not the first second of invalidity")
	}
}

func TestRightsString(t *testing.T) {
	for r, want := range map[capability.Rights]string{0: "none", capability.RightsAll: "read|write|flush|trim",
		capability.RightWrite | 0x40: "write|0x40"} {
		if got := r.String(); got != want {
			t.Errorf("%#x: %q, want %q", uint8(r), got, want)
		}
	}
	for op, want := range map[diskproto.Op]capability.Rights{diskproto.OpRead: capability.RightRead,
		diskproto.OpWrite: capability.RightWrite, diskproto.OpFlush: capability.RightFlush,
		diskproto.OpTrim: capability.RightTrim, diskproto.OpInfo: 0} {
		if got := capability.RightFor(op); got != want {
			t.Errorf("RightFor(%v) = %v, want %v", op, got, want)
		}
	}
}

// FuzzParse checks that Parse never panics, that whatever it accepts
// re-encodes to the same sealed bytes, and that Verify accepts nothing
// whose MAC is not the key's.
func FuzzParse(f *testing.F) {
	key := bytes.Repeat([]byte{0x42}, capability.KeySize)
	good := capability.Mint(key, testCap)
	f.Add(good[:])
	f.Add(make([]byte, capability.Size))
	all := capability.Mint(key, capability.Capability{Length: math.MaxUint64, Rights: capability.RightsAll})
	f.Add(all[:])
	f.Fuzz(func(t *testing.T, in []byte) {
		var b [capability.Size]byte
		copy(b[:], in)
		c, mac, err := capability.Parse(b)
		if err != nil {
			if !errors.Is(err, capability.ErrNone) && !errors.Is(err, capability.ErrFormat) {
				t.Fatalf("Parse: unexpected error %v", err)
			}
			return
		}
		re := capability.Mint(key, c)
		if !bytes.Equal(re[:44], b[:44]) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b[:44], re[:44])
		}
		_, verr := capability.Verify(key, b)
		if (verr == nil) != (mac == capability.MAC(re[44:])) {
			t.Fatalf("Verify = %v with MAC %x, key's MAC %x", verr, mac, re[44:])
		}
	})
}
