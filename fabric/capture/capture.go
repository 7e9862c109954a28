package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
	"unsafe"

	"github.com/netstation/netstation/fabric"
	"github.com/netstation/netstation/stack/checksum"
	"golang.org/x/sys/unix"
)

// DefaultSnaplen keeps whole frames, GSO super-frames of up to 64 KiB
// included.
const DefaultSnaplen = 262144

// pollInterval and drainBatch bound how long Run takes to notice a
// cancelled context; after it, at most maxFinalDrain queued frames are
// still written.
const (
	pollInterval  = 100 * time.Millisecond
	drainBatch    = 4096
	maxFinalDrain = 1 << 16
)

// Options configure a capture.
type Options struct {
	Count   int    // stop after this many frames; 0 = until ctx ends
	Snaplen int    // bytes kept per frame; 0 = DefaultSnaplen
	Filter  string // see [Filter]; "" keeps everything
	// Ready, if set, is called once the socket is bound and filtering:
	// frames sent after it returns are seen.
	Ready func()
	// Raw writes GSO super-frames whole, as the socket saw them, instead
	// of the frames the wire carries.
	Raw bool
}

// Stats describe a finished capture.
type Stats struct {
	Packets uint64 // frames written
	Dropped uint64 // frames the kernel dropped because the socket was full
	// SuperFrames counts GSO super-frames written as the frames the wire
	// carries (Options.Raw off).
	SuperFrames uint64
}

// virtio-net header (PACKET_VNET_HDR) fields.
const (
	vnetHdrLen       = 10
	vnetFlagNeedCsum = 1
)

// Run captures frames on ifname in namespace ns ("" = the caller's) and
// writes them to w as a pcap stream (nanosecond timestamps, Ethernet link
// type) until ctx ends (a normal stop: the error is nil; frames that
// reached the port before are still written) or Count frames were written.
//
// On a port, Run sees both directions. With ifname "" it captures the whole
// namespace the way a fabric wants it: every frame once, as it enters the
// namespace through any port, so frames forwarded by a bridge are not
// written twice and the bridge device itself and loopback are left out.
//
// Frames handed over with a partial checksum (the sender used checksum
// offload, the default on veth) get their checksum completed before they
// are written, so the file shows what a receiver verifies, not the
// pseudo-header sum that travels in the frame (frames cut by Snaplen keep
// the partial sum). GSO super-frames (TCP and UDP over IPv4) are written
// as the frames the wire would carry, segmented in software (segments);
// Options.Raw writes them whole, one frame larger than the MTU, as tcpdump
// shows them.
func Run(ctx context.Context, ns, ifname string, w io.Writer, opts Options) (Stats, error) {
	st, err := run(ctx, ns, ifname, w, opts)
	if err != nil {
		where := ifname
		if where == "" {
			where = "every port"
		}
		return st, fmt.Errorf("capture: %s in %s: %w", where, nsLabel(ns), err)
	}
	return st, nil
}

func nsLabel(ns string) string {
	if ns == "" {
		return "the host namespace"
	}
	return "namespace " + ns
}

func run(ctx context.Context, ns, ifname string, w io.Writer, opts Options) (Stats, error) {
	var st Stats
	if opts.Count < 0 || opts.Snaplen < 0 {
		return st, fmt.Errorf("negative count or snaplen: %w", ErrFilter)
	}
	snaplen := opts.Snaplen
	if snaplen == 0 {
		snaplen = DefaultSnaplen
	}
	flt, err := ParseFilter(opts.Filter)
	if err != nil {
		return st, err
	}
	// The program accepts whole frames: a program that trims to the
	// snaplen would hide the original length, which MSG_TRUNC reports
	// when the receive buffer (snaplen bytes) is the one that trims.
	prog, err := flt.Program(1<<32 - 1)
	if err != nil {
		return st, err
	}
	var skip map[int]bool // ifindexes whose frames are not written (fabric mode)
	if ifname == "" {
		if skip, err = nonPorts(ns); err != nil {
			return st, err
		}
	}
	var fd int
	err = fabric.Do(ns, func() error {
		var err error
		fd, err = openSocket(ifname, prog)
		return err
	})
	if err != nil {
		return st, err
	}
	defer unix.Close(fd)

	pw := &pcapWriter{w: w}
	if err := pw.writeFileHeader(uint32(snaplen)); err != nil {
		return st, fmt.Errorf("write pcap header: %w", err)
	}
	if opts.Ready != nil {
		opts.Ready()
	}
	buf := make([]byte, vnetHdrLen+snaplen)
	oob := make([]byte, 128)
	more := func() bool { return opts.Count == 0 || st.Packets < uint64(opts.Count) }
	// drain writes up to limit frames already queued on the socket.
	drain := func(limit int) error {
		for i := 0; i < limit && more(); i++ {
			n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if errors.Is(err, unix.EAGAIN) {
				return nil
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("receive: %w", err)
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && skip != nil {
				if skip[ll.Ifindex] || ll.Pkttype == unix.PACKET_OUTGOING {
					continue
				}
			}
			if n < vnetHdrLen {
				continue
			}
			frameLen := n - vnetHdrLen // original length (MSG_TRUNC)
			kept := min(frameLen, len(buf)-vnetHdrLen)
			frame := buf[vnetHdrLen : vnetHdrLen+kept]
			at := timestamp(oob[:oobn])
			if kept == frameLen && !opts.Raw {
				if segs := segments(buf[:vnetHdrLen], frame); segs != nil {
					for _, sf := range segs {
						if !more() {
							break
						}
						c := min(len(sf), snaplen)
						if err := pw.writePacket(at, sf[:c], len(sf)); err != nil {
							return fmt.Errorf("write pcap: %w", err)
						}
						st.Packets++
					}
					st.SuperFrames++
					continue
				}
			}
			if kept == frameLen {
				completeChecksum(buf[:vnetHdrLen], frame)
			}
			if err := pw.writePacket(at, frame, frameLen); err != nil {
				return fmt.Errorf("write pcap: %w", err)
			}
			st.Packets++
		}
		return nil
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for more() {
		if ctx.Err() != nil {
			// Frames that crossed before the stop are already queued:
			// write them (a bounded number, in case traffic never stops).
			if err := drain(maxFinalDrain); err != nil {
				return st, err
			}
			break
		}
		n, err := unix.Poll(pfd, int(pollInterval/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return st, fmt.Errorf("poll: %w", err)
		}
		if n > 0 {
			if err := drain(drainBatch); err != nil {
				return st, err
			}
		}
	}
	st.Dropped = drops(fd)
	return st, nil
}

// openSocket opens the capture socket in the calling thread's namespace:
// no protocol until the filter is attached, so no unfiltered frame is
// queued, then bound to ETH_P_ALL on ifname (or every interface).
func openSocket(ifname string, prog []unix.SockFilter) (int, error) {
	ifindex := 0
	if ifname != "" {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return -1, fmt.Errorf("interface: %w", err)
		}
		ifindex = ifi.Index
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open packet socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
		return fail("SO_TIMESTAMPNS", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fail("attach filter", err)
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	return fd, nil
}

// nonPorts returns the ifindexes in ns that are not ports: loopback and
// bridge devices.
func nonPorts(ns string) (map[int]bool, error) {
	h, err := fabric.Handle(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	skip := map[int]bool{}
	for _, l := range links {
		if l.Type() == "bridge" || l.Attrs().Flags&net.FlagLoopback != 0 {
			skip[l.Attrs().Index] = true
		}
	}
	return skip, nil
}

// completeChecksum finishes a checksum the sender left partial: the field
// at csum_start+csum_offset holds the pseudo-header sum, and the checksum
// is the complement of the sum from csum_start on (RFC 1071).
func completeChecksum(vnet, frame []byte) {
	if vnet[0]&vnetFlagNeedCsum == 0 {
		return
	}
	start := int(binary.NativeEndian.Uint16(vnet[6:]))
	off := int(binary.NativeEndian.Uint16(vnet[8:]))
	if start >= len(frame) || start+off+2 > len(frame) {
		return // a malformed header: leave the frame as it is
	}
	c := checksum.Checksum(frame[start:], 0)
	if c == 0 && off == 6 {
		c = 0xffff // UDP (checksum at offset 6) sends a zero sum as all ones
	}
	binary.BigEndian.PutUint16(frame[start+off:], c)
}

func timestamp(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err == nil {
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
				ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
				return time.Unix(ts.Sec, ts.Nsec)
			}
		}
	}
	return time.Now()
}

func drops(fd int) uint64 {
	s, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0
	}
	return uint64(s.Drops)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
