package stack

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/stack/arp"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
	"github.com/netstation/netstation/stack/ipv4"
	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/tcp"
)

// Errors the stack returns, wrapped with detail.
var (
	ErrConfig           = errors.New("stack: invalid config")
	ErrClosed           = net.ErrClosed
	ErrNoRoute          = errors.New("stack: no route to host")
	ErrAddr             = errors.New("stack: invalid address")
	ErrMessageTooLong   = errors.New("stack: message too long")
	ErrNotConnected     = errors.New("stack: socket not connected")
	ErrWriteToConnected = errors.New("stack: WriteTo on a connected socket")
	ErrNoPorts          = errors.New("stack: no free ephemeral port")
)

// Defaults for Config.
const (
	DefaultTTL           = 64
	DefaultUDPQueueBytes = 4 << 20
	DefaultUDPQueueLen   = 4096
	maxUDPQueueLen       = 1 << 20
	maxUDPQueueBytes     = 1 << 31 // descriptors hold 32-bit offsets
	DefaultICMPRateLimit = 100
	DefaultRxBatch       = 64
	DefaultTxBatch       = 64
	ephemeralFirst       = 49152
	ephemeralCount       = 65536 - ephemeralFirst
	// maxGSOSegments is the most datagrams one UDP_L4 super-frame
	// carries: UDP_MAX_SEGMENTS, which the kernel enforces on packet
	// sockets' virtio-net headers as on UDP_SEGMENT. It is 128 in current
	// kernels and was 64 before; a link that refuses a super-frame of more
	// than 64 with EINVAL lowers the stack's limit to legacyGSOSegments
	// for good (Stack.gsoSegs).
	maxGSOSegments        = 128
	legacyGSOSegments     = 64
	minMTU                = 68
	frameHeaderRoom       = header.EthernetMinimumSize
	udpFrameHeaders       = header.EthernetMinimumSize + header.IPv4MinimumSize + header.UDPMinimumSize
	gsoUDPCsumStart       = header.EthernetMinimumSize + header.IPv4MinimumSize
	icmpUnreachQuoteBytes = 8
)

// Config describes one stack. Zero tunables take the defaults.
type Config struct {
	MAC     net.HardwareAddr // default: the link's address
	Addr    netip.Prefix     // our IPv4 address and subnet, e.g. 10.0.0.2/24
	Gateway netip.Addr       // next hop off the subnet; invalid means none
	MTU     int              // default and maximum: the link's MTU
	TTL     uint8            // default 64

	ARP        arp.Config
	Reassembly ipv4.ReassemblerConfig
	// Neighbors are permanent ARP entries (arp.Cache.Seed): addresses on
	// the stack's subnet and their Ethernet addresses, known beforehand.
	// Others (off the subnet, ours, not 6 bytes) are ignored.
	Neighbors map[netip.Addr]net.HardwareAddr

	// UDPQueueBytes and UDPQueueLen size each UDP socket's receive ring:
	// payload bytes and descriptors, rounded up to a power of two (a
	// descriptor holds a datagram, or a GSO super-frame's run of them).
	// Generous by default (4 MiB, 4096): small buffers are what made
	// gVisor drop 95 % at line rate.
	UDPQueueBytes int
	UDPQueueLen   int
	// ICMPRateLimit is the number of ICMP errors (port unreachable) sent
	// per second at most; negative disables them.
	ICMPRateLimit int
	RxBatch       int // frames per link read
	// PollBudget, if positive, makes a reader that finds nothing queued
	// (UDP and TCP reads) drive the link itself for up to this long
	// before it sleeps, when the link can be polled (link.Poller): it
	// polls the link, runs what arrives through the engine on its own
	// goroutine and returns as soon as its own data is there. The reply
	// to a request then costs no wake-up of the receive goroutine and no
	// hand-off from it (run to completion). It buys latency with CPU
	// time: the poller spins, yielding the CPU between polls. Off by
	// default: a host runs many stacks on few cores. A UDP socket can
	// have a budget of its own (UDPConn.SetPollBudget, as SO_BUSY_POLL).
	PollBudget time.Duration
	// NoGratuitousARP suppresses the announcement New sends.
	NoGratuitousARP bool
	// TCP holds the TCP tunables (buffers, backlog, TIME_WAIT, RTO).
	TCP tcp.Config
}

// Stack is one user-level IPv4 stack on one link. Its methods are safe for
// concurrent use.
type Stack struct {
	cfg     Config
	link    link.Link
	eng     engine.Engine
	mac     [6]byte
	addr    [4]byte
	prefix  netip.Prefix
	gw      [4]byte
	hasGW   bool
	mtu     int
	offload bool // link finishes checksums (NEEDS_CSUM)
	gso     bool // link takes UDP_L4 super-frames
	gather  bool // link sends a super-frame from pieces (link.GatherWriter)
	// gsoSegs is the most datagrams a UDP super-frame carries: starts at
	// maxGSOSegments, lowered once if the kernel refuses that many.
	gsoSegs atomic.Int32

	arp   *arp.Cache
	reasm *ipv4.Reassembler
	udp   engine.FlowTable[*UDPConn]
	tcp   *tcp.Protocol

	ipID     atomic.Uint32
	nextPort atomic.Uint32

	ctl txState // ICMP and anything else the stack itself sends
	// timerWake restarts timerLoop's ticker, stopped while the ARP cache
	// and the reassembler are idle.
	timerWake chan struct{}
	arpMu     sync.Mutex
	arpBuf    [arp.FrameSize]byte
	arpTmpl   engine.Template

	pingMu    sync.Mutex
	pings     map[uint16]chan time.Time
	pingIdent uint16
	pingSeq   atomic.Uint32

	// ICMP error rate limiter; used only by the receive goroutine.
	icmpTokens float64
	icmpLast   time.Time
	// rxTouched lists the UDP sockets the current receive batch queued
	// datagrams on; used only by the holder of the link's receive turn
	// (the receive goroutine, or a reader polling the link).
	rxTouched []*UDPConn
	// lender is the link when it lends its receive buffers (nil if not).
	// rxLoan and rxLoanOff are the frame being input's loan (link.Frame),
	// zero when its payload cannot be lent; receive goroutine only.
	lender    link.Lender
	rxLoan    uint32
	rxLoanOff uint32

	// Run to completion (Config.PollBudget): poller is the link when it
	// can be polled and polling is on. pollFrames and pollPkt are used
	// only by the poller holding the link's receive turn; pollInput is
	// s.pollBatch as a func value, made once.
	poller     link.Poller
	pollFrames []link.Frame
	pollPkt    engine.Packet
	pollInput  func([]link.Frame)

	st stackCounters

	socksMu sync.Mutex
	socks   map[*UDPConn]struct{}
	// linkPolls counts the open sockets asking for each link busy-poll
	// budget (UDPOptions.LinkPoll); under socksMu.
	linkPolls map[time.Duration]int

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type stackCounters struct {
	arpRequestsIn, arpRepliesIn, arpRequestsOut, arpRepliesOut     atomic.Uint64
	echoRequestsIn, echoRepliesOut, echoRequestsOut, echoRepliesIn atomic.Uint64
	icmpErrorsIn, unreachSent, unreachLimited                      atomic.Uint64
	fragmentsOut, gsoFramesOut, gsoFramesIn, lentFramesIn          atomic.Uint64
	linkReadErrors, polledFrames                                   atomic.Uint64
}

// New starts a stack on l. The stack owns l from now on: Close closes it.
func New(l link.Link, cfg Config) (*Stack, error) {
	if l == nil {
		return nil, fmt.Errorf("%w: nil link", ErrConfig)
	}
	if cfg.MAC == nil {
		cfg.MAC = l.HardwareAddr()
	}
	if len(cfg.MAC) != 6 {
		return nil, fmt.Errorf("%w: MAC %v is not 6 bytes", ErrConfig, cfg.MAC)
	}
	if !cfg.Addr.IsValid() || !cfg.Addr.Addr().Is4() {
		return nil, fmt.Errorf("%w: address %v is not an IPv4 prefix", ErrConfig, cfg.Addr)
	}
	if cfg.Gateway.IsValid() && (!cfg.Gateway.Is4() || !cfg.Addr.Contains(cfg.Gateway)) {
		return nil, fmt.Errorf("%w: gateway %v not on %v", ErrConfig, cfg.Gateway, cfg.Addr)
	}
	if cfg.MTU == 0 {
		cfg.MTU = l.MTU()
	}
	if cfg.MTU < minMTU || cfg.MTU > l.MTU() {
		return nil, fmt.Errorf("%w: MTU %d outside [%d, %d]", ErrConfig, cfg.MTU, minMTU, l.MTU())
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.UDPQueueBytes <= 0 {
		cfg.UDPQueueBytes = DefaultUDPQueueBytes
	}
	if cfg.UDPQueueBytes < header.UDPMaximumPayload {
		cfg.UDPQueueBytes = header.UDPMaximumPayload
	}
	if cfg.UDPQueueLen <= 0 {
		cfg.UDPQueueLen = DefaultUDPQueueLen
	}
	if cfg.ICMPRateLimit == 0 {
		cfg.ICMPRateLimit = DefaultICMPRateLimit
	}
	if cfg.RxBatch <= 0 {
		cfg.RxBatch = DefaultRxBatch
	}
	s := &Stack{
		cfg:       cfg,
		link:      l,
		mac:       [6]byte(cfg.MAC),
		addr:      cfg.Addr.Addr().As4(),
		prefix:    cfg.Addr.Masked(),
		mtu:       cfg.MTU,
		offload:   l.Caps()&link.CapVNetHdr != 0,
		pings:     make(map[uint16]chan time.Time),
		pingIdent: uint16(rand.Uint32()),
		socks:     make(map[*UDPConn]struct{}),
		done:      make(chan struct{}),
		timerWake: make(chan struct{}, 1),
	}
	s.gso = s.offload && l.Caps()&link.CapGSO != 0 && l.MaxFrame() >= header.EthernetMinimumSize+header.IPv4MaximumPacket
	s.gsoSegs.Store(maxGSOSegments)
	_, s.gather = l.(link.GatherWriter)
	s.lender, _ = l.(link.Lender)
	if cfg.Gateway.IsValid() {
		s.gw, s.hasGW = cfg.Gateway.As4(), true
	}
	s.eng = engine.Engine{
		Classifier: engine.Classifier{MAC: s.mac, Addr: s.addr, Broadcast: broadcastOf(cfg.Addr)},
		Link:       l,
	}
	s.arp = arp.New(cfg.ARP)
	s.arp.Seed(s.neighbors(cfg.Neighbors))
	s.reasm = ipv4.NewReassembler(cfg.Reassembly, &s.eng.Counters)
	s.ipID.Store(rand.Uint32())
	s.nextPort.Store(rand.Uint32N(ephemeralCount))
	s.arpTmpl = engine.Template{SrcMAC: s.mac, SrcAddr: s.addr}
	s.ctl.init(s, engine.Template{SrcMAC: s.mac, SrcAddr: s.addr, Proto: header.ProtocolICMP}, 4)
	s.icmpTokens = float64(s.icmpBurst())
	// A pollable link is kept whatever the stack's budget: a socket may
	// bring one of its own.
	if p, ok := l.(link.Poller); ok {
		if _, err := p.PollBatch(nil, nil); err == nil {
			s.poller = p
			s.pollFrames = make([]link.Frame, cfg.RxBatch)
			s.pollInput = s.pollBatch
		}
	}
	s.tcp = tcp.New(tcpNet{s}, cfg.TCP)

	s.wg.Add(2)
	go s.receiveLoop()
	go s.timerLoop()
	if !cfg.NoGratuitousARP {
		s.sendARP(header.ARPRequest, header.Broadcast, s.addr)
	}
	return s, nil
}

// neighbors returns the entries of ns the ARP cache may hold.
func (s *Stack) neighbors(ns map[netip.Addr]net.HardwareAddr) map[[4]byte][6]byte {
	out := make(map[[4]byte][6]byte, len(ns))
	for ip, mac := range ns {
		if !ip.Is4() || !s.prefix.Contains(ip) || ip.As4() == s.addr || len(mac) != 6 {
			continue
		}
		out[ip.As4()] = [6]byte(mac)
	}
	return out
}

func broadcastOf(p netip.Prefix) [4]byte {
	a := p.Addr().As4()
	bits := p.Bits()
	if bits >= 31 {
		return header.Broadcast4 // no directed broadcast on /31 and /32
	}
	mask := ^uint32(0) >> bits
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= mask
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// Addr returns the stack's IPv4 address.
func (s *Stack) Addr() netip.Addr { return netip.AddrFrom4(s.addr) }

// MAC returns the stack's Ethernet address.
func (s *Stack) MAC() net.HardwareAddr { return net.HardwareAddr(s.mac[:]) }

// MTU is the largest IP packet the stack sends in one frame.
func (s *Stack) MTU() int { return s.mtu }

// Close stops the stack's goroutines, closes the link and every socket
// (unblocking their readers) and waits until all of it is done.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.tcp.Close() // resets reach the peers while the link is up
		close(s.done)
		s.link.Close()
		s.wg.Wait()
		s.socksMu.Lock()
		socks := make([]*UDPConn, 0, len(s.socks))
		for c := range s.socks {
			socks = append(socks, c)
		}
		s.socksMu.Unlock()
		for _, c := range socks {
			c.Close()
		}
	})
	return nil
}

func (s *Stack) closed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *Stack) receiveLoop() {
	defer s.wg.Done()
	frames := make([]link.Frame, s.cfg.RxBatch)
	var p engine.Packet
	errs := 0
	for {
		n, err := s.link.ReadBatch(frames)
		if s.inputBatch(frames[:n], &p) {
			// A reader was woken: let it run now, while what it reads
			// is still in cache. With one P (peripherals run with
			// GOMAXPROCS=1) it would otherwise wait until this loop
			// blocks or is preempted (10 ms), by which time the loop has
			// queued megabytes more: the first datagrams are cold, and
			// the link's lendable buffers run out so the stack copies.
			runtime.Gosched()
		}
		if err != nil {
			if errors.Is(err, link.ErrClosed) || s.closed() {
				return
			}
			s.st.linkReadErrors.Add(1)
			errs++
			if errs > 3 {
				select { // do not spin on a failing link
				case <-s.done:
					return
				case <-time.After(time.Millisecond):
				}
			}
			continue
		}
		errs = 0
	}
}

func (s *Stack) timerLoop() {
	defer s.wg.Done()
	iv := s.arpRetryInterval() / 2
	iv = min(max(iv, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTicker(iv)
	defer t.Stop()
	var retry [][4]byte
	for {
		if s.arp.Idle() && s.reasm.Stats().Pending == 0 {
			// Nothing to retry or expire: no wake-up every iv for an
			// idle peripheral (each one also wakes the Go runtime's
			// monitor thread; at 1,000 peripherals the idle wake-ups
			// alone kept a core busy, issue 16).
			t.Stop()
			select {
			case <-s.done:
				return
			case <-s.timerWake:
			}
			t.Reset(iv)
		}
		select {
		case <-s.done:
			return
		case now := <-t.C:
			retry, dropped := s.arp.Tick(now, retry[:0])
			s.eng.Drops[engine.DropARPUnresolved].Add(uint64(dropped))
			for _, ip := range retry {
				s.sendARP(header.ARPRequest, header.Broadcast, ip)
			}
			s.reasm.Expire(now)
		}
	}
}

// wakeTimer tells timerLoop there is work for it (an address to resolve,
// an entry that will expire, a datagram being reassembled).
func (s *Stack) wakeTimer() {
	select {
	case s.timerWake <- struct{}{}:
	default:
	}
}

func (s *Stack) arpRetryInterval() time.Duration {
	if s.cfg.ARP.RetryInterval > 0 {
		return s.cfg.ARP.RetryInterval
	}
	return arp.DefaultRetryInterval
}

// linkPoll counts a socket's link busy-poll budget in (on) or out and
// sets the link's budget to the largest one still asked for (0: none).
func (s *Stack) linkPoll(d time.Duration, on bool) {
	bp, ok := s.link.(link.BusyPoller)
	if !ok {
		return
	}
	s.socksMu.Lock()
	defer s.socksMu.Unlock()
	if s.linkPolls == nil {
		s.linkPolls = make(map[time.Duration]int)
	}
	if on {
		s.linkPolls[d]++
	} else if s.linkPolls[d]--; s.linkPolls[d] <= 0 {
		delete(s.linkPolls, d)
	}
	var budget time.Duration
	for b := range s.linkPolls {
		budget = max(budget, b)
	}
	bp.SetBusyPoll(budget)
}

// drive is run to completion for a reader with nothing queued: it polls
// the link on the caller's goroutine and runs what arrives through the
// engine (pollBatch) until ready reports true, budget or the deadline
// (unix nanoseconds, 0 for none) passes, or the link fails. The
// frame the reader waits for is then taken, processed and queued by the
// reader itself; the receive goroutine, asleep in the link, is neither
// woken for it nor has to wake the reader. Without a poller it returns
// at once, as it does for a budget of zero.
func (s *Stack) drive(ready func() bool, deadline int64, budget time.Duration) {
	if s.poller == nil || budget <= 0 {
		return
	}
	now := time.Now().UnixNano()
	end := now + int64(budget)
	if deadline != 0 && deadline < end {
		end = deadline
	}
	lastSched := now
	for {
		n, err := s.poller.PollBatch(s.pollFrames, s.pollInput)
		if err != nil || ready() {
			return
		}
		now = time.Now().UnixNano()
		if n == 0 && now-lastSched >= driveGoschedEvery {
			// Let the process's other goroutines run (GOMAXPROCS=1),
			// but not after every empty poll: a Gosched costs ~0.3 us
			// here, delay before a frame that arrives meanwhile is seen.
			runtime.Gosched()
			lastSched = now
		}
		if now >= end {
			return
		}
	}
}

// driveGoschedEvery is how long, in nanoseconds, a polling reader may keep
// the processor from the process's other goroutines.
const driveGoschedEvery = 2000

// pollBatch is drive's fn for Poller.PollBatch: the link's receive turn
// is held, as it is by the receive goroutine around its own inputBatch.
func (s *Stack) pollBatch(frames []link.Frame) {
	s.st.polledFrames.Add(uint64(len(frames)))
	s.inputBatch(frames, &s.pollPkt)
}

// inputBatch runs a batch of received frames through the engine and on to
// their owners, then publishes what the batch queued on each UDP socket
// and wakes its reader: counters, ring publication and wake-ups are paid
// once per batch and socket, not once per datagram. Only the holder of
// the link's receive turn calls it: the receive goroutine between two
// ReadBatch calls, a reader polling the link (drive), or a test standing
// in for them while they are idle.
func (s *Stack) inputBatch(frames []link.Frame, p *engine.Packet) (woke bool) {
	if len(frames) == 0 {
		return false
	}
	var bytes uint64
	for i := range frames {
		bytes += uint64(len(frames[i].Buf))
		s.input(&frames[i], p)
	}
	s.eng.RxFrames.Add(uint64(len(frames)))
	s.eng.RxBytes.Add(bytes)
	woke = s.endBatch()
	s.tcp.Flush()
	return woke
}

// endBatch publishes the datagrams queued since the last call and wakes
// the readers of the sockets that got some; it reports whether one was
// asleep.
func (s *Stack) endBatch() (woke bool) {
	for _, c := range s.rxTouched {
		c.q.publish()
		c.rxDatagrams.Add(c.q.pendDatagrams)
		c.rxBytes.Add(c.q.pendBytes)
		lent := c.q.pendLent
		c.q.pendDatagrams, c.q.pendBytes, c.q.pendLent, c.q.touched = 0, 0, 0, false
		if c.q.wake() {
			woke = true
		}
		if lent > 0 && c.isClosed() {
			c.reclaimLent() // looked up before it closed: nobody will read it
		}
	}
	clear(s.rxTouched)
	s.rxTouched = s.rxTouched[:0]
	return woke
}

// input runs one received frame through the engine and on to its owner.
// What it queues on UDP sockets is published by endBatch.
func (s *Stack) input(f *link.Frame, p *engine.Packet) {
	if r := s.eng.Classify(f, p); r != engine.DropNone {
		s.eng.Drop(r)
		return
	}
	if p.EtherType == header.EtherTypeARP {
		s.handleARP(p)
		return
	}
	s.rxLoan, s.rxLoanOff = f.Loan, f.LoanOff
	if p.Fragment {
		s.rxLoan = 0 // the datagram is reassembled elsewhere
		whole, ok := s.reasm.Add(p.IP(), time.Now())
		if !ok {
			s.wakeTimer()
			return
		}
		if r := s.eng.ClassifyIP(whole, p); r != engine.DropNone {
			s.eng.Drop(r)
			return
		}
	}
	switch {
	case p.VNet.Flags&link.VNetDataValid != 0:
		s.eng.RxDataValid.Add(1)
	case p.PartialCsum:
		s.eng.RxNeedsCsum.Add(1)
	}
	s.deliver(p)
}

// lendMinSegment is the smallest datagram a super-frame is lent for
// rather than copied into the ring: a run of small datagrams is a few
// KiB, cheaper to copy than to pin a 64 KiB link buffer for (and each
// lent datagram costs its reader a little more to give back).
const lendMinSegment = 512

func (s *Stack) deliver(p *engine.Packet) {
	switch p.Proto {
	case header.ProtocolUDP:
		c, ok := s.udp.Lookup(header.ProtocolUDP, p.Dst, p.DstPort, p.Src, p.SrcPort)
		if !ok {
			s.eng.Drop(engine.DropNoSocket)
			if p.Dst == s.addr {
				s.portUnreachable(p)
			}
			return
		}
		payload := p.L4Payload()
		q := &c.q
		if !q.touched {
			q.touched = true
			q.refresh()
			s.rxTouched = append(s.rxTouched, c)
		}
		if !p.GSO || len(payload) == 0 {
			if !q.push(payload, p.Src, p.SrcPort) {
				s.eng.Drop(engine.DropSocketQueueFull)
				c.rxDrops.Add(1)
			}
			return
		}
		s.st.gsoFramesIn.Add(1)
		seg := int(p.VNet.GSOSize)
		if s.rxLoan != 0 && q.lender != nil && seg >= lendMinSegment {
			// The datagrams stay where the kernel wrote them: the link
			// lends its buffer until the reader has them all.
			n := q.pushLent(payload, seg, s.rxLoan, s.rxLoanOff+uint32(p.L4+header.UDPMinimumSize), p.Src, p.SrcPort)
			payload = payload[n:]
			if n > 0 {
				s.st.lentFramesIn.Add(1)
			}
		}
		for len(payload) > 0 {
			// The segments lie end to end in the frame and go end to end
			// into the ring: one copy for as many as fit.
			n := q.pushRun(payload, seg, p.Src, p.SrcPort)
			if n == 0 {
				if !q.push(payload[:min(seg, len(payload))], p.Src, p.SrcPort) {
					s.eng.Drop(engine.DropSocketQueueFull)
					c.rxDrops.Add(1)
				}
				n = min(seg, len(payload))
			}
			payload = payload[n:]
		}
	case header.ProtocolICMP:
		s.handleICMP(p)
	case header.ProtocolTCP:
		s.deliverTCP(p)
	default:
		s.eng.Drop(engine.DropNoSocket)
	}
}

func (s *Stack) handleARP(p *engine.Packet) {
	a := header.ARP(p.Buf[p.L3:])
	sha, spa, tpa := a.SenderMAC(), a.SenderAddr(), a.TargetAddr()
	op := a.Op()
	switch op {
	case header.ARPRequest:
		s.st.arpRequestsIn.Add(1)
	case header.ARPReply:
		s.st.arpRepliesIn.Add(1)
	default:
		s.eng.Drop(engine.DropARPInvalid)
		return
	}
	if sha == s.mac || sha == header.Broadcast || sha[0]&1 != 0 {
		s.eng.Drop(engine.DropARPInvalid) // our own echo, or a forged group address
		return
	}
	forUs := tpa == s.addr
	if spa != ([4]byte{}) && spa != s.addr && (forUs || s.arp.Known(spa)) {
		if queued := s.arp.Learn(spa, sha, time.Now()); len(queued) > 0 {
			s.eng.WriteChecked(queued)
		}
		s.wakeTimer()
	}
	if op == header.ARPRequest && forUs {
		s.sendARP(header.ARPReply, sha, spa)
	}
}

// sendARP sends a request for target (dst broadcast) or a reply to
// (dst, target).
func (s *Stack) sendARP(op uint16, dst [6]byte, target [4]byte) {
	s.arpMu.Lock()
	defer s.arpMu.Unlock()
	b := s.arpBuf[:]
	if op == header.ARPRequest {
		arp.EncodeRequest(b, s.mac, s.addr, target)
		s.st.arpRequestsOut.Add(1)
	} else {
		arp.EncodeReply(b, s.mac, s.addr, dst, target)
		s.st.arpRepliesOut.Add(1)
	}
	f := [1]link.Frame{{Buf: b}}
	s.eng.Transmit(f[:], &s.arpTmpl)
}

// nextHop returns the MAC to send to for dst, whether it is known now,
// and the address to resolve otherwise.
func (s *Stack) nextHop(dst [4]byte, now time.Time) (mac [6]byte, ok bool, hop [4]byte, err error) {
	if dst == header.Broadcast4 || dst == s.eng.Broadcast {
		return header.Broadcast, true, dst, nil
	}
	if dst == s.addr || dst == ([4]byte{}) || dst[0] >= 224 {
		return mac, false, hop, fmt.Errorf("%w: %v", ErrNoRoute, netip.AddrFrom4(dst))
	}
	hop = dst
	if !s.prefix.Contains(netip.AddrFrom4(dst)) {
		if !s.hasGW {
			return mac, false, hop, fmt.Errorf("%w: %v (no gateway)", ErrNoRoute, netip.AddrFrom4(dst))
		}
		hop = s.gw
	}
	mac, ok = s.arp.Lookup(hop, now)
	return mac, ok, hop, nil
}

func (s *Stack) newID() uint16 { return uint16(s.ipID.Add(1)) }

func (s *Stack) ephemeralPort() (uint16, error) {
	for range ephemeralCount {
		p := uint16(ephemeralFirst + s.nextPort.Add(1)%ephemeralCount)
		if !s.udp.PortInUse(header.ProtocolUDP, p) {
			return p, nil
		}
	}
	return 0, ErrNoPorts
}
