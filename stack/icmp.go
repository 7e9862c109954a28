package stack

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
)

func (s *Stack) handleICMP(p *engine.Packet) {
	m := header.ICMPv4(p.Buf[p.L4:p.End])
	switch m.Type() {
	case header.ICMPv4Echo:
		if m.Code() != 0 || p.Dst != s.addr {
			// Like Linux (icmp_echo_ignore_broadcasts), broadcast pings
			// go unanswered.
			s.eng.Drop(engine.DropICMPUnhandled)
			return
		}
		s.st.echoRequestsIn.Add(1)
		t := &s.ctl
		t.mu.Lock()
		defer t.mu.Unlock()
		big, err := t.bigBuf()
		if err != nil {
			return
		}
		reply := header.ICMPv4(big[:len(m)])
		copy(reply, m)
		if p.VNet.Flags&link.VNetDataValid != 0 {
			// The link vouched for the data, not for the field: sum anew.
			reply[0] = header.ICMPv4EchoReply
			reply.SetChecksum(0)
			reply.SetChecksum(checksum.Checksum(reply, 0))
		} else {
			reply.SetType(header.ICMPv4EchoReply) // RFC 1624 update
		}
		if s.sendIP(t, header.ProtocolICMP, p.Src, reply) == nil {
			s.st.echoRepliesOut.Add(1)
		}
		t.flush()
	case header.ICMPv4EchoReply:
		if m.Ident() != s.pingIdent {
			s.eng.Drop(engine.DropICMPUnhandled)
			return
		}
		s.st.echoRepliesIn.Add(1)
		now := time.Now()
		s.pingMu.Lock()
		ch := s.pings[m.Sequence()]
		s.pingMu.Unlock()
		if ch != nil {
			select {
			case ch <- now:
			default:
			}
		}
	case header.ICMPv4DstUnreachable, header.ICMPv4TimeExceeded:
		s.st.icmpErrorsIn.Add(1)
	default:
		s.eng.Drop(engine.DropICMPUnhandled)
	}
}

func (s *Stack) icmpBurst() int { return max(1, s.cfg.ICMPRateLimit/10) }

// portUnreachable answers a datagram to a closed port, at most
// ICMPRateLimit times a second. Runs on the receive goroutine.
func (s *Stack) portUnreachable(p *engine.Packet) {
	if s.cfg.ICMPRateLimit < 0 {
		return
	}
	now := time.Now()
	if !s.icmpLast.IsZero() {
		s.icmpTokens += now.Sub(s.icmpLast).Seconds() * float64(s.cfg.ICMPRateLimit)
		s.icmpTokens = min(s.icmpTokens, float64(s.icmpBurst()))
	}
	s.icmpLast = now
	if s.icmpTokens < 1 {
		s.st.unreachLimited.Add(1)
		return
	}
	s.icmpTokens--
	quote := p.Buf[p.L3:min(p.L4+icmpUnreachQuoteBytes, p.End)]
	t := &s.ctl
	t.mu.Lock()
	defer t.mu.Unlock()
	big, err := t.bigBuf()
	if err != nil {
		return
	}
	m := header.ICMPv4(big[:header.ICMPv4MinimumSize+len(quote)])
	copy(m[header.ICMPv4MinimumSize:], quote)
	m.Encode(&header.ICMPv4Fields{Type: header.ICMPv4DstUnreachable, Code: header.ICMPv4PortUnreachable})
	if s.sendIP(t, header.ProtocolICMP, p.Src, m) == nil {
		s.st.unreachSent.Add(1)
	}
	t.flush()
}

// Ping sends one ICMP echo request with size bytes of payload to dst and
// waits for the reply or for ctx to end. It returns the round-trip time.
func (s *Stack) Ping(ctx context.Context, dst netip.Addr, size int) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("%w: %v is not IPv4", ErrAddr, dst)
	}
	if size < 0 || size > header.IPv4MaximumPacket-header.IPv4MinimumSize-header.ICMPv4MinimumSize {
		return 0, fmt.Errorf("%w: ping payload %d bytes", ErrMessageTooLong, size)
	}
	if s.closed() {
		return 0, ErrClosed
	}
	if dst.As4() == s.addr {
		// Our own address is answered here, as a kernel host answers
		// through its loopback: no frame leaves (the fabric would not
		// bring it back), and the counters show one echo each way.
		start := time.Now()
		s.st.echoRequestsOut.Add(1)
		s.st.echoRequestsIn.Add(1)
		s.st.echoRepliesOut.Add(1)
		s.st.echoRepliesIn.Add(1)
		return time.Since(start), nil
	}
	seq := uint16(s.pingSeq.Add(1))
	ch := make(chan time.Time, 1)
	s.pingMu.Lock()
	s.pings[seq] = ch
	s.pingMu.Unlock()
	defer func() {
		s.pingMu.Lock()
		delete(s.pings, seq)
		s.pingMu.Unlock()
	}()

	t := &s.ctl
	t.mu.Lock()
	big, err := t.bigBuf()
	if err != nil {
		t.mu.Unlock()
		return 0, err
	}
	m := header.ICMPv4(big[:header.ICMPv4MinimumSize+size])
	for i := range m[header.ICMPv4MinimumSize:] {
		m[header.ICMPv4MinimumSize+i] = byte(i)
	}
	m.Encode(&header.ICMPv4Fields{Type: header.ICMPv4Echo, Ident: s.pingIdent, Sequence: seq})
	start := time.Now()
	err = s.sendIP(t, header.ProtocolICMP, dst.As4(), m)
	if err == nil {
		err = t.flush()
	}
	t.mu.Unlock()
	if err != nil {
		return 0, err
	}
	s.st.echoRequestsOut.Add(1)
	select {
	case at := <-ch:
		return at.Sub(start), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.done:
		return 0, ErrClosed
	}
}
