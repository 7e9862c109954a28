package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var errTestThing = errors.New("no such thing in the test")

func init() { RegisterCode("ctl_test.no_thing", errTestThing) }

// TestErrorsKeepTheirIdentity: the sentinel behind a handler's error, a
// well-known one or a registered one, is the sentinel of the caller's
// error too, beside ErrRemote; the message is unchanged.
func TestErrorsKeepTheirIdentity(t *testing.T) {
	cases := map[string]struct {
		err  error
		want []error
		not  []error
	}{
		"not found": {fmt.Errorf("open disk0: %w", os.ErrNotExist), []error{os.ErrNotExist}, []error{os.ErrPermission}},
		"closed":    {fmt.Errorf("server: %w", net.ErrClosed), []error{net.ErrClosed}, nil},
		"denied":    {fmt.Errorf("capability: %w", os.ErrPermission), []error{os.ErrPermission}, nil},
		"timeout": {fmt.Errorf("waiting: %w", context.DeadlineExceeded),
			[]error{context.DeadlineExceeded, os.ErrDeadlineExceeded}, []error{context.Canceled}},
		"canceled":    {context.Canceled, []error{context.Canceled}, nil},
		"invalid":     {fmt.Errorf("size -1: %w", os.ErrInvalid), []error{os.ErrInvalid}, nil},
		"not running": {fmt.Errorf("supervisor: %w", ErrNotRunning), []error{ErrNotRunning}, nil},
		"registered":  {fmt.Errorf("lookup: %w", errTestThing), []error{errTestThing}, []error{os.ErrNotExist}},
		"plain":       {errors.New("it broke"), nil, []error{os.ErrNotExist, net.ErrClosed}},
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	srv, err := Listen(path, func(ctx context.Context, req Request, s *Stream) (any, error) {
		return nil, cases[req.Op].err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for name, c := range cases {
		err := Call(context.Background(), path, name, nil, nil, nil)
		if !errors.Is(err, ErrRemote) {
			t.Errorf("%s: %v is not ErrRemote", name, err)
		}
		for _, w := range c.want {
			if !errors.Is(err, w) {
				t.Errorf("%s: %v lost its identity: not %v", name, err, w)
			}
		}
		for _, n := range c.not {
			if errors.Is(err, n) {
				t.Errorf("%s: %v matches %v, which it never was", name, err, n)
			}
		}
		if want := "remote error: " + c.err.Error(); err == nil || err.Error() != want {
			t.Errorf("%s: message %q, want %q", name, err, want)
		}
	}
}

// TestRelayKeepsCodeDropsPrefix: an agent forwarding a peer's error to
// its own caller passes the peer's words and code, and the caller sees
// one "remote error" prefix, not two.
func TestRelayKeepsCodeDropsPrefix(t *testing.T) {
	dir := t.TempDir()
	peer, err := Listen(filepath.Join(dir, "peer.sock"), func(context.Context, Request, *Stream) (any, error) {
		return nil, fmt.Errorf("disk0: %w", os.ErrNotExist)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	agent, err := Listen(filepath.Join(dir, "agent.sock"), func(ctx context.Context, req Request, _ *Stream) (any, error) {
		return nil, Relay(Call(ctx, filepath.Join(dir, "peer.sock"), "x", nil, nil, nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()
	err = Call(context.Background(), filepath.Join(dir, "agent.sock"), "x", nil, nil, nil)
	if !errors.Is(err, os.ErrNotExist) || !errors.Is(err, ErrRemote) {
		t.Fatalf("relayed error %v lost its identity", err)
	}
	if strings.Count(err.Error(), "remote error") != 1 || !strings.HasSuffix(err.Error(), "disk0: file does not exist") {
		t.Fatalf("relayed message %q", err)
	}
}

// TestUnknownCode: a code this binary does not know (a newer peer) still
// gives an ErrRemote with the message.
func TestUnknownCode(t *testing.T) {
	err := error(&RemoteError{Code: "from_the_future", Message: "m"})
	if !errors.Is(err, ErrRemote) || errors.Is(err, os.ErrNotExist) || err.Error() != "remote error: m" {
		t.Fatalf("unknown code: %v", err)
	}
}
