package storage_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestUserStackGatheredWrites: WRITEs over two user-level stacks on a veth
// (afpacket, which gathers: the client's datagrams are its headers around
// slices of the caller's buffer, copied into each super-frame by the
// kernel) read back byte for byte, at every size around a datagram's
// edges and over several requests, from concurrent writers; the data CRC
// taken from the caller's buffer checks out at the disk (no payload
// checksum refusal, no retransmission needed). Root: namespaces.
func TestUserStackGatheredWrites(t *testing.T) {
	cst, sst := userPair(t)
	const size = 8 << 20
	srv := serveDisk(t, sst, size)
	pc, err := cst.ListenUDP(netip.AddrPortFrom(cst.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := storage.Dial(pc, net.UDPAddrFromAddrPort(netip.AddrPortFrom(sst.Addr(), diskproto.Port)), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := diskproto.DefaultDatagram - diskproto.RequestHeaderSize // the header's datagram's data
	per := diskproto.DefaultDatagram - diskproto.SegmentHeaderSize
	sizes := []int{1, first - 1, first, first + 1, first + per, first + per + 1, first + 44*per, 256 << 10, 1<<20 + 17}
	gso0 := cst.Stats().GSOFramesOut
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			region := int64(w) * (size / 4)
			for i, n := range sizes {
				off := region + int64(i*7)
				want := randomBytes(uint64(w*100+i), n)
				if _, err := c.WriteAt(ctx, want, off, false); err != nil {
					t.Errorf("writer %d: WRITE of %d bytes at %d: %v", w, n, off, err)
					return
				}
				got := make([]byte, n)
				if _, err := c.ReadAt(ctx, got, off); err != nil {
					t.Errorf("writer %d: READ of %d bytes at %d: %v", w, n, off, err)
					return
				}
				if !bytes.Equal(got, want) {
					t.Errorf("writer %d: %d bytes at %d read back different", w, n, off)
					return
				}
			}
		})
	}
	wg.Wait()
	if cst.Stats().GSOFramesOut == gso0 {
		t.Error("the client sent no GSO super-frame")
	}
	if n := srv.Stats().Errors["payload_checksum"]; n != 0 {
		t.Errorf("the disk refused %d WRITEs for their data CRC", n)
	}
	t.Logf("client %+v", c.Stats())
}

// TestReadRepliesAreSnapshots: READ replies gathered from the disk's
// mapping (no copy at the disk) are snapshots while WRITEs of the same
// range run: every READ of a range that concurrent WRITEs fill, each
// with one byte value, reads one WRITE's bytes whole, and no reply
// arrives with data its CRC does not vouch for (the disk holds the range
// against writes from its CRC pass until the reply was handed to the
// socket; without that hold, a WRITE landing between the two made the
// client count a bad reply and read again). Two user-level stacks on the
// in-memory link with GSO, no loss; no root.
func TestReadRepliesAreSnapshots(t *testing.T) {
	bed := newLossyBed(t, 4<<20)
	c := bed.dial(t)
	const n = 256 << 10 // one request: the disk's max I/O
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Go(func() {
			p := make([]byte, n)
			for v := byte(w + 1); ; v += 2 {
				select {
				case <-stop:
					return
				default:
				}
				for i := range p {
					p[i] = v
				}
				if _, err := c.WriteAt(ctx, p, 0, false); err != nil {
					t.Errorf("WRITE: %v", err)
					return
				}
			}
		})
	}
	reads := 300
	if raceEnabled {
		reads = 60
	}
	var rg sync.WaitGroup
	for range 2 {
		rg.Go(func() {
			got := make([]byte, n)
			for range reads / 2 {
				if _, err := c.ReadAt(ctx, got, 0); err != nil {
					t.Errorf("READ: %v", err)
					return
				}
				for i, b := range got {
					if b != got[0] {
						t.Errorf("a READ mixed two WRITEs: byte 0 is %d, byte %d is %d", got[0], i, b)
						return
					}
				}
			}
		})
	}
	rg.Wait()
	close(stop)
	wg.Wait()
	st, ds := c.Stats(), bed.srv.Stats()
	t.Logf("client %+v; disk: %d READ replies gathered", st, ds.GatheredReads)
	if ds.GatheredReads == 0 {
		t.Fatal("no READ reply was gathered from the mapping: the test tested nothing")
	}
	if st.BadReplies != 0 {
		t.Errorf("%d replies arrived with data their CRC did not vouch for", st.BadReplies)
	}
}

// TestFragmentedReadReplies: a client asking for READ replies in 64 KiB
// datagrams (IP-fragmented: larger than a frame, so not sent as GSO runs)
// gets them from a disk on the user-level stack, one datagram or many:
// the disk leaves those to its copying path, which fragments them.
func TestFragmentedReadReplies(t *testing.T) {
	bed := newLossyBed(t, 4<<20)
	pc, err := bed.cst.ListenUDP(netip.AddrPortFrom(bed.cst.Addr(), 0))
	if err != nil {
		t.Fatal(err)
	}
	c, err := storage.Dial(pc, bed.addr, storage.Options{Datagram: diskproto.MaxDatagram})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, n := range []int{512, 60 << 10, 256 << 10} {
		want := randomBytes(uint64(i+40), n)
		off := int64(i) << 20
		if _, err := c.WriteAt(ctx, want, off, false); err != nil {
			t.Fatalf("WRITE of %d bytes: %v", n, err)
		}
		got := make([]byte, n)
		if _, err := c.ReadAt(ctx, got, off); err != nil {
			t.Fatalf("READ of %d bytes in 64 KiB datagrams: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("READ of %d bytes in 64 KiB datagrams read back different", n)
		}
	}
	t.Logf("client %+v", c.Stats())
}
