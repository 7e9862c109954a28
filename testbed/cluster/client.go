package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"syscall"
	"time"

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

// Up brings a multi-host topology (the file source, its bytes yaml) up
// through this host's agent.
func Up(ctx context.Context, source string, yaml []byte, timeout time.Duration) (*UpResult, error) {
	var res UpResult
	if err := Call(ctx, "up", UpArgs{Source: source, YAML: yaml, Timeout: timeout}, &res, nil); err != nil {
		return nil, err
	}
	return &res, nil
}

// Down removes testbed name from every host through this host's agent,
// when the testbed spans hosts (or is not here at all and an agent runs).
// handled is false when the single-host path should run instead; then
// err is nil, or ErrNotRunning when this host holds a part of a
// multi-host testbed and no agent runs here to reach the others.
func Down(ctx context.Context, name string) (res *DownResult, handled bool, err error) {
	plan, perr := testbed.LoadPlan(testbed.Dir(name))
	if perr == nil && !plan.MultiHost() {
		return nil, false, nil
	}
	res = &DownResult{}
	err = Call(ctx, "down", name, res, nil)
	if errors.Is(err, ErrNotRunning) {
		if perr == nil {
			return nil, false, err // this host's part, at least: its agent is gone
		}
		return nil, false, nil
	}
	return res, true, err
}

// Testbeds lists the multi-host testbeds the agents know, or nil when no
// agent runs here.
func Testbeds(ctx context.Context) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var names []string
	if err := Call(ctx, "list", nil, &names, nil); err != nil {
		return nil
	}
	return names
}

// LocalTestbeds lists the multi-host testbeds with a part on this host.
func LocalTestbeds() []string {
	names, _ := testbed.List()
	var out []string
	for _, n := range names {
		if p, err := testbed.LoadPlan(testbed.Dir(n)); err == nil && p.MultiHost() {
			out = append(out, n)
		}
	}
	return out
}

// Status is the status of testbed name: merged over its hosts by the
// agent for a multi-host testbed, from the local supervisor otherwise
// (also when no agent runs here).
func Status(ctx context.Context, name string) (testbed.Status, error) {
	plan, err := testbed.LoadPlan(testbed.Dir(name))
	if err == nil && !plan.MultiHost() {
		return testbed.GetStatus(ctx, name)
	}
	var st testbed.Status
	cerr := Call(ctx, "status", name, &st, nil)
	if errors.Is(cerr, ErrNotRunning) {
		return testbed.GetStatus(ctx, name)
	}
	return st, cerr
}
