package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/accept"
)

// MaxLine bounds one request or response line; longer input is refused.
const MaxLine = 1 << 20

// ErrRemote wraps an error reported by the far end.
var ErrRemote = errors.New("remote error")

// ErrPanic: a handler panicked; the request failed, the server lives on.
var ErrPanic = errors.New("handler panicked")

// Request is one call.
type Request struct {
	Op   string          `json:"op"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response is one answer line. Intermediate lines have Done false. A
// failed call's Error is the message and Code the well-known or
// registered sentinel behind it (CodeOf), if any: the client's error
// then matches that sentinel (RemoteError).
type Response struct {
	OK    bool            `json:"ok"`
	Done  bool            `json:"done"`
	Error string          `json:"error,omitempty"`
	Code  string          `json:"code,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// Stream lets a handler send intermediate responses.
type Stream struct {
	mu  sync.Mutex
	enc *json.Encoder
	fn  func(json.RawMessage) error // NewStream's, when enc is nil
}

// NewStream returns a Stream that hands each intermediate response's data
// to f (nil: drops it), for calling a Handler in-process, without a socket.
func NewStream(f func(data json.RawMessage) error) *Stream { return &Stream{fn: f} }

// Send writes one intermediate response carrying v.
func (s *Stream) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.enc == nil {
		if s.fn == nil {
			return nil
		}
		return s.fn(b)
	}
	return s.enc.Encode(Response{OK: true, Data: b})
}

// Handler answers one request. The returned value becomes the final
// response's Data; an error becomes its Error.
type Handler func(ctx context.Context, req Request, s *Stream) (any, error)

// Server serves a Handler on a unix socket.
type Server struct {
	ln      net.Listener
	handler Handler
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc
}

// Listen removes a stale socket at path and listens there (mode 0600).
func Listen(path string, h Handler) (*Server, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("ctl: listen %s: %w", path, err)
	}
	_ = os.Chmod(path, 0o600)
	return Serve(ln, h), nil
}

// Serve serves h on ln (a TCP listener, for calls between hosts) until
// Close, which closes ln.
func Serve(ln net.Listener, h Handler) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{ln: ln, handler: h, ctx: ctx, cancel: cancel}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *Server) accept() {
	defer s.wg.Done()
	// A control socket outlives EMFILE and friends (the loop backs off);
	// it ends when Close closes the listener.
	_ = accept.Loop(s.ln, func(c net.Conn) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}, accept.Options{Stopped: func() bool { return s.ctx.Err() != nil }})
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	enc := json.NewEncoder(c)
	line, err := readLine(r)
	if err != nil {
		_ = enc.Encode(Response{Done: true, Error: err.Error()})
		return
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		_ = enc.Encode(Response{Done: true, Error: "bad request: " + err.Error(), Code: CodeInvalid})
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// The client closing its end cancels the request.
	go func() {
		var b [1]byte
		_, _ = c.Read(b[:])
		cancel()
	}()
	st := &Stream{enc: enc}
	v, err := s.call(ctx, req, st)
	resp := Response{OK: err == nil, Done: true}
	if err != nil {
		resp.Error, resp.Code = err.Error(), CodeOf(err)
	} else if v != nil {
		b, merr := json.Marshal(v)
		if merr != nil {
			resp.OK, resp.Error = false, merr.Error()
		} else {
			resp.Data = b
		}
	}
	st.mu.Lock()
	_ = enc.Encode(resp)
	st.mu.Unlock()
}

// call runs the handler; a panic in it fails that request (with the
// stack, so the bug is visible) instead of killing the whole process.
func (s *Server) call(ctx context.Context, req Request, st *Stream) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v\n%s", ErrPanic, req.Op, r, debug.Stack())
		}
	}()
	return s.handler(ctx, req, st)
}

func readLine(r *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		frag, isPrefix, err := r.ReadLine()
		if err != nil {
			return nil, err
		}
		out = append(out, frag...)
		if len(out) > MaxLine {
			return nil, errors.New("request too long")
		}
		if !isPrefix {
			return out, nil
		}
	}
}

// Close stops accepting, cancels running handlers and waits for them.
func (s *Server) Close() error {
	err := s.ln.Close()
	s.cancel()
	s.wg.Wait()
	return err
}

// Call sends one request to the socket at path and decodes the final
// response's data into out (which may be nil). Intermediate responses are
// passed to each (which may be nil). The context bounds the whole call.
func Call(ctx context.Context, path, op string, args any, out any, each func(json.RawMessage) error) error {
	return CallNet(ctx, "unix", path, op, args, out, each)
}

// CallNet is Call over any stream network ("tcp" with host:port).
func CallNet(ctx context.Context, network, addr, op string, args any, out any, each func(json.RawMessage) error) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("ctl: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := Request{Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		req.Args = b
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("ctl: send: %w", err)
	}
	r := bufio.NewReaderSize(c, 64<<10)
	for {
		line, err := readLine(r)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ctl: read: %w", err)
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil {
			return fmt.Errorf("ctl: bad response: %w", err)
		}
		if !resp.Done {
			if each != nil {
				if err := each(resp.Data); err != nil {
					return err
				}
			}
			continue
		}
		if !resp.OK {
			return &RemoteError{Code: resp.Code, Message: resp.Error}
		}
		if out != nil && len(resp.Data) > 0 {
			return json.Unmarshal(resp.Data, out)
		}
		return nil
	}
}

// Decode unmarshals a request's arguments into v, with a clear error.
func (r Request) Decode(v any) error {
	if len(r.Args) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.Args, v); err != nil {
		return fmt.Errorf("bad arguments for %q: %w", r.Op, err)
	}
	return nil
}
