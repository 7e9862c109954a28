package tcbpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
)

// TemplateCounters count the frames a template saw, by verdict.
type TemplateCounters struct {
	Passed  uint64 // own MAC and (IPv4 or ARP) own address
	BadMAC  uint64 // Ethernet source is not the peripheral's
	BadIP   uint64 // IPv4 source is not the peripheral's
	BadARP  uint64 // ARP sender MAC or IP is not the peripheral's
	BadType uint64 // neither IPv4 nor ARP, or VLAN-tagged
	Runt    uint64 // too short to check
}

// Dropped is the sum of every drop reason.
func (c TemplateCounters) Dropped() uint64 {
	return c.BadMAC + c.BadIP + c.BadARP + c.BadType + c.Runt
}

const (
	pinTplParams   = "template_params"
	pinTplCounters = "template_counters"
	pinTplProg     = "template_ingress"
)

var (
	templatePins  = []string{pinTplProg, pinTplParams, pinTplCounters}
	templateHooks = []hook{{parent: netlink.HANDLE_MIN_INGRESS, prio: prioTemplate, pin: pinTplProg}}
)

// A Template is the kernel-enforced transmit template of one host-side
// port: a cls_bpf program at the head of the port's ingress (frames the
// peripheral sent) that lets through only frames from the peripheral's own
// MAC carrying IPv4 from its own address or ARP naming its own MAC and
// address. It is a separate program from the impairment and runs before it
// (it is attached at the head, the impairment far behind), so a spoofed
// frame is counted as spoofed, never as lost, and the two are replaced and
// removed independently.
type Template struct {
	params, counters *ebpf.Map
}

func templateValue(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("MAC %v is not 6 bytes: %w", mac, ErrInvalid)
	}
	b := make([]byte, tplParamsSize)
	copy(b[offTplMAC:], mac)
	if ip.IsValid() {
		if !ip.Is4() {
			return nil, fmt.Errorf("address %v is not IPv4: %w", ip, ErrInvalid)
		}
		a := ip.As4()
		copy(b[offTplIP:], a[:])
		b[offTplFlags] = tplFlagIP // little-endian u32 1
	}
	return b, nil
}

// AttachTemplate attaches a template for the peripheral with mac and ip to
// the ingress of ifname in ns ("" = the caller's namespace) and pins it. An
// invalid (zero) ip checks the MAC only. When a template is already
// attached to the port it is reused with the new mac and ip.
func AttachTemplate(ns, ifname string, mac net.HardwareAddr, ip netip.Addr) (*Template, error) {
	t, err := attachTemplate(ns, ifname, mac, ip)
	if err != nil {
		return nil, fmt.Errorf("tcbpf: attach template to %s in %s: %w", ifname, nsLabel(ns), err)
	}
	return t, nil
}

func attachTemplate(ns, ifname string, mac net.HardwareAddr, ip netip.Addr) (_ *Template, err error) {
	val, err := templateValue(mac, ip)
	if err != nil {
		return nil, err
	}
	dir, live, err := preparePort(ns, ifname, templateHooks)
	if err != nil {
		return nil, err
	}
	if live {
		t, err := OpenTemplate(ns, ifname)
		if err != nil {
			return nil, fmt.Errorf("reuse attached template: %w", err)
		}
		if err := t.Set(mac, ip); err != nil {
			t.Close()
			return nil, fmt.Errorf("reuse attached template: %w", err)
		}
		return t, nil
	}
	if err := removePins(dir, templatePins...); err != nil {
		return nil, fmt.Errorf("remove previous template: %w", err)
	}
	t := &Template{}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	if t.params, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_tpl_params", Type: ebpf.Array, KeySize: 4, ValueSize: tplParamsSize, MaxEntries: 1}); err != nil {
		return nil, fmt.Errorf("create parameter map: %w", err)
	}
	if err := t.params.Put(uint32(0), val); err != nil {
		return nil, fmt.Errorf("set template: %w", err)
	}
	if t.counters, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ns_tpl_count", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: tplSlots}); err != nil {
		return nil, fmt.Errorf("create counter map: %w", err)
	}
	p, err := loadProgram("ns_tpl_ingress", templateInstructions(t.params, t.counters))
	if err != nil {
		return nil, err
	}
	defer p.Close()
	// Pinned before it is attached: a filter whose pins are missing could
	// be neither reused nor told from another tc user's.
	err = pinAll(dir, map[string]interface{ Pin(string) error }{
		pinTplParams: t.params, pinTplCounters: t.counters, pinTplProg: p,
	})
	if err != nil {
		return nil, err
	}
	if err := attachFilters(ns, ifname, []*ebpf.Program{p}, templateHooks); err != nil {
		detachFilters(ns, ifname, templateHooks)
		removePins(dir, templatePins...)
		return nil, err
	}
	return t, nil
}

// OpenTemplate opens the template attached (by any process) to ifname in
// ns; the error wraps [ErrNotFound] when there is none.
func OpenTemplate(ns, ifname string) (*Template, error) {
	t := &Template{}
	err := openPinnedMaps(ns, ifname, "template", pinnedMap{&t.params, pinTplParams}, pinnedMap{&t.counters, pinTplCounters})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// DetachTemplate removes the template of ifname in ns, if any.
func DetachTemplate(ns, ifname string) error {
	return detachPins(ns, ifname, "template", templateHooks, templatePins...)
}

// Set changes the peripheral's MAC and address without reattaching.
func (t *Template) Set(mac net.HardwareAddr, ip netip.Addr) error {
	if t.params == nil {
		return fmt.Errorf("tcbpf: set template: %w", ErrClosed)
	}
	val, err := templateValue(mac, ip)
	if err == nil {
		err = t.params.Put(uint32(0), val)
	}
	if err != nil {
		return fmt.Errorf("tcbpf: set template: %w", err)
	}
	return nil
}

// Counters sums the per-CPU counters.
func (t *Template) Counters() (TemplateCounters, error) {
	if t.counters == nil {
		return TemplateCounters{}, fmt.Errorf("tcbpf: read template counters: %w", ErrClosed)
	}
	var c TemplateCounters
	for k, dst := range []*uint64{&c.Passed, &c.BadMAC, &c.BadIP, &c.BadARP, &c.BadType, &c.Runt} {
		v, err := sumPerCPU(t.counters, uint32(k))
		if err != nil {
			return TemplateCounters{}, fmt.Errorf("tcbpf: read template counters: %w", err)
		}
		*dst = v
	}
	return c, nil
}

// Close releases this handle; the program stays attached (pinned).
func (t *Template) Close() error {
	return errors.Join(closeMaps(&t.params, &t.counters)...)
}
