// Package capture writes what crosses a testbed's fabric to a pcap stream
// that tshark, Wireshark and tcpdump read.
//
// [Run] opens an AF_PACKET socket inside the namespace that holds the
// ports (one port, or every port of the fabric at once), filters in the
// kernel with a classic BPF program compiled from a small tcpdump-like
// expression ([ParseFilter]; libpcap is not needed), and writes each frame
// with its kernel receive timestamp. The socket uses PACKET_VNET_HDR so
// that frames sent with checksum offload, which cross veth and bridge with
// only the pseudo-header sum in their checksum field, are written with the
// checksum a receiver would verify; otherwise every UDP and TCP frame of
// a kernel or user-level peer would show as bad in Wireshark.
package capture
