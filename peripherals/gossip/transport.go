package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/netstation/netstation/internal/accept"
)

// Network is what a Transport needs from a stack.
type Network interface {
	// Addr is the stack's own address: what the node advertises.
	Addr() netip.Addr
	// ListenPacket opens the UDP socket on port.
	ListenPacket(port uint16) (net.PacketConn, error)
	// Listen opens the TCP listener on port.
	Listen(port uint16) (net.Listener, error)
	// Dial opens a TCP stream to addr.
	Dial(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
}

// Errors of the transport.
var (
	ErrShutdown = errors.New("gossip: transport shut down")
	ErrAddr     = errors.New("gossip: bad address")
)

// Transport is a memberlist.NodeAwareTransport over a Network.
type Transport struct {
	net     Network
	port    uint16
	pc      net.PacketConn
	ln      net.Listener
	packets chan *memberlist.Packet
	streams chan net.Conn
	down    atomic.Bool
	wg      sync.WaitGroup

	// Counters (packets dropped because memberlist was not reading).
	PacketsIn, PacketsOut, StreamsIn, StreamsOut, Dropped atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*Transport)(nil)

// NewTransport opens port (UDP and TCP) on n and starts receiving.
func NewTransport(n Network, port uint16) (*Transport, error) {
	pc, err := n.ListenPacket(port)
	if err != nil {
		return nil, fmt.Errorf("gossip: udp port %d: %w", port, err)
	}
	ln, err := n.Listen(port)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("gossip: tcp port %d: %w", port, err)
	}
	t := &Transport{net: n, port: port, pc: pc, ln: ln,
		packets: make(chan *memberlist.Packet, 256), streams: make(chan net.Conn, 16)}
	t.wg.Add(2)
	go t.readPackets()
	go t.accept()
	return t, nil
}

func (t *Transport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, from, err := t.pc.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			if t.down.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n == 0 {
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		// memberlist answers Packet.From.String(): normalise it to a
		// plain IPv4 "a.b.c.d:port" it can parse and dial back.
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		t.PacketsIn.Add(1)
		select {
		// memberlist keeps the buffer: hand it a copy of the datagram's
		// size (gossip datagrams are small), not the 64 KiB read buffer.
		case t.packets <- &memberlist.Packet{Buf: append([]byte(nil), buf[:n]...), From: net.UDPAddrFromAddrPort(ap), Timestamp: now}:
		default:
			t.Dropped.Add(1)
		}
	}
}

func (t *Transport) accept() {
	defer t.wg.Done()
	// The stack's listener fails only when closed; should it fail
	// otherwise, gossip goes on over datagrams alone.
	_ = accept.Loop(t.ln, func(c net.Conn) {
		t.StreamsIn.Add(1)
		select {
		case t.streams <- c:
		case <-time.After(5 * time.Second): // memberlist stopped taking them
			c.Close()
			t.Dropped.Add(1)
		}
	}, accept.Options{Stopped: t.down.Load})
}

// FinalAdvertiseAddr implements memberlist.Transport: the stack's address
// and our port, unless memberlist was told otherwise.
func (t *Transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: advertise %q", ErrAddr, ip)
		}
		return net.IP(a.AsSlice()), port, nil
	}
	a := t.net.Addr().As4()
	return net.IP(a[:]), int(t.port), nil
}

func parseAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: %q", ErrAddr, s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// WriteTo implements memberlist.Transport.
func (t *Transport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.down.Load() {
		return time.Time{}, ErrShutdown
	}
	ap, err := parseAddr(addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.pc.WriteTo(b, net.UDPAddrFromAddrPort(ap))
	t.PacketsOut.Add(1)
	return time.Now(), err
}

// WriteToAddress implements memberlist.NodeAwareTransport.
func (t *Transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	return t.WriteTo(b, a.Addr)
}

// PacketCh implements memberlist.Transport.
func (t *Transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *Transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.down.Load() {
		return nil, ErrShutdown
	}
	ap, err := parseAddr(addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := t.net.Dial(ctx, ap)
	if err == nil {
		t.StreamsOut.Add(1)
	}
	return c, err
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t *Transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *Transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport: it closes the socket and the
// listener and waits for the receivers to end.
func (t *Transport) Shutdown() error {
	if t.down.Swap(true) {
		return nil
	}
	err := errors.Join(t.pc.Close(), t.ln.Close())
	t.wg.Wait()
	return err
}
