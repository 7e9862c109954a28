package accept_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/internal/accept"
)

// fakeListener returns the errors of script in turn, then blocks until
// Close.
type fakeListener struct {
	mu     sync.Mutex
	script []error
	calls  atomic.Int64
	closed chan struct{}
}

func newFake(script ...error) *fakeListener {
	return &fakeListener{script: script, closed: make(chan struct{})}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	f.calls.Add(1)
	select {
	case <-f.closed:
		return nil, net.ErrClosed
	default:
	}
	f.mu.Lock()
	if len(f.script) > 0 {
		err := f.script[0]
		f.script = f.script[1:]
		f.mu.Unlock()
		if err == nil {
			a, b := net.Pipe()
			b.Close()
			return a, nil
		}
		return nil, err
	}
	f.mu.Unlock()
	<-f.closed
	return nil, net.ErrClosed
}
func (f *fakeListener) Close() error   { close(f.closed); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{} }

func emfile() error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}

// TestSurvivesTransientErrors: EMFILE and a timeout between two
// connections do not end the loop; both connections are handled.
func TestSurvivesTransientErrors(t *testing.T) {
	ln := newFake(nil, emfile(), emfile(), &net.OpError{Op: "accept", Err: os.ErrDeadlineExceeded}, nil)
	var handled atomic.Int64
	var retries []time.Duration
	done := make(chan error, 1)
	go func() {
		done <- accept.Loop(ln, func(c net.Conn) { c.Close(); handled.Add(1) },
			accept.Options{OnRetry: func(_ error, w time.Duration) { retries = append(retries, w) }})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for handled.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("Loop returned %v after Close, want nil", err)
	}
	if handled.Load() != 2 {
		t.Fatalf("handled %d connections, want 2", handled.Load())
	}
	want := []time.Duration{accept.MinBackoff, 2 * accept.MinBackoff, 4 * accept.MinBackoff}
	if fmt.Sprint(retries) != fmt.Sprint(want) {
		t.Fatalf("back-off pauses %v, want %v", retries, want)
	}
}

// TestNoSpin: a listener that fails forever is called a handful of times
// a second, not in a tight loop.
func TestNoSpin(t *testing.T) {
	errs := make([]error, 1000)
	for i := range errs {
		errs[i] = emfile()
	}
	ln := newFake(errs...)
	done := make(chan error, 1)
	go func() { done <- accept.Loop(ln, func(c net.Conn) { c.Close() }, accept.Options{}) }()
	time.Sleep(300 * time.Millisecond)
	ln.Close()
	if err := <-done; err != nil {
		t.Fatalf("Loop: %v", err)
	}
	// 5+10+20+40+80+160 ms = 315 ms: at most 7 calls in 300 ms (plus the
	// one after Close).
	if n := ln.calls.Load(); n > 8 {
		t.Fatalf("%d Accept calls in 300 ms on a failing listener: it spins", n)
	}
}

// TestPermanentErrorEnds: an error no retry cures ends the loop with it.
func TestPermanentErrorEnds(t *testing.T) {
	bad := errors.New("listener broke")
	ln := newFake(bad)
	err := accept.Loop(ln, func(c net.Conn) { c.Close() }, accept.Options{})
	if !errors.Is(err, bad) {
		t.Fatalf("Loop = %v, want it to wrap %v", err, bad)
	}
}

// TestStoppedEndsQuietly: after a deliberate stop any error ends the loop
// with nil.
func TestStoppedEndsQuietly(t *testing.T) {
	ln := newFake(errors.New("use of a closed listener, in its own words"))
	err := accept.Loop(ln, func(c net.Conn) { c.Close() }, accept.Options{Stopped: func() bool { return true }})
	if err != nil {
		t.Fatalf("Loop = %v after Stopped, want nil", err)
	}
}

const childEnv = "ACCEPT_TEST_EMFILE_CHILD"

// TestRealEMFILE runs a TCP server in a child process whose descriptor
// limit is a few above what it holds, so the kernel refuses accept4 with
// EMFILE while the server keeps connections open. The server then lets
// them go; the loop must have survived and serve every client.
func TestRealEMFILE(t *testing.T) {
	if os.Getenv(childEnv) != "" {
		emfileChild()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // a stuck child fails the test, not the suite
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRealEMFILE$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		t.Fatalf("child said %q (%v)", line, err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))
	const clients = 24
	var wg sync.WaitGroup
	var served atomic.Int64
	for range clients {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer c.Close()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			var b [1]byte
			if _, err := io.ReadFull(c, b[:]); err == nil && b[0] == 'x' {
				served.Add(1)
			}
		})
	}
	wg.Wait()
	rest, _ := io.ReadAll(r)
	cmd.Wait()
	f := strings.Fields(string(rest))
	if len(f) != 2 || f[0] != "RETRIES" {
		t.Fatalf("child's report %q", rest)
	}
	retries, _ := strconv.Atoi(f[1])
	if retries == 0 {
		t.Fatalf("no EMFILE happened: the test did not test anything")
	}
	if served.Load() != clients {
		t.Fatalf("%d of %d clients served after %d EMFILE retries", served.Load(), clients, retries)
	}
	t.Logf("%d clients served across %d EMFILE back-offs", clients, retries)
}

// emfileChild serves: it holds connections until accept fails with
// EMFILE, then answers and closes all it holds (and every later one at
// once), and exits after 24 answers.
func emfileChild() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	lim := syscall.Rlimit{Cur: uint64(len(fds) + 6), Max: uint64(len(fds) + 6)}
	// The limit is the process's, and the child does nothing else.
	var old syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old)
	lim.Max = old.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		panic(err)
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	var held []net.Conn
	var emfiles int
	release := false
	answered := 0
	answer := func(c net.Conn) {
		c.Write([]byte("x"))
		c.Close()
		answered++
		if answered == 24 {
			ln.Close()
		}
	}
	err = accept.Loop(ln, func(c net.Conn) {
		if release {
			answer(c)
			return
		}
		held = append(held, c)
	}, accept.Options{OnRetry: func(err error, _ time.Duration) {
		if !errors.Is(err, syscall.EMFILE) {
			return
		}
		emfiles++
		release = true
		for _, c := range held {
			answer(c)
		}
		held = nil
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
	}
	fmt.Printf("RETRIES %d\n", emfiles)
	os.Exit(0)
}
