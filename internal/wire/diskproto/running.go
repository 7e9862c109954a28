package diskproto

// RunningChecksum is the Checksum of data that arrives in pieces, taken
// from each piece right after it is copied into place, while it is still
// in cache, so that the whole is not read again at the end. It covers the
// prefix of the data that arrived in order; pieces that arrive out of order
// are left for Sum to read. A piece that overwrites bytes already summed
// (a broken or hostile peer) spoils the running sum, and Sum then reads
// everything: a checksum of the first copy would vouch for bytes no longer
// there. The zero value is ready for new data.
type RunningChecksum struct {
	sum    uint32
	summed int // bytes of the prefix summed; < 0: spoiled
}

// Placed records that buf[off:off+n] was just written.
func (r *RunningChecksum) Placed(buf []byte, off, n int) {
	switch {
	case r.summed < 0:
	case off == r.summed:
		r.sum = UpdateChecksum(r.sum, buf[off:off+n])
		r.summed += n
	case off < r.summed:
		r.summed = -1
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
