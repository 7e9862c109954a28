package tcp_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/tcp"
)

// TestReadFunc: data read through the views ReadFunc lends arrives whole
// and in order, also when fn takes only part of what it is lent and when
// the views wrap around a small ring; the peer's FIN ends it with EOF.
func TestReadFunc(t *testing.T) {
	w := newWorld(t, worldOpts{tcp: tcp.Config{InitialBuffer: 16 << 10, MaxBuffer: 16 << 10}})
	c, s := w.connect(t, 81)
	// Wrapping views, deterministically: 10,000 bytes twice through a
	// 16 KiB ring, each read only once all of it arrived; fn takes only
	// 9,000 of the first, so the ring never empties (an empty ring starts
	// over at its beginning) and the rest of the first and all of the
	// second lie across the ring's end.
	var want []byte
	for round := range 2 {
		msg := pattern(10000, byte(round))
		want = append(want, msg...)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); s.Buffered() < len(want); {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d of %d bytes arrived", round, s.Buffered(), len(want))
			}
			time.Sleep(time.Millisecond)
		}
		take := len(want)
		if round == 0 {
			take = 9000
		}
		var got []byte
		n, err := s.ReadFunc(1<<20, func(a, b []byte) int {
			if round == 1 && len(b) == 0 {
				t.Errorf("round 1: views %d+%d bytes, want them across the ring's end", len(a), len(b))
			}
			got = append(append(got, a...), b...)
			return take
		})
		if err != nil || n != take || !bytes.Equal(got[:take], want[:take]) {
			t.Fatalf("round %d: %d bytes, %v; equal %v", round, n, err, bytes.Equal(got[:take], want[:take]))
		}
		want = want[take:]
	}

	// Streaming, with fn taking only part of what it is lent at times.
	data := pattern(3<<20+517, 3)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.CloseWrite()
		werr <- err
	}()
	got := make([]byte, 0, len(data))
	partial := 0
	for i := 0; ; i++ {
		max := []int{1 << 20, 1000, 7, 64 << 10}[i%4]
		n, err := s.ReadFunc(max, func(a, b []byte) int {
			if len(a)+len(b) > max {
				t.Errorf("lent %d+%d bytes, above max %d", len(a), len(b), max)
			}
			take := len(a) + len(b)
			if i%3 == 1 && take > 1 { // use only some: the rest is lent again
				take = take/2 + 1
				partial++
			}
			k := min(take, len(a))
			got = append(got, a[:k]...)
			got = append(got, b[:take-k]...)
			return take
		})
		if errors.Is(err, io.EOF) {
			if n != 0 {
				t.Fatalf("EOF with %d bytes", n)
			}
			break
		}
		if err != nil {
			t.Fatalf("ReadFunc after %d bytes: %v", len(got), err)
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		i := 0
		for i < len(got) && i < len(data) && got[i] == data[i] {
			i++
		}
		t.Fatalf("read %d of %d bytes; they differ from byte %d", len(got), len(data), i)
	}
	if partial == 0 {
		t.Error("fn never took part of what it was lent")
	}
	// Nothing used means nothing consumed, and a Read still sees EOF.
	if n, err := s.ReadFunc(10, func(a, b []byte) int { return 0 }); n != 0 || err != io.EOF {
		t.Fatalf("after EOF: %d, %v", n, err)
	}
}

// TestReadFuncZeroAllocs: lending the ring allocates nothing per read.
func TestReadFuncZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	w := newWorld(t, worldOpts{tcp: tcp.Config{MaxBuffer: 1 << 20}})
	c, s := w.connect(t, 82)
	msg := pattern(64<<10, 5)
	var sum int
	run := func() {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(msg); {
			n, err := s.ReadFunc(len(msg)-got, func(a, b []byte) int {
				sum += int(a[0])
				return len(a) + len(b)
			})
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	}
	for range 200 { // the ring grows to its largest within 3.5 MiB
		run()
	}
	if allocs := testing.AllocsPerRun(300, run); allocs != 0 {
		t.Errorf("%.2f allocations per 64 KiB read through ReadFunc", allocs)
	}
}

// fillViews copies from src into the views a and b, at most n bytes, and
// returns how many it copied.
func fillViews(a, b, src []byte, n int) int {
	n = min(n, len(a)+len(b), len(src))
	k := copy(a[:min(n, len(a))], src)
	return k + copy(b[:n-k], src[k:n])
}

// TestWriteFunc: data written into the views WriteFunc lends arrives whole
// and in order, also when fn fills only part of them and when they wrap
// around a small send ring.
func TestWriteFunc(t *testing.T) {
	w := newWorld(t, worldOpts{tcp: tcp.Config{InitialBuffer: 16 << 10, MaxBuffer: 16 << 10}})
	c, s := w.connect(t, 83)
	// Wrapping views, deterministically: 10,000 bytes twice into a 16 KiB
	// ring, the second once the first was acknowledged.
	for round := range 2 {
		msg := pattern(10000, byte(round))
		for deadline := time.Now().Add(10 * time.Second); c.Info().Unacked != 0; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d bytes still unacknowledged", round, c.Info().Unacked)
			}
			time.Sleep(time.Millisecond)
		}
		n, err := c.WriteFunc(len(msg), func(a, b []byte) int {
			if round == 1 && len(b) == 0 {
				t.Errorf("round 1: views %d+%d bytes, want them across the ring's end", len(a), len(b))
			}
			return fillViews(a, b, msg, len(msg))
		})
		if err != nil || n != len(msg) {
			t.Fatalf("round %d: WriteFunc %d, %v", round, n, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("round %d: read %v; equal %v", round, err, bytes.Equal(got, msg))
		}
	}

	// Streaming, with fn filling only part of what it is lent at times.
	data := pattern(3<<20+517, 9)
	werr := make(chan error, 1)
	go func() {
		off := 0
		for i := 0; off < len(data); i++ {
			max := []int{1 << 20, 1000, 7, 64 << 10}[i%4]
			n, err := c.WriteFunc(min(max, len(data)-off), func(a, b []byte) int {
				want := len(a) + len(b)
				if i%3 == 1 && want > 1 {
					want = want/2 + 1
				}
				return fillViews(a, b, data[off:], want)
			})
			if err != nil {
				werr <- err
				return
			}
			off += n
		}
		werr <- c.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d of %d bytes; equal %v", len(got), len(data), bytes.Equal(got, data))
	}
}

// TestReadFuncLowWater: a ReadFunc asking for much waits until an eighth
// of the ring is readable, unless the peer's FIN says no more will come;
// one asking for little gets it at once.
func TestReadFuncLowWater(t *testing.T) {
	w := newWorld(t, worldOpts{tcp: tcp.Config{InitialBuffer: 16 << 10, MaxBuffer: 16 << 10}}) // low-water mark 2 KiB
	c, s := w.connect(t, 84)
	take := func(a, b []byte) int { return len(a) + len(b) }
	if _, err := c.Write(pattern(100, 1)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ReadFunc(100, take); n != 100 || err != nil {
		t.Fatalf("ReadFunc(100): %d, %v", n, err)
	}
	if _, err := c.Write(pattern(100, 2)); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		n, _ := s.ReadFunc(1<<20, take)
		got <- n
	}()
	select {
	case n := <-got:
		t.Fatalf("ReadFunc(1 MiB) returned %d bytes, below the low-water mark", n)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := c.Write(pattern(4000, 3)); err != nil {
		t.Fatal(err)
	}
	left := 4100
	select {
	case n := <-got:
		if n < 2048 {
			t.Fatalf("ReadFunc(1 MiB) returned %d bytes", n)
		}
		left -= n
	case <-time.After(10 * time.Second):
		t.Fatal("ReadFunc(1 MiB) not woken with 4,100 bytes readable")
	}
	for left > 0 { // what the last ReadFunc left
		n, err := s.ReadFunc(left, take)
		if err != nil {
			t.Fatal(err)
		}
		left -= n
	}
	// Below the mark, the FIN wakes it.
	if _, err := c.Write(pattern(10, 4)); err != nil {
		t.Fatal(err)
	}
	go func() {
		n, _ := s.ReadFunc(1<<20, take)
		got <- n
	}()
	time.Sleep(20 * time.Millisecond)
	c.CloseWrite()
	select {
	case n := <-got:
		if n != 10 {
			t.Fatalf("after the FIN: %d bytes, want 10", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadFunc not woken by the FIN")
	}
}
