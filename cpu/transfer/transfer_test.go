package transfer_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/transfer"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// TestNoAnswer: an order to a disk that never answers ends when the
// context does, with ErrNoAnswer, after retransmitting.
func TestNoAnswer(t *testing.T) {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	silent, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	got := make(chan int, 1)
	go func() {
		n := 0
		buf := make([]byte, 2048)
		silent.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 1600*time.Millisecond)
	defer cancel()
	o := transfer.Order{Disk: silent.LocalAddr().(*net.UDPAddr).AddrPort(), Length: 4,
		TransferOrder: diskproto.TransferOrder{Dest: netip.MustParseAddrPort("127.0.0.1:9"), Width: 1, Height: 1, TileW: 1, TileH: 1}}
	if _, err := transfer.Run(ctx, pc, o); !errors.Is(err, transfer.ErrNoAnswer) {
		t.Fatalf("err %v, want ErrNoAnswer", err)
	}
	if n := <-got; n < 3 {
		t.Errorf("%d INFO transmissions in 1.6 s, want retransmissions after 200, 400, 800 ms", n)
	}
}
