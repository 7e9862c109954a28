package capture

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkCapture measures frames per second written to a pcap stream
// (io.Discard) while a raw socket in peer a sends 60-byte broadcast frames
// into port va as fast as it can. One op is one frame sent; the capture's
// share is reported as captured/op (1 unless the socket overflowed).
func BenchmarkCapture(b *testing.B) {
	a, _, br := fabricOf(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ready, done := make(chan struct{}), make(chan Stats, 1)
	go func() {
		st, err := Run(ctx, br.Name, "va", io.Discard, Options{Count: b.N, Ready: func() { close(ready) }})
		if err != nil {
			b.Error(err)
		}
		done <- st
	}()
	<-ready
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x88, 0xb5})
	b.ResetTimer()
	err := a.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		for range b.N {
			if err := unix.Sendto(fd, frame, 0, sa); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	// Give the capture a moment to drain, then stop it if frames were lost.
	go func() { time.Sleep(2 * time.Second); cancel() }()
	st := <-done
	b.StopTimer()
	b.ReportMetric(float64(st.Packets)/float64(b.N), "captured/op")
	b.ReportMetric(float64(st.Dropped), "socket-drops")
}
