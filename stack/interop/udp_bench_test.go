package interop

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack"
	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/link/afpacket"
)

// udpBenchWindow is the most datagrams a stream sender keeps ahead of what
// its receiver has taken: the receiver's credit. It is a quarter of the
// user-level socket's default ring and 1.5 MB at 1472 B, under the
// receiving link's 4 MiB kernel buffer (GSO skbs' truesize included), so
// a receiver that keeps up never drops, and a sender that outruns its
// receiver waits for it instead of losing datagrams counted as sent.
const udpBenchWindow = stack.DefaultUDPQueueLen / 4

// udpBenchBatch is how many datagrams each end hands its stack per call:
// a whole super-frame of 64 B datagrams (UDP_MAX_SEGMENTS, 128).
const udpBenchBatch = 128

// udpStreamPair is one direction of a UDP stream between two namespaces
// through a bridge: send writes one batch of datagrams (each stamped with
// its sequence number in the first 8 bytes), recv blocks for the next
// batch and returns how many datagrams it held.
type udpStreamPair struct {
	send func(seq uint64, n int) error
	recv func() (int, error)
	// drops is what the receiving side counted as dropped (socket queue
	// full); nil when it cannot tell.
	drops func() uint64
}

// userStream connects two of our stacks through a bridge: sendmsg of UDP
// GSO super-frames (runs of up to 128 equal datagrams) by the sender, the
// stack's batch API on both ends.
func userStream(b *testing.B, size int) udpStreamPair { return userStreamRead(b, size, false) }

// userViewsStream is userStream with a receiver that reads views into the
// socket's ring (ReadViews) instead of copying datagrams out.
func userViewsStream(b *testing.B, size int) udpStreamPair { return userStreamRead(b, size, true) }

func userStreamRead(b *testing.B, size int, views bool) udpStreamPair {
	a, c, la, lc := endpoints(b, true, "u")
	sa := startStackTB(b, a, "a0", la.Attrs().HardwareAddr, userAddr, afpacket.Options{})
	sc := startStackTB(b, c, "b0", lc.Attrs().HardwareAddr, user2Addr, afpacket.Options{})
	rx, err := sc.ListenUDP(netip.AddrPortFrom(user2Addr.Addr(), 5201))
	if err != nil {
		b.Fatal(err)
	}
	tx, err := sa.DialUDP(netip.AddrPort{}, netip.AddrPortFrom(user2Addr.Addr(), 5201))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tx.Close(); rx.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sa.Ping(ctx, user2Addr.Addr(), 56); err != nil { // resolves ARP both ways
		b.Fatal(err)
	}
	out := make([]stack.Message, udpBenchBatch)
	for i := range out {
		out[i].Buf = make([]byte, size)
	}
	in := make([]stack.Message, udpBenchBatch)
	for i := range in {
		in[i].Buf = make([]byte, 2048)
	}
	vs := make([]stack.View, udpBenchBatch)
	return udpStreamPair{
		send: func(seq uint64, n int) error {
			for i := range out[:n] {
				binary.LittleEndian.PutUint64(out[i].Buf, seq+uint64(i))
			}
			_, err := tx.WriteBatch(out[:n])
			return err
		},
		recv: func() (int, error) {
			if views {
				n, err := rx.ReadViews(vs)
				for i := range vs[:n] {
					_ = binary.LittleEndian.Uint64(vs[i].Payload)
				}
				rx.Release()
				return n, err
			}
			n, err := rx.ReadBatch(in)
			for i := range in[:n] {
				_ = binary.LittleEndian.Uint64(in[i].Buf)
			}
			return n, err
		},
		drops: func() uint64 { return sc.Stats().Drops[engine.DropSocketQueueFull] },
	}
}

// Kernel UDP segmentation and receive offload (include/uapi/linux/udp.h).
const (
	solUDP     = 17
	udpSegment = 103
	udpGRO     = 104
)

// kernelStream connects two kernel UDP sockets at their best: the sender
// writes runs of up to 44 (1472 B) or 128 (64 B) datagrams as one UDP_SEGMENT
// send, the receiver takes coalesced super-frames with UDP_GRO and 64 MiB
// buffers.
func kernelStream(b *testing.B, size int) udpStreamPair {
	a, c, la, lc := endpoints(b, true, "k")
	a.AddrAdd(b, la, "10.98.0.1/24")
	c.AddrAdd(b, lc, "10.98.0.2/24")
	var rx, tx *net.UDPConn
	if err := c.Do(func() error {
		var err error
		rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 98, 0, 2), Port: 5201})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if err := a.Do(func() error {
		var err error
		tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(10, 98, 0, 2), Port: 5201})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tx.Close(); rx.Close() })
	setopt := func(c *net.UDPConn, level, opt, v int) {
		rc, err := c.SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		var serr error
		rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), level, opt, v) })
		if serr != nil {
			b.Fatalf("setsockopt %d/%d: %v", level, opt, serr)
		}
	}
	setopt(rx, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
	setopt(tx, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20)
	setopt(rx, solUDP, udpGRO, 1)
	setopt(tx, solUDP, udpSegment, size)
	perSend := min(128, 65507/size)
	out := make([]byte, perSend*size)
	in := make([]byte, 65536)
	oob := make([]byte, 64)
	return udpStreamPair{
		send: func(seq uint64, n int) error {
			for n > 0 {
				k := min(n, perSend)
				for i := range k {
					binary.LittleEndian.PutUint64(out[i*size:], seq+uint64(i))
				}
				if _, err := tx.Write(out[:k*size]); err != nil {
					return err
				}
				seq += uint64(k)
				n -= k
			}
			return nil
		},
		recv: func() (int, error) {
			n, oobn, _, _, err := rx.ReadMsgUDP(in, oob)
			if err != nil {
				return 0, err
			}
			seg := size
			if cms, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range cms {
					if m.Header.Level == solUDP && m.Header.Type == udpGRO && len(m.Data) >= 2 {
						seg = int(binary.NativeEndian.Uint16(m.Data))
					}
				}
			}
			got := 0
			for off := 0; off < n; off += seg {
				_ = binary.LittleEndian.Uint64(in[off:])
				got++
			}
			return got, nil
		},
	}
}

// BenchmarkUDPStream: one UDP stream through a bridge, our stacks (the
// copying batch API, and zero-copy views) against kernel sockets at their
// best (UDP_SEGMENT + UDP_GRO) in the same run.
// The sender stays at most udpBenchWindow datagrams ahead of what the
// receiver took, so the figure is what a receiver keeps up with; pps is
// datagrams received per second, loss what never arrived, cpu-ns/pkt and
// cpu-s/GB the process's CPU time (user + system, both ends) per datagram
// and per GB of payload.
func BenchmarkUDPStream(b *testing.B) {
	for _, size := range []int{64, 1472} {
		for _, side := range []struct {
			name string
			mk   func(*testing.B, int) udpStreamPair
		}{{"user", userStream}, {"user-views", userViewsStream}, {"kernel", kernelStream}} {
			b.Run(fmt.Sprintf("%s/size=%d", side.name, size), func(b *testing.B) {
				p := side.mk(b, size)
				total := uint64(max(b.N, 64))
				var received atomic.Uint64
				credit := make(chan struct{}, 1)
				done := make(chan error, 1)
				var waiting atomic.Bool
				go func() {
					for received.Load() < total {
						n, err := p.recv()
						if err != nil {
							done <- err
							return
						}
						received.Add(uint64(n))
						if waiting.Load() && waiting.CompareAndSwap(true, false) {
							credit <- struct{}{}
						}
					}
					done <- nil
				}()
				var ru0, ru1 unix.Rusage
				unix.Getrusage(unix.RUSAGE_SELF, &ru0)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for sent := uint64(0); sent < total; {
					for sent-received.Load() > udpBenchWindow {
						waiting.Store(true)
						if sent-received.Load() <= udpBenchWindow {
							waiting.Store(false)
							break
						}
						select {
						case <-credit:
						case <-time.After(5 * time.Second):
							// The receiver lost datagrams: what is
							// missing will never come.
							waiting.Store(false)
							if sent-received.Load() > udpBenchWindow {
								b.Fatalf("receiver stalled at %d of %d sent (drops %v)", received.Load(), sent, dropsOf(p))
							}
						}
					}
					n := int(min(udpBenchBatch, total-sent))
					if err := p.send(sent, n); err != nil {
						b.Fatal(err)
					}
					sent += uint64(n)
				}
				var err error
				select {
				case err = <-done:
				case <-time.After(2 * time.Second):
				}
				b.StopTimer()
				unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				if err != nil {
					b.Fatal(err)
				}
				got := received.Load()
				el := b.Elapsed().Seconds()
				cpu := float64(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) / 1e9
				b.ReportMetric(float64(got)/el, "pps")
				b.ReportMetric(100*float64(total-got)/float64(total), "loss%")
				b.ReportMetric(cpu*1e9/float64(got), "cpu-ns/pkt")
				b.ReportMetric(cpu/(float64(got)*float64(size)/1e9), "cpu-s/GB")
			})
		}
	}
}

func dropsOf(p udpStreamPair) any {
	if p.drops == nil {
		return "n/a"
	}
	return p.drops()
}
