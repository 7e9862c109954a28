package iperf3

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/netstation/netstation/stack"
)

// Port is iperf3's default port.
const Port = 5201

// The control protocol's states: one signed byte on the control
// connection (iperf.h).
const (
	stateTestStart       = 1
	stateTestRunning     = 2
	stateTestEnd         = 4
	stateParamExchange   = 9
	stateCreateStreams   = 10
	stateServerTerminate = 11
	stateClientTerminate = 12
	stateExchangeResults = 13
	stateDisplayResults  = 14
	stateIperfStart      = 15
	stateIperfDone       = 16
	stateAccessDenied    = -1
	stateServerError     = -2
)

// iperf3's error numbers (iperf_api.h) that a SERVER_ERROR carries.
const (
	ieNumStreams   = 6
	ieBlockSize    = 7
	ieUnimplement  = 13
	ieStreamListen = 202
	ieStreamAccept = 204
)

const (
	// cookieSize is the client's 36 random characters and a NUL: the
	// first thing on the control connection and on every TCP stream.
	cookieSize = 37

	maxParamsJSON  = 64 << 10
	maxResultsJSON = 1 << 20

	defaultTCPBlockSize = 128 << 10
	defaultUDPBlockSize = 1460
	maxTCPBlockSize     = 1 << 20
	maxUDPBlockSize     = 65507
	// udpHeader32 and udpHeader64 are the UDP datagram headers: seconds
	// and microseconds of the send time, then the sequence number (from
	// 1) in 32 or 64 bits, all big-endian.
	udpHeader32 = 12
	udpHeader64 = 16

	// udpConnectReply answers a UDP stream's first datagram; iperf3 writes
	// it as a host-order int.
	udpConnectReply = 0x39383736
)

// DatagramConn is the socket of a UDP test: unconnected, bound to the
// control port, and demultiplexed by the client's address. Both a kernel
// *net.UDPConn and the user-level stack's *stack.UDPConn satisfy it.
type DatagramConn interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
	SetReadDeadline(t time.Time) error
	LocalAddr() net.Addr
	Close() error
}

var (
	_ DatagramConn = (*net.UDPConn)(nil)
	_ DatagramConn = (*stack.UDPConn)(nil)
)

// Errors.
var (
	ErrClosed = fmt.Errorf("iperf3: server closed: %w", net.ErrClosed)
	// ErrProtocol is wrapped by the reasons a test was abandoned because
	// the client broke the protocol.
	ErrProtocol = errors.New("iperf3: protocol violation")
)

// params is the client's PARAM_EXCHANGE message (iperf_api.c
// send_parameters); fields the server does not use are ignored.
type params struct {
	TCP           flag    `json:"tcp"`
	UDP           flag    `json:"udp"`
	Omit          float64 `json:"omit"`
	Time          float64 `json:"time"`
	Bytes         uint64  `json:"num"`
	Blocks        uint64  `json:"blockcount"`
	Parallel      int     `json:"parallel"`
	Reverse       flag    `json:"reverse"`
	Bidirectional flag    `json:"bidirectional"`
	Len           int     `json:"len"`
	Bandwidth     uint64  `json:"bandwidth"` // bits per second per stream; 0 unlimited
	Counters64    flag    `json:"udp_counters_64bit"`
	ClientVersion string  `json:"client_version"`
}

// limit is the data a -n or -k test moves over all its streams; 0 for a
// timed test.
func (p *params) limit() uint64 {
	if p.Blocks > 0 {
		return p.Blocks * uint64(p.Len)
	}
	return p.Bytes
}

// flag is a boolean parameter: iperf3 sends some as true and others as
// 1 (udp_counters_64bit).
type flag bool

func (f *flag) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "true":
		*f = true
	case "false", "null", "0":
		*f = false
	default:
		var n float64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("not a flag: %s", b)
		}
		*f = n != 0
	}
	return nil
}

// results is the server's EXCHANGE_RESULTS message (send_results).
type results struct {
	CPUTotal     float64        `json:"cpu_util_total"`
	CPUUser      float64        `json:"cpu_util_user"`
	CPUSystem    float64        `json:"cpu_util_system"`
	HasRetrans   int            `json:"sender_has_retransmits"`
	Streams      []streamResult `json:"streams"`
	ServerOutput string         `json:"server_output_text,omitempty"`
}

type streamResult struct {
	ID          int     `json:"id"`
	Bytes       uint64  `json:"bytes"`
	Retransmits int64   `json:"retransmits"`
	Jitter      float64 `json:"jitter"` // seconds
	Errors      int64   `json:"errors"`
	Omitted     int64   `json:"omitted_errors"`
	Packets     int64   `json:"packets"`
	StartTime   float64 `json:"start_time"`
	EndTime     float64 `json:"end_time"`
}

// streamID is iperf3's numbering of a test's streams: 1, then 3, 4, ...
// (iperf_add_stream), which the client matches results by.
func streamID(i int) int {
	if i == 0 {
		return 1
	}
	return i + 2
}

func writeState(c net.Conn, s int8) error {
	_, err := c.Write([]byte{byte(s)})
	return err
}

func readState(c net.Conn) (int8, error) {
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return int8(b[0]), nil
}

// serverError sends SERVER_ERROR with iperf3's error number, which the
// client prints ("not implemented yet", ...); errno is 0.
func serverError(c net.Conn, ie int32) error {
	var b [9]byte
	st := int8(stateServerError)
	b[0] = byte(st)
	binary.BigEndian.PutUint32(b[1:], uint32(ie))
	_, err := c.Write(b[:])
	return err
}

func readJSON(c net.Conn, limit uint32, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > limit {
		return fmt.Errorf("%w: JSON message of %d bytes (limit %d)", ErrProtocol, size, limit)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return nil
}

func writeJSON(c net.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b)))
	_, err = c.Write(append(out, b...))
	return err
}
