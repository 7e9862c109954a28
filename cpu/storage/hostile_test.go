package storage_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"testing"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// fakeDisk answers requests through answer, which returns the datagrams
// to send back.
func fakeDisk(t *testing.T, answer func(req diskproto.Request) [][]byte) net.Addr {
	pc := listenUDP(t)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 70000)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := diskproto.ParseRequest(buf[:n])
			if err != nil {
				continue
			}
			for _, b := range answer(req) {
				pc.WriteTo(b, addr)
			}
		}
	}()
	return pc.LocalAddr()
}

func reply(r diskproto.Reply) []byte {
	b := make([]byte, diskproto.ReplyHeaderSize+len(r.Payload))
	r.Marshal(b)
	return b
}

func TestHostileServer(t *testing.T) {
	goodInfo := diskproto.InfoPayload{Size: 1 << 20, BlockSize: 4096, Window: 8, MaxIO: 4096, WindowBytes: 1 << 20}
	badInfo := goodInfo
	badInfo.Window = diskproto.MaxWindow + 1

	addr := fakeDisk(t, func(req diskproto.Request) [][]byte {
		return [][]byte{
			{1, 2, 3},
			reply(diskproto.Reply{Op: req.Op, Tag: req.Tag, Session: req.Session, Epoch: 1, Payload: badInfo.Marshal()}),
		}
	})
	c, err := storage.Dial(listenUDP(t), addr, storage.Options{})
	if err == nil || c != nil {
		t.Fatalf("Dial to a disk advertising window %d = %v, want an error", badInfo.Window, err)
	}

	want := bytes.Repeat([]byte{7}, 4096)
	addr = fakeDisk(t, func(req diskproto.Request) [][]byte {
		base := diskproto.Reply{Op: req.Op, Tag: req.Tag, Session: req.Session, ReqID: req.ReqID, Epoch: 1}
		if req.Op == diskproto.OpInfo {
			base.Payload = goodInfo.Marshal()
			return [][]byte{reply(base)}
		}
		short, other, corrupt, good := base, base, base, base
		short.Payload = want[:100] // wrong length
		other.Session++            // someone else's
		other.Payload = want
		good.Payload = want
		cb := reply(good)
		cb[len(cb)-1] ^= 1 // payload CRC mismatch
		corrupt.ReqID += 1000
		return [][]byte{reply(short), reply(other), cb, reply(corrupt), {0x4e, 0x44, 1}, reply(good)}
	})
	c, err = storage.Dial(listenUDP(t), addr, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make([]byte, 4096)
	if _, err := c.ReadAt(context.Background(), got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadAt through hostile replies: %v", err)
	}
	st := c.Stats()
	if st.BadReplies < 4 || st.LateReplies < 1 {
		t.Fatalf("bad replies not counted: %+v", st)
	}
	if _, err := c.ReadAt(context.Background(), make([]byte, 10), 1<<20); !errors.Is(err, diskproto.CodeRange) {
		t.Fatalf("read past the advertised size: %v", err)
	}
}
