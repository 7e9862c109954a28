package testbed

import (
	"testing"

	"github.com/netstation/netstation/cpu"
	"github.com/netstation/netstation/internal/wire/capability"
)

// TestCapabilityDemoUnexpected: a case answered against its want, or
// refused without the wanted reason counted, is unexpected.
func TestCapabilityDemoUnexpected(t *testing.T) {
	r := &CapabilityDemoResult{
		Cases: []cpu.AccessCase{
			{Name: "valid", Want: "ok", Code: "ok"},
			{Name: "expired", Want: "expired", Code: "denied"},
			{Name: "fresh after revoke", Want: "ok", Code: "denied"},
			{Name: "forged", Want: "bad_mac", Code: "denied"},
		},
		Refused: map[string]uint64{"expired": 1, "revoked": 1},
	}
	got := r.Unexpected()
	if len(got) != 2 || got[0] != "fresh after revoke: want ok, got denied" || got[1] != "forged: refused, but not counted as bad_mac" {
		t.Errorf("unexpected: %q", got)
	}
}

func TestParseRights(t *testing.T) {
	for in, want := range map[string]capability.Rights{
		"read": capability.RightRead, "rw": capability.RightRead | capability.RightWrite | capability.RightFlush,
		"all": capability.RightsAll, "read,trim": capability.RightRead | capability.RightTrim, "write|flush": capability.RightWrite | capability.RightFlush,
	} {
		if got, err := ParseRights(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fly", ",", "read,fly"} {
		if _, err := ParseRights(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
