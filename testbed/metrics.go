package testbed

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk/diskkind"
	"github.com/netstation/netstation/peripherals/display"
	"github.com/netstation/netstation/testbed/spec"
)

// NodeMetrics is everything one node counts: the supervisor's view
// (state, restarts), the peripheral's own counters and its link's.
type NodeMetrics struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	State    string `json:"state"`
	Restarts int    `json:"restarts"`
	// Peripheral is nil when the peripheral did not answer.
	Peripheral *peripherals.Status `json:"peripheral,omitempty"`
	Link       LinkStatus          `json:"link"`
	// Stats is the kind's own stats op's answer (disk stats, display
	// stats), as those commands show it; absent for other kinds.
	Stats json.RawMessage `json:"stats,omitempty"`
}

// Metrics is one snapshot of a testbed's counters.
type Metrics struct {
	Testbed   string        `json:"testbed"`
	Templates string        `json:"templates"`
	Time      time.Time     `json:"time"`
	Nodes     []NodeMetrics `json:"nodes"`
}

// kindStatsOp is the stats op of the kinds that have one.
var kindStatsOp = map[spec.Kind]peripherals.Op{spec.KindDisk: diskkind.OpStats, spec.KindDisplay: display.OpStats}

// metrics serves the supervisor's "metrics" op.
func (s *supervisor) metrics(ctx context.Context) Metrics {
	m := Metrics{Testbed: s.plan.Testbed, Templates: s.links.templates(), Time: time.Now()}
	s.mu.Lock()
	for _, np := range s.plan.Nodes {
		n := s.nodes[np.Name]
		m.Nodes = append(m.Nodes, NodeMetrics{Name: np.Name, Kind: string(np.Kind), State: n.state, Restarts: n.restarts})
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for i := range m.Nodes {
		wg.Add(1)
		go func(nm *NodeMetrics, np *NodePlan) {
			defer wg.Done()
			nm.Link = s.linkStatus(ctx, np)
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			var ps peripherals.Status
			if err := ctl.Call(cctx, NodeSock(s.dir, nm.Name), "status", nil, &ps, nil); err == nil {
				nm.Peripheral = &ps
			}
			if op, ok := kindStatsOp[np.Kind]; ok {
				var raw json.RawMessage
				if err := ctl.Call(cctx, NodeSock(s.dir, nm.Name), string(op), nil, &raw, nil); err == nil {
					nm.Stats = raw
				}
			}
		}(&m.Nodes[i], &s.plan.Nodes[i])
	}
	wg.Wait()
	return m
}

// GetMetrics asks the named testbed's supervisor for a snapshot of every
// counter.
func GetMetrics(ctx context.Context, testbed string) (*Metrics, error) {
	var m Metrics
	if err := supervisorCall(ctx, testbed, "metrics", nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
