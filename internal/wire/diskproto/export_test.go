package diskproto

import "github.com/netstation/netstation/internal/wire/crc"

// SetReplyVersionForTest rewrites a reply header's version byte and
// re-seals it.
func SetReplyVersionForTest(b []byte, v uint8) {
	b[2] = v
	crc.Seal(b[:ReplyHeaderSize], replyCRCField)
}
