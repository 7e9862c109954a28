package disk

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/peripherals/disk/diskproto"
)

// Defaults of Config's zero fields.
const (
	DefaultBlockSize   = 4096
	DefaultWindow      = 32
	DefaultMaxIO       = 15 * 4096 // the largest block multiple that fits one datagram
	DefaultWorkers     = 8
	DefaultQueue       = 256
	DefaultMaxSessions = 1024
)

// Errors of NewServer and Serve.
var (
	ErrConfig = errors.New("disk: bad configuration")
	ErrClosed = errors.New("disk: server closed")
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
	// INFO; at most diskproto.MaxPayload.
	MaxIO int
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
	bufs    sync.Pool

	mu       sync.Mutex
	sessions map[sessionKey]*session
	conns    map[net.PacketConn]struct{}
	closed   bool
	closing  atomic.Bool // closed, readable without mu on every datagram
	serving  sync.WaitGroup
	clock    uint64 // LRU ticks

	stats counters
	xfer  transferCounters // transfer.go
}

type sessionKey struct {
	id   uint64
	ap   netip.AddrPort // UDP peers: no allocation per lookup
	addr string         // other net.Addr kinds
}

func keyOf(id uint64, addr net.Addr) sessionKey {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return sessionKey{id: id, ap: ua.AddrPort()}
	}
	return sessionKey{id: id, addr: addr.Network() + " " + addr.String()}
}

type session struct {
	low     uint64
	lastUse uint64
	slots   []slot
}

// slot is one entry of a session's duplicate-request cache, indexed by
// request id modulo the window.
type slot struct {
	reqID  uint64
	valid  bool
	done   bool
	cached bool // reply holds the answer to replay (non-idempotent ops)
	status diskproto.Code
}

type job struct {
	pc   net.PacketConn
	addr net.Addr
	req  diskproto.Request
	buf  *[]byte
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
	switch {
	case cfg.BlockSize < 512 || cfg.BlockSize&(cfg.BlockSize-1) != 0:
		return nil, fmt.Errorf("%w: block size %d is not a power of two >= 512", ErrConfig, cfg.BlockSize)
	case cfg.MaxIO < 1 || cfg.MaxIO > diskproto.MaxPayload:
		return nil, fmt.Errorf("%w: max I/O %d not in [1, %d]", ErrConfig, cfg.MaxIO, diskproto.MaxPayload)
	case cfg.Window < 1 || cfg.Window > diskproto.MaxWindow || cfg.Workers < 1 || cfg.Queue < 1 || cfg.MaxSessions < 1:
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
	for range cfg.Workers {
		s.workers.Add(1)
		go s.worker()
	}
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
// setting one in the past.
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
	defer func() {
		s.mu.Lock()
		delete(s.conns, pc)
		s.mu.Unlock()
		s.serving.Done()
	}()
	buf := s.bufs.Get().(*[]byte)
	for {
		n, addr, err := pc.ReadFrom(*buf)
		if s.closing.Load() {
			s.bufs.Put(buf)
			return nil
		}
		if err != nil {
			s.bufs.Put(buf)
			return fmt.Errorf("disk: serve: read: %w", err)
		}
		if n > diskproto.MaxDatagram {
			s.stats.drop(dropOversize)
			continue
		}
		if s.handle(pc, buf, n, addr) {
			buf = s.bufs.Get().(*[]byte) // the job owns the old one
		}
	}
}

// handle parses one datagram and answers it, drops it or hands it to a
// worker; it reports whether a worker took buf.
func (s *Server) handle(pc net.PacketConn, buf *[]byte, n int, addr net.Addr) bool {
	req, err := diskproto.ParseRequest((*buf)[:n])
	if err != nil {
		code, ok := diskproto.ReplyCode(err)
		if !ok {
			s.stats.drop(dropReasonOf(err))
			return false
		}
		s.reply(pc, addr, &req, code, nil)
		return false
	}
	s.stats.requests[req.Op].Add(1)
	if err := s.cfg.Authorizer.Authorize(&req, addr); err != nil {
		s.reply(pc, addr, &req, diskproto.CodeDenied, nil)
		return false
	}
	if req.Op == diskproto.OpTransfer {
		s.transfer(pc, addr, &req) // transfer.go: runs in a goroutine of its own
		return false
	}
	if req.Op == diskproto.OpInfo {
		s.openSession(&req, addr)
		s.reply(pc, addr, &req, diskproto.CodeOK, s.Info().Marshal())
		return false
	}
	if code := s.check(&req); code != diskproto.CodeOK {
		s.reply(pc, addr, &req, code, nil)
		return false
	}

	s.mu.Lock()
	sess := s.sessions[keyOf(req.Session, addr)]
	if sess == nil || req.Epoch != s.epoch {
		s.mu.Unlock()
		s.reply(pc, addr, &req, diskproto.CodeNoSession, nil)
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
		s.reply(pc, addr, &req, diskproto.CodeWindow, nil)
		return false
	}
	sl := &sess.slots[req.ReqID%w]
	if sl.valid && sl.reqID == req.ReqID {
		if !sl.done {
			s.mu.Unlock()
			s.stats.drop(dropInProgress) // the first copy's reply is coming
			return false
		}
		if sl.cached {
			status := sl.status
			s.mu.Unlock()
			s.stats.duplicates.Add(1)
			s.reply(pc, addr, &req, status, nil)
			return false
		}
		// A finished READ: idempotent, run it again.
	}
	*sl = slot{reqID: req.ReqID, valid: true}
	s.mu.Unlock()

	select {
	case s.jobs <- job{pc: pc, addr: addr, req: req, buf: buf, sess: sess}:
		return true
	default:
		s.mu.Lock()
		if sl.reqID == req.ReqID {
			sl.valid = false // let the retransmission run it
		}
		s.mu.Unlock()
		s.stats.drop(dropQueueFull)
		return false
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
func (s *Server) openSession(req *diskproto.Request, addr net.Addr) {
	key := keyOf(req.Session, addr)
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
		delete(s.sessions, oldest)
		s.stats.evictions.Add(1)
	}
	s.sessions[key] = &session{low: req.Low, lastUse: s.clock, slots: make([]slot, s.cfg.Window)}
}

func (s *Server) worker() {
	defer s.workers.Done()
	for j := range s.jobs {
		s.run(&j)
		s.bufs.Put(j.buf)
	}
}

// run executes one request on the backing file and answers it.
func (s *Server) run(j *job) {
	req := &j.req
	off := int64(req.Offset)
	status := diskproto.CodeOK
	switch req.Op {
	case diskproto.OpRead:
		rb := s.bufs.Get().(*[]byte)
		defer s.bufs.Put(rb)
		data := (*rb)[diskproto.ReplyHeaderSize : diskproto.ReplyHeaderSize+int(req.Length)]
		if _, err := s.file.ReadAt(data, off); err != nil && !errors.Is(err, io.EOF) {
			s.log.Warn("disk: read failed", "off", off, "len", req.Length, "err", err)
			status = diskproto.CodeIO
		}
		s.finish(j, status, false)
		if status == diskproto.CodeOK {
			s.stats.bytesRead.Add(uint64(req.Length))
			rep := diskproto.Reply{Op: req.Op, Tag: req.Tag, Session: req.Session, ReqID: req.ReqID,
				Epoch: s.epoch, Payload: data}
			rep.MarshalHeader(*rb)
			s.send(j.pc, j.addr, (*rb)[:diskproto.ReplyHeaderSize+len(data)])
			return
		}
	case diskproto.OpWrite:
		if _, err := s.file.WriteAt(req.Payload, off); err != nil {
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

func (s *Server) sync() diskproto.Code {
	s.stats.syncs.Add(1)
	if err := unix.Fdatasync(s.fd); err != nil {
		s.log.Error("disk: fdatasync failed", "err", err)
		return diskproto.CodeIO
	}
	return diskproto.CodeOK
}

// trim punches a hole; where the file system cannot, it writes zeros, so
// a trimmed range always reads back as zeros.
func (s *Server) trim(off, n int64) diskproto.Code {
	err := unix.Fallocate(s.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return diskproto.CodeOK
	}
	if !errors.Is(err, unix.EOPNOTSUPP) {
		s.log.Warn("disk: trim failed", "off", off, "len", n, "err", err)
		return diskproto.CodeIO
	}
	zeros := make([]byte, n)
	if _, err := s.file.WriteAt(zeros, off); err != nil {
		return diskproto.CodeIO
	}
	return diskproto.CodeOK
}

// reply sends a header-only reply (or an INFO payload) to req.
func (s *Server) reply(pc net.PacketConn, addr net.Addr, req *diskproto.Request, status diskproto.Code, payload []byte) {
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

func (s *Server) send(pc net.PacketConn, addr net.Addr, b []byte) {
	if _, err := pc.WriteTo(b, addr); err != nil {
		s.stats.drop(dropSendFailed)
	}
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
	err := unix.Fdatasync(s.fd)
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	return err
}
