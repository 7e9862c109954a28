package tcbpf

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
)

// prioStackDrop is the stack drop's place on a peripheral's own port: the
// head of its ingress (the port has no other program of this package).
const prioStackDrop = 1

var stackDropHooks = []hook{{parent: netlink.HANDLE_MIN_INGRESS, prio: prioStackDrop, pin: "ns_stack_drop"}}

// AttachStackDrop puts, at the head of the ingress of a peripheral's own
// port (ifname inside the peripheral's namespace ns), a program that drops
// IPv4 frames addressed to addr, the address of the peripheral's
// user-level stack, replacing one already there.
//
// Why: the user-level stack reads its frames with a packet socket, and a
// packet socket's tap runs before tc ingress, so it has its copy by then;
// the rest of the frame's way is the namespace's own kernel stack, which
// never holds that address (its baseline address is another, see
// peripherals.KernelAddr) and does not forward, and so only looks the
// destination up, builds a route for it and drops it (InAddrErrors). veth
// runs all of that on the sender's CPU, inside the sender's transmit call:
// 6 % of a user-level UDP sender's samples at 1472 B, a GSO super-frame at
// a time (perf, docs/ARCHITECTURE.md). Frames to any other address
// (the kernel's baseline address, broadcast, ARP) go on as before.
//
// The program has no map and no pin: the filter holds it, and goes with
// the port. Frames read by AF_XDP never reach tc, so the drop does not
// matter there.
func AttachStackDrop(ns, ifname string, addr netip.Addr) error {
	if !addr.Is4() {
		return fmt.Errorf("tcbpf: attach stack drop to %s in %s: address %v is not IPv4: %w", ifname, nsLabel(ns), addr, ErrInvalid)
	}
	p, err := loadProgram("ns_stack_drop", stackDropInstructions(addr))
	if err == nil {
		defer p.Close()
		err = attachFilters(ns, ifname, []*ebpf.Program{p}, stackDropHooks)
	}
	if err != nil {
		return fmt.Errorf("tcbpf: attach stack drop to %s in %s: %w", ifname, nsLabel(ns), err)
	}
	return nil
}

// DetachStackDrop removes the stack drop of ifname in ns, if any.
func DetachStackDrop(ns, ifname string) error {
	return detachFilters(ns, ifname, stackDropHooks)
}

// offProtocol is __sk_buff's protocol (the ethertype, network order).
const offProtocol = 16

// stackDropInstructions builds the stack drop for addr: TC_ACT_SHOT for
// IPv4 whose destination (frame offset 30) is addr, TC_ACT_UNSPEC for
// anything else, including a frame too short to tell.
func stackDropInstructions(addr netip.Addr) asm.Instructions {
	a := addr.As4()
	// The four bytes loaded as a word on a little-endian machine (BPF is
	// the host's byte order); compared as 64-bit registers, so that an
	// address with its high bit set is not sign-extended.
	le := uint32(a[0]) | uint32(a[1])<<8 | uint32(a[2])<<16 | uint32(a[3])<<24
	ins := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, offProtocol, asm.Word),
		asm.JNE.Imm(asm.R1, 0x0008, "pass"), // 0x0800 read little-endian
	}
	ins = append(ins, loadBytes(30, asm.R0, -8, 4, "pass")...)
	return append(ins,
		asm.LoadMem(asm.R1, asm.R10, -8, asm.Word),
		asm.LoadImm(asm.R2, int64(le), asm.DWord),
		asm.JNE.Reg(asm.R1, asm.R2, "pass"),
		asm.Mov.Imm(asm.R0, actShot),
		asm.Return(),
		asm.Mov.Imm(asm.R0, actNext).WithSymbol("pass"),
		asm.Return(),
	)
}
