package testbed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"time"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/testbed/spec"
	"github.com/vishvananda/netlink"
)

// ErrRunning: the testbed is already up with a different topology.
var ErrRunning = errors.New("testbed already up with a different topology")

// ErrForeign: the testbed's namespaces are in use, but by a testbed this
// state root does not know (one brought up with another
// NETSTATION_STATE_DIR).
var ErrForeign = errors.New("testbed owned by another state directory")

// pidList formats up to max pids, then how many more.
func pidList(pids []int, max int) string {
	var b strings.Builder
	for i, p := range pids {
		if i == max {
			fmt.Fprintf(&b, " and %d more", len(pids)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, p)
	}
	return b.String()
}

// ErrNameTaken: kernel objects with the testbed's name prefix exist that no
// testbed in this state root owns.
var ErrNameTaken = errors.New("testbed name taken")

// UpOptions tune Up.
type UpOptions struct {
	Timeout  time.Duration  // for the whole bring-up; default 90 s, more for large testbeds
	Progress func(Progress) // called as the supervisor reports progress
	// Notice, if set, is told of each host-wide change Up makes for the
	// testbed (a host limit raised: see limits.go; they are also written
	// to the supervisor's log), and that a testbed asked for was already
	// up, its processes left as they were.
	Notice func(string)

	// Host, for a topology with a hosts list, is the host whose part to
	// bring up (see Plan.ForHost): its VXLAN endpoint address on the
	// underlay and the peripherals' MTU. The agent sets them.
	Host     string
	Underlay netip.Addr
	MTU      int
	// DiskKeySeed, for a multi-host testbed, is the secret every host's
	// disk keys derive from (the agents' shared cluster key): a cpu on one
	// host mints capabilities a disk on another checks, and no key ever
	// crosses the underlay.
	DiskKeySeed []byte
}

// prepareFor is Prepare plus the host's part of a multi-host testbed.
func prepareFor(t *spec.Topology, opt UpOptions) (*Plan, error) {
	plan, err := Prepare(t)
	if err != nil {
		return nil, err
	}
	switch {
	case len(plan.Hosts) > 0 && opt.Host == "":
		return nil, fmt.Errorf("%w: testbed %s spans hosts %s: run `netstation agent` on each and `netstation up` where one runs",
			ErrPlacement, t.Name, strings.Join(plan.Hosts, ", "))
	case len(plan.Hosts) == 0 && opt.Host != "":
		return nil, fmt.Errorf("%w: testbed %s has no hosts list, so it cannot be placed on host %s", ErrPlacement, t.Name, opt.Host)
	case opt.Host != "":
		if err := plan.ForHost(opt.Host, opt.Underlay, opt.MTU); err != nil {
			return nil, err
		}
	}
	return plan, nil
}

// presentNamespaces returns the namespaces of the testbed that exist: for
// a host's part of a multi-host testbed only that host's own (others with
// the prefix belong to the other hosts when they share this kernel).
func presentNamespaces(name string, plan *Plan) []string {
	if plan == nil || !plan.MultiHost() {
		left, _ := fabric.ListNetns(Prefix(name))
		return left
	}
	var left []string
	for _, ns := range plan.LocalNamespaces() {
		if fabric.NetnsExists(ns) {
			left = append(left, ns)
		}
	}
	return left
}

// hostPrefixes lists every IPv4 prefix routed or addressed in the host's
// namespace plus the subnets of other testbeds, for picking a free subnet.
func hostPrefixes() []netip.Prefix {
	var out []netip.Prefix
	if routes, err := netlink.RouteList(nil, netlink.FAMILY_V4); err == nil {
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if p, err := netip.ParsePrefix(r.Dst.String()); err == nil {
				out = append(out, p)
			}
		}
	}
	if addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.IPNet.String()); err == nil {
				out = append(out, p.Masked())
			}
		}
	}
	names, _ := List()
	for _, n := range names {
		if p, err := LoadPlan(Dir(n)); err == nil {
			out = append(out, p.Subnet)
		}
	}
	return out
}

// Prepare validates and resolves t (picking a subnet clear of the host's
// routes when the file names none) and returns its plan. Nothing is
// created.
func Prepare(t *spec.Topology) (*Plan, error) {
	var subnet netip.Prefix
	if !t.Subnet.IsValid() {
		hosts := len(t.Nodes)
		if t.HostAccess != nil {
			hosts++
		}
		p, err := spec.PickSubnetFor(hostPrefixes(), hosts)
		if err != nil {
			return nil, err
		}
		subnet = p
	}
	if err := t.Resolve(subnet); err != nil {
		return nil, err
	}
	return NewPlan(t)
}

// supervisorAlive reports whether the testbed's supervisor answers.
func supervisorAlive(dir string) (Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var st Status
	err := ctl.Call(ctx, supervisorSock(dir), "status", nil, &st, nil)
	return st, err == nil
}

// Up brings the testbed described by t up and returns when every
// peripheral answers. It is idempotent: if the same testbed is already up
// with the same plan, it returns at once; if a previous one crashed, its
// remains are removed first.
func Up(ctx context.Context, t *spec.Topology, opt UpOptions) (*Plan, error) {
	if opt.Timeout == 0 {
		// The fabric (about 25 ms a node) and the peripherals' start
		// (readyLimit) grow with the testbed.
		opt.Timeout = 30*time.Second + readyLimit(len(t.Nodes)) + time.Duration(len(t.Nodes))*30*time.Millisecond
	}
	dir := Dir(t.Name)
	if old, err := LoadPlan(dir); err == nil {
		if _, alive := supervisorProgress(dir); alive {
			if !t.Subnet.IsValid() {
				t.Subnet = old.Subnet // keep the subnet it was given
			}
			plan, err := prepareFor(t, opt)
			if err != nil {
				return nil, err
			}
			plan.Source = old.Source
			if !reflect.DeepEqual(plan, old) {
				return nil, fmt.Errorf("%w: %s (run `netstation down %s` first)", ErrRunning, t.Name, t.Name)
			}
			if opt.Notice != nil {
				// Its processes keep the binary and environment they
				// were started with: say so, or a rebuilt binary or a
				// changed setting seems to take effect and does not.
				opt.Notice(fmt.Sprintf("%s is already up: its peripherals keep the binary and environment they started with (`netstation down %s` first to restart them)", t.Name, t.Name))
			}
			return old, waitReady(ctx, dir, opt)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		// A crashed or half-built testbed: clean it before starting anew.
		if err := Down(ctx, t.Name); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("clean up the previous %s: %w", t.Name, err)
		}
	}
	plan, err := prepareFor(t, opt)
	if err != nil {
		return nil, err
	}
	if plan.Rootless && plan.MultiHost() {
		return nil, fmt.Errorf("%s: a testbed spanning hosts needs root (VXLAN on the host's underlay)", t.Source)
	}
	if !plan.Rootless {
		// Kernel objects carry only the testbed's name: refuse to adopt
		// namespaces that another state root's testbed of the same name
		// (or an older crash) owns.
		if left := presentNamespaces(t.Name, plan); len(left) > 0 {
			return nil, fmt.Errorf("%w: namespaces %s* exist but no testbed %q is recorded in %s (another NETSTATION_STATE_DIR, or remains of a crash: `netstation down %s` removes them)",
				ErrNameTaken, Prefix(t.Name), t.Name, StateRoot(), t.Name)
		}
	}
	if plan.Rootless && plan.Host != nil {
		return nil, fmt.Errorf("%s: host_access needs root (a rootless testbed cannot add links to the host's namespace)", t.Source)
	}
	if err := checkHostOverlap(plan, hostRoutes(), otherPlans()); err != nil {
		return nil, err
	}
	sets, err := planLimits(readHostLimits(), len(plan.LocalNodes()), plan.Host != nil, !plan.Rootless)
	if err != nil {
		return nil, err
	}
	notes, err := raiseLimits(sets)
	for _, n := range notes {
		if opt.Notice != nil {
			opt.Notice(n)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir+"/nodes", 0o755); err != nil {
		return nil, err
	}
	if plan.MultiHost() {
		if err := deriveDiskKeys(dir, plan, opt.DiskKeySeed); err != nil {
			return nil, err
		}
	}
	if err := plan.save(dir); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(supervisorLog(dir), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	for _, n := range notes {
		fmt.Fprintf(logf, "up: %s\n", n)
	}
	cmd := exec.Command(Executable, "supervise", "--state", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives the CLI
	if plan.Rootless {
		// The supervisor gets a user namespace of its own, where this user
		// is root, a mount namespace for the namespace bind mounts, and a
		// network namespace (owned by that user namespace, so its threads
		// can return to it after visiting a node's): everything it creates
		// lives and dies with it.
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		cmd.SysProcAttr.GidMappingsEnableSetgroups = false
	}
	if err := cmd.Start(); err != nil {
		if plan.Rootless {
			return nil, fmt.Errorf("start supervisor in a user namespace (rootless mode; are unprivileged user namespaces enabled?): %w", err)
		}
		return nil, fmt.Errorf("start supervisor: %w", err)
	}
	j, err := openJournal(dir)
	if err == nil {
		_ = j.record(entry{Kind: entryProc, Name: "supervisor", PID: cmd.Process.Pid, Start: procStartTime(cmd.Process.Pid)})
		j.Close()
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ctx, cancel := context.WithTimeout(ctx, opt.Timeout)
	defer cancel()
	werr := make(chan error, 1)
	go func() { werr <- waitReady(ctx, dir, opt) }()
	select {
	case err = <-werr:
	case e := <-exited:
		err = fmt.Errorf("supervisor exited during bring-up (%v): %s", e, tail(supervisorLog(dir), 5))
	}
	if err != nil {
		_ = Down(context.Background(), t.Name)
		return nil, err
	}
	return plan, nil
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// ErrUpTimeout: a testbed was not ready within up's timeout.
var ErrUpTimeout = errors.New("testbed did not come up in time")

// timeoutError says in words what timed out, and still matches both
// ErrUpTimeout and context.DeadlineExceeded.
type timeoutError struct {
	msg  string
	errs []error
}

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Unwrap() []error { return e.errs }

func waitReady(ctx context.Context, dir string, opt UpOptions) error {
	phase := "supervisor starting"
	for {
		if p, alive := supervisorProgress(dir); alive {
			phase = p.Phase
			if p.Nodes > 0 && p.Phase == PhaseStarting {
				phase = fmt.Sprintf("%s, %d of %d peripherals ready", p.Phase, p.Ready, p.Nodes)
			}
			if opt.Progress != nil {
				opt.Progress(p)
			}
			switch p.Phase {
			case PhaseReady:
				return nil
			case PhaseFailed:
				return fmt.Errorf("testbed %s failed: %s", filepath.Base(dir), p.Error)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return &timeoutError{msg: fmt.Sprintf("testbed %s did not come up within %v (it was at: %s); allow more with --timeout",
					filepath.Base(dir), opt.Timeout, phase), errs: []error{ErrUpTimeout, ctx.Err()}}
			}
			return fmt.Errorf("testbed did not come up: %w", ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// supervisorProgress asks the supervisor for its Progress: counts it
// keeps itself. (Status, which calls every peripheral, polled every 25 ms
// by `up`, was a load of its own on a testbed coming up.) A supervisor
// without the op (an older binary) is asked for its status.
func supervisorProgress(dir string) (Progress, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var p Progress
	err := ctl.Call(ctx, supervisorSock(dir), "progress", nil, &p, nil)
	if err != nil && strings.Contains(err.Error(), "unknown op") {
		st, alive := supervisorAlive(dir)
		return Progress{Phase: st.Phase, Error: st.Error, Nodes: len(st.Nodes)}, alive
	}
	return p, err == nil
}

// Down removes the named testbed: through its supervisor when it answers,
// and in any case by sweeping the journal, the processes and the prefix.
func Down(ctx context.Context, name string) error {
	dir := Dir(name)
	plan, _ := LoadPlan(dir)
	_, statErr := os.Stat(dir)
	var left []string
	if os.Geteuid() == 0 {
		left = presentNamespaces(name, plan)
	}
	if statErr != nil && len(left) == 0 {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if statErr != nil {
		// Namespaces with the testbed's prefix but no state here: leftovers
		// of a crash, which down sweeps, or a live testbed that another
		// state directory owns, whose processes would outlive the sweep.
		if pids := fabric.NetnsUsers(left); len(pids) > 0 {
			return fmt.Errorf("%w: %s has no state in %s, but processes run in its namespaces (%d: pid %s): "+
				"bring it down with the NETSTATION_STATE_DIR it was brought up with",
				ErrForeign, name, StateRoot(), len(pids), pidList(pids, 5))
		}
	}
	if _, alive := supervisorProgress(dir); alive {
		sup := supervisorPID(dir)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := ctl.Call(cctx, supervisorSock(dir), "down", nil, nil, nil)
		cancel()
		if err == nil && sup > 0 {
			// It has removed everything and is on its way out: let it
			// finish (and write its profiles) rather than kill it below.
			waitGone(sup, 2*time.Second)
		}
	}
	err := teardown(dir, plan, slog.Default())
	if rerr := os.RemoveAll(dir); rerr != nil {
		err = errors.Join(err, rerr)
	}
	if plan == nil || !plan.Rootless {
		if left := presentNamespaces(name, plan); len(left) > 0 {
			err = errors.Join(err, fmt.Errorf("namespaces left behind: %s", strings.Join(left, " ")))
		}
	}
	return err
}

// supervisorPID returns the pid of the testbed's supervisor from the
// journal (0 if unknown or no longer that process).
func supervisorPID(dir string) int {
	ents, _ := readJournal(dir)
	for _, e := range ents {
		if e.Kind == entryProc && e.Name == "supervisor" && e.PID > 0 && procStartTime(e.PID) == e.Start {
			return e.PID
		}
	}
	return 0
}

// waitGone waits up to d for process pid to end.
func waitGone(pid int, d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err != nil || procZombie(b) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// DownAll removes every testbed in the state root.
func DownAll(ctx context.Context) ([]string, error) {
	names, err := List()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range names {
		if err := Down(ctx, n); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
		}
	}
	return names, errors.Join(errs...)
}

// GetStatus asks the testbed's supervisor for its status.
func GetStatus(ctx context.Context, name string) (Status, error) {
	dir := Dir(name)
	if _, err := os.Stat(dir); err != nil {
		return Status{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	var st Status
	if err := ctl.Call(ctx, supervisorSock(dir), "status", nil, &st, nil); err != nil {
		return Status{}, fmt.Errorf("testbed %s: supervisor not answering (%v); `netstation down %s` cleans up", name, err, name)
	}
	return st, nil
}

// Ping makes node from ping node to (by name or IPv4 address) over their
// user-level stacks. Each reply is passed to each as it arrives.
func Ping(ctx context.Context, testbed, from, to string, args peripherals.PingArgs, each func(peripherals.PingReply)) (*peripherals.PingSummary, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	fn, err := plan.Node(from)
	if err != nil {
		return nil, err
	}
	if a, err := netip.ParseAddr(to); err == nil {
		args.Dst = a
		if tn := plan.nodeByAddr(a); tn != nil {
			if err := checkPath(fn, tn); err != nil {
				return nil, err
			}
		}
	} else {
		n, err := plan.Node(to)
		if err != nil {
			return nil, err
		}
		if err := checkPath(fn, n); err != nil {
			return nil, err
		}
		args.Dst = n.Addr.Addr()
	}
	var sum peripherals.PingSummary
	err = nodeCall(ctx, dir, from, peripherals.OpPing, args, &sum, func(m json.RawMessage) error {
		var r peripherals.PingReply
		if err := json.Unmarshal(m, &r); err == nil && each != nil {
			each(r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ping from %s: %w", from, err)
	}
	return &sum, nil
}

// ExecCommand prepares argv to run inside node's namespace; the caller sets
// its I/O and calls StartIn via Exec.
func Exec(testbed, node string, cmd *exec.Cmd) error {
	plan, err := LoadPlan(Dir(testbed))
	if err != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	n, err := plan.Node(node)
	if err != nil {
		return err
	}
	if plan.MultiHost() && n.Host != plan.Local {
		return fmt.Errorf("%s runs on host %s: run exec there", node, n.Host)
	}
	if plan.Rootless {
		return execRootless(testbed, n, cmd)
	}
	return fabric.StartIn(n.NS, cmd)
}

// execRootless starts cmd in a node of a rootless testbed. The node's
// namespace is bind-mounted only inside the supervisor's mount namespace,
// and a multi-threaded Go process cannot join a user namespace, so the
// single-threaded nsenter(1) does the joining: first the supervisor's user
// and mount namespaces, then the node's network namespace.
func execRootless(testbed string, n *NodePlan, cmd *exec.Cmd) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := GetStatus(ctx, testbed)
	if err != nil {
		return err
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return fmt.Errorf("exec in a rootless testbed needs nsenter (util-linux): %w", err)
	}
	args := []string{"nsenter", "-t", fmt.Sprint(st.PID), "-U", "-m", "--preserve-credentials", "--",
		nsenter, "--net=" + filepath.Join(Dir(testbed), "netns", n.NS), "--", cmd.Path}
	cmd.Args = append(args, cmd.Args[1:]...)
	cmd.Path = nsenter
	return cmd.Start()
}

// remoteHost returns the host node runs on when that is not this one.
func remoteHost(dir, node string) string {
	plan, err := LoadPlan(dir)
	if err != nil || !plan.MultiHost() {
		return ""
	}
	if n, err := plan.Node(node); err == nil && n.Host != plan.Local {
		return n.Host
	}
	return ""
}

// nodeCall calls op on node's control socket, on whichever host it runs.
func nodeCall(ctx context.Context, dir, node string, op peripherals.Op, args, out any, each func(json.RawMessage) error) error {
	if host := remoteHost(dir, node); host != "" {
		return remoteCall(ctx, host, filepath.Base(dir), node, string(op), args, out, each)
	}
	err := ctl.Call(ctx, NodeSock(dir, node), string(op), args, out, each)
	// Refused or missing: the process is not there. Reset, broken pipe or
	// end of stream before the answer: it died while we were talking.
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nodeDown(dir, node, err)
	}
	return err
}

// ErrNodeDown: a node's control socket does not answer because its
// process is not running (crashed and waiting to restart, stopped, or
// the testbed is down).
var ErrNodeDown = errors.New("node not running")

// nodeDownError says why a node does not answer, in words, and matches
// ErrNodeDown and the dial's error.
type nodeDownError struct {
	msg  string
	errs []error
}

func (e *nodeDownError) Error() string   { return e.msg }
func (e *nodeDownError) Unwrap() []error { return e.errs }

// nodeDown turns a refused dial of node's socket into words, with what
// the supervisor says of the node.
func nodeDown(dir, node string, dial error) error {
	st, alive := supervisorAlive(dir)
	msg := fmt.Sprintf("%s is not running and testbed %s's supervisor does not answer either: see netstation status, or bring it up again",
		node, filepath.Base(dir))
	if alive {
		msg = fmt.Sprintf("%s is not running: see netstation logs %s", node, node)
		for _, n := range st.Nodes {
			if n.Name != node {
				continue
			}
			switch n.State {
			case StateRestarting, StateStarting:
				msg = fmt.Sprintf("%s is not running (%s, %d restarts so far%s): see netstation logs %s", node, n.State, n.Restarts, lastExit(n.LastExit), node)
			case StateRunning:
				msg = fmt.Sprintf("%s is not answering (its process just exited, or is starting): see netstation status and netstation logs %s", node, node)
			default:
				msg = fmt.Sprintf("%s is not running (%s%s): see netstation logs %s", node, n.State, lastExit(n.LastExit), node)
			}
		}
	}
	return &nodeDownError{msg: msg, errs: []error{ErrNodeDown, dial}}
}

func lastExit(s string) string {
	if s == "" {
		return ""
	}
	return "; last exit: " + s
}
