package dgram

import (
	"encoding/binary"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FuzzParseRecvCmsgs: whatever the control bytes, parsing neither panics
// nor reads past them, and a well-formed UDP_GRO + SO_RXQ_OVFL pair is
// read back.
func FuzzParseRecvCmsgs(f *testing.F) {
	good := make([]byte, unix.CmsgSpace(4)*2)
	put := func(b []byte, level, typ int32, v uint32) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], v)
	}
	put(good, unix.IPPROTO_UDP, unix.UDP_GRO, 1472)
	put(good[unix.CmsgSpace(4):], unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 7)
	if seg, drops, ok := parseRecvCmsgs(good); seg != 1472 || drops != 7 || !ok {
		f.Fatalf("seed: %d %d %v", seg, drops, ok)
	}
	f.Add(good)
	f.Add(good[:unix.CmsgSpace(4)])
	f.Add([]byte{})
	f.Add(make([]byte, 15))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 && uintptr(unsafe.Pointer(&b[0]))%8 != 0 {
			b = append(make([]byte, 0, len(b)+8), b...) // cmsg headers are word-aligned, as the kernel writes them
		}
		parseRecvCmsgs(b)
	})
}
