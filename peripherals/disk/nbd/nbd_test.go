package nbd_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/privtest"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
)

type served struct {
	addr string
	url  string // nbd://127.0.0.1:port/ without the export name
	disk *disk.Server
	nbd  *nbd.Server
	path string
	dial func(testing.TB) net.Conn // on the user-level stack (serveStack); nil: kernel TCP
}

// serve starts a disk server of size bytes on a temporary backing file and
// an NBD server for it on a kernel TCP listener on 127.0.0.1.
func serve(t testing.TB, size int64, auth disk.Authorizer, cfg nbd.Config) *served {
	t.Helper()
	return serveWrapped(t, size, auth, cfg, nil)
}

// serveWrapped is serve with the listener wrapped by wrap (nil: as is).
func serveWrapped(t testing.TB, size int64, auth disk.Authorizer, cfg nbd.Config, wrap func(net.Listener) net.Listener) *served {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	ds, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: auth})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Backend = ds
	ns, err := nbd.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		serveOn(t, ns, ds, wrap(ln))
	} else {
		serveOn(t, ns, ds, ln)
	}
	a := ln.Addr().String()
	return &served{addr: a, url: "nbd://" + a + "/", disk: ds, nbd: ns, path: path}
}

// serveOn runs ns on ln until the test ends, then closes ns and ds and
// reports what either returned.
func serveOn(t testing.TB, ns *nbd.Server, ds *disk.Server, ln net.Listener) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- ns.Serve(ln) }()
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Errorf("nbd close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := ds.Close(); err != nil {
			t.Errorf("disk close: %v", err)
		}
	})
}

func run(t testing.TB, timeout time.Duration, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

func TestNbdinfo(t *testing.T) {
	privtest.Tool(t, "nbdinfo")
	const size = 64 << 20
	s := serve(t, size, disk.OpenAccess{}, nbd.Config{})
	for _, export := range []string{nbd.OpenExport, ""} {
		out := run(t, 30*time.Second, "nbdinfo", "--json", s.url+export)
		var info struct {
			Exports []struct {
				Name      string `json:"export-name"`
				Size      int64  `json:"export-size"`
				CanFlush  bool   `json:"can_flush"`
				CanFUA    bool   `json:"can_fua"`
				CanTrim   bool   `json:"can_trim"`
				ReadOnly  bool   `json:"is_read_only"`
				Preferred int64  `json:"block_size_preferred"`
			} `json:"exports"`
		}
		if err := json.Unmarshal(out, &info); err != nil {
			t.Fatalf("nbdinfo --json: %v\n%s", err, out)
		}
		if len(info.Exports) != 1 {
			t.Fatalf("nbdinfo: %d exports\n%s", len(info.Exports), out)
		}
		e := info.Exports[0]
		if e.Size != size || !e.CanFlush || !e.CanFUA || !e.CanTrim || e.ReadOnly || e.Preferred != disk.DefaultBlockSize {
			t.Fatalf("nbdinfo %q: %+v\n%s", export, e, out)
		}
	}
	if got := strings.TrimSpace(string(run(t, 30*time.Second, "nbdinfo", "--size", s.url+nbd.OpenExport))); got != strconv.Itoa(size) {
		t.Fatalf("nbdinfo --size: %q, want %d", got, size)
	}
	// --list asks NBD_OPT_LIST, then INFO on each export.
	out := run(t, 30*time.Second, "nbdinfo", "--list", "--json", s.url)
	if !bytes.Contains(out, []byte(`"export-name": "disk0"`)) {
		t.Fatalf("nbdinfo --list lacks disk0:\n%s", out)
	}
}

func fileSum(t testing.TB, path string, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, f, n); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestNbdcopyRoundTrip(t *testing.T) {
	privtest.Tool(t, "nbdcopy")
	const size = 256 << 20
	s := serve(t, size, disk.OpenAccess{}, nbd.Config{})
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.img"), filepath.Join(dir, "out.img")
	f, err := os.Create(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := fileSum(t, in, size)
	uri := s.url + nbd.OpenExport

	start := time.Now()
	run(t, 5*time.Minute, "nbdcopy", "--flush", in, uri)
	wr := time.Since(start)
	start = time.Now()
	run(t, 5*time.Minute, "nbdcopy", uri, out)
	rd := time.Since(start)
	t.Logf("nbdcopy 256 MiB: in %.0f MiB/s, out %.0f MiB/s", 256/wr.Seconds(), 256/rd.Seconds())

	if got := fileSum(t, out, size); got != want {
		t.Fatalf("read back sha256 %s, wrote %s", got, want)
	}
	// The data is in the disk's backing file, where the UDP protocol
	// serves it from.
	if got := fileSum(t, s.path, size); got != want {
		t.Fatalf("backing file sha256 %s, wrote %s", got, want)
	}
	if w := s.nbd.Stats().BytesWritten.Load(); w != size {
		t.Fatalf("server counted %d bytes written, want %d", w, size)
	}
}

func TestFioRandomRead(t *testing.T) {
	privtest.Tool(t, "fio")
	const size = 64 << 20
	s := serve(t, size, disk.OpenAccess{}, nbd.Config{})
	out := run(t, 2*time.Minute, "fio", "--name=randread", "--ioengine=nbd", "--uri="+s.url+nbd.OpenExport,
		"--rw=randread", "--bs=4k", "--size=64M", "--iodepth=16", "--time_based", "--runtime=2",
		"--output-format=json")
	// fio may print notes before its JSON.
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOBytes int64   `json:"io_bytes"`
				IOPS    float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("fio json: %v\n%s", err, out)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Read.IOBytes == 0 {
		t.Fatalf("fio: %+v\n%s", res.Jobs, out)
	}
	if got := s.nbd.Stats().BytesRead.Load(); got < uint64(res.Jobs[0].Read.IOBytes) {
		t.Fatalf("server read %d bytes, fio reports %d", got, res.Jobs[0].Read.IOBytes)
	}
	t.Logf("fio 4 KiB random read, iodepth 16: %.0f IOPS", res.Jobs[0].Read.IOPS)
}

// TestReadWriteFlushTrim drives every command through the raw client and
// checks the data, including concurrent requests answered by handle.
func TestReadWriteFlushTrim(t *testing.T) {
	const size = 4 << 20
	s := serve(t, size, disk.OpenAccess{}, nbd.Config{})
	c, got := connect(t, s.addr, nbd.OpenExport)
	if got != size {
		t.Fatalf("size %d, want %d", got, size)
	}
	pattern := make([]byte, 1<<20)
	rand.Read(pattern)
	// Four pipelined writes, one with FUA, then a flush.
	for i := range 4 {
		flags := uint16(0)
		if i == 2 {
			flags = flagFUA
		}
		if err := c.request(cmdWrite, flags, uint64(100+i), uint64(i)<<18, 1<<18, pattern[i<<18:(i+1)<<18]); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]bool{}
	for range 4 {
		h, errno, _, err := c.reply(nil)
		if err != nil || errno != 0 || h < 100 || h > 103 || seen[h] {
			t.Fatalf("write reply: handle %d errno %d err %v", h, errno, err)
		}
		seen[h] = true
	}
	if err := c.request(cmdFlush, 0, 7, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	if h, errno, _, err := c.reply(nil); err != nil || errno != 0 || h != 7 {
		t.Fatalf("flush: handle %d errno %d err %v", h, errno, err)
	}
	// Trim the second 256 KiB, then read the first MiB back.
	if err := c.request(cmdTrim, 0, 8, 1<<18, 1<<18, nil); err != nil {
		t.Fatal(err)
	}
	if _, errno, _, err := c.reply(nil); err != nil || errno != 0 {
		t.Fatalf("trim: errno %d err %v", errno, err)
	}
	if err := c.request(cmdRead, 0, 9, 0, 1<<20, nil); err != nil {
		t.Fatal(err)
	}
	_, errno, data, err := c.reply(func(uint64) int { return 1 << 20 })
	if err != nil || errno != 0 {
		t.Fatalf("read: errno %d err %v", errno, err)
	}
	want := bytes.Clone(pattern)
	clear(want[1<<18 : 2<<18])
	if !bytes.Equal(data, want) {
		t.Fatal("read back differs from what was written and trimmed")
	}
	if err := c.request(cmdDisc, 0, 10, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	c.expectClosed()
}

func TestHostileHandshake(t *testing.T) {
	s := serve(t, 1<<20, disk.OpenAccess{}, nbd.Config{HandshakeTimeout: 2 * time.Second})

	t.Run("unknown client flags", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		if err := c.hello(1 << 7); err != nil {
			t.Fatal(err)
		}
		c.expectClosed()
	})
	t.Run("bad option magic", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		c.c.Write(bytes.Repeat([]byte{0xAA}, 16))
		c.expectClosed()
	})
	t.Run("unknown and refused options", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		for _, opt := range []uint32{optStructured, 5, 9, 10, 11, 0xdead} {
			if err := c.option(opt, []byte("some data")); err != nil {
				t.Fatal(err)
			}
			rep, err := c.optReply()
			if err != nil || rep.opt != opt || rep.typ != repErrUnsup {
				t.Fatalf("option %d: %+v %v", opt, rep, err)
			}
		}
		// The connection still negotiates after the refusals.
		if size, _, err := c.goExport(nbd.OpenExport); err != nil || size != 1<<20 {
			t.Fatalf("GO after refusals: %d %v", size, err)
		}
	})
	t.Run("malformed GO", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		bad := [][]byte{
			{0, 0},                         // too short
			{0xff, 0xff, 0xff, 0xff, 0, 0}, // name longer than the data
			append(goData("disk0"), 1),     // trailing byte
			goData("disk0", 3, 3)[:13],     // info requests cut short
		}
		for i, d := range bad {
			c.option(optGo, d)
			rep, err := c.optReply()
			if err != nil || rep.typ != repErrInvalid {
				t.Fatalf("malformed GO %d: %+v %v", i, rep, err)
			}
		}
		if _, _, err := c.goExport("nosuchdisk"); repType(err) != repErrUnknown {
			t.Fatalf("unknown export: %v", err)
		}
		if _, _, err := c.goExport(strings.Repeat("zz", 64)); repType(err) != repErrUnknown {
			t.Fatalf("export name of non-hex: %v", err)
		}
		// INFO leaves the negotiation going; GO ends it.
		c.option(optInfo, goData("disk0", 0, 3))
		for {
			rep, err := c.optReply()
			if err != nil {
				t.Fatal(err)
			}
			if rep.typ == repAck {
				break
			}
			if rep.typ != repInfo {
				t.Fatalf("INFO: %+v", rep)
			}
		}
		if _, _, err := c.goExport(""); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("list and abort", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		c.option(optList, []byte{1})
		if rep, err := c.optReply(); err != nil || rep.typ != repErrInvalid {
			t.Fatalf("LIST with data: %+v %v", rep, err)
		}
		c.option(optList, nil)
		rep, err := c.optReply()
		if err != nil || rep.typ != repServer || string(rep.data[4:]) != nbd.OpenExport {
			t.Fatalf("LIST: %+v %v", rep, err)
		}
		if rep, err := c.optReply(); err != nil || rep.typ != repAck {
			t.Fatalf("LIST end: %+v %v", rep, err)
		}
		c.option(optAbort, nil)
		if rep, err := c.optReply(); err != nil || rep.typ != repAck {
			t.Fatalf("ABORT: %+v %v", rep, err)
		}
		c.expectClosed()
	})
	t.Run("huge option", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		b := binary_(optMagic, optGo, 1<<31)
		c.c.Write(b)
		c.expectClosed()
	})
	t.Run("truncated option", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		c.c.Write(binary_(optMagic, optGo, 100)[:14])
		c.c.(*net.TCPConn).CloseWrite()
		c.expectClosed()
	})
	t.Run("stalled client", func(t *testing.T) {
		c := dialRaw(t, s.addr)
		c.hello(3)
		start := time.Now()
		c.expectClosed() // the handshake timeout ends it
		if time.Since(start) > 4*time.Second {
			t.Fatal("handshake timeout did not apply")
		}
	})
	t.Run("old-style EXPORT_NAME", func(t *testing.T) {
		for _, zeroes := range []bool{false, true} {
			c := dialRaw(t, s.addr)
			flags := uint32(3)
			if zeroes {
				flags = 1
			}
			c.hello(flags)
			c.option(optExportName, []byte("disk0"))
			n := 10
			if zeroes {
				n += 124
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(c.c, b); err != nil {
				t.Fatal(err)
			}
			if size := be64(b); size != 1<<20 {
				t.Fatalf("EXPORT_NAME size %d", size)
			}
			if !bytes.Equal(b[10:], make([]byte, n-10)) {
				t.Fatal("padding not zero")
			}
			if err := c.request(cmdRead, 0, 1, 0, 512, nil); err != nil {
				t.Fatal(err)
			}
			if _, errno, _, err := c.reply(func(uint64) int { return 512 }); err != nil || errno != 0 {
				t.Fatalf("read after EXPORT_NAME: %d %v", errno, err)
			}
		}
		c := dialRaw(t, s.addr)
		c.hello(3)
		c.option(optExportName, []byte("nosuchdisk"))
		c.expectClosed()
	})
}

func binary_(magic uint64, opt, n uint32) []byte {
	b := make([]byte, 16)
	for i := range 8 {
		b[i] = byte(magic >> (56 - 8*i))
	}
	for i := range 4 {
		b[8+i] = byte(opt >> (24 - 8*i))
		b[12+i] = byte(n >> (24 - 8*i))
	}
	return b
}

func be64(b []byte) uint64 {
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

func TestHostileRequests(t *testing.T) {
	const size = 1 << 20
	s := serve(t, size, disk.OpenAccess{}, nbd.Config{})
	base := runtime.NumGoroutine()

	t.Run("errors keep the connection", func(t *testing.T) {
		c, _ := connect(t, s.addr, nbd.OpenExport)
		cases := []struct {
			name         string
			typ, flags   uint16
			off          uint64
			length       uint32
			data         []byte
			errno        uint32
			replyDataLen int
		}{
			{"read past the end", cmdRead, 0, size - 512, 1024, nil, eInval, 0},
			{"read at a huge offset", cmdRead, 0, 1 << 62, 512, nil, eInval, 0},
			{"offset+length overflows", cmdRead, 0, ^uint64(0) - 10, 512, nil, eInval, 0},
			{"read above 32 MiB", cmdRead, 0, 0, 64 << 20, nil, 75, 0},
			{"zero-length read", cmdRead, 0, 0, 0, nil, eInval, 0},
			{"write past the end", cmdWrite, 0, size - 100, 200, make([]byte, 200), eNoSpc, 0},
			{"trim past the end", cmdTrim, 0, size, 4096, nil, eInval, 0},
			{"unknown command", 99, 0, 0, 0, nil, eInval, 0},
			{"unknown flag", cmdWrite, 1 << 9, 0, 16, make([]byte, 16), eInval, 0},
			{"FUA on read", cmdRead, flagFUA, 0, 16, nil, eInval, 0},
			{"a good read after all that", cmdRead, 0, size - 512, 512, nil, 0, 512},
		}
		for i, tc := range cases {
			if err := c.request(tc.typ, tc.flags, uint64(i), tc.off, tc.length, tc.data); err != nil {
				t.Fatal(err)
			}
			h, errno, _, err := c.reply(func(uint64) int { return tc.replyDataLen })
			if err != nil || h != uint64(i) || errno != tc.errno {
				t.Fatalf("%s: handle %d errno %d err %v, want errno %d", tc.name, h, errno, err, tc.errno)
			}
		}
	})
	t.Run("bad request magic", func(t *testing.T) {
		c, _ := connect(t, s.addr, nbd.OpenExport)
		c.c.Write(bytes.Repeat([]byte{0x55}, 28))
		c.expectClosed()
	})
	t.Run("write above 32 MiB", func(t *testing.T) {
		c, _ := connect(t, s.addr, nbd.OpenExport)
		c.request(cmdWrite, 0, 1, 0, 1<<31, nil)
		c.expectClosed()
	})
	t.Run("truncated header", func(t *testing.T) {
		c, _ := connect(t, s.addr, nbd.OpenExport)
		c.c.Write([]byte{0x25, 0x60, 0x95, 0x13, 0, 0, 0})
		c.c.(*net.TCPConn).CloseWrite()
		c.expectClosed()
	})
	t.Run("truncated write payload", func(t *testing.T) {
		c, _ := connect(t, s.addr, nbd.OpenExport)
		c.request(cmdWrite, 0, 1, 0, 4096, make([]byte, 100))
		c.c.(*net.TCPConn).CloseWrite()
		c.expectClosed()
	})
	t.Run("disconnect with requests in flight", func(t *testing.T) {
		c, _ := connect(t, s.addr, nbd.OpenExport)
		for i := range 32 {
			c.request(cmdRead, 0, uint64(i), 0, 64<<10, nil)
		}
		c.c.Close()
	})
	// Every connection's goroutines are gone once its socket is.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Fatalf("%d goroutines after the hostile clients left, %d before", n, base)
	}
}

// TestCapabilities serves a disk that checks NASD capabilities: the
// export name carries one in hex, and each request's range and right are
// checked by the disk's own Authorizer.
func TestCapabilities(t *testing.T) {
	const size = 1 << 20
	const diskID = 7
	key := capability.NewKey()
	auth := &disk.CapabilityAuthorizer{Key: key, DiskID: diskID}
	s := serve(t, size, auth, nbd.Config{})
	mint := func(r capability.Rights, off, n uint64) string {
		f := capability.Mint(key, capability.Capability{DiskID: diskID, Offset: off, Length: n, Rights: r,
			Expiry: time.Now().Add(time.Hour).Unix(), Nonce: capability.NewNonce()})
		return hex.EncodeToString(f[:])
	}

	// The open export is refused, and LIST shows nothing.
	c := dialRaw(t, s.addr)
	c.hello(3)
	if _, _, err := c.goExport(nbd.OpenExport); repType(err) != repErrPolicy {
		t.Fatalf("open export on a capability disk: %v", err)
	}
	c.option(optList, nil)
	if rep, err := c.optReply(); err != nil || rep.typ != repAck {
		t.Fatalf("LIST: %+v %v", rep, err)
	}

	// A read-only capability for the first half.
	c, _ = connect(t, s.addr, mint(capability.RightRead, 0, size/2))
	steps := []struct {
		typ    uint16
		off    uint64
		n      uint32
		errno  uint32
		rdData int
	}{
		{cmdRead, 0, 4096, 0, 4096},
		{cmdRead, size / 2, 4096, ePerm, 0},     // outside its range
		{cmdWrite, 0, 4096, ePerm, 0},           // no write right
		{cmdFlush, 0, 0, ePerm, 0},              // no flush right
		{cmdTrim, 0, 4096, ePerm, 0},            // no trim right
		{cmdRead, size/2 - 4096, 4096, 0, 4096}, // still usable
	}
	for i, st := range steps {
		var data []byte
		if st.typ == cmdWrite {
			data = make([]byte, st.n)
		}
		c.request(st.typ, 0, uint64(i), st.off, st.n, data)
		_, errno, _, err := c.reply(func(uint64) int { return st.rdData })
		if err != nil || errno != st.errno {
			t.Fatalf("step %d: errno %d err %v, want %d", i, errno, err, st.errno)
		}
	}

	// A forged capability is refused at negotiation, in words.
	forged, _ := hex.DecodeString(mint(capability.RightsAll, 0, size))
	forged[len(forged)-1] ^= 1
	c = dialRaw(t, s.addr)
	c.hello(3)
	if _, _, err := c.goExport(hex.EncodeToString(forged)); repType(err) != repErrPolicy || !strings.Contains(err.Error(), "not sealed with this disk's key") {
		t.Fatalf("forged capability: %v", err)
	}

	// A full capability works with the stock tool, too.
	if _, err := exec.LookPath("nbdinfo"); err == nil {
		out := run(t, 30*time.Second, "nbdinfo", "--size", s.url+mint(capability.RightsAll, 0, size))
		if strings.TrimSpace(string(out)) != strconv.Itoa(size) {
			t.Fatalf("nbdinfo with a capability: %s", out)
		}
	}
	// 4 requests and 2 exports (open, forged) refused.
	if n := s.nbd.Stats().Refused.Load(); n != 6 {
		t.Fatalf("%d refused, want 6", n)
	}
}

// TestRefusedExportSaysWhy: a capability the disk will refuse (revoked,
// expired, forged, for another disk, or none) is refused at negotiation
// with NBD_REP_ERR_POLICY and words saying why, and counted by reason.
// Stock clients: qemu-img prints the words; nbdinfo fails at once.
func TestRefusedExportSaysWhy(t *testing.T) {
	const size = 1 << 20
	const diskID = 7
	key := capability.NewKey()
	auth := &disk.CapabilityAuthorizer{Key: key, DiskID: diskID}
	s := serve(t, size, auth, nbd.Config{})
	mint := func(id, version uint32, ttl time.Duration) string {
		f := capability.Mint(key, capability.Capability{DiskID: id, Length: size, Rights: capability.RightsAll,
			Version: version, Expiry: time.Now().Add(ttl).Unix(), Nonce: capability.NewNonce()})
		return hex.EncodeToString(f[:])
	}
	old := mint(diskID, 0, time.Hour)
	auth.Version.Store(1) // a disk revoke
	forged, _ := hex.DecodeString(mint(diskID, 1, time.Hour))
	forged[10] ^= 1
	for _, tc := range []struct {
		name, export, words, reason string
	}{
		{"revoked", old, "capability refused: revoked: minted at version 0, the disk is at version 1", "revoked"},
		{"expired", mint(diskID, 1, -time.Minute), "capability refused: expired at ", "expired"},
		{"another disk", mint(diskID+2, 1, time.Hour), "capability refused: minted for another disk", "wrong_disk"},
		{"forged", hex.EncodeToString(forged), "capability refused: not sealed with this disk's key", "bad_mac"},
		{"none", nbd.OpenExport, "capability refused: this disk checks capabilities and none was given", "no_capability"},
	} {
		before := auth.Stats()[tc.reason]
		c := dialRaw(t, s.addr)
		c.hello(3)
		_, _, err := c.goExport(tc.export)
		if repType(err) != repErrPolicy || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%s: %v, want NBD_REP_ERR_POLICY with %q", tc.name, err, tc.words)
		}
		if got := auth.Stats()[tc.reason]; got != before+1 {
			t.Errorf("%s: refusals %q %d -> %d", tc.name, tc.reason, before, got)
		}
	}
	// A current capability is admitted, and works.
	c, n := connect(t, s.addr, mint(diskID, 1, time.Hour))
	c.request(cmdRead, 0, 1, 0, 512, nil)
	if _, errno, _, err := c.reply(func(uint64) int { return 512 }); err != nil || errno != 0 || n != size {
		t.Fatalf("current capability: errno %d err %v size %d", errno, err, n)
	}
	if _, err := exec.LookPath("qemu-img"); err == nil {
		out, err := exec.Command("qemu-img", "info", "--output=json", s.url+old).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "capability refused: revoked") {
			t.Errorf("qemu-img info with a revoked capability: %v\n%s", err, out)
		}
		t.Logf("qemu-img says: %s", out)
	}
	if _, err := exec.LookPath("nbdinfo"); err == nil {
		out, err := exec.Command("nbdinfo", s.url+old).CombinedOutput()
		if err == nil {
			t.Errorf("nbdinfo admitted a revoked capability:\n%s", out)
		}
		t.Logf("nbdinfo says: %s", out)
	}
}

// TestCloseWithClients closes the server under connected clients: Close
// returns, and the clients see the connection end.
func TestCloseWithClients(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.img")
	ds, err := disk.NewServer(disk.Config{Path: path, Size: 1 << 20, Authorizer: disk.OpenAccess{}})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	ns, err := nbd.NewServer(nbd.Config{Backend: ds})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- ns.Serve(ln) }()
	c1, _ := connect(t, ln.Addr().String(), nbd.OpenExport)
	c2 := dialRaw(t, ln.Addr().String())
	c2.hello(3)
	closed := make(chan error, 1)
	go func() { closed <- ns.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	c1.expectClosed()
	c2.expectClosed()
	if err := ns.Close(); !errors.Is(err, nbd.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if err := ns.Serve(ln); !errors.Is(err, nbd.ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	if _, err := nbd.NewServer(nbd.Config{}); !errors.Is(err, nbd.ErrConfig) {
		t.Fatalf("no backend: %v", err)
	}
}

// BenchmarkIO measures READ and WRITE goodput of one connection over
// kernel loopback, 8 requests in flight.
func BenchmarkIO(b *testing.B) {
	for _, op := range []uint16{cmdRead, cmdWrite} {
		for _, n := range []int{4 << 10, 1 << 20} {
			name := map[uint16]string{cmdRead: "read", cmdWrite: "write"}[op]
			b.Run(fmt.Sprintf("%s/%dKiB", name, n>>10), func(b *testing.B) {
				s := serve(b, 64<<20, disk.OpenAccess{}, nbd.Config{})
				c, _ := connect(b, s.addr, nbd.OpenExport)
				const depth = 8
				var data []byte
				replyLen := func(uint64) int { return n }
				if op == cmdWrite {
					data = make([]byte, n)
					rand.Read(data)
					replyLen = nil
				}
				b.SetBytes(int64(n))
				sent, got := 0, 0
				off := func(i int) uint64 { return uint64(i*n) % (64 << 20) }
				for ; sent < depth; sent++ {
					c.request(op, 0, uint64(sent), off(sent), uint32(n), data)
				}
				for b.Loop() {
					if _, errno, _, err := c.reply(replyLen); err != nil || errno != 0 {
						b.Fatal(errno, err)
					}
					got++
					c.request(op, 0, uint64(sent), off(sent), uint32(n), data)
					sent++
				}
				for ; got < sent; got++ {
					c.reply(replyLen)
				}
			})
		}
	}
}

// TestPipelined sends bursts of requests without waiting for replies, as
// a QD32 client does: small READs and WRITEs the server runs inline and
// answers in batches, large ones it runs on goroutines, and refused ones
// mixed in. Every reply must come once, with its own errno and data.
func TestPipelined(t *testing.T) {
	const size = 16 << 20
	t.Run("kernel-tcp", func(t *testing.T) { testPipelined(t, serve(t, size, disk.OpenAccess{}, nbd.Config{})) })
	// On stack/tcp, WRITEs larger than the reader's buffer are streamed
	// from the connection's receive ring into the file.
	t.Run("stack-tcp", func(t *testing.T) { testPipelined(t, serveStack(t, size, nbd.Config{})) })
}

func testPipelined(t *testing.T, s *served) {
	const size = 16 << 20
	c := s.connect(t, nbd.OpenExport)
	type req struct {
		typ    uint16
		off    uint64
		length uint32
		errno  uint32
	}
	lengths := []uint32{512, 4096, 64 << 10, 128 << 10, 128<<10 + 512, 1 << 20}
	var reqs []req
	off := uint64(0)
	for i := range 40 {
		if i%7 == 3 {
			reqs = append(reqs, req{cmdRead, size, 4096, eInval}) // refused, answered in line
			continue
		}
		n := lengths[i%len(lengths)]
		reqs = append(reqs, req{cmdRead, off, n, 0})
		off += uint64(n)
	}
	pattern := func(r req) []byte {
		b := make([]byte, r.length)
		for i := range b {
			b[i] = byte(r.off>>9) ^ byte(i*7)
		}
		return b
	}
	// burst sends every request of typ from a goroutine and checks the
	// replies as they come.
	burst := func(typ uint16) {
		t.Helper()
		sent := make(chan error, 1)
		go func() {
			for h, r := range reqs {
				var data []byte
				if typ == cmdWrite {
					if r.errno != 0 {
						data = make([]byte, r.length)
					} else {
						data = pattern(r)
					}
				}
				if err := c.request(typ, 0, uint64(h), r.off, r.length, data); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
		seen := make(map[uint64]bool)
		for range reqs {
			h, errno, data, err := c.reply(func(h uint64) int {
				if typ == cmdRead && h < uint64(len(reqs)) {
					return int(reqs[h].length)
				}
				return 0
			})
			if err != nil {
				t.Fatal(err)
			}
			if h >= uint64(len(reqs)) || seen[h] {
				t.Fatalf("reply for handle %d: unknown or repeated", h)
			}
			seen[h] = true
			r := reqs[h]
			want := r.errno
			if typ == cmdWrite && r.errno == eInval {
				want = eNoSpc // a WRITE past the end
			}
			if errno != want {
				t.Fatalf("handle %d (%d bytes at %d): errno %d, want %d", h, r.length, r.off, errno, want)
			}
			if typ == cmdRead && errno == 0 && !bytes.Equal(data, pattern(r)) {
				t.Fatalf("handle %d (%d bytes at %d): data differs from what was written", h, r.length, r.off)
			}
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	}
	burst(cmdWrite)
	burst(cmdRead)
}

// TestSteadyRequestsAllocateNothing: once a connection is warm, a 4 KiB
// READ or WRITE costs the server no allocation (the client's side, on the
// kernel's TCP, allocates nothing either).
func TestSteadyRequestsAllocateNothing(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts differ under -cover and -race")
	}
	t.Run("kernel-tcp", func(t *testing.T) {
		testSteadyAllocs(t, serve(t, 1<<20, disk.OpenAccess{}, nbd.Config{}), 4096)
	})
	// On stack/tcp also a WRITE streamed from the receive ring (larger
	// than the reader's buffer); the client's side, on the same stack,
	// allocates nothing either.
	t.Run("stack-tcp", func(t *testing.T) { testSteadyAllocs(t, serveStack(t, 1<<20, nbd.Config{}), 4096, 256<<10) })
}

func testSteadyAllocs(t *testing.T, s *served, writeSizes ...int) {
	c := s.connect(t, nbd.OpenExport)
	type op struct {
		typ uint16
		n   int
	}
	var ops []op
	for _, n := range writeSizes {
		ops = append(ops, op{cmdWrite, n})
	}
	for _, o := range append(ops, op{cmdRead, 4096}) {
		typ, n := o.typ, o.n
		req := make([]byte, 28, 28+n)
		binary.BigEndian.PutUint32(req[0:], reqMagic)
		binary.BigEndian.PutUint16(req[6:], typ)
		binary.BigEndian.PutUint64(req[8:], 7)
		binary.BigEndian.PutUint64(req[16:], 8192)
		binary.BigEndian.PutUint32(req[24:], uint32(n))
		reply := make([]byte, 16)
		if typ == cmdWrite {
			req = req[:28+n]
		} else {
			reply = make([]byte, 16+n)
		}
		var failed error
		allocs := testing.AllocsPerRun(200, func() {
			if _, err := c.c.Write(req); err != nil {
				failed = err
			}
			if _, err := io.ReadFull(c.c, reply); err != nil {
				failed = err
			}
			if binary.BigEndian.Uint32(reply[4:]) != 0 {
				failed = fmt.Errorf("errno %d", binary.BigEndian.Uint32(reply[4:]))
			}
		})
		if failed != nil {
			t.Fatal(failed)
		}
		if allocs != 0 {
			t.Errorf("command %d of %d bytes: %.1f allocations per request, want 0", typ, n, allocs)
		}
	}
}
