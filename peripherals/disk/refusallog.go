package disk

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// refusalLog logs refused requests at info level, at most one line per
// second: the first refusal of a quiet spell says who and why, the next
// line counts what was left out meanwhile, so a flood of bad requests
// cannot flood the log.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (r *refusalLog) note(log *slog.Logger, what string, err error, from net.Addr) {
	now := time.Now()
	r.mu.Lock()
	if now.Sub(r.last) < time.Second {
		r.suppressed++
		r.mu.Unlock()
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	log.Info("disk: "+what+" refused", "from", from, "err", err, "refusals_not_logged", n)
}
