package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/netstation/netstation/internal/ctl"
)

// AgentSock is the control socket of this host's agent (testbed/cluster
// serves it): what reaches the parts of a multi-host testbed on other
// hosts.
func AgentSock() string { return filepath.Join(StateRoot(), "agent.sock") }

// AgentCallArgs are the arguments of the agent's "call" op: a control
// call to a node (Target = its name) or to the supervisor (Target
// "supervisor") of a testbed's part on Host.
type AgentCallArgs struct {
	Host    string          `json:"host"`
	Testbed string          `json:"testbed"`
	Target  string          `json:"target"` // node name or "supervisor"
	Op      string          `json:"op"`
	Args    json.RawMessage `json:"args,omitempty"`
}

// remoteCall carries a control call to target on another host through
// this host's agent. The far end's error keeps its code (ctl.Relay); an
// agent that does not answer here is ctl.ErrNotRunning.
func remoteCall(ctx context.Context, host, testbed, target, op string, args, out any, each func(json.RawMessage) error) error {
	c := AgentCallArgs{Host: host, Testbed: testbed, Target: target, Op: op}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		c.Args = b
	}
	err := ctl.Call(ctx, AgentSock(), "call", c, out, each)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%s runs on host %s and no agent answers here to reach it (agent %w; no socket answers at %s): start `netstation agent`",
			target, host, ctl.ErrNotRunning, AgentSock())
	}
	return fmt.Errorf("%s on host %s: %w", target, host, ctl.Relay(err))
}
