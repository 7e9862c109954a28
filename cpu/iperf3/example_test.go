package iperf3_test

import (
	"fmt"
	"log"
	"net"

	"github.com/netstation/netstation/cpu/iperf3"
)

// Serve iperf3 tests on kernel sockets; in a testbed the listener and the
// UDP sockets are cpu0's user-level stack's, on port iperf3.Port. Stock
// clients then run `iperf3 -c ADDRESS -p PORT` (-R, -P, -u, -J).
func Example() {
	srv := &iperf3.Server{
		ListenUDP: func(port int) (iperf3.DatagramConn, error) {
			return net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		},
	}
	defer srv.Close()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	// A client opens with its 37-byte cookie; the server asks for the
	// test's parameters (PARAM_EXCHANGE, 9).
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.Write(make([]byte, 37))
	state := make([]byte, 1)
	c.Read(state)
	fmt.Println(state[0])
	// Output: 9
}
