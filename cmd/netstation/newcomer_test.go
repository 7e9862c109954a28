package main

import (
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/testbed"
)

// TestNewcomerEdges walks rough edges a newcomer hit (issue 18): a
// peripheral pings its own address; errors say what happened in words,
// not Go's (a ping without reply, a node that is down, an up that timed
// out); a zero impairment is accepted in every unit.
func TestNewcomerEdges(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, "nodes:\n  - {name: cpu0, kind: cpu}\n  - {name: disk0, kind: disk}\n"))

	t.Run("status-json-is-a-list", func(t *testing.T) {
		for _, args := range [][]string{{"status", "-o", "json"}, {"status", "-t", b.name, "-o", "json"}} {
			var st []testbed.Status
			out := b.must(args...)
			if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 || st[0].Name != b.name || len(st[0].Nodes) != 2 {
				t.Errorf("%v: %v\n%s", args, err, out)
			}
		}
	})

	t.Run("self-ping", func(t *testing.T) {
		out, err := b.run("ping", "-t", b.name, "cpu0", "cpu0", "-c", "2")
		if err != nil || !strings.Contains(out, "2 received") {
			t.Errorf("ping cpu0 cpu0: %v\n%s", err, out)
		}
	})

	t.Run("ping-words", func(t *testing.T) {
		out, err := b.run("ping", "-t", b.name, "cpu0", "10.77.0.99", "-c", "1", "-W", "300ms")
		if err == nil || !strings.Contains(out, "no reply from 10.77.0.99 within 300ms") || strings.Contains(out, "deadline") {
			t.Errorf("ping of nobody: %v\n%s", err, out)
		}
	})

	t.Run("zero-values", func(t *testing.T) {
		for _, flag := range []string{"--loss", "--corrupt", "--delay", "--rate"} {
			if out, err := b.run("link", "set", "-t", b.name, "disk0", flag, "0"); err != nil {
				t.Errorf("link set %s 0: %v\n%s", flag, err, out)
			}
		}
	})

	t.Run("up-timeout-words", func(t *testing.T) {
		name := b.name + "t"
		out, err := b.run("up", "-f", b.topo(name, "nodes:\n  - {name: cpu0, kind: cpu}\n"), "--timeout", "1ms")
		if err == nil || !strings.Contains(out, "testbed "+name+" did not come up within 1ms") || strings.Contains(out, "deadline exceeded") {
			t.Errorf("up --timeout 1ms: %v\n%s", err, out)
		}
		b.run("down", name)
	})

	t.Run("node-down-words", func(t *testing.T) {
		// Each kill doubles the supervisor's restart back-off (100 ms,
		// 200 ms, ...): after a kill, disk0 is asked until it is back, so
		// one of the back-off windows is caught whatever the machine's
		// speed. Waiting for a restarted disk0 does not use up a kill.
		deadline := time.Now().Add(60 * time.Second)
		for kills := 0; kills < 8 && time.Now().Before(deadline); {
			var pid int
			for _, n := range b.status(b.name).Nodes {
				if n.Name == "disk0" && n.State == testbed.StateRunning {
					pid = n.PID
				}
			}
			if pid == 0 {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			kills++
			for ask := time.Now().Add(10 * time.Second); time.Now().Before(ask); time.Sleep(10 * time.Millisecond) {
				out, err := b.run("disk", "stats", "-t", b.name, "disk0")
				if err == nil {
					break // restarted already: kill it again
				}
				if strings.Contains(out, "disk0 is not answering (its process just exited") {
					continue // the supervisor has not seen the exit yet
				}
				if strings.Contains(out, "dial unix") || strings.Contains(out, "connection refused") ||
					!strings.Contains(out, "disk0 is not running (restarting, ") || !strings.Contains(out, "see netstation logs disk0") {
					t.Fatalf("disk stats of a crashed disk0:\n%s", out)
				}
				t.Logf("disk stats of a crashed disk0 (kill %d): %s", kills, strings.TrimSpace(out))
				return
			}
		}
		t.Fatal("never caught disk0 down")
	})
}

// TestOverlappingTestbeds: a second testbed with host access on the
// subnet of one already up with host access is refused, naming it, and
// nothing of it is left; without host access it may share the subnet.
func TestOverlappingTestbeds(t *testing.T) {
	b := newBed(t)
	const subnet = "subnet: 10.213.47.0/24\n"
	b.must("up", "-f", b.topo(b.name, subnet+"host_access: {}\nnodes:\n  - {name: cpu0, kind: cpu}\n"))
	second := b.name + "o"
	out, err := b.run("up", "-f", b.topo(second, subnet+"host_access: {}\nnodes:\n  - {name: cpu0, kind: cpu}\n"))
	if err == nil || !strings.Contains(out, "overlaps testbed "+b.name+"'s 10.213.47.0/24, which also has host access") {
		t.Fatalf("second testbed on the same subnet with host access: %v\n%s", err, out)
	}
	if st, err := b.run("status", "-t", second); err == nil {
		t.Errorf("the refused testbed is up:\n%s", st)
	}
	b.must("up", "-f", b.topo(second, subnet+"nodes:\n  - {name: cpu0, kind: cpu}\n"))
	b.must("down", second)
}

// TestSegmentsSayNoPath: nodes on different segments can never reach
// each other; validate warns, and ping, the demos and bench say so at
// once instead of timing out.
func TestSegmentsSayNoPath(t *testing.T) {
	b := newBed(t)
	f := b.topo(b.name, `segments: [{name: front}, {name: back}]
nodes:
  - {name: cpu0, kind: cpu, segment: front}
  - {name: disk0, kind: disk, segment: front}
  - {name: disk1, kind: disk, segment: back}
`)
	if out := b.must("validate", "-f", f); !strings.Contains(out, "warning: nodes on different segments can never reach each other (nothing routes between segments): front (cpu0, disk0); back (disk1)") {
		t.Errorf("validate:\n%s", out)
	}
	b.must("up", "-f", f)
	// Every node lists its membership service from the start (disk1,
	// alone on its segment, too), and plain status shows the templates
	// as status -w does.
	st := b.status(b.name)
	for _, n := range st.Nodes {
		if !slices.Contains(n.Services, "gossip/udp+tcp:7946") {
			t.Errorf("%s's services lack gossip: %v", n.Name, n.Services)
		}
	}
	if out := b.must("status", "-t", b.name); st.Templates == "" || !strings.Contains(out, "kernel transmit templates "+st.Templates) {
		t.Errorf("status does not show the templates (%q):\n%s", st.Templates, out)
	}
	const want = "no path: cpu0 is on segment front, disk1 on segment back"
	disk1 := b.status(b.name).Nodes[2].IP
	for _, args := range [][]string{
		{"ping", "-t", b.name, "cpu0", "disk1"},
		{"ping", "-t", b.name, "cpu0", disk1},
		{"demo", "storage", "-t", b.name, "--disk", "disk1", "--size", "1MiB"},
		{"demo", "capabilities", "-t", b.name, "--disk", "disk1"},
		{"bench", "-t", b.name, "--from", "cpu0", "--to", "disk1", "--time", "1s"},
	} {
		start := time.Now()
		out, err := b.run(args...)
		if err == nil || !strings.Contains(out, want) || time.Since(start) > 5*time.Second {
			t.Errorf("%v: %v after %v\n%s", args, err, time.Since(start), out)
		}
	}
	if out, err := b.run("ping", "-t", b.name, "cpu0", "disk0", "-c", "1"); err != nil {
		t.Errorf("ping on one segment: %v\n%s", err, out)
	}
}

// TestLogsTellTheStory: a peripheral's log has the events a user looks
// for — start, services bound, membership joins, link changes, refusals,
// restarts — at info level; --level debug adds the chatter.
func TestLogsTellTheStory(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, "nodes:\n  - {name: cpu0, kind: cpu}\n  - {name: disk0, kind: disk}\n"))
	b.must("link", "set", "-t", b.name, "disk0", "--delay", "1ms")
	b.must("demo", "capabilities", "-t", b.name)
	b.killAndWaitRestart(1)
	info := b.must("logs", "-t", b.name, "disk0")
	for _, want := range []string{
		`msg="peripheral up"`, `msg="service up" service=disk/udp:`, `msg="service up" service=gossip/udp+tcp:7946`,
		`msg="gossip: member alive" name=cpu0`, `msg="supervisor: link changed"`, `refused" from=`,
		`level=WARN msg="supervisor: restarting the peripheral" restarts=1`,
	} {
		if !strings.Contains(info, want) {
			t.Errorf("logs disk0 lacks %s", want)
		}
	}
	if strings.Contains(info, "level=DEBUG") {
		t.Errorf("logs disk0 shows debug lines without --level debug")
	}
	if debug := b.must("logs", "-t", b.name, "disk0", "--level", "debug"); !strings.Contains(debug, "level=DEBUG") || len(debug) <= len(info) {
		t.Errorf("logs --level debug adds nothing (%d bytes, %d at info)", len(debug), len(info))
	}
	if t.Failed() {
		t.Logf("logs disk0:\n%s", info)
	}
}

// TestGraphRunningTestbed: graph without -f draws the running testbed,
// not the embedded default, with its links as they are now.
func TestGraphRunningTestbed(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, "nodes:\n  - {name: cpu7, kind: cpu}\n  - {name: disk7, kind: disk}\n"))
	b.must("link", "set", "-t", b.name, "disk7", "--loss", "2%", "--delay", "3ms")
	b.must("link", "down", "-t", b.name, "cpu7")
	out := b.must("graph")
	for _, want := range []string{`graph "` + b.name + `"`, `"node:disk7" -- "segment:lan" [label="loss 2%, delay 3ms"]`,
		`"node:cpu7" -- "segment:lan" [label="DOWN", style=dashed, color=red]`} {
		if !strings.Contains(out, want) {
			t.Errorf("graph lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "display0") {
		t.Errorf("graph drew the embedded default:\n%s", out)
	}
	if m := b.must("graph", "--format", "mermaid"); !strings.Contains(m, "loss 2%, delay 3ms") {
		t.Errorf("mermaid:\n%s", m)
	}
}
