package cluster

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/testbed"
)

// reconcileLoop keeps every local multi-host testbed's FDB right: every
// ReconcileInterval and whenever membership or tombstones change.
func (a *Agent) reconcileLoop() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		case <-a.kick:
		}
		a.reconcileAll()
	}
}

// rejoinLoop re-joins the seeds and every host seen before that is not
// alive now, so that both sides of a healed partition find each other.
func (a *Agent) rejoinLoop() {
	defer a.wg.Done()
	t := time.NewTicker(a.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		alive := map[string]bool{}
		var targets []string
		for _, m := range a.Members() {
			hp := net.JoinHostPort(m.Addr.String(), strconv.Itoa(m.GossipPort))
			if m.State == StateAlive {
				alive[hp] = true
			} else if m.State == StateDead {
				targets = append(targets, hp)
			}
		}
		for _, s := range a.seeds() {
			if !alive[s] && !slices.Contains(targets, s) {
				targets = append(targets, s)
			}
		}
		if len(targets) == 0 {
			continue
		}
		if n, err := a.ml.Join(targets); err != nil {
			a.log.Debug("rejoin", "targets", targets, "joined", n, "err", err)
		} else {
			a.log.Info("rejoined", "targets", targets, "joined", n)
		}
	}
}

// reconcileAll reconciles every local part of a multi-host testbed, and
// removes parts whose testbed was downed (a tombstone newer than the
// part) while this host could not be reached.
func (a *Agent) reconcileAll() {
	names, err := testbed.List()
	if err != nil {
		a.log.Warn("reconcile: list testbeds", "err", err)
		return
	}
	for _, name := range names {
		plan, err := testbed.LoadPlan(testbed.Dir(name))
		if err != nil || !plan.MultiHost() {
			continue
		}
		if downed := a.tomb(name); !downed.IsZero() && downed.After(partCreated(name)) {
			a.log.Info("testbed was downed elsewhere while this host was away: removing its part", "testbed", name, "downed", downed)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := testbed.Down(ctx, name); err != nil {
				a.log.Warn("down", "testbed", name, "err", err)
			}
			cancel()
			continue
		}
		a.reconcileTestbed(plan)
	}
}

// partCreated is when this host's part of the testbed was made (its plan
// file is written once, by up).
func partCreated(name string) time.Time {
	fi, err := os.Stat(filepath.Join(testbed.Dir(name), "plan.json"))
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// reconcileTestbed sets the FDB of each segment's VXLAN device from the
// live members.
func (a *Agent) reconcileTestbed(plan *testbed.Plan) {
	vtep := map[string]netip.Addr{}
	for _, m := range a.Members() {
		if m.State == StateAlive && !m.Self {
			vtep[m.Name] = m.Addr
		}
	}
	for _, seg := range plan.Segments {
		want := DesiredFDB(plan, seg.Name, vtep)
		added, removed, err := fabric.SyncFDB(plan.FabricNS, seg.VXLAN, want)
		switch {
		case errors.Is(err, fabric.ErrNotFound):
			// Not built yet, or being removed.
		case err != nil:
			a.log.Warn("reconcile fdb", "testbed", plan.Testbed, "segment", seg.Name, "err", err)
		case added+removed > 0:
			a.log.Info("fdb reconciled", "testbed", plan.Testbed, "segment", seg.Name, "added", added, "removed", removed)
		}
	}
}

// DesiredFDB returns the forwarding entries of a segment's VXLAN device
// on plan's host, given the VTEP address of each live peer host: a
// default (flooding) entry per live peer host of the testbed, and a
// unicast entry per node of the segment on a live peer host.
func DesiredFDB(plan *testbed.Plan, segment string, vtep map[string]netip.Addr) []fabric.FDBEntry {
	var out []fabric.FDBEntry
	for _, h := range plan.Hosts {
		if addr, ok := vtep[h]; ok && h != plan.Local {
			out = append(out, fabric.FDBEntry{MAC: fabric.ZeroMAC, Dst: addr})
		}
	}
	for _, n := range plan.Nodes {
		addr, ok := vtep[n.Host]
		if !ok || n.Host == plan.Local || n.Segment != segment {
			continue
		}
		mac, err := net.ParseMAC(n.MAC)
		if err != nil {
			continue
		}
		out = append(out, fabric.FDBEntry{MAC: mac, Dst: addr})
	}
	return out
}
