package engine

import "sync/atomic"

// DropReason names why a frame was discarded.
type DropReason uint8

// Drop reasons. DropNone means the frame was accepted.
const (
	DropNone DropReason = iota
	DropEthernetTruncated
	DropUnknownEtherType
	DropNotForUs // destination MAC is neither ours nor broadcast
	DropARPInvalid
	DropIPTruncated
	DropIPBadVersion
	DropIPBadIHL
	DropIPBadTotalLength
	DropIPBadChecksum
	DropIPBadTTL
	DropIPBadSource
	DropNotOurAddress
	DropUnknownProtocol
	DropFragmentInvalid
	DropFragmentOverlap
	DropFragmentMemory
	DropFragmentTimeout
	DropICMPTruncated
	DropICMPBadChecksum
	DropICMPUnhandled
	DropUDPTruncated
	DropUDPBadLength
	DropUDPBadChecksum
	DropTCPTruncated
	DropTCPBadChecksum
	DropNoSocket
	DropSocketQueueFull
	DropTemplateMismatch
	DropARPUnresolved
	DropARPQueueFull
	DropGSOInvalid
	DropLinkError
	DropTCPBadOptions     // malformed TCP option list
	DropTCPListenOverflow // SYN beyond a listener's backlog (no SYN cookies)
	DropTCPOutOfWindow    // segment outside the receive window, or a stale timestamp (PAWS)
	DropTCPBadState       // segment not acceptable in the connection's state (e.g. no ACK)
	DropTCPOutOfOrderFull // out-of-order segment with no range slot left to hold it
	NumDropReasons
)

var dropNames = [NumDropReasons]string{
	DropNone:              "none",
	DropEthernetTruncated: "ethernet truncated",
	DropUnknownEtherType:  "unknown ethertype",
	DropNotForUs:          "not for us (dst MAC)",
	DropARPInvalid:        "arp invalid",
	DropIPTruncated:       "ip truncated",
	DropIPBadVersion:      "ip bad version",
	DropIPBadIHL:          "ip bad IHL",
	DropIPBadTotalLength:  "ip bad total length",
	DropIPBadChecksum:     "ip bad checksum",
	DropIPBadTTL:          "ip bad ttl",
	DropIPBadSource:       "ip bad source address",
	DropNotOurAddress:     "not our address",
	DropUnknownProtocol:   "unknown ip protocol",
	DropFragmentInvalid:   "fragment invalid",
	DropFragmentOverlap:   "fragment overlap",
	DropFragmentMemory:    "fragment memory bound",
	DropFragmentTimeout:   "fragment reassembly timeout",
	DropICMPTruncated:     "icmp truncated",
	DropICMPBadChecksum:   "icmp bad checksum",
	DropICMPUnhandled:     "icmp type not handled",
	DropUDPTruncated:      "udp truncated",
	DropUDPBadLength:      "udp bad length",
	DropUDPBadChecksum:    "udp bad checksum",
	DropTCPTruncated:      "tcp truncated",
	DropTCPBadChecksum:    "tcp bad checksum",
	DropNoSocket:          "no socket",
	DropSocketQueueFull:   "socket queue full",
	DropTemplateMismatch:  "template mismatch",
	DropARPUnresolved:     "arp unresolved",
	DropARPQueueFull:      "arp pending queue full",
	DropGSOInvalid:        "gso invalid",
	DropLinkError:         "link write error",
	DropTCPBadOptions:     "tcp bad options",
	DropTCPListenOverflow: "tcp listen backlog full",
	DropTCPOutOfWindow:    "tcp out of window",
	DropTCPBadState:       "tcp not acceptable in state",
	DropTCPOutOfOrderFull: "tcp out-of-order ranges full",
}

// String returns a short human-readable name.
func (r DropReason) String() string {
	if r < NumDropReasons {
		return dropNames[r]
	}
	return "unknown drop reason"
}

// Counters are the engine's statistics. Every field is an atomic, so the
// receive loop, senders and Stats readers never contend on a lock.
type Counters struct {
	Drops       [NumDropReasons]atomic.Uint64
	RxFrames    atomic.Uint64
	RxBytes     atomic.Uint64
	TxFrames    atomic.Uint64
	TxBytes     atomic.Uint64
	RxNeedsCsum atomic.Uint64 // frames accepted with a partial checksum (local kernel peer)
	RxDataValid atomic.Uint64 // frames whose checksum the link vouched for
	TxOffload   atomic.Uint64 // frames sent NEEDS_CSUM
}

// Drop counts one frame dropped for r.
func (c *Counters) Drop(r DropReason) {
	if r < NumDropReasons {
		c.Drops[r].Add(1)
	}
}

// DropCounts returns a snapshot of the per-reason counters.
func (c *Counters) DropCounts() [NumDropReasons]uint64 {
	var out [NumDropReasons]uint64
	for i := range out {
		out[i] = c.Drops[i].Load()
	}
	return out
}
