package disk_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
)

const testDisk = 9

// fakeClock is an injectable clock, safe for concurrent use.
type fakeClock struct{ unix atomic.Int64 }

func (c *fakeClock) Now() time.Time { return time.Unix(c.unix.Load(), 0) }

func newCapAuth(t *testing.T) (*disk.CapabilityAuthorizer, []byte, *fakeClock) {
	key := capability.NewKey()
	clk := &fakeClock{}
	clk.unix.Store(1_800_000_000)
	a := &disk.CapabilityAuthorizer{Key: key, DiskID: testDisk, Now: clk.Now}
	a.Version.Store(4)
	return a, key, clk
}

// grant is a capability valid on testDisk at version 4 for a minute after
// the fake clock's start.
func grant(rights capability.Rights, off, n uint64) capability.Capability {
	return capability.Capability{DiskID: testDisk, Offset: off, Length: n, Rights: rights,
		Expiry: 1_800_000_060, Version: 4, Nonce: capability.NewNonce()}
}

var peer = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}

func authorize(a *disk.CapabilityAuthorizer, field [capability.Size]byte, op diskproto.Op, off uint64, n uint32, sess, id uint64) error {
	req := diskproto.Request{Op: op, Offset: off, Length: n, Session: sess, ReqID: id, Capability: field}
	return a.Authorize(&req, peer)
}

// TestCapabilityRefusals makes every refusal reason happen once and checks
// the error and its counter.
func TestCapabilityRefusals(t *testing.T) {
	a, key, _ := newCapAuth(t)
	rw := grant(capability.RightRead|capability.RightWrite, 1<<20, 1<<20)
	good := capability.Mint(key, rw)
	with := func(f func(*capability.Capability)) [capability.Size]byte {
		c := rw
		c.Nonce = capability.NewNonce()
		f(&c)
		return capability.Mint(key, c)
	}
	tampered := good
	tampered[10] ^= 0x01 // widen the range by hand
	reusedNonce := rw
	reusedNonce.Length = 2 << 20 // same nonce, another grant

	cases := []struct {
		name   string
		field  [capability.Size]byte
		op     diskproto.Op
		off    uint64
		n      uint32
		want   error
		reason string
	}{
		{"none", [capability.Size]byte{}, diskproto.OpRead, 1 << 20, 4096, disk.ErrCapabilityNone, "no_capability"},
		{"format", func() [capability.Size]byte { b := good; b[0] = 9; return b }(), diskproto.OpRead, 1 << 20, 4096,
			disk.ErrCapabilityFormat, "format"},
		{"tampered", tampered, diskproto.OpRead, 1 << 20, 4096, disk.ErrCapabilityMAC, "bad_mac"},
		{"other key", capability.Mint(capability.NewKey(), rw), diskproto.OpRead, 1 << 20, 4096, disk.ErrCapabilityMAC, "bad_mac"},
		{"other disk", with(func(c *capability.Capability) { c.DiskID++ }), diskproto.OpRead, 1 << 20, 4096,
			disk.ErrCapabilityDisk, "wrong_disk"},
		{"old version", with(func(c *capability.Capability) { c.Version-- }), diskproto.OpRead, 1 << 20, 4096,
			disk.ErrCapabilityRevoked, "revoked"},
		{"future version", with(func(c *capability.Capability) { c.Version++ }), diskproto.OpRead, 1 << 20, 4096,
			disk.ErrCapabilityVersion, "version_ahead"},
		{"expired", with(func(c *capability.Capability) { c.Expiry = 1_800_000_000 }), diskproto.OpRead, 1 << 20, 4096,
			disk.ErrCapabilityExpired, "expired"},
		{"no trim right", good, diskproto.OpTrim, 1 << 20, 4096, disk.ErrCapabilityRights, "rights"},
		{"no flush right", good, diskproto.OpFlush, 0, 0, disk.ErrCapabilityRights, "rights"},
		{"before range", good, diskproto.OpRead, 1<<20 - 1, 4096, disk.ErrCapabilityRange, "range"},
		{"past range", good, diskproto.OpWrite, 2<<20 - 4095, 4096, disk.ErrCapabilityRange, "range"},
		{"allowed", good, diskproto.OpWrite, 2<<20 - 4096, 4096, nil, ""},
		{"nonce reused", capability.Mint(key, reusedNonce), diskproto.OpRead, 1 << 20, 4096, disk.ErrCapabilityReplay, "replay"},
	}
	want := map[string]uint64{}
	for _, tc := range cases {
		err := authorize(a, tc.field, tc.op, tc.off, tc.n, 1, 1)
		if tc.want == nil {
			if err != nil {
				t.Fatalf("%s: %v, want allowed", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !errors.Is(err, disk.ErrDenied) || !errors.Is(err, diskproto.CodeDenied) {
			t.Fatalf("%s: %v, want %v wrapping ErrDenied and CodeDenied", tc.name, err, tc.want)
		}
		want[tc.reason]++
	}
	short := &disk.CapabilityAuthorizer{Key: key[:capability.MinKeySize-1], DiskID: testDisk}
	if err := authorize(short, good, diskproto.OpRead, 1<<20, 1, 1, 1); !errors.Is(err, disk.ErrCapabilityKey) {
		t.Fatalf("short key: %v", err)
	}
	got := a.Stats()
	if len(got) != len(want) {
		t.Fatalf("Stats = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("Stats = %v, want %v", got, want)
		}
	}
	// The first grant still works: the refused reuse did not steal its nonce.
	if err := authorize(a, good, diskproto.OpRead, 1<<20, 4096, 1, 2); err != nil {
		t.Fatalf("original after nonce reuse: %v", err)
	}
}

func TestCapabilityInfoNeedsNone(t *testing.T) {
	a, _, _ := newCapAuth(t)
	for _, field := range [][capability.Size]byte{{}, {0xff, 0xff}} {
		if err := authorize(a, field, diskproto.OpInfo, 0, 0, 1, 0); err != nil {
			t.Fatalf("INFO with capability field %x...: %v", field[:2], err)
		}
	}
}

func TestCapabilityExpiryAndRevocation(t *testing.T) {
	a, key, clk := newCapAuth(t)
	field := capability.Mint(key, grant(capability.RightFlush, 0, 0))
	for i := range uint64(59) {
		if err := authorize(a, field, diskproto.OpFlush, 0, 0, 1, i); err != nil {
			t.Fatalf("second %d: %v", i, err)
		}
		clk.unix.Add(1)
	}
	clk.unix.Add(1) // 60 s: the expiry second
	if err := authorize(a, field, diskproto.OpFlush, 0, 0, 1, 99); !errors.Is(err, disk.ErrCapabilityExpired) {
		t.Fatalf("at expiry: %v", err)
	}

	clk.unix.Store(1_800_000_000)
	field = capability.Mint(key, grant(capability.RightFlush, 0, 0))
	if err := authorize(a, field, diskproto.OpFlush, 0, 0, 2, 1); err != nil {
		t.Fatal(err)
	}
	a.Version.Add(1)
	if err := authorize(a, field, diskproto.OpFlush, 0, 0, 2, 2); !errors.Is(err, disk.ErrCapabilityRevoked) {
		t.Fatalf("after version bump: %v", err)
	}
	c := grant(capability.RightFlush, 0, 0)
	c.Version = 5
	if err := authorize(a, capability.Mint(key, c), diskproto.OpFlush, 0, 0, 2, 3); err != nil {
		t.Fatalf("re-minted at the new version: %v", err)
	}
}

// TestCapabilityConsume: after Consume, retransmissions of requests the
// capability authorized still pass; new requests and other sessions do not.
func TestCapabilityConsume(t *testing.T) {
	a, key, _ := newCapAuth(t)
	c := grant(capability.RightRead, 0, 1<<20)
	field := capability.Mint(key, c)
	for id := uint64(1); id <= 5; id++ {
		for range 2 { // every request twice: retransmissions before Consume
			if err := authorize(a, field, diskproto.OpRead, 0, 4096, 7, id); err != nil {
				t.Fatalf("id %d: %v", id, err)
			}
		}
	}
	a.Consume(c)
	for id := uint64(1); id <= 5; id++ {
		if err := authorize(a, field, diskproto.OpRead, 0, 4096, 7, id); err != nil {
			t.Fatalf("retransmission of id %d after Consume: %v", id, err)
		}
	}
	if err := authorize(a, field, diskproto.OpRead, 0, 4096, 7, 6); !errors.Is(err, disk.ErrCapabilityReplay) {
		t.Fatalf("new request after Consume: %v", err)
	}
	if err := authorize(a, field, diskproto.OpRead, 0, 4096, 8, 1); !errors.Is(err, disk.ErrCapabilityReplay) {
		t.Fatalf("other session after Consume: %v", err)
	}
	// Consumed before ever used: refused outright.
	d := grant(capability.RightRead, 0, 1<<20)
	a.Consume(d)
	if err := authorize(a, capability.Mint(key, d), diskproto.OpRead, 0, 1, 7, 7); !errors.Is(err, disk.ErrCapabilityReplay) {
		t.Fatalf("pre-consumed: %v", err)
	}
	if got := a.Stats()["replay"]; got != 3 {
		t.Fatalf("replay count %d, want 3", got)
	}
}

func TestCapabilityReplayCacheBound(t *testing.T) {
	a, key, clk := newCapAuth(t)
	a.MaxNonces = 4
	short := func() [capability.Size]byte {
		c := grant(capability.RightRead, 0, 1<<20)
		c.Expiry = clk.Now().Unix() + 10
		return capability.Mint(key, c)
	}
	for i := range 4 {
		if err := authorize(a, short(), diskproto.OpRead, 0, 1, 1, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := authorize(a, short(), diskproto.OpRead, 0, 1, 1, 5); !errors.Is(err, disk.ErrCapabilityCacheFull) {
		t.Fatalf("fifth live capability: %v", err)
	}
	clk.unix.Add(10) // the four expire and make room
	if err := authorize(a, short(), diskproto.OpRead, 0, 1, 1, 6); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

// capServer serves a small disk under a on loopback kernel UDP.
func capServer(t *testing.T, a disk.Authorizer) (*disk.Server, net.Addr) {
	t.Helper()
	srv, err := disk.NewServer(disk.Config{Path: filepath.Join(t.TempDir(), "d.img"), Size: 4 << 20,
		Authorizer: a, Window: 8})
	if err != nil {
		t.Fatal(err)
	}
	spc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(spc) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		spc.Close()
	})
	return srv, spc.LocalAddr()
}

func dialCap(t *testing.T, srv net.Addr, field [capability.Size]byte) *storage.Client {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := storage.Dial(pc, srv, storage.Options{Capability: field}) // the default retries: a loaded machine may be silent for tens of ms
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrRefused) || !errors.Is(err, diskproto.CodeDenied) {
		t.Fatalf("%s: %v, want ErrRefused wrapping CodeDenied", what, err)
	}
}

// TestCapabilityOverUDP runs a real server and storage clients holding
// minted capabilities.
func TestCapabilityOverUDP(t *testing.T) {
	a, key, clk := newCapAuth(t)
	srv, addr := capServer(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	rwf := capability.RightRead | capability.RightWrite | capability.RightFlush
	c := dialCap(t, addr, capability.Mint(key, grant(rwf, 1<<20, 1<<20)))
	if c.Info().OpenAccess {
		t.Fatal("capability mode advertises open access")
	}
	data := bytes.Repeat([]byte("capability"), 20000) // 200 kB: several pipelined requests
	if _, err := c.WriteAt(ctx, data, 1<<20, false); err != nil {
		t.Fatalf("write in range: %v", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got := make([]byte, len(data))
	if _, err := c.ReadAt(ctx, got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
	}

	_, err := c.WriteAt(ctx, data[:4096], 2<<20-100, false)
	wantDenied(t, "write straddling the range end", err)
	_, err = c.ReadAt(ctx, got[:10], 0)
	wantDenied(t, "read before the range", err)
	wantDenied(t, "trim without the right", c.Trim(ctx, 1<<20, 4096))

	ro := dialCap(t, addr, capability.Mint(key, grant(capability.RightRead, 1<<20, 1<<20)))
	if _, err := ro.ReadAt(ctx, got[:4096], 1<<20); err != nil || !bytes.Equal(got[:4096], data[:4096]) {
		t.Fatalf("read-only read: %v", err)
	}
	_, err = ro.WriteAt(ctx, data[:4096], 1<<20, false)
	wantDenied(t, "write with a read-only capability", err)

	none := dialCap(t, addr, [capability.Size]byte{}) // INFO passes without one
	_, err = none.ReadAt(ctx, got[:1], 1<<20)
	wantDenied(t, "read without a capability", err)

	clk.unix.Add(60)
	_, err = c.ReadAt(ctx, got[:1], 1<<20)
	wantDenied(t, "read with an expired capability", err)
	clk.unix.Add(-60)
	a.Version.Add(1)
	_, err = ro.ReadAt(ctx, got[:1], 1<<20)
	wantDenied(t, "read with a revoked capability", err)

	st := a.Stats()
	for _, r := range []string{"range", "rights", "no_capability", "expired", "revoked"} {
		if st[r] == 0 {
			t.Errorf("no %s refusal counted: %v", r, st)
		}
	}
	if n := srv.Stats().Errors["access_denied"]; n < 7 {
		t.Errorf("server counted %d access-denied replies, want >= 7", n)
	}
}

// TestCapabilityConsumeKeepsRetransmissions replays a WRITE over the wire
// after its capability was consumed: the server's duplicate cache answers
// with the original status instead of a refusal, and a new request with
// the same capability is refused.
func TestCapabilityConsumeKeepsRetransmissions(t *testing.T) {
	a, key, _ := newCapAuth(t)
	srv, addr := capServer(t, a)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rc := &rawClient{t: t, pc: pc, srv: addr, sess: 77, buf: make([]byte, 70000)}
	rc.hello()
	g := grant(capability.RightWrite, 0, 1<<20)
	field := capability.Mint(key, g)
	write := diskproto.Request{Op: diskproto.OpWrite, Tag: 10, ReqID: 1, Payload: bytes.Repeat([]byte{'W'}, 512),
		Capability: field}
	if rep := rc.do(write); rep.Status != diskproto.CodeOK {
		t.Fatalf("write: %v", rep.Status)
	}
	a.Consume(g)
	write.Tag = 11 // a retransmission: same request id, fresh tag
	if rep := rc.do(write); rep.Status != diskproto.CodeOK {
		t.Fatalf("retransmission after Consume: %v, want the cached OK", rep.Status)
	}
	if srv.Stats().Duplicates != 1 {
		t.Fatalf("duplicates = %d, want 1 (answered from the cache)", srv.Stats().Duplicates)
	}
	write.Tag, write.ReqID = 12, 2
	if rep := rc.do(write); rep.Status != diskproto.CodeDenied {
		t.Fatalf("new write after Consume: %v, want access denied", rep.Status)
	}
}

func BenchmarkCapabilityAuthorize(b *testing.B) {
	key := capability.NewKey()
	a := &disk.CapabilityAuthorizer{Key: key, DiskID: 1}
	field := capability.Mint(key, capability.Capability{DiskID: 1, Length: 1 << 30,
		Rights: capability.RightRead, Expiry: time.Now().Add(time.Hour).Unix(), Nonce: 1})
	req := diskproto.Request{Op: diskproto.OpRead, Offset: 4096, Length: 61440, Session: 1, Capability: field}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		req.ReqID = uint64(i)
		if err := a.Authorize(&req, peer); err != nil {
			b.Fatal(err)
		}
	}
}
