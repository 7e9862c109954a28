package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestPickTestbed: the rule of "Which testbed" (docs/CLI.md). With several
// testbeds up and no -t, default is used and named on stderr; without
// default the command refuses and lists them.
func TestPickTestbed(t *testing.T) {
	up := func(names ...string) func() ([]string, error) {
		return func() ([]string, error) { return names, nil }
	}
	for _, tc := range []struct {
		flag       string
		up         []string
		want, note string
		err        string
	}{
		{flag: "lab", up: []string{"default", "lab"}, want: "lab"},
		{up: []string{"lab"}, want: "lab"},
		{up: nil, err: "no testbed is up"},
		{up: []string{"default", "lab"}, want: "default", note: "netstation: using testbed default (up: default, lab; choose another with -t)\n"},
		{up: []string{"a", "b"}, err: "several testbeds are up (a, b) and none is named default: choose one with -t"},
	} {
		var note bytes.Buffer
		got, err := pickTestbedFrom(tc.flag, up(tc.up...), &note)
		if got != tc.want || note.String() != tc.note || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("flag %q, up %v: %q %v, note %q; want %q %q, note %q", tc.flag, tc.up, got, err, note.String(), tc.want, tc.err, tc.note)
		}
	}
}
