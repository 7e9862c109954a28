package gossip

import (
	"context"
	"net"
	"net/netip"
)

// Kernel is the Network of the kernel's stack at one address: for tests,
// and for anything that gossips on kernel sockets. Every socket is bound
// to the address, and so is every dial's source.
type Kernel netip.Addr

var _ Network = Kernel{}

// Addr implements Network.
func (k Kernel) Addr() netip.Addr { return netip.Addr(k) }

// ListenPacket implements Network.
func (k Kernel) ListenPacket(port uint16) (net.PacketConn, error) {
	return net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(k.Addr(), port)))
}

// Listen implements Network.
func (k Kernel) Listen(port uint16) (net.Listener, error) {
	return net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(k.Addr(), port)))
}

// Dial implements Network.
func (k Kernel) Dial(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(k.Addr(), 0))}
	return d.DialContext(ctx, "tcp4", to.String())
}
