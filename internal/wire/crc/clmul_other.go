//go:build !amd64

package crc

const (
	hasCLMUL  = false
	hasAVX512 = false
)

func update(crc uint32, p []byte) uint32 { return tableUpdate(crc, p) }
