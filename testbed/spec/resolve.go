package spec

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
)

// Resolve fills every default so that the topology says exactly what will
// be built: the subnet (from the argument when the file has none), the
// default segment, each node's segment, addresses, MACs and kind
// parameters. It is deterministic: the same topology and subnet give the
// same result on every host.
//
//   - Host access without an address gets the highest free address of the
//     subnet (.254 in a /24).
//   - Nodes without an address get the lowest free ones from host
//     FirstNodeHost (.10) upward, in node order, then .1 to .9.
//   - With a hosts list, nodes without a host are placed on the host with
//     the fewest nodes so far (explicit placements counted first; ties go
//     to the host listed first), in node order.
//   - Nodes without a MAC get 02:xx:xx:xx:xx:xx (locally administered,
//     unicast) where xx are bytes of SHA-256(testbed name, node name), so a
//     node keeps its MAC when others are added or reordered.
//
// On error t is left unchanged.
func (t *Topology) Resolve(subnet netip.Prefix) error {
	r := t.Clone()
	if !r.Subnet.IsValid() {
		if !subnet.IsValid() {
			ps := &problems{source: t.Source}
			ps.add(r.lineOf("", 0), "subnet", ErrMissing, "the file has no subnet and none was given")
			return ps.result()
		}
		r.Subnet = subnet
	}
	if len(r.Segments) == 0 {
		r.Segments = []Segment{{Name: DefaultSegment}}
	}
	if len(r.Segments) == 1 {
		for i := range r.Nodes {
			if r.Nodes[i].Segment == "" {
				r.Nodes[i].Segment = r.Segments[0].Name
			}
		}
		if r.HostAccess != nil && r.HostAccess.Segment == "" {
			r.HostAccess.Segment = r.Segments[0].Name
		}
	}
	if err := r.Validate(); err != nil {
		return err
	}

	r.place()

	taken := map[netip.Addr]bool{}
	for _, n := range r.Nodes {
		if n.IP.IsValid() {
			taken[n.IP] = true
		}
	}
	if h := r.HostAccess; h != nil {
		if h.IP.IsValid() {
			taken[h.IP] = true
		} else {
			h.IP = highestFree(r.Subnet, taken)
			taken[h.IP] = true
		}
	}
	next := addressOrder(r.Subnet)
	for i := range r.Nodes {
		n := &r.Nodes[i]
		if n.IP.IsValid() {
			continue
		}
		for a := range next {
			if !taken[a] {
				n.IP = a
				taken[a] = true
				break
			}
		}
	}

	macs := map[string]bool{}
	for _, n := range r.Nodes {
		if n.MAC != nil {
			macs[n.MAC.String()] = true
		}
	}
	for i := range r.Nodes {
		n := &r.Nodes[i]
		if n.MAC != nil {
			continue
		}
		for try := 0; ; try++ {
			m := DeriveMAC(r.Name, n.Name, try)
			if !macs[m.String()] {
				n.MAC = m
				macs[m.String()] = true
				break
			}
		}
	}

	for i := range r.Nodes {
		n := &r.Nodes[i]
		switch n.Kind {
		case KindDisk:
			if n.Disk == nil {
				n.Disk = &DiskParams{}
			}
			if n.Disk.SizeBytes == 0 {
				n.Disk.SizeBytes = DefaultDiskSize
			}
		case KindDisplay:
			if n.Display == nil {
				n.Display = &DisplayParams{}
			}
			if n.Display.Width == 0 {
				n.Display.Width = DefaultDisplayWidth
			}
			if n.Display.Height == 0 {
				n.Display.Height = DefaultDisplayHeight
			}
			if n.Display.Format == "" {
				n.Display.Format = DefaultDisplayFormat
			}
		}
	}

	// The checks above leave nothing to chance, but a resolved topology
	// that does not validate must never reach the fabric.
	if err := r.Validate(); err != nil {
		return fmt.Errorf("spec: resolved topology is invalid (a bug): %w", err)
	}
	*t = *r
	return nil
}

// DeriveMAC returns the MAC Resolve gives node in testbed: 02 followed by
// five bytes of SHA-256 over the names. try > 0 picks another one when an
// earlier candidate is taken.
func DeriveMAC(testbed, node string, try int) net.HardwareAddr {
	h := sha256.New()
	fmt.Fprintf(h, "netstation\x00%s\x00%s", testbed, node)
	if try > 0 {
		fmt.Fprintf(h, "\x00%d", try)
	}
	sum := h.Sum(nil)
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// addressOrder yields the host addresses of p in the order Resolve hands
// them to nodes: from FirstNodeHost up to the last usable, then 1 up to
// FirstNodeHost-1.
func addressOrder(p netip.Prefix) func(yield func(netip.Addr) bool) {
	return func(yield func(netip.Addr) bool) {
		base := u32(p.Masked().Addr())
		n := uint32(hostCount(p))
		start := uint32(FirstNodeHost)
		if start > n {
			start = n
		}
		for h := start; h <= n; h++ {
			if !yield(addr4(base + h)) {
				return
			}
		}
		for h := uint32(1); h < start; h++ {
			if !yield(addr4(base + h)) {
				return
			}
		}
	}
}

// highestFree returns the highest usable address of p not in taken. The
// caller has checked that one is free.
func highestFree(p netip.Prefix, taken map[netip.Addr]bool) netip.Addr {
	base := u32(p.Masked().Addr())
	for h := uint32(hostCount(p)); h >= 1; h-- {
		if a := addr4(base + h); !taken[a] {
			return a
		}
	}
	return netip.Addr{}
}

// PickSubnet returns the first /24 that overlaps none of inUse, trying
// 10.77.0.0/16, then 10.78.0.0/16, then 172.30.0.0/16 in order. Pass the
// host's routes and the subnets of running testbeds; prefixes of length 0
// (default routes) and IPv6 prefixes are ignored. It is PickSubnetFor a
// topology that fits a /24.
func PickSubnet(inUse []netip.Prefix) (netip.Prefix, error) { return PickSubnetFor(inUse, 0) }

// PickSubnetFor is PickSubnet for a topology that needs hosts addresses
// (its nodes, plus one for host access): the prefix is a /24, or, when
// that holds too few, the longest prefix that holds them all (a /22 for
// 1,000 nodes), aligned, from the first pool where one is free. More than
// a pool holds is ErrSubnetFull.
func PickSubnetFor(inUse []netip.Prefix, hosts int) (netip.Prefix, error) {
	bits := 24
	for bits > 0 && hostCount(netip.PrefixFrom(netip.IPv4Unspecified(), bits)) < uint64(hosts) {
		bits--
	}
	tried := false
	for _, pool := range SubnetPools {
		if bits < pool.Bits() {
			continue
		}
		tried = true
		base := u32(pool.Masked().Addr())
		step := uint32(1) << (32 - bits)
		for i := uint32(0); i < 1<<(bits-pool.Bits()); i++ {
			cand := netip.PrefixFrom(addr4(base+i*step), bits)
			free := true
			for _, u := range inUse {
				if u.IsValid() && u.Bits() > 0 && u.Addr().Is4() && u.Overlaps(cand) {
					free = false
					break
				}
			}
			if free {
				return cand, nil
			}
		}
	}
	if !tried {
		return netip.Prefix{}, fmt.Errorf("spec: %w: %d addresses need a /%d, larger than every pool of %v (give a subnet)",
			ErrSubnetFull, hosts, bits, SubnetPools)
	}
	return netip.Prefix{}, fmt.Errorf("spec: %w: every /%d of %v is in use", ErrNoSubnet, bits, SubnetPools)
}

// SubnetPools are the ranges PickSubnet takes /24s from, in order.
var SubnetPools = []netip.Prefix{
	netip.MustParsePrefix("10.77.0.0/16"),
	netip.MustParsePrefix("10.78.0.0/16"),
	netip.MustParsePrefix("172.30.0.0/16"),
}

// place assigns a host to every node without one (see Resolve).
func (t *Topology) place() {
	if len(t.Hosts) == 0 {
		return
	}
	load := map[string]int{}
	for _, n := range t.Nodes {
		if n.Host != "" {
			load[n.Host]++
		}
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		if n.Host != "" {
			continue
		}
		best := t.Hosts[0]
		for _, h := range t.Hosts[1:] {
			if load[h] < load[best] {
				best = h
			}
		}
		n.Host = best
		load[best]++
	}
}
