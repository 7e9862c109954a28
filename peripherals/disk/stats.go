package disk

import (
	"errors"
	"strings"
	"sync/atomic"

	"github.com/netstation/netstation/internal/wire/diskproto"
)

// Reasons a datagram is dropped without a reply.
const (
	dropShort          = iota // shorter than a request header
	dropMagic                 // not our protocol
	dropVersion               // another protocol version
	dropHeaderChecksum        // the header cannot be trusted, so neither can the tag
	dropNotRequest            // a reply sent to the server
	dropOversize              // larger than any UDP datagram
	dropStale                 // request id below the session's low-water mark
	dropInProgress            // a retransmission of a request still running
	dropQueueFull             // every worker busy and the queue full
	dropSendFailed            // the reply could not be sent
	dropBadSegment            // a data segment that fails its checks or does not fit its WRITE
	dropOrphanSegment         // a data segment of no WRITE being assembled (its header was lost)
	dropAssemblyFull          // a segmented WRITE when assembly memory is exhausted
	dropAbandoned             // a partly assembled WRITE given up (superseded or timed out)
	numDrops
)

var dropNames = [numDrops]string{"short", "magic", "version", "header_checksum", "not_request",
	"oversize", "stale", "in_progress", "queue_full", "send_failed",
	"bad_segment", "orphan_segment", "assembly_full", "abandoned"}

func dropReasonOf(err error) int {
	switch {
	case errors.Is(err, diskproto.ErrShort):
		return dropShort
	case errors.Is(err, diskproto.ErrMagic):
		return dropMagic
	case errors.Is(err, diskproto.ErrVersion):
		return dropVersion
	case errors.Is(err, diskproto.ErrNotRequest):
		return dropNotRequest
	}
	return dropHeaderChecksum
}

type counters struct {
	requests     [diskproto.NumOps]atomic.Uint64
	errors       [diskproto.NumCodes]atomic.Uint64
	drops        [numDrops]atomic.Uint64
	duplicates   atomic.Uint64
	evictions    atomic.Uint64
	syncs        atomic.Uint64
	bytesRead    atomic.Uint64
	bytesWritten atomic.Uint64
	segments     atomic.Uint64
	dupSegments  atomic.Uint64
	// Loss recovery (protocol version 3).
	sacks          atomic.Uint64 // SACKs sent for WRITEs still arriving
	resentReads    atomic.Uint64 // READs with FlagHave answered
	resentSegments atomic.Uint64 // datagrams those sent
	// READ reply pacing (protocol version 4, pace.go).
	pacedReads   atomic.Uint64 // READ replies sent paced
	paceWaits    atomic.Uint64 // of those, the replies part of which waited for the pacer
	paceFloor    atomic.Uint64 // READs asking for a rate below MinPaceRate (raised to it)
	paceOverflow atomic.Uint64 // replies whose rest left at once: schedule too far ahead or pacer full
	gathered     atomic.Uint64 // READ replies gathered from the mapping (gather.go)
}

func (c *counters) drop(reason int) { c.drops[reason].Add(1) }

// Stats are a server's counters since NewServer. Maps are keyed by
// operation name, error-code name (spaces as underscores: "out_of_range")
// and drop reason; zero entries are left out.
type Stats struct {
	Requests     map[string]uint64 `json:"requests"`      // well-formed requests by operation
	Errors       map[string]uint64 `json:"errors"`        // error replies by code
	Drops        map[string]uint64 `json:"drops"`         // datagrams dropped unanswered, by reason
	Duplicates   uint64            `json:"duplicates"`    // retransmissions answered from the duplicate cache
	Evictions    uint64            `json:"evictions"`     // sessions evicted from a full table
	Syncs        uint64            `json:"syncs"`         // fdatasync calls (FLUSH and FUA)
	BytesRead    uint64            `json:"bytes_read"`    // READ data sent
	BytesWritten uint64            `json:"bytes_written"` // WRITE data stored
	Segments     uint64            `json:"segments"`      // WRITE datagrams assembled (header's and segments)
	DupSegments  uint64            `json:"dup_segments"`  // WRITE datagrams that had arrived already
	Sessions     int               `json:"sessions"`      // sessions open now
	// SACKs are the selective acknowledgements sent for WRITEs still
	// arriving; ResentReads the READs with FlagHave answered and
	// ResentSegments the datagrams those sent (loss recovery, version 3).
	SACKs          uint64 `json:"sacks"`
	ResentReads    uint64 `json:"resent_reads"`
	ResentSegments uint64 `json:"resent_segments"`
	// Paced READ replies (version 4): PacedReads were sent at their
	// request's pace rate, PaceWaits of them in part by the pacer after
	// a wait; PaceFloor READs asked for less than MinPaceRate (raised to
	// it); PaceOverflow replies left the rest at once (their session's
	// schedule more than a second ahead, or the pacer full).
	PacedReads   uint64 `json:"paced_reads"`
	PaceWaits    uint64 `json:"pace_waits"`
	PaceFloor    uint64 `json:"pace_floor"`
	PaceOverflow uint64 `json:"pace_overflow"`
	// GatheredReads are READ replies whose data the socket gathered
	// straight from the mapped backing file (no copy in the disk's memory).
	GatheredReads uint64 `json:"gathered_reads"`
	// Access is "capability" or "open"; Refused counts the requests the
	// CapabilityAuthorizer refused, by reason (see CapabilityAuthorizer.Stats),
	// and Version is its current capability version.
	Access  string            `json:"access"`
	Refused map[string]uint64 `json:"refused,omitempty"`
	Version uint32            `json:"capability_version"`
	// Transfers are third-party transfer orders (transfer.go).
	Transfers TransferStats `json:"transfers"`
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests:     map[string]uint64{},
		Errors:       map[string]uint64{},
		Drops:        map[string]uint64{},
		Duplicates:   s.stats.duplicates.Load(),
		Evictions:    s.stats.evictions.Load(),
		Syncs:        s.stats.syncs.Load(),
		BytesRead:    s.stats.bytesRead.Load(),
		BytesWritten: s.stats.bytesWritten.Load(),
		Segments:     s.stats.segments.Load(),
		DupSegments:  s.stats.dupSegments.Load(),

		SACKs:          s.stats.sacks.Load(),
		ResentReads:    s.stats.resentReads.Load(),
		ResentSegments: s.stats.resentSegments.Load(),

		PacedReads:   s.stats.pacedReads.Load(),
		PaceWaits:    s.stats.paceWaits.Load(),
		PaceFloor:    s.stats.paceFloor.Load(),
		PaceOverflow: s.stats.paceOverflow.Load(),

		GatheredReads: s.stats.gathered.Load(),
	}
	for i := range s.stats.requests {
		if v := s.stats.requests[i].Load(); v != 0 {
			st.Requests[diskproto.Op(i).String()] = v
		}
	}
	for i := range s.stats.errors {
		if v := s.stats.errors[i].Load(); v != 0 {
			st.Errors[strings.ReplaceAll(diskproto.Code(i).String(), " ", "_")] = v
		}
	}
	for i := range s.stats.drops {
		if v := s.stats.drops[i].Load(); v != 0 {
			st.Drops[dropNames[i]] = v
		}
	}
	s.mu.Lock()
	st.Sessions = len(s.sessions)
	s.mu.Unlock()
	st.Access = "open"
	if ca, ok := s.cfg.Authorizer.(*CapabilityAuthorizer); ok {
		st.Access, st.Refused, st.Version = "capability", ca.Stats(), ca.Version.Load()
	} else if !s.open {
		st.Access = "custom"
	}
	st.Transfers = s.transferStats()
	return st
}
