package tcbpf

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// Direction names one side of a host-side port.
type Direction int

const (
	// Ingress is the port's ingress: frames the peripheral sent.
	Ingress Direction = 0
	// Egress is the port's egress: frames going to the peripheral.
	Egress Direction = 1
)

var _ fmt.Stringer = Direction(0)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// PPM is the denominator of the rates in [Params]: 1% is 10,000 ppm.
const PPM = ppmScale

// Params configure an impairment. They apply to both directions of the
// port, each direction drawing from its own sequence.
type Params struct {
	LossPPM    uint32 // frames dropped, parts per million
	CorruptPPM uint32 // frames corrupted (of those not dropped), parts per million
	// Seed makes the draws reproducible: the n-th frame of a direction
	// after Set has the fate Decide(p, dir, n). Zero means unseeded (the
	// kernel's bpf_get_prandom_u32).
	Seed uint64
	Down bool // drop every frame (a partition)
}

func (p Params) validate() error {
	if p.LossPPM > PPM || p.CorruptPPM > PPM {
		return fmt.Errorf("rate above %d ppm: %w", PPM, ErrInvalid)
	}
	return nil
}

func (p Params) marshal() []byte {
	b := make([]byte, paramsSize)
	binary.NativeEndian.PutUint64(b[offSeed:], p.Seed)
	binary.NativeEndian.PutUint32(b[offLossPPM:], p.LossPPM)
	binary.NativeEndian.PutUint32(b[offCorrupt:], p.CorruptPPM)
	var flags uint32
	if p.Down {
		flags |= flagDown
	}
	if p.Seed != 0 {
		flags |= flagSeeded
	}
	binary.NativeEndian.PutUint32(b[offFlags:], flags)
	return b
}

func unmarshalParams(b []byte) Params {
	flags := binary.NativeEndian.Uint32(b[offFlags:])
	return Params{
		Seed:       binary.NativeEndian.Uint64(b[offSeed:]),
		LossPPM:    binary.NativeEndian.Uint32(b[offLossPPM:]),
		CorruptPPM: binary.NativeEndian.Uint32(b[offCorrupt:]),
		Down:       flags&flagDown != 0,
	}
}

// splitmix64 finalizer.
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * mixC1
	z = (z ^ z>>27) * mixC2
	return z ^ z>>31
}

// Decide returns the fate the kernel program gives the n-th frame (from 0,
// counted from the last Set) of direction dir under seeded parameters p.
// corrupt is only acted upon for IPv4 frames with bytes after the IP
// header. With p.Seed == 0 the kernel draws at random and Decide does not
// apply.
func Decide(p Params, dir Direction, n uint64) (drop, corrupt bool) {
	if p.Down {
		return true, false
	}
	if p.LossPPM == 0 && p.CorruptPPM == 0 {
		return false, false
	}
	z := mix(p.Seed + dirSalt[dir&1] + (n+1)*golden)
	if (z>>32)*PPM>>32 < uint64(p.LossPPM) {
		return true, false
	}
	return false, (z&0xffffffff)*PPM>>32 < uint64(p.CorruptPPM)
}

// DirCounters count the frames of one direction.
type DirCounters struct {
	Passed    uint64 // passed unchanged
	Dropped   uint64 // dropped by the loss rate
	Corrupted uint64 // passed with one byte flipped
	Blocked   uint64 // dropped because the link is down
}

// Counters are an impairment's counters since it was attached.
type Counters struct {
	Ingress, Egress DirCounters
}

// Pin names inside a port's pin directory.
const (
	pinImpParams   = "impair_params"
	pinImpSeq      = "impair_seq"
	pinImpCounters = "impair_counters"
	pinImpIngress  = "impair_ingress"
	pinImpEgress   = "impair_egress"
)

var (
	impairPins  = []string{pinImpIngress, pinImpEgress, pinImpParams, pinImpSeq, pinImpCounters}
	impairHooks = []hook{
		{parent: netlink.HANDLE_MIN_INGRESS, prio: prioImpairment, pin: pinImpIngress},
		{parent: netlink.HANDLE_MIN_EGRESS, prio: prioImpairment, pin: pinImpEgress},
	}
)

// An Impairment is the loss/corruption/down program pair on one port: a
// cls_bpf program on its ingress and one on its egress sharing one parameter
// map. The programs and maps are pinned under the port's directory in
// [PinRoot], so they outlive the process that attached them and any
// process can [Open] them to change parameters or read counters.
type Impairment struct {
	ns, ifname string
	params     *ebpf.Map
	seq        *ebpf.Map
	counters   *ebpf.Map
}

// Attach attaches a pass-everything impairment to ifname in ns ("" = the
// caller's namespace) and pins it. The caller sets parameters with
// [Impairment.Set] and closes the returned handle when done; the programs
// stay until [Detach]. Attach is idempotent: when an impairment is already
// attached to the port it is reused, its parameters reset to none (its
// counters keep counting); pins left by a port that no longer exists are
// replaced.
func Attach(ns, ifname string) (*Impairment, error) {
	imp, err := attach(ns, ifname)
	if err != nil {
		return nil, fmt.Errorf("tcbpf: attach impairment to %s in %s: %w", ifname, nsLabel(ns), err)
	}
	return imp, nil
}

func attach(ns, ifname string) (_ *Impairment, err error) {
	dir, live, err := preparePort(ns, ifname, impairHooks)
	if err != nil {
		return nil, err
	}
	if live {
		imp, err := Open(ns, ifname)
		if err != nil {
			return nil, fmt.Errorf("reuse attached impairment: %w", err)
		}
		if err := imp.Set(Params{}); err != nil {
			imp.Close()
			return nil, fmt.Errorf("reuse attached impairment: %w", err)
		}
		return imp, nil
	}
	if err := removePins(dir, impairPins...); err != nil {
		return nil, fmt.Errorf("remove previous impairment: %w", err)
	}
	imp := &Impairment{ns: ns, ifname: ifname}
	defer func() {
		if err != nil {
			imp.Close()
		}
	}()
	if imp.params, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_imp_params", Type: ebpf.Array, KeySize: 4, ValueSize: paramsSize, MaxEntries: 1}); err != nil {
		return nil, fmt.Errorf("create parameter map: %w", err)
	}
	if imp.seq, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_imp_seq", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 2}); err != nil {
		return nil, fmt.Errorf("create sequence map: %w", err)
	}
	if imp.counters, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_imp_count", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 2 * counterKind}); err != nil {
		return nil, fmt.Errorf("create counter map: %w", err)
	}
	var progs []*ebpf.Program
	defer func() {
		for _, p := range progs {
			p.Close() // the filters and pins hold their own references
		}
	}()
	for dir, name := range []string{"ns_imp_ingress", "ns_imp_egress"} {
		p, err := loadProgram(name, impairInstructions(dir, imp.params, imp.seq, imp.counters))
		if err != nil {
			return nil, err
		}
		progs = append(progs, p)
	}
	err = pinAll(dir, map[string]interface{ Pin(string) error }{
		pinImpParams: imp.params, pinImpSeq: imp.seq, pinImpCounters: imp.counters,
		pinImpIngress: progs[0], pinImpEgress: progs[1],
	})
	if err != nil {
		return nil, err
	}
	// Far behind the head: a template (attached at the head) runs first.
	if err := attachFilters(ns, ifname, progs, impairHooks); err != nil {
		detachFilters(ns, ifname, impairHooks) // a hook attached before the failure
		removePins(dir, impairPins...)
		return nil, err
	}
	return imp, nil
}

// Open opens the impairment attached (by any process) to ifname in ns.
// It returns an error wrapping [ErrNotFound] when there is none.
func Open(ns, ifname string) (*Impairment, error) {
	imp := &Impairment{ns: ns, ifname: ifname}
	err := openPinnedMaps(ns, ifname, "impairment",
		pinnedMap{&imp.params, pinImpParams}, pinnedMap{&imp.seq, pinImpSeq}, pinnedMap{&imp.counters, pinImpCounters})
	if err != nil {
		return nil, err
	}
	return imp, nil
}

// Detach removes the impairment of ifname in ns, if any.
func Detach(ns, ifname string) error {
	return detachPins(ns, ifname, "impairment", impairHooks, impairPins...)
}

// Set replaces the parameters and restarts both directions' sequences, so
// the frames after Set meet the fates Decide gives from n = 0. The programs
// read the parameters per frame; a frame racing with Set may see a mix of
// old and new fields.
func (imp *Impairment) Set(p Params) error {
	if imp.params == nil {
		return fmt.Errorf("tcbpf: set impairment: %w", ErrClosed)
	}
	if err := p.validate(); err != nil {
		return fmt.Errorf("tcbpf: set impairment: %w", err)
	}
	zero := make([]byte, 8)
	for k := uint32(0); k < 2; k++ {
		if err := imp.seq.Put(k, zero); err != nil {
			return fmt.Errorf("tcbpf: reset sequence: %w", err)
		}
	}
	if err := imp.params.Put(uint32(0), p.marshal()); err != nil {
		return fmt.Errorf("tcbpf: set impairment: %w", err)
	}
	return nil
}

// Params returns the parameters in force.
func (imp *Impairment) Params() (Params, error) {
	if imp.params == nil {
		return Params{}, fmt.Errorf("tcbpf: read impairment: %w", ErrClosed)
	}
	b := make([]byte, paramsSize)
	if err := imp.params.Lookup(uint32(0), &b); err != nil {
		return Params{}, fmt.Errorf("tcbpf: read impairment: %w", err)
	}
	return unmarshalParams(b), nil
}

// Counters sums the per-CPU counters.
func (imp *Impairment) Counters() (Counters, error) {
	if imp.counters == nil {
		return Counters{}, fmt.Errorf("tcbpf: read counters: %w", ErrClosed)
	}
	var c Counters
	for d, dc := range []*DirCounters{&c.Ingress, &c.Egress} {
		for kind, dst := range []*uint64{&dc.Passed, &dc.Dropped, &dc.Corrupted, &dc.Blocked} {
			v, err := sumPerCPU(imp.counters, uint32(d*counterKind+kind))
			if err != nil {
				return Counters{}, fmt.Errorf("tcbpf: read counters: %w", err)
			}
			*dst = v
		}
	}
	return c, nil
}

// Close releases this handle. The programs stay attached (they are pinned);
// use [Detach] to remove them.
func (imp *Impairment) Close() error {
	return errors.Join(closeMaps(&imp.params, &imp.seq, &imp.counters)...)
}

func sumPerCPU(m *ebpf.Map, key uint32) (uint64, error) {
	var vals []uint64
	if err := m.Lookup(key, &vals); err != nil {
		return 0, err
	}
	var s uint64
	for _, v := range vals {
		s += v
	}
	return s, nil
}

func nsLabel(ns string) string {
	if ns == "" {
		return "the host namespace"
	}
	return "namespace " + ns
}
