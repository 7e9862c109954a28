package accept

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestGroup: connections are served with their accept order, Close ends a
// serve blocked on its connection and waits for it, Serve then returns
// nil, and a closed Group refuses listeners and connections.
func TestGroup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var g Group
	var mu sync.Mutex
	order := map[string]uint64{}
	served := make(chan struct{}, 3)
	ended := make(chan error, 3)
	serveDone := make(chan error, 1)
	go func() {
		serveDone <- g.Serve(ln, func(c net.Conn, n uint64) {
			defer g.Release(c)
			var name [1]byte
			if _, err := io.ReadFull(c, name[:]); err != nil {
				ended <- err
				return
			}
			mu.Lock()
			order[string(name[:])] = n
			mu.Unlock()
			served <- struct{}{}
			_, err := c.Read(name[:]) // blocks until Close closes c
			ended <- err
		}, Options{})
	}()
	var clients []net.Conn
	for _, name := range []string{"a", "b", "c"} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(name)); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		<-served // accepted in this order
	}
	if order["a"] != 0 || order["b"] != 1 || order["c"] != 2 {
		t.Errorf("accept order %v", order)
	}
	closed := make(chan error, 1)
	go func() { closed <- g.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the serves blocked on their connections")
	}
	for range clients {
		if err := <-ended; err == nil {
			t.Error("a serve's read ended without an error after Close")
		}
	}
	if err := <-serveDone; err != nil {
		t.Errorf("Serve after Close: %v", err)
	}
	if err := g.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if err := g.Serve(ln2, func(net.Conn, uint64) { t.Error("served after Close") }, Options{}); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve on a closed Group: %v", err)
	}
	a, b := net.Pipe()
	defer b.Close()
	if err := g.Run(a, func(net.Conn) { t.Error("ran after Close") }); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on a closed Group: %v", err)
	}
	if _, err := a.Write([]byte{1}); err == nil {
		t.Error("Run on a closed Group left the connection open")
	}
}

// TestGroupRunWaited: Close closes a connection served by Run and waits
// for Run to return.
func TestGroupRunWaited(t *testing.T) {
	var g Group
	a, b := net.Pipe()
	defer b.Close()
	started, returned := make(chan struct{}), make(chan struct{})
	go func() {
		g.Run(a, func(c net.Conn) {
			defer g.Release(c)
			close(started)
			var x [1]byte
			c.Read(x[:])
		})
		close(returned)
	}()
	<-started
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	default:
		t.Fatal("Close returned before Run")
	}
}
