package diskproto

import "hash/crc32"

// SetReplyVersionForTest rewrites a reply header's version byte and
// re-seals it.
func SetReplyVersionForTest(b []byte, v uint8) {
	b[2] = v
	be.PutUint32(b[44:], crc32.Checksum(b[:44], castagnoli))
}
