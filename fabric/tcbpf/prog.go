package tcbpf

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Verdicts a direct-action cls_bpf program returns (tcx reads them the
// same way). TC_ACT_UNSPEC lets the next filter on the hook decide, so the
// template and the impairment chain; at the end of the chain it means
// "pass". TC_ACT_SHOT drops.
const (
	actNext = -1
	actShot = 2
)

// Offsets into struct __sk_buff.
const offVlanPresent = 20

// Layout of the impairment's parameter value (impairValueSize bytes).
const (
	offSeed     = 0  // u64
	offLossPPM  = 8  // u32
	offCorrupt  = 12 // u32
	offFlags    = 16 // u32
	paramsSize  = 24 //
	flagDown    = 1
	flagSeeded  = 2
	ppmScale    = 1_000_000
	counterKind = 4 // counters per direction
)

// Counter slots of the impairment, per direction (slot = dir*counterKind + kind).
const (
	kindPassed = iota
	kindDropped
	kindCorrupted
	kindBlocked
)

// splitmix64 constants (Steele, Lea, Flood 2014): the n-th draw of a seed
// is mix(seed + salt + (n+1)*golden), so the fate of the n-th frame does not
// depend on which CPU handled the frames before it.
const (
	golden uint64 = 0x9e3779b97f4a7c15
	mixC1  uint64 = 0xbf58476d1ce4e5b9
	mixC2  uint64 = 0x94d049bb133111eb
)

// dirSalt separates the sequences of the two directions under one seed.
var dirSalt = [2]uint64{0, 0xd1b54a32d192ed03}

// labels hands out unique jump labels.
type labels struct{ n int }

func (l *labels) next(prefix string) string {
	l.n++
	return fmt.Sprintf("%s_%d", prefix, l.n)
}

// lookup emits R0 = bpf_map_lookup_elem(m, &key), with the u32 key stored
// at R10+stackOff, and a jump to miss when R0 is NULL. It clobbers R0-R5.
func lookup(m *ebpf.Map, stackOff int16, key int64, miss string) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.R10, stackOff, key, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(stackOff)),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, miss),
	}
}

// loadParams emits the start every program shares: R6 = the skb (R1 on
// entry) and R7 = params[0], or a jump to miss when the lookup fails (it
// cannot for an array map). It uses the stack word at -4.
func loadParams(params *ebpf.Map, miss string) asm.Instructions {
	ins := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	ins = append(ins, lookup(params, -4, 0, miss)...)
	return append(ins, asm.Mov.Reg(asm.R7, asm.R0))
}

// count emits: counters[key] += 1 (an atomic add; on a per-CPU map it is
// uncontended). It clobbers R0-R5 and the stack word at -32.
func count(lb *labels, counters *ebpf.Map, key int32) asm.Instructions {
	skip := lb.next("count_done")
	return append(lookup(counters, -32, int64(key), skip),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol(skip),
	)
}

// verdict emits a labelled block that counts key and returns ret.
func verdict(lb *labels, label string, counters *ebpf.Map, key, ret int32) asm.Instructions {
	ins := count(lb, counters, key)
	ins[0] = ins[0].WithSymbol(label)
	return append(ins, asm.Mov.Imm(asm.R0, ret), asm.Return())
}

// loadBytes emits bpf_skb_load_bytes(skb=R6, off, R10+stackOff, n) and a
// jump to fail when it does not succeed. off is a constant, or the register
// offReg when offReg is not R0.
func loadBytes(off int32, offReg asm.Register, stackOff int16, n int32, fail string) asm.Instructions {
	ins := asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6)}
	if offReg != asm.R0 {
		ins = append(ins, asm.Mov.Reg(asm.R2, offReg))
	} else {
		ins = append(ins, asm.Mov.Imm(asm.R2, off))
	}
	return append(ins,
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, int32(stackOff)),
		asm.Mov.Imm(asm.R4, n),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	)
}

// impairInstructions builds the impairment program of one direction.
//
// Per frame: Down drops it; otherwise, when loss or corruption is set, one
// 64-bit draw decides both (high half against the loss rate, low half
// against the corruption rate). A seeded draw is the splitmix64 of a
// per-direction sequence number taken with an atomic fetch-and-add, so the
// n-th frame's fate is a pure function of (seed, direction, n) and matches
// [Decide]; an unseeded draw comes from bpf_get_prandom_u32. Corruption
// flips every bit of the last byte of the IPv4 datagram (14 + tot_len - 1),
// which the transport checksum covers; frames that are not IPv4 or carry
// nothing after the IP header pass unchanged and count as passed.
func impairInstructions(dir int, params, seq, counters *ebpf.Map) asm.Instructions {
	lb := &labels{}
	key := func(kind int) int32 { return int32(dir*counterKind + kind) }
	ins := loadParams(params, "pass")
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R7, offFlags, asm.Word),
		asm.JSet.Imm(asm.R1, flagDown, "blocked"),
		asm.LoadMem(asm.R2, asm.R7, offLossPPM, asm.Word),
		asm.LoadMem(asm.R3, asm.R7, offCorrupt, asm.Word),
		asm.Or.Reg(asm.R2, asm.R3),
		asm.JEq.Imm(asm.R2, 0, "pass"),
		asm.JSet.Imm(asm.R1, flagSeeded, "seeded"),
		// Unseeded: two kernel pseudo-random words.
		asm.FnGetPrandomU32.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.LSh.Imm(asm.R8, 32),
		asm.FnGetPrandomU32.Call(),
		asm.Or.Reg(asm.R8, asm.R0),
		asm.Ja.Label("draw"),
	)
	// Seeded: n = seq[dir]++ (atomic), z = mix(seed + salt + (n+1)*golden).
	seeded := lookup(seq, -8, int64(dir), "pass")
	seeded[0] = seeded[0].WithSymbol("seeded")
	ins = append(ins, seeded...)
	ins = append(ins,
		asm.Mov.Imm(asm.R1, 1),
		fetchAdd64(asm.R0, asm.R1),
		asm.Add.Imm(asm.R1, 1),
		asm.LoadImm(asm.R2, imm64(golden), asm.DWord),
		asm.Mul.Reg(asm.R1, asm.R2),
		asm.LoadMem(asm.R2, asm.R7, offSeed, asm.DWord),
		asm.Add.Reg(asm.R1, asm.R2),
		asm.LoadImm(asm.R2, imm64(dirSalt[dir]), asm.DWord),
		asm.Add.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.RSh.Imm(asm.R2, 30),
		asm.Xor.Reg(asm.R1, asm.R2),
		asm.LoadImm(asm.R2, imm64(mixC1), asm.DWord),
		asm.Mul.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.RSh.Imm(asm.R2, 27),
		asm.Xor.Reg(asm.R1, asm.R2),
		asm.LoadImm(asm.R2, imm64(mixC2), asm.DWord),
		asm.Mul.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.RSh.Imm(asm.R2, 31),
		asm.Xor.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R8, asm.R1),
		// Draw: high 32 bits scaled to [0, 1e6) against the loss rate,
		// low 32 bits against the corruption rate.
		asm.LoadMem(asm.R2, asm.R7, offLossPPM, asm.Word).WithSymbol("draw"),
		asm.Mov.Reg(asm.R1, asm.R8),
		asm.RSh.Imm(asm.R1, 32),
		asm.Mul.Imm(asm.R1, ppmScale),
		asm.RSh.Imm(asm.R1, 32),
		asm.JLT.Reg(asm.R1, asm.R2, "dropped"),
		asm.LoadMem(asm.R3, asm.R7, offCorrupt, asm.Word),
		asm.Mov.Reg32(asm.R1, asm.R8),
		asm.Mul.Imm(asm.R1, ppmScale),
		asm.RSh.Imm(asm.R1, 32),
		asm.JLT.Reg(asm.R1, asm.R3, "corrupt"),
		asm.Ja.Label("pass"),
	)
	// Corrupt: ethertype, version/IHL, TOS, total length at 12..17.
	ins = append(ins, asm.Mov.Imm(asm.R0, 0).WithSymbol("corrupt"))
	ins = append(ins, loadBytes(12, asm.R0, -16, 6, "pass")...)
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R10, -16, asm.Half),
		asm.JNE.Imm(asm.R1, 0x0008, "pass"), // 0x0800 read little-endian
		asm.LoadMem(asm.R1, asm.R10, -14, asm.Byte),
		asm.And.Imm(asm.R1, 0x0f),
		asm.LSh.Imm(asm.R1, 2),
		asm.LoadMem(asm.R2, asm.R10, -12, asm.Half),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.JLE.Reg(asm.R2, asm.R1, "pass"),
		asm.Add.Imm(asm.R2, 14-1),
		asm.Mov.Reg(asm.R9, asm.R2),
	)
	ins = append(ins, loadBytes(0, asm.R9, -24, 1, "pass")...)
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R10, -24, asm.Byte),
		asm.Xor.Imm(asm.R1, 0xff),
		asm.StoreMem(asm.R10, -24, asm.R1, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R9),
		asm.Mov.Reg(asm.R3, asm.R10),
		asm.Add.Imm(asm.R3, -24),
		asm.Mov.Imm(asm.R4, 1),
		asm.Mov.Imm(asm.R5, 0),
		asm.FnSkbStoreBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
	)
	ins = append(ins, verdict(lb, "corrupted", counters, key(kindCorrupted), actNext)...)
	ins = append(ins, verdict(lb, "pass", counters, key(kindPassed), actNext)...)
	ins = append(ins, verdict(lb, "dropped", counters, key(kindDropped), actShot)...)
	ins = append(ins, verdict(lb, "blocked", counters, key(kindBlocked), actShot)...)
	return ins
}

// Layout of the template's parameter value.
const (
	offTplMAC     = 0  // [6]byte
	offTplIP      = 8  // [4]byte, network order
	offTplFlags   = 12 // u32
	tplParamsSize = 16
	tplFlagIP     = 1 // the IPv4 source is checked
)

// Template counter slots.
const (
	tplPassed = iota
	tplBadMAC
	tplBadIP
	tplBadARP
	tplBadType
	tplRunt
	tplSlots
)

// templateInstructions builds the anti-spoofing program for the ingress
// of a host-side port (frames the peripheral sent). A frame passes (to the
// next program) only if its Ethernet source is the peripheral's MAC and it
// is either IPv4 whose source is the peripheral's address or ARP whose
// sender hardware and protocol addresses are the peripheral's. Everything
// else (other ethertypes, VLAN tags, frames too short to tell) is dropped
// and counted by reason.
func templateInstructions(params, counters *ebpf.Map) asm.Instructions {
	lb := &labels{}
	ins := loadParams(params, "badtype") // a failed lookup cannot happen (array map); fail closed
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R6, offVlanPresent, asm.Word),
		asm.JNE.Imm(asm.R1, 0, "badtype"),
	)
	// Source MAC (6..11) and ethertype (12..13) at -16..-9.
	ins = append(ins, loadBytes(6, asm.R0, -16, 8, "runt")...)
	ins = append(ins, jumpUnlessOwnMAC(-16, "badmac")...)
	ins = append(ins,
		asm.LoadMem(asm.R1, asm.R10, -10, asm.Half),
		asm.JEq.Imm(asm.R1, 0x0008, "ipv4"), // 0x0800 read little-endian
		asm.JEq.Imm(asm.R1, 0x0608, "arp"),  // 0x0806
		asm.Ja.Label("badtype"),
	)
	// IPv4 source address at 26..29.
	ipv4 := passIfOwnIP(26, "badip")
	ipv4[0] = ipv4[0].WithSymbol("ipv4")
	ins = append(ins, ipv4...)
	// ARP sender hardware address at 22..27, sender protocol address at 28..31.
	ins = append(ins, asm.Mov.Imm(asm.R0, 0).WithSymbol("arp"))
	ins = append(ins, loadBytes(22, asm.R0, -16, 6, "runt")...)
	ins = append(ins, jumpUnlessOwnMAC(-16, "badarp")...)
	ins = append(ins, passIfOwnIP(28, "badarp")...)
	ins = append(ins, verdict(lb, "pass", counters, tplPassed, actNext)...)
	ins = append(ins, verdict(lb, "badmac", counters, tplBadMAC, actShot)...)
	ins = append(ins, verdict(lb, "badip", counters, tplBadIP, actShot)...)
	ins = append(ins, verdict(lb, "badarp", counters, tplBadARP, actShot)...)
	ins = append(ins, verdict(lb, "badtype", counters, tplBadType, actShot)...)
	ins = append(ins, verdict(lb, "runt", counters, tplRunt, actShot)...)
	return ins
}

// jumpIfDiffers emits: if the size-wide value at R10+stackOff differs from
// the one at R7+paramOff (the parameter value), goto fail.
func jumpIfDiffers(stackOff, paramOff int16, size asm.Size, fail string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.R10, stackOff, size),
		asm.LoadMem(asm.R2, asm.R7, paramOff, size),
		asm.JNE.Reg(asm.R1, asm.R2, fail),
	}
}

// jumpUnlessOwnMAC emits a jump to fail unless the 6 bytes at
// R10+stackOff are the template's MAC.
func jumpUnlessOwnMAC(stackOff int16, fail string) asm.Instructions {
	return append(jumpIfDiffers(stackOff, offTplMAC, asm.Word, fail),
		jumpIfDiffers(stackOff+4, offTplMAC+4, asm.Half, fail)...)
}

// passIfOwnIP emits the template's address check of the IPv4 address at
// frame offset off: pass when the template checks no address or it is the
// template's, goto fail when it is not, runt when the frame is too short.
func passIfOwnIP(off int32, fail string) asm.Instructions {
	ins := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R7, offTplFlags, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "pass"),
	}
	ins = append(ins, loadBytes(off, asm.R0, -24, 4, "runt")...)
	ins = append(ins, jumpIfDiffers(-24, offTplIP, asm.Word, fail)...)
	return append(ins, asm.Ja.Label("pass"))
}

// loadProgram loads a SCHED_CLS program.
func loadProgram(name string, ins asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: ins,
	})
	if err != nil {
		return nil, fmt.Errorf("load program %s: %w", name, err)
	}
	return p, nil
}

// imm64 reinterprets a 64-bit constant for asm.LoadImm.
func imm64(v uint64) int64 { return int64(v) }

// fetchAdd64 emits src = atomic_fetch_add((u64 *)dst, src).
//
// cilium/ebpf v0.22.0 marshals atomic instructions with an immediate of 0
// (it computes the immediate from the opcode after it has taken the
// Constant), which silently turns a fetch-add into a plain add; setting
// Constant to the kernel's BPF_ADD|BPF_FETCH works around it.
func fetchAdd64(dst, src asm.Register) asm.Instruction {
	ins := asm.FetchAdd.Mem(dst, src, asm.DWord, 0)
	ins.Constant = 0x01 // BPF_ADD | BPF_FETCH
	return ins
}
