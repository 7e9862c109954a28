package stack

import (
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/link"
)

// txRun is the run a BeginRun opened: where its frame is being built and
// where it goes. Guarded by txState.mu, held from BeginRun to EndRun or
// CancelRun.
type txRun struct {
	open  bool
	frame []byte // in t.big: headers, then seg*count payload bytes
	dst   netip.AddrPort
	seg   int
	count int
	mac   [6]byte
	ok    bool
	hop   [4]byte
	now   time.Time
}

// MaxRun is the most datagrams of seg bytes one BeginRun may send: a GSO
// super-frame's worth (128, the kernel's UDP_MAX_SEGMENTS, within one IP
// packet, a few less where that keeps the kernel's copy of the frame in
// a slab: 122 at 64 B, see gsoRun), 1 when the socket sends without GSO,
// and 0 when a datagram of seg bytes does not fit a frame of the MTU
// (WriteBatch fragments those).
func (c *UDPConn) MaxRun(seg int) int {
	if seg <= 0 || seg+header.IPv4MinimumSize+header.UDPMinimumSize > c.s.mtu {
		return 0
	}
	if !c.s.gso || c.noGSO.Load() {
		return 1
	}
	return c.s.gsoRun(seg)
}

// BeginRun starts sending count datagrams of seg bytes each (count at
// most MaxRun(seg)) to dst, or to the connected peer, and returns where
// the caller writes them, end to end: count*seg bytes, in the outgoing
// super-frame itself, behind the headers EndRun writes. EndRun sends them;
// CancelRun drops them. The payload is written once, by the caller, and
// copied once, by the link (the kernel's copy into its buffer): no
// assembly in user memory and no descriptor per datagram, where
// WriteBatch takes a Message per datagram and, below 512 B, assembles the
// super-frame. (A TPACKET transmit ring would not save the kernel's copy:
// a veth copies ring frames on their way to another namespace, see
// docs/ARCHITECTURE.md.) Other writers of the socket wait until EndRun or
// CancelRun, which must follow every successful BeginRun on the same
// goroutine.
func (c *UDPConn) BeginRun(dst netip.AddrPort, seg, count int) ([]byte, error) {
	dst, err := c.runDest(dst)
	if err != nil {
		return nil, err
	}
	if max := c.MaxRun(seg); count < 1 || count > max {
		return nil, fmt.Errorf("%w: a run of %d datagrams of %d bytes (at most %d)", ErrMessageTooLong, count, seg, max)
	}
	s, t := c.s, &c.tx
	t.mu.Lock()
	r := &t.run
	r.now = time.Now()
	d4 := dst.Addr().As4()
	r.mac, r.ok, r.hop, err = s.nextHop(d4, r.now)
	if err == nil {
		err = t.flush() // frames before the run leave before it
	}
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	n := udpFrameHeaders + seg*count
	b, err := t.bigBuf()
	if err != nil {
		t.mu.Unlock()
		return nil, err
	}
	r.frame = b[:n:n]
	r.open, r.dst, r.seg, r.count = true, dst, seg, count
	return r.frame[udpFrameHeaders:], nil
}

// EndRun sends the run BeginRun opened, as one UDP_L4 GSO super-frame
// (one frame for a run of one; a frame per datagram on a socket without
// GSO), and returns how many datagrams it sent.
func (c *UDPConn) EndRun() (int, error) {
	s, t := c.s, &c.tx
	r := &t.run
	if !r.open {
		return 0, fmt.Errorf("%w: EndRun without BeginRun", ErrConfig)
	}
	defer t.mu.Unlock()
	r.open = false
	total := r.seg * r.count
	if r.count > 1 && (!s.gso || c.noGSO.Load()) { // GSO turned off since: a frame each
		for i := range r.count {
			p := r.frame[udpFrameHeaders+i*r.seg : udpFrameHeaders+(i+1)*r.seg]
			if err := c.sendOne(p, r.dst, r.now); err != nil {
				t.flush()
				return 0, err
			}
		}
		if err := t.flush(); err != nil {
			return 0, err
		}
		c.txDatagrams.Add(uint64(r.count))
		c.txBytes.Add(uint64(total))
		return r.count, nil
	}
	d4 := r.dst.Addr().As4()
	b := r.frame
	udpLen := c.putRunHeaders(b, r.mac, d4, r.dst.Port(), total)
	var v link.VNetHdr
	if r.count > 1 {
		// The kernel segments the super-frame and fixes each segment's
		// UDP length and checksum from the pseudo-header sum over the
		// total length.
		v = link.VNetHdr{GSOType: link.GSOUDPL4, GSOSize: uint16(r.seg), HdrLen: gsoHdrLen(len(b))}
		engine.SetL4Checksum(b, gsoUDPCsumStart, 6, s.pseudo(d4, udpLen), true, &v)
	} else {
		engine.SetL4Checksum(b, gsoUDPCsumStart, 6, s.pseudo(d4, udpLen), s.offload, &v)
	}
	t.push(b, v, r.ok, r.hop, r.now)
	if err := t.flush(); err != nil { // big is reused by the next run
		return 0, err
	}
	if r.count > 1 {
		s.st.gsoFramesOut.Add(1)
	}
	c.txDatagrams.Add(uint64(r.count))
	c.txBytes.Add(uint64(total))
	return r.count, nil
}

// CancelRun drops the run BeginRun opened, sending nothing.
func (c *UDPConn) CancelRun() {
	t := &c.tx
	r := &t.run
	if !r.open {
		return
	}
	r.open = false
	t.mu.Unlock()
}

// WriteRunGather sends the concatenation of pieces as datagrams of seg
// bytes each (the last may be shorter) to dst, or to the connected peer,
// as one UDP_L4 GSO super-frame, and returns how many datagrams it sent.
// The datagrams may be at most MaxRun(seg), and all of them one IP packet's
// payload. The pieces stay where the caller has them: a link that gathers
// (afpacket) copies them into the frame itself, so a sender whose
// datagrams are its own headers around data it does not own (a storage
// WRITE: a segment header, then a slice of the caller's buffer) makes no
// copy of the data in user memory; a link that does not gather gets them
// assembled in the socket's buffer. pieces is not kept.
func (c *UDPConn) WriteRunGather(dst netip.AddrPort, seg int, pieces [][]byte) (int, error) {
	dst, err := c.runDest(dst)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, p := range pieces {
		total += len(p)
	}
	count := 0
	if seg > 0 {
		count = (total + seg - 1) / seg
	}
	if max := c.MaxRun(seg); count < 1 || count > max || total > header.UDPMaximumPayload {
		return 0, fmt.Errorf("%w: a run of %d bytes in datagrams of %d (at most %d datagrams, %d bytes)",
			ErrMessageTooLong, total, seg, max, header.UDPMaximumPayload)
	}
	s, t := c.s, &c.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	d4 := dst.Addr().As4()
	mac, ok, hop, err := s.nextHop(d4, now)
	if err == nil {
		err = t.flush() // frames before the run leave before it
	}
	if err != nil {
		return 0, err
	}
	if count == 1 || !s.gso || c.noGSO.Load() {
		// One datagram, or a socket without GSO: each assembled on its own.
		big, err := t.bigBuf()
		if err != nil {
			return 0, err
		}
		b := big[:0]
		for _, p := range pieces {
			b = append(b, p...)
		}
		for off := 0; off < len(b); off += seg {
			if err := c.sendOne(b[off:min(off+seg, len(b))], dst, now); err != nil {
				t.flush()
				return 0, err
			}
		}
		if err := t.flush(); err != nil {
			return 0, err
		}
		c.txDatagrams.Add(uint64(count))
		c.txBytes.Add(uint64(total))
		return count, nil
	}
	v := link.VNetHdr{GSOType: link.GSOUDPL4, GSOSize: uint16(seg), HdrLen: gsoHdrLen(udpFrameHeaders + total)}
	sent := false
	if ok && s.gather {
		h := t.hdr[:]
		udpLen := c.putRunHeaders(h, mac, d4, dst.Port(), total)
		engine.SetL4Checksum(h, gsoUDPCsumStart, 6, s.pseudo(d4, udpLen), true, &v)
		all := append(append(t.pieces[:0], h), pieces...)
		sent, err = s.eng.TransmitGather(v, all, &t.tmpl)
		clear(all) // do not keep the caller's buffers alive
		t.pieces = all[:0]
	}
	if !sent {
		// The link does not gather: the frame is assembled here.
		b, berr := t.bigBuf()
		if berr != nil {
			return 0, berr
		}
		udpLen := c.putRunHeaders(b, mac, d4, dst.Port(), total)
		off := udpFrameHeaders
		for _, p := range pieces {
			off += copy(b[off:], p)
		}
		b = b[:off]
		engine.SetL4Checksum(b, gsoUDPCsumStart, 6, s.pseudo(d4, udpLen), true, &v)
		t.push(b, v, ok, hop, now)
		err = t.flush() // big is reused by the next super-frame
	}
	if err != nil {
		return 0, err
	}
	s.st.gsoFramesOut.Add(1)
	c.txDatagrams.Add(uint64(count))
	c.txBytes.Add(uint64(total))
	return count, nil
}

// runDest is the destination BeginRun and WriteRunGather send to, after
// the checks they share: the socket open, its write deadline not passed,
// the connected peer (if any) over dst, an IPv4 address and a port.
func (c *UDPConn) runDest(dst netip.AddrPort) (netip.AddrPort, error) {
	if c.isClosed() {
		return dst, ErrClosed
	}
	if dl := c.writeDeadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return dst, os.ErrDeadlineExceeded
	}
	if c.raddr.IsValid() {
		dst = c.raddr
	}
	if !dst.Addr().Is4() || dst.Port() == 0 {
		return dst, fmt.Errorf("%w: destination %v", ErrAddr, dst)
	}
	return dst, nil
}

// putRunHeaders writes, at the start of b, the Ethernet, IPv4 and UDP
// headers of a run's super-frame carrying total payload bytes to d4:dport
// by way of mac (EndRun's frame, WriteRunGather's gathered headers or its
// assembled frame), and returns the UDP length the checksum's
// pseudo-header covers.
func (c *UDPConn) putRunHeaders(b []byte, mac [6]byte, d4 [4]byte, dport uint16, total int) uint16 {
	eth, ip, udp := c.udpFields(d4, dport, total)
	eth.Dst = mac
	header.Ethernet(b).Encode(&eth)
	header.IPv4(b[header.EthernetMinimumSize:]).Encode(&ip)
	header.UDP(b[gsoUDPCsumStart:]).Encode(&udp)
	return udp.Length
}
