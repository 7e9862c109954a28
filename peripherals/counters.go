package peripherals

import (
	"sync"
	"sync/atomic"
)

// counterSet holds a kind's named counters, shown in Status.Counters (and
// so in `netstation status` and the testbed's metrics).
type counterSet struct {
	mu sync.Mutex
	m  map[string]*atomic.Uint64
}

// Counter returns the kind's counter called name, created at zero on first
// use; it shows in the peripheral's status. Keep the pointer: Add on it is
// lock-free.
func (p *Runtime) Counter(name string) *atomic.Uint64 {
	c := &p.counters
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*atomic.Uint64{}
	}
	v := c.m[name]
	if v == nil {
		v = new(atomic.Uint64)
		c.m[name] = v
	}
	return v
}

func (c *counterSet) snapshot() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil
	}
	out := make(map[string]uint64, len(c.m))
	for k, v := range c.m {
		out[k] = v.Load()
	}
	return out
}
