package kv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/netstation/netstation/peripherals"
)

// Kind is the kv device. Register it (peripherals.Register(kv.Kind)) in
// the program that runs testbeds, and a topology may declare a node of
// it:
//
//	nodes:
//	  - {name: kv0, kind: kv, params: {max_keys: "1000"}}
var Kind = peripherals.Kind{
	Name: "kv",
	Doc:  "a network-attached key-value store (example kind)",
	Params: []peripherals.Param{
		{Name: ParamPort, Doc: "the TCP port it serves (default 7070)"},
		{Name: ParamMaxKeys, Doc: "the most keys it holds (default 1024)"},
	},
	Check: func(ps peripherals.Params) error {
		_, err := parseParams(ps)
		return err
	},
	Start: start,
}

// Parameters, limits and defaults.
const (
	ParamPort      = "port"
	ParamMaxKeys   = "max_keys"
	Port           = 7070
	DefaultMaxKeys = 1024
	MaxKey         = 64
	MaxValue       = 4096
	// maxLine bounds a request line: the command, a key and a value.
	maxLine = 8 + MaxKey + MaxValue
)

// OpStats is the kv's control op: -> Stats.
const OpStats peripherals.Op = "kv-stats"

// Stats is what OpStats returns.
type Stats struct {
	Keys   int    `json:"keys"`
	Gets   uint64 `json:"gets"`
	Sets   uint64 `json:"sets"`
	Dels   uint64 `json:"dels"`
	Misses uint64 `json:"misses"`
	Errors uint64 `json:"errors"`
}

// ErrParam: a kv parameter has a bad value.
var ErrParam = errors.New("kv")

type params struct {
	port    uint16
	maxKeys int
}

func parseParams(ps peripherals.Params) (params, error) {
	port, err := ps.Int(ParamPort, Port)
	if err != nil {
		return params{}, err
	}
	if port < 1 || port > 65535 {
		return params{}, fmt.Errorf("%w: port %d: want 1 to 65535", ErrParam, port)
	}
	n, err := ps.Int(ParamMaxKeys, DefaultMaxKeys)
	if err != nil {
		return params{}, err
	}
	if n < 1 || n > 1<<20 {
		return params{}, fmt.Errorf("%w: max_keys %d: want 1 to %d", ErrParam, n, 1<<20)
	}
	return params{port: uint16(port), maxKeys: int(n)}, nil
}

// store is the device's memory and counters.
type store struct {
	mu                               sync.Mutex
	m                                map[string]string
	maxKeys                          int
	gets, sets, dels, misses, errors *atomic.Uint64
}

func start(ctx context.Context, rt *peripherals.Runtime) (func() error, error) {
	p, err := parseParams(rt.Params())
	if err != nil {
		return nil, err
	}
	s := &store{m: map[string]string{}, maxKeys: p.maxKeys,
		gets: rt.Counter("kv_gets"), sets: rt.Counter("kv_sets"), dels: rt.Counter("kv_dels"),
		misses: rt.Counter("kv_misses"), errors: rt.Counter("kv_errors")}
	ln, err := rt.Stack().ListenTCP(netip.AddrPortFrom(rt.Addr(), p.port))
	if err != nil {
		return nil, fmt.Errorf("kv: listen: %w", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // the listener closed: the peripheral is stopping
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serve(ctx, c)
			}()
		}
	}()
	peripherals.HandleArgs(rt, OpStats, func(context.Context, struct{}, *peripherals.Stream) (any, error) {
		return s.stats(), nil
	})
	rt.AddService(fmt.Sprintf("kv/tcp:%d", p.port))
	return func() error {
		err := ln.Close()
		wg.Wait()
		return err
	}, nil
}

// serve answers one connection's requests until it closes, sends a line
// that is too long, or the peripheral stops.
func (s *store) serve(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReaderSize(c, 4096)
	w := bufio.NewWriter(c)
	for {
		line, err := readLine(r)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				s.errors.Add(1)
				fmt.Fprintf(w, "ERR %v\n", err)
				w.Flush()
			}
			return
		}
		fmt.Fprintf(w, "%s\n", s.do(line))
		if r.Buffered() == 0 { // answer pipelined requests in one write
			if w.Flush() != nil {
				return
			}
		}
	}
}

var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxLine)

// readLine reads one request line without its end, at most maxLine bytes.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(b)+len(frag) > maxLine+2 {
			return "", errLineTooLong
		}
		b = append(b, frag...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return string(b), nil
}

// do runs one request and returns the reply line.
func (s *store) do(line string) string {
	req, err := ParseRequest(line)
	if err != nil {
		s.errors.Add(1)
		return "ERR " + err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch req.Cmd {
	case CmdGet:
		s.gets.Add(1)
		v, ok := s.m[req.Key]
		if !ok {
			s.misses.Add(1)
			return "NOTFOUND"
		}
		return "VALUE " + v
	case CmdSet:
		if _, ok := s.m[req.Key]; !ok && len(s.m) >= s.maxKeys {
			s.errors.Add(1)
			return "ERR full"
		}
		s.sets.Add(1)
		s.m[req.Key] = req.Value
		return "OK"
	default: // CmdDel
		s.dels.Add(1)
		if _, ok := s.m[req.Key]; !ok {
			s.misses.Add(1)
			return "NOTFOUND"
		}
		delete(s.m, req.Key)
		return "OK"
	}
}

func (s *store) stats() Stats {
	s.mu.Lock()
	n := len(s.m)
	s.mu.Unlock()
	return Stats{Keys: n, Gets: s.gets.Load(), Sets: s.sets.Load(), Dels: s.dels.Load(),
		Misses: s.misses.Load(), Errors: s.errors.Load()}
}

// Cmd is a request's command.
type Cmd string

// The commands.
const (
	CmdGet Cmd = "GET"
	CmdSet Cmd = "SET"
	CmdDel Cmd = "DEL"
)

// Request is one parsed request line.
type Request struct {
	Cmd   Cmd
	Key   string
	Value string // SET only
}

// ErrRequest: a request line is malformed.
var ErrRequest = errors.New("bad request")

// ParseRequest parses one request line (without its line end).
func ParseRequest(line string) (Request, error) {
	cmd, rest, _ := strings.Cut(line, " ")
	var req Request
	switch Cmd(cmd) {
	case CmdGet, CmdDel:
		req.Cmd = Cmd(cmd)
		key, extra, more := strings.Cut(rest, " ")
		if more || extra != "" {
			return Request{}, fmt.Errorf("%w: %s takes one key", ErrRequest, cmd)
		}
		req.Key = key
	case CmdSet:
		req.Cmd = CmdSet
		key, value, ok := strings.Cut(rest, " ")
		if !ok {
			return Request{}, fmt.Errorf("%w: SET takes a key and a value", ErrRequest)
		}
		if len(value) > MaxValue {
			return Request{}, fmt.Errorf("%w: value of %d bytes (at most %d)", ErrRequest, len(value), MaxValue)
		}
		req.Key, req.Value = key, value
	default:
		return Request{}, fmt.Errorf("%w: unknown command %s (GET, SET or DEL)", ErrRequest, strconv.Quote(cmd))
	}
	if req.Key == "" || len(req.Key) > MaxKey {
		return Request{}, fmt.Errorf("%w: a key is 1 to %d bytes", ErrRequest, MaxKey)
	}
	return req, nil
}
