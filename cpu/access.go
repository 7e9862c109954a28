package cpu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/stack"
)

// AccessArgs ask the processor, as the disk's file manager, to present a
// disk with good and bad capabilities and report what it answered.
type AccessArgs struct {
	Disk     netip.Addr `json:"disk"`
	DiskName string     `json:"disk_name"`
	// Revoked, when set, is a capability minted before the caller had the
	// disk revoke: the check then shows it refused and a fresh one working.
	Revoked []byte `json:"revoked,omitempty"`
}

// AccessCase is one capability presented to the disk.
type AccessCase struct {
	Name string `json:"name"`
	Op   string `json:"op"`
	// Want is "ok" or the disk's refusal counter it should bump
	// (disk.CapabilityAuthorizer.Stats names).
	Want string `json:"want"`
	// Code is what the disk answered: "ok" or its error code's name.
	Code string `json:"code"`
}

// AccessResult lists the cases; Valid is the capability of the "valid"
// case, for a revocation check afterwards.
type AccessResult struct {
	Cases []AccessCase `json:"cases"`
	Valid []byte       `json:"valid,omitempty"`
}

// RunAccessCheck presents the disk with capabilities that are forged
// (another key), expired, out of range, of the wrong rights and of a
// reused nonce, next to a valid one — or, with a.Revoked, a revoked one
// next to a fresh one — each in a session of its own over st.
func RunAccessCheck(ctx context.Context, st *stack.Stack, mgr *manager.Manager, a AccessArgs) (*AccessResult, error) {
	d, err := mgr.Lookup(a.DiskName, a.Disk)
	if err != nil {
		return nil, err
	}
	if d.Open {
		return nil, fmt.Errorf("access check: %s runs in open mode (disk.access: open): it checks no capabilities", d.Name)
	}
	server := net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.Disk, diskproto.Port))
	try := func(name, want string, op diskproto.Op, off int64, c [capability.Size]byte) AccessCase {
		res := AccessCase{Name: name, Op: op.String(), Want: want}
		res.Code = present(ctx, st, server, c, op, off)
		return res
	}
	const region = 1 << 20
	prepare := func(g manager.Grant) (capability.Capability, []byte, error) { return mgr.Prepare(d, g) }
	res := &AccessResult{}
	if a.Revoked != nil {
		var old [capability.Size]byte
		if len(a.Revoked) != len(old) {
			return nil, fmt.Errorf("access check: revoked capability of %d bytes", len(a.Revoked))
		}
		copy(old[:], a.Revoked)
		res.Cases = append(res.Cases, try("revoked", "revoked", diskproto.OpRead, 0, old))
		fresh, err := mgr.Mint(d.Name, d.Addr, manager.Grant{Length: region, Rights: capability.RightRead, Lifetime: time.Minute})
		if err != nil {
			return nil, err
		}
		res.Cases = append(res.Cases, try("fresh after revoke", "ok", diskproto.OpRead, 0, fresh))
		return res, nil
	}
	valid, key, err := prepare(manager.Grant{Length: region, Rights: capability.RightRead, Lifetime: time.Minute})
	if err != nil {
		return nil, err
	}
	vb := capability.Mint(key, valid)
	res.Valid = vb[:]
	res.Cases = append(res.Cases, try("valid", "ok", diskproto.OpRead, 0, vb))

	forged := valid
	forged.Nonce = capability.NewNonce()
	res.Cases = append(res.Cases, try("forged (another key)", "bad_mac", diskproto.OpRead, 0, capability.Mint(capability.NewKey(), forged)))

	expired, _, err := prepare(manager.Grant{Length: region, Rights: capability.RightRead, Lifetime: -time.Minute})
	if err != nil {
		return nil, err
	}
	res.Cases = append(res.Cases, try("expired", "expired", diskproto.OpRead, 0, capability.Mint(key, expired)))

	narrow, _, err := prepare(manager.Grant{Length: 4096, Rights: capability.RightRead, Lifetime: time.Minute})
	if err != nil {
		return nil, err
	}
	res.Cases = append(res.Cases, try("out of range", "range", diskproto.OpRead, 8192, capability.Mint(key, narrow)))

	readOnly, _, err := prepare(manager.Grant{Length: region, Rights: capability.RightRead, Lifetime: time.Minute})
	if err != nil {
		return nil, err
	}
	res.Cases = append(res.Cases, try("wrong rights (write with read-only)", "rights", diskproto.OpWrite, 0, capability.Mint(key, readOnly)))

	// The valid capability's nonce sealed into a wider grant: a replayed
	// or reused nonce. The disk keeps the first capability's claim.
	reused := valid
	reused.Length = 2 * region
	res.Cases = append(res.Cases, try("replayed nonce (reused in another grant)", "replay", diskproto.OpRead, 0, capability.Mint(key, reused)))
	return res, nil
}

// present dials the disk with capability c, runs one 4 KiB op at off and
// names the outcome: "ok", the disk's error code, or the failure.
func present(ctx context.Context, st *stack.Stack, server net.Addr, c [capability.Size]byte, op diskproto.Op, off int64) string {
	pc, err := st.ListenUDP(netip.AddrPortFrom(st.Addr(), 0))
	if err != nil {
		return "socket: " + err.Error()
	}
	cl, err := storage.Dial(pc, server, storage.Options{Capability: c})
	if err != nil {
		return "dial: " + err.Error()
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	buf := make([]byte, 4096)
	switch op {
	case diskproto.OpWrite:
		_, err = cl.WriteAt(ctx, buf, off, false)
	default:
		_, err = cl.ReadAt(ctx, buf, off)
	}
	var code diskproto.Code
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &code):
		return code.String()
	}
	return err.Error()
}
