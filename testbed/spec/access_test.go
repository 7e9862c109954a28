package spec

import (
	"errors"
	"testing"
)

// TestDiskAccess: capabilities unless the file says open; anything else
// is refused with the field named.
func TestDiskAccess(t *testing.T) {
	for _, c := range []struct {
		access, want string
		bad          bool
	}{{"", "", false}, {"capability", AccessCapability, false}, {"open", AccessOpen, false}, {"none", "", true}} {
		src := "name: a\nnodes:\n  - {name: disk0, kind: disk}\n"
		if c.access != "" {
			src = "name: a\nnodes:\n  - {name: disk0, kind: disk, disk: {access: " + c.access + "}}\n"
		}
		top, err := Parse("a.yaml", []byte(src))
		if err == nil {
			err = top.Validate()
		}
		if c.bad {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("access %q: err %v, want ErrInvalid", c.access, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("access %q: %v", c.access, err)
		}
		if got := top.Nodes[0].Disk; c.access != "" && (got == nil || got.Access != c.want) {
			t.Errorf("access %q: parsed %+v", c.access, got)
		}
	}
}
