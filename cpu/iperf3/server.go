package iperf3

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/internal/accept"
)

// Defaults of Server's zero fields.
const (
	DefaultMaxStreams = 128
	DefaultTimeout    = 10 * time.Second
	// DefaultMaxDuration bounds a test whose client sets no time (-n, -k).
	DefaultMaxDuration = time.Hour
)

// Server is an iperf3 server. Set its fields before the first Serve; the
// zero value serves TCP tests only.
type Server struct {
	// ListenUDP opens the socket of a UDP test, bound to port (the
	// control listener's); the Server closes it when the test ends. nil
	// refuses UDP tests ("not implemented").
	ListenUDP func(port int) (DatagramConn, error)
	// MaxStreams bounds -P (default DefaultMaxStreams).
	MaxStreams int
	// Timeout bounds every wait on the client outside the test's running
	// time: the cookie, the parameters, the streams' arrival, the results
	// (default DefaultTimeout).
	Timeout time.Duration
	// MaxDuration bounds a test beyond the time its client asked for, and
	// a test that asked for none (default DefaultMaxDuration).
	MaxDuration time.Duration
	Logger      *slog.Logger

	conns accept.Group
	mu    sync.Mutex // guards cur
	cur   *test

	tests  atomic.Uint64
	failed atomic.Uint64
}

// test is the state of the test in progress.
type test struct {
	cookie    [cookieSize]byte
	accepting bool            // TCP streams may join; under Server.mu
	streams   chan streamConn // TCP streams that presented the cookie
	udp       DatagramConn    // under Server.mu, for Close
}

// streamConn is a TCP stream with the order it was accepted in: the
// order the client opened its streams, which fixes their ids.
type streamConn struct {
	c   net.Conn
	seq uint64
}

func (s *Server) timeout() time.Duration     { return cmp.Or(s.Timeout, DefaultTimeout) }
func (s *Server) maxStreams() int            { return cmp.Or(s.MaxStreams, DefaultMaxStreams) }
func (s *Server) maxDuration() time.Duration { return cmp.Or(s.MaxDuration, DefaultMaxDuration) }

func (s *Server) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Tests returns the number of tests completed and of tests abandoned.
func (s *Server) Tests() (completed, abandoned uint64) { return s.tests.Load(), s.failed.Load() }

// Serve accepts control and TCP stream connections on ln until Close
// (then it returns nil) or until Accept fails.
func (s *Server) Serve(ln net.Listener) error {
	port, err := portOf(ln.Addr())
	if err != nil {
		return err
	}
	err = s.conns.Serve(ln, func(c net.Conn, seq uint64) { s.handle(c, seq, port) }, accept.Options{})
	switch {
	case errors.Is(err, accept.ErrClosed):
		return ErrClosed
	case err != nil:
		return fmt.Errorf("iperf3: %w", err)
	}
	return nil
}

func portOf(a net.Addr) (int, error) {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port, nil
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return 0, fmt.Errorf("iperf3: listener address %v: %w", a, err)
	}
	return int(ap.Port()), nil
}

// untrack closes c, a connection of s.conns that its handler or its test
// is done with.
func (s *Server) untrack(c net.Conn) { s.conns.Release(c) }

// handle reads a new connection's cookie and makes it the control
// connection of a new test, a stream of the test in progress, or turns it
// away.
func (s *Server) handle(c net.Conn, seq uint64, port int) {
	var cookie [cookieSize]byte
	c.SetReadDeadline(time.Now().Add(s.timeout()))
	if _, err := io.ReadFull(c, cookie[:]); err != nil {
		s.untrack(c)
		return
	}
	s.mu.Lock()
	t := s.cur
	switch {
	case t != nil && t.accepting && cookie == t.cookie:
		select {
		case t.streams <- streamConn{c, seq}:
			s.mu.Unlock()
			return // the test owns c now
		default: // more streams than the client announced
		}
		fallthrough
	case t != nil:
		s.mu.Unlock()
		c.SetWriteDeadline(time.Now().Add(s.timeout()))
		writeState(c, stateAccessDenied)
		s.untrack(c)
		return
	}
	t = &test{cookie: cookie}
	s.cur = t
	s.mu.Unlock()
	err := s.run(c, t, port)
	s.release(t)
	s.untrack(c)
	if err != nil {
		s.failed.Add(1)
		s.log().Info("iperf3: test abandoned", "client", c.RemoteAddr(), "err", err)
		return
	}
	s.tests.Add(1)
}

// release ends t's hold on the server, if it still has it.
func (s *Server) release(t *test) {
	s.mu.Lock()
	if s.cur == t {
		s.cur = nil
	}
	s.mu.Unlock()
}

// run drives one test from PARAM_EXCHANGE to IPERF_DONE over the control
// connection ctl.
func (s *Server) run(ctl net.Conn, t *test, port int) error {
	to := s.timeout()
	ctl.SetDeadline(time.Now().Add(to))
	if err := writeState(ctl, stateParamExchange); err != nil {
		return err
	}
	var p params
	if err := readJSON(ctl, maxParamsJSON, &p); err != nil {
		return err
	}
	if ie := s.check(&p); ie != 0 {
		serverError(ctl, ie)
		return fmt.Errorf("%w: refused parameters %+v (iperf3 error %d)", ErrProtocol, p, ie)
	}

	var tcp []net.Conn
	var udp *udpTest
	defer func() {
		for _, c := range tcp {
			s.untrack(c)
		}
		if udp != nil {
			udp.conn.Close()
		}
	}()
	if p.UDP {
		uc, err := s.ListenUDP(port)
		if err != nil {
			serverError(ctl, ieStreamListen)
			return fmt.Errorf("iperf3: UDP socket: %w", err)
		}
		udp = &udpTest{conn: uc, p: &p}
		s.mu.Lock()
		t.udp = uc
		// Close shuts the connections before it looks at cur.udp under
		// mu: either it finds this socket there, or it was shut before.
		closed := s.conns.Closed()
		s.mu.Unlock()
		if closed {
			return ErrClosed
		}
	} else {
		t.streams = make(chan streamConn, p.Parallel)
		s.mu.Lock()
		t.accepting = true
		s.mu.Unlock()
	}
	if err := writeState(ctl, stateCreateStreams); err != nil {
		return err
	}
	var err error
	deadline := time.Now().Add(to)
	if p.UDP {
		udp.conn.SetReadDeadline(deadline)
		_, stop := watch(ctl, func() { udp.conn.SetReadDeadline(time.Unix(1, 0)) })
		err = udp.accept(p.Parallel)
		if stop() {
			err = fmt.Errorf("iperf3: the client left while its streams were set up: %w", err)
		}
	} else {
		gone, stop := watch(ctl, nil)
		tcp, err = s.acceptTCP(t, p.Parallel, deadline, gone)
		stop()
	}
	if err != nil {
		serverError(ctl, ieStreamAccept)
		return err
	}
	ctl.SetDeadline(time.Now().Add(to))
	if err := writeState(ctl, stateTestStart); err != nil {
		return err
	}
	if err := writeState(ctl, stateTestRunning); err != nil {
		return err
	}

	start := time.Now()
	cpu0 := cpuTimes()
	var run runner
	if p.UDP {
		run = udp.start(start)
	} else {
		run = startTCP(tcp, &p)
	}
	limit := s.maxDuration()
	if p.Time > 0 {
		limit = min(limit, time.Duration((p.Time+p.Omit)*float64(time.Second))+to)
	}
	ctl.SetDeadline(start.Add(limit))
	st, err := readState(ctl)
	end := time.Now()
	res := run.stop(end.Sub(start))
	cpu := cpuTimes().sub(cpu0, end.Sub(start))
	if err != nil {
		return fmt.Errorf("iperf3: waiting for TEST_END: %w", err)
	}
	if st != stateTestEnd {
		return fmt.Errorf("%w: state %d while the test runs", ErrProtocol, st)
	}

	ctl.SetDeadline(time.Now().Add(to))
	if err := writeState(ctl, stateExchangeResults); err != nil {
		return err
	}
	var theirs map[string]any
	if err := readJSON(ctl, maxResultsJSON, &theirs); err != nil {
		return err
	}
	res.CPUTotal, res.CPUUser, res.CPUSystem = cpu.total, cpu.user, cpu.system
	if err := writeJSON(ctl, res); err != nil {
		return err
	}
	// The test is over for the server: free it before the client, told
	// to display, can exit and a next client connect (stock iperf3 runs
	// back to back; it would be told "the server is busy" otherwise).
	s.release(t)
	if err := writeState(ctl, stateDisplayResults); err != nil {
		return err
	}
	// The client answers IPERF_DONE; one that just hangs up is finished too.
	if st, err := readState(ctl); err == nil && st != stateIperfDone {
		return fmt.Errorf("%w: state %d after DISPLAY_RESULTS", ErrProtocol, st)
	}
	return nil
}

// check validates and completes the client's parameters: 0 or the
// iperf3 error number to refuse them with.
func (s *Server) check(p *params) int32 {
	switch {
	case bool(p.Bidirectional):
		return ieUnimplement
	case p.UDP == p.TCP: // SCTP, or nonsense
		return ieUnimplement
	case bool(p.UDP) && s.ListenUDP == nil:
		return ieUnimplement
	case p.Parallel == 0:
		p.Parallel = 1
	}
	if p.Parallel < 1 || p.Parallel > s.maxStreams() {
		return ieNumStreams
	}
	if p.Len == 0 {
		p.Len = defaultTCPBlockSize
		if p.UDP {
			p.Len = defaultUDPBlockSize
		}
	}
	switch {
	case bool(p.UDP) && (p.Len < udpHeader64 || p.Len > maxUDPBlockSize):
		return ieBlockSize
	case !bool(p.UDP) && (p.Len < 1 || p.Len > maxTCPBlockSize):
		return ieBlockSize
	case p.Time < 0 || p.Omit < 0:
		return ieUnimplement
	}
	return 0
}

// acceptTCP waits for the test's n streams, handed over by Serve's accept
// loop, and returns them in the order the client opened them.
func (s *Server) acceptTCP(t *test, n int, deadline time.Time, gone <-chan struct{}) ([]net.Conn, error) {
	defer func() {
		s.mu.Lock()
		t.accepting = false
		s.mu.Unlock()
		// Streams that arrived after the count (impossible from a sane
		// client) or after a failure are closed.
		for {
			select {
			case sc := <-t.streams:
				s.untrack(sc.c)
			default:
				return
			}
		}
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	got := make([]streamConn, 0, n)
	for len(got) < n {
		select {
		case sc := <-t.streams:
			got = append(got, sc)
		case <-timer.C:
			for _, sc := range got {
				s.untrack(sc.c)
			}
			return nil, fmt.Errorf("iperf3: %d of %d streams arrived", len(got), n)
		case <-gone:
			for _, sc := range got {
				s.untrack(sc.c)
			}
			return nil, fmt.Errorf("iperf3: the client left after %d of %d streams", len(got), n)
		}
	}
	slices.SortFunc(got, func(a, b streamConn) int { return cmp.Compare(a.seq, b.seq) })
	cs := make([]net.Conn, n)
	for i, sc := range got {
		sc.c.SetDeadline(time.Time{})
		cs[i] = sc.c
	}
	return cs, nil
}

// watch watches the control connection while the streams are set up,
// when the client has nothing to say: a hang-up (or a CLIENT_TERMINATE)
// closes gone and calls onGone. stop ends the watch and reports whether
// the client went; the caller then sets ctl's deadline again.
func watch(ctl net.Conn, onGone func()) (gone <-chan struct{}, stop func() bool) {
	g := make(chan struct{})
	done := make(chan struct{})
	var went atomic.Bool
	go func() {
		defer close(done)
		var b [1]byte
		_, err := ctl.Read(b[:])
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return // stopped, or the set-up deadline passed
		}
		went.Store(true)
		close(g)
		if onGone != nil {
			onGone()
		}
	}()
	return g, func() bool {
		ctl.SetReadDeadline(time.Unix(1, 0))
		<-done
		return went.Load()
	}
}

// runner is a running test's data path.
type runner interface {
	// stop ends the data transfer and returns the server's figures;
	// elapsed is the test's running time.
	stop(elapsed time.Duration) results
}

// tcpRun is a TCP test's streams: each received from or sent to by its own
// goroutine.
type tcpRun struct {
	conns   []net.Conn
	reverse bool
	bytes   []atomic.Uint64
	sent    atomic.Uint64 // over all streams
	// omit is the client's -O: the first seconds, which it leaves out of
	// its figures, so the server leaves them out of its own.
	omit     time.Duration
	omitted  []uint64 // each stream's bytes when the omitted seconds ended
	omitDone chan struct{}
	omitStop chan struct{}
	stopped  atomic.Bool
	wg       sync.WaitGroup
}

func startTCP(conns []net.Conn, p *params) *tcpRun {
	r := &tcpRun{conns: conns, reverse: bool(p.Reverse), bytes: make([]atomic.Uint64, len(conns)),
		omit: time.Duration(p.Omit * float64(time.Second)), omitted: make([]uint64, len(conns)),
		omitDone: make(chan struct{}), omitStop: make(chan struct{})}
	go func() {
		defer close(r.omitDone)
		if r.omit <= 0 {
			return
		}
		t := time.NewTimer(r.omit)
		defer t.Stop()
		select {
		case <-t.C:
			for i := range r.bytes {
				r.omitted[i] = r.bytes[i].Load()
			}
		case <-r.omitStop:
		}
	}()
	for i, c := range conns {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			buf := make([]byte, p.Len)
			var total uint64
			for !r.stopped.Load() {
				if p.Reverse && p.limit() > 0 && r.sent.Load() >= p.limit() {
					return // -n or -k with -R: the client ends the test when it has it all
				}
				var n int
				var err error
				if p.Reverse {
					n, err = c.Write(buf)
				} else {
					n, err = c.Read(buf)
				}
				total += uint64(n)
				r.bytes[i].Store(total)
				r.sent.Add(uint64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	return r
}

func (r *tcpRun) stop(elapsed time.Duration) results {
	r.stopped.Store(true)
	past := time.Unix(1, 0)
	for _, c := range r.conns {
		c.SetDeadline(past)
	}
	r.wg.Wait()
	close(r.omitStop)
	<-r.omitDone
	res := results{Streams: make([]streamResult, len(r.conns))}
	if r.reverse {
		res.HasRetrans = 1
	}
	for i, c := range r.conns {
		sr := streamResult{ID: streamID(i), Bytes: r.bytes[i].Load() - r.omitted[i], Retransmits: -1,
			EndTime: max(elapsed-r.omit, 0).Seconds()}
		if r.reverse {
			if n, ok := retransmits(c); ok {
				sr.Retransmits = int64(n)
			} else {
				res.HasRetrans = 0
			}
		}
		res.Streams[i] = sr
	}
	// Close the streams, as iperf3 does: a client draining a reverse
	// test reads whole blocks and would wait forever for the rest of one.
	for _, c := range r.conns {
		c.Close()
	}
	return res
}

// retransmits reads a kernel TCP socket's retransmitted segments.
func retransmits(c net.Conn) (uint32, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	return info.Total_retrans, true
}

type cpuSample struct{ user, sys time.Duration }

type cpuUtil struct{ total, user, system float64 }

func cpuTimes() cpuSample {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return cpuSample{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

// sub is the process's CPU use between c0 and c in percent of wall time,
// as iperf3 reports it.
func (c cpuSample) sub(c0 cpuSample, wall time.Duration) cpuUtil {
	if wall <= 0 {
		return cpuUtil{}
	}
	u := 100 * float64(c.user-c0.user) / float64(wall)
	s := 100 * float64(c.sys-c0.sys) / float64(wall)
	return cpuUtil{total: u + s, user: u, system: s}
}

// Close stops every Serve, ends the test in progress and waits for the
// Server's goroutines.
func (s *Server) Close() error {
	if !s.conns.Shut() {
		return ErrClosed
	}
	s.mu.Lock()
	if s.cur != nil && s.cur.udp != nil {
		s.cur.udp.Close()
	}
	s.mu.Unlock()
	s.conns.Wait()
	return nil
}
