// Package fabric does the kernel plumbing of a testbed: named network
// namespaces, veth pairs, bridges, IPv4 addresses, link state, tbf rate
// limits, sysctls and cleanup by name prefix. It knows nothing about
// topologies; the testbed package decides names and calls it.
//
// # Namespaces and threads
//
// A network namespace belongs to an OS thread, not to a goroutine. Every
// operation that must run inside a namespace (creating it, writing a sysctl,
// opening a netlink socket, starting a child process) runs on a dedicated
// goroutine that locks its thread, switches, does the work and switches
// back. The thread is unlocked only after a successful restore; if the
// restore fails the goroutine ends still locked, so the Go runtime destroys
// the thread instead of reusing it. That goroutine never runs on the
// process's main thread (a locked goroutine ending there would wedge the
// main thread in the namespace and keep the namespace alive), so Do is safe
// to call from anywhere, including a goroutine that holds LockOSThread.
//
// Netlink requests go through per-namespace handles (sockets opened inside
// the namespace), which work from any goroutine. A [Session] caches one
// handle and one namespace file descriptor per namespace; the package-level
// functions open a short-lived Session per call. Open sockets and file
// descriptors keep a namespace alive after its deletion, so a Session drops
// its cache entry before it deletes a namespace, checks on every use that
// the cached namespace is still the one mounted under that name, and must be
// closed.
//
// Names are created like `ip netns add` does: a file under /run/netns with
// the namespace bind-mounted on it, /run/netns itself made a shared mount so
// a deletion propagates into mount namespaces made by `ip netns exec`.
// Namespaces made by [CreateNetns] have their loopback up and IPv6 off
// (net.ipv6.conf.{all,default}.disable_ipv6=1), so no interface born in them
// ever gets an IPv6 address.
//
// # IPv6
//
// IPv6 is written off (disable_ipv6=1, from a thread inside the namespace)
// on every veth end and bridge this package creates before the link goes
// up, so a port never sends router solicitations, MLD reports or DAD probes
// that a user-level stack reading the port would have to skip.
//
// # Offloads: defaults are kept
//
// The user-level stacks read and write the ports with AF_PACKET and
// PACKET_VNET_HDR. With the default features of veth and bridge (tx
// checksum offload, scatter-gather, TSO/GSO on; GRO off), frames cross veth
// and bridge with their checksum still partial and GSO super-frames cross
// unsegmented; the receiver learns both from the virtio-net header
// (NEEDS_CSUM with csum_start/csum_offset, gso_type/gso_size). This was
// measured at 43-45 Gbit/s for 65,000-byte frames (see FACTS.md). Turning
// the offloads off would make the kernel checksum and segment in software
// on the sender's CPU for frames that the receiving stack can take whole,
// and would gain nothing for our own stacks. So fabric leaves offloads at
// their defaults, which sets the contract for stack/link: open packet
// sockets with PACKET_VNET_HDR, accept NEEDS_CSUM and GSO frames up to
// 64 KiB (TPACKET_V3 blocks, not 2 KiB frames), and segment or verify them
// itself. A reader without the vnet header (tcpdump) sees frames with
// partial checksums; that is cosmetic. A tbf qdisc segments GSO frames
// larger than its burst in software before shaping them, which is correct.
//
// # VXLAN
//
// A testbed spanning hosts joins each bridge to the same bridge on the
// other hosts with a VXLAN device ([Session.CreateVXLAN]): born in the
// fabric namespace, created by a netlink socket in the underlay namespace,
// where the kernel keeps its UDP socket. Learning is off; the forwarding
// database is set whole by [Session.SyncFDB] (default entries to every
// peer for flooding, one per remote MAC), which callers repeat periodically
// so lost or stale entries heal.
//
// # Errors
//
// Errors carry the operation and the object ("fabric: create veth
// v-disk0: ..."). Callers distinguish [ErrNotFound], [ErrExists] and
// [ErrInvalid] with errors.Is. Creation is create-if-missing and deletion is
// delete-if-present wherever that makes sense.
package fabric
