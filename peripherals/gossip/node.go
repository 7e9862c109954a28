package gossip

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Port is the gossip port of every peripheral, UDP and TCP (memberlist's
// default).
const Port = 7946

// Meta is what a peripheral publishes about itself. Encoded, it must fit
// memberlist's 512-byte metadata limit (NewMeta checks).
type Meta struct {
	Kind     string            `json:"kind"`               // cpu, disk, display
	Services map[string]uint16 `json:"services,omitempty"` // name -> port, e.g. "disk/udp": 10810
	// Capacity: a disk's size in bytes, a display's resolution.
	DiskBytes int64 `json:"disk_bytes,omitempty"`
	Width     int   `json:"width,omitempty"`
	Height    int   `json:"height,omitempty"`
}

// MaxMeta is memberlist's metadata limit.
const MaxMeta = memberlist.MetaMaxSize

// ErrMeta: the metadata does not fit.
var ErrMeta = errors.New("gossip: metadata too large")

func (m Meta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMeta {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMeta, len(b), MaxMeta)
	}
	return b, nil
}

// State of a member as this node sees it.
type State string

// The states. memberlist keeps its SWIM "suspect" state to itself (the
// Node it hands out always says alive), so a view has none: a member
// stays alive until memberlist declares it dead.
const (
	Alive State = "alive"
	// Dead: failed, or left. memberlist's leave event does not say which
	// (the node it passes carries a stale state), so neither can we.
	Dead State = "dead"
)

// Member is one peripheral in this node's view.
type Member struct {
	Name  string         `json:"name"`
	Addr  netip.AddrPort `json:"addr"`
	State State          `json:"state"`
	Meta  Meta           `json:"meta"`
	// Since is when this node last saw the member change state.
	Since time.Time `json:"since"`
}

// Config of a Node.
type Config struct {
	Name    string // unique in the cluster: the peripheral's name
	Network Network
	Port    uint16 // default Port
	Meta    Meta
	// Seeds are joined at start and re-joined while any is missing from
	// the view, so a partition or a lost join heals.
	Seeds []netip.AddrPort
	// Rejoin is how often missing seeds are re-joined (default 5 s, 30 s
	// beyond LargeCluster members).
	Rejoin time.Duration
	// Expect, when known, is how many members the cluster has (this node
	// included): while the view has fewer alive, the node keeps
	// exchanging its whole state with a random member every settleEvery,
	// for up to settleFor after start (0: the fixed early exchanges only).
	Expect int
	// Deferred: Start opens the transport and memberlist (the node
	// answers others' joins) but joins no seed until Join is called, or
	// DeferredJoinLimit has passed. A testbed's supervisor starts every
	// peripheral first and tells them all to join once they answer:
	// members joining one by one while the others were still starting
	// made every start pay for gossip about all the earlier ones, and
	// 1,000 peripherals never finished starting (issue 16).
	Deferred bool
	// QuietJoins: the node does not re-broadcast other members' joins
	// (their alive messages at the first incarnation: our memberlist
	// fork's Config.QuietJoins), so a member it does not learn of from a
	// full-state exchange it learns of from the settle exchanges or the
	// periodic push/pull only. For
	// clusters whose views are completed by Exchange calls (a testbed's
	// supervisor does). Refutations, suspicions and deaths still spread
	// by gossip.
	QuietJoins bool
	// Beat, if set, is called every BeatEvery while the node's membership
	// is not stuck (beatLoop): a testbed supervisor's watchdog.
	Beat      func()
	BeatEvery time.Duration
	Logger    *slog.Logger
}

// DeferredJoinLimit is how long a deferred node waits for Join before it
// joins by itself.
const DeferredJoinLimit = 5 * time.Minute

// Node is a peripheral's membership in the cluster.
type Node struct {
	cfg  Config
	tr   *Transport
	ml   *memberlist.Memberlist
	meta []byte
	log  *slog.Logger

	mu   sync.Mutex
	view map[string]Member // every member ever seen, dead ones included
	done chan struct{}
	wg   sync.WaitGroup

	joinOnce sync.Once
	joinNow  chan struct{} // closed by Exchange

	releaseOnce sync.Once // releaseLater

	metaMu sync.Mutex
	metas  map[string]Meta // decodeMeta's cache
}

// MemberlistConfig is the memberlist tuning of a testbed, chosen by
// measurement at 200 and 1,000 peripherals on one 2-core machine (issue
// 16; figures in docs/BENCHMARKS.md):
//
//   - no compression: LZW was a quarter of every peripheral's CPU time in
//     the start-up storm of 100 peripherals, and the fabric is a bridge in
//     memory;
//   - a probe every second with a 500 ms timeout (the LAN profile). At 200
//     peripherals, probing every 500 ms with a 200 ms timeout (and gossip
//     every 100 ms) kept 2.5 cores busy when idle and the views never
//     settled: members that merely waited for a CPU were suspected,
//     refuted, suspected again. With these settings: 0.9 core, every view
//     complete;
//   - suspicion for 2 x log10(n) probe intervals (2 s at 10 members, 6 s at
//     1,000), so a frozen member is seen dead by all within 10 s even at
//     1,000, where 3 x would take 9 s before the suspicion spread;
//   - gossip every 200 ms to 3 members (a tick with nothing to send costs
//     a wake-up only; 1 s measured no cheaper at 200);
//   - each change retransmitted 2 x log10(n) times by every member that
//     learns it (memberlist's default 4 x): with 4 x the alive messages
//     of 1,000 members starting were 16 million decodes that kept both
//     cores busy (perf of a 1,000 up: handleAlive, msgpack decode and
//     getBroadcasts a third of all samples) until starts timed out; with
//     1 x at 200, views took 36 s after the join to complete (each member
//     missed a few percent of the messages and waited for a full-state
//     exchange) and a frozen member 14.5 s to be dead in all;
//   - full-state push/pull every 60 s, which memberlist stretches with the
//     cluster's size (x6 at 1,000: every 6 minutes): at 1,000 members one
//     moves the whole view (about 300 KB) both ways, and gossip already
//     carries every change.
//
// A cluster of more than LargeCluster members (n, when known) is tuned
// for starved CPUs instead (see largeCluster).
//
// A cluster whose members keep joins out of gossip (quietJoins,
// Config.QuietJoins) retransmits every change 4 x log10(n) times,
// memberlist's default, 2 x beyond LargeCluster: what is left to gossip is
// rare (suspicions, deaths, refutations), and with 2 x a refuting member
// of 24 was missed by one view in a third of the runs (TestQuietJoins),
// which then waited for a full-state exchange. At 1,000, 2 x is 8
// transmits per member that learns a change: a member misses one with
// odds of about e^-8; 4 x made every false suspicion on a starved machine
// (and its refutation) cost twice as many decodes.
//
// $NETSTATION_GOSSIP overrides the timings for measurements, as
// comma-separated key=value pairs: probe, probe-timeout, gossip and
// push-pull (durations), suspicion, nodes (gossip fan-out), retransmit
// and udp-buffer (integers: bytes of gossip a datagram carries), tcp-ping
// (on or off),
// e.g. "probe=1s,gossip=500ms,suspicion=2".
func MemberlistConfig(name string, n int, quietJoins bool) *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.Name = name
	c.EnableCompression = false
	c.ProbeInterval = time.Second
	c.ProbeTimeout = 500 * time.Millisecond
	c.SuspicionMult = 2
	c.GossipInterval = 200 * time.Millisecond
	c.PushPullInterval = 60 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.RetransmitMult = 2
	c.DeadNodeReclaimTime = time.Second // a restarted peripheral reuses its name at once
	// An idle gossip tick sends nothing but wakes the process: at 1,000
	// peripherals that was every member every GossipInterval (our fork of
	// memberlist, third_party/memberlist/README.netstation.md; the
	// delegate queues nothing of its own).
	c.GossipOnlyQueued = true
	spec := os.Getenv("NETSTATION_GOSSIP")
	if n > largeBeyond(spec) {
		largeCluster(c)
	}
	if quietJoins {
		// Joins are kept out of the broadcast queue by our fork of
		// memberlist (Config.QuietJoins): until 2026-12-02 the transport
		// took them out of every datagram, after memberlist had queued
		// the alive message of each of the n members a push/pull brought
		// and handed each out RetransmitMult x log10(n) times (at 1,000,
		// GC and the broadcast queue were a fifth of an idle
		// peripheral's samples).
		c.QuietJoins = true
		c.RetransmitMult = 4
		if n > LargeCluster {
			c.RetransmitMult = 2
		}
	}
	tune(c, spec)
	return c
}

// LargeCluster is the size beyond which MemberlistConfig trades failure
// detection time for a membership that survives starved CPUs.
const LargeCluster = 256

// largeCluster sets the failure detector of a cluster of hundreds of
// members sharing a few cores (issue 16). With the settings above, 300
// and 500 peripherals on 2 cores never went quiet after the join: joining
// costs every member a decode of every other's alive message, several
// times over, which kept both cores busy; a probed member then waited
// longer than the 500 ms probe timeout for a CPU, was suspected and
// declared dead although it was alive, refuted, and its new alive message
// went to all again: one member's view at 500 saw 388-490 deaths in the
// first 45 s, and the load average passed 700 (perf: the Go runtime's
// monitor thread, sysmon, polling every 20 us in every busy peripheral,
// 21 % of their samples; memberlist's alive handling 13 %, msgpack 8 %).
// Measured at 500 (`NETSTATION_GOSSIP`, one run each, docs/SCALE.md):
// probe 1 s with a 800 ms timeout, or 2 s with 1 s or 1.5 s, gossip 500 ms
// to 4-5 members, retransmit 1 x: the same storm; probe 3 s with a 2 s
// timeout, gossip every second, retransmit 1 x, no TCP fallback ping:
// 6 deaths seen in the first seconds, then none, 0.58 core 25-45 s after
// up. A frozen member then takes longer to be declared dead (suspicion
// 2 x log10(n) probe intervals: 16 s at 500, 18 s at 1,000).
//
//   - no TCP ping after a failed UDP probe: the fabric is one bridge, so
//     TCP reaches no member UDP cannot, and a connection through a starved
//     member's stack is the most expensive way to learn it is slow.
//
// With joins kept out of gossip and views completed by full-state
// exchanges (QuietJoins), at 1,000 on 2 cores (BenchmarkScale1000,
// docs/SCALE.md): probe 3 s / 2 s, gossip 1 s: views complete 53 s after
// ready (the exchanges competed with 1,000 members probing), 75 % of a
// core idle; probe 1 s / 800 ms, suspicion 1, gossip 500 ms: the storm
// again (false suspicions under the start-up load, load average 1,500);
// probe 5 s / 3 s, gossip 3 s: views complete 29.4 s after ready, 50 % of
// a core idle. The last is what a large cluster gets, with suspicion for
// 1 x log10(n) probe intervals (15 s at 1,000) so that a frozen member is
// not left for 30 s, and gossip to 6 members at a time.
//
// Full-state push/pull every 30 minutes (x6 at 1,000 by memberlist's
// scaling: every 3 hours) instead of every minute. memberlist starts each
// member's push/pull timer at a random point of the first interval, so
// with a minute every member of 1,000 made a full exchange of its view
// (about 300 KB each way, 20-40 ms of msgpack a side) during the
// supervisor's exchange rounds, each at a random moment: as much work
// again as the rounds' last one. BenchmarkScale1000 back to back
// (docs/SCALE.md, 2026-12-02): views complete 46.9 s after ready with a
// minute; 18.5-21.8 s in three runs with 30 minutes (and the timer slack
// of peripherals/node), idle 31-60 % of a core against 56 %, PSS 8.1-9.1
// MiB against 9.0. The price is anti-entropy: a member a view
// lacks after the rounds, the settle exchanges (for 2 minutes while the
// view is short) and the seeds' re-joins (every 30 s) is found by a
// push/pull only hours later; suspicions, deaths and refutations still
// spread by gossip.
//
// Measured at 1,000 the same day and not taken: probe 1.5 s / 1 s with
// gossip every 500 ms (what a frozen member dead in all views within
// 10 s needs) set the storm off again (load average 1,752: members
// waiting for a CPU during the rounds suspected, their refutations
// saturating the machine); gossip every second instead of 3 s left 206
// views without the frozen member dead after 70 s and cost idle CPU.
func largeCluster(c *memberlist.Config) {
	c.PushPullInterval = 30 * time.Minute
	c.ProbeInterval = 5 * time.Second
	c.ProbeTimeout = 3 * time.Second
	c.GossipInterval = 3 * time.Second
	// A gossip round sends only what is queued (rare once the views are
	// complete), so a wider fan-out costs an idle member nothing and
	// spreads a suspicion or a death in fewer 3 s rounds.
	c.GossipNodes = 6
	c.SuspicionMult = 1
	c.RetransmitMult = 1
	c.DisableTcpPings = true
}

// largeBeyond is LargeCluster, or what $NETSTATION_GOSSIP's key large
// says (to measure the large cluster's settings on a smaller one).
func largeBeyond(spec string) int {
	for k, v := range specPairs(spec) {
		if n, err := strconv.Atoi(v); k == "large" && err == nil && n >= 0 {
			return n
		}
	}
	return LargeCluster
}

// specPairs yields $NETSTATION_GOSSIP's key=value pairs (comma-separated;
// an item without "=" is skipped): tune, largeBeyond and fastDetector
// each read the keys they know.
func specPairs(spec string) iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		for _, kv := range strings.Split(spec, ",") {
			if k, v, ok := strings.Cut(strings.TrimSpace(kv), "="); ok && !yield(k, v) {
				return
			}
		}
	}
}

// FastDetector is the failure detector a node of a large cluster switches
// to once its members have joined (memberlist's SetFailureDetector, our
// fork's): a node switches once its view has been complete for FastAfter
// (by when the supervisor's rounds are over), or fastLimit after it
// started. Chosen by measurement at 1,000 on 2 cores (BenchmarkScale1000,
// docs/ARCHITECTURE.md "At scale"):
//
//   - probes stay at the start-up detector's 5 s with a 3 s timeout. A
//     probe costs the machine about 0.5 ms of CPU (prober and target): at
//     1,000 members a probe every 2.5 s (this detector until 2026-12-02,
//     session 9) was 400 a second and most of an idle testbed's 21-33 % of
//     a core, and a probe every second set off a storm of false
//     suspicions (240,991 deaths of live members declared, load average
//     1,650). A frozen or hung peripheral is found instead by its
//     supervisor's watchdog (testbed/watchdog.go: the peripheral stops
//     beating, Config.Beat) and declared dead through DeclareDead; what
//     the probes alone must find (a link down, a member whose host is
//     gone) takes them longer: a first failed probe after up to a few
//     probe intervals, its timeout, the suspicion;
//   - suspicion 5 s whatever the number of confirmations (SuspicionMult 1,
//     so Lifeguard expects none; SuspicionMin, our fork's: memberlist's
//     formula would make it 1 x log10(n) x 5 s = 15 s at 1,000);
//   - gossip every 500 ms (asleep while nothing is queued, so an idle
//     member pays nothing for it) instead of 3 s, so a death, declared by
//     the watchdog or found by a probe, reaches every view in a second or
//     two.
var FastDetector = memberlist.FailureDetector{
	ProbeInterval:  5 * time.Second,
	ProbeTimeout:   3 * time.Second,
	GossipInterval: 500 * time.Millisecond,
	SuspicionMult:  1,
	SuspicionMin:   5 * time.Second,
}

// FastAfter: see FastDetector (0: never).
const FastAfter = 20 * time.Second

// fastLimit: see FastDetector.
const fastLimit = 4 * time.Minute

// fastDetector returns FastDetector and FastAfter as $NETSTATION_GOSSIP
// overrides them (keys fast-probe, fast-probe-timeout, fast-gossip,
// fast-suspicion, fast-suspicion-min, fast-after; fast-after=0 keeps the
// start-up detector).
func fastDetector(spec string) (memberlist.FailureDetector, time.Duration) {
	d, after := FastDetector, FastAfter
	for k, v := range specPairs(spec) {
		dur, derr := time.ParseDuration(v)
		n, nerr := strconv.Atoi(v)
		switch {
		case k == "fast-probe" && derr == nil && dur > 0:
			d.ProbeInterval = dur
		case k == "fast-probe-timeout" && derr == nil && dur > 0:
			d.ProbeTimeout = dur
		case k == "fast-gossip" && derr == nil && dur > 0:
			d.GossipInterval = dur
		case k == "fast-suspicion" && nerr == nil && n > 0:
			d.SuspicionMult = n
		case k == "fast-suspicion-min" && derr == nil && dur > 0:
			d.SuspicionMin = dur
		case k == "fast-after" && v == "0":
			after = 0
		case k == "fast-after" && derr == nil && dur > 0:
			after = dur
		}
	}
	return d, after
}

// speedUp switches the failure detector to fast once the view has held
// every expected member alive for after, or at limit.
func (n *Node) speedUp(fast memberlist.FailureDetector, after time.Duration, limit time.Time) {
	defer n.wg.Done()
	// A look every few seconds until the switch: each costs a wake-up.
	t := time.NewTicker(min(max(after/4, 10*time.Millisecond), 5*time.Second))
	defer t.Stop()
	var since time.Time
	for {
		select {
		case <-n.done:
			return
		case now := <-t.C:
			alive, _ := n.Count()
			switch {
			case alive < n.cfg.Expect:
				since = time.Time{}
			case since.IsZero():
				since = now
			}
			if (!since.IsZero() && now.Sub(since) >= after) || now.After(limit) {
				if err := n.ml.SetFailureDetector(fast); err != nil {
					n.log.Warn("gossip: failure detector", "err", err)
				} else {
					n.log.Info("gossip: fast failure detector", "probe", fast.ProbeInterval, "complete", !since.IsZero())
				}
				return
			}
		}
	}
}

// tune applies $NETSTATION_GOSSIP (see MemberlistConfig); unknown keys and
// bad values are ignored, so a typo runs the defaults rather than failing
// every peripheral.
func tune(c *memberlist.Config, spec string) {
	for k, v := range specPairs(spec) {
		d, derr := time.ParseDuration(v)
		n, nerr := strconv.Atoi(v)
		switch {
		case k == "probe" && derr == nil && d > 0:
			c.ProbeInterval = d
		case k == "probe-timeout" && derr == nil && d > 0:
			c.ProbeTimeout = d
		case k == "gossip" && derr == nil && d > 0:
			c.GossipInterval = d
		case k == "push-pull" && derr == nil && d > 0:
			c.PushPullInterval = d
		case k == "suspicion" && nerr == nil && n > 0:
			c.SuspicionMult = n
		case k == "nodes" && nerr == nil && n > 0:
			c.GossipNodes = n
		case k == "retransmit" && nerr == nil && n > 0:
			c.RetransmitMult = n
		case k == "udp-buffer" && nerr == nil && n >= 512:
			c.UDPBufferSize = n
		case k == "tcp-ping" && (v == "on" || v == "off"):
			c.DisableTcpPings = v == "off"
		}
	}
}

// Start joins the cluster: it opens the transport, starts memberlist and
// joins the seeds (those that answer; the rest are retried every Rejoin).
func Start(cfg Config) (*Node, error) {
	if cfg.Name == "" || cfg.Network == nil {
		return nil, errors.New("gossip: a name and a network are required")
	}
	if cfg.Port == 0 {
		cfg.Port = Port
	}
	if cfg.Rejoin <= 0 {
		cfg.Rejoin = 5 * time.Second
		if cfg.Expect > LargeCluster {
			// Every wake-up of an idle peripheral costs (issue 16).
			cfg.Rejoin = 30 * time.Second
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	tr, err := NewTransport(cfg.Network, cfg.Port)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, tr: tr, meta: meta, log: cfg.Logger, view: map[string]Member{}, done: make(chan struct{}),
		joinNow: make(chan struct{})}
	mc := MemberlistConfig(cfg.Name, cfg.Expect, cfg.QuietJoins)
	mc.Transport = tr
	mc.Delegate = delegate{n}
	mc.Events = events{n}
	mc.LogOutput = io.Discard
	mc.Logger = nil
	ml, err := memberlist.Create(mc)
	if err != nil {
		tr.Shutdown()
		return nil, fmt.Errorf("gossip: %w", err)
	}
	n.ml = ml
	if cfg.Beat != nil {
		n.wg.Add(1)
		go n.beatLoop()
	}
	spec := os.Getenv("NETSTATION_GOSSIP")
	if fast, after := fastDetector(spec); cfg.Expect > largeBeyond(spec) && after > 0 {
		n.wg.Add(1)
		go n.speedUp(fast, after, time.Now().Add(fastLimit))
	}
	if !cfg.Deferred {
		n.start()
		return n, nil
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-n.joinNow:
			// Told: whoever called Exchange makes the exchanges that
			// complete the view; the settle exchanges only catch what
			// they missed, later.
			n.loops(settleLate)
		case <-time.After(DeferredJoinLimit):
			n.log.Warn("gossip: never told to join; joining", "after", DeferredJoinLimit)
			n.start()
		case <-n.done:
		}
	}()
	return n, nil
}

// Exchange makes a full-state exchange (memberlist's push/pull, as a join
// does) with each of peers in turn, or with the node's seeds when peers is
// empty, and returns how many answered. It ends a deferred node's wait
// (Config.Deferred). A testbed's supervisor completes every view with
// three rounds of these: every node with its seeds, then every seed with
// all the others, then every other node with one seed; that is about 2n
// exchanges of (at most) the whole view instead of the dissemination of n
// joins to n members (QuietJoins). This node has merged each answer when
// Exchange returns; a peer merges what it was sent after it has answered,
// so an exchange right after with that peer may not find it there yet.
func (n *Node) Exchange(peers []netip.AddrPort) (int, error) {
	n.joinOnce.Do(func() { close(n.joinNow) })
	if len(peers) == 0 {
		peers = n.cfg.Seeds
	}
	self := netip.AddrPortFrom(n.cfg.Network.Addr(), n.cfg.Port)
	var to []string
	for _, p := range peers {
		if p != self {
			to = append(to, p.String())
		}
	}
	if len(to) == 0 {
		return 0, nil
	}
	got, err := n.ml.Join(to)
	if err != nil {
		err = fmt.Errorf("gossip: exchange with %d of %d failed: %w", len(to)-got, len(to), err)
	}
	return got, err
}

// start joins the seeds and starts the loops that keep the view whole.
func (n *Node) start() {
	select {
	case <-n.done:
		return
	default:
	}
	n.join()
	n.loops(settleAt)
}

// loops starts the loops that keep the view whole: re-joins of missing
// seeds, and full-state exchanges at the times of schedule (then every
// settleEvery while the view is short).
func (n *Node) loops(schedule []time.Duration) {
	n.wg.Add(2)
	go n.rejoinLoop()
	go n.settleLoop(schedule)
}

// settleAt are the times after start when a node exchanges its whole
// state with one member picked at random (a push/pull, as a join does).
// Joins spread over several seeds (at scale, no seed can serve every
// join) leave each seed knowing only part of the cluster; gossip then
// spreads the rest one message at a time, which at 200 members left most
// views incomplete 30 s after up. A few random full exchanges early on
// complete them (anti-entropy), each node serving about as many as it
// asks for.
var settleAt = []time.Duration{2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second}

// settleLate is the schedule of a node whose view Exchange calls complete:
// a first look a minute after it is told, when those are long done (at
// 1,000 peripherals the rounds take about 40 s on 2 cores).
var settleLate = []time.Duration{time.Minute}

// settleEvery and settleFor bound the exchanges that go on after
// settleAt while the view is short of Config.Expect: a member missed by
// the early exchanges would otherwise wait for the next push/pull (60 s
// and more).
const (
	settleEvery = 10 * time.Second
	settleFor   = 2 * time.Minute
)

func (n *Node) settleLoop(schedule []time.Duration) {
	defer n.wg.Done()
	start := time.Now()
	last := schedule[len(schedule)-1]
	next := func(i int) (time.Duration, bool) {
		if i < len(schedule) {
			return schedule[i], true
		}
		at := last + time.Duration(i-len(schedule)+1)*settleEvery
		return at, n.cfg.Expect > 0 && at <= max(settleFor, last+settleFor/2)
	}
	for i := 0; ; i++ {
		at, ok := next(i)
		if !ok {
			return
		}
		select {
		case <-n.done:
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		peers := n.settlePeers()
		if len(peers) == 0 {
			continue
		}
		if _, err := n.ml.Join([]string{peers[rand.IntN(len(peers))]}); err != nil {
			n.log.Debug("gossip: settle", "err", err)
		}
	}
}

// settlePeers returns the alive members a settle exchange picks from, or
// none when no exchange is due: the view is complete when it holds every
// expected member, alive or not. A complete view needs no exchange (at
// 1,000 members each moves about 300 KB both ways and costs both ends 10
// ms and more), and a member the view has seen die needs none to be
// learnt: counting only the alive ones, one death had every node of a
// 1,000-peripheral testbed exchange its whole state every settleEvery
// for the rest of settleFor, the first time just as the death spread
// (BenchmarkScale1000: the supervisor's sweep of it took 7.3 s instead of
// 0.9, the frozen member dead in all views after 12.5 s).
func (n *Node) settlePeers() []string {
	// The view's copies, not ml.Members() (see join).
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cfg.Expect > 0 && len(n.view) >= n.cfg.Expect {
		return nil
	}
	var peers []string
	for _, m := range n.view {
		if m.Name != n.cfg.Name && m.State == Alive {
			peers = append(peers, m.Addr.String())
		}
	}
	return peers
}

// join joins every seed not in the view; it reports how many answered.
func (n *Node) join() int {
	// The view, not ml.Members(): memberlist hands out pointers to its
	// own nodes, whose address and port it rewrites under its lock when
	// an alive message arrives (a data race to read them here). The view
	// holds copies, made in the event callbacks under that lock.
	// Every few seconds, with views of 1,000: no allocation per member
	// (a map of the view's addresses was 7 % of an idle 1,000-peripheral
	// testbed's samples, with the collections it caused).
	self := netip.AddrPortFrom(n.cfg.Network.Addr(), n.cfg.Port)
	missing := make([]bool, len(n.cfg.Seeds))
	left := 0
	for i, s := range n.cfg.Seeds {
		if s != self {
			missing[i] = true
			left++
		}
	}
	n.mu.Lock()
	for _, m := range n.view {
		if left == 0 {
			break
		}
		if m.State == Dead {
			continue
		}
		for i, s := range n.cfg.Seeds {
			if missing[i] && m.Addr == s {
				missing[i] = false
				left--
			}
		}
	}
	n.mu.Unlock()
	var todo []string
	for i, s := range n.cfg.Seeds {
		if missing[i] {
			todo = append(todo, s.String())
		}
	}
	if len(todo) == 0 {
		return 0
	}
	got, err := n.ml.Join(todo)
	if err != nil {
		n.log.Debug("gossip: join", "seeds", todo, "joined", got, "err", err)
	}
	return got
}

func (n *Node) rejoinLoop() {
	defer n.wg.Done()
	n.tick(n.cfg.Rejoin, func() { n.join() })
}

// tick runs fn every d until the node shuts down.
func (n *Node) tick(d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
			fn()
		}
	}
}

// Members is this node's view, sorted by name, itself included: every
// member it has seen, dead and left ones too.
func (n *Node) Members() []Member {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]Member, 0, len(n.view))
	for _, m := range n.view {
		m.Meta = m.Meta.clone()
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Find returns the alive members of a kind, sorted by name.
func (n *Node) Find(kind string) []Member {
	var out []Member
	for _, m := range n.Members() {
		if m.State == Alive && m.Meta.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}

// Lookup returns the member called name, if this node knows it.
func (n *Node) Lookup(name string) (Member, bool) {
	n.mu.Lock()
	m, ok := n.view[name]
	n.mu.Unlock()
	m.Meta = m.Meta.clone()
	return m, ok
}

// Count returns how many members the view holds alive and dead, without
// copying it (a benchmark polls every view of 1,000 members).
func (n *Node) Count() (alive, dead int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.view {
		switch m.State {
		case Alive:
			alive++
		case Dead:
			dead++
		}
	}
	return alive, dead
}

// member converts. Called with memberlist's lock held, for every member
// a full-state exchange brings (1,000 at a time).
func (n *Node) member(m *memberlist.Node) Member {
	a, _ := netip.AddrFromSlice(m.Addr)
	out := Member{Name: m.Name, Addr: netip.AddrPortFrom(a.Unmap(), m.Port), Since: time.Now()}
	switch m.State {
	case memberlist.StateAlive, memberlist.StateSuspect:
		out.State = Alive
	case memberlist.StateDead, memberlist.StateLeft:
		out.State = Dead
	}
	out.Meta = n.decodeMeta(m.Meta)
	return out
}

// decodeMeta decodes a member's metadata, once per distinct encoding:
// peripherals of a kind with the same parameters publish the same bytes,
// and a view of 1,000 holds a few distinct ones. Foreign or empty
// metadata is the zero Meta. The cache is bounded (metaCacheMax). Members
// of the view share the decoded Services map; what the Node hands out is
// a copy (Members, Lookup).
func (n *Node) decodeMeta(b []byte) Meta {
	n.metaMu.Lock()
	defer n.metaMu.Unlock()
	if m, ok := n.metas[string(b)]; ok {
		return m
	}
	var m Meta
	_ = json.Unmarshal(b, &m)
	if n.metas == nil || len(n.metas) >= metaCacheMax {
		n.metas = map[string]Meta{}
	}
	n.metas[string(b)] = m
	return m
}

const metaCacheMax = 256

// clone copies m's map, so that members never share one.
func (m Meta) clone() Meta {
	if m.Services != nil {
		m.Services = maps.Clone(m.Services)
	}
	return m
}

// Stats of the transport.
type Stats struct {
	Members    int    `json:"members"`
	PacketsIn  uint64 `json:"packets_in"`
	PacketsOut uint64 `json:"packets_out"`
	StreamsIn  uint64 `json:"streams_in"`
	StreamsOut uint64 `json:"streams_out"`
	Dropped    uint64 `json:"dropped"`
	// Quieted: other members' joins not re-broadcast (Config.QuietJoins).
	Quieted uint64 `json:"quieted,omitempty"`
}

// Stats returns the transport's counters.
func (n *Node) Stats() Stats {
	return Stats{Members: n.ml.NumMembers(), PacketsIn: n.tr.PacketsIn.Load(), PacketsOut: n.tr.PacketsOut.Load(),
		StreamsIn: n.tr.StreamsIn.Load(), StreamsOut: n.tr.StreamsOut.Load(), Dropped: n.tr.Dropped.Load(),
		Quieted: n.ml.QuietedJoins()}
}

// Detector returns the failure detector's timings in effect (they change
// once in a large cluster: FastDetector).
func (n *Node) Detector() memberlist.FailureDetector { return n.ml.FailureDetector() }

// Leave tells the others this node goes (they drop it at once instead of
// after failure detection), then shuts it down.
func (n *Node) Leave(timeout time.Duration) error {
	err := n.ml.Leave(timeout)
	return errors.Join(err, n.Shutdown())
}

// Shutdown stops gossiping without a goodbye: the others will find this
// node dead, as after a crash.
func (n *Node) Shutdown() error {
	select {
	case <-n.done:
		return nil
	default:
	}
	close(n.done)
	err := n.ml.Shutdown()
	n.wg.Wait()
	return err
}

type delegate struct{ n *Node }

func (d delegate) NodeMeta(limit int) []byte {
	if len(d.n.meta) > limit {
		return nil
	}
	return d.n.meta
}
func (delegate) NotifyMsg([]byte)                {}
func (delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (delegate) LocalState(bool) []byte          { return nil }
func (delegate) MergeRemoteState([]byte, bool)   {}

type events struct{ n *Node }

// record keeps m's latest state in the view. memberlist calls it with
// its own lock held: only n.mu is taken here.
func (e events) record(m *memberlist.Node, leaving bool) {
	v := e.n.member(m)
	if leaving {
		v.State = Dead
	}
	e.n.mu.Lock()
	old, had := e.n.view[m.Name]
	e.n.view[m.Name] = v
	size := len(e.n.view)
	e.n.mu.Unlock()
	switch {
	case had && old.State != v.State:
		// Leaves and returns are what a user looks for in `netstation logs`.
		e.n.log.Info("gossip: member "+string(v.State), "name", v.Name)
	case !had && size <= logJoinsUpTo:
		e.n.log.Info("gossip: member "+string(v.State), "name", v.Name)
	case !had && size == e.n.cfg.Expect:
		e.n.log.Info("gossip: view complete", "members", size)
		e.n.releaseLater()
	}
}

// releaseAfter is how long after its view first holds every expected
// member a node returns the heap's high-water mark to the OS
// (releaseLater).
const releaseAfter = 20 * time.Second

// releaseLater returns the heap's high-water mark of the exchanges that
// filled the view to the OS, once, releaseAfter from now (a view of 1,000
// decoded from 300 KB several times stays resident otherwise; at 200
// peripherals, 75 s after up, back to back: PSS 7.5 -> 5.7 MiB;
// $NETSTATION_NO_RELEASE=1 keeps it, for that comparison). Until
// 2026-12-02 the settle loop did it a minute after the node was told to
// join: at 1,000 that was 1,000 forced collections within seconds of each
// other, about a minute after ready, which BenchmarkScale1000 counted as
// idle CPU (57 % of a core in the window where a profile 30 s earlier saw
// 15 %); now it follows each view's own completion, spread over the
// supervisor's last round, and the node is still exchanging then only if
// it is a seed serving that round.
func (n *Node) releaseLater() {
	if os.Getenv("NETSTATION_NO_RELEASE") != "" {
		return
	}
	n.releaseOnce.Do(func() {
		time.AfterFunc(releaseAfter, func() {
			select {
			case <-n.done:
			default:
				debug.FreeOSMemory()
			}
		})
	})
}

// logJoinsUpTo: a node logs each member it learns of while its view is
// this small; beyond, only changes of state and the view becoming
// complete. At 1,000 peripherals a line per join was a million log
// writes at start (perf: 4 % of all samples).
const logJoinsUpTo = 64

func (e events) NotifyJoin(m *memberlist.Node)   { e.record(m, false) }
func (e events) NotifyLeave(m *memberlist.Node)  { e.record(m, true) }
func (e events) NotifyUpdate(m *memberlist.Node) { e.record(m, false) }
