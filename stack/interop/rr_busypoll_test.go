package interop

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/internal/ethtool"
)

// The "kernel-busypoll" ends of BenchmarkRR: the kernel at its best for
// latency. Blocking sockets with SO_BUSY_POLL spin in recvmsg (polling the
// veth's NAPI, so the packet is taken on the reader's own CPU) for up to
// rrPollBudget before they sleep: what a latency-minded user of kernel
// sockets turns on, and the kernel's counterpart of our readers that drive
// the link themselves. A veth receives through NAPI only with GRO on
// (Linux 5.13 and later), and hands TCP to it only with TSO off on the
// sending veth, so both ends turn GRO on and TSO off; without NAPI there is
// nothing to poll, and busyPollCheck says so instead of measuring a
// sleeping socket under the busy-poll label.

// busyPollSocket opens a blocking IPv4 socket of type typ with SO_BUSY_POLL
// set to rrPollBudget, in the namespace of the calling thread.
func busyPollSocket(typ int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUSY_POLL, int(rrPollBudget/time.Microsecond)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("SO_BUSY_POLL: %w", err)
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

func sockaddr(ap netip.AddrPort) *unix.SockaddrInet4 {
	return &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
}

// enableNAPI turns GRO on and TSO off for ifname (the calling thread's
// namespace), so the veth receives through NAPI and its peer's packets to
// it, TCP included, go through that NAPI (see package ethtool); its sockets
// can then busy-poll. TSO does nothing for 64-byte messages.
func enableNAPI(ifname string) error {
	if err := ethtool.Set(ifname, ethtool.GRO, true); err != nil {
		return fmt.Errorf("GRO on %s (veth NAPI, for busy polling): %w", ifname, err)
	}
	if err := ethtool.Set(ifname, ethtool.TSO, false); err != nil {
		return fmt.Errorf("TSO off on %s (for busy polling): %w", ifname, err)
	}
	return nil
}

// busyPollCheck fails unless the last packet fd received came through
// NAPI, which busy polling needs.
func busyPollCheck(fd int) error {
	id, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_INCOMING_NAPI_ID)
	if err != nil {
		return fmt.Errorf("SO_INCOMING_NAPI_ID: %w", err)
	}
	if id == 0 {
		return errors.New("received packets carry no NAPI id: the socket cannot busy-poll")
	}
	return nil
}

// busyPollEcho serves TCP and UDP echo of 64-byte messages on ap with
// busy-polling sockets; it returns once both are listening.
func busyPollEcho(ap netip.AddrPort) error {
	ls, err := busyPollSocket(unix.SOCK_STREAM)
	if err != nil {
		return err
	}
	unix.SetsockoptInt(ls, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(ls, sockaddr(ap)); err != nil {
		return err
	}
	if err := unix.Listen(ls, 8); err != nil {
		return err
	}
	us, err := busyPollSocket(unix.SOCK_DGRAM)
	if err != nil {
		return err
	}
	if err := unix.Bind(us, sockaddr(ap)); err != nil {
		return err
	}
	go func() {
		for {
			c, _, err := unix.Accept(ls)
			if err != nil {
				return
			}
			unix.SetsockoptInt(c, unix.SOL_SOCKET, unix.SO_BUSY_POLL, int(rrPollBudget/time.Microsecond))
			unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			go func() {
				defer unix.Close(c)
				var buf [64]byte
				for {
					if err := readFull(c, buf[:]); err != nil {
						return
					}
					if _, err := unix.Write(c, buf[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := unix.Recvfrom(us, buf, 0)
			if err != nil {
				return
			}
			unix.Sendto(us, buf[:n], 0, from)
		}
	}()
	return nil
}

// readFull reads len(p) bytes from the blocking stream socket fd.
func readFull(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Read(fd, p)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("connection closed")
		}
		p = p[n:]
	}
	return nil
}

// busyPollClient is the client end: a connected TCP socket and a UDP
// socket, both busy-polling.
type busyPollClient struct {
	tcp, udp int
	dst      unix.Sockaddr
}

func dialBusyPoll(local netip.Addr, dst netip.AddrPort) (*busyPollClient, error) {
	t, err := busyPollSocket(unix.SOCK_STREAM)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(t, sockaddr(dst)); err != nil {
		unix.Close(t)
		return nil, fmt.Errorf("connect %v: %w", dst, err)
	}
	u, err := busyPollSocket(unix.SOCK_DGRAM)
	if err != nil {
		unix.Close(t)
		return nil, err
	}
	if err := unix.Bind(u, sockaddr(netip.AddrPortFrom(local, 0))); err != nil {
		unix.Close(t)
		unix.Close(u)
		return nil, err
	}
	// A receive timeout, so a lost datagram fails the benchmark instead of
	// hanging it.
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(u, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return &busyPollClient{tcp: t, udp: u, dst: sockaddr(dst)}, nil
}

func (c *busyPollClient) Close() {
	unix.Close(c.tcp)
	unix.Close(c.udp)
}

func (c *busyPollClient) tcpRTT() (time.Duration, error) {
	var req, resp [64]byte
	t0 := time.Now()
	if _, err := unix.Write(c.tcp, req[:]); err != nil {
		return 0, err
	}
	if err := readFull(c.tcp, resp[:]); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func (c *busyPollClient) udpRTT() (time.Duration, error) {
	var req, resp [64]byte
	t0 := time.Now()
	if err := unix.Sendto(c.udp, req[:], 0, c.dst); err != nil {
		return 0, err
	}
	for {
		// read, not recvfrom: the sender is known, and Recvfrom would
		// allocate its address (two allocations per exchange that are
		// the harness's, not the kernel's).
		_, err := unix.Read(c.udp, resp[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("no answer (a lost datagram on a veth is a failure here): %w", err)
		}
		return time.Since(t0), nil
	}
}
