package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/testbed"
)

// TestDiskGrant walks the README's path with stock tools only: `disk
// grant` prints a capability and its nbd:// URI; nbdinfo and nbdcopy use
// the URI as printed; `disk revoke` makes the disk refuse it, at
// negotiation, with words (qemu-img prints them); a fresh grant works.
// Bad input gets a one-line error.
func TestDiskGrant(t *testing.T) {
	privtest.Tool(t, "nbdinfo", "nbdcopy", "qemu-img")
	b, _, _, diskIP, _ := toolsBed(t)

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"disk9"}, `has no node "disk9" (nodes: cpu0, disk0)`},
		{[]string{"cpu0"}, "cpu0 is a cpu, not a disk"},
		{[]string{"disk0", "--rights", "fly"}, `unknown right "fly"`},
		{[]string{"disk0", "--offset", "512MiB"}, "offset 536870912 is beyond disk0's 536870912 bytes"},
		{[]string{"disk0", "--offset", "1MiB", "--length", "512MiB"}, "reach beyond disk0's 536870912 bytes"},
		{[]string{"disk0", "--length", "12parsecs"}, "--length"},
		{[]string{"disk0", "--ttl", "0s"}, "--ttl 0s: want a positive duration"},
		{[]string{"disk0", "--ttl", "-1h"}, "want a positive duration"},
	} {
		out, err := b.run(append([]string{"disk", "grant", "-t", b.name}, bad.args...)...)
		if err == nil || !strings.Contains(out, bad.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("disk grant %v: %v, want one line with %q:\n%s", bad.args, err, bad.want, out)
		}
	}

	out := b.must("disk", "grant", "-t", b.name, "disk0")
	for _, want := range []string{"disk0: read|write|flush|trim on bytes [0, 536870912)", "capability: ", "uri: nbd://" + diskIP + "/",
		"reach: this host reaches " + diskIP + " through host access", "revoke: netstation disk revoke"} {
		if !strings.Contains(out, want) {
			t.Errorf("grant output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("disk grant:\n%s", out)
	var g testbed.Grant
	if err := json.Unmarshal([]byte(b.must("disk", "grant", "-t", b.name, "disk0", "-o", "json")), &g); err != nil {
		t.Fatal(err)
	}
	if g.URI != "nbd://"+diskIP+"/"+g.Capability || len(g.Capability) != 128 || !g.HostReaches {
		t.Fatalf("grant: %+v", g)
	}
	if size := strings.TrimSpace(string(runTool(t, 30*time.Second, "nbdinfo", "--size", g.URI))); size != "536870912" {
		t.Fatalf("nbdinfo --size %s: %s", g.URI, size)
	}
	dir := t.TempDir()
	in, back := filepath.Join(dir, "in"), filepath.Join(dir, "back")
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := os.WriteFile(in, data, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, time.Minute, "nbdcopy", in, g.URI)
	runTool(t, 2*time.Minute, "nbdcopy", g.URI, back) // the whole disk
	got, err := os.ReadFile(back)
	if err != nil || len(got) != 512<<20 || !bytes.Equal(got[:len(data)], data) {
		t.Fatalf("nbdcopy read back other data than it wrote (%d bytes, %v)", len(got), err)
	}

	out = b.must("disk", "revoke", "-t", b.name, "disk0")
	if !strings.Contains(out, "capability version now 1") {
		t.Errorf("revoke: %s", out)
	}
	o, err := exec.Command("nbdinfo", g.URI).CombinedOutput()
	if err == nil {
		t.Fatalf("nbdinfo with a revoked capability succeeded:\n%s", o)
	}
	t.Logf("nbdinfo, revoked: %s", o)
	o, err = exec.Command("qemu-img", "info", g.URI).CombinedOutput()
	if err == nil || !strings.Contains(string(o), "capability refused: revoked: minted at version 0, the disk is at version 1") {
		t.Fatalf("qemu-img info with a revoked capability: %v\n%s", err, o)
	}
	t.Logf("qemu-img, revoked: %s", o)
	if err := json.Unmarshal([]byte(b.must("disk", "grant", "-t", b.name, "disk0", "-o", "json", "--rights", "read")), &g); err != nil {
		t.Fatal(err)
	}
	if g.Version != 1 || g.Rights != "read" {
		t.Errorf("grant after revoke: %+v", g)
	}
	if size := strings.TrimSpace(string(runTool(t, 30*time.Second, "nbdinfo", "--size", g.URI))); size != "536870912" {
		t.Fatalf("nbdinfo with a fresh grant: %s", size)
	}
	if st := b.must("disk", "stats", "-t", b.name, "disk0"); !strings.Contains(st, "revoked") {
		t.Errorf("disk stats after the refusals:\n%s", st)
	}
}
