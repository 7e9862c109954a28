package iperf3_test

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/netstation/netstation/cpu/iperf3"
)

// pipeListener hands the server in-memory connections.
type pipeListener struct {
	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: iperf3.Port}
}

// FuzzControl feeds arbitrary bytes to the server as a client's control
// connection: cookie, parameters, states, results. It must neither panic
// nor hang (Close at the end waits for every connection's goroutine).
func FuzzControl(f *testing.F) {
	ck := make([]byte, 37)
	for i := range 36 {
		ck[i] = 'a' + byte(i%26)
	}
	msg := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	js := func(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }
	f.Add(ck)
	f.Add(msg(ck, js(`{"tcp":true,"time":1,"parallel":1,"len":131072}`)))
	f.Add(msg(ck, js(`{"udp":true,"time":1,"parallel":2,"len":1460,"bandwidth":1048576,"udp_counters_64bit":1}`)))
	f.Add(msg(ck, js(`{"tcp":true,"bidirectional":true}`)))
	f.Add(msg(ck, js(`{"tcp":true,"parallel":-3}`), []byte{4, 13, 16}))
	f.Add(msg(ck, []byte{0xff, 0xff, 0xff, 0xff}))
	f.Add(msg(ck, js(`[1,2,3]`)))

	ln := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &iperf3.Server{Timeout: 50 * time.Millisecond, MaxDuration: time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	f.Cleanup(func() {
		srv.Close()
		<-served
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		select {
		case ln.conns <- server:
		case <-time.After(5 * time.Second):
			t.Fatal("the server stopped accepting")
		}
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(time.Second))
		client.Write(in)
		client.Close()
	})
}
