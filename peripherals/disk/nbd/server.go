package nbd

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/internal/accept"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
)

// Backend is the block device an NBD Server exports. *disk.Server is the
// one used in netstation; tests may supply others.
type Backend interface {
	Size() uint64
	BlockSize() int
	// OpenMode reports whether the all-zero capability is accepted (the
	// export "disk0" is listed and usable).
	OpenMode() bool
	// Authorize is called for every request with its storage-protocol
	// view (valid only during the call: it is reused); a non-nil error
	// refuses it with EPERM.
	Authorize(req *diskproto.Request, from net.Addr) error
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
	Trim(off int64, n int, fua bool) error
}

// PieceWriter is a Backend that takes a WRITE's data in pieces as it
// arrives, as *disk.Server does. With a connection that lends its receive
// buffer (ViewReader), a WRITE's payload then goes from the TCP receive
// ring into the backing file in one copy, on the reading goroutine, with
// no buffer of its own and no hand-off to another goroutine.
type PieceWriter interface {
	// WritePieceAt writes p at off: one piece of a WRITE whose range was
	// checked. It counts bytes, not requests.
	WritePieceAt(p []byte, off int64) error
	// WriteDone ends a WRITE written in pieces: it counts the request
	// and, with fua, makes the data durable before it returns.
	WriteDone(fua bool) error
}

// PieceReader is a Backend that reads a READ's data in pieces, as
// *disk.Server does. With a connection that lends its send buffer
// (ViewWriter), a large READ is read from the file straight into the TCP
// send ring, in one copy and with no buffer of its own.
type PieceReader interface {
	// ReadPieceAt reads len(p) bytes at off: one piece of a READ whose
	// range was checked. It counts bytes, not requests.
	ReadPieceAt(p []byte, off int64) error
	// ReadDone counts a READ read in pieces.
	ReadDone()
}

// ViewWriter is a connection that lends views of free space in its send
// buffer instead of copying into it, as *tcp.Conn of package stack/tcp
// does (see its WriteFunc): fn fills up to max bytes in place, in one or
// two pieces, and returns how many it filled.
type ViewWriter interface {
	WriteFunc(max int, fn func(a, b []byte) int) (int, error)
}

// ViewReader is a connection that lends views of its receive buffer
// instead of copying out of it, as *tcp.Conn of package stack/tcp does
// (see its ReadFunc): fn gets up to max bytes in place, in one or two
// pieces, and returns how many it used.
type ViewReader interface {
	ReadFunc(max int, fn func(a, b []byte) int) (int, error)
}

var (
	_ Backend     = (*disk.Server)(nil)
	_ Admitter    = (*disk.Server)(nil)
	_ PieceWriter = (*disk.Server)(nil)
	_ PieceReader = (*disk.Server)(nil)
)

// OpenExport is the export name of open mode: the all-zero capability.
// The empty (default) export name means the same.
const OpenExport = "disk0"

// Defaults of Config's zero fields.
const (
	DefaultMaxInFlight      = 16
	DefaultMaxBuffered      = 64 << 20
	DefaultHandshakeTimeout = 10 * time.Second
)

// Errors.
var (
	ErrConfig = errors.New("nbd: bad configuration")
	ErrClosed = fmt.Errorf("nbd: server closed: %w", net.ErrClosed)
	// ErrProtocol is wrapped by the reasons a connection was dropped for
	// breaking the protocol (bad magic, an oversized write, ...).
	ErrProtocol = errors.New("nbd: protocol violation")
)

// Config describes an NBD server.
type Config struct {
	Backend Backend
	// MaxInFlight bounds the requests of one connection that run at once
	// (default DefaultMaxInFlight).
	MaxInFlight int
	// MaxBuffered bounds the READ and WRITE data of one connection's
	// requests in flight (default DefaultMaxBuffered); a single request
	// larger than it runs alone.
	MaxBuffered int
	// HandshakeTimeout bounds the negotiation phase, so a client that
	// connects and stalls does not hold a connection forever.
	HandshakeTimeout time.Duration
	// PollBudget, on a connection that can poll (stack/tcp's SetPollBudget),
	// is how long its request reader drives the network itself before it
	// sleeps: a client at queue depth 1 and a sender waiting on ACKs get
	// them without a wake-up. 0: the connection's default.
	PollBudget time.Duration
	Logger     *slog.Logger
}

// Server serves NBD connections.
type Server struct {
	cfg Config
	log *slog.Logger

	conns accept.Group

	stats Stats
}

// Stats are a Server's counters.
type Stats struct {
	Conns, Requests, Errors, Refused, ProtocolErrors atomic.Uint64
	BytesRead, BytesWritten                          atomic.Uint64
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Backend == nil {
		return nil, fmt.Errorf("%w: no Backend", ErrConfig)
	}
	if cfg.MaxInFlight < 0 || cfg.MaxBuffered < 0 || cfg.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("%w: negative limit", ErrConfig)
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxBuffered == 0 {
		cfg.MaxBuffered = DefaultMaxBuffered
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// Stats returns the Server's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Serve accepts connections on ln and serves each until Close (then it
// returns nil) or until Accept fails. It does not close ln except from
// Close.
func (s *Server) Serve(ln net.Listener) error {
	err := s.conns.Serve(ln, func(c net.Conn, _ uint64) {
		if err := s.serveConn(c); err != nil {
			s.log.Debug("nbd: connection ended", "remote", c.RemoteAddr(), "err", err)
		}
	}, accept.Options{OnRetry: func(err error, wait time.Duration) {
		s.log.Warn("nbd: accept failed, backing off", "err", err, "wait", wait)
	}})
	switch {
	case errors.Is(err, accept.ErrClosed):
		return ErrClosed
	case err != nil:
		return fmt.Errorf("nbd: %w", err)
	}
	return nil
}

// ServeConn serves one connection until the client disconnects, breaks
// the protocol or the Server closes, and closes c. It returns nil after a
// clean end (ABORT, DISC, EOF between requests).
func (s *Server) ServeConn(c net.Conn) error {
	var err error
	if rerr := s.conns.Run(c, func(c net.Conn) { err = s.serveConn(c) }); rerr != nil {
		return ErrClosed
	}
	return err
}

// serveConn serves c, a connection of s.conns, and releases it.
func (s *Server) serveConn(c net.Conn) error {
	defer s.conns.Release(c)
	s.stats.Conns.Add(1)
	if p, ok := c.(interface{ SetPollBudget(time.Duration) }); ok && s.cfg.PollBudget > 0 {
		p.SetPollBudget(s.cfg.PollBudget)
	}
	cc := &conn{s: s, c: c, be: s.cfg.Backend}
	var sid [8]byte
	rand.Read(sid[:])
	cc.session = binary.BigEndian.Uint64(sid[:])
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	field, ok, err := cc.negotiate()
	if err != nil || !ok {
		if errors.Is(err, ErrProtocol) {
			s.stats.ProtocolErrors.Add(1)
		}
		return err
	}
	c.SetDeadline(time.Time{})
	cc.cap = field
	err = cc.transmit()
	if errors.Is(err, ErrProtocol) {
		s.stats.ProtocolErrors.Add(1)
	}
	return err
}

// Close stops every Serve, closes every connection and waits for their
// requests in progress to finish.
func (s *Server) Close() error {
	if s.conns.Close() != nil {
		return ErrClosed
	}
	return nil
}

// conn is one client connection.
type conn struct {
	s       *Server
	c       net.Conn
	be      Backend
	fixed   bool // the client speaks fixed newstyle
	zeroes  bool // the 124 zero bytes follow EXPORT_NAME's answer
	session uint64
	reqID   uint64
	cap     [diskproto.CapabilitySize]byte

	wmu  sync.Mutex // one reply at a time
	werr error      // the first failed reply write; under wmu

	// The transmission phase's reader and the replies it ran inline,
	// owned by transmit's goroutine.
	br      *bufio.Reader
	out     []byte // inline replies not yet written, header and data
	scratch []byte // an inline WRITE's payload
	remote  net.Addr
	dreq    diskproto.Request // authorize's, reused: a request allocates nothing

	// Streamed WRITEs (PieceWriter and ViewReader both present): the
	// piece callback is made once, so lending the ring allocates nothing.
	pw       PieceWriter
	vr       ViewReader
	pieceFn  func(a, b []byte) int
	pieceOff int64
	pieceErr error

	// After a streamed WRITE the next request header is read from the
	// connection's views (readHeader), not through br: see readHeader.
	streaming bool
	hdr       [requestSize]byte
	hdrGot    int
	hdrFn     func(a, b []byte) int

	// Streamed READ replies (PieceReader and ViewWriter both present),
	// one at a time under wmu: the header, then the data read from the
	// file into the send ring.
	pr      PieceReader
	vw      ViewWriter
	replyFn func(a, b []byte) int
	rd      streamedRead
}

// streamedRead is the state of the READ reply being streamed.
type streamedRead struct {
	hdr       [simpleReplySize]byte
	hdrLeft   int // header bytes still to place
	off       int64
	left      int // data bytes still to read
	committed bool
	err       error
}

// Inline requests. A READ or WRITE of at most inlineMax bytes (and a
// refused request) runs on the reading goroutine and its reply joins out,
// which is written in one piece when no further request header is
// buffered (the next read may block), before a request that must wait
// for its payload or budget, or when out passes outFlush. Per request
// this saves a goroutine, its wake-up and one or two Writes (each a trip
// through the stack and a send system call): on a loaded host every
// thread wake-up costs a scheduling delay, and a QD1 client pays them
// all in latency. A QD32 client's burst of requests gets its replies in
// one Write. Larger requests still run concurrently on goroutines of
// their own, so a slow backing store overlaps the network.
const (
	inlineMax    = 128 << 10
	outFlush     = 256 << 10
	readerBuffer = 64 << 10
)

func (cc *conn) transmissionFlags() uint16 {
	// CAN_MULTI_CONN: every connection shares one backing file, and FLUSH
	// is an fdatasync of it, so a flush on any connection covers writes
	// completed on all of them.
	return transHasFlags | transSendFlush | transSendFUA | transSendTrim | transCanMultiConn
}

// exportCapability maps an export name to the capability it carries: the
// open export ("disk0" or "") is the all-zero one, else the name is the
// 64-byte capability in hex.
func exportCapability(name string) ([diskproto.CapabilitySize]byte, bool) {
	var c [diskproto.CapabilitySize]byte
	if name == OpenExport || name == "" {
		return c, true
	}
	if len(name) != 2*diskproto.CapabilitySize {
		return c, false
	}
	if _, err := hex.Decode(c[:], []byte(name)); err != nil {
		return c, false
	}
	return c, true
}

// negotiate runs the handshake. ok reports that the transmission phase
// begins with the returned capability; !ok with a nil error is a clean
// end (ABORT).
func (cc *conn) negotiate() (field [diskproto.CapabilitySize]byte, ok bool, err error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:], optMagic)
	binary.BigEndian.PutUint16(hello[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := cc.c.Write(hello[:]); err != nil {
		return field, false, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(cc.c, cf[:]); err != nil {
		return field, false, err
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^clientFlagsKnown != 0 {
		return field, false, fmt.Errorf("%w: unknown client flags %#x", ErrProtocol, flags)
	}
	cc.fixed = flags&flagFixedNewstyle != 0
	cc.zeroes = flags&flagNoZeroes == 0
	var hdr [16]byte
	for {
		if _, err := io.ReadFull(cc.c, hdr[:]); err != nil {
			return field, false, err
		}
		if m := binary.BigEndian.Uint64(hdr[0:]); m != optMagic {
			return field, false, fmt.Errorf("%w: bad option magic %#x", ErrProtocol, m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:])
		n := binary.BigEndian.Uint32(hdr[12:])
		if n > maxOptionData {
			return field, false, fmt.Errorf("%w: option %d carries %d bytes", ErrProtocol, opt, n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(cc.c, data); err != nil {
			return field, false, err
		}
		switch opt {
		case optExportName:
			c, known := exportCapability(string(data))
			if !known {
				// No way to answer an error here: the protocol says close.
				return field, false, fmt.Errorf("nbd: unknown export %q", truncate(data))
			}
			if err := cc.admit(c); err != nil {
				return field, false, fmt.Errorf("nbd: export refused: %w", err)
			}
			b := make([]byte, 10, 10+124)
			binary.BigEndian.PutUint64(b[0:], cc.be.Size())
			binary.BigEndian.PutUint16(b[8:], cc.transmissionFlags())
			if cc.zeroes {
				b = b[:10+124]
			}
			if _, err := cc.c.Write(b); err != nil {
				return field, false, err
			}
			return c, true, nil
		case optAbort:
			cc.optReply(opt, repAck, nil) // the client may not read it
			return field, false, nil
		case optList:
			if !cc.fixed {
				return field, false, fmt.Errorf("%w: LIST from an unfixed-newstyle client", ErrProtocol)
			}
			if n != 0 {
				err = cc.optError(opt, repErrInvalid, "LIST carries no data")
			} else {
				if cc.be.OpenMode() {
					b := binary.BigEndian.AppendUint32(nil, uint32(len(OpenExport)))
					b = append(b, OpenExport...)
					err = cc.optReply(opt, repServer, b)
				}
				if err == nil {
					err = cc.optReply(opt, repAck, nil)
				}
			}
		case optInfo, optGo:
			if !cc.fixed {
				return field, false, fmt.Errorf("%w: option %d from an unfixed-newstyle client", ErrProtocol, opt)
			}
			c, code, why := cc.info(data)
			if code != 0 {
				err = cc.optError(opt, code, why)
				break
			}
			var b [12]byte
			binary.BigEndian.PutUint16(b[0:], infoExport)
			binary.BigEndian.PutUint64(b[2:], cc.be.Size())
			binary.BigEndian.PutUint16(b[10:], cc.transmissionFlags())
			err = cc.optReply(opt, repInfo, b[:])
			if err == nil {
				// Sent whether or not it was asked for, as the protocol
				// allows: the limits hold anyway.
				var bs [14]byte
				binary.BigEndian.PutUint16(bs[0:], infoBlockSize)
				binary.BigEndian.PutUint32(bs[2:], 1)
				binary.BigEndian.PutUint32(bs[6:], uint32(cc.be.BlockSize()))
				binary.BigEndian.PutUint32(bs[10:], MaxPayload)
				err = cc.optReply(opt, repInfo, bs[:])
			}
			if err == nil {
				err = cc.optReply(opt, repAck, nil)
			}
			if err == nil && opt == optGo {
				return c, true, nil
			}
		default:
			// STRUCTURED_REPLY, STARTTLS, meta contexts, extended headers
			// and anything newer: clients fall back to what is left.
			if !cc.fixed {
				return field, false, fmt.Errorf("%w: option %d from an unfixed-newstyle client", ErrProtocol, opt)
			}
			err = cc.optError(opt, repErrUnsup, "option not supported")
		}
		if err != nil {
			return field, false, err
		}
	}
}

// info parses the data of INFO and GO and checks the export: code is 0 or
// the error reply to send.
func (cc *conn) info(data []byte) (field [diskproto.CapabilitySize]byte, code uint32, why string) {
	if len(data) < 6 {
		return field, repErrInvalid, "option data too short"
	}
	nl := binary.BigEndian.Uint32(data)
	if nl > maxNameLen || uint64(len(data)) < 6+uint64(nl) {
		return field, repErrInvalid, "bad export name length"
	}
	name := data[4 : 4+nl]
	nreq := binary.BigEndian.Uint16(data[4+nl:])
	if uint64(len(data)) != 6+uint64(nl)+2*uint64(nreq) {
		return field, repErrInvalid, "option length does not match its information requests"
	}
	c, known := exportCapability(string(name))
	if !known {
		return field, repErrUnknown, "no such export (use " + OpenExport + " or a capability in hex)"
	}
	if err := cc.admit(c); err != nil {
		return field, repErrPolicy, err.Error()
	}
	return c, 0, ""
}

// Admitter is a Backend that judges a capability at negotiation (as
// *disk.Server does through its disk.Admitter): a refused export is
// answered NBD_REP_ERR_POLICY with the refusal's words, which qemu-img
// and newer libnbd print, instead of a session whose every request fails.
type Admitter interface {
	Admit(field [diskproto.CapabilitySize]byte) error
}

// admit checks the export's capability: with the Backend's Admitter when
// it has one, else only open mode's rule (the all-zero capability).
func (cc *conn) admit(c [diskproto.CapabilitySize]byte) error {
	if a, ok := cc.be.(Admitter); ok {
		if err := a.Admit(c); err != nil {
			cc.s.stats.Refused.Add(1)
			return err
		}
		return nil
	}
	if c == [diskproto.CapabilitySize]byte{} && !cc.be.OpenMode() {
		return errors.New("this disk checks capabilities: the export name must be one, in hex")
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "..."
	}
	return string(b)
}

func (cc *conn) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, 20, 20+len(data))
	binary.BigEndian.PutUint64(b[0:], optReplyMagic)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], typ)
	binary.BigEndian.PutUint32(b[16:], uint32(len(data)))
	_, err := cc.c.Write(append(b, data...))
	return err
}

func (cc *conn) optError(opt, typ uint32, msg string) error {
	return cc.optReply(opt, typ, []byte(msg))
}

// request is a parsed transmission request.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// errBadRequestMagic is what parseRequest returns for a header that is not
// a request: the stream cannot be trusted any further.
var errBadRequestMagic = fmt.Errorf("%w: bad request magic", ErrProtocol)

func parseRequest(b []byte) (request, error) {
	if len(b) < requestSize {
		return request{}, fmt.Errorf("%w: short request header", ErrProtocol)
	}
	if binary.BigEndian.Uint32(b) != requestMagic {
		return request{}, errBadRequestMagic
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		offset: binary.BigEndian.Uint64(b[16:]),
		length: binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// check validates r against the export: 0 or the errno to answer.
func (cc *conn) check(r *request) uint32 {
	size := cc.be.Size()
	switch r.typ {
	case cmdFlush:
		if r.flags != 0 {
			return errInval
		}
		return 0
	case cmdRead, cmdWrite, cmdTrim:
	default:
		return errInval
	}
	if r.flags&^cmdFlagFUA != 0 || (r.typ == cmdRead && r.flags != 0) {
		return errInval
	}
	switch {
	case r.length == 0:
		return errInval
	case r.typ != cmdTrim && r.length > MaxPayload:
		return errOverflow
	case r.offset > size || uint64(r.length) > size-r.offset:
		if r.typ == cmdWrite {
			return errNoSpc
		}
		return errInval
	}
	return 0
}

var diskOps = [...]diskproto.Op{cmdRead: diskproto.OpRead, cmdWrite: diskproto.OpWrite,
	cmdFlush: diskproto.OpFlush, cmdTrim: diskproto.OpTrim}

// authorize asks the Backend's Authorizer about r's storage-protocol view.
func (cc *conn) authorize(r *request) error {
	cc.reqID++
	dr := &cc.dreq
	*dr = diskproto.Request{
		Op:         diskOps[r.typ],
		Length:     r.length,
		Offset:     r.offset,
		Session:    cc.session,
		ReqID:      cc.reqID,
		Capability: cc.cap,
	}
	if r.flags&cmdFlagFUA != 0 {
		dr.Flags = diskproto.FlagFUA
	}
	if r.typ == cmdFlush {
		dr.Length, dr.Offset = 0, 0
	}
	if cc.remote == nil {
		cc.remote = cc.c.RemoteAddr()
	}
	return cc.be.Authorize(dr, cc.remote)
}

// transmit runs the transmission phase: it reads requests and runs small
// ones inline and the others each on its own goroutine, bounded by the
// budget, until DISC, EOF or an error.
func (cc *conn) transmit() error {
	s := cc.s
	bud := newBudget(s.cfg.MaxInFlight, s.cfg.MaxBuffered)
	defer bud.drain()
	cc.br = bufio.NewReaderSize(cc.c, readerBuffer)
	cc.pw, _ = cc.be.(PieceWriter)
	cc.vr, _ = cc.c.(ViewReader)
	if cc.pw != nil && cc.vr != nil {
		cc.pieceFn = cc.writePiece
		cc.hdrFn = cc.takeHeader
	}
	cc.pr, _ = cc.be.(PieceReader)
	cc.vw, _ = cc.c.(ViewWriter)
	if cc.pr != nil && cc.vw != nil {
		cc.replyFn = cc.fillReply
	}
	hb := cc.hdr[:]
	for {
		if cc.br.Buffered() < requestSize {
			if err := cc.flush(); err != nil {
				return err
			}
		}
		if err := cc.readHeader(); err != nil {
			if err == io.EOF {
				return nil // the client went away between requests
			}
			return err
		}
		r, err := parseRequest(hb)
		if err != nil {
			return err
		}
		if r.typ == cmdDisc {
			return cc.flush() // the deferred drain finishes what is in flight
		}
		s.stats.Requests.Add(1)
		if code := cc.check(&r); code != 0 {
			if r.typ == cmdWrite {
				if r.length > MaxPayload {
					return fmt.Errorf("%w: WRITE of %d bytes, above %d", ErrProtocol, r.length, MaxPayload)
				}
				if err := cc.discard(int(r.length)); err != nil {
					return err
				}
			}
			s.stats.Errors.Add(1)
			cc.queueReply(r.handle, code)
			continue
		}
		if err := cc.authorize(&r); err != nil {
			if r.typ == cmdWrite {
				if err := cc.discard(int(r.length)); err != nil {
					return err
				}
			}
			s.stats.Refused.Add(1)
			cc.queueReply(r.handle, errPerm)
			continue
		}
		cc.streaming = false
		if r.typ == cmdWrite && (int(r.length) <= cc.br.Buffered() || cc.pieceFn != nil) {
			if err := cc.writeInline(&r); err != nil {
				return err
			}
			if len(cc.out) >= outFlush {
				if err := cc.flush(); err != nil {
					return err
				}
			}
			continue
		}
		cost := 0
		if r.typ == cmdRead || r.typ == cmdWrite {
			cost = int(r.length)
		}
		if cost > 0 && cost <= inlineMax {
			if err := cc.runInline(&r); err != nil {
				return err
			}
			if len(cc.out) >= outFlush {
				if err := cc.flush(); err != nil {
					return err
				}
			}
			continue
		}
		// Waiting for budget or payload: what ran inline goes out first.
		if err := cc.flush(); err != nil {
			return err
		}
		bud.acquire(cost)
		var buf *[]byte
		if cost > 0 && (r.typ != cmdRead || cc.replyFn == nil) {
			buf = getBuf(cost) // a streamed READ reply needs none
		}
		if r.typ == cmdWrite {
			if _, err := io.ReadFull(cc.br, (*buf)[:cost]); err != nil {
				putBuf(buf)
				bud.release(cost)
				return err
			}
		}
		gr := r // its own copy: r stays on the stack for inline requests
		go func() {
			defer bud.release(cost)
			cc.run(&gr, buf)
		}()
	}
}

// discard skips a refused WRITE's payload.
func (cc *conn) discard(n int) error {
	if cc.br.Buffered() < n {
		if err := cc.flush(); err != nil {
			return err
		}
	}
	_, err := cc.br.Discard(n)
	return err
}

// runInline executes a READ or WRITE of at most inlineMax bytes on the
// reading goroutine and queues its reply in out.
func (cc *conn) runInline(r *request) error {
	s := cc.s
	switch r.typ {
	case cmdRead:
		h := len(cc.out)
		cc.queueReply(r.handle, 0)
		n := len(cc.out)
		cc.out = grow(cc.out, int(r.length))
		if err := cc.be.ReadAt(cc.out[n:], int64(r.offset)); err != nil {
			cc.out = cc.out[:n]
			binary.BigEndian.PutUint32(cc.out[h+4:], cc.failed(r, err))
			return nil
		}
		s.stats.BytesRead.Add(uint64(r.length))
	case cmdWrite:
		if cc.br.Buffered() < int(r.length) {
			if err := cc.flush(); err != nil {
				return err
			}
		}
		if cc.scratch == nil {
			cc.scratch = make([]byte, inlineMax)
		}
		data := cc.scratch[:r.length]
		if _, err := io.ReadFull(cc.br, data); err != nil {
			return err
		}
		code := uint32(0)
		if err := cc.be.WriteAt(data, int64(r.offset), r.flags&cmdFlagFUA != 0); err != nil {
			code = cc.failed(r, err)
		} else {
			s.stats.BytesWritten.Add(uint64(r.length))
		}
		cc.queueReply(r.handle, code)
	}
	return nil
}

// writeInline runs a WRITE on the reading goroutine and queues its reply:
// straight from the reader's buffer when the whole payload is there, else
// streamed from the connection's receive ring into the Backend as it
// arrives (only with cc.pieceFn).
func (cc *conn) writeInline(r *request) error {
	n, fua := int(r.length), r.flags&cmdFlagFUA != 0
	if n <= cc.br.Buffered() {
		p, _ := cc.br.Peek(n) // cannot fail: n bytes are buffered
		err := cc.be.WriteAt(p, int64(r.offset), fua)
		cc.br.Discard(n)
		cc.wrote(r, err)
		return nil
	}
	// The client may wait for these replies before it sends the rest.
	if err := cc.flush(); err != nil {
		return err
	}
	cc.pieceOff, cc.pieceErr = int64(r.offset), nil
	if k := cc.br.Buffered(); k > 0 {
		p, _ := cc.br.Peek(k)
		cc.pieceErr = cc.pw.WritePieceAt(p, cc.pieceOff)
		cc.br.Discard(k)
		cc.pieceOff += int64(k)
		n -= k
	}
	// The reader's buffer is empty now, so reading the connection itself
	// keeps the stream in order.
	cc.streaming = true
	for n > 0 {
		k, err := cc.vr.ReadFunc(n, cc.pieceFn)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		n -= k
	}
	err := cc.pieceErr
	if done := cc.pw.WriteDone(fua && err == nil); err == nil {
		err = done
	}
	cc.wrote(r, err)
	return nil
}

// readHeader reads the next request header into cc.hdr. Through br, as a
// rule: one Read takes a burst of small requests at once, and a Read that
// finds nothing drives the network (the connection's poll budget), which
// is what a client at queue depth 1 waits for. After a streamed WRITE
// (cc.streaming) with br empty, it takes the header's bytes from the
// connection's views instead (cc.hdrFn): a Read here would pull the next
// WRITE's data through br (a copy out of the receive ring and another out
// of br), and when nothing was queued it would poll the link itself,
// taking the data in the poller's own buffers, which the stack copies
// into the ring. Waiting for the header in ReadFunc lets the receive
// goroutine take the frames in the link's lent buffers, and the payload
// then goes from them into the disk in one copy. Under fio's 1 MiB WRITEs
// at queue depth 8 the reader had polled 12-16 % of the frames off the
// link.
func (cc *conn) readHeader() error {
	if !cc.streaming || cc.hdrFn == nil || cc.br.Buffered() > 0 {
		_, err := io.ReadFull(cc.br, cc.hdr[:])
		return err
	}
	cc.hdrGot = 0
	for cc.hdrGot < requestSize {
		if _, err := cc.vr.ReadFunc(requestSize-cc.hdrGot, cc.hdrFn); err != nil {
			if err == io.EOF && cc.hdrGot > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// takeHeader is cc.hdrFn: it copies what it is lent of the header.
func (cc *conn) takeHeader(a, b []byte) int {
	k := copy(cc.hdr[cc.hdrGot:], a)
	k += copy(cc.hdr[cc.hdrGot+k:], b)
	cc.hdrGot += k
	return k
}

// writePiece is cc.pieceFn: it writes the views it is lent at pieceOff
// (after a failure it only consumes them) and uses all of them.
func (cc *conn) writePiece(a, b []byte) int {
	if cc.pieceErr == nil {
		cc.pieceErr = cc.pw.WritePieceAt(a, cc.pieceOff)
	}
	if cc.pieceErr == nil && len(b) > 0 {
		cc.pieceErr = cc.pw.WritePieceAt(b, cc.pieceOff+int64(len(a)))
	}
	cc.pieceOff += int64(len(a) + len(b))
	return len(a) + len(b)
}

// wrote counts a WRITE's outcome and queues its reply.
func (cc *conn) wrote(r *request, err error) {
	code := uint32(0)
	if err != nil {
		code = cc.failed(r, err)
	} else {
		cc.s.stats.BytesWritten.Add(uint64(r.length))
	}
	cc.queueReply(r.handle, code)
}

// grow extends b by n bytes, reallocating (doubling) only when its
// capacity is short.
func grow(b []byte, n int) []byte {
	if len(b)+n <= cap(b) {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, max(2*cap(b), len(b)+n, 4096))
	copy(nb, b)
	return nb
}

// failed counts and logs a Backend error and returns the errno to answer.
func (cc *conn) failed(r *request, err error) uint32 {
	cc.s.stats.Errors.Add(1)
	cc.s.log.Warn("nbd: request failed", "cmd", r.typ, "off", r.offset, "len", r.length, "err", err)
	return errnoOf(err)
}

// queueReply appends a simple reply header to out.
func (cc *conn) queueReply(handle uint64, code uint32) {
	cc.out = binary.BigEndian.AppendUint32(cc.out, simpleReplyMagic)
	cc.out = binary.BigEndian.AppendUint32(cc.out, code)
	cc.out = binary.BigEndian.AppendUint64(cc.out, handle)
}

// flush writes the inline replies in out in one Write.
func (cc *conn) flush() error {
	if len(cc.out) == 0 {
		return nil
	}
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return cc.werr
	}
	_, err := cc.c.Write(cc.out)
	cc.out = cc.out[:0]
	if err != nil {
		cc.werr = err
		cc.c.Close()
	}
	return err
}

// run executes one request on the Backend and answers it.
func (cc *conn) run(r *request, buf *[]byte) {
	s := cc.s
	if r.typ == cmdRead && buf == nil {
		cc.streamRead(r)
		return
	}
	fua := r.flags&cmdFlagFUA != 0
	var data []byte
	var err error
	switch r.typ {
	case cmdRead:
		data = (*buf)[:r.length]
		if err = cc.be.ReadAt(data, int64(r.offset)); err == nil {
			s.stats.BytesRead.Add(uint64(r.length))
		} else {
			data = nil
		}
	case cmdWrite:
		if err = cc.be.WriteAt((*buf)[:r.length], int64(r.offset), fua); err == nil {
			s.stats.BytesWritten.Add(uint64(r.length))
		}
	case cmdFlush:
		err = cc.be.Flush()
	case cmdTrim:
		err = cc.be.Trim(int64(r.offset), int(r.length), fua)
	}
	code := uint32(0)
	if err != nil {
		code = cc.failed(r, err)
	}
	cc.reply(r.handle, code, data)
	if buf != nil {
		putBuf(buf)
	}
}

// streamRead answers a READ by reading the file straight into the
// connection's send ring, behind the reply's header. A read that fails
// before anything was sent is answered with its errno; one that fails
// after the header went out cannot be (the header said success), so the
// connection is closed and the client sees no wrong data.
func (cc *conn) streamRead(r *request) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return
	}
	rd := &cc.rd
	*rd = streamedRead{hdrLeft: simpleReplySize, off: int64(r.offset), left: int(r.length)}
	binary.BigEndian.PutUint32(rd.hdr[0:], simpleReplyMagic)
	binary.BigEndian.PutUint64(rd.hdr[8:], r.handle)
	for rd.hdrLeft+rd.left > 0 && rd.err == nil {
		if _, err := cc.vw.WriteFunc(rd.hdrLeft+rd.left, cc.replyFn); err != nil {
			cc.werr = err
			cc.c.Close()
			return
		}
	}
	cc.pr.ReadDone()
	if rd.err == nil {
		cc.s.stats.BytesRead.Add(uint64(r.length))
		return
	}
	code := cc.failed(r, rd.err)
	if rd.committed {
		cc.werr = fmt.Errorf("nbd: READ failed after its reply began: %w", rd.err)
		cc.c.Close()
		return
	}
	// Nothing went out: the answer is the header alone, with the errno.
	binary.BigEndian.PutUint32(rd.hdr[4:], code)
	if _, err := cc.c.Write(rd.hdr[:]); err != nil {
		cc.werr = err
		cc.c.Close()
	}
}

// fillReply is cc.replyFn: it places what is left of the header in the
// views lent, then reads the file into the rest. On a failed read it
// fills nothing more (and nothing at all if nothing was committed yet).
func (cc *conn) fillReply(a, b []byte) int {
	rd := &cc.rd
	n := 0
	for _, v := range [2][]byte{a, b} {
		if rd.hdrLeft > 0 {
			k := copy(v, rd.hdr[simpleReplySize-rd.hdrLeft:])
			rd.hdrLeft -= k
			v = v[k:]
			n += k
		}
		if k := min(len(v), rd.left); k > 0 {
			if err := cc.pr.ReadPieceAt(v[:k], rd.off); err != nil {
				rd.err = err
				if !rd.committed {
					return 0
				}
				return n
			}
			rd.off += int64(k)
			rd.left -= k
			n += k
		}
	}
	rd.committed = true
	return n
}

func errnoOf(err error) uint32 {
	switch {
	case errors.Is(err, disk.ErrRange):
		return errInval
	case errors.Is(err, disk.ErrClosed):
		return errShutdown
	case errors.Is(err, disk.ErrDenied):
		return errPerm
	}
	return errIO
}

// reply sends a simple reply, with data for a successful READ. A failed
// write closes the connection, which ends the reading loop too.
func (cc *conn) reply(handle uint64, code uint32, data []byte) error {
	var h [simpleReplySize]byte
	binary.BigEndian.PutUint32(h[0:], simpleReplyMagic)
	binary.BigEndian.PutUint32(h[4:], code)
	binary.BigEndian.PutUint64(h[8:], handle)
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	if cc.werr != nil {
		return cc.werr
	}
	var err error
	if len(data) == 0 {
		_, err = cc.c.Write(h[:])
	} else {
		bufs := net.Buffers{h[:], data}
		_, err = bufs.WriteTo(cc.c)
	}
	if err != nil {
		cc.werr = err
		cc.c.Close()
	}
	return err
}

// budget bounds a connection's requests in flight, in number and bytes.
type budget struct {
	mu             sync.Mutex
	cond           sync.Cond
	n, bytes       int
	maxN, maxBytes int
}

func newBudget(maxN, maxBytes int) *budget {
	b := &budget{maxN: maxN, maxBytes: maxBytes}
	b.cond.L = &b.mu
	return b
}

// acquire waits for room for one request of cost bytes; one larger than
// the whole budget waits until it runs alone.
func (b *budget) acquire(cost int) {
	b.mu.Lock()
	for b.n >= b.maxN || (b.n > 0 && b.bytes+cost > b.maxBytes) {
		b.cond.Wait()
	}
	b.n++
	b.bytes += cost
	b.mu.Unlock()
}

func (b *budget) release(cost int) {
	b.mu.Lock()
	b.n--
	b.bytes -= cost
	b.mu.Unlock()
	b.cond.Broadcast()
}

// drain waits until nothing is in flight.
func (b *budget) drain() {
	b.mu.Lock()
	for b.n > 0 {
		b.cond.Wait()
	}
	b.mu.Unlock()
}

// Data buffers, pooled by power-of-two size class from 4 KiB to MaxPayload.
const (
	minClass = 12
	maxClass = 25 // 1 << 25 == MaxPayload
)

var pools [maxClass + 1]sync.Pool

func classOf(n int) int {
	c := bits.Len(uint(n - 1))
	return max(c, minClass)
}

func getBuf(n int) *[]byte {
	c := classOf(n)
	if b, ok := pools[c].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 1<<c)
	return &b
}

func putBuf(b *[]byte) {
	c := classOf(len(*b))
	if 1<<c == len(*b) && c <= maxClass {
		pools[c].Put(b)
	}
}
