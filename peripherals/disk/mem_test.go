package disk

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// memDir is a tmpfs directory when the machine has one (a testbed's disks
// live on tmpfs, where a read fault on a hole allocates a page), else the
// test's temporary directory.
func memDir(t *testing.T) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "disktest")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func newMapped(t *testing.T, path string, size int64) *Server {
	t.Helper()
	s, err := NewServer(Config{Path: path, Size: size, Authorizer: OpenAccess{}})
	if err != nil {
		t.Fatal(err)
	}
	if s.mem.b == nil {
		t.Fatal("backing file not mapped")
	}
	return s
}

// TestMappedHoles: the mapped backing file reads holes through the file,
// so reading an unwritten device allocates nothing (through a shared
// mapping of a tmpfs file every page read would be allocated); written
// pages, and after a reopen the file's extents, are read through the
// mapping; a TRIM makes its whole pages holes again.
func TestMappedHoles(t *testing.T) {
	const size = 16 << 20
	path := filepath.Join(memDir(t), "d.img")
	s := newMapped(t, path, size)
	p := make([]byte, size)
	if err := s.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if a := allocated(t, path); a != 0 {
		t.Fatalf("reading an unwritten device allocated %d bytes", a)
	}
	data := bytes.Repeat([]byte{0xa5, 0x5a, 1, 2, 3}, 300_000)[:1<<20+100]
	const at = 4<<20 + 50 // not page-aligned: the pages at both ends are held too
	if err := s.WriteAt(data, at, false); err != nil {
		t.Fatal(err)
	}
	if !s.allHeld(at, int64(len(data))) || s.allHeld(0, 4096) || s.allHeld(at+int64(len(data))+4096, 4096) {
		t.Fatal("held bitmap does not match the write")
	}
	got := make([]byte, len(data))
	if err := s.ReadAt(got, at); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
	}
	// Written again, now through the mapping (every page held).
	data[7], data[len(data)-1] = 77, 99
	if err := s.WriteAt(data, at, false); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadAt(got, at); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back the second write: %v, equal %v", err, bytes.Equal(got, data))
	}
	if err := s.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if a := allocated(t, path); a > int64(len(data))+2*4096 {
		t.Fatalf("after a 1 MiB write and a read of everything: %d bytes allocated", a)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = newMapped(t, path, size)
	defer s.Close()
	if !s.allHeld(at, int64(len(data))) || s.allHeld(0, 4096) || s.allHeld(12<<20, 4096) {
		t.Fatal("held bitmap at open does not match the file's extents")
	}
	if err := s.ReadAt(got, at); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back after reopening: %v", err)
	}
	if err := s.Trim(4<<20, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if s.allHeld(4<<20, 4096) || s.allHeld(5<<20-4096, 4096) || !s.allHeld(5<<20, 4096) {
		t.Fatal("TRIM did not clear the pages it punched whole, or cleared others")
	}
	if err := s.ReadAt(got, at); err != nil || !bytes.Equal(got[:4<<20+1<<20-at], make([]byte, 4<<20+1<<20-at)) ||
		!bytes.Equal(got[1<<20-50:], data[1<<20-50:]) {
		t.Fatal("after TRIM: the range does not read as zeros and the rest as written")
	}
}

// TestMappedTruncated: a backing file truncated behind the disk's back
// turns the SIGBUS of an access through the mapping into ErrFault from
// reads and writes of both front ends, not a crash.
func TestMappedTruncated(t *testing.T) {
	path := filepath.Join(memDir(t), "d.img")
	s := newMapped(t, path, 1<<20)
	defer s.Close()
	if err := s.WriteAt(make([]byte, 64<<10), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrFault) {
		t.Errorf("ReadAt: %v, want ErrFault", err)
	}
	if err := s.WriteAt(make([]byte, 4096), 8192, false); !errors.Is(err, ErrFault) {
		t.Errorf("WriteAt: %v, want ErrFault", err)
	}
	iovs := [][]byte{make([]byte, 1400), make([]byte, 1400)}
	if _, err := s.readInto(iovs, 0, 2800); !errors.Is(err, ErrFault) {
		t.Errorf("a READ reply's copy: %v, want ErrFault", err)
	}
}

// TestMappedCopiesAllocs: a READ reply's copy out of the mapping and a
// WRITE's copy into it allocate nothing.
func TestMappedCopiesAllocs(t *testing.T) {
	s := newMapped(t, filepath.Join(memDir(t), "d.img"), 1<<20)
	defer s.Close()
	p := make([]byte, 256<<10)
	if err := s.WriteAt(p, 0, false); err != nil { // through the file: holes
		t.Fatal(err)
	}
	iovs := [][]byte{p[:1440], p[1440:2880], p[2880:4000]}
	if a := testing.AllocsPerRun(100, func() {
		if err := s.writeData(p, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.readInto(iovs, 4096, 4000); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("%.1f allocations per mapped write and read", a)
	}
}
