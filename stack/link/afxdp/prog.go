package afxdp

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// offRxQueueIndex is offsetof(struct xdp_md, rx_queue_index).
const offRxQueueIndex = 16

const xdpPass = 2

// newRedirectProgram returns an XDP program that redirects each frame to
// the socket that xsks holds for the frame's receive queue, and passes it
// to the kernel when there is none.
func newRedirectProgram(xsks *ebpf.Map) (*ebpf.Program, error) {
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, offRxQueueIndex, asm.Word), // key = ctx->rx_queue_index
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, xdpPass), // action when the map has no socket
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "netstation_xsk",
		Type:         ebpf.XDP,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	return prog, nil
}
