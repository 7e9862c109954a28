package disk_test

import (
	"bytes"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
)

// TestBlockDevice checks the block-device methods other front ends (NBD)
// use: ranges, data, trim, the shared Authorizer, and failure after Close.
func TestBlockDevice(t *testing.T) {
	const size = 1 << 20
	s, err := disk.NewServer(disk.Config{Path: filepath.Join(t.TempDir(), "d.img"), Size: size, Authorizer: disk.OpenAccess{}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Size() != size || s.BlockSize() != disk.DefaultBlockSize || !s.OpenMode() {
		t.Fatalf("size %d, block size %d, open %v", s.Size(), s.BlockSize(), s.OpenMode())
	}
	data := bytes.Repeat([]byte("netstation"), 1000)
	if err := s.WriteAt(data, 4096, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := s.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
	}
	if err := s.Trim(4096, 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	s.ReadAt(got, 4096)
	want := bytes.Clone(data)
	clear(want[:4096])
	if !bytes.Equal(got, want) {
		t.Fatal("the trimmed range does not read back as zeros")
	}
	for _, r := range []struct {
		off int64
		n   int
	}{{size - 1, 2}, {size + 1, 0}, {-1, 1}, {1 << 62, 1}} {
		if err := s.ReadAt(make([]byte, r.n), r.off); !errors.Is(err, disk.ErrRange) {
			t.Errorf("read %d at %d: %v", r.n, r.off, err)
		}
		if err := s.WriteAt(make([]byte, r.n), r.off, false); !errors.Is(err, disk.ErrRange) {
			t.Errorf("write %d at %d: %v", r.n, r.off, err)
		}
		if err := s.Trim(r.off, r.n, false); !errors.Is(err, disk.ErrRange) {
			t.Errorf("trim %d at %d: %v", r.n, r.off, err)
		}
	}
	var capField [diskproto.CapabilitySize]byte
	capField[0] = 1
	if err := s.Authorize(&diskproto.Request{Op: diskproto.OpRead, Length: 1, Capability: capField}, &net.TCPAddr{}); !errors.Is(err, disk.ErrDenied) {
		t.Fatalf("a capability in open mode: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadAt(got, 0); !errors.Is(err, disk.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if err := s.Flush(); !errors.Is(err, disk.ErrClosed) {
		t.Fatalf("flush after Close: %v", err)
	}
}
