package crc

import (
	"encoding/binary"
	"hash/crc32"
)

// FieldSize is the size of a checksum field: a big-endian uint32.
const FieldSize = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Sum is the CRC-32C of p.
func Sum(p []byte) uint32 { return update(0, p) }

// Update continues crc (a Sum so far) over p: the checksum of data that
// lies in pieces.
func Update(crc uint32, p []byte) uint32 { return update(crc, p) }

// tableUpdate is hash/crc32's Castagnoli (SSE4.2 or arm64's CRC32C
// instructions where they exist).
func tableUpdate(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

// Skipping is the CRC-32C of b with its checksum field, the FieldSize
// bytes at b[field:], left out: the covered bytes are b[:field] followed
// by b[field+FieldSize:]. The field may be the last thing in b. It panics
// if b is shorter than field+FieldSize (callers check lengths first).
func Skipping(b []byte, field int) uint32 {
	return Update(Sum(b[:field]), b[field+FieldSize:])
}

// Seal stores Skipping(b, field) in the field, big-endian.
func Seal(b []byte, field int) {
	binary.BigEndian.PutUint32(b[field:], Skipping(b, field))
}

// Valid reports whether the field holds Skipping(b, field).
func Valid(b []byte, field int) bool {
	return binary.BigEndian.Uint32(b[field:]) == Skipping(b, field)
}
