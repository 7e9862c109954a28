// Copyright IBM Corp. 2013, 2026
// SPDX-License-Identifier: MPL-2.0

// netstation: this file is netstation's addition to memberlist v0.7.0
// (README.netstation.md): a failure detector whose timings can change
// after Create, and the count of joins Config.QuietJoins kept out of the
// broadcast queue.

package memberlist

import (
	"errors"
	"math/rand"
	"time"
)

// FailureDetector is the part of the Config that SetFailureDetector can
// change while the memberlist runs. A zero field keeps its current value.
type FailureDetector struct {
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	GossipInterval time.Duration
	SuspicionMult  int
	// SuspicionMin, when set, is the suspicion timeout once SuspicionMult-2
	// independent confirmations have come (Lifeguard; without them it is
	// SuspicionMaxTimeoutMult times as long), instead of upstream's
	// SuspicionMult x log10(n) x ProbeInterval. With a short probe
	// interval that formula makes the multiplier both the count of
	// confirmations and the length of the timeout: 3 (one confirmation)
	// is 9 s at 1,000 members, and 1 (none) lets one missed probe of a
	// member starved for a CPU declare it dead in 3 s.
	SuspicionMin time.Duration
}

// ErrFailureDetector: SetFailureDetector was given timings that cannot
// work (a probe timeout longer than the probe interval, negative values).
var ErrFailureDetector = errors.New("memberlist: bad failure detector timings")

// initDetector takes the failure detector's timings from the Config.
func (m *Memberlist) initDetector() {
	m.detector.Store(&FailureDetector{
		ProbeInterval:  m.config.ProbeInterval,
		ProbeTimeout:   m.config.ProbeTimeout,
		GossipInterval: m.config.GossipInterval,
		SuspicionMult:  m.config.SuspicionMult,
	})
	m.retimeProbe = make(chan struct{}, 1)
	m.retimeGossip = make(chan struct{}, 1)
	m.gossipWake = make(chan struct{}, 1)
}

// FailureDetector returns the timings in effect.
func (m *Memberlist) FailureDetector() FailureDetector { return *m.detector.Load() }

// SetFailureDetector changes the probe interval and timeout, the gossip
// interval and the suspicion multiplier of a running memberlist: a large
// cluster on starved CPUs can probe slowly while its members join and
// exchange their views (fast probing then suspects members that merely
// wait for a CPU), and fast once the views are complete, so that a failed
// member is found in seconds. The probe and gossip loops take a shorter
// interval at once; suspicions already running keep their timeouts. The
// probe and gossip loops run only if the Config had their intervals (and
// GossipNodes) above zero.
func (m *Memberlist) SetFailureDetector(d FailureDetector) error {
	if d.ProbeInterval < 0 || d.ProbeTimeout < 0 || d.GossipInterval < 0 || d.SuspicionMult < 0 || d.SuspicionMin < 0 {
		return ErrFailureDetector
	}
	cur := m.FailureDetector()
	if d.ProbeInterval == 0 {
		d.ProbeInterval = cur.ProbeInterval
	}
	if d.ProbeTimeout == 0 {
		d.ProbeTimeout = cur.ProbeTimeout
	}
	if d.GossipInterval == 0 {
		d.GossipInterval = cur.GossipInterval
	}
	if d.SuspicionMult == 0 {
		d.SuspicionMult = cur.SuspicionMult
	}
	if d.SuspicionMin == 0 {
		d.SuspicionMin = cur.SuspicionMin
	}
	if d.ProbeTimeout > d.ProbeInterval || d.SuspicionMin < 0 {
		return ErrFailureDetector
	}
	m.detector.Store(&d)
	for _, c := range []chan struct{}{m.retimeProbe, m.retimeGossip} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	return nil
}

func (m *Memberlist) probeInterval() time.Duration  { return m.detector.Load().ProbeInterval }
func (m *Memberlist) probeTimeout() time.Duration   { return m.detector.Load().ProbeTimeout }
func (m *Memberlist) gossipInterval() time.Duration { return m.detector.Load().GossipInterval }
func (m *Memberlist) suspicionMult() int            { return m.detector.Load().SuspicionMult }

// suspicionMin is the shortest suspicion timeout at n members (see
// FailureDetector.SuspicionMin).
func (m *Memberlist) suspicionMin(n int) time.Duration {
	d := m.detector.Load()
	if d.SuspicionMin > 0 {
		return d.SuspicionMin
	}
	return suspicionTimeout(d.SuspicionMult, n, d.ProbeInterval)
}

// QuietedJoins returns how many alive messages of other members' joins
// Config.QuietJoins kept out of the broadcast queue.
func (m *Memberlist) QuietedJoins() uint64 { return m.quietedJoins.Load() }

// wakeGossip tells a gossip loop asleep on an empty queue
// (Config.GossipOnlyQueued) that something was queued.
func (m *Memberlist) wakeGossip() {
	select {
	case m.gossipWake <- struct{}{}:
	default:
	}
}

// retimedTrigger calls f every interval() until stop is closed, as
// triggerFunc does with a ticker (after a random stagger; a call that
// overruns the interval drops the ticks it missed), but reads the interval
// again after every call, and on retime. With idle set, while idle()
// reports true the loop sleeps until wakeGossip, then calls f no sooner
// than an interval after its last call.
func (m *Memberlist) retimedTrigger(interval func() time.Duration, retime <-chan struct{}, stop <-chan struct{}, idle func() bool, f func()) {
	stagger := time.Duration(uint64(rand.Int63()) % uint64(interval()))
	next := time.Now().Add(stagger)
	timer := time.NewTimer(stagger)
	defer timer.Stop()
	last := time.Time{}
	for {
		select {
		case <-timer.C:
			if idle != nil && idle() {
				select {
				case <-m.gossipWake:
				case <-stop:
					return
				}
				next = last.Add(interval())
				if now := time.Now(); next.Before(now) {
					next = now
				}
				timer.Reset(time.Until(next))
				continue
			}
			last = time.Now()
			f()
			next = last.Add(interval())
			if now := time.Now(); next.Before(now) {
				next = now
			}
		case <-retime:
			// A shorter interval applies now, a longer one from the next
			// call on.
			if soon := time.Now().Add(interval()); soon.Before(next) {
				next = soon
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-stop:
			return
		}
		timer.Reset(time.Until(next))
	}
}

// ErrDeclare: DeclareDead was asked about this node itself or about a
// member it does not know.
var ErrDeclare = errors.New("memberlist: cannot declare that member dead")

// DeclareDead declares the member called name dead at the incarnation
// this node knows it by, as this node's own suspicion of it would once
// timed out: the dead message is applied here and queued for gossip, so
// every member learns it as it learns any death. It is for a failure
// detector outside memberlist that knows the member hung (netstation's
// testbed supervisor watches the heartbeats of the peripherals it runs;
// probing 1,000 members often enough to find one frozen within seconds
// cost a fifth of a core). A member declared dead that is in fact alive
// refutes when it learns of it, as after a false suspicion, with a higher
// incarnation, which the death does not outrank. A member already dead or
// left is left as it is.
func (m *Memberlist) DeclareDead(name string) error {
	if name == m.config.Name {
		return ErrDeclare
	}
	m.nodeLock.RLock()
	st, ok := m.nodeMap[name]
	var inc uint32
	if ok {
		inc = st.Incarnation
	}
	m.nodeLock.RUnlock()
	if !ok {
		return ErrDeclare
	}
	// A refutation between the read and deadNode raises the incarnation:
	// deadNode then ignores this message, as it should.
	m.deadNode(&dead{Incarnation: inc, Node: name, From: m.config.Name})
	return nil
}
