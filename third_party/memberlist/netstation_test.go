// Copyright IBM Corp. 2013, 2026
// SPDX-License-Identifier: MPL-2.0

// netstation: tests of netstation's changes (README.netstation.md).

package memberlist

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestNetstationQuietJoins: with Config.QuietJoins another member's alive
// message at its first incarnation is taken (the node is in the view) but
// not queued; a later incarnation (a refutation) is queued, as without it.
func TestNetstationQuietJoins(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		m := GetMemberlist(t, func(c *Config) { c.QuietJoins = quiet })
		a := alive{Node: "test", Addr: []byte{127, 0, 0, 1}, Incarnation: 1, Vsn: m.config.BuildVsnArray()}
		m.aliveNode(&a, nil, false)
		if _, ok := m.nodeMap["test"]; !ok {
			t.Fatalf("quiet %v: the join did not add the node", quiet)
		}
		want := 1
		if quiet {
			want = 0
		}
		if got := m.broadcasts.NumQueued(); got != want {
			t.Errorf("quiet %v: %d queued after a join, want %d", quiet, got, want)
		}
		if quiet && m.QuietedJoins() != 1 {
			t.Errorf("QuietedJoins %d, want 1", m.QuietedJoins())
		}
		a.Incarnation = 2
		m.aliveNode(&a, nil, false)
		if got := m.broadcasts.NumQueued(); got != 1 {
			t.Errorf("quiet %v: %d queued after a refutation, want 1", quiet, got)
		}
		m.Shutdown()
	}
}

// TestNetstationRetimedTrigger: the loop calls f every interval, takes a
// shorter interval at once, and while idle calls nothing until woken.
func TestNetstationRetimedTrigger(t *testing.T) {
	m := GetMemberlist(t, nil)
	defer m.Shutdown()
	var interval atomic.Int64
	interval.Store(int64(time.Hour))
	retime := make(chan struct{}, 1)
	stop := make(chan struct{})
	defer close(stop)
	var idle atomic.Bool
	calls := make(chan time.Time, 100)
	go m.retimedTrigger(func() time.Duration { return time.Duration(interval.Load()) }, retime, stop,
		idle.Load, func() { calls <- time.Now() })
	// The first call comes after a random stagger of up to an interval:
	// an hour. A shorter interval applies at once.
	select {
	case <-calls:
		t.Log("called within the stagger (it is random)")
	case <-time.After(50 * time.Millisecond):
	}
	interval.Store(int64(20 * time.Millisecond))
	retime <- struct{}{}
	for i := 0; i < 3; i++ {
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d did not come after the interval went down to 20ms", i)
		}
	}
	// Idle: no call while asleep (give it many intervals).
	idle.Store(true)
	time.Sleep(100 * time.Millisecond)
	for len(calls) > 0 {
		<-calls
	}
	select {
	case <-calls:
		t.Fatal("called while idle")
	case <-time.After(200 * time.Millisecond):
	}
	idle.Store(false)
	m.wakeGossip()
	select {
	case <-calls:
	case <-time.After(10 * time.Second):
		t.Fatal("no call after wakeGossip")
	}
}

// TestNetstationSetFailureDetector: the timings change, zero fields keep
// theirs, impossible ones are refused, and a running memberlist's probe
// loop follows.
func TestNetstationSetFailureDetector(t *testing.T) {
	m := GetMemberlist(t, func(c *Config) {
		c.ProbeInterval = time.Hour
		c.ProbeTimeout = time.Second
		c.GossipOnlyQueued = true
	})
	defer m.Shutdown()
	if got := m.FailureDetector(); got.ProbeInterval != time.Hour || got.ProbeTimeout != time.Second {
		t.Fatalf("from the Config: %+v", got)
	}
	if err := m.SetFailureDetector(FailureDetector{ProbeTimeout: 2 * time.Hour}); err == nil {
		t.Error("a probe timeout over the interval was taken")
	}
	if err := m.SetFailureDetector(FailureDetector{ProbeInterval: -1}); err == nil {
		t.Error("a negative interval was taken")
	}
	if err := m.SetFailureDetector(FailureDetector{ProbeInterval: 30 * time.Millisecond, ProbeTimeout: 10 * time.Millisecond, SuspicionMult: 100}); err != nil {
		t.Fatal(err)
	}
	got := m.FailureDetector()
	if got.ProbeInterval != 30*time.Millisecond || got.GossipInterval != m.config.GossipInterval {
		t.Errorf("after the change: %+v", got)
	}
	if min := m.suspicionMin(10); min != time.Duration(got.SuspicionMult)*30*time.Millisecond {
		t.Errorf("suspicion timeout at 10 members %v, from the new probe interval", min)
	}
	if err := m.SetFailureDetector(FailureDetector{SuspicionMin: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if min := m.suspicionMin(1000); min != 2*time.Second {
		t.Errorf("suspicion timeout at 1,000 members %v, want SuspicionMin's 2s", min)
	}
	// The probe loop runs at the new interval: with another member to
	// probe, the sequence numbers of its pings move.
	a := alive{Node: "other", Addr: []byte{127, 0, 0, 1}, Port: 1, Incarnation: 1, Vsn: m.config.BuildVsnArray()}
	m.aliveNode(&a, nil, false)
	m.schedule()
	deadline := time.Now().Add(10 * time.Second)
	for m.sequenceNumSnapshot() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := m.sequenceNumSnapshot(); n < 3 {
		t.Errorf("%d probes in 10 s at a 30 ms interval", n)
	}
}

func (m *Memberlist) sequenceNumSnapshot() uint32 { return atomic.LoadUint32(&m.sequenceNum) }
