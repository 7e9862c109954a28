// Package engine is the shared demux-and-checksum engine every netstation
// stack runs its packets through: the software form of a NIC fast path.
//
//   - Classifier: a small state machine per received frame
//     (Ethernet -> ARP | IPv4 -> fragment? -> ICMP | UDP | TCP) that validates
//     each layer, verifies checksums (honouring the virtio-net header) and
//     either fills a Packet or names a DropReason.
//   - FlowTable: a flow hash table from (protocol, local address/port,
//     remote address/port) to the owning endpoint, exact match first, then
//     wildcards. Lookups take no lock: the table is a copy-on-write map
//     behind an atomic.Pointer, rebuilt only when a socket is bound or
//     closed. TCP plugs in with its own protocol number.
//   - Checksums: RFC 1071 via stack/checksum, pseudo-headers, RFC 1624
//     incremental updates, and the virtio-net offload contract: trust
//     DATA_VALID, accept NEEDS_CSUM from a local kernel and complete it when
//     the frame travels on, emit NEEDS_CSUM when the link can finish it.
//   - Template: every outgoing frame is compared at a few fixed offsets with
//     its sender's template (source MAC, IP, port, protocol) before it
//     reaches the link; a mismatch is dropped and counted.
//
// Counters are atomics indexed by DropReason, so no packet takes a lock.
package engine
