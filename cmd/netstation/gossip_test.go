package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/testbed"
)

// views returns every listed node's membership view (netstation members).
func (b *bed) views(nodes []string) map[string]peripherals.MembersView {
	out := map[string]peripherals.MembersView{}
	for _, n := range nodes {
		s, err := b.run("members", "-t", b.name, "--from", n, "-o", "json")
		if err != nil {
			continue // a peripheral restarting has no view for a moment
		}
		var v peripherals.MembersView
		if json.Unmarshal([]byte(s), &v) == nil {
			out[n] = v
		}
	}
	return out
}

// waitMember waits until every node of observers sees member in state.
func (b *bed) waitMember(observers []string, member string, state gossip.State, limit time.Duration) time.Duration {
	b.t.Helper()
	start := time.Now()
	for {
		vs := b.views(observers)
		ok := len(vs) == len(observers)
		var seen []string
		for _, o := range observers {
			st := gossip.State("unknown")
			for _, m := range vs[o].Members {
				if m.Name == member {
					st = m.State
				}
			}
			seen = append(seen, fmt.Sprintf("%s:%s", o, st))
			ok = ok && st == state
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			b.t.Fatalf("%s not %s in every view after %v: %v", member, state, limit, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestGossip: peripherals find each other by gossip over their own
// user-level stacks (UDP and TCP port 7946): every view holds every
// peripheral with its metadata; a peripheral that stops answering is dead
// in every other view, and after kill -9 and the supervisor's restart it
// is alive again in all of them.
func TestGossip(t *testing.T) {
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk, disk: {size: 64MiB}}
  - {name: disk1, kind: disk}
  - {name: display0, kind: display, display: {width: 640, height: 480}}
`))
	all := []string{"cpu0", "disk0", "disk1", "display0"}
	for _, m := range all {
		b.waitMember(all, m, gossip.Alive, 15*time.Second)
	}
	// Views can converge by push-pull streams (TCP) before the first UDP
	// probe reaches cpu0, so wait a bounded while for both to have crossed
	// its stack.
	var v peripherals.MembersView
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		v = b.views([]string{"cpu0"})["cpu0"]
		if v.Stats.PacketsIn > 0 && v.Stats.StreamsIn+v.Stats.StreamsOut > 0 || time.Since(start) > 10*time.Second {
			break
		}
	}
	for _, m := range v.Members {
		switch m.Name {
		case "disk0":
			if m.Meta.Kind != "disk" || m.Meta.DiskBytes != 64<<20 || m.Meta.Services["disk/udp"] != 10810 {
				t.Errorf("disk0 as cpu0 sees it: %+v", m)
			}
		case "display0":
			if m.Meta.Kind != "display" || m.Meta.Width != 640 || m.Meta.Height != 480 || m.Meta.Services["display/udp"] != 5910 {
				t.Errorf("display0 as cpu0 sees it: %+v", m)
			}
		}
	}
	if v.Stats.PacketsIn == 0 || v.Stats.StreamsIn+v.Stats.StreamsOut == 0 {
		t.Errorf("no gossip through cpu0's stack: %+v", v.Stats)
	}
	// The gossip crossed cpu0's AF_PACKET link, whose counters status shows.
	var ps peripherals.Status
	if err := b.nodeCall(context.Background(), "cpu0", "status", nil, &ps, nil); err != nil {
		t.Fatal(err)
	}
	if ps.Link.RxFrames == 0 || ps.Link.TxFrames == 0 || ps.Link.RxFrames < ps.Stack.TCP.InSegs {
		t.Errorf("cpu0's link counters: %+v (stack TCP %+v)", ps.Link, ps.Stack.TCP)
	}

	st := b.status(b.name)
	var victim int
	for i, n := range st.Nodes {
		if n.Name == "disk1" {
			victim = i
		}
	}
	before := st.Nodes[victim]
	// A plain kill -9 goes unseen: the supervisor restarts the peripheral
	// within 100 ms and the new process answers the probes under the same
	// name and address. So freeze it first (a hung peripheral, to the
	// others as dead as a killed one), then kill -9 it for the restart.
	if err := syscall.Kill(before.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	others := []string{"cpu0", "disk0", "display0"}
	dead := b.waitMember(others, "disk1", gossip.Dead, 20*time.Second)
	killed := time.Now()
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitRestarted(t, b, victim, before)
	b.waitMember(all, "disk1", gossip.Alive, 20*time.Second)
	alive := time.Since(killed)
	t.Logf("disk1 frozen: dead in all 3 other views after %v; kill -9: restarted and alive in all 4 views %v after the kill", dead.Round(100*time.Millisecond), alive.Round(100*time.Millisecond))
	b.must("down", b.name)
	b.assertGone(b.name)
}

// TestWatchdog: the supervisor's watchdog finds a frozen peripheral
// (SIGSTOP: no heartbeat, no CPU wait) without the membership's probes,
// which this testbed makes too slow to find it in time (a probe a minute,
// a 30 s timeout), and has the others declare it dead in every view; the
// peripheral, resumed, refutes its death and is alive in every view
// again. No other peripheral is declared dead.
func TestWatchdog(t *testing.T) {
	t.Setenv("NETSTATION_GOSSIP", "probe=1m,probe-timeout=30s")
	b := newBed(t)
	b.must("up", "-f", b.topo(b.name, `nodes:
  - {name: cpu0, kind: cpu}
  - {name: disk0, kind: disk}
  - {name: disk1, kind: disk}
  - {name: display0, kind: display}
`))
	all := []string{"cpu0", "disk0", "disk1", "display0"}
	for _, m := range all {
		b.waitMember(all, m, gossip.Alive, 30*time.Second)
	}
	log := filepath.Join(b.state, b.name, "supervisor.log")
	waitLog(t, log, "watchdog on", 60*time.Second)
	st := b.status(b.name)
	var victim testbed.NodeStatus
	for _, n := range st.Nodes {
		if n.Name == "disk1" {
			victim = n
		}
	}
	// Armed by a first beat after the watchdog's first look.
	time.Sleep(gossip.BeatEvery + time.Second)
	if err := syscall.Kill(victim.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			syscall.Kill(victim.PID, syscall.SIGCONT)
		}
	}()
	others := []string{"cpu0", "disk0", "display0"}
	// The watchdog: about 5 s of silence, then gossip. The probes: not
	// before a minute.
	dead := b.waitMember(others, "disk1", gossip.Dead, 30*time.Second)
	waitLog(t, log, "watchdog: peripheral hung", 10*time.Second)
	if err := syscall.Kill(victim.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	cont := time.Now()
	b.waitMember(all, "disk1", gossip.Alive, 30*time.Second)
	back := time.Since(cont)
	waitLog(t, log, "watchdog: peripheral beats again", 10*time.Second)
	text, _ := os.ReadFile(log)
	if n := strings.Count(string(text), "watchdog: peripheral hung"); n != 1 {
		t.Errorf("%d peripherals declared hung, want disk1 alone:\n%s", n, text)
	}
	if st := b.status(b.name); st.Nodes[2].PID != victim.PID || st.Nodes[2].Restarts != 0 {
		t.Errorf("disk1 was restarted (pid %d, was %d): the resumed process should have come back itself", st.Nodes[2].PID, victim.PID)
	}
	t.Logf("disk1 frozen: dead in all 3 other views after %v; resumed: alive in all 4 after %v",
		dead.Round(100*time.Millisecond), back.Round(100*time.Millisecond))
	b.must("down", b.name)
	b.assertGone(b.name)
}

// waitLog waits until the file at path contains s.
func waitLog(t *testing.T, path, s string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not in %s after %v:\n%s", s, path, limit, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
