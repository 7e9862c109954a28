package spec

import (
	"errors"
	"strings"
	"testing"
)

// TestParamsBlock: a node's params block is a mapping of single values;
// a kind this program does not register takes none, and a registered
// kind's own check runs on it (cmd/netstation's TestExampleKind covers
// that end with the kv kind).
func TestParamsBlock(t *testing.T) {
	for _, c := range []struct {
		node, want string
	}{
		{"{name: cpu0, kind: cpu, params: [a, b]}", "want a mapping of parameter names to values"},
		{"{name: cpu0, kind: cpu, params: {a: [1, 2]}}", "want a single value"},
		{"{name: cpu0, kind: cpu, params: {a: 1}}", "kind cpu takes no params block in this program"},
		{"{name: kv0, kind: kv, params: {a: 1}}", `unknown kind "kv"`},
	} {
		top, err := Parse("a.yaml", []byte("name: a\nnodes:\n  - "+c.node+"\n"))
		if err == nil {
			err = top.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "a.yaml:3:") {
			t.Errorf("%s: %v, want %q at line 3", c.node, err, c.want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnknownKind) {
			t.Errorf("%s: %v is neither ErrInvalid nor ErrUnknownKind", c.node, err)
		}
	}
	top, err := Parse("a.yaml", []byte("name: a\nnodes:\n  - {name: cpu0, kind: cpu}\n"))
	if err != nil || top.Nodes[0].Params != nil {
		t.Errorf("no params block: %v, params %v", err, top.Nodes[0].Params)
	}
}
