package capability

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// Encoding constants; the layout is tabled in docs/protocols/disk.md.
const (
	// Size is the encoded size: the request's capability field.
	Size = diskproto.CapabilitySize
	// Format is the format byte of this encoding. It is never 0, so no
	// capability encodes as the all-zero field.
	Format = 1
	// MACSize is the length of the truncated HMAC-SHA256: 160 bits.
	MACSize = 20
	// KeySize is the size of keys NewKey returns, and the shortest key
	// Verify accepts: SHA-256's output length, below which RFC 2104
	// (section 3) says a key weakens the MAC.
	KeySize    = 32
	MinKeySize = KeySize

	sealed = Size - MACSize // the bytes the MAC covers
)

// Rights is a bitmask of the operations a capability allows.
type Rights uint8

// The rights, one per data operation. INFO needs none.
const (
	RightRead  Rights = 1 << 0
	RightWrite Rights = 1 << 1
	RightFlush Rights = 1 << 2
	RightTrim  Rights = 1 << 3

	RightsAll = RightRead | RightWrite | RightFlush | RightTrim
)

var rightNames = [...]string{"read", "write", "flush", "trim"}

func (r Rights) String() string {
	if r == 0 {
		return "none"
	}
	var s []string
	for i, n := range rightNames {
		if r&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	if r&^RightsAll != 0 {
		s = append(s, fmt.Sprintf("%#x", uint8(r&^RightsAll)))
	}
	return strings.Join(s, "|")
}

// RightFor returns the right op needs; INFO (and anything else) needs
// none, reported as 0.
func RightFor(op diskproto.Op) Rights {
	switch op {
	case diskproto.OpRead:
		return RightRead
	case diskproto.OpWrite:
		return RightWrite
	case diskproto.OpFlush:
		return RightFlush
	case diskproto.OpTrim:
		return RightTrim
	case diskproto.OpTransfer:
		return RightRead // and a key bound to the destination: TransferKey
	}
	return 0
}

// Capability is a decoded capability: what its holder may do.
type Capability struct {
	DiskID uint32 // the disk it is valid on
	// Offset and Length bound the byte range [Offset, Offset+Length) every
	// READ, WRITE and TRIM must fall in (FLUSH has no range). Offset 0 and
	// Length math.MaxUint64 cover any disk.
	Offset, Length uint64
	Rights         Rights
	// Expiry is the Unix time (seconds) from which the capability is no
	// longer valid.
	Expiry int64
	// Version must equal the disk's current version; the manager bumps it
	// on both sides to revoke every capability minted before.
	Version uint32
	// Nonce is fresh for every capability minted (NewNonce); it names the
	// capability in the disk's replay cache.
	Nonce uint64
}

// Expired reports whether c is past its expiry at now.
func (c Capability) Expired(now time.Time) bool { return now.Unix() >= c.Expiry }

// Covers reports whether the byte range [off, off+n) lies inside c's range.
// It is overflow-safe for any off and n.
func (c Capability) Covers(off, n uint64) bool {
	return off >= c.Offset && off-c.Offset <= c.Length && n <= c.Length-(off-c.Offset)
}

// MAC is the truncated HMAC-SHA256 that seals a capability.
type MAC [MACSize]byte

// Errors of Parse and Verify.
var (
	ErrNone   = errors.New("capability: none (all-zero field)")
	ErrFormat = errors.New("capability: malformed")
	ErrBadMAC = errors.New("capability: MAC mismatch (forged, tampered with or another key)")
	ErrKey    = errors.New("capability: key too short")
)

// NewKey returns a fresh random key of KeySize bytes.
func NewKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k) // never fails (crypto/rand since Go 1.24)
	return k
}

// NewNonce returns a fresh random nonce.
func NewNonce() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

var be = binary.BigEndian

// Mint encodes c and seals it with key. The caller provides a fresh Nonce
// (NewNonce) and a key of at least MinKeySize bytes (NewKey): a disk
// refuses capabilities sealed with shorter keys, and ones whose fields
// Parse rejects (undefined rights bits, a range that overflows).
func Mint(key []byte, c Capability) [Size]byte {
	var b [Size]byte
	b[0] = Format
	b[1] = byte(c.Rights)
	// b[2:4] reserved, zero
	be.PutUint32(b[4:], c.DiskID)
	be.PutUint64(b[8:], c.Offset)
	be.PutUint64(b[16:], c.Length)
	be.PutUint64(b[24:], uint64(c.Expiry))
	be.PutUint32(b[32:], c.Version)
	be.PutUint64(b[36:], c.Nonce)
	m := seal(key, &b)
	copy(b[sealed:], m[:])
	return b
}

func seal(key []byte, b *[Size]byte) (m MAC) {
	h := hmac.New(sha256.New, key)
	h.Write(b[:sealed])
	var sum [sha256.Size]byte
	copy(m[:], h.Sum(sum[:0]))
	return m
}

// Parse decodes b without checking its MAC: use Verify to trust it. It
// fails with ErrNone for the all-zero field and ErrFormat for an unknown
// format byte, non-zero reserved bytes, undefined rights bits or a range
// whose end overflows.
func Parse(b [Size]byte) (Capability, MAC, error) {
	var m MAC
	if b == [Size]byte{} {
		return Capability{}, m, ErrNone
	}
	if b[0] != Format {
		return Capability{}, m, fmt.Errorf("%w: format %d", ErrFormat, b[0])
	}
	if b[2] != 0 || b[3] != 0 {
		return Capability{}, m, fmt.Errorf("%w: reserved bytes not zero", ErrFormat)
	}
	c := Capability{
		Rights:  Rights(b[1]),
		DiskID:  be.Uint32(b[4:]),
		Offset:  be.Uint64(b[8:]),
		Length:  be.Uint64(b[16:]),
		Expiry:  int64(be.Uint64(b[24:])),
		Version: be.Uint32(b[32:]),
		Nonce:   be.Uint64(b[36:]),
	}
	if c.Rights&^RightsAll != 0 {
		return Capability{}, m, fmt.Errorf("%w: undefined rights %#x", ErrFormat, uint8(c.Rights))
	}
	if c.Offset+c.Length < c.Offset {
		return Capability{}, m, fmt.Errorf("%w: range %d+%d overflows", ErrFormat, c.Offset, c.Length)
	}
	copy(m[:], b[sealed:])
	return c, m, nil
}

// Verify parses b and checks its MAC under key in constant time. It does
// not check expiry, disk id, version or the request: the disk does
// (disk.CapabilityAuthorizer).
func Verify(key []byte, b [Size]byte) (Capability, error) {
	if len(key) < MinKeySize {
		return Capability{}, ErrKey
	}
	c, m, err := Parse(b)
	if err != nil {
		return Capability{}, err
	}
	want := seal(key, &b)
	if !hmac.Equal(m[:], want[:]) {
		return Capability{}, ErrBadMAC
	}
	return c, nil
}
