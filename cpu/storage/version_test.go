package storage_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// oldDisk answers the way a disk of protocol version v (2 or 3) did: INFO
// requests in version v (their 128-byte header) get an INFO reply in
// version v; anything else, our version included, is dropped
// unanswered (a version 3 disk checks another version's header CRC over
// its own 128 bytes, which ours does not match). It returns the
// address it serves on.
func oldDisk(t *testing.T, v uint8) net.Addr {
	pc := listenUDP(t)
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			if n < diskproto.LegacyRequestHeaderSize || b[2] != v || diskproto.Op(b[3]) != diskproto.OpInfo {
				continue // dropped what it could not parse
			}
			info := diskproto.InfoPayload{Size: 1 << 20, BlockSize: 4096, Window: 8, MaxIO: 65536, WindowBytes: 1 << 20}.Marshal()
			rep := diskproto.Reply{Op: diskproto.OpInfo, Tag: binary.BigEndian.Uint32(b[8:]),
				Session: binary.BigEndian.Uint64(b[16:]), Epoch: 1, Payload: info}
			out := make([]byte, diskproto.ReplyHeaderSize+len(info))
			rep.Marshal(out)
			out[2] = v // the reply header of versions 2-4: the same layout, its own version byte
			binary.BigEndian.PutUint32(out[44:], crc32.Checksum(out[:44], crc32.MakeTable(crc32.Castagnoli)))
			pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr()
}

// TestOldDiskRefused: a client of this version dialling a disk of version
// 3 or 2 fails fast with ErrVersion naming both versions, instead of
// timing out.
func TestOldDiskRefused(t *testing.T) {
	for _, v := range []uint8{3, 2} {
		t.Run(fmt.Sprintf("version %d", v), func(t *testing.T) {
			addr := oldDisk(t, v)
			start := time.Now()
			_, err := storage.Dial(listenUDP(t), addr, storage.Options{InitialRTO: 20 * time.Millisecond})
			if !errors.Is(err, storage.ErrVersion) {
				t.Fatalf("Dial: %v, want ErrVersion", err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("version %d", v)) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", diskproto.Version)) {
				t.Errorf("error does not name both versions: %v", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to tell", d)
			}
			t.Log(err)
		})
	}
}

// TestOldClientRefused: the INFO of a version 3 or 2 client (the 128-byte
// header of those versions) gets a reply in its version with CodeVersion
// ("protocol version mismatch") from a disk of this version, which counts
// it, instead of silence. A version 3 client parses that reply and fails
// with its ErrVersion.
func TestOldClientRefused(t *testing.T) {
	srv, addr := startServer(t, 1<<20, nil)
	for i, v := range []uint8{3, 2} {
		t.Run(fmt.Sprintf("version %d", v), func(t *testing.T) {
			pc := listenUDP(t)
			defer pc.Close()
			b := make([]byte, diskproto.RequestHeaderSize)
			req := diskproto.Request{Op: diskproto.OpInfo, Tag: 5, Session: 77}
			req.Marshal(b)
			old := make([]byte, diskproto.RequestHeaderSize)
			old = old[:diskproto.LegacyRequest(old, b, v)]
			if _, err := pc.WriteTo(old, addr); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			rb := make([]byte, 2048)
			n, _, err := pc.ReadFrom(rb)
			if err != nil {
				t.Fatalf("no reply to a version %d request: %v", v, err)
			}
			rb = rb[:n]
			if got, ok := diskproto.PeerVersion(rb, 77); !ok || got != v {
				t.Fatalf("reply is not a version %d reply to our session: % x", v, rb)
			}
			if code := diskproto.Code(binary.BigEndian.Uint16(rb[4:])); code != diskproto.CodeVersion {
				t.Fatalf("status %v, want %v", code, diskproto.CodeVersion)
			}
			if binary.BigEndian.Uint32(rb[8:]) != 5 {
				t.Error("tag not echoed")
			}
			if got := srv.Stats().Errors["protocol_version_mismatch"]; got != uint64(i+1) {
				t.Errorf("disk counted %d version refusals, want %d", got, i+1)
			}
		})
	}
}

// TestNoRoomEnds: a disk that answers every burst of a WRITE with an
// empty SACK (it holds nothing, e.g. no room to assemble) ends the
// request with ErrTimeout after MaxRetries such answers, instead of a
// resend loop that never times out.
func TestNoRoomEnds(t *testing.T) {
	pc := listenUDP(t)
	t.Cleanup(func() { pc.Close() })
	var sacks atomic.Int64
	go func() {
		buf := make([]byte, 65536)
		out := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			if diskproto.IsSegment(b) {
				seg, err := diskproto.ParseSegment(b)
				if err == nil && seg.Flags&diskproto.FlagLast != 0 {
					k, _ := (&diskproto.SACK{Round: seg.Round, Session: seg.Session, ReqID: seg.ReqID}).Marshal(out)
					pc.WriteTo(out[:k], from)
					sacks.Add(1)
				}
				continue
			}
			req, err := diskproto.ParseRequest(b)
			if err != nil || req.Op != diskproto.OpInfo {
				continue
			}
			info := diskproto.InfoPayload{Size: 1 << 20, BlockSize: 4096, Window: 8, MaxIO: 65536, WindowBytes: 1 << 20}.Marshal()
			rep := diskproto.Reply{Op: diskproto.OpInfo, Tag: req.Tag, Session: req.Session, Epoch: 1, Payload: info}
			k, _ := rep.Marshal(out)
			pc.WriteTo(out[:k], from)
		}
	}()
	c := dial(t, pc.LocalAddr(), nil, storage.Options{MaxRetries: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := c.WriteAt(ctx, make([]byte, 65536), 0, false)
	if !errors.Is(err, storage.ErrTimeout) {
		t.Fatalf("WriteAt: %v, want ErrTimeout", err)
	}
	if n := sacks.Load(); n < 4 || n > 40 {
		t.Errorf("%d empty SACKs answered before giving up", n)
	}
	t.Log(err)
}

// TestProbeAnsweredInProgress (version 5): a READ the disk holds running
// for many probe intervals is not given up, and its probes are not loss
// events, while the disk answers them "in progress"; when the disk
// answers "sent" and nothing of the reply came, the client asks for all
// of it again (FlagHave, empty bitmap) at once, and gets it.
func TestProbeAnsweredInProgress(t *testing.T) {
	pc := listenUDP(t)
	t.Cleanup(func() { pc.Close() })
	data := randomBytes(7, 4096)
	const hold = 150 * time.Millisecond
	var inProgress, sent, asked atomic.Int64
	go func() {
		buf := make([]byte, 65536)
		out := make([]byte, 65536)
		var first time.Time
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := diskproto.ParseRequest(buf[:n])
			if err != nil {
				continue
			}
			rep := diskproto.Reply{Op: req.Op, Tag: req.Tag, Session: req.Session, ReqID: req.ReqID, Epoch: 1}
			switch {
			case req.Op == diskproto.OpInfo:
				rep.Payload = diskproto.InfoPayload{Size: 1 << 20, BlockSize: 4096, Window: 8, MaxIO: 65536, WindowBytes: 1 << 20}.Marshal()
			case req.Op != diskproto.OpRead:
				continue
			case first.IsZero():
				first = time.Now() // the READ runs: no answer yet
				continue
			case req.Flags&diskproto.FlagHave == 0 && time.Since(first) < hold:
				rep.Status = diskproto.CodeInProgress
				inProgress.Add(1)
			case req.Flags&diskproto.FlagHave == 0:
				rep.Status = diskproto.CodeSent // its reply left, and was lost
				sent.Add(1)
			case len(req.Payload) == 1 && req.Payload[0] == 0:
				asked.Add(1)
				rep.Length, rep.Payload = uint32(len(data)), data
			default:
				t.Errorf("READ retransmitted with bitmap % x", req.Payload)
				continue
			}
			k, err := rep.Marshal(out)
			if err != nil {
				t.Error(err)
				return
			}
			pc.WriteTo(out[:k], from)
		}
	}()
	c := dial(t, pc.LocalAddr(), nil, storage.Options{InitialRTO: 5 * time.Millisecond, MinRTO: 5 * time.Millisecond,
		MaxRetries: 3, Datagram: 8192})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make([]byte, len(data))
	if _, err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatalf("ReadAt: %v (the disk answered %d probes in progress)", err, inProgress.Load())
	}
	if !bytes.Equal(got, data) {
		t.Fatal("wrong data")
	}
	st := c.Stats()
	t.Logf("in progress %d, sent %d, asked again %d; client %+v", inProgress.Load(), sent.Load(), asked.Load(), st)
	if inProgress.Load() <= 3 || st.InProgress != uint64(inProgress.Load()) {
		t.Errorf("%d probes answered in progress (client counted %d): want more than MaxRetries", inProgress.Load(), st.InProgress)
	}
	if sent.Load() != 1 || asked.Load() != 1 || st.SentAnswers != 1 {
		t.Errorf("sent %d, asked again %d, client counted %d sent: want 1 each", sent.Load(), asked.Load(), st.SentAnswers)
	}
	if st.LossEvents != 1 {
		t.Errorf("%d loss events, want 1 (the reply lost; probes answered in progress are none)", st.LossEvents)
	}
}
