package stack

import (
	"sync"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/ipv4"
	"github.com/netstation/netstation/stack/link"
)

// txState is one sender's transmit side: a batch of frames built in
// buffers it owns, the template they must match, and a large scratch
// buffer for GSO super-frames and datagrams about to be fragmented. The
// buffers are reused as soon as the link's WriteBatch returns, so the
// steady state allocates nothing.
type txState struct {
	mu     sync.Mutex
	s      *Stack
	tmpl   engine.Template
	frames []link.Frame
	bufs   [][]byte
	n      int
	big    []byte
	// A gathered super-frame's headers and its list of pieces.
	hdr    [udpFrameHeaders]byte
	pieces [][]byte
	// run is the run BeginRun opened (UDP sockets only).
	run txRun
}

func (t *txState) init(s *Stack, tmpl engine.Template, batch int) {
	t.s = s
	t.tmpl = tmpl
	t.frames = make([]link.Frame, batch)
	t.bufs = make([][]byte, batch)
}

// next returns the buffer for the next frame (len = capacity = one MTU
// frame), flushing a full batch first.
func (t *txState) next() ([]byte, error) {
	if t.n == len(t.frames) {
		if err := t.flush(); err != nil {
			return nil, err
		}
	}
	if t.bufs[t.n] == nil {
		t.bufs[t.n] = make([]byte, header.EthernetMinimumSize+t.s.mtu)
	}
	return t.bufs[t.n], nil
}

// bigBuf returns the scratch buffer; nothing pending may point into it.
func (t *txState) bigBuf() ([]byte, error) {
	if err := t.flush(); err != nil {
		return nil, err
	}
	if t.big == nil {
		t.big = make([]byte, header.EthernetMinimumSize+header.IPv4MaximumPacket)
	}
	return t.big, nil
}

// push queues frame b (the buffer next returned, or big) for hop. An
// unresolved hop parks a copy in the ARP queue instead.
func (t *txState) push(b []byte, v link.VNetHdr, resolved bool, hop [4]byte, now time.Time) {
	if resolved {
		t.frames[t.n] = link.Frame{Buf: b, VNet: v}
		t.n++
		return
	}
	s := t.s
	if !t.tmpl.Match(b) {
		s.eng.Drop(engine.DropTemplateMismatch)
		return
	}
	request, dropped := s.arp.Enqueue(hop, link.Frame{Buf: b, VNet: v}, now)
	s.wakeTimer()
	if dropped {
		s.eng.Drop(engine.DropARPQueueFull)
	}
	if request {
		s.sendARP(header.ARPRequest, header.Broadcast, hop)
	}
}

func (t *txState) flush() error {
	if t.n == 0 {
		return nil
	}
	n := t.n
	t.n = 0
	_, err := t.s.eng.Transmit(t.frames[:n], &t.tmpl)
	return err
}

// sendIP sends the transport message l4 (checksum already set) to dst,
// fragmenting it when it does not fit the MTU. l4 must not alias t's
// frame buffers; it may live in t.big. Caller holds t.mu.
func (s *Stack) sendIP(t *txState, proto uint8, dst [4]byte, l4 []byte) error {
	now := time.Now()
	mac, ok, hop, err := s.nextHop(dst, now)
	if err != nil {
		return err
	}
	f := header.IPv4Fields{
		TotalLength: uint16(header.IPv4MinimumSize + len(l4)),
		ID:          s.newID(),
		TTL:         s.cfg.TTL,
		Protocol:    proto,
		Src:         s.addr,
		Dst:         dst,
	}
	eth := header.EthernetFields{Dst: mac, Src: s.mac, Type: header.EtherTypeIPv4}
	if header.IPv4MinimumSize+len(l4) <= s.mtu {
		b, err := t.next()
		if err != nil {
			return err
		}
		header.Ethernet(b).Encode(&eth)
		header.IPv4(b[header.EthernetMinimumSize:]).Encode(&f)
		n := copy(b[header.EthernetMinimumSize+header.IPv4MinimumSize:], l4)
		t.push(b[:header.EthernetMinimumSize+header.IPv4MinimumSize+n], link.VNetHdr{}, ok, hop, now)
		return nil
	}
	for off := 0; off < len(l4); {
		b, err := t.next()
		if err != nil {
			return err
		}
		header.Ethernet(b).Encode(&eth)
		var n int
		n, off = ipv4.WriteFragment(b[header.EthernetMinimumSize:], &f, l4, off, s.mtu)
		t.push(b[:header.EthernetMinimumSize+n], link.VNetHdr{}, ok, hop, now)
		s.st.fragmentsOut.Add(1)
	}
	return nil
}
