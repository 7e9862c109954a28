// Package stack is netstation's user-level IPv4 stack: Ethernet II, ARP,
// IPv4 with fragmentation and reassembly, ICMP echo and port-unreachable,
// UDP sockets that satisfy net.PacketConn and net.Conn, and TCP (stack/tcp,
// glued in by tcp.go: ListenTCP returns a net.Listener, DialTCP a net.Conn),
// on top of any link.Link (an AF_PACKET or AF_XDP veth port, or the
// in-memory pair).
//
// Every frame goes through the shared engine (stack/engine): one receive
// goroutine per stack reads the link in batches, classifies each frame,
// looks its flow up without a lock and copies the payload once into the
// owning socket's preallocated ring; senders build frames in per-socket
// buffers, the engine checks them against the socket's transmit template
// and fills or offloads checksums, and the batch goes to the link in one
// call. The steady state allocates nothing per packet.
//
// With link.CapVNetHdr, checksums are left to the kernel (NEEDS_CSUM);
// with link.CapGSO, a batch of equal-sized datagrams to one peer leaves as
// one UDP_L4 super-frame and received super-frames are split back into
// datagrams, and TCP sends leave as TCPv4 super-frames of up to 64 KiB.
package stack
