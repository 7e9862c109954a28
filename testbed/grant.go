package testbed

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/peripherals/disk/nbd"
	"github.com/netstation/netstation/testbed/spec"
)

// ErrGrant is wrapped by GrantDisk's refusals of bad input.
var ErrGrant = errors.New("grant")

// GrantArgs say what a capability granted by GrantDisk allows.
type GrantArgs struct {
	Rights capability.Rights
	// Offset and Length bound the byte range; Length 0 is "to the end of
	// the disk".
	Offset, Length uint64
	TTL            time.Duration // how long it is valid; must be positive
}

// Grant is a capability minted for a user, with what to do with it.
type Grant struct {
	Disk       string    `json:"disk"`
	DiskID     uint32    `json:"disk_id"`
	Address    string    `json:"address"`
	Rights     string    `json:"rights"`
	Offset     uint64    `json:"offset"`
	Length     uint64    `json:"length"`
	Expires    time.Time `json:"expires"`
	Version    uint32    `json:"version"`
	Capability string    `json:"capability"` // the 64-byte field in hex: NBD's export name
	URI        string    `json:"uri"`
	// Reach says in one line how the host's tools get to Address.
	Reach string `json:"reach"`
	// HostReaches: this host's kernel has a route to Address (host access
	// on the disk's segment).
	HostReaches bool `json:"host_reaches"`
}

// ParseRights reads rights as "read", "write", "flush", "trim", joined by
// "," or "|", or the shorthands "rw" (read, write, flush: what a copy
// onto the disk needs) and "all".
func ParseRights(s string) (capability.Rights, error) {
	var r capability.Rights
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(c rune) bool { return c == ',' || c == '|' || c == '+' }) {
		switch strings.TrimSpace(w) {
		case "read", "r", "ro":
			r |= capability.RightRead
		case "write", "w":
			r |= capability.RightWrite
		case "flush":
			r |= capability.RightFlush
		case "trim":
			r |= capability.RightTrim
		case "rw":
			r |= capability.RightRead | capability.RightWrite | capability.RightFlush
		case "all":
			r |= capability.RightsAll
		default:
			return 0, fmt.Errorf("%w: unknown right %q (want read, write, flush, trim, rw or all, joined by ,)", ErrGrant, w)
		}
	}
	if r == 0 {
		return 0, fmt.Errorf("%w: no rights given (want read, write, flush, trim, rw or all)", ErrGrant)
	}
	return r, nil
}

// GrantDisk mints a capability for a disk of a testbed that is up, with
// the disk's key (from the state directory, as the cpus' file managers
// do) at the disk's current version (asked of the disk, so a revocation
// made from any host counts). The capability is the disk's NBD export
// name: Grant.URI is ready for nbdinfo, nbdcopy and qemu-img.
func GrantDisk(ctx context.Context, testbed, node string, a GrantArgs) (*Grant, error) {
	dir := Dir(testbed)
	plan, err := LoadPlan(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, testbed)
	}
	n, err := plan.Node(node)
	if err != nil {
		return nil, err
	}
	if n.Kind != spec.KindDisk {
		return nil, fmt.Errorf("%w: %s is a %s, not a disk", ErrGrant, n.Name, n.Kind)
	}
	addr := n.Addr.Addr().String()
	if n.DiskOpen {
		return nil, fmt.Errorf("%w: %s is in open mode (disk.access: open) and checks no capabilities: use nbd://%s/%s",
			ErrGrant, n.Name, addr, nbd.OpenExport)
	}
	if a.TTL <= 0 {
		return nil, fmt.Errorf("%w: --ttl %v: want a positive duration, e.g. 1h", ErrGrant, a.TTL)
	}
	if a.Rights == 0 || a.Rights&^capability.RightsAll != 0 {
		return nil, fmt.Errorf("%w: rights %v", ErrGrant, a.Rights)
	}
	size := uint64(n.DiskSize)
	if a.Offset >= size {
		return nil, fmt.Errorf("%w: offset %d is beyond %s's %d bytes", ErrGrant, a.Offset, n.Name, size)
	}
	if a.Length == 0 {
		a.Length = size - a.Offset
	}
	if a.Length > size-a.Offset {
		return nil, fmt.Errorf("%w: %d bytes at %d reach beyond %s's %d bytes", ErrGrant, a.Length, a.Offset, n.Name, size)
	}
	kf, err := capability.ReadKeyFile(NodeKey(dir, n.Name))
	if err != nil {
		return nil, fmt.Errorf("%s's key: %w", n.Name, err)
	}
	st, err := DiskStats(ctx, testbed, n.Name)
	if err != nil {
		return nil, err
	}
	c := capability.Capability{DiskID: kf.DiskID, Offset: a.Offset, Length: a.Length, Rights: a.Rights,
		Expiry: time.Now().Add(a.TTL).Unix(), Version: st.Version, Nonce: capability.NewNonce()}
	f := capability.Mint(kf.Key, c)
	g := &Grant{Disk: n.Name, DiskID: c.DiskID, Address: addr, Rights: c.Rights.String(), Offset: c.Offset,
		Length: c.Length, Expires: time.Unix(c.Expiry, 0).UTC(), Version: c.Version,
		Capability: hex.EncodeToString(f[:])}
	g.URI = "nbd://" + addr + "/" + g.Capability
	g.Reach, g.HostReaches = reach(plan, n)
	return g, nil
}

// reach says how the host's tools get to n's address.
func reach(plan *Plan, n *NodePlan) (string, bool) {
	switch {
	case plan.Host == nil && plan.MultiHost():
		return fmt.Sprintf("this host has no host access to testbed %s: a multi-host testbed has it on its first host (%s) when its topology asks for it",
			plan.Testbed, plan.Hosts[0]), false
	case plan.Host == nil:
		return fmt.Sprintf("testbed %s has no host access, so the host has no route to %s: add `host_access: {}` to its topology (needs root) and up it again",
			plan.Testbed, n.Addr.Addr()), false
	case plan.Host.Bridge != n.Bridge:
		return fmt.Sprintf("the host reaches segment %s only (host_access.segment), %s is on %s",
			segmentOf(plan, plan.Host.Bridge), n.Name, n.Segment), false
	}
	return fmt.Sprintf("this host reaches %s through host access (%s, %s)", n.Addr.Addr(), plan.Host.IfName, plan.Host.Addr), true
}

func segmentOf(plan *Plan, bridge string) string {
	for _, s := range plan.Segments {
		if s.Bridge == bridge {
			return s.Name
		}
	}
	return bridge
}

// CapVersionArgs tell a host a disk's capability version after a revoke.
type CapVersionArgs struct {
	Disk    string `json:"disk"`
	Version uint32 `json:"version"`
}

// capVersionMu serialises raises of a host's version files.
var capVersionMu sync.Mutex

// raiseCapVersion moves this host's copy of a disk's capability version
// up to v, never down: the cpus of this host mint at it (their file
// managers read the file for every capability).
func raiseCapVersion(dir string, plan *Plan, a CapVersionArgs) error {
	n, err := plan.Node(a.Disk)
	if err != nil {
		return err
	}
	if n.Kind != spec.KindDisk {
		return fmt.Errorf("%s is a %s, not a disk", n.Name, n.Kind)
	}
	capVersionMu.Lock()
	defer capVersionMu.Unlock()
	path := NodeCapVersion(dir, n.Name)
	cur, err := capability.ReadVersion(path)
	if err != nil {
		return err
	}
	if a.Version <= cur {
		return nil
	}
	return capability.WriteVersion(path, a.Version)
}

// spreadRevocation carries a disk's new capability version to every other
// host of a multi-host testbed that runs a cpu (through the agents, to
// each host's supervisor), so the cpus there stop minting capabilities
// the disk refuses. It returns the hosts it could not tell.
func spreadRevocation(ctx context.Context, dir string, plan *Plan, disk *NodePlan, v uint32) []string {
	a := CapVersionArgs{Disk: disk.Name, Version: v}
	var missed []string
	for _, h := range plan.Hosts {
		if h == disk.Host || !plan.runsCPU(h) {
			continue // the disk wrote its own host's file; only cpus mint
		}
		var err error
		if h == plan.Local {
			err = raiseCapVersion(dir, plan, a)
		} else {
			err = remoteCall(ctx, h, plan.Testbed, "supervisor", "cap-version", a, nil, nil)
		}
		if err != nil {
			missed = append(missed, fmt.Sprintf("%s (%v)", h, err))
		}
	}
	return missed
}

// runsCPU reports whether host runs a cpu of the plan: a file manager.
func (p *Plan) runsCPU(host string) bool {
	for _, n := range p.Nodes {
		if n.Host == host && n.Kind == spec.KindCPU {
			return true
		}
	}
	return false
}
