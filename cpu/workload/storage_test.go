package workload

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// memDevice is an in-memory Device; corrupt flips a byte on every read of
// that offset.
type memDevice struct {
	mu      sync.Mutex
	data    []byte
	corrupt int64
}

func (m *memDevice) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := copy(p, m.data[off:])
	if m.corrupt >= off && m.corrupt < off+int64(n) {
		p[m.corrupt-off] ^= 1
	}
	return n, nil
}

func (m *memDevice) WriteAt(_ context.Context, p []byte, off int64, _ bool) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return copy(m.data[off:], p), nil
}

func (m *memDevice) Flush(context.Context) error { return nil }

func TestRunStorageVerifies(t *testing.T) {
	o := StorageOptions{Size: 1 << 20, BlockSize: 4096, QueueDepth: 8, Seed: 3}
	r, err := RunStorage(context.Background(), &memDevice{data: make([]byte, 1<<20), corrupt: -1}, o)
	if err != nil || !r.Match || r.Write.IOs != 256 || r.Read.Lat.Samples != 256 {
		t.Fatalf("clean run: %v %+v", err, r)
	}
	if _, err := RunStorage(context.Background(), &memDevice{data: make([]byte, 1<<20), corrupt: 777777}, o); !errors.Is(err, ErrMismatch) {
		t.Fatalf("corrupt device: got %v, want ErrMismatch", err)
	}
}

func TestRunRandReadVerifies(t *testing.T) {
	o := StorageOptions{Size: 256 << 10, BlockSize: 4096, QueueDepth: 4, Seed: 5}
	r, err := RunRandRead(context.Background(), &memDevice{data: make([]byte, 256<<10), corrupt: -1}, o)
	if err != nil || !r.Match {
		t.Fatalf("clean run: %v %+v", err, r)
	}
	// Corrupt every byte position's worth: a device that flips a byte in
	// block 0 is caught when block 0 is read (64 random reads of 64
	// blocks: make it certain by corrupting each block's first byte).
	bad := &corruptAll{memDevice{data: make([]byte, 256<<10)}}
	if _, err := RunRandRead(context.Background(), bad, o); !errors.Is(err, ErrMismatch) {
		t.Fatalf("corrupt device: got %v, want ErrMismatch", err)
	}
}

type corruptAll struct{ memDevice }

func (c *corruptAll) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := c.memDevice.ReadAt(ctx, p, off)
	p[0] ^= 1
	return n, err
}

func TestBadOptions(t *testing.T) {
	if _, err := RunStorage(context.Background(), &memDevice{}, StorageOptions{Size: 10, BlockSize: 4, QueueDepth: 1}); err == nil {
		t.Fatal("size not a multiple of the block size accepted")
	}
}
