package tcp

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/engine"
	"github.com/netstation/netstation/stack/header"
)

// fakeNet is a Network that keeps the last segment it was asked to send.
type fakeNet struct {
	mu    sync.Mutex
	last  []byte
	drops [engine.NumDropReasons]int
}

func (n *fakeNet) LocalAddr() [4]byte { return [4]byte{10, 0, 0, 1} }
func (n *fakeNet) MTU() int           { return 1500 }
func (n *fakeNet) GSO() bool          { return false }
func (n *fakeNet) Drop(r engine.DropReason) {
	n.mu.Lock()
	n.drops[r]++
	n.mu.Unlock()
}
func (n *fakeNet) NewRoute([4]byte, uint16) (Route, error) { return fakeRoute{n}, nil }

type fakeRoute struct{ n *fakeNet }

func (r fakeRoute) Output(segs []Segment) error {
	r.n.mu.Lock()
	s := segs[len(segs)-1]
	r.n.last = append(r.n.last[:0], s.Buf[Headroom:]...)
	r.n.mu.Unlock()
	return nil
}
func (fakeRoute) Close() {}

var peer = [4]byte{10, 0, 0, 2}

func segment(seq, ack uint32, flags uint8, opts header.TCPOptions, payload []byte) []byte {
	f := header.TCPFields{SrcPort: 1234, DstPort: 80, Seq: seq, Ack: ack, Flags: flags, Window: 1000, Opts: opts}
	b := make([]byte, header.TCPMinimumSize+header.TCPOptionsSize(&opts)+len(payload))
	hl := header.TCP(b).Encode(&f)
	copy(b[hl:], payload)
	return b
}

// FuzzTCPInput feeds random segments to a listener and to an established
// connection: header and option parsing, then the state machine. The
// input is a list of segments, each prefixed by its length; a segment's
// first byte picks whether its sequence and acknowledgment numbers are
// taken as offsets from the connection's (to reach deep states) and
// whether it goes to the connection's 4-tuple.
func FuzzTCPInput(f *testing.F) {
	data := segment(0, 0, header.TCPFlagACK|header.TCPFlagPSH, header.TCPOptions{}, []byte("hello"))
	fin := segment(5, 0, header.TCPFlagACK|header.TCPFlagFIN, header.TCPOptions{}, nil)
	rst := segment(0, 0, header.TCPFlagRST, header.TCPOptions{}, nil)
	sack := segment(100, 0, header.TCPFlagACK, header.TCPOptions{HasTS: true, TSVal: 9, NumSACK: 1,
		SACK: [4]header.SACKBlock{{Start: 1, End: 2}}}, []byte("ooo"))
	pack := func(segs ...[]byte) []byte {
		var out []byte
		for _, s := range segs {
			out = append(out, byte(len(s)+1), 3)
			out = append(out, s...)
		}
		return out
	}
	f.Add(pack(data, fin))
	f.Add(pack(rst))
	f.Add(pack(sack, data))
	f.Add(pack(segment(0, 0, header.TCPFlagSYN, header.TCPOptions{MSS: 1}, nil)))
	f.Add([]byte{0xff, 0, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		n := &fakeNet{}
		p := New(n, Config{TimeWait: time.Millisecond, MinRTO: time.Millisecond, MaxBuffer: 8192, InitialBuffer: 4096})
		defer p.Close()
		l, err := p.Listen(netipAddrPort(80))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		const irs = 1000
		p.Deliver(peer, n.LocalAddr(), segment(irs, 0, header.TCPFlagSYN, header.TCPOptions{MSS: 1460, HasWS: true, WS: 2, HasTS: true, TSVal: 1, SACKPermitted: true}, nil), 0)
		n.mu.Lock()
		iss := header.TCP(n.last).Seq()
		n.mu.Unlock()
		p.Deliver(peer, n.LocalAddr(), segment(irs+1, iss+1, header.TCPFlagACK, header.TCPOptions{HasTS: true, TSVal: 2}, nil), 0)
		c, _ := l.AcceptTCP()
		for len(in) >= 2 {
			size := int(in[0])
			mode := in[1]
			in = in[2:]
			if size > len(in) {
				size = len(in)
			}
			seg := append([]byte(nil), in[:size]...)
			in = in[size:]
			if len(seg) >= header.TCPMinimumSize {
				if mode&1 != 0 {
					binary.BigEndian.PutUint16(seg[0:], 1234)
					binary.BigEndian.PutUint16(seg[2:], 80)
				}
				if mode&2 != 0 {
					binary.BigEndian.PutUint32(seg[4:], irs+1+binary.BigEndian.Uint32(seg[4:])%8192)
					binary.BigEndian.PutUint32(seg[8:], iss+binary.BigEndian.Uint32(seg[8:])%8192)
				}
			}
			p.Deliver(peer, n.LocalAddr(), seg, 0)
			if c != nil && mode&4 != 0 {
				c.SetReadDeadline(time.Now())
				c.Read(make([]byte, 100))
				c.SetWriteDeadline(time.Now().Add(time.Millisecond))
				c.Write([]byte("data"))
			}
			if c != nil && mode&8 != 0 {
				c.CloseWrite()
			}
		}
		if c != nil {
			c.Close()
		}
	})
}

func netipAddrPort(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), port)
}
