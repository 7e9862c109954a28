package storage_test

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"

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
