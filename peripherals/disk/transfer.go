package disk

import "sync/atomic"

// TransferStats count third-party transfer orders.
type TransferStats struct {
	Orders    uint64 `json:"orders"`    // TRANSFER requests accepted and run
	Completed uint64 `json:"completed"` // orders whose every frame the display presented
	Failed    uint64 `json:"failed"`    // orders that ended with an error reply
	Frames    uint64 `json:"frames"`    // frames presented by the destination
	Tiles     uint64 `json:"tiles"`     // tile datagrams sent, retransmissions included
	Resent    uint64 `json:"resent"`    // of Tiles, retransmissions on the display's report
	Bytes     uint64 `json:"bytes"`     // source bytes read from the backing file
}

type transferCounters struct {
	orders, completed, failed, frames, tiles, resent, bytes atomic.Uint64
}

func (s *Server) transferStats() TransferStats {
	c := &s.xfer
	return TransferStats{Orders: c.orders.Load(), Completed: c.completed.Load(), Failed: c.failed.Load(),
		Frames: c.frames.Load(), Tiles: c.tiles.Load(), Resent: c.resent.Load(), Bytes: c.bytes.Load()}
}
