package fabric

import (
	"fmt"
	"net/netip"
	"os/exec"

	"github.com/vishvananda/netlink"
)

// The package-level functions below each open a Session for one call and
// close it again, so they hold nothing between calls. Code that makes many
// calls (a testbed coming up) should use one Session instead and save the
// namespace switch that opening each netlink socket costs.

// with runs fn on a fresh Session.
func with(fn func(*Session) error) error {
	s, err := NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(s)
}

// CreateNetns creates a named namespace; see [Session.CreateNetns].
func CreateNetns(name string) error {
	return with(func(s *Session) error { return s.CreateNetns(name) })
}

// DeleteNetns deletes a named namespace; see [Session.DeleteNetns].
func DeleteNetns(name string) error {
	return with(func(s *Session) error { return s.DeleteNetns(name) })
}

// Handle returns a new netlink handle acting in ns ("" = the caller's
// namespace). The caller closes it.
func Handle(ns string) (*netlink.Handle, error) {
	if ns == "" {
		var h *netlink.Handle
		err := with(func(s *Session) error {
			var err error
			h, err = openHandleIn(s.host)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("fabric: netlink handle in the host namespace: %w", err)
		}
		return h, nil
	}
	fd, err := OpenNetns(ns)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	h, err := openHandleIn(fd)
	if err != nil {
		return nil, fmt.Errorf("fabric: netlink handle in namespace %s: %w", ns, err)
	}
	return h, nil
}

// Do runs fn on a locked thread inside ns; see [Session.Do].
func Do(ns string, fn func() error) error {
	return with(func(s *Session) error { return s.Do(ns, fn) })
}

// StartIn starts cmd with the child born inside ns; see [Session.StartIn].
func StartIn(ns string, cmd *exec.Cmd) error {
	return with(func(s *Session) error { return s.StartIn(ns, cmd) })
}

// CreateVeth creates a veth pair; see [Session.CreateVeth].
func CreateVeth(v VethSpec) error {
	return with(func(s *Session) error { return s.CreateVeth(v) })
}

// CreateBridge creates a bridge; see [Session.CreateBridge].
func CreateBridge(ns, name string, mtu int) error {
	return with(func(s *Session) error { return s.CreateBridge(ns, name, mtu) })
}

// DeleteLink deletes a link if present; see [Session.DeleteLink].
func DeleteLink(ns, ifname string) error {
	return with(func(s *Session) error { return s.DeleteLink(ns, ifname) })
}

// SetAddr makes cidr the only IPv4 address of ifname; see [Session.SetAddr].
func SetAddr(ns, ifname string, cidr netip.Prefix) error {
	return with(func(s *Session) error { return s.SetAddr(ns, ifname, cidr) })
}

// SetLinkState sets a link up or down; see [Session.SetLinkState].
func SetLinkState(ns, ifname string, up bool) error {
	return with(func(s *Session) error { return s.SetLinkState(ns, ifname, up) })
}

// SetRate shapes a link's egress with tbf; see [Session.SetRate].
func SetRate(ns, ifname string, bitsPerSec uint64) error {
	return with(func(s *Session) error { return s.SetRate(ns, ifname, bitsPerSec) })
}

// Rate reads a link's tbf rate; see [Session.Rate].
func Rate(ns, ifname string) (bitsPerSec uint64, err error) {
	err = with(func(s *Session) error {
		bitsPerSec, err = s.Rate(ns, ifname)
		return err
	})
	return bitsPerSec, err
}

// LinkStats returns a link's packet counters; see [Session.LinkStats].
func LinkStats(ns, ifname string) (rx, tx, drops uint64, err error) {
	err = with(func(s *Session) error {
		rx, tx, drops, err = s.LinkStats(ns, ifname)
		return err
	})
	return rx, tx, drops, err
}

// Sysctl writes a sysctl inside ns; see [Session.Sysctl].
func Sysctl(ns, key, value string) error {
	return with(func(s *Session) error { return s.Sysctl(ns, key, value) })
}

// Cleanup deletes everything named with prefix; see [Session.Cleanup].
func Cleanup(prefix string) error {
	return with(func(s *Session) error { return s.Cleanup(prefix) })
}

// CreateVXLAN creates a VXLAN device; see [Session.CreateVXLAN].
func CreateVXLAN(v VXLANSpec) error {
	return with(func(s *Session) error { return s.CreateVXLAN(v) })
}

// FDB lists a VXLAN device's static entries; see [Session.FDB].
func FDB(ns, dev string) (entries []FDBEntry, err error) {
	err = with(func(s *Session) error {
		entries, err = s.FDB(ns, dev)
		return err
	})
	return entries, err
}

// SyncFDB makes a VXLAN device's static entries exactly want; see
// [Session.SyncFDB].
func SyncFDB(ns, dev string, want []FDBEntry) (added, removed int, err error) {
	err = with(func(s *Session) error {
		added, removed, err = s.SyncFDB(ns, dev, want)
		return err
	})
	return added, removed, err
}
