package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/testbed"
	"github.com/netstation/netstation/testbed/spec"
)

// UpArgs asks the agent to bring a multi-host testbed up.
type UpArgs struct {
	Source  string        `json:"source"` // file name, for messages
	YAML    []byte        `json:"yaml"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// NodeInfo is one node of a testbed that is up.
type NodeInfo struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	Host string `json:"host"`
	IP   string `json:"ip"`
	MAC  string `json:"mac"`
}

// UpResult describes a multi-host testbed that is up.
type UpResult struct {
	Testbed string        `json:"testbed"`
	Subnet  string        `json:"subnet"`
	MTU     int           `json:"mtu"`
	Hosts   []string      `json:"hosts"`
	Nodes   []NodeInfo    `json:"nodes"`
	Took    time.Duration `json:"took"`
}

// DownResult says, per host, what down did there ("down", "absent" or
// the error).
type DownResult struct {
	Testbed string            `json:"testbed"`
	Hosts   map[string]string `json:"hosts"`
}

// CallArgs carry a control call to a node or supervisor on another host.
type CallArgs = testbed.AgentCallArgs

// peerUpArgs is one host's share of an up.
type peerUpArgs struct {
	Source  string        `json:"source"`
	YAML    []byte        `json:"yaml"`
	Subnet  netip.Prefix  `json:"subnet"`
	MTU     int           `json:"mtu"`
	Timeout time.Duration `json:"timeout"`
}

// hostStatus is one host's answer to a status request.
type hostStatus struct {
	Found  bool           `json:"found"`
	Hosts  []string       `json:"hosts,omitempty"`
	Status testbed.Status `json:"status"`
}

// handleCtl serves the CLI on the local control socket.
func (a *Agent) handleCtl(ctx context.Context, req ctl.Request, st *ctl.Stream) (any, error) {
	switch req.Op {
	case "members":
		return a.Members(), nil
	case "up":
		var u UpArgs
		if err := req.Decode(&u); err != nil {
			return nil, err
		}
		return a.up(ctx, u)
	case "down":
		var name string
		if err := req.Decode(&name); err != nil {
			return nil, err
		}
		return a.down(ctx, name)
	case "status":
		var name string
		if err := req.Decode(&name); err != nil {
			return nil, err
		}
		return a.status(ctx, name)
	case "list":
		return a.list(ctx), nil
	case "call":
		var c CallArgs
		if err := req.Decode(&c); err != nil {
			return nil, err
		}
		return a.forward(ctx, c, st)
	}
	return nil, fmt.Errorf("unknown op %q", req.Op)
}

// handlePeer serves other agents on the RPC port.
func (a *Agent) handlePeer(ctx context.Context, req ctl.Request, st *ctl.Stream) (any, error) {
	req, err := a.open(req)
	if err != nil {
		return nil, err
	}
	return a.servePeer(ctx, req, st)
}

func (a *Agent) servePeer(ctx context.Context, req ctl.Request, st *ctl.Stream) (any, error) {
	switch req.Op {
	case "host-up":
		var u peerUpArgs
		if err := req.Decode(&u); err != nil {
			return nil, err
		}
		return a.hostUp(ctx, u)
	case "host-down":
		var name string
		if err := req.Decode(&name); err != nil {
			return nil, err
		}
		return a.hostDown(ctx, name)
	case "host-status":
		var name string
		if err := req.Decode(&name); err != nil {
			return nil, err
		}
		return a.hostStatus(ctx, name), nil
	case "host-list":
		return a.hostList(), nil
	case "host-call":
		var c CallArgs
		if err := req.Decode(&c); err != nil {
			return nil, err
		}
		return a.hostCall(ctx, c, st)
	}
	return nil, fmt.Errorf("unknown peer op %q", req.Op)
}

// peer calls op on host's agent; this host's own requests are served
// without the network, so local work never depends on the underlay.
func (a *Agent) peer(ctx context.Context, host, op string, args, out any) error {
	if host == a.cfg.Name {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		v, err := a.servePeer(ctx, ctl.Request{Op: op, Args: b}, nil)
		if err != nil {
			return err
		}
		if out == nil {
			return nil
		}
		b, err = json.Marshal(v)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, out)
	}
	// A host not seen alive just now is tried all the same, briefly:
	// membership lags behind the network after a partition heals.
	m, ok := a.known(host)
	if !ok {
		return fmt.Errorf("%w %s", ErrNoAgent, host)
	}
	if m.State != StateAlive {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
	}
	addr := netip.AddrPortFrom(m.Addr, uint16(m.RPCPort)).String()
	return unwrapRemote(a.callPeer(ctx, addr, op, args, out, nil))
}

// unwrapRemote drops ctl's "remote error" prefix from a peer's answer
// and keeps its code: the message is the peer's own, the CLI's call adds
// the prefix once, and errors.Is still finds the peer's sentinel.
func unwrapRemote(err error) error { return ctl.Relay(err) }

// up places a topology on its hosts.
func (a *Agent) up(ctx context.Context, u UpArgs) (*UpResult, error) {
	t0 := time.Now()
	t, err := spec.Parse(u.Source, u.YAML)
	if err != nil {
		return nil, err
	}
	if len(t.Hosts) == 0 {
		return nil, fmt.Errorf("%s has no hosts list: it is a single-host testbed (netstation up without an agent)", u.Source)
	}
	alive := a.aliveNames()
	var missing []string
	mtu := 0
	for _, h := range t.Hosts {
		m, ok := a.member(h)
		if !ok {
			missing = append(missing, h)
			continue
		}
		if mtu == 0 || m.MTU < mtu {
			mtu = m.MTU
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w %s: the topology places nodes there but no live agent has that name (live agents: %s); nothing was created",
			ErrNoAgent, strings.Join(missing, ", "), strings.Join(alive, ", "))
	}
	mtu -= fabric.VXLANOverhead
	// Hosts that have the testbed already keep it (up is idempotent) and
	// are left alone if this up fails; its subnet is kept too.
	var mu sync.Mutex
	existing := map[string]bool{}
	a.onHosts(t.Hosts, func(h string) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var hs hostStatus
		if err := a.peer(cctx, h, "host-status", t.Name, &hs); err != nil || !hs.Found {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		existing[h] = true
		if p, err := netip.ParsePrefix(hs.Status.Subnet); err == nil && !t.Subnet.IsValid() {
			t.Subnet = p
		}
		return nil
	})
	// The subnet is chosen once, here, so every host plans the same.
	plan, err := testbed.Prepare(t.Clone())
	if err != nil {
		return nil, err
	}
	if u.Timeout == 0 {
		u.Timeout = 60 * time.Second
	}
	args := peerUpArgs{Source: u.Source, YAML: u.YAML, Subnet: plan.Subnet, MTU: mtu, Timeout: u.Timeout}
	errs := a.onHosts(t.Hosts, func(h string) error {
		cctx, cancel := context.WithTimeout(ctx, u.Timeout+10*time.Second)
		defer cancel()
		return a.peer(cctx, h, "host-up", args, nil)
	})
	if err := errors.Join(errs...); err != nil {
		// All or nothing: remove every part this up made.
		var made []string
		for _, h := range t.Hosts {
			if !existing[h] {
				made = append(made, h)
			}
		}
		a.onHosts(made, func(h string) error {
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return a.peer(cctx, h, "host-down", t.Name, nil)
		})
		return nil, fmt.Errorf("up %s: %w (the parts this up made were removed again)", t.Name, err)
	}
	res := &UpResult{Testbed: t.Name, Subnet: plan.Subnet.String(), MTU: mtu, Hosts: t.Hosts, Took: time.Since(t0)}
	for _, n := range plan.Nodes {
		res.Nodes = append(res.Nodes, NodeInfo{Name: n.Name, Kind: string(n.Kind), Host: n.Host, IP: n.Addr.Addr().String(), MAC: n.MAC})
	}
	return res, nil
}

// onHosts runs fn for every host in parallel and returns the errors,
// each naming its host.
func (a *Agent) onHosts(hosts []string, fn func(string) error) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Go(func() {
			if err := fn(h); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("on %s: %w", h, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// hostUp brings this host's part up and programs its FDB at once.
func (a *Agent) hostUp(ctx context.Context, u peerUpArgs) (any, error) {
	t, err := spec.Parse(u.Source, u.YAML)
	if err != nil {
		return nil, err
	}
	t.Subnet = u.Subnet
	plan, err := testbed.Up(ctx, t, testbed.UpOptions{Timeout: u.Timeout, Host: a.cfg.Name, Underlay: a.cfg.Bind, MTU: u.MTU,
		DiskKeySeed: diskKeySeed(a.cfg.Key)})
	if err != nil {
		return nil, err
	}
	a.reconcileTestbed(plan)
	return "up", nil
}

// down removes a testbed from every live host; this host's part even when
// no peer answers. The tombstone reaches hosts that are away when they
// come back.
func (a *Agent) down(ctx context.Context, name string) (*DownResult, error) {
	a.mergeTombs(map[string]time.Time{name: time.Now()})
	res := &DownResult{Testbed: name, Hosts: map[string]string{}}
	var mu sync.Mutex
	var errs []error
	a.onHosts(a.knownNames(), func(h string) error {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var what string
		err := a.peer(cctx, h, "host-down", name, &what)
		m, _ := a.known(h)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil && m.State != StateAlive:
			// Away: its part (if any) goes when it is back (tombstone).
			res.Hosts[h] = m.State + ", not reachable: removes its part (if any) when it rejoins"
		case err != nil:
			res.Hosts[h] = err.Error()
			errs = append(errs, fmt.Errorf("on %s: %w", h, err))
		default:
			res.Hosts[h] = what
		}
		return nil
	})
	found := false
	for _, w := range res.Hosts {
		found = found || w == "down"
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if !found {
		return res, fmt.Errorf("%w %s (asked %s)", ErrNotFound, name, strings.Join(a.knownNames(), ", "))
	}
	return res, nil
}

// hostDown removes this host's part of a multi-host testbed.
func (a *Agent) hostDown(ctx context.Context, name string) (string, error) {
	dir := testbed.Dir(name)
	if _, err := os.Stat(dir); err != nil {
		return "absent", nil
	}
	if plan, err := testbed.LoadPlan(dir); err == nil && !plan.MultiHost() {
		return "absent", nil // a single-host testbed of the same name: not ours
	}
	if err := testbed.Down(ctx, name); err != nil && !errors.Is(err, testbed.ErrNotFound) {
		return "", err
	}
	return "down", nil
}

// status merges every live host's view of the testbed.
func (a *Agent) status(ctx context.Context, name string) (testbed.Status, error) {
	var mu sync.Mutex
	answers := map[string]hostStatus{}
	unreachable := map[string]string{}
	a.onHosts(a.knownNames(), func(h string) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var hs hostStatus
		err := a.peer(cctx, h, "host-status", name, &hs)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			unreachable[h] = err.Error()
		} else if hs.Found {
			answers[h] = hs
		}
		return nil
	})
	if len(answers) == 0 {
		return testbed.Status{}, fmt.Errorf("%w %s", ErrNotFound, name)
	}
	return mergeStatus(name, answers, unreachable), nil
}

// mergeStatus makes one Status of each host's: nodes of every host, the
// worst phase, and an error naming hosts that should answer and did not.
func mergeStatus(name string, answers map[string]hostStatus, unreachable map[string]string) testbed.Status {
	var out testbed.Status
	out.Name = name
	want := map[string]bool{}
	var problems []string
	phases := map[string]bool{}
	hosts := make([]string, 0, len(answers))
	for h := range answers {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		hs := answers[h]
		for _, x := range hs.Hosts {
			want[x] = true
		}
		out.Subnet = hs.Status.Subnet
		out.Templates = hs.Status.Templates
		phases[hs.Status.Phase] = true
		if hs.Status.Error != "" {
			problems = append(problems, h+": "+hs.Status.Error)
		}
		out.Nodes = append(out.Nodes, hs.Status.Nodes...)
	}
	for h := range want {
		if _, ok := answers[h]; !ok {
			why := "no live agent"
			if e, ok := unreachable[h]; ok {
				why = e
			}
			problems = append(problems, "host "+h+" not answering ("+why+")")
		}
	}
	sort.Strings(problems)
	slices.SortFunc(out.Nodes, func(x, y testbed.NodeStatus) int {
		// By address; the answers come from other hosts, so no trust in
		// their form.
		a, aerr := netip.ParseAddr(x.IP)
		b, berr := netip.ParseAddr(y.IP)
		if aerr != nil || berr != nil {
			return strings.Compare(x.IP, y.IP)
		}
		return a.Compare(b)
	})
	switch {
	case phases[testbed.PhaseFailed]:
		out.Phase = testbed.PhaseFailed
	case len(problems) > 0:
		out.Phase = "degraded"
	case len(phases) == 1:
		for p := range phases {
			out.Phase = p
		}
	default:
		out.Phase = testbed.PhaseStarting
	}
	out.Error = strings.Join(problems, "; ")
	return out
}

// hostStatus reports this host's part of a multi-host testbed.
func (a *Agent) hostStatus(ctx context.Context, name string) hostStatus {
	plan, err := testbed.LoadPlan(testbed.Dir(name))
	if err != nil || !plan.MultiHost() {
		return hostStatus{}
	}
	hs := hostStatus{Found: true, Hosts: plan.Hosts}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := testbed.GetStatus(cctx, name)
	if err != nil {
		st = testbed.Status{Name: name, Subnet: plan.Subnet.String(), Phase: testbed.PhaseFailed, Error: err.Error()}
	}
	hs.Status = st
	return hs
}

// list returns the multi-host testbeds on every live host.
func (a *Agent) list(ctx context.Context) []string {
	var mu sync.Mutex
	set := map[string]bool{}
	a.onHosts(a.aliveNames(), func(h string) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var names []string
		if err := a.peer(cctx, h, "host-list", nil, &names); err != nil {
			return err
		}
		mu.Lock()
		for _, n := range names {
			set[n] = true
		}
		mu.Unlock()
		return nil
	})
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (a *Agent) hostList() []string { return LocalTestbeds() }

// forward relays a control call to the agent of the host that runs the
// target, streaming intermediate answers back.
func (a *Agent) forward(ctx context.Context, c CallArgs, st *ctl.Stream) (any, error) {
	m, ok := a.member(c.Host)
	if !ok {
		return nil, fmt.Errorf("%w %s (to reach %s of testbed %s)", ErrNoAgent, c.Host, c.Target, c.Testbed)
	}
	var out json.RawMessage
	addr := netip.AddrPortFrom(m.Addr, uint16(m.RPCPort)).String()
	err := a.callPeer(ctx, addr, "host-call", c, &out, func(raw json.RawMessage) error {
		return st.Send(raw)
	})
	if err != nil {
		return nil, unwrapRemote(err)
	}
	return out, nil
}

// hostCall makes a control call to a local node or supervisor.
func (a *Agent) hostCall(ctx context.Context, c CallArgs, st *ctl.Stream) (any, error) {
	if strings.ContainsAny(c.Testbed+c.Target, "/\x00") || c.Testbed == "" || c.Target == "" || c.Testbed[0] == '.' || c.Target[0] == '.' {
		return nil, fmt.Errorf("bad call target %q/%q", c.Testbed, c.Target)
	}
	dir := testbed.Dir(c.Testbed)
	path := testbed.NodeSock(dir, c.Target)
	if c.Target == "supervisor" {
		path = testbed.SupervisorSock(dir)
	}
	var out json.RawMessage
	var args any
	if len(c.Args) > 0 {
		args = c.Args
	}
	err := ctl.Call(ctx, path, c.Op, args, &out, func(raw json.RawMessage) error {
		if st == nil {
			return nil
		}
		return st.Send(raw)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
