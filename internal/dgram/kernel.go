package dgram

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack"
)

// KernelMode says how a kernel socket moves a batch.
type KernelMode int

const (
	// KernelBest is the kernel at its best: a run of equal-sized
	// datagrams to one peer leaves as one UDP_SEGMENT super-datagram
	// (the kernel builds one GSO frame that crosses veths and bridges
	// unsegmented), the receiving socket has UDP_GRO on and gets such a
	// frame in one buffer, and every call is batched (sendmmsg/recvmmsg).
	KernelBest KernelMode = iota
	// KernelPlain is one frame per datagram: sendmmsg and recvmmsg batches
	// without UDP_SEGMENT or UDP_GRO (netstation's kernel baseline before
	// it used the offloads; kept as a labelled extra).
	KernelPlain
)

// String is the mode's label in bench output ("kernel", "kernel-plain").
func (m KernelMode) String() string {
	if m == KernelPlain {
		return "kernel-plain"
	}
	return "kernel"
}

// Limits of UDP_SEGMENT (linux/udp.h, net/ipv4/udp.c).
const (
	// MaxGSOSegments is UDP_MAX_SEGMENTS, the most datagrams one
	// UDP_SEGMENT send carries: 128 in current kernels. Older kernels
	// allow 64 and refuse more with EINVAL; a socket then keeps to
	// LegacyGSOSegments from its first refusal on.
	MaxGSOSegments = 128
	// LegacyGSOSegments is UDP_MAX_SEGMENTS of older kernels.
	LegacyGSOSegments = 64
	// maxGSOBytes is the most payload one send may carry over IPv4:
	// 65,535 less the IPv4 and UDP headers (EMSGSIZE beyond).
	maxGSOBytes = 65507
	// groBufSize holds the largest super-frame UDP_GRO hands over.
	groBufSize = 65535
	// groBuffers is how many super-frames one recvmmsg may take in.
	groBuffers = 16
	// oobSize holds the cmsgs a receive may carry: UDP_GRO (int) and
	// SO_RXQ_OVFL (uint32).
	oobSize = 64
)

var (
	cmsgHdrLen   = unix.CmsgLen(0)
	segCmsgSpace = unix.CmsgSpace(2)
)

// KernelStats count what a kernel socket's batches became: they prove
// (or disprove) that the offloads were used.
type KernelStats struct {
	Mode              KernelMode
	SendCalls         uint64 // sendmmsg calls
	SendMessages      uint64 // messages those carried (a super-datagram is one)
	GSOSends          uint64 // messages with UDP_SEGMENT, each several datagrams
	DatagramsSent     uint64
	RecvCalls         uint64 // recvmmsg calls that returned data
	RecvBuffers       uint64 // buffers received (a GRO super-frame is one)
	GROBuffers        uint64 // buffers that held several datagrams (UDP_GRO cmsg)
	DatagramsReceived uint64
	// RxQueueDrops is the socket's own drop counter (SO_RXQ_OVFL: the
	// receive buffer was full), as of the last datagram received.
	RxQueueDrops uint64
	// GRO and GSO report whether the socket accepted UDP_GRO and whether
	// UDP_SEGMENT is still in use (it is dropped after the kernel refused
	// it, e.g. for datagrams above the path MTU).
	GRO, GSO bool
}

// GSOBatch is how many dgramSize datagrams a sender should hand a
// KernelBest socket per WriteBatch so that every super-datagram is full:
// the largest multiple of the datagrams one UDP_SEGMENT send carries
// that is at least 64 (2 x 44 at 1472 B; a batch of 64 would go as 44 +
// 20, and each super-frame costs about as much as a full one to forward).
func GSOBatch(dgramSize int) int {
	if dgramSize <= 0 {
		return 64
	}
	segs := min(MaxGSOSegments, maxGSOBytes/dgramSize)
	if segs <= 1 {
		return 64
	}
	return segs * ((64 + segs - 1) / segs)
}

// Kernel returns a Conn on a kernel UDP socket at its best (KernelBest).
// Closing the Conn closes c.
func Kernel(c *net.UDPConn) Conn { return KernelWith(c, KernelBest) }

// KernelPlainConn returns a Conn on a kernel UDP socket that sends every
// datagram as a frame of its own (KernelPlain).
func KernelPlainConn(c *net.UDPConn) Conn { return KernelWith(c, KernelPlain) }

// KernelWith returns a Conn on a kernel UDP socket in the given mode.
// It turns on SO_RXQ_OVFL (so receive-buffer overflow is counted) and,
// for KernelBest, UDP_GRO; a kernel without UDP_GRO leaves the Conn
// reading one datagram per buffer (Stats says so).
func KernelWith(c *net.UDPConn, mode KernelMode) Conn {
	k := &kernelConn{c: c, pc: ipv4.NewPacketConn(c), mode: mode}
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
			if mode == KernelBest {
				k.gro = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
			}
		})
	}
	if mode == KernelBest {
		k.gsoMax.Store(maxGSOBytes)
	}
	k.segMax.Store(MaxGSOSegments)
	return k
}

// Stats returns a kernel Conn's counters; ok is false for other Conns.
func Stats(c Conn) (s KernelStats, ok bool) {
	k, ok := c.(*kernelConn)
	if !ok {
		return KernelStats{}, false
	}
	return KernelStats{
		Mode: k.mode, SendCalls: k.st.sendCalls.Load(), SendMessages: k.st.sendMsgs.Load(),
		GSOSends: k.st.gsoSends.Load(), DatagramsSent: k.st.dgramsSent.Load(),
		RecvCalls: k.st.recvCalls.Load(), RecvBuffers: k.st.recvBufs.Load(), GROBuffers: k.st.groBufs.Load(),
		DatagramsReceived: k.st.dgramsRecv.Load(), RxQueueDrops: k.st.rxqDrops.Load(),
		GRO: k.gro, GSO: k.gsoMax.Load() > 0,
	}, true
}

// ModeOf reports a kernel Conn's mode; ok is false for other Conns.
func ModeOf(c Conn) (KernelMode, bool) {
	k, ok := c.(*kernelConn)
	if !ok {
		return 0, false
	}
	return k.mode, true
}

// kernelConn adapts a kernel socket. Its per-call send scratch comes from
// a pool so parallel streams sharing one socket do not serialise on a
// lock; reads take rmu, since a GRO super-frame split across two calls
// leaves datagrams pending between them.
type kernelConn struct {
	c    *net.UDPConn
	pc   *ipv4.PacketConn
	mode KernelMode
	gro  bool
	// gsoMax is the largest datagram UDP_SEGMENT is tried with; lowered
	// when the kernel refuses a size (EMSGSIZE: above the path MTU), 0 when
	// the socket cannot segment at all (EIO: no checksum offload).
	gsoMax atomic.Int64
	// segMax is the most datagrams per UDP_SEGMENT send: MaxGSOSegments,
	// or LegacyGSOSegments once the kernel refused more.
	segMax atomic.Int64
	pool   sync.Pool // *sendScratch

	// wmu is held from BeginRun to EndRun; run is the run being written.
	wmu sync.Mutex
	run runState

	rmu sync.Mutex
	rd  *recvState
	st  struct{ sendCalls, sendMsgs, gsoSends, dgramsSent, recvCalls, recvBufs, groBufs, dgramsRecv, rxqDrops atomic.Uint64 }
}

type sendScratch struct {
	msgs   []ipv4.Message
	iov    [][]byte
	oob    []byte
	counts []int // datagrams in each message
	dst    netip.AddrPort
	dstUA  *net.UDPAddr
}

// runState is a run written in place (BeginRun, EndRun): its datagrams
// end to end in buf, sent as one UDP_SEGMENT message.
type runState struct {
	buf        []byte
	seg, count int
	open       bool
	dst        netip.AddrPort
	dstUA      *net.UDPAddr
	msg        [1]ipv4.Message
	iov        [1][]byte
	oob        []byte
	each       []Message // the run's datagrams one by one, if the kernel refuses to segment
}

// recvState is the reader's scratch: super-frame buffers (GRO) or plain
// message headers, and what is left of a split super-frame.
type recvState struct {
	msgs []ipv4.Message
	bufs [][]byte // GRO: groBuffers x groBufSize
	iov  [][]byte
	oob  []byte
	segs []int // GRO: each super-frame's segment size
	// pending super-frames not yet handed out: msgs[pi:pn], the current
	// one from offset poff.
	pi, pn int
	poff   int
}

func (k *kernelConn) sendScratch(n int) *sendScratch {
	s, _ := k.pool.Get().(*sendScratch)
	if s == nil {
		s = &sendScratch{}
	}
	if cap(s.msgs) < n {
		s.msgs = make([]ipv4.Message, n)
		s.iov = make([][]byte, n)
		s.oob = make([]byte, n*segCmsgSpace)
		s.counts = make([]int, n)
	}
	return s
}

// WriteBatch sends msgs. In KernelBest mode each run of consecutive
// datagrams to one destination whose sizes are equal (the run's last may
// be shorter), at most MaxGSOSegments of them (LegacyGSOSegments on a
// kernel that refuses more) and 65,507 bytes in all,
// goes as one message whose iovecs are the datagrams (no copy) and whose
// UDP_SEGMENT cmsg carries the size; single datagrams go as they are.
func (k *kernelConn) WriteBatch(msgs []Message) (int, error) {
	sent := 0
	for {
		n, retry, err := k.writeOnce(msgs[sent:])
		sent += n
		if !retry {
			return sent, err
		}
		// The kernel refused to segment this size: the rest goes again,
		// one frame per datagram for this size from now on.
	}
}

func (k *kernelConn) writeOnce(msgs []Message) (sent int, retry bool, err error) {
	if len(msgs) == 0 {
		return 0, false, nil
	}
	s := k.sendScratch(len(msgs))
	defer k.pool.Put(s)
	gsoMax, segMax := int(k.gsoMax.Load()), int(k.segMax.Load())
	nm := 0
	for i := 0; i < len(msgs); {
		m := &msgs[i]
		if m.Addr != s.dst || s.dstUA == nil { // cache: one peer per stream
			s.dst = m.Addr
			s.dstUA = net.UDPAddrFromAddrPort(s.dst)
		}
		size := len(m.Buf)
		j := i + 1
		if size > 0 && size <= gsoMax {
			total := size
			for j < len(msgs) && j-i < segMax && msgs[j].Addr == m.Addr {
				l := len(msgs[j].Buf)
				if l > size || l == 0 || total+l > maxGSOBytes {
					break
				}
				total += l
				j++
				if l < size { // a shorter datagram ends a run
					break
				}
			}
		}
		om := &s.msgs[nm]
		v := i // s.iov[i:v] are this message's iovecs
		for x := i; x < j; x++ {
			if b := msgs[x].Buf; v > i && adjacent(s.iov[v-1], b) {
				s.iov[v-1] = s.iov[v-1][:len(s.iov[v-1])+len(b)]
			} else {
				s.iov[v] = b
				v++
			}
		}
		om.Buffers = s.iov[i:v:v]
		om.Addr = s.dstUA
		om.OOB = nil
		if j-i > 1 {
			b := s.oob[nm*segCmsgSpace : (nm+1)*segCmsgSpace]
			putSegmentCmsg(b, uint16(size))
			om.OOB = b
		}
		s.counts[nm] = j - i
		nm++
		i = j
	}
	sentMsgs := 0
	for sentMsgs < nm {
		var n int
		n, err = k.pc.WriteBatch(s.msgs[sentMsgs:nm], 0)
		n = max(n, 0)
		k.st.sendCalls.Add(1)
		for x := sentMsgs; x < sentMsgs+n; x++ {
			sent += s.counts[x]
			k.st.sendMsgs.Add(1)
			if s.counts[x] > 1 {
				k.st.gsoSends.Add(1)
			}
		}
		sentMsgs += n
		if err != nil && n == 0 && s.counts[sentMsgs] > 1 && k.refuseGSO(err, len(msgs[sent].Buf), s.counts[sentMsgs]) {
			retry = true
			err = nil
			break
		}
		if err != nil || n == 0 {
			break
		}
	}
	k.st.dgramsSent.Add(uint64(sent))
	for i := 0; i < sent; i++ {
		msgs[i].N = len(msgs[i].Buf)
	}
	clear(s.iov[:len(msgs)])
	for i := range s.msgs[:nm] {
		s.msgs[i].Buffers, s.msgs[i].OOB = nil, nil
	}
	return sent, retry, err
}

// adjacent reports whether b starts where a ends inside a's backing
// array, so a[:len(a)+len(b)] is both: one iovec instead of two.
func adjacent(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && cap(a)-len(a) >= len(b) &&
		unsafe.Add(unsafe.Pointer(unsafe.SliceData(a)), len(a)) == unsafe.Pointer(unsafe.SliceData(b))
}

// refuseGSO lowers segMax or gsoMax after the kernel refused a segmented
// send of segs size-byte datagrams and reports whether the send should be
// retried.
func (k *kernelConn) refuseGSO(err error, size, segs int) bool {
	switch {
	case errors.Is(err, unix.EINVAL) && segs > LegacyGSOSegments:
		// More segments than an older kernel's UDP_MAX_SEGMENTS: keep
		// to its limit first (a size refusal shows on the next try).
		k.segMax.Store(LegacyGSOSegments)
		return true
	case errors.Is(err, unix.EMSGSIZE), errors.Is(err, unix.EINVAL):
		// gso_size above the path MTU (EINVAL before Linux 6.x, EMSGSIZE after)
		for {
			cur := k.gsoMax.Load()
			if int64(size) > cur {
				return true
			}
			if k.gsoMax.CompareAndSwap(cur, int64(size-1)) {
				return true
			}
		}
	case errors.Is(err, unix.EIO): // no checksum offload on the route
		k.gsoMax.Store(0)
		return true
	}
	return false
}

func putSegmentCmsg(b []byte, size uint16) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(b[cmsgHdrLen:], size)
}

// parseRecvCmsgs returns the UDP_GRO segment size (0: none) and the
// SO_RXQ_OVFL drop count (ok false: none) in oob.
func parseRecvCmsgs(oob []byte) (seg int, drops uint32, ok bool) {
	for len(oob) >= cmsgHdrLen {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < cmsgHdrLen || l > len(oob) {
			return
		}
		data := oob[cmsgHdrLen:l]
		switch {
		case h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(data) >= 4:
			seg = int(binary.NativeEndian.Uint32(data))
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			drops, ok = binary.NativeEndian.Uint32(data), true
		}
		sp := unix.CmsgSpace(l - cmsgHdrLen)
		if sp > len(oob) {
			return
		}
		oob = oob[sp:]
	}
	return
}

func (k *kernelConn) recvState(n int) *recvState {
	if k.rd == nil {
		k.rd = &recvState{}
	}
	r := k.rd
	if k.gro && r.bufs == nil {
		r.bufs = make([][]byte, groBuffers)
		for i := range r.bufs {
			r.bufs[i] = make([]byte, groBufSize)
		}
	}
	want := n
	if k.gro {
		want = groBuffers
	}
	if len(r.msgs) < want {
		r.msgs = make([]ipv4.Message, want)
		r.iov = make([][]byte, want)
		r.oob = make([]byte, want*oobSize)
		r.segs = make([]int, want)
		for i := range r.msgs {
			r.msgs[i].Buffers = r.iov[i : i+1 : i+1]
			r.msgs[i].OOB = r.oob[i*oobSize : (i+1)*oobSize]
		}
	}
	return r
}

func unmapped(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

func (k *kernelConn) noteDrops(oob []byte) int {
	seg, drops, ok := parseRecvCmsgs(oob)
	if ok {
		for {
			cur := k.st.rxqDrops.Load()
			if uint64(drops) <= cur || k.st.rxqDrops.CompareAndSwap(cur, uint64(drops)) {
				break
			}
		}
	}
	return seg
}

// ReadBatch receives up to len(msgs) datagrams. With UDP_GRO it reads
// super-frames into its own buffers and copies each segment into a
// caller's message (a segment longer than the caller's buffer is
// truncated, as the kernel truncates); segments that do not fit in msgs
// wait for the next call.
func (k *kernelConn) ReadBatch(msgs []Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	k.rmu.Lock()
	defer k.rmu.Unlock()
	r := k.recvState(len(msgs))
	if !k.gro {
		for i := range msgs {
			r.iov[i] = msgs[i].Buf
			r.msgs[i].OOB = r.oob[i*oobSize : (i+1)*oobSize]
		}
		n, err := k.pc.ReadBatch(r.msgs[:len(msgs)], 0)
		n = max(n, 0) // x/net reports -1 with some errors
		if n > 0 {
			k.st.recvCalls.Add(1)
			k.st.recvBufs.Add(uint64(n))
			k.st.dgramsRecv.Add(uint64(n))
		}
		for i := 0; i < n; i++ {
			msgs[i].N = r.msgs[i].N
			msgs[i].Addr = unmapped(r.msgs[i].Addr)
			k.noteDrops(r.msgs[i].OOB[:r.msgs[i].NN])
		}
		clear(r.iov[:len(msgs)])
		return n, err
	}
	if r.pi == r.pn {
		if err := k.receiveGRO(r, len(r.msgs)); err != nil {
			return 0, err
		}
	}
	got := 0
	for got < len(msgs) && r.pi < r.pn {
		m := &r.msgs[r.pi]
		src := r.bufs[r.pi][:m.N]
		addr := unmapped(m.Addr)
		if m.N == 0 { // an empty datagram
			msgs[got].N, msgs[got].Addr = 0, addr
			got++
		}
		for got < len(msgs) && r.poff < len(src) {
			seg := src[r.poff:min(r.poff+r.segs[r.pi], len(src))]
			msgs[got].N = copy(msgs[got].Buf, seg)
			msgs[got].Addr = addr
			got++
			r.poff += len(seg)
		}
		if r.poff >= len(src) {
			r.pi++
			r.poff = 0
		}
	}
	k.st.dgramsRecv.Add(uint64(got))
	return got, nil
}

// readRuns lends what UDP_GRO received in place, a super-frame (or a
// lone datagram) per run: the kernel baseline's receiver reads its
// buffers as the user-level one reads its ring (stack.UDPConn.ReadRuns),
// with no copy per datagram. It blocks like ReadBatch. Super-frames that
// ReadBatch left pending come first. The runs stay valid, and other
// readers wait, until Release; on an error nothing is lent and Release
// must not be called.
func (k *kernelConn) readRuns(runs []stack.Run) (n, datagrams int, err error) {
	if len(runs) == 0 {
		return 0, 0, nil
	}
	k.rmu.Lock()
	r := k.recvState(len(runs))
	if r.pi == r.pn {
		if err := k.receiveGRO(r, min(len(runs), len(r.msgs))); err != nil {
			k.rmu.Unlock()
			return 0, 0, err
		}
	}
	for n < len(runs) && r.pi < r.pn {
		m := &r.msgs[r.pi]
		run := stack.Run{Payload: r.bufs[r.pi][r.poff:m.N], Seg: r.segs[r.pi], Addr: unmapped(m.Addr)}
		runs[n] = run
		datagrams += run.Datagrams()
		n++
		r.pi++
		r.poff = 0
	}
	k.st.dgramsRecv.Add(uint64(datagrams))
	return n, datagrams, nil
}

// receiveGRO fills r's super-frame buffers with one recvmmsg of up to
// limit of them and records each one's segment size (its length for a lone
// datagram); then r.msgs[:r.pn] are pending from r.pi = 0. It waits like
// ReadBatch and returns its error when nothing came (io.ErrNoProgress
// for nothing and no error).
func (k *kernelConn) receiveGRO(r *recvState, limit int) error {
	for i := range r.msgs {
		r.iov[i] = r.bufs[i]
		r.msgs[i].OOB = r.oob[i*oobSize : (i+1)*oobSize]
	}
	n, err := k.pc.ReadBatch(r.msgs[:limit], 0)
	if n <= 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	k.st.recvCalls.Add(1)
	k.st.recvBufs.Add(uint64(n))
	r.pi, r.pn, r.poff = 0, n, 0
	for i := 0; i < n; i++ {
		m := &r.msgs[i]
		seg := k.noteDrops(m.OOB[:m.NN])
		if seg <= 0 || seg >= m.N {
			seg = m.N
		} else {
			k.st.groBufs.Add(1)
		}
		r.segs[i] = seg
	}
	return nil
}

// MaxRun is the most datagrams of seg bytes a run may hold (BeginRun): a
// UDP_SEGMENT message's, or 1 when the socket does not segment them (then
// a caller writes them with WriteBatch). The kernel baseline's sender
// writes runs as the user-level stack's does (stack.UDPConn.BeginRun),
// so neither pays work per datagram beside its own headers.
func (k *kernelConn) MaxRun(seg int) int {
	if k.mode != KernelBest || seg <= 0 || seg > int(k.gsoMax.Load()) {
		return 1
	}
	return max(1, min(int(k.segMax.Load()), maxGSOBytes/seg))
}

// BeginRun starts a run of count datagrams of seg bytes to dst and
// returns where the caller writes them, end to end; EndRun sends them as
// one message (one copy, the kernel's). Other runs wait until EndRun,
// which must follow every successful BeginRun.
func (k *kernelConn) BeginRun(dst netip.AddrPort, seg, count int) ([]byte, error) {
	if m := k.MaxRun(seg); count < 1 || count > m {
		return nil, fmt.Errorf("dgram: a run of %d datagrams of %d bytes (at most %d)", count, seg, m)
	}
	k.wmu.Lock()
	r := &k.run
	if r.buf == nil {
		r.buf, r.oob = make([]byte, maxGSOBytes), make([]byte, segCmsgSpace)
	}
	if dst != r.dst || r.dstUA == nil {
		r.dst, r.dstUA = dst, net.UDPAddrFromAddrPort(dst)
	}
	r.seg, r.count, r.open = seg, count, true
	return r.buf[:seg*count], nil
}

// EndRun sends the run BeginRun started and reports how many of its
// datagrams left. A kernel that refuses to segment them (EMSGSIZE, EIO)
// gets them one by one, and smaller runs from then on (MaxRun).
func (k *kernelConn) EndRun() (int, error) {
	r := &k.run
	if !r.open {
		return 0, fmt.Errorf("dgram: EndRun without BeginRun")
	}
	defer k.wmu.Unlock()
	r.open = false
	r.iov[0] = r.buf[:r.seg*r.count]
	m := &r.msg[0]
	m.Buffers, m.Addr, m.OOB = r.iov[:], r.dstUA, nil
	if r.count > 1 {
		putSegmentCmsg(r.oob, uint16(r.seg))
		m.OOB = r.oob
	}
	n, err := k.pc.WriteBatch(r.msg[:], 0)
	k.st.sendCalls.Add(1)
	if n == 1 {
		k.st.sendMsgs.Add(1)
		if r.count > 1 {
			k.st.gsoSends.Add(1)
		}
		k.st.dgramsSent.Add(uint64(r.count))
		return r.count, nil
	}
	if err != nil && r.count > 1 && k.refuseGSO(err, r.seg, r.count) {
		if cap(r.each) < r.count {
			r.each = make([]Message, MaxGSOSegments)
		}
		each := r.each[:r.count]
		for i := range each {
			each[i] = Message{Buf: r.buf[i*r.seg : (i+1)*r.seg], Addr: r.dst}
		}
		return k.WriteBatch(each)
	}
	if err == nil {
		err = ErrNoProgress
	}
	return 0, err
}

// release ends readRuns' loan.
func (k *kernelConn) release() { k.rmu.Unlock() }

// groRuns is a KernelBest socket's RunReader (see Runs).
type groRuns struct{ k *kernelConn }

func (g groRuns) ReadRuns(runs []stack.Run) (n, datagrams int, err error) { return g.k.readRuns(runs) }
func (g groRuns) Release()                                                { g.k.release() }

func (k *kernelConn) SetReadDeadline(t time.Time) error  { return k.c.SetReadDeadline(t) }
func (k *kernelConn) SetWriteDeadline(t time.Time) error { return k.c.SetWriteDeadline(t) }
func (k *kernelConn) LocalAddr() net.Addr                { return k.c.LocalAddr() }
func (k *kernelConn) Close() error                       { return k.c.Close() }
