package disk

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/stack"
)

// Defaults of Config's zero fields.
const (
	DefaultBlockSize   = 4096
	DefaultWindow      = 32
	DefaultMaxIO       = 256 << 10 // one request's data; larger ones travel in segments
	DefaultWorkers     = 8
	DefaultQueue       = 256
	DefaultMaxSessions = 1024
	// DefaultWindowBytes is the READ and WRITE data a session may have in
	// flight: half the user-level stack's default socket queue (4 MiB), so
	// a full window of segments never overflows it.
	DefaultWindowBytes = 2 << 20
	// DefaultMaxAssembly bounds the memory of partly arrived WRITEs over
	// all sessions.
	DefaultMaxAssembly = 64 << 20
	// rxBatch is the number of datagrams one receive call may return.
	rxBatch = 64
)

// Errors of NewServer and Serve.
var (
	ErrConfig = errors.New("disk: bad configuration")
	ErrClosed = fmt.Errorf("disk: server closed: %w", net.ErrClosed)
)

// Config describes a disk server.
type Config struct {
	// Path is the backing file, created if missing. Its data is kept
	// across restarts.
	Path string
	// Size is the device size in bytes, a multiple of BlockSize. A smaller
	// existing file is grown (sparsely); a larger one is refused rather
	// than cut. 0 takes the existing file's size.
	Size      int64
	BlockSize int // default DefaultBlockSize
	// Window is the number of outstanding requests each client session may
	// have, advertised in INFO; also the size of its duplicate cache.
	Window int
	// MaxIO is the largest READ/WRITE/TRIM of one request, advertised in
	// INFO; at most diskproto.MaxIOLimit.
	MaxIO int
	// WindowBytes is advertised in INFO: the data a session may have in
	// flight (default DefaultWindowBytes).
	WindowBytes int
	// Datagram is the size READ replies are cut to (header and segments):
	// the path MTU less the IP and UDP headers. Default
	// diskproto.DefaultDatagram.
	Datagram int
	// MaxAssembly bounds the bytes of WRITEs whose segments are still
	// arriving, over all sessions (default DefaultMaxAssembly).
	MaxAssembly int
	// Workers bound the concurrency of backing-file I/O; Queue bounds the
	// requests waiting for a worker (more are dropped and counted).
	Workers, Queue int
	// MaxSessions bounds the session table; INFO from a new client evicts
	// the least recently used session when it is full.
	MaxSessions int
	// Authorizer checks every request. Required: use OpenAccess{} for the
	// documented open mode.
	Authorizer Authorizer
	Logger     *slog.Logger
	// Listen opens a UDP socket for one third-party transfer's tiles
	// (the display's reports come back to it); nil refuses TRANSFER
	// orders with CodeBadOp. See transfer.go.
	Listen func() (net.PacketConn, error)
	// TransferWindow is the tiles a transfer sends between flow-control
	// checkpoints (two windows may be unanswered); 0 is
	// DefaultTransferWindow. Keep 2 windows under the display's socket
	// queue.
	TransferWindow int
	// MaxPaced bounds the bytes of READ reply buffers waiting for their
	// pacing slots (default DefaultMaxPaced); beyond it replies leave
	// unpaced (pace.go).
	MaxPaced int
}

// Server is a disk peripheral's storage service.
type Server struct {
	cfg   Config
	file  *os.File
	fd    int
	size  uint64
	epoch uint64
	open  bool
	log   *slog.Logger

	jobs    chan job
	workers sync.WaitGroup
	bufs    sync.Pool // receive buffers: one datagram
	big     sync.Pool // assembled WRITE data: MaxIO bytes
	outs    sync.Pool // laid-out READ replies

	mu       sync.Mutex
	sessions map[sessionKey]*session
	conns    map[net.PacketConn]struct{}
	closed   bool
	closing  atomic.Bool // closed, readable without mu on every datagram
	serving  sync.WaitGroup
	clock    uint64 // LRU ticks
	asmBytes int    // data buffers held by assemblies

	stats counters
	xfer  transferCounters // transfer.go
	pacer pacer            // pace.go

	refusals refusalLog // refusallog.go
	mem      mapping    // mem.go: the backing file mapped
	// ranges holds a range still being sent from the mapping (a gathered
	// READ reply) against writes to it: gather.go.
	ranges rangeLocks

	// runHook, set by tests, runs on the worker before each request: it
	// can hold a request "running".
	runHook atomic.Pointer[func(*diskproto.Request)]
}

type sessionKey struct {
	id uint64
	ap netip.AddrPort
}

// keyOf is the session key of a request from addr; addresses other than
// UDP ones (test doubles) map to the zero AddrPort.
func keyOf(id uint64, addr net.Addr) sessionKey {
	var ap netip.AddrPort
	if ua, ok := addr.(*net.UDPAddr); ok {
		ap = ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return sessionKey{id, ap}
}

type session struct {
	low     uint64
	lastUse uint64
	slots   []slot
	asm     []*assembly // WRITEs whose segments are arriving, by request id modulo the window
	// paceNext is when the session's next paced chunk of READ reply data
	// may leave, paceQueued the bytes of its replies waiting in the
	// pacer (pace.go). Guarded by Server.pacer.mu.
	paceNext   time.Time
	paceQueued uint64
}

// assembly is a WRITE whose data is still arriving in segments.
type assembly struct {
	req   diskproto.Request // the latest header; Payload unset
	buf   *[]byte           // the data so far, from Server.big
	track diskproto.Assembly
	born  time.Time
	// headless: segments arrived before the header's datagram (lost); the
	// length is bounded by MaxIO until the header comes and fixes it.
	headless bool
	// crc is the data's CRC-32C, taken from each datagram as it is
	// copied in (while in cache).
	crc diskproto.RunningChecksum
}

// placed extends a's running checksum over data just copied to off (n
// bytes). Called with mu held.
func (a *assembly) placed(off, n int) { a.crc.Placed(*a.buf, off, n) }

// slot is one entry of a session's duplicate-request cache, indexed by
// request id modulo the window.
type slot struct {
	reqID   uint64
	valid   bool
	done    bool
	cached  bool // reply holds the answer to replay (non-idempotent ops)
	sending bool // a READ's reply is leaving (worker or pacer): done, not yet sent
	status  diskproto.Code
}

type job struct {
	pc   dgram.Conn
	addr netip.AddrPort
	req  diskproto.Request
	buf  *[]byte    // holds req.Payload; nil when the request has no data
	pool *sync.Pool // buf's pool
	sess *session
}

// NewServer opens (or creates) the backing file and starts the workers.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Authorizer == nil {
		return nil, fmt.Errorf("%w: no Authorizer (use disk.OpenAccess{} for open mode)", ErrConfig)
	}
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: no backing file path", ErrConfig)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.BlockSize, DefaultBlockSize)
	def(&cfg.Window, DefaultWindow)
	def(&cfg.MaxIO, DefaultMaxIO)
	def(&cfg.Workers, DefaultWorkers)
	def(&cfg.Queue, DefaultQueue)
	def(&cfg.MaxSessions, DefaultMaxSessions)
	def(&cfg.WindowBytes, DefaultWindowBytes)
	def(&cfg.Datagram, diskproto.DefaultDatagram)
	def(&cfg.MaxAssembly, DefaultMaxAssembly)
	def(&cfg.MaxPaced, DefaultMaxPaced)
	switch {
	case cfg.BlockSize < 512 || cfg.BlockSize&(cfg.BlockSize-1) != 0:
		return nil, fmt.Errorf("%w: block size %d is not a power of two >= 512", ErrConfig, cfg.BlockSize)
	case cfg.MaxIO < 1 || cfg.MaxIO > diskproto.MaxIOLimit:
		return nil, fmt.Errorf("%w: max I/O %d not in [1, %d]", ErrConfig, cfg.MaxIO, diskproto.MaxIOLimit)
	case cfg.Datagram < diskproto.MinDatagram || cfg.Datagram > diskproto.MaxDatagram:
		return nil, fmt.Errorf("%w: datagram size %d not in [%d, %d]", ErrConfig, cfg.Datagram, diskproto.MinDatagram, diskproto.MaxDatagram)
	case cfg.WindowBytes < diskproto.MinDatagram || cfg.MaxAssembly < cfg.MaxIO:
		return nil, fmt.Errorf("%w: window bytes %d below %d or assembly memory %d below max I/O %d",
			ErrConfig, cfg.WindowBytes, diskproto.MinDatagram, cfg.MaxAssembly, cfg.MaxIO)
	case cfg.Window < 1 || cfg.Window > diskproto.MaxWindow || cfg.Workers < 1 || cfg.Queue < 1 || cfg.MaxSessions < 1 ||
		cfg.MaxPaced < 0:
		return nil, fmt.Errorf("%w: window, workers, queue and sessions must be positive (window <= %d)", ErrConfig, diskproto.MaxWindow)
	case cfg.Size < 0 || cfg.Size%int64(cfg.BlockSize) != 0:
		return nil, fmt.Errorf("%w: size %d is not a multiple of the block size %d", ErrConfig, cfg.Size, cfg.BlockSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	f, err := os.OpenFile(cfg.Path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("disk: open backing file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk: stat backing file: %w", err)
	}
	switch {
	case cfg.Size == 0 && fi.Size() == 0:
		f.Close()
		return nil, fmt.Errorf("%w: size 0 and no existing data in %s", ErrConfig, cfg.Path)
	case cfg.Size == 0:
		cfg.Size = fi.Size()
	case fi.Size() > cfg.Size:
		f.Close()
		return nil, fmt.Errorf("%w: %s holds %d bytes, more than the configured size %d (refusing to cut data)",
			ErrConfig, cfg.Path, fi.Size(), cfg.Size)
	case fi.Size() < cfg.Size:
		// Truncate grows the file sparsely; make the new size durable so a
		// crash cannot shrink the device under acknowledged writes.
		if err := f.Truncate(cfg.Size); err != nil {
			f.Close()
			return nil, fmt.Errorf("disk: grow backing file: %w", err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("disk: sync backing file: %w", err)
		}
	}
	var e [8]byte
	rand.Read(e[:])
	s := &Server{
		cfg:      cfg,
		file:     f,
		fd:       int(f.Fd()),
		size:     uint64(cfg.Size),
		epoch:    binary.BigEndian.Uint64(e[:]) | 1, // never 0, the INFO value
		log:      cfg.Logger,
		jobs:     make(chan job, cfg.Queue),
		sessions: make(map[sessionKey]*session),
		conns:    make(map[net.PacketConn]struct{}),
	}
	_, s.open = cfg.Authorizer.(OpenAccess)
	s.bufs.New = func() any { b := make([]byte, diskproto.MaxDatagram+1); return &b }
	s.big.New = func() any { b := make([]byte, cfg.MaxIO); return &b }
	// The largest reply layout: the smallest datagram a client may ask for.
	out := diskproto.Layout{Header: diskproto.ReplyHeaderSize, Length: cfg.MaxIO, Datagram: diskproto.MinDatagram}.Size()
	s.outs.New = func() any { b := make([]byte, out); return &b }
	for range cfg.Workers {
		s.workers.Add(1)
		go s.worker()
	}
	s.mapFile()
	s.pacer.init()
	go s.paceLoop()
	return s, nil
}

// Info is what INFO advertises.
func (s *Server) Info() diskproto.InfoPayload {
	p := diskproto.InfoPayload{
		Size:      s.size,
		BlockSize: uint32(s.cfg.BlockSize),
		Window:    uint32(s.cfg.Window),
		MaxIO:     uint32(s.cfg.MaxIO),
		Features:  diskproto.FeatureTrim | diskproto.FeatureFUA,

		WindowBytes: uint32(s.cfg.WindowBytes),
	}
	if s.open {
		p.Features |= diskproto.FeatureOpenAccess
	}
	return p
}

// Epoch is this server instance's boot epoch: requests of sessions opened
// with another instance are answered CodeNoSession.
func (s *Server) Epoch() uint64 { return s.epoch }

// Serve answers requests arriving on pc until Close (then it returns nil)
// or until reading pc fails (a read deadline set by the caller counts as a
// failure). Several PacketConns may be served at once. Serve does not
// close pc: it clears pc's read deadline on entry, and Close unblocks it by
// setting one in the past. It reads in batches (dgram.Of): the user-level
// stack's socket directly, a kernel socket with recvmmsg.
func (s *Server) Serve(pc net.PacketConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.conns[pc] = struct{}{}
	s.serving.Add(1)
	pc.SetReadDeadline(time.Time{}) // one left by an earlier server's Close
	s.mu.Unlock()
	bc := dgram.Of(pc)
	msgs := make([]dgram.Message, rxBatch)
	bufs := make([]*[]byte, rxBatch)
	for i := range msgs {
		bufs[i] = s.bufs.Get().(*[]byte)
		msgs[i].Buf = *bufs[i]
	}
	defer func() {
		for _, b := range bufs {
			s.bufs.Put(b)
		}
		s.mu.Lock()
		delete(s.conns, pc)
		s.mu.Unlock()
		s.serving.Done()
	}()
	if vr, ok := bc.(viewReader); ok {
		return s.serveViews(bc, vr, bufs)
	}
	for {
		n, err := bc.ReadBatch(msgs)
		if s.closing.Load() {
			return nil
		}
		if err != nil && n == 0 {
			return fmt.Errorf("disk: serve: read: %w", err)
		}
		for i := range msgs[:n] {
			m := &msgs[i]
			if m.N > diskproto.MaxDatagram {
				s.stats.drop(dropOversize)
				continue
			}
			if s.handle(bc, bufs[i], m.N, m.Addr) {
				bufs[i] = s.bufs.Get().(*[]byte) // the job owns the old one
				m.Buf = *bufs[i]
			}
		}
	}
}

// viewReader is a socket that lends received datagrams instead of
// copying them out (stack.UDPConn).
type viewReader interface {
	ReadViews(views []stack.View) (int, error)
	Release()
}

var _ viewReader = (*stack.UDPConn)(nil)

// serveViews is Serve's loop on a socket that lends its datagrams: a
// WRITE's data segment is copied from the socket's ring straight into its
// assembly (once, not twice); any other datagram is copied into a pooled
// buffer first, as a worker may keep it past the views' release.
func (s *Server) serveViews(bc dgram.Conn, vr viewReader, bufs []*[]byte) error {
	views := make([]stack.View, len(bufs))
	for {
		n, err := vr.ReadViews(views)
		if s.closing.Load() {
			if err == nil {
				vr.Release()
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("disk: serve: read: %w", err)
		}
		for i := range views[:n] {
			b, from := views[i].Payload, views[i].Addr
			if len(b) > diskproto.MaxDatagram {
				s.stats.drop(dropOversize)
				continue
			}
			if diskproto.IsSegment(b) {
				s.segment(bc, b, from)
				continue
			}
			m := copy(*bufs[i], b)
			if s.handle(bc, bufs[i], m, from) {
				bufs[i] = s.bufs.Get().(*[]byte) // the job owns the old one
			}
		}
		vr.Release()
	}
}

// handle parses one datagram and answers it, drops it, adds it to a WRITE
// being assembled or hands it to a worker; it reports whether a worker
// took buf.
func (s *Server) handle(pc dgram.Conn, buf *[]byte, n int, from netip.AddrPort) bool {
	b := (*buf)[:n]
	if diskproto.IsSegment(b) {
		s.segment(pc, b, from)
		return false
	}
	req, err := diskproto.ParseRequest(b)
	if err != nil {
		code, ok := diskproto.ReplyCode(err)
		if !ok {
			if _, other := diskproto.OtherVersion(b); other {
				// Another version's request: say so in a reply that
				// version can parse, rather than leave it timing out.
				s.stats.errors[diskproto.CodeVersion].Add(1)
				var rb [diskproto.ReplyHeaderSize]byte
				s.send(pc, from, rb[:diskproto.VersionReply(rb[:], b, s.epoch)])
				return false
			}
			s.stats.drop(dropReasonOf(err))
			return false
		}
		s.reply(pc, from, &req, code, nil)
		return false
	}
	s.stats.requests[req.Op].Add(1)
	if err := s.cfg.Authorizer.Authorize(&req, net.UDPAddrFromAddrPort(from)); err != nil {
		s.refusals.note(s.log, req.Op.String(), err, net.UDPAddrFromAddrPort(from))
		s.reply(pc, from, &req, diskproto.CodeDenied, nil)
		return false
	}
	if req.Op == diskproto.OpTransfer {
		s.transfer(pc, from, &req) // transfer.go: runs in a goroutine of its own
		return false
	}
	if req.Op == diskproto.OpInfo {
		s.openSession(&req, from)
		info := s.Info()
		// Never more in flight than half of what this socket queues.
		if rb := dgram.ReceiveBuffer(pc, s.cfg.Datagram); rb > 0 {
			info.WindowBytes = uint32(max(min(s.cfg.WindowBytes, rb/2), diskproto.MinDatagram))
		}
		// READ replies from a kernel socket are a frame each: no more in
		// flight than the receiving CPU's backlog takes in one burst.
		if bl := dgram.BurstLimit(pc, s.cfg.Datagram); bl > 0 {
			info.WindowBytes = min(info.WindowBytes, uint32(max(bl, diskproto.MinDatagram)))
		}
		s.reply(pc, from, &req, diskproto.CodeOK, info.Marshal())
		return false
	}
	if code := s.check(&req); code != diskproto.CodeOK {
		s.reply(pc, from, &req, code, nil)
		return false
	}

	s.mu.Lock()
	sess := s.sessions[sessionKey{req.Session, from}]
	if sess == nil || req.Epoch != s.epoch {
		s.mu.Unlock()
		s.reply(pc, from, &req, diskproto.CodeNoSession, nil)
		return false
	}
	s.clock++
	sess.lastUse = s.clock
	sess.low = max(sess.low, req.Low)
	w := uint64(len(sess.slots))
	if req.ReqID < sess.low {
		// The client has finished this request: a late duplicate or a
		// replay. Running it could overwrite newer data.
		s.mu.Unlock()
		s.stats.drop(dropStale)
		return false
	}
	if req.ReqID-sess.low >= w {
		s.mu.Unlock()
		s.reply(pc, from, &req, diskproto.CodeWindow, nil)
		return false
	}
	sl := &sess.slots[req.ReqID%w]
	if sl.valid && sl.reqID == req.ReqID {
		if !sl.done {
			// Queued or running: its reply follows. Say so (48 bytes,
			// less than the request), so the client holds its timer
			// instead of backing off as if the probe were lost.
			s.mu.Unlock()
			s.reply(pc, from, &req, diskproto.CodeInProgress, nil)
			return false
		}
		if sl.cached {
			status := sl.status
			s.mu.Unlock()
			s.stats.duplicates.Add(1)
			s.reply(pc, from, &req, status, nil)
			return false
		}
		// A finished READ. Without FlagHave the client holds nothing of
		// the reply: it is still leaving (in progress), or it left and is
		// on its way or lost (sent: the client tells which, since this
		// answer follows the reply on the same path). Reading and sending
		// it all again here was a whole second reply for every probe that
		// crossed one in flight. With FlagHave: idempotent, run it again
		// for the datagrams the bitmap lacks (an empty one: all of them).
		if req.Flags&diskproto.FlagHave == 0 {
			status := diskproto.CodeSent
			if sl.sending {
				status = diskproto.CodeInProgress
			}
			s.mu.Unlock()
			s.reply(pc, from, &req, status, nil)
			return false
		}
	}
	if req.Partial() {
		a, sack := s.assemble(sess, &req)
		s.mu.Unlock()
		if a != nil {
			s.assembled(pc, sess, a, from)
		}
		if sack != nil {
			s.sendSACK(pc, from, sack)
		}
		return false
	}
	j := job{pc: pc, addr: from, req: req, sess: sess}
	if req.Op == diskproto.OpWrite || req.Flags&diskproto.FlagHave != 0 {
		j.buf, j.pool = buf, &s.bufs // the data, or the READ's bitmap
	} else {
		j.req.Payload = nil
	}
	return s.enqueue(j)
}

// enqueue claims the request's duplicate-cache slot and hands it to a
// worker. Called with mu held; returns with it free. It reports whether a
// worker took j.buf.
func (s *Server) enqueue(j job) bool {
	w := uint64(len(j.sess.slots))
	sl := &j.sess.slots[j.req.ReqID%w]
	*sl = slot{reqID: j.req.ReqID, valid: true}
	s.mu.Unlock()
	select {
	case s.jobs <- j:
		return j.buf != nil
	default:
		s.mu.Lock()
		if sl.reqID == j.req.ReqID {
			sl.valid = false // let the retransmission run it
		}
		s.mu.Unlock()
		s.stats.drop(dropQueueFull)
		return false
	}
}

// assemble starts or continues the WRITE whose header req arrived without
// all of its data, and returns it if that completed it; else, if the
// header asked for a report (FlagReport), the SACK to send. Called with
// mu held.
func (s *Server) assemble(sess *session, req *diskproto.Request) (*assembly, *diskproto.SACK) {
	a := s.assembleHeader(sess, req)
	if a != nil || req.Flags&diskproto.FlagReport == 0 {
		return a, nil
	}
	i := req.ReqID % uint64(len(sess.asm))
	sack := &diskproto.SACK{Tag: req.Tag, Session: req.Session, ReqID: req.ReqID}
	if p := sess.asm[i]; p != nil && p.req.ReqID == req.ReqID {
		sack.Length, sack.Bitmap = p.req.Length, p.track.Held(nil)
	}
	return nil, sack
}

// sendSACK sends a selective acknowledgement.
func (s *Server) sendSACK(pc dgram.Conn, to netip.AddrPort, sack *diskproto.SACK) {
	var b [diskproto.SACKHeaderSize + diskproto.MaxSACKBitmap]byte
	n, err := sack.Marshal(b[:])
	if err != nil {
		s.stats.drop(dropSendFailed)
		return
	}
	s.stats.sacks.Add(1)
	s.send(pc, to, b[:n])
}

// assembleHeader adds a WRITE's header datagram to its assembly (starting
// it) and returns the assembly if that completed it. Called with mu held.
func (s *Server) assembleHeader(sess *session, req *diskproto.Request) *assembly {
	i := req.ReqID % uint64(len(sess.asm))
	a := sess.asm[i]
	if a != nil && a.headless && a.req.ReqID == req.ReqID {
		// The header of segments that came first: fix the length.
		if err := a.track.SetLength(req.Length); err != nil {
			s.stats.drop(dropBadSegment)
			s.freeAssembly(sess, i)
			a = nil
		} else {
			a.headless = false
			a.req.Length, a.req.Offset = req.Length, req.Offset
		}
	}
	if a != nil && (a.req.ReqID != req.ReqID || a.req.Length != req.Length || a.req.Offset != req.Offset) {
		s.freeAssembly(sess, i) // the slot has moved on
		a = nil
	}
	if a == nil {
		if s.asmBytes+s.cfg.MaxIO > s.cfg.MaxAssembly {
			s.sweepAssemblies()
		}
		if s.asmBytes+s.cfg.MaxIO > s.cfg.MaxAssembly {
			s.stats.drop(dropAssemblyFull)
			return nil
		}
		a = &assembly{buf: s.big.Get().(*[]byte), born: time.Now()}
		a.track.Reset(req.Length)
		s.asmBytes += s.cfg.MaxIO
		sess.asm[i] = a
	}
	inline := req.Payload
	a.req = *req // the latest transmission's tag and low-water mark
	a.req.Payload = nil
	a.req.Flags &^= diskproto.FlagReport
	fresh, err := a.track.Add(0, 0, len(inline))
	if err != nil {
		s.stats.drop(dropBadSegment)
		return nil
	}
	if !fresh {
		s.stats.dupSegments.Add(1)
		return nil
	}
	a.placed(0, copy(*a.buf, inline))
	s.stats.segments.Add(1)
	return s.detachIfComplete(sess, i)
}

// detachIfComplete takes session slot i's assembly out of the table when
// all of its data has arrived. Called with mu held.
func (s *Server) detachIfComplete(sess *session, i uint64) *assembly {
	a := sess.asm[i]
	if !a.track.Complete() {
		return nil
	}
	sess.asm[i] = nil
	s.asmBytes -= s.cfg.MaxIO
	return a
}

// freeAssembly drops session slot i's assembly. Called with mu held.
func (s *Server) freeAssembly(sess *session, i uint64) {
	if a := sess.asm[i]; a != nil {
		sess.asm[i] = nil
		s.asmBytes -= s.cfg.MaxIO
		s.big.Put(a.buf)
		s.stats.drop(dropAbandoned)
	}
}

// sweepAssemblies frees the assemblies that can no longer complete (their
// request is below the session's low-water mark) or that have waited
// longer than any retransmission would (a client that went away). Called
// with mu held when assembly memory runs out.
func (s *Server) sweepAssemblies() {
	old := time.Now().Add(-2 * time.Second)
	for _, sess := range s.sessions {
		for i, a := range sess.asm {
			if a != nil && (a.req.ReqID < sess.low || a.born.Before(old)) {
				s.freeAssembly(sess, uint64(i))
			}
		}
	}
}

// assembled checks a WRITE whose segments have all arrived end to end and
// runs it, unless its duplicate-cache slot says it already ran.
func (s *Server) assembled(pc dgram.Conn, sess *session, a *assembly, from netip.AddrPort) {
	req := a.req
	req.Payload = (*a.buf)[:req.Length]
	if a.crc.Sum(req.Payload) != req.PayloadCRC {
		s.big.Put(a.buf)
		s.reply(pc, from, &req, diskproto.CodeChecksum, nil)
		return
	}
	s.mu.Lock()
	w := uint64(len(sess.slots))
	sl := &sess.slots[req.ReqID%w]
	switch {
	case req.ReqID < sess.low:
		s.mu.Unlock()
		s.big.Put(a.buf)
		s.stats.drop(dropStale)
		return
	case sl.valid && sl.reqID == req.ReqID && !sl.done:
		s.mu.Unlock()
		s.big.Put(a.buf)
		s.stats.drop(dropInProgress)
		return
	case sl.valid && sl.reqID == req.ReqID && sl.cached:
		status := sl.status
		s.mu.Unlock()
		s.big.Put(a.buf)
		s.stats.duplicates.Add(1)
		s.reply(pc, from, &req, status, nil)
		return
	}
	if !s.enqueue(job{pc: pc, addr: from, req: req, sess: sess, buf: a.buf, pool: &s.big}) {
		s.big.Put(a.buf)
	}
}

// segment adds one data segment to the WRITE it belongs to. A segment of a
// WRITE whose header has not arrived is dropped: the client retransmits
// the whole request, header first.
func (s *Server) segment(pc dgram.Conn, b []byte, from netip.AddrPort) {
	seg, err := diskproto.ParseSegment(b)
	if err != nil || seg.Reply {
		s.stats.drop(dropBadSegment)
		return
	}
	s.mu.Lock()
	sess := s.sessions[sessionKey{seg.Session, from}]
	var a *assembly
	var i uint64
	if sess != nil {
		i = seg.ReqID % uint64(len(sess.asm))
		a = sess.asm[i]
	}
	if a == nil || a.req.ReqID != seg.ReqID {
		a = s.headless(sess, &seg)
	}
	if a == nil {
		s.orphan(pc, sess, &seg, from) // unlocks
		return
	}
	fresh, err := a.track.Add(int(seg.Index), seg.Offset, len(seg.Data))
	var done *assembly
	switch {
	case err != nil:
		s.stats.drop(dropBadSegment)
	case !fresh:
		s.stats.dupSegments.Add(1)
	default:
		n := copy((*a.buf)[seg.Offset:], seg.Data)
		a.placed(int(seg.Offset), n)
		s.stats.segments.Add(1)
		done = s.detachIfComplete(sess, i)
	}
	var sack *diskproto.SACK
	if done == nil && err == nil && seg.Flags&diskproto.FlagLast != 0 {
		// The end of a burst, and datagrams are missing: say which
		// arrived, so the client resends only the others.
		sack = &diskproto.SACK{Round: seg.Round, Session: seg.Session, ReqID: seg.ReqID,
			Length: a.req.Length, Bitmap: a.track.Held(nil)}
	}
	s.mu.Unlock()
	if done != nil {
		s.assembled(pc, sess, done, from)
	}
	if sack != nil {
		s.sendSACK(pc, from, sack)
	}
}

// headless starts the assembly of a WRITE whose segment came before its
// header's datagram (that one lost), so that what arrives is kept and the
// SACK asks for the header alone; nil when the request id is outside the
// session's window, its slot has run or is running it, or memory is
// short. Called with mu held.
func (s *Server) headless(sess *session, seg *diskproto.Segment) *assembly {
	if sess == nil || seg.ReqID < sess.low || seg.ReqID-sess.low >= uint64(len(sess.slots)) {
		return nil
	}
	w := uint64(len(sess.slots))
	if sl := sess.slots[seg.ReqID%w]; sl.valid && sl.reqID == seg.ReqID {
		return nil // finished or running: orphan answers
	}
	i := seg.ReqID % uint64(len(sess.asm))
	if old := sess.asm[i]; old != nil {
		if old.req.ReqID > seg.ReqID {
			return nil // a later request holds the slot: this is stale
		}
		s.freeAssembly(sess, i)
	}
	if s.asmBytes+s.cfg.MaxIO > s.cfg.MaxAssembly {
		s.sweepAssemblies()
	}
	if s.asmBytes+s.cfg.MaxIO > s.cfg.MaxAssembly {
		s.stats.drop(dropAssemblyFull)
		return nil
	}
	a := &assembly{buf: s.big.Get().(*[]byte), born: time.Now(), headless: true,
		req: diskproto.Request{Op: diskproto.OpWrite, Session: seg.Session, ReqID: seg.ReqID}}
	a.track.Reset(uint32(s.cfg.MaxIO))
	s.asmBytes += s.cfg.MaxIO
	sess.asm[i] = a
	return a
}

// orphan handles a data segment of no WRITE being assembled: its header
// was lost, or the WRITE completed. Only the last datagram of a burst is
// answered: with the cached status of a finished WRITE, or with an empty
// SACK (nothing held: the client resends it all, header first). Called
// with mu held; returns with it free.
func (s *Server) orphan(pc dgram.Conn, sess *session, seg *diskproto.Segment, from netip.AddrPort) {
	s.stats.drop(dropOrphanSegment)
	if seg.Flags&diskproto.FlagLast == 0 || sess == nil || seg.ReqID < sess.low ||
		seg.ReqID-sess.low >= uint64(len(sess.slots)) {
		s.mu.Unlock()
		return
	}
	sl := sess.slots[seg.ReqID%uint64(len(sess.slots))]
	switch {
	case sl.valid && sl.reqID == seg.ReqID && !sl.done:
		s.mu.Unlock() // running: its reply is coming
	case sl.valid && sl.reqID == seg.ReqID && sl.cached:
		s.mu.Unlock()
		s.stats.duplicates.Add(1)
		req := diskproto.Request{Op: diskproto.OpWrite, Session: seg.Session, ReqID: seg.ReqID}
		s.reply(pc, from, &req, sl.status, nil)
	default:
		s.mu.Unlock()
		s.sendSACK(pc, from, &diskproto.SACK{Round: seg.Round, Session: seg.Session, ReqID: seg.ReqID})
	}
}

// check validates a data request's range against the device.
func (s *Server) check(req *diskproto.Request) diskproto.Code {
	if req.Op == diskproto.OpFlush {
		if req.Length != 0 || req.Offset != 0 {
			return diskproto.CodeBadRequest
		}
		return diskproto.CodeOK
	}
	switch {
	case req.Length == 0:
		return diskproto.CodeInvalid
	case req.Length > uint32(s.cfg.MaxIO):
		return diskproto.CodeTooBig
	case req.Offset > s.size || uint64(req.Length) > s.size-req.Offset:
		return diskproto.CodeRange
	}
	return diskproto.CodeOK
}

// openSession registers (or refreshes) the INFO sender's session.
func (s *Server) openSession(req *diskproto.Request, from netip.AddrPort) {
	key := sessionKey{req.Session, from}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clock++
	if sess := s.sessions[key]; sess != nil {
		sess.lastUse = s.clock
		sess.low = max(sess.low, req.Low)
		return
	}
	if len(s.sessions) >= s.cfg.MaxSessions {
		var oldest sessionKey
		var min uint64 = ^uint64(0)
		for k, v := range s.sessions {
			if v.lastUse < min {
				oldest, min = k, v.lastUse
			}
		}
		for i := range s.sessions[oldest].asm {
			s.freeAssembly(s.sessions[oldest], uint64(i))
		}
		delete(s.sessions, oldest)
		s.stats.evictions.Add(1)
	}
	s.sessions[key] = &session{low: req.Low, lastUse: s.clock, slots: make([]slot, s.cfg.Window),
		asm: make([]*assembly, s.cfg.Window)}
}

func (s *Server) worker() {
	defer s.workers.Done()
	var w workerScratch
	for j := range s.jobs {
		s.run(&j, &w)
		if j.buf != nil {
			j.pool.Put(j.buf)
		}
	}
}

// workerScratch is a worker's reusable send state.
type workerScratch struct {
	msgs   []dgram.Message
	iovs   [][]byte
	gather gatherScratch // gather.go
}

// run executes one request on the backing file and answers it.
func (s *Server) run(j *job, w *workerScratch) {
	req := &j.req
	if h := s.runHook.Load(); h != nil {
		(*h)(req)
	}
	off := int64(req.Offset)
	status := diskproto.CodeOK
	switch req.Op {
	case diskproto.OpRead:
		ob := s.outs.Get().(*[]byte)
		var kept, handled bool
		if g, ok := j.pc.(runGatherer); ok {
			status, handled, kept = s.readGathered(j, g, ob, w) // gather.go
		}
		if !handled {
			status, kept = s.readReply(j, ob, w) // records the outcome (finish) before it sends
		}
		if !kept {
			s.outs.Put(ob)
		}
		if status == diskproto.CodeOK {
			return
		}
	case diskproto.OpWrite:
		if err := s.writeData(req.Payload, off); err != nil {
			s.log.Warn("disk: write failed", "off", off, "len", req.Length, "err", err)
			status = diskproto.CodeIO
		} else if req.Flags&diskproto.FlagFUA != 0 {
			status = s.sync()
		}
		if status == diskproto.CodeOK {
			s.stats.bytesWritten.Add(uint64(req.Length))
		}
		s.finish(j, status, true)
	case diskproto.OpFlush:
		status = s.sync()
		s.finish(j, status, true)
	case diskproto.OpTrim:
		status = s.trim(off, int64(req.Length))
		s.finish(j, status, true)
	}
	s.reply(j.pc, j.addr, req, status, nil)
}

// finish records a request's outcome in its duplicate-cache slot, unless
// the slot has moved on (the client gave the request up meanwhile).
func (s *Server) finish(j *job, status diskproto.Code, cache bool) {
	s.mu.Lock()
	sl := &j.sess.slots[j.req.ReqID%uint64(len(j.sess.slots))]
	if sl.valid && sl.reqID == j.req.ReqID {
		sl.done, sl.cached, sl.status = true, cache, status
	}
	s.mu.Unlock()
}

// sending marks a READ finished with its reply about to leave; sent (below)
// ends that, once the last datagram was handed to the socket.
func (s *Server) sending(j *job) {
	s.mu.Lock()
	sl := &j.sess.slots[j.req.ReqID%uint64(len(j.sess.slots))]
	if sl.valid && sl.reqID == j.req.ReqID {
		sl.done, sl.sending = true, true
	}
	s.mu.Unlock()
}

// sent records that the whole reply to READ reqID of sess has left.
func (s *Server) sent(sess *session, reqID uint64) {
	s.mu.Lock()
	sl := &sess.slots[reqID%uint64(len(sess.slots))]
	if sl.valid && sl.reqID == reqID {
		sl.sending = false
	}
	s.mu.Unlock()
}

func (s *Server) sync() diskproto.Code {
	s.stats.syncs.Add(1)
	if err := unix.Fdatasync(s.fd); err != nil {
		s.log.Error("disk: fdatasync failed", "err", err)
		return diskproto.CodeIO
	}
	return diskproto.CodeOK
}

// trim is the storage protocol's TRIM (punch).
func (s *Server) trim(off, n int64) diskproto.Code {
	if err := s.punch(off, n); err != nil {
		s.log.Warn("disk: trim failed", "off", off, "len", n, "err", err)
		return diskproto.CodeIO
	}
	return diskproto.CodeOK
}

// punch discards [off, off+n) for both front ends' TRIMs (the storage
// protocol's trim, the NBD front end's Trim): a hole where the file
// system can punch one, zeros written where it cannot, so the range
// always reads back as zeros. The range is held against gathered READ
// replies meanwhile (gather.go), as every write to the device is.
func (s *Server) punch(off, n int64) error {
	held := s.ranges.lock(off, n, true)
	defer s.ranges.unlock(held, true)
	err := s.control(func(fd int) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	})
	if err == nil {
		s.clearHeld(off, n)
		return nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	if _, err := s.file.WriteAt(make([]byte, n), off); err != nil {
		return err
	}
	s.markHeld(off, n)
	return nil
}

// replyLayout is how a READ's reply is cut into datagrams: the size the
// request asks for, or the server's.
func (s *Server) replyLayout(req *diskproto.Request) diskproto.Layout {
	l := diskproto.Layout{Header: diskproto.ReplyHeaderSize, Length: int(req.Length), Datagram: s.cfg.Datagram}
	if req.ReplyDatagram != 0 {
		l.Datagram = int(req.ReplyDatagram)
	}
	return l
}

// replyPlan marshals a READ's reply header (crc: its data's) into hdr and
// returns the bitmap of the datagrams the client holds already (FlagHave;
// nil: none) and the last datagram to send, whose segment is marked
// FlagLast. readReply and readGathered (gather.go) share it.
func (s *Server) replyPlan(req *diskproto.Request, count int, crc uint32, hdr []byte) (have []byte, last int) {
	rep := diskproto.Reply{Op: req.Op, Tag: req.Tag, Session: req.Session, ReqID: req.ReqID,
		Epoch: s.epoch, Length: req.Length, PayloadCRC: crc}
	rep.MarshalHeader(hdr)
	if req.Flags&diskproto.FlagHave != 0 {
		have = req.Payload
	}
	last = count - 1
	for last > 0 && diskproto.BitmapHas(have, last) {
		last--
	}
	return have, last
}

// putReadSegment writes the segment header of a READ reply's datagram i
// (i > 0) into h.
func putReadSegment(h []byte, req *diskproto.Request, l diskproto.Layout, i, last int) {
	_, _, dataOff := l.Data(i)
	var f diskproto.SegmentFlags
	if i == last {
		f = diskproto.FlagLast
	}
	diskproto.PutSegmentHeaderRound(h, true, uint16(i), uint32(dataOff), req.Session, req.ReqID, f, uint8(req.Tag))
}

// countRead counts a READ reply about to leave: a resend of segments the
// client lacks, or the read's bytes.
func (s *Server) countRead(req *diskproto.Request, resend bool, segments int) {
	if resend {
		s.stats.resentReads.Add(1)
		s.stats.resentSegments.Add(uint64(segments))
	} else {
		s.stats.bytesRead.Add(uint64(req.Length))
	}
}

// readReply reads a READ's data straight into its reply's datagrams (the
// reply header's and the segments') with preadv, seals them and sends
// them as one batch, which the user-level stack turns into GSO
// super-frames. A READ with FlagHave gets only the datagrams its bitmap
// lacks. The last datagram sent is marked FlagLast and every segment
// carries the request's round (its tag's low byte), so the client reports
// a loss at once. The slot is marked done (and sending) before the data
// leaves: a report with FlagHave that arrives while the worker is still
// sending is run, not answered "in progress"; a retransmission without
// FlagHave is answered CodeInProgress until the last datagram left, then
// CodeSent. A READ that carries a pace rate (version 4) leaves paced
// (pace.go); kept reports that the pacer took obuf.
func (s *Server) readReply(j *job, obuf *[]byte, w *workerScratch) (_ diskproto.Code, kept bool) {
	ob := *obuf
	req := &j.req
	l := s.replyLayout(req)
	count := l.Count()
	w.iovs = w.iovs[:0]
	for i := range count {
		a, b, _ := l.Data(i)
		w.iovs = append(w.iovs, ob[a:b])
	}
	// A snapshot: no write to the range while it is copied (gather.go).
	held := s.ranges.lock(int64(req.Offset), int64(req.Length), false)
	crc, err := s.readInto(w.iovs, int64(req.Offset), int64(req.Length))
	s.ranges.unlock(held, false)
	if err != nil {
		s.log.Warn("disk: read failed", "off", req.Offset, "len", req.Length, "err", err)
		s.finish(j, diskproto.CodeIO, false)
		return diskproto.CodeIO, false
	}
	have, last := s.replyPlan(req, count, crc, ob)
	w.msgs = w.msgs[:0]
	for i := range count {
		if diskproto.BitmapHas(have, i) {
			continue
		}
		a, b := l.Span(i)
		if i > 0 {
			putReadSegment(ob[a:], req, l, i, last)
		}
		w.msgs = append(w.msgs, dgram.Message{Buf: ob[a:b], Addr: j.addr})
	}
	s.countRead(req, have != nil, len(w.msgs))
	s.sending(j)
	if rate := s.paceRate(req.PaceRate); rate != 0 {
		s.stats.pacedReads.Add(1)
		if s.paceSend(j.pc, j.sess, req.ReqID, obuf, w.msgs, rate) {
			return diskproto.CodeOK, true // the pacer calls sent
		}
	} else {
		s.sendAll(j.pc, w.msgs)
	}
	s.sent(j.sess, req.ReqID)
	return diskproto.CodeOK, false
}

// readInto fills iovs (n bytes in all) with the device's data at off and
// returns its CRC-32C: copied out of the mapping, each datagram's share
// summed while it is in cache, where every page is held; else preadv'd
// from the file and summed after.
func (s *Server) readInto(iovs [][]byte, off, n int64) (crc uint32, err error) {
	s.mem.mu.RLock()
	if s.mem.b != nil && s.allHeld(off, n) {
		err = guardFault(func() {
			at := off
			for _, v := range iovs {
				copy(v, s.mem.b[at:])
				crc = diskproto.UpdateChecksum(crc, v)
				at += int64(len(v))
			}
		})
		s.mem.mu.RUnlock()
		return crc, err
	}
	s.mem.mu.RUnlock()
	if err := preadFull(s.fd, iovs, off); err != nil {
		return 0, err
	}
	for _, v := range iovs {
		crc = diskproto.UpdateChecksum(crc, v)
	}
	return crc, nil
}

// writeData writes p at off: into the mapping, or the file.
func (s *Server) writeData(p []byte, off int64) error {
	held := s.ranges.lock(off, int64(len(p)), true) // not under a gathered READ's send
	defer s.ranges.unlock(held, true)
	if ok, err := s.writeMapped(p, off); ok {
		return err
	}
	_, err := s.file.WriteAt(p, off)
	if err == nil {
		s.markHeld(off, int64(len(p)))
	}
	return err
}

// readData reads len(p) bytes at off: from the mapping where every page
// is held, else the file.
func (s *Server) readData(p []byte, off int64) error {
	if ok, err := s.readMapped(p, off); ok {
		return err
	}
	_, err := s.file.ReadAt(p, off)
	return err
}

// preadFull fills iovs from the backing file at off; a hole or the end of
// the file reads as zeros (the file is as long as the device).
func preadFull(fd int, iovs [][]byte, off int64) error {
	const iovMax = 1024
	for len(iovs) > 0 {
		batch := iovs[:min(len(iovs), iovMax)]
		n, err := unix.Preadv(fd, batch, off)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		if n == 0 {
			for _, v := range iovs {
				clear(v)
			}
			return nil
		}
		off += int64(n)
		for n > 0 && len(iovs) > 0 {
			if n >= len(iovs[0]) {
				n -= len(iovs[0])
				iovs = iovs[1:]
				continue
			}
			iovs[0] = iovs[0][n:]
			n = 0
		}
	}
	return nil
}

// sendAll sends msgs, counting what could not be sent.
func (s *Server) sendAll(pc dgram.Conn, msgs []dgram.Message) {
	if n, err := dgram.WriteAll(pc, msgs); err != nil {
		s.stats.drops[dropSendFailed].Add(uint64(len(msgs) - n))
	}
}

// reply sends a header-only reply (or an INFO payload) to req.
func (s *Server) reply(pc dgram.Conn, addr netip.AddrPort, req *diskproto.Request, status diskproto.Code, payload []byte) {
	if status != diskproto.CodeOK {
		s.stats.errors[min(int(status), diskproto.NumCodes-1)].Add(1)
	}
	rep := diskproto.Reply{Op: req.Op, Status: status, Tag: req.Tag, Session: req.Session,
		ReqID: req.ReqID, Epoch: s.epoch, Payload: payload}
	var b [diskproto.ReplyHeaderSize + diskproto.InfoPayloadSize]byte
	n, err := rep.Marshal(b[:])
	if err != nil { // payloads here are INFO at most: cannot happen
		s.stats.drop(dropSendFailed)
		return
	}
	s.send(pc, addr, b[:n])
}

func (s *Server) send(pc dgram.Conn, addr netip.AddrPort, b []byte) {
	m := [1]dgram.Message{{Buf: b, Addr: addr}}
	s.sendAll(pc, m[:])
}

// Close stops every Serve, waits for requests in progress, makes written
// data durable and closes the backing file.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.closing.Store(true)
	for pc := range s.conns {
		pc.SetReadDeadline(time.Unix(1, 0))
	}
	s.mu.Unlock()
	s.serving.Wait()
	close(s.jobs)
	s.workers.Wait()
	close(s.pacer.stop) // replies still waiting for their slots are dropped: READs are retried
	<-s.pacer.done
	err := unix.Fdatasync(s.fd)
	if uerr := s.unmap(); err == nil {
		err = uerr
	}
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	return err
}
