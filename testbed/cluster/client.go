package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/testbed"
)

// Call sends one request to this host's agent (see SockPath); an agent
// that is not running gives ErrNotRunning.
func Call(ctx context.Context, op string, args, out any, each func(json.RawMessage) error) error {
	err := ctl.Call(ctx, SockPath(), op, args, out, each)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w on this host (no socket answers at %s): start `netstation agent`", ErrNotRunning, SockPath())
	}
	return unwrapRemote(err)
}

// Running reports whether this host's agent answers.
func Running(ctx context.Context) bool {
	return Call(ctx, "members", nil, nil, nil) == nil
}

// UseAgent points testbed.RemoteCall at this host's agent, so that
// commands reach nodes of a multi-host testbed on other hosts.
func UseAgent() {
	testbed.RemoteCall = func(ctx context.Context, host, tb, target, op string, args, out any, each func(json.RawMessage) error) error {
		c := CallArgs{Host: host, Testbed: tb, Target: target, Op: op}
		if args != nil {
			b, err := json.Marshal(args)
			if err != nil {
				return err
			}
			c.Args = b
		}
		if err := Call(ctx, "call", c, out, each); err != nil {
			return fmt.Errorf("%s on host %s: %w", target, host, err)
		}
		return nil
	}
}
