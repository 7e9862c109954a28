package peripherals

import (
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// KernelNet is where the kernel-stack baselines live: RFC 2544's
// benchmarking range, never routed, so it cannot clash with a testbed's
// own subnet or the host's.
var KernelNet = netip.MustParsePrefix("198.18.0.0/15")

// KernelAddr is the kernel-stack address a peripheral with user-level
// address a gets while a kernel baseline runs: the same host part inside
// KernelNet.
func KernelAddr(a netip.Prefix) netip.Prefix {
	host := a.Addr().As4()
	net4 := a.Masked().Addr().As4()
	base := KernelNet.Addr().As4()
	var off uint32
	for i := 0; i < 4; i++ {
		off = off<<8 | uint32(host[i]-net4[i])
	}
	b := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	b += off & (1<<(32-KernelNet.Bits()) - 1)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(b >> 24), byte(b >> 16), byte(b >> 8), byte(b)}), KernelNet.Bits())
}

// kernelState tracks the kernel baseline address and who wants to hear of it.
type kernelState struct {
	mu    sync.Mutex
	on    bool
	hooks []func(on bool, addr netip.Addr)
}

// OnKernel registers a service hook called when the kernel baseline
// address comes (on) or goes.
func (p *Runtime) OnKernel(f func(on bool, addr netip.Addr)) {
	p.kernel.mu.Lock()
	p.kernel.hooks = append(p.kernel.hooks, f)
	p.kernel.mu.Unlock()
}

// setKernel gives the kernel an address on the peripheral's port (on) or
// removes it. The kernel stack then shares the veth with the user-level
// stack, which counts the kernel's frames as "not our address" drops.
func (p *Runtime) setKernel(on bool) error {
	p.kernel.mu.Lock()
	defer p.kernel.mu.Unlock()
	if p.kernel.on == on {
		return nil
	}
	if p.cfg.IfName == "" {
		return fmt.Errorf("kernel baseline: %s's link is not a kernel interface", p.cfg.Name)
	}
	l, err := netlink.LinkByName(p.cfg.IfName)
	if err != nil {
		return fmt.Errorf("kernel baseline: %w", err)
	}
	ka := KernelAddr(p.cfg.Addr)
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ka.Addr().AsSlice(), Mask: net.CIDRMask(ka.Bits(), 32)}}
	if on {
		err = netlink.AddrReplace(l, addr)
	} else {
		for _, h := range p.kernel.hooks {
			h(false, ka.Addr())
		}
		err = netlink.AddrDel(l, addr)
	}
	if err != nil {
		return fmt.Errorf("kernel baseline address %v: %w", ka, err)
	}
	p.kernel.on = on
	if on {
		for _, h := range p.kernel.hooks {
			h(true, ka.Addr())
		}
	}
	return nil
}
