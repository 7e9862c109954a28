package gossip

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
)

// BeatEvery is how often a node with Config.Beat beats unless
// Config.BeatEvery says (see beatLoop).
const BeatEvery = time.Second

// beatLoop calls Config.Beat every BeatEvery for as long as the node
// runs. The beat is a testbed supervisor's local failure detector (its
// watchdog): the supervisor knows its own peripherals, so it can tell a
// hung one from a slow one without probing over the network. The beat
// is given only after the loop has taken the view's lock and
// memberlist's own (NumMembers), so a node whose membership is stuck on
// either stops beating, as a frozen or deadlocked process does.
//
// A member declared dead that resumes learns of its death from a
// full-state exchange (Exchange: the supervisor asks for one when a
// peripheral it declared beats again) and refutes, as memberlist refutes
// any death or suspicion of itself it receives. It does not exchange by
// itself after a stall: on a saturated machine every peripheral stalls for
// seconds at once (one run at 200 on 2 cores that did saw beats 25 s late
// and a load average of 290 while 200 peripherals exchanged their views).
func (n *Node) beatLoop() {
	defer n.wg.Done()
	every := n.cfg.BeatEvery
	if every <= 0 {
		every = BeatEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
			n.mu.Lock()
			_ = n.view[n.cfg.Name]
			n.mu.Unlock()
			n.ml.NumMembers()
			n.cfg.Beat()
		}
	}
}

// ErrDeclare: DeclareDead was asked about this node itself or a member
// the view does not hold.
var ErrDeclare = errors.New("gossip: cannot declare that member dead")

// DeclareDead has this node declare the member called name dead (our
// memberlist fork's DeclareDead): the death is gossiped as if this node's
// suspicion of it had timed out. A testbed's supervisor asks it of a few
// live peripherals when one of its own stops beating. A member that is
// in fact alive refutes and comes back.
func (n *Node) DeclareDead(name string) error {
	if err := n.ml.DeclareDead(name); err != nil {
		if errors.Is(err, memberlist.ErrDeclare) {
			return fmt.Errorf("%w: %q", ErrDeclare, name)
		}
		return err
	}
	n.log.Info("gossip: declared dead", "name", name)
	return nil
}
