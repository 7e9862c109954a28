package stack

import (
	"net/netip"

	"github.com/netstation/netstation/stack/arp"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/ipv4"
)

// Stats is a snapshot of every counter of a stack.
type Stats struct {
	RxFrames, RxBytes uint64
	TxFrames, TxBytes uint64
	// Drops counts dropped frames by reason; index it with an
	// engine.DropReason (Drops[engine.DropUDPBadChecksum]).
	Drops       [engine.NumDropReasons]uint64
	RxNeedsCsum uint64 // accepted with a partial checksum from a local kernel
	RxDataValid uint64 // accepted on the link's word
	TxOffload   uint64 // sent NEEDS_CSUM

	ARP                                                        arp.Stats
	ARPRequestsIn, ARPRepliesIn, ARPRequestsOut, ARPRepliesOut uint64

	Reassembly   ipv4.ReassemblerStats
	FragmentsOut uint64

	EchoRequestsIn, EchoRepliesOut uint64
	EchoRequestsOut, EchoRepliesIn uint64
	ICMPErrorsIn                   uint64
	PortUnreachableSent            uint64
	PortUnreachableLimited         uint64
	GSOFramesOut, GSOFramesIn      uint64
	// LentFramesIn counts received GSO super-frames whose datagrams (UDP)
	// or payload (TCP) were queued where the link received them
	// (link.Lender), not copied.
	LentFramesIn   uint64
	LinkReadErrors uint64
	// PolledFrames counts received frames a reader took off the link
	// itself (Config.PollBudget) rather than the receive goroutine.
	PolledFrames uint64

	UDP []SocketStats
	TCP TCPStats
}

// TCPStats are the stack's TCP counters (the names of the kernel's
// /proc/net/snmp Tcp line where one exists).
type TCPStats struct {
	ActiveOpens, PassiveOpens, AttemptFails, EstabResets uint64
	CurrEstab                                            int // connections in the table now
	InSegs, OutSegs, RetransSegs, InRsts, OutRsts        uint64
	FastRetransmits, Timeouts, DupAcks, OutOfOrder       uint64
	GSOOut, GSOIn, ChallengeACKs, ZeroWindowProbes       uint64
	TailLossProbes                                       uint64
}

// SocketStats are one UDP socket's counters.
type SocketStats struct {
	Local, Remote        netip.AddrPort
	RxDatagrams, RxBytes uint64
	RxDrops              uint64 // receive ring full
	TxDatagrams, TxBytes uint64
	Queued               int // datagrams waiting to be read
}

// TotalDrops sums Drops.
func (s Stats) TotalDrops() uint64 {
	var n uint64
	for _, d := range s.Drops {
		n += d
	}
	return n
}

// Stats returns a snapshot of the counters.
func (s *Stack) Stats() Stats {
	e := &s.eng
	st := Stats{
		RxFrames: e.RxFrames.Load(), RxBytes: e.RxBytes.Load(),
		TxFrames: e.TxFrames.Load(), TxBytes: e.TxBytes.Load(),
		Drops:       e.DropCounts(),
		RxNeedsCsum: e.RxNeedsCsum.Load(), RxDataValid: e.RxDataValid.Load(), TxOffload: e.TxOffload.Load(),
		ARP:           s.arp.Stats(),
		ARPRequestsIn: s.st.arpRequestsIn.Load(), ARPRepliesIn: s.st.arpRepliesIn.Load(),
		ARPRequestsOut: s.st.arpRequestsOut.Load(), ARPRepliesOut: s.st.arpRepliesOut.Load(),
		Reassembly:     s.reasm.Stats(),
		PolledFrames:   s.st.polledFrames.Load(),
		FragmentsOut:   s.st.fragmentsOut.Load(),
		EchoRequestsIn: s.st.echoRequestsIn.Load(), EchoRepliesOut: s.st.echoRepliesOut.Load(),
		EchoRequestsOut: s.st.echoRequestsOut.Load(), EchoRepliesIn: s.st.echoRepliesIn.Load(),
		ICMPErrorsIn:           s.st.icmpErrorsIn.Load(),
		PortUnreachableSent:    s.st.unreachSent.Load(),
		PortUnreachableLimited: s.st.unreachLimited.Load(),
		GSOFramesOut:           s.st.gsoFramesOut.Load(),
		GSOFramesIn:            s.st.gsoFramesIn.Load(),
		LentFramesIn:           s.st.lentFramesIn.Load(),
		LinkReadErrors:         s.st.linkReadErrors.Load(),
	}
	s.socksMu.Lock()
	for c := range s.socks {
		st.UDP = append(st.UDP, SocketStats{
			Local: c.laddr, Remote: c.raddr,
			RxDatagrams: c.rxDatagrams.Load(), RxBytes: c.rxBytes.Load(), RxDrops: c.rxDrops.Load(),
			TxDatagrams: c.txDatagrams.Load(), TxBytes: c.txBytes.Load(),
			Queued: int(c.q.tail.Load() - c.q.head.Load()),
		})
	}
	s.socksMu.Unlock()
	if s.tcp != nil {
		t := s.tcp.Stats()
		st.TCP = TCPStats{
			ActiveOpens: t.ActiveOpens.Load(), PassiveOpens: t.PassiveOpens.Load(),
			AttemptFails: t.AttemptFails.Load(), EstabResets: t.EstabResets.Load(), CurrEstab: s.tcp.NumConns(),
			InSegs: t.SegsIn.Load(), OutSegs: t.SegsOut.Load(), RetransSegs: t.RetransSegs.Load(),
			InRsts: t.RstIn.Load(), OutRsts: t.RstOut.Load(),
			FastRetransmits: t.FastRetransmits.Load(), Timeouts: t.Timeouts.Load(), DupAcks: t.DupAcks.Load(),
			OutOfOrder: t.OutOfOrder.Load(), GSOOut: t.GSOOut.Load(), GSOIn: t.GSOIn.Load(),
			ChallengeACKs: t.ChallengeACKs.Load(), ZeroWindowProbes: t.ZeroWindowProbes.Load(),
			TailLossProbes: t.TailLossProbes.Load(),
		}
	}
	return st
}
