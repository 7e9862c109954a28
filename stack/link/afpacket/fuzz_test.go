package afpacket

import (
	"encoding/binary"
	"testing"

	"github.com/netstation/netstation/stack/link"
)

// FuzzHarvest feeds arbitrary bytes as the first block of a receive ring
// (marked as handed to user space) and as the start of the second (still
// the kernel's): walking them must never read outside the ring, panic or
// loop, and every delivered frame must lie inside the ring.
func FuzzHarvest(f *testing.F) {
	// Seed: a well-formed block with two 60-byte packets.
	seed := make([]byte, 512)
	binary.LittleEndian.PutUint32(seed[bdStatus:], 1)
	binary.LittleEndian.PutUint32(seed[bdNumPkts:], 2)
	binary.LittleEndian.PutUint32(seed[bdFirstPkt:], bdSize)
	binary.LittleEndian.PutUint32(seed[bdBlkLen:], 48+2*160)
	for i, off := range []int{48, 208} {
		next := uint32(160)
		if i == 1 {
			next = 0
		}
		binary.LittleEndian.PutUint32(seed[off+phNextOffset:], next)
		binary.LittleEndian.PutUint32(seed[off+phSnaplen:], 60)
		binary.LittleEndian.PutUint32(seed[off+phLen:], 60)
		binary.LittleEndian.PutUint32(seed[off+phStatus:], 1)
		binary.LittleEndian.PutUint16(seed[off+phMac:], 90)
		binary.LittleEndian.PutUint16(seed[off+phMac+2:], 104)
	}
	f.Add(seed, []byte{})
	f.Add(seed[:64], seed[48:])
	f.Add([]byte{}, seed[48:208])
	const blockSize = 128 << 10
	f.Fuzz(func(t *testing.T, closed, open []byte) {
		l := &Link{}
		mem := make([]byte, 2*blockSize)
		copy(mem, closed[:min(len(closed), blockSize)])
		binary.LittleEndian.PutUint32(mem[bdStatus:], 1)
		copy(mem[blockSize:], open[:min(len(open), blockSize)])
		binary.LittleEndian.PutUint32(mem[blockSize+bdStatus:], 0)
		l.rx.init(mem, blockSize, 2)
		frames := make([]link.Frame, 16)
		for round := 0; round < 8; round++ {
			n := l.harvest(frames)
			for _, fr := range frames[:n] {
				if len(fr.Buf) == 0 || len(fr.Buf) > blockSize {
					t.Fatalf("frame of %d bytes", len(fr.Buf))
				}
			}
			if n == 0 {
				l.giveBackAll()
			}
		}
	})
}
