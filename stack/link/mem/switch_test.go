package mem_test

import (
	"net"
	"testing"
	"time"

	"github.com/netstation/netstation/stack/link"
	"github.com/netstation/netstation/stack/link/mem"
)

func frame(dst, src net.HardwareAddr, tag byte) link.Frame {
	b := make([]byte, 60)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	b[12], b[13] = 0x88, 0xb5 // local experimental EtherType
	b[14] = tag
	return link.Frame{Buf: b}
}

// readTags returns the tags of the frames l receives within d.
func readTags(t *testing.T, l *mem.Link, want int, d time.Duration) []byte {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		var tags []byte
		fs := make([]link.Frame, 8)
		for len(tags) < want {
			n, err := l.ReadBatch(fs)
			if err != nil {
				break
			}
			for _, f := range fs[:n] {
				tags = append(tags, f.Buf[14])
			}
		}
		got <- tags
	}()
	select {
	case tags := <-got:
		return tags
	case <-time.After(d):
		return nil
	}
}

func TestSwitchFloodsThenForwards(t *testing.T) {
	sw := mem.NewSwitch(mem.Options{})
	defer sw.Close()
	macs := []net.HardwareAddr{{2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}, {2, 0, 0, 0, 0, 3}}
	var ports []*mem.Link
	for _, m := range macs {
		ports = append(ports, sw.Port(m))
	}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	// A broadcasts: B and C hear it, A does not.
	if _, err := ports[0].WriteBatch([]link.Frame{frame(bcast, macs[0], 1)}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if tags := readTags(t, ports[i], 1, time.Second); len(tags) != 1 || tags[0] != 1 {
			t.Fatalf("port %d got %v, want the broadcast", i, tags)
		}
	}
	// B answers A by unicast: A was learned, so only A gets it.
	if _, err := ports[1].WriteBatch([]link.Frame{frame(macs[0], macs[1], 2)}); err != nil {
		t.Fatal(err)
	}
	if tags := readTags(t, ports[0], 1, time.Second); len(tags) != 1 || tags[0] != 2 {
		t.Fatalf("A got %v, want B's reply", tags)
	}
	if tags := readTags(t, ports[2], 1, 100*time.Millisecond); len(tags) != 0 {
		t.Fatalf("C got %v of a unicast to A", tags)
	}
	if st := sw.Stats(); st.Flooded != 1 || st.Forwarded != 1 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want 1 flooded, 1 forwarded, 0 dropped", st)
	}
}

// TestSwitchDropsOnFullQueue: a port nobody reads fills up; the switch
// drops (and counts) instead of blocking the sender.
func TestSwitchDropsOnFullQueue(t *testing.T) {
	sw := mem.NewSwitch(mem.Options{Depth: 4})
	defer sw.Close()
	a, b := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	pa := sw.Port(a)
	_ = sw.Port(b) // never read
	fs := make([]link.Frame, 20)
	for i := range fs {
		fs[i] = frame(b, a, byte(i))
	}
	done := make(chan error, 1)
	go func() { _, err := pa.WriteBatch(fs); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sender blocked behind a full port")
	}
	deadline := time.Now().Add(5 * time.Second)
	for sw.Stats().Dropped == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := sw.Stats(); st.Dropped == 0 || st.Dropped > 20 {
		t.Fatalf("stats %+v: want some of 20 frames dropped at a queue of 4", st)
	}
}
