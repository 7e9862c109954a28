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
	noGSO         atomic.Bool   // SetGSO(false): one frame per datagram
	pollBudget    atomic.Int64  // SetPollBudget; starts at Config.PollBudget
	linkPoll      time.Duration // UDPOptions.LinkPoll, armed from open to Close
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
	// bytes, descriptors: a descriptor holds a datagram, or a GSO
	// super-frame's run of them), as SO_RCVBUF sizes a kernel socket's: a socket
	// that must ride out long bursts (a benchmark's receiver beside a
	// kernel socket with a 64 MiB buffer) asks for more than the default.
	// Pages of the ring a reader that keeps up never needs are never
	// touched.
	QueueBytes, QueueLen int
	// LinkPoll, if positive, makes the stack's receive goroutine, while
	// this socket is open and frames keep coming, poll the link for up to
	// LinkPoll after each batch before it sleeps (link.BusyPoller; a link
	// that cannot ignores it): a bulk receiver, or a sender that waits for
	// its receiver's credits, then pays no sleep and wake-up per batch.
	// Adaptive: sparse traffic never makes it spin, and it stops polling
	// LinkPoll after the last frame. With several such sockets the largest
	// budget applies.
	LinkPoll time.Duration
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
	c := &UDPConn{s: s, raddr: raddr, done: make(chan struct{}), linkPoll: max(o.LinkPoll, 0)}
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
	if c.linkPoll > 0 {
		s.linkPoll(c.linkPoll, true)
	}
	if s.closed() { // raced with Stack.Close
		c.Close()
		return nil, ErrClosed
	}
	return c, nil
}

// ReceiveBuffer is the socket's receive queue: payload bytes and datagrams
// it holds at least before dropping (runs of a GSO super-frame's datagrams
// take one descriptor each, so it may hold more). Protocols size their
// windows from it.
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
		if c.linkPoll > 0 {
			c.s.linkPoll(c.linkPoll, false)
		}
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

// Run is a run of received datagrams from one sender lying end to end in
// Payload, Seg bytes each but the last (which may be shorter), as a GSO
// super-frame carried them and as UDP_GRO hands them to a kernel socket's
// reader; a datagram that came alone is a run of one (Seg is then its
// length). Payload aliases the socket's ring or the link's buffer, like a
// View's. A run of one empty datagram has an empty Payload.
type Run struct {
	Payload []byte
	Seg     int
	Addr    netip.AddrPort
}

// Datagrams is how many datagrams r holds.
func (r *Run) Datagrams() int {
	if len(r.Payload) == 0 || r.Seg <= 0 {
		return 1
	}
	return (len(r.Payload) + r.Seg - 1) / r.Seg
}

// ReadRuns is ReadViews a run at a time: it blocks like ReadBatch, then
// fills runs with up to len(runs) queued runs without copying them and
// returns how many runs and how many datagrams they hold. The stack keeps
// no descriptor per datagram of a super-frame and the reader walks the
// run itself (Payload[i*Seg:], up to Seg bytes), so a GSO stream costs
// the receiving side a descriptor per super-frame, not per datagram. The
// runs stay valid, and other readers wait, until Release, which must
// follow every successful ReadRuns.
func (c *UDPConn) ReadRuns(runs []Run) (n, datagrams int, err error) {
	if len(runs) == 0 {
		return 0, 0, nil
	}
	c.rmu.Lock()
	if err := c.waitQueued(); err != nil {
		c.unlockRead()
		return 0, 0, err
	}
	n, datagrams = c.q.peekRuns(runs)
	c.lent = datagrams
	c.lending.Store(true)
	return n, datagrams, nil
}

// Release gives back the views of the last ReadViews, or the runs of the
// last ReadRuns. Their payloads must not be used afterwards. Without
// views or runs out it does nothing.
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
			limit := c.s.gsoRun(seg)
			for j < len(msgs) && j-i < limit && len(msgs[j].Buf) == seg &&
				(connected || msgs[j].Addr == dst) {
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

// gsoLinearMax is the most of a GSO super-frame the virtio-net header's
// hdr_len asks the kernel to put in the skb's linear head: 64 KiB less
// the skb's shared info and headroom, so that the head is one order-4
// allocation (44 x 1472 B fit; the rest of a larger frame goes to page
// fragments).
const gsoLinearMax = 65024

// gsoHdrLen is the hdr_len of a GSO super-frame of n bytes: the whole
// frame, up to gsoLinearMax, rather than its headers. A packet socket's
// packet_snd puts hdr_len bytes in the skb's head and the rest in page
// fragments, and one contiguous head is much cheaper to fill and to read
// than the fragment pages: at 1472 B, 3 rounds alternating on a quiet
// machine, sender CPU per datagram 478/493/426 -> 320/306/292 ns and the
// receiver's 477/500/401 -> 378/384/353 ns (its copy out of the head is
// cheaper too). The kernel uses hdr_len for nothing else on transmit,
// and a receiver's header carries its own.
func gsoHdrLen(n int) uint16 { return uint16(min(n, gsoLinearMax)) }

// gsoSlabMax is the largest super-frame whose skb head the kernel takes
// from the kmalloc-8k slab: 8 KiB less the head's shared info (320 B) and
// the veth's 16 B of headroom. A head just above it is a page-allocator
// allocation (order 2), freed on the receiver's CPU and so cold when the
// sender's copy fills it.
const gsoSlabMax = 8192 - 320 - 16

// gsoRun is the most datagrams of seg bytes (seg > 0) one UDP super-frame
// carries: the kernel's limit (Stack.gsoSegs) within one IP packet, less
// a few when that frame would just miss the slab (gsoSlabMax): 122 rather
// than 128 at 64 B, whose 8,234 B frame took an order-2 page; and no more
// than the linear head holds (gsoLinearMax): 126 rather than 127 at 512 B,
// whose last 42 B took a page fragment of their own (the bench at 64 and
// 512 B, docs/ARCHITECTURE.md).
func (s *Stack) gsoRun(seg int) int {
	n := min(int(s.gsoSegs.Load()), header.UDPMaximumPayload/seg)
	fit := func(limit int) int { return (limit - udpFrameHeaders) / seg }
	if f := udpFrameHeaders + n*seg; f > gsoSlabMax && f-gsoSlabMax <= gsoSlabMax/16 && fit(gsoSlabMax) >= 2 {
		n = fit(gsoSlabMax) // just over the slab: a few fewer keep it there
	}
	return min(n, fit(gsoLinearMax))
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
	v := link.VNetHdr{GSOType: link.GSOUDPL4, GSOSize: uint16(seg), HdrLen: gsoHdrLen(udpFrameHeaders + total)}
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
// serialise on UDPConn.rmu). A descriptor is a run of datagrams from one
// sender lying end to end, as a GSO super-frame carries them (a lone
// datagram is a run of one): the producer writes one descriptor per
// super-frame, not one per datagram, and a reader that takes runs
// (ReadRuns) gets them whole, as UDP_GRO hands a kernel socket's reader
// a super-frame. Head and tail are atomics, so the producer never takes a
// lock. The producer writes descriptors ahead of tail and publishes a
// whole receive batch with one store (publish); it works from cached
// copies of the readers' positions and reloads them only when the ring
// looks full or at the start of a batch, so the two sides share cache
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
	// part is how many datagrams of the descriptor at head readers have
	// taken and released already (readers only).
	part uint32
	_    [64]byte
	// Written by the producer.
	tail    atomic.Uint64 // next descriptor readers may take
	waiting atomic.Bool   // written by both, rarely: only around sleeps
	_       [64]byte
	// lender is the link whose buffers lent descriptors point into (nil:
	// the link lends nothing, every datagram is in the arena). Set once,
	// when the socket opens. lentOut counts lent descriptors published
	// and not yet released, so readers walk descriptors to give holds
	// back only while there are some.
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
	pendLent      uint64 // descriptors queued this batch that are lent (pushLent)
}

// rxDesc is one queued run of cnt datagrams, n bytes in all, seg bytes
// each but the last. It holds no pointer, so filling the ring costs the
// garbage collector nothing.
type rxDesc struct {
	off, n   uint32
	seg, cnt uint32
	end      uint64 // arena position after this run
	// loan, when not zero, says the run is not in the arena but in the
	// link's buffer loan (link.Lender), at off; it holds one hold of it.
	// end is then the arena position of the run before it.
	loan uint32
	src  [4]byte
	port uint16
}

// datagram is where datagram i of d is, as offsets into d's buffer.
func (d *rxDesc) datagram(i uint32) (from, to uint32) {
	from = d.off + i*d.seg
	return from, min(from+d.seg, d.off+d.n)
}

// buf is the buffer d's bytes are in: the arena or the link's loan.
func (q *rxQueue) buf(d *rxDesc) []byte {
	if d.loan != 0 {
		return q.lender.LoanBuf(d.loan)
	}
	return q.arena
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

// descFree reports whether a descriptor is free for the producer.
func (q *rxQueue) descFree() bool {
	t, mask := q.ptail, uint64(len(q.descs)-1)
	if t-q.headSeen > mask {
		if q.headSeen = q.head.Load(); t-q.headSeen > mask {
			return false
		}
	}
	return true
}

// push copies the datagram p from src:port into the ring without
// publishing it; false means the ring is full.
func (q *rxQueue) push(p []byte, src [4]byte, port uint16) bool {
	if !q.descFree() {
		return false
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
	t := q.ptail
	d := &q.descs[t&uint64(len(q.descs)-1)]
	*d = rxDesc{off: uint32(off), n: uint32(len(p)), seg: uint32(len(p)), cnt: 1, end: end, src: src, port: port}
	q.wpos, q.woff = end, off+uint64(len(p))
	q.ptail = t + 1
	q.pendDatagrams++
	q.pendBytes += uint64(len(p))
	return true
}

// pushRun queues, with one copy and one descriptor, the longest prefix of
// the run p of datagrams seg bytes each (the last may be shorter) that
// fits the ring without wrapping, and returns how many bytes of p it took
// (whole datagrams; 0 when not even one fits that way: the caller falls
// back to push, which wraps).
func (q *rxQueue) pushRun(p []byte, seg int, src [4]byte, port uint16) int {
	if len(p) == 0 || seg <= 0 || !q.descFree() {
		return 0
	}
	want := uint64((len(p) + seg - 1) / seg)
	size := uint64(len(q.arena))
	off := q.woff
	room := size - off // contiguous, before the arena's end
	if free := size - (q.wpos - q.rposSeen); free < room {
		q.rposSeen = max(q.rposSeen, q.rpos.Load())
		room = min(room, size-(q.wpos-q.rposSeen))
	}
	k := min(want, room/uint64(seg))
	bytes := k * uint64(seg)
	if k < want && room >= uint64(len(p)) {
		k, bytes = want, uint64(len(p)) // the short last datagram fits too
	}
	if k == 0 {
		return 0
	}
	bytes = min(bytes, uint64(len(p)))
	copy(q.arena[off:off+bytes], p)
	pos := q.wpos
	t := q.ptail
	d := &q.descs[t&uint64(len(q.descs)-1)]
	*d = rxDesc{off: uint32(off), n: uint32(bytes), seg: uint32(seg), cnt: uint32(k), end: pos + bytes, src: src, port: port}
	q.wpos, q.woff = pos+bytes, off+bytes
	q.ptail = t + 1
	q.pendDatagrams += k
	q.pendBytes += bytes
	return int(bytes)
}

// pushLent queues the run p of datagrams seg bytes each (the last may be
// shorter) without copying it: one descriptor points into the link's
// buffer loan, where p starts at off, and takes one hold of the buffer.
// It returns the bytes of p it queued: all of them, or 0 when the ring
// has no descriptor free or the link cannot lend now (the caller copies).
func (q *rxQueue) pushLent(p []byte, seg int, loan, off uint32, src [4]byte, port uint16) int {
	if len(p) == 0 || seg <= 0 || !q.descFree() || !q.lender.Hold(loan, 1) {
		return 0
	}
	k := uint64((len(p) + seg - 1) / seg)
	t := q.ptail
	d := &q.descs[t&uint64(len(q.descs)-1)]
	*d = rxDesc{off: off, n: uint32(len(p)), seg: uint32(seg), cnt: uint32(k), end: q.wpos, loan: loan, src: src, port: port}
	q.ptail = t + 1
	q.pendDatagrams += k
	q.pendLent++
	q.pendBytes += uint64(len(p))
	return len(p)
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

// peek fills views with up to len(views) queued datagrams, in place, and
// returns how many. Callers serialise and release what they peeked.
func (q *rxQueue) peek(views []View) int {
	h, t := q.head.Load(), q.tail.Load()
	mask := uint64(len(q.descs) - 1)
	part := q.part
	n := 0
	for ; h != t && n < len(views); h++ {
		d := &q.descs[h&mask]
		b := q.buf(d) // one lookup per run
		addr := netip.AddrPortFrom(netip.AddrFrom4(d.src), d.port)
		for i := part; i < d.cnt && n < len(views); i++ {
			from, to := d.datagram(i)
			views[n] = View{Payload: b[from:to:to], Addr: addr}
			n++
		}
		part = 0
	}
	return n
}

// peekRuns fills runs with up to len(runs) queued runs, in place (the
// first may be the rest of a run readers took part of), and returns how
// many runs and datagrams. Callers serialise and release the datagrams.
func (q *rxQueue) peekRuns(runs []Run) (nr, datagrams int) {
	h, t := q.head.Load(), q.tail.Load()
	mask := uint64(len(q.descs) - 1)
	part := q.part
	for ; h != t && nr < len(runs); h++ {
		d := &q.descs[h&mask]
		from, _ := d.datagram(part)
		end := d.off + d.n
		runs[nr] = Run{Payload: q.buf(d)[from:end:end], Seg: int(d.seg), Addr: netip.AddrPortFrom(netip.AddrFrom4(d.src), d.port)}
		datagrams += int(d.cnt - part)
		nr++
		part = 0
	}
	return nr, datagrams
}

// release hands the first n queued datagrams' ring space back to the
// producer: the descriptors they finish, and link holds of lent ones.
func (q *rxQueue) release(n int) {
	if n == 0 {
		return
	}
	h := q.head.Load()
	mask := uint64(len(q.descs) - 1)
	left, part := uint32(n), q.part
	done := uint64(0) // descriptors finished
	var end uint64
	for left > 0 {
		d := &q.descs[(h+done)&mask]
		if rest := d.cnt - part; left < rest {
			part += left
			break
		} else {
			left -= rest
		}
		end = d.end
		done++
		part = 0
	}
	q.part = part
	if done == 0 {
		return
	}
	if q.lentOut.Load() > 0 {
		q.giveBack(h, done)
	}
	q.rpos.Store(end)
	q.head.Store(h + done)
}

// giveBack returns the link holds of the lent descriptors among the n
// from h, one Release per run of descriptors in one buffer.
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
	h, t := q.head.Load(), q.tail.Load()
	if h == t {
		return
	}
	mask := uint64(len(q.descs) - 1)
	if q.lentOut.Load() > 0 {
		q.giveBack(h, t-h)
	}
	q.part = 0
	q.rpos.Store(q.descs[(t-1)&mask].end)
	q.head.Store(t)
}

// pop copies up to len(msgs) datagrams out and releases them with one
// store of each reader position. Callers serialise.
func (q *rxQueue) pop(msgs []Message) int {
	h, t := q.head.Load(), q.tail.Load()
	mask := uint64(len(q.descs) - 1)
	part := q.part
	n := 0
	for p := h; p != t && n < len(msgs); p++ {
		d := &q.descs[p&mask]
		b := q.buf(d)
		addr := netip.AddrPortFrom(netip.AddrFrom4(d.src), d.port)
		for i := part; i < d.cnt && n < len(msgs); i++ {
			from, to := d.datagram(i)
			m := &msgs[n]
			m.N = copy(m.Buf, b[from:to])
			m.Addr = addr
			n++
		}
		part = 0
	}
	q.release(n)
	return n
}
