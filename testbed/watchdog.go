package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"golang.org/x/sys/unix"
)

// The supervisor's watchdog is a failure detector of its own peripherals
// that does not probe over the network (issue 16). Every peripheral's
// membership beats every gossip.BeatEvery (2 s; gossip.Config.Beat) by writing the
// monotonic clock into its slot of a table of memory shared with the
// supervisor (a memfd handed over as the child's fd 3); the supervisor
// reads the whole table every watchScan. A peripheral whose beats stop
// (stopped, deadlocked, stuck on its membership's locks: the cause does
// not matter) for watchMiss of time it was not waiting for a CPU is hung:
// the supervisor asks a few of its live peripherals (op declare-dead) to
// declare it dead in the membership, which gossips the death to every
// member, those on other hosts too. When it beats again, the supervisor
// has it exchange state with a few others (op join): it learns of its
// death, refutes, and is alive in every view again.
//
// memberlist's probing still finds what the watchdog cannot see (a link
// down, a member of another host whose own supervisor is gone), at the
// slower pace a large cluster can afford: at 1,000 members on 2 cores a
// probe costs the machine about 0.5 ms, and probing fast enough to find a
// frozen member in 10 s cost a fifth of a core idle.

// heartbeatFD is the peripheral's descriptor of the beat table (its
// first ExtraFiles entry).
const heartbeatFD = 3

// heartbeatEnv gives a peripheral its slot in the beat table.
const heartbeatEnv = "NETSTATION_HEARTBEAT_SLOT"

// beatTable is the beat table as the supervisor holds it: one uint64 per
// node of its plan (the monotonic clock's nanoseconds at the node's last
// beat; 0: never beaten).
type beatTable struct {
	f     *os.File
	mem   []byte
	slots []atomic.Uint64
}

// newBeatTable makes the table for n nodes.
func newBeatTable(n int) (*beatTable, error) {
	fd, err := unix.MemfdCreate("netstation-heartbeat", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("heartbeat table: %w", err)
	}
	f := os.NewFile(uintptr(fd), "heartbeat")
	size := max(8*n, 8)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("heartbeat table: %w", err)
	}
	slots, mem, err := mapBeats(f, size)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &beatTable{f: f, mem: mem, slots: slots[:n]}, nil
}

func mapBeats(f *os.File, size int) ([]atomic.Uint64, []byte, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("heartbeat table: map: %w", err)
	}
	// Page-aligned, so every slot is 8-byte aligned for atomic access.
	return unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&mem[0])), size/8), mem, nil
}

func (t *beatTable) Close() error {
	err := unix.Munmap(t.mem)
	if cerr := t.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// monotonic is the clock the beats carry (system-wide, so the supervisor
// and its peripherals read the same one; it advances while a process is
// stopped).
func monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// openBeat returns the beat of a peripheral the supervisor started with a
// slot in its table ($NETSTATION_HEARTBEAT_SLOT and fd 3), or nil.
func openBeat() (func(), error) {
	v := os.Getenv(heartbeatEnv)
	if v == "" {
		return nil, nil
	}
	return mapBeat(os.NewFile(heartbeatFD, "heartbeat"), v)
}

// mapBeat maps the table f and returns the beat of slot; f is closed (the
// mapping stays).
func mapBeat(f *os.File, slot string) (func(), error) {
	defer f.Close()
	i, err := strconv.Atoi(slot)
	if err != nil || i < 0 {
		return nil, fmt.Errorf("heartbeat: bad slot %q", slot)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("heartbeat: %w", err)
	}
	if int64(i+1)*8 > st.Size() {
		return nil, fmt.Errorf("heartbeat: slot %d outside a table of %d bytes", i, st.Size())
	}
	slots, _, err := mapBeats(f, int(st.Size()))
	if err != nil {
		return nil, err
	}
	mine := &slots[i]
	return func() { mine.Store(uint64(monotonic())) }, nil
}

// Watchdog timings (docs/ARCHITECTURE.md, "At scale"; $NETSTATION_WATCHDOG
// overrides them: suspect, miss, scan as durations, or "off").
const (
	// watchSuspect: a beat this old (gossip.BeatEvery, 2 s, and one more
	// second) makes the watchdog track how long the peripheral waits for
	// a CPU or the kernel.
	watchSuspect = 3 * time.Second
	// watchMiss: a peripheral silent this long, not counting its time
	// waiting for a CPU or the kernel after watchSuspect, is hung.
	watchMiss = 5 * time.Second
	// watchScan: how often the table is read.
	watchScan = 500 * time.Millisecond
	// watchDeclarers: how many live peripherals declare a hung one dead,
	// at least (each gossips the death, so more start the spread in more
	// places): n/32 of n (31 at 1,000), so that two gossip rounds (fan-out
	// 6, every 500 ms) reach nearly every member; with 3, at 1,000 on 2
	// cores, the death took 3.7-4.6 s from the declaration to the last
	// view. Asked watchDeclareCalls at a time.
	watchDeclarers    = 3
	watchDeclareCalls = 8
)

// watchSlot is the watchdog's record of one node.
type watchSlot struct {
	seen bool // by a check
	pid  int
	// floor: the slot's value when pid was first seen (an earlier
	// process's last beat); the slot is armed by a beat above it.
	floor uint64
	last  uint64 // the last beat seen; 0: not armed
	// A suspect (beat older than suspect): its silence so far (not
	// counting time spent waiting for a CPU or the kernel), and the time
	// and run delay at the last look.
	suspect  bool
	silent   time.Duration
	lookAt   int64
	delay    time.Duration
	declared bool
}

// watchdog decides, from the beats and the processes' run delays, which
// peripherals are hung. It holds no clock: check is given the time, so
// tests drive it.
type watchdog struct {
	suspect, miss time.Duration
	// waiting returns the time pid's threads have waited for a CPU since
	// they started, and whether one is waiting now (runnable, or in an
	// uninterruptible sleep); ok false: unknown (the process is gone).
	waiting func(pid int) (delay time.Duration, now, ok bool)
	slots   []watchSlot

	// Figures for the log: the oldest beat seen since the last report,
	// and suspects whose run delay excused them.
	maxAge  time.Duration
	excused int
}

// watchVerdict is what one check found.
type watchVerdict struct {
	hung    []int // slots to declare dead (now recorded as declared)
	resumed []int // slots declared before that beat again
	fresh   []int // slots beating on time (candidates to declare others)
	held    int   // hung slots not declared: too many at once (watchHold)
}

// watchHold: when more than this share of the armed slots look hung in
// one check, none is declared: a whole machine stalled (or the
// supervisor was not run), not that many peripherals hung at once.
const watchHold = 4

// check reads the table once at now (monotonic nanoseconds) for the
// processes pids (0: none running in that slot).
func (w *watchdog) check(now int64, beats []atomic.Uint64, pids []int) watchVerdict {
	var v watchVerdict
	armed := 0
	for i := range w.slots {
		s := &w.slots[i]
		b := beats[i].Load()
		if pids[i] != s.pid || !s.seen {
			// A new process in the slot (a restart): its predecessor's
			// beats do not arm it. At the first look, the beats are those
			// of the process running.
			floor := b
			if !s.seen {
				floor = 0
			}
			*s = watchSlot{pid: pids[i], floor: floor, seen: true}
		}
		if s.pid == 0 {
			continue
		}
		if b > s.floor && b > s.last {
			if s.declared {
				v.resumed = append(v.resumed, i)
			}
			s.last, s.suspect, s.declared = b, false, false
		}
		if s.last == 0 {
			continue
		}
		armed++
		age := time.Duration(now - int64(s.last))
		if age > w.maxAge {
			w.maxAge = age
		}
		if age < w.suspect {
			if !s.declared {
				v.fresh = append(v.fresh, i)
			}
			continue
		}
		if s.declared {
			continue
		}
		d, waitingNow, ok := w.waiting(s.pid)
		if !ok {
			continue
		}
		if !s.suspect {
			// Silent up to suspect before the watchdog looked at the
			// process: what came before is not known to be its own.
			s.suspect, s.silent, s.lookAt, s.delay = true, min(age, w.suspect), now, d
			continue
		}
		// Since the last look: the time not spent waiting. The kernel
		// adds a thread's wait to its run delay only when it gets the
		// CPU, so a process waiting now is excused the whole interval
		// (the wait then counted again later makes the watchdog more
		// patient, never less).
		elapsed := time.Duration(now - s.lookAt)
		waited := d - s.delay
		if waitingNow {
			waited = elapsed
		}
		s.silent += elapsed - min(max(waited, 0), elapsed)
		s.lookAt, s.delay = now, d
		if s.silent >= w.miss {
			v.hung = append(v.hung, i)
		} else if age >= w.miss {
			w.excused++
		}
	}
	if len(v.hung) > 1 && len(v.hung)*watchHold > armed {
		v.held, v.hung = len(v.hung), nil
		return v
	}
	for _, i := range v.hung {
		w.slots[i].declared = true
	}
	return v
}

// procWaiting sums the run delay of every thread of pid
// (/proc/PID/task/*/schedstat, second field: nanoseconds runnable but
// not running), and reports whether a thread is waiting now: runnable (R)
// or in an uninterruptible sleep (D: the kernel's I/O, e.g. a log write
// throttled behind other processes' dirty pages). A stopped (T) or
// blocked (S) process waits for nothing: that is the hang. A process
// starved of a CPU on a saturated machine waits nearly all its wall time
// (a few threads waiting at once count more: the watchdog then errs on
// the side of patience).
func procWaiting(pid int) (delay time.Duration, now, ok bool) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, false, false
	}
	var sum int64
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "schedstat")); err == nil {
			if f := strings.Fields(string(b)); len(f) >= 2 {
				if ns, err := strconv.ParseInt(f[1], 10, 64); err == nil {
					sum += ns
				}
			}
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat")); err == nil {
			// "pid (comm) S ...": the state follows the last ')'.
			if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'R' || b[i+2] == 'D') {
				now = true
			}
		}
	}
	return time.Duration(sum), now, true
}

// watchConfig are the watchdog's timings and the peripherals' beat.
type watchConfig struct {
	beat, suspect, miss, scan time.Duration
	on                        bool
}

// watchSettings are the constants, or $NETSTATION_WATCHDOG's (keys beat,
// suspect, miss, scan as durations; off: no watchdog).
func watchSettings() watchConfig {
	c := watchConfig{beat: gossip.BeatEvery, suspect: watchSuspect, miss: watchMiss, scan: watchScan, on: true}
	for _, kv := range strings.Split(os.Getenv("NETSTATION_WATCHDOG"), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		d, err := time.ParseDuration(v)
		switch {
		case k == "off":
			c.on = false
		case k == "beat" && err == nil && d > 0:
			c.beat = d
		case k == "suspect" && err == nil && d > 0:
			c.suspect = d
		case k == "miss" && err == nil && d > 0:
			c.miss = d
		case k == "scan" && err == nil && d > 0:
			c.scan = d
		}
	}
	c.miss = max(c.miss, c.suspect)
	return c
}

// watchReport is how often the watchdog logs its figures.
const watchReport = time.Minute

// watch runs the watchdog over the supervisor's peripherals until ctx
// ends. It starts once the membership's rounds are over: a peripheral
// declared dead before its view is complete gains nothing, and the
// machine is busiest then.
func (s *supervisor) watch(ctx context.Context) {
	c := watchSettings()
	suspect, miss, scan := c.suspect, c.miss, c.scan
	if !c.on || s.beats == nil {
		return
	}
	names := make([]string, len(s.plan.Nodes))
	for i := range names {
		names[i] = s.plan.Nodes[i].Name
	}
	w := &watchdog{suspect: suspect, miss: miss, waiting: procWaiting, slots: make([]watchSlot, len(names))}
	pids := make([]int, len(names))
	s.log.Info("watchdog on", "nodes", len(names), "beat", c.beat, "suspect", suspect, "miss", miss, "scan", scan)
	t := time.NewTicker(scan)
	defer t.Stop()
	report := time.Now()
	declared, resumed := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		for i, name := range names {
			n := s.nodes[name]
			pids[i] = 0
			if n.state == StateRunning {
				pids[i] = n.pid
			}
		}
		s.mu.Unlock()
		v := w.check(monotonic(), s.beats.slots, pids)
		if v.held > 0 {
			s.log.Warn("watchdog: too many peripherals silent at once; declaring none", "silent", v.held)
		}
		for _, i := range v.hung {
			declared++
			s.log.Warn("watchdog: peripheral hung; declaring it dead", "node", names[i], "pid", pids[i])
			s.nodeNote(names[i], slog.LevelWarn, "watchdog: no heartbeat; declared dead in the membership", "miss", miss)
			go s.declareDead(ctx, names, v.fresh, names[i])
		}
		for _, i := range v.resumed {
			resumed++
			s.log.Info("watchdog: peripheral beats again; it exchanges state to refute its death", "node", names[i])
			s.nodeNote(names[i], slog.LevelInfo, "watchdog: heartbeat again")
			go s.refute(ctx, v.fresh, i)
		}
		if time.Since(report) >= watchReport {
			s.log.Info("watchdog", "oldest_beat", w.maxAge.Round(time.Millisecond), "excused_by_cpu_wait", w.excused,
				"declared", declared, "resumed", resumed)
			w.maxAge, w.excused, report = 0, 0, time.Now()
		}
	}
}

// refute has the peripheral of slot i, declared dead and beating again,
// exchange its state with up to watchDeclarers beating peripherals (op
// join): it learns of its death and refutes it (memberlist refutes any
// death of itself it receives), and its new incarnation spreads by
// gossip. Nothing else would tell it soon: memberlist gossips to the dead
// only for a while, and the periodic full-state exchange of a large
// cluster comes hours apart.
func (s *supervisor) refute(ctx context.Context, fresh []int, i int) {
	var peers []netip.AddrPort
	for _, k := range rand.Perm(len(fresh)) {
		if len(peers) == watchDeclarers {
			break
		}
		if fresh[k] != i {
			peers = append(peers, netip.AddrPortFrom(s.plan.Nodes[fresh[k]].Addr.Addr(), gossip.Port))
		}
	}
	if len(peers) == 0 {
		return
	}
	name := s.plan.Nodes[i].Name
	cctx, cancel := context.WithTimeout(ctx, joinCallTimeout)
	defer cancel()
	if err := ctl.Call(cctx, NodeSock(s.dir, name), string(peripherals.OpJoin), peripherals.JoinArgs{Peers: peers}, nil, nil); err != nil {
		s.log.Warn("watchdog: exchange of a resumed peripheral", "node", name, "err", err)
	}
}

// declareDead asks max(watchDeclarers, n/32) of the fresh (beating)
// slots' peripherals to declare node dead in the membership, then, after
// watchSweepAfter, every other beating peripheral here: gossip alone
// leaves a view without the death now and then (each member that learns
// it passes it on 8 times at 1,000, so a given member misses all of them
// with odds of about e^-8: one view in 1,000 in one of four runs, which
// then held it alive until its own probes came round to it, minutes
// later). A peripheral that already has it dead answers at once; the
// sweep is 1.5-2 s of calls at 1,000, once per hang. Members on
// other hosts have only gossip (their supervisors do not know).
func (s *supervisor) declareDead(ctx context.Context, names []string, fresh []int, node string) {
	want := max(watchDeclarers, len(names)/32)
	var first, rest []string
	for _, k := range rand.Perm(len(fresh)) {
		switch name := names[fresh[k]]; {
		case name == node:
		case len(first) < want:
			first = append(first, name)
		default:
			rest = append(rest, name)
		}
	}
	asked := s.askDeclare(ctx, first, node, watchDeclareCalls)
	if asked == 0 {
		s.log.Warn("watchdog: no live peripheral here to declare it dead; the membership's probes will", "node", node)
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(watchSweepAfter):
	}
	swept := s.askDeclare(ctx, rest, node, watchSweepCalls)
	s.log.Info("watchdog: declared dead", "node", node, "by", asked, "then", swept)
}

// watchSweepAfter and watchSweepCalls: see declareDead. The sweep waits
// a little for gossip (a peripheral that has the death already answers
// at once) and keeps more calls in flight than the first declarers do:
// each waits mostly for its peripheral to be scheduled. At 1,000, 2 s and
// 8 calls took the sweep 4.7 s after the declaration and left the frozen
// member dead in all views 9.9-10.6 s after the freeze; 500 ms and 32
// calls, 1.5-2.1 s and 6.9-10.3 s (docs/SCALE.md).
const (
	watchSweepAfter = 500 * time.Millisecond
	watchSweepCalls = 32
)

// askDeclare calls op declare-dead on each of by, calls at a time, and
// returns how many answered.
func (s *supervisor) askDeclare(ctx context.Context, by []string, node string, calls int) int {
	var asked atomic.Int64
	fanOut(len(by), calls, func(i int) {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := ctl.Call(cctx, NodeSock(s.dir, by[i]), string(peripherals.OpDeclareDead), peripherals.DeclareDeadArgs{Name: node}, nil, nil)
		if err != nil {
			s.log.Debug("watchdog: declare-dead", "by", by[i], "node", node, "err", err)
			return
		}
		asked.Add(1)
	})
	return int(asked.Load())
}
