package stack

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netstation/netstation/stack/checksum"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/ipv4"
	"github.com/netstation/netstation/stack/link"
)

// Message is one datagram in a batch.
//
// For ReadBatch the caller owns Buf (it is never retained); the stack
// copies the datagram into it, sets N to the bytes copied (a datagram
// longer than Buf is truncated, like recvmmsg) and Addr to the sender.
// For WriteBatch the payload is all of Buf, Addr the destination (ignored
// on a connected socket) and N is set to the bytes sent; Buf may be reused
// as soon as WriteBatch returns.
type Message struct {
	Buf  []byte
	N    int
	Addr netip.AddrPort
}

// UDPConn is a UDP socket. It satisfies net.PacketConn, and net.Conn when
// it was made by DialUDP. Reads and writes are safe for concurrent use.
type UDPConn struct {
	s       *Stack
	key     engine.FlowKey
	laddr   netip.AddrPort
	raddr   netip.AddrPort // valid when connected
	q       rxQueue
	rmu     sync.Mutex // serialises readers; held from ReadViews to Release
	lent    int        // datagrams lent by ReadViews (under rmu)
	lending atomic.Bool
	rtimer  *time.Timer
	readyFn func() bool // c.readable as a func value, made once
	tx      txState

	readDeadline  atomic.Int64 // unix nanoseconds; 0 = none
	writeDeadline atomic.Int64
	noGSO         atomic.Bool  // SetGSO(false): one frame per datagram
	pollBudget    atomic.Int64 // SetPollBudget; starts at Config.PollBudget
	// reclaim asks whoever next holds rmu to drop what a closed socket
	// still queues, giving the link's lent buffers back (see reclaimLent).
	reclaim   atomic.Bool
	done      chan struct{}
	closeOnce sync.Once

	// Receive counters belong to the receive goroutine, transmit counters
	// to the senders: separate cache lines.
	_                             [64]byte
	rxDatagrams, rxBytes, rxDrops atomic.Uint64
	_                             [64]byte
	txDatagrams, txBytes          atomic.Uint64
	_                             [64]byte
}

var (
	_ net.PacketConn = (*UDPConn)(nil)
	_ net.Conn       = (*UDPConn)(nil)
)

// ListenUDP opens a socket bound to laddr. An unspecified (or invalid)
// address binds the wildcard, which receives for our address and
// broadcasts; port 0 picks an ephemeral port.
func (s *Stack) ListenUDP(laddr netip.AddrPort) (*UDPConn, error) {
	return s.openUDP(laddr, netip.AddrPort{}, UDPOptions{})
}

// UDPOptions shape one socket. Zero fields take the stack's Config.
type UDPOptions struct {
	// QueueBytes and QueueLen size the socket's receive ring (payload
	// bytes, datagrams), as SO_RCVBUF sizes a kernel socket's: a socket
	// that must ride out long bursts (a benchmark's receiver beside a
	// kernel socket with a 64 MiB buffer) asks for more than the default.
	// Pages of the ring a reader that keeps up never needs are never
	// touched.
	QueueBytes, QueueLen int
}

// ListenUDPOptions is ListenUDP with options of the socket's own.
func (s *Stack) ListenUDPOptions(laddr netip.AddrPort, o UDPOptions) (*UDPConn, error) {
	return s.openUDP(laddr, netip.AddrPort{}, o)
}

// DialUDP opens a socket connected to raddr: it receives only from raddr
// and writes go there. laddr may be the zero value.
func (s *Stack) DialUDP(laddr, raddr netip.AddrPort) (*UDPConn, error) {
	if !raddr.Addr().Is4() || raddr.Port() == 0 {
		return nil, fmt.Errorf("%w: remote %v", ErrAddr, raddr)
	}
	return s.openUDP(laddr, raddr, UDPOptions{})
}

func (s *Stack) openUDP(laddr, raddr netip.AddrPort, o UDPOptions) (*UDPConn, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	k := engine.FlowKey{Proto: header.ProtocolUDP, LocalPort: laddr.Port()}
	a := laddr.Addr()
	switch {
	case !a.IsValid() || a.IsUnspecified():
		if raddr.IsValid() {
			k.LocalAddr = s.addr // a connected socket sends from our address
		}
	case a.Is4() && a.As4() == s.addr:
		k.LocalAddr = s.addr
	default:
		return nil, fmt.Errorf("%w: local %v is not %v", ErrAddr, a, s.Addr())
	}
	if raddr.IsValid() {
		k.RemoteAddr, k.RemotePort = raddr.Addr().As4(), raddr.Port()
	}
	c := &UDPConn{s: s, raddr: raddr, done: make(chan struct{})}
	c.readyFn = c.readable
	c.pollBudget.Store(int64(s.cfg.PollBudget))
	qlen, qbytes := s.cfg.UDPQueueLen, s.cfg.UDPQueueBytes
	if o.QueueLen > 0 {
		qlen = min(o.QueueLen, maxUDPQueueLen)
	}
	if o.QueueBytes > 0 {
		qbytes = min(max(o.QueueBytes, header.UDPMaximumPayload), maxUDPQueueBytes)
	}
	c.q.init(qlen, qbytes)
	c.q.lender = s.lender
	for try := 0; ; try++ {
		if laddr.Port() == 0 {
			p, err := s.ephemeralPort()
			if err != nil {
				return nil, err
			}
			k.LocalPort = p
		}
		err := s.udp.Insert(k, c)
		if err == nil {
			break
		}
		if laddr.Port() != 0 || try > 16 {
			return nil, err
		}
	}
	c.key = k
	c.laddr = netip.AddrPortFrom(netip.AddrFrom4(k.LocalAddr), k.LocalPort)
	c.tx.init(s, engine.Template{SrcMAC: s.mac, SrcAddr: s.addr, SrcPort: k.LocalPort, Proto: header.ProtocolUDP}, DefaultTxBatch)
	s.socksMu.Lock()
	s.socks[c] = struct{}{}
	s.socksMu.Unlock()
	if s.closed() { // raced with Stack.Close
		c.Close()
		return nil, ErrClosed
	}
	return c, nil
}

// ReceiveBuffer is the socket's receive queue: payload bytes and datagrams
// it holds before dropping. Protocols size their windows from it.
func (c *UDPConn) ReceiveBuffer() (bytes, datagrams int) { return len(c.q.arena), len(c.q.descs) }

// SetGSO turns UDP segmentation offload on (the default, where the link
// offers it) or off for this socket's batches. Off, every datagram leaves
// as a frame of its own, as a kernel socket without UDP_SEGMENT sends:
// benchmarks use it to compare like with like.
func (c *UDPConn) SetGSO(on bool) { c.noGSO.Store(!on) }

// SetPollBudget sets how long a reader of this socket that finds nothing
// queued drives the link itself before it sleeps (Config.PollBudget, for
// this socket alone; 0 turns it off), as SO_BUSY_POLL does for a kernel
// socket: a request/response socket buys latency with CPU time without
// every other socket of the stack spinning too. It has no effect on a
// link that cannot be polled.
func (c *UDPConn) SetPollBudget(d time.Duration) { c.pollBudget.Store(int64(max(d, 0))) }

// Close unregisters the socket and unblocks its readers.
func (c *UDPConn) Close() error {
	err := ErrClosed
	c.closeOnce.Do(func() {
		err = nil
		c.s.udp.Remove(c.key)
		c.s.socksMu.Lock()
		delete(c.s.socks, c)
		c.s.socksMu.Unlock()
		close(c.done)
		c.reclaimLent()
	})
	return err
}

// reclaimLent drops what a closed socket queues, so that buffers the link
// lent it go back (the socket will never be read to the end). It runs
// under rmu: if a reader holds rmu, the flag makes that reader do it when
// it lets go (unlockRead), and the receive goroutine calls it after
// publishing to a closed socket. Whoever sets the flag tries the lock
// after; whoever unlocks looks at the flag after: one of them drains.
func (c *UDPConn) reclaimLent() {
	if c.q.lender == nil {
		return
	}
	c.reclaim.Store(true)
	for c.reclaim.Load() && c.rmu.TryLock() {
		c.reclaim.Store(false)
		c.q.drain()
		c.rmu.Unlock()
	}
}

// unlockRead lets go of rmu and drains a closed socket if asked to meanwhile.
func (c *UDPConn) unlockRead() {
	c.rmu.Unlock()
	if c.reclaim.Load() {
		c.reclaimLent()
	}
}

func (c *UDPConn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// LocalAddr returns the bound address (0.0.0.0 for a wildcard).
func (c *UDPConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.laddr) }

// RemoteAddr returns the connected peer, or nil.
func (c *UDPConn) RemoteAddr() net.Addr {
	if !c.raddr.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(c.raddr)
}

// SetDeadline sets both deadlines.
func (c *UDPConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes pending and future reads fail with
// os.ErrDeadlineExceeded once t has passed; the zero time clears it.
func (c *UDPConn) SetReadDeadline(t time.Time) error {
	c.readDeadline.Store(unixNano(t))
	c.q.kick() // a blocked reader re-evaluates its deadline
	return nil
}

// SetWriteDeadline makes writes fail with os.ErrDeadlineExceeded once t
// has passed. Writes block only while the link pushes back.
func (c *UDPConn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(unixNano(t))
	return nil
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// ReadBatch receives up to len(msgs) datagrams, blocking until at least
// one is queued, the read deadline passes or the socket closes.
func (c *UDPConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.unlockRead()
	if err := c.waitQueued(); err != nil {
		return 0, err
	}
	return c.q.pop(msgs), nil
}

// View is a received datagram lent by the socket: Payload aliases the
// socket's receive ring, where the stack wrote it when it took the frame
// off the link, or, for a GSO super-frame's datagrams on a link that lends
// its receive buffers (link.Lender), the link's buffer the kernel wrote
// the frame into: then the payload was never copied in user space.
type View struct {
	Payload []byte
	Addr    netip.AddrPort
}

// ReadViews is the zero-copy ReadBatch: it blocks like ReadBatch, then
// fills views with up to len(views) datagrams without copying them. The
// views stay valid, and other readers of the socket wait, until Release;
// every successful ReadViews must be followed by one Release. The ring
// space they occupy is reused only after Release, so a caller that holds
// views long makes the socket drop what arrives meanwhile.
func (c *UDPConn) ReadViews(views []View) (int, error) {
	if len(views) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	if err := c.waitQueued(); err != nil {
		c.unlockRead()
		return 0, err
	}
	n := c.q.peek(views)
	c.lent = n
	c.lending.Store(true)
	return n, nil
}

// Release gives back the views of the last ReadViews. Their payloads must
// not be used afterwards. Without views out it does nothing.
func (c *UDPConn) Release() {
	if !c.lending.Swap(false) {
		return
	}
	c.q.release(c.lent)
	c.lent = 0
	c.unlockRead()
}

// readable reports whether a reader need not wait: a datagram is queued
// or the socket is closed.
func (c *UDPConn) readable() bool {
	return c.q.tail.Load() != c.q.head.Load() || c.isClosed()
}

// waitQueued blocks until a datagram is queued, the read deadline passes
// or the socket closes; with a poll budget (SetPollBudget) it first drives the link
// itself. The caller holds rmu.
func (c *UDPConn) waitQueued() error {
	drove := false
	for {
		if c.q.tail.Load() != c.q.head.Load() {
			return nil
		}
		if c.isClosed() {
			return ErrClosed
		}
		dl := c.readDeadline.Load()
		var wait time.Duration
		if dl != 0 {
			wait = time.Duration(dl - time.Now().UnixNano())
			if wait <= 0 {
				return os.ErrDeadlineExceeded
			}
		}
		if budget := time.Duration(c.pollBudget.Load()); !drove && budget > 0 && c.s.poller != nil {
			drove = true
			c.s.drive(c.readyFn, dl, budget)
			continue
		}
		if !c.q.arm() {
			continue // data arrived while arming
		}
		if dl == 0 {
			select {
			case <-c.q.notify:
			case <-c.done:
			}
			continue
		}
		if c.rtimer == nil {
			c.rtimer = time.NewTimer(wait)
		} else {
			c.rtimer.Reset(wait)
		}
		select {
		case <-c.q.notify:
		case <-c.done:
		case <-c.rtimer.C:
		}
		c.rtimer.Stop()
	}
}

// ReadFromUDPAddrPort reads one datagram into b. It does not allocate.
func (c *UDPConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	m := [1]Message{{Buf: b}}
	if _, err := c.ReadBatch(m[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	return m[0].N, m[0].Addr, nil
}

// ReadFrom implements net.PacketConn.
func (c *UDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, c.opError("read", err)
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// Read implements net.Conn.
func (c *UDPConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, c.opError("read", err)
	}
	return n, nil
}

// WriteBatch sends msgs in order and returns how many were sent. With a
// GSO link, runs of equal-sized datagrams to one peer leave as UDP_L4
// super-frames. Datagrams larger than the MTU are IP-fragmented.
func (c *UDPConn) WriteBatch(msgs []Message) (int, error) {
	if c.isClosed() {
		return 0, ErrClosed
	}
	if dl := c.writeDeadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return 0, os.ErrDeadlineExceeded
	}
	t := &c.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	// Counted once per call, including datagrams sent before an error.
	var datagrams, bytes uint64
	defer func() {
		c.txDatagrams.Add(datagrams)
		c.txBytes.Add(bytes)
	}()
	connected := c.raddr.IsValid()
	for i := 0; i < len(msgs); {
		dst := msgs[i].Addr
		if connected {
			dst = c.raddr
		}
		if !dst.Addr().Is4() || dst.Port() == 0 {
			t.flush()
			return i, fmt.Errorf("%w: destination %v", ErrAddr, dst)
		}
		seg := len(msgs[i].Buf)
		if seg > header.UDPMaximumPayload {
			t.flush()
			return i, fmt.Errorf("%w: %d bytes", ErrMessageTooLong, seg)
		}
		j := i + 1
		if c.s.gso && !c.noGSO.Load() && seg > 0 && seg+header.IPv4MinimumSize+header.UDPMinimumSize <= c.s.mtu {
			limit := int(c.s.gsoSegs.Load())
			for j < len(msgs) && j-i < limit && len(msgs[j].Buf) == seg &&
				(j-i+1)*seg <= header.UDPMaximumPayload && (connected || msgs[j].Addr == dst) {
				j++
			}
		}
		var err error
		if j-i >= 2 {
			err = c.sendGSO(msgs[i:j], dst, now)
			if err != nil && j-i > legacyGSOSegments && errors.Is(err, syscall.EINVAL) {
				// A kernel whose UDP_MAX_SEGMENTS is still 64: the
				// super-frame went alone and was refused whole, so
				// send the run again in super-frames it takes.
				c.s.gsoSegs.Store(legacyGSOSegments)
				continue
			}
		} else {
			err = c.sendOne(msgs[i].Buf, dst, now)
		}
		if err != nil {
			t.flush()
			return i, err
		}
		for k := i; k < j; k++ {
			msgs[k].N = len(msgs[k].Buf)
			bytes += uint64(msgs[k].N)
		}
		datagrams += uint64(j - i)
		i = j
	}
	if err := t.flush(); err != nil {
		return 0, err
	}
	return len(msgs), nil
}

func (c *UDPConn) udpFields(dst [4]byte, dport uint16, payloadLen int) (header.EthernetFields, header.IPv4Fields, header.UDPFields) {
	s := c.s
	return header.EthernetFields{Src: s.mac, Type: header.EtherTypeIPv4},
		header.IPv4Fields{
			TotalLength: uint16(header.IPv4MinimumSize + header.UDPMinimumSize + payloadLen),
			ID:          s.newID(),
			TTL:         s.cfg.TTL,
			Protocol:    header.ProtocolUDP,
			Src:         s.addr,
			Dst:         dst,
		},
		header.UDPFields{SrcPort: c.key.LocalPort, DstPort: dport, Length: uint16(header.UDPMinimumSize + payloadLen)}
}

// sendOne sends one datagram: one frame, or IP fragments. Holds tx.mu.
func (c *UDPConn) sendOne(p []byte, dst netip.AddrPort, now time.Time) error {
	s, t := c.s, &c.tx
	d4 := dst.Addr().As4()
	mac, ok, hop, err := s.nextHop(d4, now)
	if err != nil {
		return err
	}
	eth, ip, udp := c.udpFields(d4, dst.Port(), len(p))
	eth.Dst = mac
	pseudo := s.pseudo(d4, udp.Length)
	if udpFrameHeaders+len(p) <= header.EthernetMinimumSize+s.mtu {
		b, err := t.next()
		if err != nil {
			return err
		}
		header.Ethernet(b).Encode(&eth)
		header.IPv4(b[header.EthernetMinimumSize:]).Encode(&ip)
		header.UDP(b[gsoUDPCsumStart:]).Encode(&udp)
		b = b[:udpFrameHeaders+copy(b[udpFrameHeaders:], p)]
		var v link.VNetHdr
		engine.SetL4Checksum(b, gsoUDPCsumStart, 6, pseudo, s.offload, &v)
		t.push(b, v, ok, hop, now)
		return nil
	}
	// Too big for one frame: the checksum must cover the whole datagram,
	// so it is computed here before the datagram is cut into fragments.
	big, err := t.bigBuf()
	if err != nil {
		return err
	}
	dgram := big[:header.UDPMinimumSize+len(p)]
	header.UDP(dgram).Encode(&udp)
	copy(dgram[header.UDPMinimumSize:], p)
	var v link.VNetHdr
	engine.SetL4Checksum(dgram, 0, 6, pseudo, false, &v)
	for off := 0; off < len(dgram); {
		b, err := t.next()
		if err != nil {
			return err
		}
		header.Ethernet(b).Encode(&eth)
		var n int
		n, off = ipv4.WriteFragment(b[header.EthernetMinimumSize:], &ip, dgram, off, s.mtu)
		t.push(b[:header.EthernetMinimumSize+n], link.VNetHdr{}, ok, hop, now)
		s.st.fragmentsOut.Add(1)
	}
	return nil
}

// gatherMinSegment is the smallest datagram a super-frame is gathered
// for rather than assembled: below it, the kernel's walk of one iovec per
// datagram costs more than the copy it saves (64 B datagrams measured
// slower gathered).
const gatherMinSegment = 512

// sendGSO sends msgs (all the same length, at least two) to dst as one
// UDP_L4 super-frame. Holds tx.mu.
func (c *UDPConn) sendGSO(msgs []Message, dst netip.AddrPort, now time.Time) error {
	s, t := c.s, &c.tx
	d4 := dst.Addr().As4()
	mac, ok, hop, err := s.nextHop(d4, now)
	if err != nil {
		return err
	}
	seg := len(msgs[0].Buf)
	total := seg * len(msgs)
	eth, ip, udp := c.udpFields(d4, dst.Port(), total)
	eth.Dst = mac
	// The kernel segments the super-frame and fixes each segment's UDP
	// length and checksum from the pseudo-header sum over the total length.
	v := link.VNetHdr{GSOType: link.GSOUDPL4, GSOSize: uint16(seg), HdrLen: udpFrameHeaders}
	if ok && s.gather && seg >= gatherMinSegment {
		// Headers of their own, payloads where the caller has them: the
		// kernel's copy gathers the frame.
		if err := t.flush(); err != nil { // keep the order of frames
			return err
		}
		h := t.hdr[:]
		header.Ethernet(h).Encode(&eth)
		header.IPv4(h[header.EthernetMinimumSize:]).Encode(&ip)
		header.UDP(h[gsoUDPCsumStart:]).Encode(&udp)
		engine.SetL4Checksum(h, gsoUDPCsumStart, 6, s.pseudo(d4, udp.Length), true, &v)
		pieces := append(t.pieces[:0], h)
		for i := range msgs {
			pieces = append(pieces, msgs[i].Buf)
		}
		sent, err := s.eng.TransmitGather(v, pieces, &t.tmpl)
		clear(pieces) // do not keep the caller's buffers alive
		t.pieces = pieces[:0]
		if sent {
			s.st.gsoFramesOut.Add(1)
			return err
		}
	}
	// The super-frame goes alone, so an error is about it only (and the
	// caller may send its datagrams again).
	if err := t.flush(); err != nil {
		return err
	}
	b, err := t.bigBuf()
	if err != nil {
		return err
	}
	header.Ethernet(b).Encode(&eth)
	header.IPv4(b[header.EthernetMinimumSize:]).Encode(&ip)
	header.UDP(b[gsoUDPCsumStart:]).Encode(&udp)
	off := udpFrameHeaders
	for i := range msgs {
		off += copy(b[off:], msgs[i].Buf)
	}
	b = b[:off]
	engine.SetL4Checksum(b, gsoUDPCsumStart, 6, s.pseudo(d4, udp.Length), true, &v)
	t.push(b, v, ok, hop, now)
	s.st.gsoFramesOut.Add(1)
	return t.flush() // big is reused by the next super-frame
}

// WriteToUDPAddrPort sends b to addr. It does not allocate.
func (c *UDPConn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.raddr.IsValid() {
		return 0, ErrWriteToConnected
	}
	m := [1]Message{{Buf: b, Addr: addr}}
	if _, err := c.WriteBatch(m[:]); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteTo implements net.PacketConn.
func (c *UDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	var ap netip.AddrPort
	switch a := addr.(type) {
	case *net.UDPAddr:
		ap = a.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	default:
		return 0, c.opError("write", fmt.Errorf("%w: %v", ErrAddr, addr))
	}
	n, err := c.WriteToUDPAddrPort(b, ap)
	if err != nil {
		return 0, c.opError("write", err)
	}
	return n, nil
}

// Write implements net.Conn on a connected socket.
func (c *UDPConn) Write(b []byte) (int, error) {
	if !c.raddr.IsValid() {
		return 0, c.opError("write", ErrNotConnected)
	}
	m := [1]Message{{Buf: b}}
	if _, err := c.WriteBatch(m[:]); err != nil {
		return 0, c.opError("write", err)
	}
	return len(b), nil
}

func (c *UDPConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

func (s *Stack) pseudo(dst [4]byte, length uint16) uint16 {
	return checksum.PseudoHeader(s.addr, dst, header.ProtocolUDP, length)
}

// rxQueue is a socket's receive ring: a descriptor ring and a byte arena,
// filled by the single receive goroutine and drained by readers (who
// serialise on UDPConn.rmu). Head and tail are atomics, so the producer
// never takes a lock. The producer writes descriptors ahead of tail and
// publishes a whole receive batch with one store (publish); it works from
// cached copies of the readers' positions and reloads them only when the
// ring looks full or at the start of a batch, so the two sides share cache
// lines once per batch, not once per datagram. A reader about to sleep
// sets waiting, and the producer wakes it through a one-slot channel
// without allocating.
type rxQueue struct {
	descs  []rxDesc
	arena  []byte
	notify chan struct{}
	_      [64]byte
	// Written by readers.
	head atomic.Uint64 // next descriptor to read
	rpos atomic.Uint64 // arena position up to which readers released
	_    [64]byte
	// Written by the producer.
	tail    atomic.Uint64 // next descriptor readers may take
	waiting atomic.Bool   // written by both, rarely: only around sleeps
	_       [64]byte
	// lender is the link whose buffers lent descriptors point into (nil:
	// the link lends nothing, every datagram is in the arena). Set once,
	// when the socket opens. lentOut counts lent datagrams published and
	// not yet released, so readers walk descriptors to give holds back
	// only while there are some.
	lender  link.Lender
	lentOut atomic.Int64
	// The producer's own.
	ptail         uint64 // next descriptor to write (>= tail)
	wpos          uint64 // arena position (monotonic)
	woff          uint64 // wpos modulo the arena's size, kept without dividing
	headSeen      uint64 // head as last loaded
	rposSeen      uint64 // arena positions below it are free (rpos as last loaded, or more)
	touched       bool   // on the stack's list for this batch
	pendDatagrams uint64 // queued this batch: counters added at publish
	pendBytes     uint64
	pendLent      uint64 // of pendDatagrams, lent (pushLent)
}

// rxDesc is one queued datagram. It holds no pointer, so filling the ring
// costs the garbage collector nothing.
type rxDesc struct {
	off, n uint32
	end    uint64 // arena position after this datagram
	// loan, when not zero, says the datagram is not in the arena but in
	// the link's buffer loan (link.Lender), at off; it holds one hold of
	// it. end is then the arena position of the datagram before it.
	loan uint32
	src  [4]byte
	port uint16
}

// payload is where d's bytes are.
func (q *rxQueue) payload(d *rxDesc) []byte {
	end := d.off + d.n
	if d.loan != 0 {
		return q.lender.LoanBuf(d.loan)[d.off:end:end]
	}
	return q.arena[d.off:end:end]
}

// init sizes the ring: n descriptors, rounded up to a power of two so
// positions map to slots with a mask, and an arena of bytes.
func (q *rxQueue) init(n, bytes int) {
	q.descs = make([]rxDesc, 1<<bits.Len(uint(n-1)))
	q.arena = make([]byte, bytes)
	q.notify = make(chan struct{}, 1)
}

// refresh reloads the readers' positions at the start of a batch. When
// they have taken and released everything, the next datagram starts at
// the beginning of the arena again: a reader that keeps up then works in
// the same few cache-warm kilobytes instead of sweeping the whole arena.
func (q *rxQueue) refresh() {
	q.headSeen, q.rposSeen = q.head.Load(), max(q.rposSeen, q.rpos.Load())
	if q.headSeen == q.ptail && q.rposSeen == q.wpos && q.woff != 0 {
		// Everything before wpos is free, so is everything after it:
		// the freed floor moves with the jump (readers' rpos catches up
		// as they release what comes next).
		q.wpos += uint64(len(q.arena)) - q.woff
		q.woff = 0
		q.rposSeen = q.wpos
	}
}

// push copies the datagram p from src:port into the ring without
// publishing it; false means the ring is full.
func (q *rxQueue) push(p []byte, src [4]byte, port uint16) bool {
	t := q.ptail
	mask := uint64(len(q.descs) - 1)
	if t-q.headSeen > mask {
		if q.headSeen = q.head.Load(); t-q.headSeen > mask {
			return false
		}
	}
	size := uint64(len(q.arena))
	pos, off := q.wpos, q.woff
	if off+uint64(len(p)) > size { // wrap: skip the arena's tail
		pos += size - off
		off = 0
	}
	end := pos + uint64(len(p))
	if end-q.rposSeen > size {
		q.rposSeen = max(q.rposSeen, q.rpos.Load())
		if end-q.rposSeen > size {
			return false
		}
	}
	copy(q.arena[off:], p)
	d := &q.descs[t&mask]
	d.off, d.n, d.end, d.loan, d.src, d.port = uint32(off), uint32(len(p)), end, 0, src, port
	q.wpos, q.woff = end, off+uint64(len(p))
	q.ptail = t + 1
	q.pendDatagrams++
	q.pendBytes += uint64(len(p))
	return true
}

// pushRun queues, with one copy, the longest prefix of the run p of
// datagrams seg bytes each (the last may be shorter) that fits the ring
// without wrapping, and returns how many bytes of p it took (whole
// datagrams; 0 when not even one fits that way: the caller falls back to
// push, which wraps).
func (q *rxQueue) pushRun(p []byte, seg int, src [4]byte, port uint16) int {
	t := q.ptail
	mask := uint64(len(q.descs) - 1)
	want := uint64((len(p) + seg - 1) / seg)
	if t-q.headSeen+want > mask+1 {
		q.headSeen = q.head.Load()
	}
	k := min(want, mask+1-(t-q.headSeen))
	size := uint64(len(q.arena))
	off := q.woff
	room := size - off // contiguous, before the arena's end
	if free := size - (q.wpos - q.rposSeen); free < room {
		q.rposSeen = max(q.rposSeen, q.rpos.Load())
		room = min(room, size-(q.wpos-q.rposSeen))
	}
	k = min(k, room/uint64(seg))
	if k == 0 {
		return 0
	}
	bytes := min(uint64(len(p)), k*uint64(seg))
	copy(q.arena[off:off+bytes], p)
	pos := q.wpos
	for i := range k {
		d := &q.descs[(t+i)&mask]
		o := i * uint64(seg)
		n := min(uint64(seg), bytes-o)
		d.off, d.n, d.end, d.loan, d.src, d.port = uint32(off+o), uint32(n), pos+o+n, 0, src, port
	}
	q.wpos, q.woff = pos+bytes, off+bytes
	q.ptail = t + k
	q.pendDatagrams += k
	q.pendBytes += bytes
	return int(bytes)
}

// pushLent queues the run p of datagrams seg bytes each (the last may be
// shorter) without copying it: the descriptors point into the link's
// buffer loan, where p starts at off. It takes one hold of the buffer
// per datagram queued and returns the bytes of p it queued (whole
// datagrams; 0 when the ring has no descriptor free or the link cannot
// lend now: the caller copies).
func (q *rxQueue) pushLent(p []byte, seg int, loan, off uint32, src [4]byte, port uint16) int {
	t := q.ptail
	mask := uint64(len(q.descs) - 1)
	want := uint64((len(p) + seg - 1) / seg)
	if t-q.headSeen+want > mask+1 {
		q.headSeen = q.head.Load()
	}
	k := min(want, mask+1-(t-q.headSeen))
	if k == 0 || !q.lender.Hold(loan, int(k)) {
		return 0
	}
	bytes := min(uint64(len(p)), k*uint64(seg))
	for i := range k {
		d := &q.descs[(t+i)&mask]
		o := i * uint64(seg)
		n := min(uint64(seg), bytes-o)
		d.off, d.n, d.end, d.loan, d.src, d.port = off+uint32(o), uint32(n), q.wpos, loan, src, port
	}
	q.ptail = t + k
	q.pendDatagrams += k
	q.pendLent += k
	q.pendBytes += bytes
	return int(bytes)
}

// publish makes everything pushed so far visible to readers.
func (q *rxQueue) publish() {
	if q.pendLent > 0 { // before tail: a reader that sees them sees the count
		q.lentOut.Add(int64(q.pendLent))
	}
	if q.tail.Load() != q.ptail {
		q.tail.Store(q.ptail)
	}
}

// wake rouses a sleeping reader, if any, and reports whether it did.
func (q *rxQueue) wake() bool {
	if q.waiting.Load() && q.waiting.CompareAndSwap(true, false) {
		q.kick()
		return true
	}
	return false
}

func (q *rxQueue) kick() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// arm announces a reader about to sleep; false means data is already
// there and the reader must not sleep.
func (q *rxQueue) arm() bool {
	q.waiting.Store(true)
	if q.tail.Load() != q.head.Load() {
		q.waiting.Store(false)
		return false
	}
	return true
}

// peek fills views with up to len(views) queued datagrams, in place.
// Callers serialise and release what they peeked.
func (q *rxQueue) peek(views []View) int {
	h := q.head.Load()
	n := min(uint64(len(views)), q.tail.Load()-h)
	mask := uint64(len(q.descs) - 1)
	var loan uint32
	var lent []byte
	for i := range n {
		d := &q.descs[(h+i)&mask]
		end := d.off + d.n
		b := q.arena
		if d.loan != 0 {
			if d.loan != loan { // one lookup per run of datagrams in one buffer
				loan, lent = d.loan, q.lender.LoanBuf(d.loan)
			}
			b = lent
		}
		views[i] = View{Payload: b[d.off:end:end], Addr: netip.AddrPortFrom(netip.AddrFrom4(d.src), d.port)}
	}
	return int(n)
}

// release hands the first n queued datagrams' ring space back to the
// producer.
func (q *rxQueue) release(n int) {
	if n == 0 {
		return
	}
	h := q.head.Load()
	mask := uint64(len(q.descs) - 1)
	if q.lentOut.Load() > 0 {
		q.giveBack(h, uint64(n))
	}
	q.rpos.Store(q.descs[(h+uint64(n)-1)&mask].end)
	q.head.Store(h + uint64(n))
}

// giveBack returns the link holds of the lent datagrams among the n
// descriptors from h, one Release per run of datagrams in one buffer.
func (q *rxQueue) giveBack(h, n uint64) {
	mask := uint64(len(q.descs) - 1)
	var loan uint32
	run, total := 0, 0
	for i := range n {
		d := &q.descs[(h+i)&mask]
		if d.loan != loan && run > 0 {
			q.lender.Release(loan, run)
			total += run
			run = 0
		}
		loan = d.loan
		if loan != 0 {
			run++
		}
	}
	if run > 0 {
		q.lender.Release(loan, run)
		total += run
	}
	if total > 0 {
		q.lentOut.Add(-int64(total))
	}
}

// drain drops every published datagram (the socket is closed), giving
// lent buffers back to the link. Callers serialise with readers.
func (q *rxQueue) drain() {
	if n := q.tail.Load() - q.head.Load(); n > 0 {
		q.release(int(n))
	}
}

// pop copies up to len(msgs) datagrams out and releases them with one
// store of each reader position. Callers serialise.
func (q *rxQueue) pop(msgs []Message) int {
	h := q.head.Load()
	avail := q.tail.Load() - h
	n := min(uint64(len(msgs)), avail)
	if n == 0 {
		return 0
	}
	var end uint64
	mask := uint64(len(q.descs) - 1)
	for i := range n {
		d := &q.descs[(h+i)&mask]
		m := &msgs[i]
		if d.loan != 0 {
			m.N = copy(m.Buf, q.payload(d))
		} else {
			m.N = copy(m.Buf, q.arena[d.off:d.off+d.n])
		}
		m.Addr = netip.AddrPortFrom(netip.AddrFrom4(d.src), d.port)
		end = d.end
	}
	if q.lentOut.Load() > 0 {
		q.giveBack(h, n)
	}
	q.rpos.Store(end)
	q.head.Store(h + n)
	return int(n)
}
