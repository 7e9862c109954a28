package iperf3

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// udpTest is a UDP test's streams on one socket, told apart by the
// client's address.
type udpTest struct {
	conn    DatagramConn
	p       *params
	peers   []netip.AddrPort
	index   map[netip.AddrPort]int
	st      []udpStream
	stopped atomic.Bool
	sent    atomic.Uint64 // over all streams, for -n and -k
	wg      sync.WaitGroup
}

// udpStream is one stream's figures: a receiver's (iperf_udp_recv) or a
// sender's.
type udpStream struct {
	bytes       uint64
	packets     int64 // receiver: the highest sequence number; sender: datagrams sent
	lost        int64
	outOfOrder  int64
	jitter      float64 // seconds (RFC 1889 A.8)
	prevTransit float64
}

// accept runs iperf3's UDP stream set-up: each stream's first datagram,
// from a new address, is answered, which tells the client the server
// knows it.
// The caller sets the socket's read deadline.
func (u *udpTest) accept(n int) error {
	u.index = make(map[netip.AddrPort]int, n)
	defer u.conn.SetReadDeadline(time.Time{})
	buf := make([]byte, maxUDPBlockSize)
	var reply [4]byte
	binary.NativeEndian.PutUint32(reply[:], udpConnectReply)
	for len(u.peers) < n {
		m, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return fmt.Errorf("iperf3: %d of %d UDP streams arrived: %w", len(u.peers), n, err)
		}
		if m != 4 {
			continue // a stream announces itself with one host-order int
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if _, ok := u.index[from]; !ok {
			u.index[from] = len(u.peers)
			u.peers = append(u.peers, from)
		}
		if _, err := u.conn.WriteToUDPAddrPort(reply[:], from); err != nil {
			return fmt.Errorf("iperf3: UDP stream reply: %w", err)
		}
	}
	u.st = make([]udpStream, n)
	return nil
}

func (u *udpTest) start(t0 time.Time) runner {
	if u.p.Reverse {
		for i := range u.peers {
			u.wg.Add(1)
			go u.send(i, t0)
		}
	} else {
		u.wg.Add(1)
		go u.receive()
	}
	return u
}

func (u *udpTest) header() int {
	if u.p.Counters64 {
		return udpHeader64
	}
	return udpHeader32
}

// receive counts the datagrams of every stream until stop.
func (u *udpTest) receive() {
	defer u.wg.Done()
	buf := make([]byte, maxUDPBlockSize)
	hdr := u.header()
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if u.stopped.Load() {
			return
		}
		if err != nil {
			var te interface{ Timeout() bool }
			if errors.As(err, &te) && te.Timeout() {
				continue
			}
			return
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		i, ok := u.index[from]
		if !ok || n < hdr {
			continue // a stranger, or a late set-up datagram
		}
		now := time.Now()
		b := buf[:n]
		sec, usec := binary.BigEndian.Uint32(b[0:]), binary.BigEndian.Uint32(b[4:])
		var seq int64
		if u.p.Counters64 {
			seq = int64(binary.BigEndian.Uint64(b[8:]) & math.MaxInt64)
		} else {
			seq = int64(binary.BigEndian.Uint32(b[8:]))
		}
		s := &u.st[i]
		first := s.bytes == 0
		s.bytes += uint64(n)
		if seq >= s.packets+1 {
			if seq > s.packets+1 {
				s.lost += seq - 1 - s.packets
			}
			s.packets = seq
		} else {
			s.outOfOrder++
			if s.lost > 0 {
				s.lost-- // it was counted lost when the gap appeared
			}
		}
		sent := float64(sec) + float64(usec)/1e6
		transit := float64(now.UnixNano())/1e9 - sent
		if first {
			s.prevTransit = transit
		}
		d := math.Abs(transit - s.prevTransit)
		s.prevTransit = transit
		s.jitter += (d - s.jitter) / 16
	}
}

// send sends stream i's datagrams, paced to the client's bandwidth.
func (u *udpTest) send(i int, t0 time.Time) {
	defer u.wg.Done()
	s := &u.st[i]
	to := u.peers[i]
	buf := make([]byte, u.p.Len)
	rate := float64(u.p.Bandwidth) / 8 // bytes per second; 0 unlimited
	for !u.stopped.Load() {
		if rate > 0 {
			due := t0.Add(time.Duration(float64(s.bytes) / rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(max(wait, time.Millisecond)) // a burst per wake-up
				continue
			}
		}
		if lim := u.p.limit(); lim > 0 && u.sent.Load() >= lim {
			return
		}
		now := time.Now()
		binary.BigEndian.PutUint32(buf[0:], uint32(now.Unix()))
		binary.BigEndian.PutUint32(buf[4:], uint32(now.Nanosecond()/1000))
		seq := s.packets + 1
		if u.p.Counters64 {
			binary.BigEndian.PutUint64(buf[8:], uint64(seq))
		} else {
			binary.BigEndian.PutUint32(buf[8:], uint32(seq))
		}
		n, err := u.conn.WriteToUDPAddrPort(buf, to)
		if err != nil {
			// A full queue (ENOBUFS) or a refused datagram (the client
			// went away): back off instead of spinning.
			time.Sleep(time.Millisecond)
			continue
		}
		s.packets = seq
		s.bytes += uint64(n)
		u.sent.Add(uint64(n))
	}
}

func (u *udpTest) stop(elapsed time.Duration) results {
	u.stopped.Store(true)
	u.conn.SetReadDeadline(time.Unix(1, 0))
	u.wg.Wait()
	res := results{Streams: make([]streamResult, len(u.st))}
	for i, s := range u.st {
		r := streamResult{ID: streamID(i), Bytes: s.bytes, Retransmits: -1, Packets: s.packets,
			EndTime: elapsed.Seconds()}
		if !u.p.Reverse {
			r.Jitter, r.Errors = s.jitter, s.lost
		}
		res.Streams[i] = r
	}
	return res
}
