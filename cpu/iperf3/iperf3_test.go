package iperf3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/cpu/iperf3"
	"github.com/netstation/netstation/internal/privtest"
)

type served struct {
	srv  *iperf3.Server
	port int
	addr string
}

// kernelUDP binds the UDP socket of a test on 127.0.0.1 at the control
// port, as a testbed binds the user-level stack's.
func kernelUDP(port int) (iperf3.DatagramConn, error) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return nil, err
	}
	// A deep queue, so a busy CI machine does not turn -b 200M into loss:
	// SO_RCVBUFFORCE passes rmem_max when the test runs as root.
	c.SetReadBuffer(4 << 20)
	if rc, err := c.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) })
	}
	return c, nil
}

// settled returns the server's test counts once they add up to n, or
// after 10 s. The client exits as soon as it has sent IPERF_DONE; the
// server counts the test after reading it, a moment later (CI saw the
// last test still uncounted).
func (s *served) settled(n uint64) (completed, abandoned uint64) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		completed, abandoned = s.srv.Tests()
		if completed+abandoned >= n || time.Now().After(deadline) {
			return completed, abandoned
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func serve(t testing.TB, srv *iperf3.Server) *served {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	port := ln.Addr().(*net.TCPAddr).Port
	return &served{srv: srv, port: port, addr: ln.Addr().String()}
}

// report is the part of iperf3 -J's output the tests check.
type report struct {
	Error string `json:"error"`
	Start struct {
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
			Reverse    int    `json:"reverse"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Streams []json.RawMessage `json:"streams"`
		SumSent struct {
			Bytes       float64 `json:"bytes"`
			BPS         float64 `json:"bits_per_second"`
			Retransmits *int    `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes   float64 `json:"bytes"`
			BPS     float64 `json:"bits_per_second"`
			Seconds float64 `json:"seconds"`
		} `json:"sum_received"`
		Sum struct { // UDP
			Bytes       float64 `json:"bytes"`
			BPS         float64 `json:"bits_per_second"`
			JitterMS    float64 `json:"jitter_ms"`
			LostPackets float64 `json:"lost_packets"`
			Packets     float64 `json:"packets"`
			LostPercent float64 `json:"lost_percent"`
		} `json:"sum"`
	} `json:"end"`
}

// client runs the stock iperf3 client with -J and returns its report;
// wantOK says whether it must succeed.
func client(t *testing.T, s *served, wantOK bool, args ...string) report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"-c", "127.0.0.1", "-p", strconv.Itoa(s.port), "-J"}, args...)
	cmd := exec.CommandContext(ctx, "iperf3", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var r report
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("iperf3 %v: %v; output not JSON (%v):\n%s\n%s", args, err, jerr, out, stderr.Bytes())
	}
	if wantOK && (err != nil || r.Error != "") {
		t.Fatalf("iperf3 %v: %v: %s\n%s", args, err, r.Error, stderr.Bytes())
	}
	if !wantOK && err == nil && r.Error == "" {
		t.Fatalf("iperf3 %v succeeded, want a refusal", args)
	}
	return r
}

// tcpMemMax is the largest buffer the kernel's TCP autotuning gives a
// socket (the third field of net.ipv4.tcp_wmem or tcp_rmem), in bytes.
func tcpMemMax(t *testing.T, name string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/ipv4/" + name)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		t.Fatalf("%s: %q", name, b)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTCP(t *testing.T) {
	privtest.Tool(t, "iperf3")
	s := serve(t, &iperf3.Server{ListenUDP: kernelUDP})
	for _, tc := range []struct {
		name    string
		args    []string
		streams int
		reverse bool
	}{
		{"forward", []string{"-t", "2"}, 1, false},
		{"reverse", []string{"-t", "2", "-R"}, 1, true},
		{"parallel", []string{"-t", "2", "-P", "2"}, 2, false},
		{"parallel reverse", []string{"-t", "1", "-P", "3", "-R"}, 3, true},
		{"omit", []string{"-t", "2", "-O", "1"}, 1, false},
		{"bytes reverse", []string{"-n", "20M", "-R", "-P", "2"}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := client(t, s, true, tc.args...)
			e := r.End
			if r.Start.TestStart.Protocol != "TCP" || r.Start.TestStart.NumStreams != tc.streams || len(e.Streams) != tc.streams {
				t.Fatalf("test_start %+v, %d streams in the results", r.Start.TestStart, len(e.Streams))
			}
			if e.SumSent.Bytes <= 0 || e.SumReceived.Bytes <= 0 || e.SumReceived.Seconds <= 0 {
				t.Fatalf("sum_sent %+v, sum_received %+v", e.SumSent, e.SumReceived)
			}
			// What was received was sent; at most what sat in the
			// socket buffers when the test ended can be missing: per
			// stream, a send and a receive buffer, each at most the
			// kernel's autotuning limit, and a block read but not yet
			// counted. (A fixed 80 % failed under load: a receiver
			// slowed down left 15 MB of the 60 MB 3 streams sent in 1 s
			// in their buffers.) The -n run checks below that all it
			// asked for arrived.
			// With -O each side starts counting when its own omitted
			// seconds end, a moment apart: tens of milliseconds of a 2 s
			// count on a loaded machine, either way (CI saw 1.8 % over,
			// and 1.2 % under beyond what the buffers hold).
			skew := 0.0
			if tc.name == "omit" {
				skew = 0.05 * e.SumSent.Bytes
			}
			buffered := float64(tc.streams * (tcpMemMax(t, "tcp_wmem") + tcpMemMax(t, "tcp_rmem") + 128<<10))
			if e.SumReceived.Bytes > e.SumSent.Bytes+skew || e.SumSent.Bytes-e.SumReceived.Bytes > buffered+skew {
				t.Fatalf("received %.0f bytes of %.0f sent (at most %.0f could sit in the buffers)", e.SumReceived.Bytes, e.SumSent.Bytes, buffered)
			}
			// The sender reports retransmissions; in reverse mode that is
			// the server, from its kernel sockets' TCP_INFO.
			if e.SumSent.Retransmits == nil || *e.SumSent.Retransmits < 0 {
				t.Fatalf("reverse %v: sum_sent retransmits %v", tc.reverse, e.SumSent.Retransmits)
			}
			// -n with -R: the server sends what was asked, over all streams,
			// give or take a block per stream.
			if tc.name == "bytes reverse" && (e.SumSent.Bytes < 20<<20 || e.SumSent.Bytes > 20<<20+2*128<<10 || e.SumReceived.Bytes < 20<<20) {
				t.Fatalf("-n 20M -R -P 2: the server sent %.0f bytes, the client received %.0f", e.SumSent.Bytes, e.SumReceived.Bytes)
			}
			t.Logf("%s: %.2f Gbit/s received", tc.name, e.SumReceived.BPS/1e9)
		})
	}
	if ok, failed := s.settled(6); ok != 6 || failed != 0 {
		t.Fatalf("server counted %d tests completed, %d abandoned", ok, failed)
	}
}

func TestUDP(t *testing.T) {
	privtest.Tool(t, "iperf3")
	s := serve(t, &iperf3.Server{ListenUDP: kernelUDP})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"forward", []string{"-u", "-b", "200M", "-t", "2"}},
		{"reverse", []string{"-u", "-b", "200M", "-t", "2", "-R"}},
		{"parallel 64-bit counters", []string{"-u", "-b", "50M", "-t", "1", "-P", "2", "--udp-counters-64bit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := client(t, s, true, tc.args...)
			sum := r.End.Sum
			if r.Start.TestStart.Protocol != "UDP" {
				t.Fatalf("protocol %q", r.Start.TestStart.Protocol)
			}
			if sum.Bytes <= 0 || sum.Packets <= 0 || sum.LostPackets < 0 || sum.LostPackets > sum.Packets {
				t.Fatalf("sum %+v", sum)
			}
			// Loopback on a busy 2-core machine drops some; half is
			// not "some".
			if sum.LostPercent < 0 || sum.LostPercent > 50 {
				t.Fatalf("lost %.1f%%", sum.LostPercent)
			}
			// -b 200M over 2 s: the rate was paced near what was asked.
			if mbps := sum.BPS / 1e6; mbps > 400 {
				t.Fatalf("%.0f Mbit/s for -b 200M", mbps)
			}
			t.Logf("%s: %.0f Mbit/s, %.0f packets, %.2f%% lost, jitter %.3f ms", tc.name, sum.BPS/1e6, sum.Packets, sum.LostPercent, sum.JitterMS)
		})
	}
}

func TestRefusals(t *testing.T) {
	privtest.Tool(t, "iperf3")
	s := serve(t, &iperf3.Server{}) // no UDP
	r := client(t, s, false, "-t", "1", "--bidir")
	if !strings.Contains(r.Error, "not implemented") {
		t.Fatalf("--bidir: %q", r.Error)
	}
	r = client(t, s, false, "-t", "1", "-u")
	if !strings.Contains(r.Error, "not implemented") {
		t.Fatalf("-u without UDP: %q", r.Error)
	}
	// The server still runs tests after refusing some.
	client(t, s, true, "-t", "1")
}

// Hostile control connections, by hand.

const (
	paramExchange = 9
	createStreams = 10
	accessDenied  = 0xff
	serverError   = 0xfe
)

func dial(t *testing.T, s *served) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c
}

func cookie() []byte {
	b := make([]byte, 37)
	const letters = "abcdefghijklmnopqrstuvwxyz234567"
	rand.Read(b[:36])
	for i := range 36 {
		b[i] = letters[b[i]%32]
	}
	b[36] = 0
	return b
}

func readByte(t *testing.T, c net.Conn) byte {
	t.Helper()
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("reading a state: %v", err)
	}
	return b[0]
}

// expectClosed checks the server hangs up within a few seconds.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection")
	}
}

// control opens a control connection and reads PARAM_EXCHANGE, retrying
// while the server is still finishing an earlier (abandoned) test.
func control(t *testing.T, s *served, ck []byte) net.Conn {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		c := dial(t, s)
		c.Write(ck)
		st := readByte(t, c)
		if st == paramExchange {
			return c
		}
		c.Close()
		if st != accessDenied || time.Now().After(deadline) {
			t.Fatalf("state %d, want PARAM_EXCHANGE", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jsonMsg(v string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(v))), v...)
}

func TestHostileControl(t *testing.T) {
	s := serve(t, &iperf3.Server{ListenUDP: kernelUDP, Timeout: time.Second})
	base := runtime.NumGoroutine()

	t.Run("garbage", func(t *testing.T) {
		c := dial(t, s)
		junk := make([]byte, 200)
		rand.Read(junk)
		c.Write(junk) // a "cookie", then a JSON length of whatever
		expectClosed(t, c)
	})
	t.Run("huge JSON", func(t *testing.T) {
		c := control(t, s, cookie())
		c.Write([]byte{0x7f, 0xff, 0xff, 0xff})
		expectClosed(t, c)
	})
	t.Run("truncated JSON", func(t *testing.T) {
		c := control(t, s, cookie())
		c.Write(jsonMsg(`{"tcp":true,"time":1}`)[:12])
		c.(*net.TCPConn).CloseWrite()
		expectClosed(t, c)
	})
	t.Run("not JSON", func(t *testing.T) {
		c := control(t, s, cookie())
		c.Write(jsonMsg(`{"tcp":tru`))
		expectClosed(t, c)
	})
	t.Run("short cookie", func(t *testing.T) {
		c := dial(t, s)
		c.Write([]byte("abc"))
		c.(*net.TCPConn).CloseWrite()
		expectClosed(t, c)
	})
	t.Run("stalled client", func(t *testing.T) {
		c := control(t, s, cookie())
		start := time.Now()
		expectClosed(t, c) // Timeout (1 s) ends the wait for parameters
		if time.Since(start) > 4*time.Second {
			t.Fatal("the parameter timeout did not apply")
		}
	})
	t.Run("refused parameters", func(t *testing.T) {
		for _, p := range []string{`{"tcp":true,"bidirectional":true}`, `{"tcp":true,"parallel":100000}`,
			`{"sctp":true}`, `{"udp":true,"len":4}`, `{"tcp":true,"len":-1}`} {
			c := control(t, s, cookie())
			c.Write(jsonMsg(p))
			if st := readByte(t, c); st != serverError {
				t.Fatalf("%s: state %d, want SERVER_ERROR", p, st)
			}
			var ie [4]byte
			if _, err := io.ReadFull(c, ie[:]); err != nil || binary.BigEndian.Uint32(ie[:]) == 0 {
				t.Fatalf("%s: error number %x %v", p, ie, err)
			}
			expectClosed(t, c)
		}
	})
	t.Run("wrong cookie while a test runs", func(t *testing.T) {
		ck := cookie()
		ctl := control(t, s, ck)
		ctl.Write(jsonMsg(`{"tcp":true,"time":1,"parallel":1}`))
		if st := readByte(t, ctl); st != createStreams {
			t.Fatalf("state %d, want CREATE_STREAMS", st)
		}
		// Another client, and a stream with the wrong cookie, are told
		// ACCESS_DENIED.
		for range 2 {
			other := dial(t, s)
			other.Write(cookie())
			if st := readByte(t, other); st != accessDenied {
				t.Fatalf("intruder got state %d", st)
			}
			expectClosed(t, other)
		}
		// The real client then walks away: the test is abandoned when the
		// streams do not arrive.
		ctl.Close()
	})
	t.Run("control closes mid-test", func(t *testing.T) {
		ck := cookie()
		ctl := control(t, s, ck)
		ctl.Write(jsonMsg(`{"tcp":true,"time":30,"parallel":2,"reverse":true}`))
		readByte(t, ctl)
		for range 2 {
			d := dial(t, s)
			d.Write(ck)
		}
		if st := readByte(t, ctl); st != 1 {
			t.Fatalf("state %d, want TEST_START", st)
		}
		readByte(t, ctl) // TEST_RUNNING
		ctl.Close()      // mid-test, streams still open and unread
	})

	// Every hostile client's goroutines end, and the server is free again.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines after the hostile clients left, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
	if ok, failed := s.srv.Tests(); ok != 0 || failed == 0 {
		t.Fatalf("tests completed %d, abandoned %d", ok, failed)
	}
	if _, err := exec.LookPath("iperf3"); err == nil {
		client(t, s, true, "-t", "1")
	}
}
