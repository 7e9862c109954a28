//go:build !amd64

package disk

// haveStream: non-temporal copies are written for amd64 only.
const haveStream = false

func streamBlocks(dst, src *byte, n int) { panic("disk: streamBlocks without haveStream") }
