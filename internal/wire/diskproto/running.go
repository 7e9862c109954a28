package diskproto

// RunningChecksum is the Checksum of data that arrives in pieces, taken
// from the pieces soon after they are copied into place, while they are
// still in cache, so that the whole is not read again at the end. It covers
// the prefix of the data that arrived in order, summed in runs of at least
// SumRun bytes: CRC-32C over one datagram's 1,440 bytes runs at a quarter
// to a half of the speed it reaches over tens of kilobytes (the folding
// code's set-up and final reduction, internal/wire/crc: about 19 against
// 60-80 GB/s), and a run of SumRun bytes is still in the first-level or
// second-level cache when it is summed. Pieces that arrive out of order are left for Sum to read. A
// piece that overwrites bytes already summed (a broken or hostile peer)
// spoils the running sum, and Sum then reads everything: a checksum of the
// first copy would vouch for bytes no longer there. The zero value is
// ready for new data.
type RunningChecksum struct {
	sum    uint32
	summed int // bytes of the prefix summed; < 0: spoiled
	placed int // bytes of the prefix placed (summed or not yet)
}

// SumRun is the least run of placed bytes a RunningChecksum sums at once.
const SumRun = 32 << 10

// Placed records that buf[off:off+n] was just written.
func (r *RunningChecksum) Placed(buf []byte, off, n int) {
	switch {
	case r.summed < 0:
		return
	case off < r.summed:
		r.summed = -1
		return
	case off <= r.placed:
		// In order, or over bytes placed but not summed yet (they are
		// summed as they are now).
		r.placed = max(r.placed, off+n)
	default:
		return // out of order: Sum reads it
	}
	if r.placed-r.summed >= SumRun {
		r.sum = UpdateChecksum(r.sum, buf[r.summed:r.placed])
		r.summed = r.placed
	}
}

// Sum returns the Checksum of data, the whole of what was placed, reading
// only what the running sum did not cover.
func (r *RunningChecksum) Sum(data []byte) uint32 {
	if r.summed < 0 || r.summed > len(data) {
		return Checksum(data)
	}
	return UpdateChecksum(r.sum, data[r.summed:])
}

// Reset starts over, for new data.
func (r *RunningChecksum) Reset() { *r = RunningChecksum{} }
