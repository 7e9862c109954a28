package nbd_test

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
)

// memDisk is an in-memory Backend in open mode.
type memDisk struct {
	mu   sync.Mutex
	data []byte
}

var _ nbd.Backend = (*memDisk)(nil)

func (m *memDisk) Size() uint64   { return uint64(len(m.data)) }
func (m *memDisk) BlockSize() int { return 512 }
func (m *memDisk) OpenMode() bool { return true }
func (m *memDisk) Authorize(req *diskproto.Request, from net.Addr) error {
	return disk.OpenAccess{}.Authorize(req, from)
}
func (m *memDisk) ReadAt(p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return disk.ErrRange
	}
	copy(p, m.data[off:])
	return nil
}
func (m *memDisk) WriteAt(p []byte, off int64, _ bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(m.data)) {
		return disk.ErrRange
	}
	copy(m.data[off:], p)
	return nil
}
func (m *memDisk) Flush() error { return nil }
func (m *memDisk) Trim(off int64, n int, _ bool) error {
	return m.WriteAt(make([]byte, n), off, false)
}

// handshake is a client's side of a fixed-newstyle GO for "disk0".
func handshake() []byte {
	b := binary.BigEndian.AppendUint32(nil, 3)
	b = binary.BigEndian.AppendUint64(b, optMagic)
	b = binary.BigEndian.AppendUint32(b, optGo)
	d := goData("disk0", 3)
	b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
	return append(b, d...)
}

func req(typ, flags uint16, handle, off uint64, n uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, reqMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	return append(b, data...)
}

// FuzzNBDRequest feeds arbitrary bytes as a client's whole stream —
// handshake, options and transmission requests — to one connection of a
// server on an in-memory disk. The server must neither panic nor hang:
// the connection ends once the input does.
func FuzzNBDRequest(f *testing.F) {
	hs := handshake()
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	f.Add(hs)
	f.Add(cat(hs, req(cmdRead, 0, 1, 0, 512, nil)))
	f.Add(cat(hs, req(cmdWrite, flagFUA, 2, 512, 16, make([]byte, 16)), req(cmdFlush, 0, 3, 0, 0, nil)))
	f.Add(cat(hs, req(cmdTrim, 0, 4, 0, 4096, nil), req(cmdDisc, 0, 5, 0, 0, nil)))
	f.Add(cat(hs, req(cmdRead, 0, 6, 1<<40, 512, nil)))
	f.Add(cat(hs, req(cmdWrite, 0, 7, 0, 1<<30, nil)))
	f.Add(cat(hs, req(77, 0xffff, 8, 0, 0, nil)))
	f.Add(cat(hs[:4], binary.BigEndian.AppendUint64(nil, optMagic), []byte{0, 0, 0, 3, 0, 0, 0, 0}))
	f.Add(cat(hs[:4], binary.BigEndian.AppendUint64(nil, optMagic), []byte{0, 0, 0, 1}, []byte{0, 0, 0, 5}, []byte("disk0")))
	f.Add([]byte{0, 0, 0, 1})

	backend := &memDisk{data: make([]byte, 64<<10)}
	srv, err := nbd.NewServer(nbd.Config{Backend: backend, HandshakeTimeout: 5 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			srv.ServeConn(server)
			close(done)
		}()
		go io.Copy(io.Discard, client) // replies
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		client.Write(in) // may stop early: the server hung up
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection still served 10 s after its input ended (input %x)", in)
		}
	})
}
