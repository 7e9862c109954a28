package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/gossip"
	"golang.org/x/sys/unix"
)

// Executable is the netstation binary the supervisor re-executes for each
// peripheral (and Up for the supervisor). Tests point it at a freshly built
// binary.
var Executable = func() string {
	p, err := os.Executable()
	if err != nil {
		return "netstation"
	}
	return p
}()

// Phases of a testbed, as reported by status.
const (
	PhaseBuilding = "building"
	PhaseStarting = "starting"
	PhaseReady    = "ready"
	PhaseFailed   = "failed"
	PhaseStopping = "stopping"
)

// Node states.
const (
	StateStarting   = "starting"
	StateRunning    = "running"
	StateRestarting = "restarting"
	StateStopped    = "stopped"
)

// NodeStatus is one row of `netstation status`.
type NodeStatus struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	IP       string   `json:"ip"`
	MAC      string   `json:"mac"`
	PID      int      `json:"pid"`
	State    string   `json:"state"`
	Restarts int      `json:"restarts"`
	RX       uint64   `json:"rx"`
	TX       uint64   `json:"tx"`
	Drops    uint64   `json:"drops"`
	Services []string `json:"services"`
	LastExit string   `json:"last_exit,omitempty"`
	Host     string   `json:"host,omitempty"` // multi-host: where it runs
	// DropReasons breaks Drops down by the engine's reason names.
	DropReasons map[string]uint64 `json:"drop_reasons,omitempty"`
	Link        *LinkStatus       `json:"link,omitempty"` // see link.go
}

// Status is the state of a whole testbed.
type Status struct {
	Name   string       `json:"name"`
	Subnet string       `json:"subnet"`
	Phase  string       `json:"phase"`
	Error  string       `json:"error,omitempty"`
	PID    int          `json:"supervisor_pid"`
	Nodes  []NodeStatus `json:"nodes"`
	// Templates is TemplatesOn, or "off: <reason>" (link.go).
	Templates string `json:"templates"`
}

type nodeProc struct {
	plan *NodePlan
	slot int // in the beat table (watchdog.go)
	// turn is closed when the node may start the first time, holding a
	// start slot (startInOrder).
	turn     chan struct{}
	pid      int
	state    string
	restarts int
	lastExit string
}

// supervisor owns one testbed while it is up.
type supervisor struct {
	dir  string
	plan *Plan
	j    *journal
	log  *slog.Logger
	fab  *fabric.Session // one set of netlink handles for the whole build

	links linkManager // link.go
	beats *beatTable  // the peripherals' heartbeats (watchdog.go); nil: none

	built atomic.Int64 // node namespaces built (Progress)
	// startSlots bounds the process starts in flight (each a thread
	// locked in a namespace while it forks); firstStarts counts starts
	// from startAt until every node has had one, for the log.
	startSlots  chan struct{}
	startAt     time.Time
	firstStarts atomic.Int64

	mu    sync.Mutex
	phase string
	err   string
	nodes map[string]*nodeProc

	stopping chan struct{}
	stopOnce sync.Once
	downDone chan struct{}
	wg       sync.WaitGroup
}

// RunSupervisor builds the testbed whose plan is in dir and supervises it
// until it is told to go down (control socket op "down") or gets SIGTERM;
// then it removes everything. It is the body of `netstation supervise`.
func RunSupervisor(ctx context.Context, dir string, log *slog.Logger) error {
	plan, err := LoadPlan(dir)
	if err != nil {
		return err
	}
	if plan.MultiHost() {
		// This host's part: the supervisor builds, runs and reports only
		// the nodes placed here.
		local := *plan
		local.Nodes = plan.LocalNodes()
		plan = &local
	}
	if plan.Rootless {
		if err := rootlessMounts(dir); err != nil {
			return err
		}
	}
	j, err := openJournal(dir)
	if err != nil {
		return err
	}
	s := &supervisor{
		dir: dir, plan: plan, j: j, log: log,
		phase: PhaseBuilding, nodes: map[string]*nodeProc{},
		stopping: make(chan struct{}), downDone: make(chan struct{}),
		startSlots: make(chan struct{}, startWorkers),
	}
	for i := range plan.Nodes {
		s.nodes[plan.Nodes[i].Name] = &nodeProc{plan: &plan.Nodes[i], slot: i, state: StateStarting, turn: make(chan struct{})}
	}
	if watchSettings().on {
		if s.beats, err = newBeatTable(len(plan.Nodes)); err != nil {
			return err
		}
		defer s.beats.Close()
	}
	// Capability keys: in the state directory (0600) before any
	// peripheral starts; handed over by path, never over the network.
	if err := makeDiskKeys(dir, plan); err != nil {
		return err
	}
	srv, err := ctl.Listen(supervisorSock(dir), s.handle)
	if err != nil {
		return err
	}
	t0 := time.Now()
	fab, err := fabric.NewSession()
	if err != nil {
		return err
	}
	s.fab = fab
	err = s.buildFabric()
	// The session's handles would keep the namespaces alive: let go now.
	fab.Close()
	if err != nil {
		s.setPhase(PhaseFailed, err.Error())
		log.Error("fabric", "err", err)
	} else {
		log.Info("fabric built", "nodes", len(plan.Nodes), "took", time.Since(t0))
		s.setPhase(PhaseStarting, "")
		s.startAt = time.Now()
		for _, n := range s.nodes {
			s.wg.Add(1)
			go s.superviseNode(n)
		}
		go s.startInOrder()
		go s.waitReady()
	}
	select {
	case <-ctx.Done():
	case <-s.stopping:
	}
	s.stop()
	s.setPhase(PhaseStopping, "")
	t0 = time.Now()
	s.wg.Wait()
	log.Info("peripherals stopped", "nodes", len(plan.Nodes), "took", time.Since(t0))
	t0 = time.Now()
	terr := teardown(dir, plan, log)
	log.Info("fabric removed", "took", time.Since(t0))
	j.Close()
	close(s.downDone)
	// Give the "down" caller a moment to read its answer before the socket goes.
	time.Sleep(50 * time.Millisecond)
	srv.Close()
	if plan.Rootless {
		_ = unix.Unmount(fabric.NetnsDir, unix.MNT_DETACH)
	}
	if terr == nil {
		terr = os.RemoveAll(dir)
	}
	return terr
}

// rootlessMounts prepares the supervisor's own mount namespace: nothing it
// mounts propagates back to the host, and named network namespaces are
// bind-mounted under the state directory instead of /run/netns, which an
// ordinary user cannot write.
func rootlessMounts(dir string) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("rootless: make mounts private: %w", err)
	}
	fabric.SetNetnsDir(filepath.Join(dir, "netns"))
	return nil
}

func (s *supervisor) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

func (s *supervisor) setPhase(p, err string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == PhaseFailed && p != PhaseStopping {
		return
	}
	s.phase, s.err = p, err
}

// buildFabric creates the fabric namespace, bridges, optional host access
// and every node's namespace and veth, journalling each before creating it.
func (s *supervisor) buildFabric() error {
	p := s.plan
	if err := s.j.record(entry{Kind: entryNetns, Name: p.FabricNS}); err != nil {
		return err
	}
	if err := s.fab.CreateNetns(p.FabricNS); err != nil {
		return err
	}
	for _, seg := range p.Segments {
		if err := s.fab.CreateBridge(p.FabricNS, seg.Bridge, p.MTU); err != nil {
			return err
		}
		if p.MultiHost() {
			// The segment's tunnel to the other hosts; its socket stays in
			// this (the underlay) namespace. The agent fills its FDB.
			if err := s.fab.CreateVXLAN(fabric.VXLANSpec{
				Name: seg.VXLAN, VNI: seg.VNI, Namespace: p.FabricNS, Master: seg.Bridge,
				Local: p.Underlay, MTU: p.MTU,
			}); err != nil {
				return err
			}
		}
	}
	if h := p.Host; h != nil {
		if err := s.j.record(entry{Kind: entryHostLink, Name: h.IfName}); err != nil {
			return err
		}
		if err := s.fab.CreateVeth(fabric.VethSpec{
			NameA: h.Port, NamespaceA: p.FabricNS, MasterA: h.Bridge,
			NameB: h.IfName, NamespaceB: "", MTU: p.MTU,
		}); err != nil {
			return err
		}
		if err := s.fab.SetAddr("", h.IfName, h.Addr); err != nil {
			return err
		}
	}
	// Nodes one after another through one Session: measured faster than
	// parallel workers, which contend on the kernel's rtnl lock.
	t0 := time.Now()
	for i := range p.Nodes {
		if err := s.buildNode(&p.Nodes[i]); err != nil {
			return err
		}
		s.built.Add(1)
	}
	s.log.Info("node namespaces built", "nodes", len(p.Nodes), "took", time.Since(t0))
	return nil
}

func (s *supervisor) buildNode(n *NodePlan) error {
	if err := s.j.record(entry{Kind: entryNetns, Name: n.NS}); err != nil {
		return err
	}
	if err := s.fab.CreateNetns(n.NS); err != nil {
		return err
	}
	mac, err := net.ParseMAC(n.MAC)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := s.fab.CreateVeth(fabric.VethSpec{
		NameA: n.Port, NamespaceA: s.plan.FabricNS, MasterA: n.Bridge,
		NameB: n.IfName, NamespaceB: n.NS, MACB: mac, MTU: s.plan.MTU, PinMACB: true,
	}); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if err := s.fab.SetLinkState(n.NS, "lo", true); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	if n.RateBits > 0 {
		// Shape both directions: toward the node on the fabric port, from
		// the node on its own port (the node's link then keeps the qdisc).
		if err := s.fab.SetRate(s.plan.FabricNS, n.Port, n.RateBits); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := s.fab.SetRate(n.NS, n.IfName, n.RateBits); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return s.setupLink(n)
}

// startWorkers is how many peripheral processes are being started (forked
// from a thread in the node's namespace) at once.
const startWorkers = 8

// startInOrder gives the nodes their first start in the plan's order,
// startWorkers at a time: the membership seeds (the first nodes of each
// segment, seedsOf) are up before the others join them. In the map's
// random order, at 1,000 peripherals most joins went to seeds not yet
// started, timed out and were retried every 5 s by hundreds of members
// (issue 16).
func (s *supervisor) startInOrder() {
	for i := range s.plan.Nodes {
		select {
		case s.startSlots <- struct{}{}:
		case <-s.stopping:
			return
		}
		close(s.nodes[s.plan.Nodes[i].Name].turn)
	}
}

// superviseNode keeps one peripheral process running, restarting it with
// exponential back-off (100 ms doubling to 5 s, reset after 30 s of health).
func (s *supervisor) superviseNode(n *nodeProc) {
	defer s.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		logf, err := os.OpenFile(NodeLog(s.dir, n.plan.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			s.log.Error("node log", "node", n.plan.Name, "err", err)
			return
		}
		s.mu.Lock()
		restarts, lastExit := n.restarts, n.lastExit
		s.mu.Unlock()
		if restarts > 0 {
			slog.New(slog.NewTextHandler(logf, nil)).Warn("supervisor: restarting the peripheral", "restarts", restarts, "last_exit", lastExit)
		}
		cmd := exec.Command(Executable, "node", "run", "--state", s.dir, "--name", n.plan.Name)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+nodeGOMAXPROCS(), "GOGC="+nodeGOGC())
		if restarts == 0 {
			// Join the membership when told (joinAll), not at start.
			cmd.Env = append(cmd.Env, deferJoinEnv+"=1")
		}
		if s.beats != nil {
			cmd.ExtraFiles = []*os.File{s.beats.f} // heartbeatFD
			cmd.Env = append(cmd.Env, heartbeatEnv+"="+strconv.Itoa(n.slot))
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if restarts == 0 {
			select { // the slot comes with the turn
			case <-n.turn:
			case <-s.stopping:
				logf.Close()
				return
			}
		} else {
			s.startSlots <- struct{}{}
		}
		started := time.Now()
		err = fabric.StartIn(n.plan.NS, cmd)
		<-s.startSlots
		logf.Close()
		if err == nil && s.firstStarts.Add(1) == int64(len(s.nodes)) {
			s.log.Info("peripherals started", "nodes", len(s.nodes), "took", time.Since(s.startAt))
		}
		if err == nil {
			_ = s.j.record(entry{Kind: entryProc, Name: n.plan.Name, PID: cmd.Process.Pid, Start: procStartTime(cmd.Process.Pid)})
			s.mu.Lock()
			n.pid = cmd.Process.Pid
			restarted := n.state != StateStarting
			s.mu.Unlock()
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			if restarted {
				// "running" once it answers on its control socket, as at
				// first start (waitReady), so status never advertises a
				// peripheral that cannot yet be talked to.
				go s.markRunningWhenReady(n, cmd.Process.Pid)
			}
			select {
			case err = <-exited:
			case <-s.stopping:
				stopProcess(cmd.Process, exited)
				s.mu.Lock()
				n.state, n.pid = StateStopped, 0
				s.mu.Unlock()
				return
			}
		}
		select {
		case <-s.stopping:
			return
		default:
		}
		msg := "exited"
		if err != nil {
			msg = err.Error()
		}
		s.log.Warn("peripheral exited; restarting", "node", n.plan.Name, "err", msg, "backoff", backoff)
		s.mu.Lock()
		n.state, n.pid, n.lastExit = StateRestarting, 0, msg
		n.restarts++
		s.mu.Unlock()
		if time.Since(started) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-time.After(backoff):
		case <-s.stopping:
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// markRunningWhenReady sets a restarted peripheral's state to running
// when its control socket answers, unless it has been replaced meanwhile.
func (s *supervisor) markRunningWhenReady(n *nodeProc, pid int) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := ctl.Call(ctx, NodeSock(s.dir, n.plan.Name), "status", nil, nil, nil)
		cancel()
		s.mu.Lock()
		current := n.pid == pid
		if err == nil && current {
			n.state = StateRunning
		}
		s.mu.Unlock()
		if err == nil || !current {
			return
		}
		select {
		case <-s.stopping:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stopProcess ends a peripheral at down. It is killed at once: nothing
// of a peripheral outlives its testbed (its disk image, logs and sockets
// are in the state directory down removes; a disk's acknowledged writes
// are in the page cache, which a kill does not lose), and asking first
// cost the whole testbed's CPU: at 500 peripherals a SIGTERM and a wait
// of up to 2 s each took 3.3-5.6 s of down, every peripheral needing a
// CPU to run its shutdown while all the others still gossiped (issue 16).
// A testbed that writes profiles ($NETSTATION_CPUPROFILE_DIR) is asked
// (SIGTERM) and given 10 s: the profiles are written as a peripheral stops.
func stopProcess(p *os.Process, exited <-chan error) {
	if os.Getenv("NETSTATION_CPUPROFILE_DIR") == "" {
		_ = p.Kill()
		<-exited
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = p.Kill()
		<-exited
	}
}

// readyLimit is how long the peripherals of a testbed of n nodes get to
// answer: 60 s, or 150 ms per node beyond that (1,000 peripherals start
// in about a minute on two busy cores). `up --timeout` bounds the wait
// from the outside.
func readyLimit(n int) time.Duration {
	return max(60*time.Second, time.Duration(n)*150*time.Millisecond)
}

// Readiness checks: at most readyProbes control-socket calls at once, each
// given readyCallTimeout; a node whose socket is not there yet is not
// called at all (its directory is listed once per readyScan).
const (
	readyProbes      = 16
	readyCallTimeout = 2 * time.Second
	readyScan        = 25 * time.Millisecond
)

// waitReady marks the testbed ready when every peripheral answers on its
// control socket; node states follow. Peripherals are checked
// concurrently, each as soon as its socket appears: a serial poll with a
// timeout per node made `up` of 100 peripherals wait on the slowest
// answers one after another (issue 16).
func (s *supervisor) waitReady() {
	start := time.Now()
	limit := readyLimit(len(s.nodes))
	deadline := start.Add(limit)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	var mu sync.Mutex
	pending := map[string]bool{}
	probing := map[string]bool{}
	for name := range s.nodes {
		pending[name] = true
	}
	sem := make(chan struct{}, readyProbes)
	probe := func(name string) {
		for ctx.Err() == nil {
			sem <- struct{}{}
			cctx, ccancel := context.WithTimeout(ctx, readyCallTimeout)
			err := ctl.Call(cctx, NodeSock(s.dir, name), "status", nil, nil, nil)
			ccancel()
			<-sem
			if err == nil {
				mu.Lock()
				delete(pending, name)
				mu.Unlock()
				s.mu.Lock()
				s.nodes[name].state = StateRunning
				s.mu.Unlock()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	nodesDir := filepath.Join(s.dir, "nodes")
	for {
		mu.Lock()
		left := len(pending)
		mu.Unlock()
		if left == 0 {
			break
		}
		ents, _ := os.ReadDir(nodesDir)
		mu.Lock()
		for _, e := range ents {
			if name, ok := strings.CutSuffix(e.Name(), ".sock"); ok && pending[name] && !probing[name] {
				probing[name] = true
				go probe(name)
			}
		}
		mu.Unlock()
		// A peripheral that keeps dying before it ever answered will not
		// come up by waiting: fail now, with its own words.
		s.mu.Lock()
		failed := ""
		for name, n := range s.nodes {
			if n.restarts >= 3 && n.state != StateRunning {
				failed = fmt.Sprintf("peripheral %s exits at start (%d tries)", name, n.restarts+1)
				break
			}
		}
		s.mu.Unlock()
		if failed != "" {
			name, _, _ := strings.Cut(strings.TrimPrefix(failed, "peripheral "), " ")
			s.setPhase(PhaseFailed, failed+": "+tail(NodeLog(s.dir, name), 1))
			return
		}
		if time.Now().After(deadline) {
			s.setPhase(PhaseFailed, fmt.Sprintf("%d peripherals did not come up within %v (see netstation logs)", left, limit))
			return
		}
		select {
		case <-s.stopping:
			return
		case <-time.After(readyScan):
		}
	}
	s.setPhase(PhaseReady, "")
	s.log.Info("testbed ready", "nodes", len(s.nodes), "took", time.Since(start))
	// After ready: `up` returns while the views fill (BenchmarkScale
	// times them from ready).
	jctx, jcancel := context.WithCancel(context.Background())
	defer jcancel()
	go func() {
		select {
		case <-s.stopping:
			jcancel()
		case <-jctx.Done():
		}
	}()
	s.joinMembership(jctx)
	s.watch(jctx)
}

// deferJoinEnv, set to 1 in a peripheral's first start, makes it join the
// membership only when told (peripherals.Config.DeferJoin): joinMembership
// tells them all once every one answers. A restarted peripheral joins at
// once.
const deferJoinEnv = "NETSTATION_DEFER_JOIN"

// joinCallTimeout bounds one op join: a seed's round exchanges the whole
// view (about 300 KB each way at 1,000 members) with every other seed of
// its segment, on a machine that may be saturated.
const joinCallTimeout = 30 * time.Second

// joinMembership completes every peripheral's membership view with three
// rounds of full-state exchanges (op join), readyProbes calls at a time,
// each round once the one before has ended: every peripheral but the seeds
// (the first seedCount of its segment) with one seed, so that every seed
// knows who joined it; every seed with the first node of its segment,
// twice (after the first pass the first node knows everyone, after the
// second every seed does: 2k exchanges where every seed with every other
// was k^2 and took 14 s of 87 at 1,000); every other peripheral with its
// seed again. Peripherals do not re-broadcast
// each other's joins (gossip.Config.QuietJoins): at 1,000 members the
// dissemination of 1,000 joins to 1,000 members, each received and
// decoded several times, kept both cores busy for minutes after up, and
// 8 minutes after up views were still half complete (issue 16). The
// rounds are about 2n exchanges of at most the whole view. A peripheral
// that misses its call joins by itself after gossip.DeferredJoinLimit,
// and every peripheral exchanges with a random member while its view is
// short, from 30 s on.
func (s *supervisor) joinMembership(ctx context.Context) {
	t0 := time.Now()
	segments := map[string][]NodePlan{}
	for _, n := range s.plan.Nodes {
		segments[n.Segment] = append(segments[n.Segment], n)
	}
	var seeds, others []joinCall
	for _, seg := range segments {
		k := seedCount(len(seg))
		all := make([]netip.AddrPort, k)
		for i := range all {
			all[i] = netip.AddrPortFrom(seg[i].Addr.Addr(), gossip.Port)
		}
		for i, n := range seg {
			if i == 0 {
				continue
			}
			if i < k {
				seeds = append(seeds, joinCall{name: n.Name, peers: all[:1]})
			} else {
				others = append(others, joinCall{name: n.Name, peers: all[i%k : i%k+1]})
			}
		}
		// The first node's op join ends its wait; it exchanges with nobody.
		seeds = append(seeds, joinCall{name: seg[0].Name, peers: all[:1]})
	}
	for _, r := range []struct {
		what  string
		calls []joinCall
	}{{"peripherals joined a seed", others}, {"seeds exchanged views with the first", seeds},
		{"seeds exchanged views with the first again", seeds}, {"peripherals exchanged views with their seed", others}} {
		t1 := time.Now()
		failed := s.joinRound(ctx, r.calls)
		s.log.Info(r.what, "calls", len(r.calls), "failed", failed, "took", time.Since(t1))
		if ctx.Err() != nil {
			return
		}
	}
	s.log.Info("membership joined", "nodes", len(s.nodes), "took", time.Since(t0))
}

// joinCall is one op join: node name, exchanging with peers (none: its
// seeds).
type joinCall struct {
	name  string
	peers []netip.AddrPort
}

// joinRound makes the calls, readyProbes at a time, each tried up to
// three times (on a saturated machine a call may time out); it returns
// how many failed.
func (s *supervisor) joinRound(ctx context.Context, calls []joinCall) int {
	var failed atomic.Int64
	fanOut(len(calls), readyProbes, func(i int) {
		c := calls[i]
		var err error
		for try := 0; try < 3 && ctx.Err() == nil; try++ {
			cctx, cancel := context.WithTimeout(ctx, joinCallTimeout)
			err = ctl.Call(cctx, NodeSock(s.dir, c.name), string(peripherals.OpJoin), peripherals.JoinArgs{Peers: c.peers}, nil, nil)
			cancel()
			if err == nil {
				return
			}
		}
		failed.Add(1)
		s.log.Debug("op join", "node", c.name, "err", err)
	})
	return int(failed.Load())
}

// Progress is a testbed's bring-up in counts: what `up` shows while it
// waits. It costs the supervisor no call to any peripheral, unlike
// Status.
type Progress struct {
	Phase string `json:"phase"`
	Error string `json:"error,omitempty"`
	Nodes int    `json:"nodes"`
	// Namespaces counts the nodes whose namespace and link are built.
	Namespaces int `json:"namespaces"`
	// Started counts the peripherals whose process was started; Ready,
	// those that answer on their control socket.
	Started int `json:"started"`
	Ready   int `json:"ready"`
}

func (s *supervisor) progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := Progress{Phase: s.phase, Error: s.err, Nodes: len(s.nodes), Namespaces: int(s.built.Load())}
	for _, n := range s.nodes {
		if n.pid != 0 || n.state == StateRunning {
			p.Started++
		}
		if n.state == StateRunning {
			p.Ready++
		}
	}
	return p
}

func (s *supervisor) handle(ctx context.Context, req ctl.Request, stream *ctl.Stream) (any, error) {
	switch req.Op {
	case "status":
		return s.status(ctx), nil
	case "progress":
		return s.progress(), nil
	case "link", "link-show":
		return s.handleLink(ctx, req)
	case "capture", "capture-stop":
		return s.handleCapture(ctx, req, stream)
	case "metrics":
		return s.metrics(ctx), nil
	case "cap-version": // a disk on another host was revoked: grant.go
		var a CapVersionArgs
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		plan, err := LoadPlan(s.dir) // the whole plan: s.plan holds this host's nodes
		if err != nil {
			return nil, err
		}
		return nil, raiseCapVersion(s.dir, plan, a)
	case "down":
		s.stop()
		select {
		case <-s.downDone:
			return "down", nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

func (s *supervisor) status(ctx context.Context) Status {
	s.mu.Lock()
	st := Status{Name: s.plan.Testbed, Subnet: s.plan.Subnet.String(), Phase: s.phase, Error: s.err, PID: os.Getpid()}
	for _, np := range s.plan.Nodes {
		n := s.nodes[np.Name]
		st.Nodes = append(st.Nodes, NodeStatus{
			Name: np.Name, Kind: string(np.Kind), IP: np.Addr.Addr().String(), MAC: np.MAC, Host: np.Host,
			PID: n.pid, State: n.state, Restarts: n.restarts, LastExit: n.lastExit,
		})
	}
	s.mu.Unlock()
	// One call per peripheral, statusCalls at a time: a goroutine per
	// node each calling twice (status, then again for the link) timed
	// the CLI out at 100 nodes on a loaded machine.
	st.Templates = s.links.templates()
	fanOut(len(st.Nodes), statusCalls, func(i int) {
		ns := &st.Nodes[i]
		ls := s.linkStatusOf(&s.plan.Nodes[i])
		ns.Link = &ls
		if ns.PID == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		var ps peripherals.Status
		if err := ctl.Call(cctx, NodeSock(s.dir, ns.Name), "status", nil, &ps, nil); err == nil {
			ns.RX, ns.TX, ns.Drops, ns.Services, ns.DropReasons = ps.RX, ps.TX, ps.Drops, ps.Services, ps.DropReasons
			ls.LinkLayer = &ps.ImpairCounters
			if ps.LinkRx != "" {
				ls.Rx = ps.LinkRx // what it runs, not only what it was asked
			}
		}
	})
	return st
}

// statusCalls bounds the peripherals status asks at once.
const statusCalls = 32

// nodeGOGC is the garbage collector's target of each peripheral:
// $NETSTATION_NODE_GOGC, else 25. A peripheral's heap is mostly long-lived
// buffers (socket rings, framebuffers) that count toward the collector's
// pacing although most of their pages are never touched, so the default
// 100 let as much garbage again (TCP buffers of gossip push/pulls, decoded
// messages) become resident before a collection: see issue 16's PSS
// figures in docs/BENCHMARKS.md. Collections stay rare: an idle
// peripheral allocates little.
func nodeGOGC() string {
	if v := os.Getenv("NETSTATION_NODE_GOGC"); v != "" {
		return v
	}
	return "25"
}

// nodeGOMAXPROCS is the Go scheduler width of each peripheral:
// $NETSTATION_NODE_GOMAXPROCS, else 1. The receive loop waits in the
// netpoller, so with one P the reader it wakes runs on the same CPU right
// after it; with two, the wake-up often crosses CPUs, which costs 10-20 us
// in this VM (same-run bench, 2-core VM: RTT p50 50-56 us with 1 vs
// 65-67 us with 2; packet rate and storage goodput equal or better).
func nodeGOMAXPROCS() string {
	if v := os.Getenv("NETSTATION_NODE_GOMAXPROCS"); v != "" {
		return v
	}
	return "1"
}

// nodeNote appends a line in slog's text format to a node's log, for what
// the supervisor does to the node (restarts, link changes): `netstation
// logs NODE` shows it among the peripheral's own lines.
func (s *supervisor) nodeNote(node string, level slog.Level, msg string, args ...any) {
	f, err := os.OpenFile(NodeLog(s.dir, node), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	slog.New(slog.NewTextHandler(f, nil)).Log(context.Background(), level, "supervisor: "+msg, args...)
}
