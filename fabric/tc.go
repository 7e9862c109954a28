package fabric

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Rate limit shaping parameters. The bucket holds BurstTime of traffic at
// the rate but never less than two full frames (a bucket smaller than one
// frame drops every frame of that size); the queue in front of it holds
// QueueTime of traffic more.
const (
	MinRate   = 8000 // bits/s; below this the tbf timer values overflow
	BurstTime = 10   // ms
	QueueTime = 50   // ms
)

// tbfParams returns the tbf settings for rate bytes/s on a link with mtu.
func tbfParams(rateBytes uint64, mtu int) (burst, limit uint32) {
	frame := uint64(mtu) + 14 + 4 // Ethernet header and one VLAN tag
	b := max(rateBytes*BurstTime/1000, 2*frame)
	l := b + rateBytes*QueueTime/1000
	// Both are 32-bit in the kernel; keep the queue above the bucket.
	return uint32(min(b, 1<<30)), uint32(min(l, 1<<32-1))
}

// SetRate shapes the egress of ifname in ns ("" = host) to bitsPerSec with
// a tbf root qdisc (replacing any root qdisc there); 0 removes a tbf root
// qdisc and restores the device's default. Shaping the host-side end of a
// veth limits what the peer end receives.
func (s *Session) SetRate(ns, ifname string, bitsPerSec uint64) error {
	if err := s.setRate(ns, ifname, bitsPerSec); err != nil {
		return fmt.Errorf("fabric: set rate of %s in %s to %d bit/s: %w", ifname, nsLabel(ns), bitsPerSec, err)
	}
	return nil
}

func (s *Session) setRate(ns, ifname string, bitsPerSec uint64) error {
	if bitsPerSec != 0 && bitsPerSec < MinRate {
		return fmt.Errorf("below %d bit/s: %w", MinRate, ErrInvalid)
	}
	e, err := s.entry(ns)
	if err != nil {
		return err
	}
	l, err := linkByName(e.h, ns, ifname)
	if err != nil {
		return err
	}
	attrs := netlink.QdiscAttrs{
		LinkIndex: l.Attrs().Index,
		Handle:    netlink.MakeHandle(1, 0),
		Parent:    netlink.HANDLE_ROOT,
	}
	if bitsPerSec == 0 {
		q, err := rootQdisc(e.h, l)
		if err != nil || q == nil || q.Type() != "tbf" {
			return err
		}
		if err := e.h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete tbf: %w", err)
		}
		return nil
	}
	rate := bitsPerSec / 8 // netlink's Tbf.Rate is in bytes/s
	burst, limit := tbfParams(rate, l.Attrs().MTU)
	tbf := &netlink.Tbf{
		QdiscAttrs: attrs,
		Rate:       rate,
		Limit:      limit,
		Buffer:     netlink.Xmittime(rate, burst), // in scheduler ticks
	}
	if err := e.h.QdiscReplace(tbf); err != nil {
		return fmt.Errorf("replace root qdisc with tbf: %w", err)
	}
	return nil
}

// rootQdisc returns the root qdisc of l, or nil.
func rootQdisc(h *netlink.Handle, l netlink.Link) (netlink.Qdisc, error) {
	qs, err := retryDump(func() ([]netlink.Qdisc, error) { return h.QdiscList(l) })
	if err != nil {
		return nil, fmt.Errorf("list qdiscs: %w", err)
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT {
			return q, nil
		}
	}
	return nil, nil
}

// Rate returns the rate in bits/s of the tbf root qdisc on ifname in ns,
// or 0 when there is none.
func (s *Session) Rate(ns, ifname string) (uint64, error) {
	e, err := s.entry(ns)
	if err != nil {
		return 0, fmt.Errorf("fabric: rate of %s: %w", ifname, err)
	}
	l, err := linkByName(e.h, ns, ifname)
	if err != nil {
		return 0, fmt.Errorf("fabric: rate: %w", err)
	}
	q, err := rootQdisc(e.h, l)
	if err != nil {
		return 0, fmt.Errorf("fabric: rate of %s in %s: %w", ifname, nsLabel(ns), err)
	}
	if tbf, ok := q.(*netlink.Tbf); ok {
		return tbf.Rate * 8, nil
	}
	return 0, nil
}
