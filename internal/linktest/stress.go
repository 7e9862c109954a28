package linktest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/stack/link"
)

// Stress payload layout, at the start of an EtherTest frame's payload or a
// UDP datagram's: sequence number, sender, a spare byte, the payload's own
// length, then a pattern derived from all three.
const (
	stressHdr   = 8
	stressPort  = 0x5354 // UDP source and destination port of stress datagrams
	udpPayload  = 42     // Ethernet + IPv4 + UDP headers
	etherTestPl = 14
)

// ErrStressPayload: a delivered frame's stress payload is not what a sender
// wrote (torn, stale or mixed bytes).
var ErrStressPayload = errors.New("linktest: corrupt stress payload")

// FillStress writes the stress payload of sender's frame seq into p.
func FillStress(p []byte, sender uint8, seq uint32) {
	binary.BigEndian.PutUint32(p[0:], seq)
	p[4], p[5] = sender, 0
	binary.BigEndian.PutUint16(p[6:], uint16(len(p)))
	x := seq*2654435761 + uint32(sender)*40503 + uint32(len(p))
	for i := stressHdr; i < len(p); i++ {
		p[i] = byte(x>>24) ^ byte(i)
		x = x*1103515245 + 12345
	}
}

// CheckStress verifies a stress payload and returns its sender and sequence
// number.
func CheckStress(p []byte) (sender uint8, seq uint32, err error) {
	if len(p) < stressHdr {
		return 0, 0, fmt.Errorf("%w: %d bytes", ErrStressPayload, len(p))
	}
	seq, sender = binary.BigEndian.Uint32(p), p[4]
	if n := int(binary.BigEndian.Uint16(p[6:])); n != len(p)&0xffff || p[5] != 0 {
		return sender, seq, fmt.Errorf("%w: sender %d seq %d: length field %d, payload %d", ErrStressPayload, sender, seq, n, len(p))
	}
	x := seq*2654435761 + uint32(sender)*40503 + uint32(len(p))
	for i := stressHdr; i < len(p); i++ {
		if p[i] != byte(x>>24)^byte(i) {
			return sender, seq, fmt.Errorf("%w: sender %d seq %d len %d: byte %d", ErrStressPayload, sender, seq, len(p), i)
		}
		x = x*1103515245 + 12345
	}
	return sender, seq, nil
}

// stressPayload returns the stress payload of a stress frame, or nil.
func stressPayload(b []byte) []byte {
	if IsTest(b) {
		return b[etherTestPl:]
	}
	if len(b) >= udpPayload+stressHdr && binary.BigEndian.Uint16(b[12:]) == 0x0800 && b[23] == 17 &&
		binary.BigEndian.Uint16(b[34:]) == stressPort && binary.BigEndian.Uint16(b[36:]) == stressPort {
		return b[udpPayload:]
	}
	return nil
}

// stressSizes is the frame mix each sender cycles through: minimum-size,
// odd, full-MTU frames and UDP_L4 GSO super-frames (negative: total size).
var stressSizes = []int{60, 1514, 61, 1514, 300, 1514, 1000, 1514, -65000, 60, 1514, 1513, 64, 1514, -20000, 1514}

// StressResult is what Stress saw.
type StressResult struct {
	Sent, Received, GSOReceived uint64
}

// Stress blasts frames from tx to rx for d: one sender per CPU (each pinned
// to its CPU so its frames enter the peer's backlog in order), each sending
// a mix of sizes including GSO super-frames whose payloads carry a sender
// id, a sequence number and a pattern. A reader on rx verifies every frame
// it delivers: payload intact, sequence strictly increasing per sender (no
// duplicate, no frame from the past). Then it checks that 50 lone frames,
// sent one at a time, each arrive within bound. dst and src are rx's and
// tx's MAC addresses. rx is read only by Stress until it returns.
func Stress(t testing.TB, tx, rx link.Link, dst, src net.HardwareAddr, d, bound time.Duration) StressResult {
	t.Helper()
	senders := min(runtime.NumCPU(), 4)
	var res StressResult
	var (
		mu      sync.Mutex
		errs    []error
		lastSeq [256]int64
		arrived = make(chan uint32, 1)   // lone frames' sequence numbers
		flushed = make(chan struct{}, 1) // a drain marker came through
		stopRx  atomic.Bool
		reads   atomic.Uint64 // frames read so far, for a failed drain's message
	)
	for i := range lastSeq {
		lastSeq[i] = -1
	}
	fail := func(err error) {
		mu.Lock()
		if len(errs) < 10 {
			errs = append(errs, err)
		}
		mu.Unlock()
	}
	const lone = 200   // sender id of the lone frames
	const marker = 201 // sender id of the drain markers
	rdone := make(chan struct{})
	go func() {
		defer close(rdone)
		frames := make([]link.Frame, 64)
		for !stopRx.Load() {
			n, err := rx.ReadBatch(frames)
			if err != nil {
				if !errors.Is(err, link.ErrClosed) {
					fail(fmt.Errorf("ReadBatch: %w", err))
				}
				return
			}
			reads.Add(uint64(n))
			for _, f := range frames[:n] {
				p := stressPayload(f.Buf)
				if p == nil {
					continue
				}
				sender, seq, err := CheckStress(p)
				if err != nil {
					fail(err)
					continue
				}
				res.Received++
				if f.VNet.GSOType != link.GSONone {
					res.GSOReceived++
				}
				if int64(seq) <= lastSeq[sender] {
					fail(fmt.Errorf("sender %d: seq %d after %d (duplicate or from the past)", sender, seq, lastSeq[sender]))
				}
				lastSeq[sender] = int64(seq)
				switch sender {
				case lone:
					select {
					case arrived <- seq:
					default:
					}
				case marker:
					select {
					case flushed <- struct{}{}:
					default:
					}
				}
			}
		}
	}()

	var stop atomic.Bool
	var sent atomic.Uint64
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The thread stays locked: it exits with the goroutine, so its
			// affinity dies with it.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(s % runtime.NumCPU())
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				fail(fmt.Errorf("sched_setaffinity: %w", err))
				return
			}
			batch := make([]link.Frame, len(stressSizes))
			for i, size := range stressSizes {
				if size < 0 {
					batch[i] = UDPFrame(dst, src, [4]byte{10, 9, 0, 1}, [4]byte{10, 9, 0, 2}, stressPort, stressPort, make([]byte, -size-udpPayload), true, 1472)
				} else {
					batch[i].Buf = Frame(dst, src, size, 0)
				}
			}
			var seq uint32
			for !stop.Load() {
				for i := range batch {
					b := batch[i].Buf
					if stressSizes[i] < 0 {
						FillStress(b[udpPayload:], uint8(s), seq)
					} else {
						FillStress(b[etherTestPl:], uint8(s), seq)
					}
					seq++
				}
				n, err := tx.WriteBatch(batch)
				sent.Add(uint64(n))
				if err != nil {
					fail(fmt.Errorf("sender %d: WriteBatch: %w", s, err))
					return
				}
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	res.Sent = sent.Load()
	// The lone frames come only after the receiver has drained the blast:
	// one sent while its socket is still full would be dropped by the
	// kernel, and the check is for frames held back, not for drops. A
	// marker frame read means everything sent before it was (the queue is
	// in order); markers sent into a full queue are lost, so one goes
	// every 100 ms until one arrives. (Waiting until reads stopped for
	// 100 ms took a reader the scheduler held back for that long as
	// drained: "lone frame 0 did not arrive within 5s" under -race.)
	drained := false
	for i, deadline := uint32(0), time.Now().Add(30*time.Second); !drained && time.Now().Before(deadline); i++ {
		f := []link.Frame{{Buf: Frame(dst, src, 60, 0)}}
		FillStress(f[0].Buf[etherTestPl:], marker, i)
		if _, err := tx.WriteBatch(f); err != nil {
			fail(fmt.Errorf("drain marker %d: %w", i, err))
			break
		}
		select {
		case <-flushed:
			drained = true
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !drained {
		fail(fmt.Errorf("no drain marker arrived in 30 s after the blast (%d frames read)", reads.Load()))
	}

	for i := uint32(0); i < 50; i++ {
		f := []link.Frame{{Buf: Frame(dst, src, 60+int(i)*29, 0)}}
		FillStress(f[0].Buf[etherTestPl:], lone, i)
		if _, err := tx.WriteBatch(f); err != nil {
			fail(fmt.Errorf("lone frame %d: %w", i, err))
			break
		}
		timeout := time.After(bound)
		got := false
		for !got {
			select {
			case seq := <-arrived:
				got = seq == i
			case <-timeout:
				fail(fmt.Errorf("lone frame %d did not arrive within %v", i, bound))
				got = true
				i = 50 // give up the rest
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	stopRx.Store(true)
	rx.Close()
	<-rdone
	for _, err := range errs {
		t.Error(err)
	}
	if res.Received == 0 || res.GSOReceived == 0 {
		t.Errorf("received %d frames, %d GSO", res.Received, res.GSOReceived)
	}
	return res
}
