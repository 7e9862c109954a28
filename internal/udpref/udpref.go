// Package udpref is the reference the kernel baseline is held to: the
// kernel's UDP at its best, written directly on golang.org/x/sys/unix and
// nothing of ours (the shape of the kernel's own udpgso_bench_tx/rx). A
// sender writes super-datagrams of up to 128 equal datagrams (the
// kernel's UDP_MAX_SEGMENTS; 64 on a kernel that refuses 128) with one
// sendmsg each (UDP_SEGMENT cmsg, no more than 65,507 bytes); a receiver
// with UDP_GRO reads a super-frame per recvmsg and counts its datagrams
// from the UDP_GRO cmsg's segment size. Both use 64 MiB socket buffers
// (SO_RCVBUFFORCE/SO_SNDBUFFORCE) and blocking calls on threads of their
// own. bench's kernel baseline (internal/dgram) is measured against it.
package udpref

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Buffer is the sockets' receive and send buffer size.
const Buffer = 64 << 20

// maxPayload is the most one UDP_SEGMENT send may carry over IPv4.
const maxPayload = 65507

// ErrArgs is wrapped by errors about bad arguments.
var ErrArgs = errors.New("udpref: bad arguments")

// Socket is a UDP socket file descriptor.
type Socket struct{ fd int }

// Open creates a UDP socket inside the network namespace at nsPath (""
// for the caller's) bound to addr, with 64 MiB buffers and, when gro,
// UDP_GRO on.
func Open(nsPath string, addr netip.AddrPort, gro bool) (*Socket, error) {
	var fd int
	err := inNamespace(nsPath, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())})
	})
	if err != nil {
		if fd > 0 {
			unix.Close(fd)
		}
		return nil, fmt.Errorf("udpref: socket on %v: %w", addr, err)
	}
	for _, o := range []int{unix.SO_RCVBUFFORCE, unix.SO_SNDBUFFORCE} {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o, Buffer)
	}
	if gro {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("udpref: UDP_GRO: %w", err)
		}
	}
	return &Socket{fd: fd}, nil
}

// Close closes the socket.
func (s *Socket) Close() error { return unix.Close(s.fd) }

// inNamespace runs fn on a locked thread inside the namespace at path.
func inNamespace(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("restore namespace: %w", err) // the thread stays locked and dies with its goroutine
	}
	runtime.UnlockOSThread()
	return ferr
}

// Result is one side's count.
type Result struct {
	Datagrams uint64
	Bytes     uint64
	Calls     uint64 // sendmsg or recvmsg calls that moved data
	Elapsed   time.Duration
	// CPU is the side's thread's CPU time (user + system, RUSAGE_THREAD:
	// each side runs on a locked thread of its own) over the whole call,
	// so the pair's cost per datagram compares with bench's process CPU.
	CPU time.Duration
}

// threadCPU is the calling thread's CPU time so far.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BitsPerSecond is the payload rate.
func (r Result) BitsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Elapsed.Seconds()
}

// PacketsPerSecond is the datagram rate.
func (r Result) PacketsPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Datagrams) / r.Elapsed.Seconds()
}

// Send writes size-byte datagrams to dst for d, as many per sendmsg as
// UDP_SEGMENT allows, unpaced. ENOBUFS (a full queue) is retried.
func (s *Socket) Send(dst netip.AddrPort, size int, d time.Duration) (Result, error) {
	if size < 1 || size > maxPayload {
		return Result{}, fmt.Errorf("%w: size %d", ErrArgs, size)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	segs := min(128, maxPayload/size)
	buf := make([]byte, segs*size)
	// Real bytes, as the kernel's udpgso_bench_tx sends: a buffer never
	// written would be mapped to the shared zero page, and every copy
	// would read the same 4 KiB, hot in cache, as no application does.
	for i := range buf {
		buf[i] = byte(i)
	}
	var oob []byte
	if segs > 1 {
		oob = make([]byte, unix.CmsgSpace(2))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	}
	to := &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}
	var r Result
	start := time.Now()
	end := start.Add(d)
	for i := 0; ; i++ {
		if i&63 == 0 && !time.Now().Before(end) {
			break
		}
		n, err := unix.SendmsgN(s.fd, buf, oob, to, 0)
		if err != nil {
			if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if errors.Is(err, unix.EINVAL) && segs > 64 && r.Calls == 0 {
				segs, buf = 64, buf[:64*size] // an older kernel's UDP_MAX_SEGMENTS
				continue
			}
			return r, fmt.Errorf("udpref: sendmsg: %w", err)
		}
		r.Calls++
		r.Bytes += uint64(n)
		r.Datagrams += uint64((n + size - 1) / size)
	}
	r.Elapsed = time.Since(start)
	r.CPU = threadCPU() - cpu0
	return r, nil
}

// Receive counts datagrams until idle passes without one after the first
// (or until max passes without any). Elapsed runs from the first
// datagram to the last.
func (s *Socket) Receive(idle, max time.Duration) (Result, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	tv := unix.NsecToTimeval(int64(min(idle, 100*time.Millisecond)))
	if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return Result{}, fmt.Errorf("udpref: SO_RCVTIMEO: %w", err)
	}
	buf := make([]byte, 65535)
	oob := make([]byte, 64)
	var r Result
	var first, last time.Time
	begun := time.Now()
	for {
		n, oobn, _, _, err := unix.Recvmsg(s.fd, buf, oob, 0)
		now := time.Now()
		if err != nil {
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				return r, fmt.Errorf("udpref: recvmsg: %w", err)
			}
			if (!first.IsZero() && now.Sub(last) >= idle) || (first.IsZero() && now.Sub(begun) >= max) {
				break
			}
			continue
		}
		if first.IsZero() {
			first = now
		}
		last = now
		r.Calls++
		r.Bytes += uint64(n)
		seg := groSize(oob[:oobn])
		if seg <= 0 || seg >= n {
			r.Datagrams++
		} else {
			r.Datagrams += uint64((n + seg - 1) / seg)
		}
	}
	if !first.IsZero() {
		r.Elapsed = last.Sub(first)
	}
	r.CPU = threadCPU() - cpu0
	return r, nil
}

// groSize reads the UDP_GRO cmsg's segment size (0: none).
func groSize(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
			return int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	return 0
}

// LocalAddr is the address the socket is bound to.
func (s *Socket) LocalAddr() netip.AddrPort {
	sa, err := unix.Getsockname(s.fd)
	if in, ok := sa.(*unix.SockaddrInet4); ok && err == nil {
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port))
	}
	return netip.AddrPort{}
}
