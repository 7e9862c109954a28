// Copyright IBM Corp. 2013, 2026
// SPDX-License-Identifier: MPL-2.0

// netstation: tests of netstation's changes (README.netstation.md).

package memberlist

import (
	"errors"
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

// TestNetstationDeclareDead: a member declared dead is dead here at the
// incarnation it was known by, and the death is queued for gossip; this
// node itself and unknown members are refused; the declared member,
// learning of it, refutes with a higher incarnation that brings it back.
func TestNetstationDeclareDead(t *testing.T) {
	m := GetMemberlist(t, nil)
	defer m.Shutdown()
	if err := m.setAlive(); err != nil {
		t.Fatal(err)
	}
	a := alive{Node: "other", Addr: []byte{127, 0, 0, 1}, Port: 1, Incarnation: 5, Vsn: m.config.BuildVsnArray()}
	m.aliveNode(&a, nil, false)
	m.broadcasts.Reset()
	if err := m.DeclareDead(m.config.Name); !errors.Is(err, ErrDeclare) {
		t.Errorf("declaring itself dead: %v", err)
	}
	if err := m.DeclareDead("nobody"); !errors.Is(err, ErrDeclare) {
		t.Errorf("declaring an unknown member dead: %v", err)
	}
	if err := m.DeclareDead("other"); err != nil {
		t.Fatal(err)
	}
	st := m.nodeMap["other"]
	if st.State != StateDead || st.Incarnation != 5 {
		t.Fatalf("declared: state %v incarnation %d, want dead at 5", st.State, st.Incarnation)
	}
	if got := m.broadcasts.GetBroadcasts(0, 65000); len(got) != 1 || messageType(got[0][0]) != deadMsg {
		t.Errorf("queued after the declaration: %d messages, want the dead message", len(got))
	}
	// Declared again: nothing more (already dead).
	m.broadcasts.Reset()
	if err := m.DeclareDead("other"); err != nil || m.broadcasts.NumQueued() != 0 {
		t.Errorf("a second declaration: %v, %d queued", err, m.broadcasts.NumQueued())
	}
	// The member's refutation (a higher incarnation) brings it back.
	a.Incarnation = 6
	m.aliveNode(&a, nil, false)
	if st := m.nodeMap["other"]; st.State != StateAlive || st.Incarnation != 6 {
		t.Errorf("refuted: state %v incarnation %d, want alive at 6", st.State, st.Incarnation)
	}
	// And a member that learns it was declared dead refutes.
	inc := m.nodeMap[m.config.Name].Incarnation
	m.deadNode(&dead{Node: m.config.Name, Incarnation: inc, From: "other"})
	if st := m.nodeMap[m.config.Name]; st.State != StateAlive || st.Incarnation <= inc {
		t.Errorf("declared dead itself: state %v incarnation %d (was %d), want a refutation", st.State, st.Incarnation, inc)
	}
}

func (m *Memberlist) sequenceNumSnapshot() uint32 { return atomic.LoadUint32(&m.sequenceNum) }
