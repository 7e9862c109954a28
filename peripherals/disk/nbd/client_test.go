package nbd_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// A raw NBD client, written from the protocol document independently of
// the server's code, so hostile and edge-case input can be sent exactly.

const (
	nbdMagic      = 0x4e42444d41474943
	optMagic      = 0x49484156454F5054
	optReplyMagic = 0x3e889045565a9
	reqMagic      = 0x25609513
	replyMagic    = 0x67446698

	optExportName = 1
	optAbort      = 2
	optList       = 3
	optInfo       = 6
	optGo         = 7
	optStructured = 8

	repAck        = 1
	repServer     = 2
	repInfo       = 3
	repErrUnsup   = 1<<31 + 1
	repErrPolicy  = 1<<31 + 2
	repErrInvalid = 1<<31 + 3
	repErrUnknown = 1<<31 + 6

	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3
	cmdTrim  = 4
	flagFUA  = 1

	ePerm  = 1
	eInval = 22
	eNoSpc = 28
)

type rawClient struct {
	t testing.TB
	c net.Conn
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c}
}

// hello reads the server's greeting and sends the client flags.
func (r *rawClient) hello(clientFlags uint32) error {
	var b [18]byte
	if _, err := io.ReadFull(r.c, b[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(b[0:]) != nbdMagic || binary.BigEndian.Uint64(b[8:]) != optMagic {
		return fmt.Errorf("bad greeting % x", b)
	}
	if f := binary.BigEndian.Uint16(b[16:]); f&3 != 3 {
		return fmt.Errorf("handshake flags %#x lack FIXED_NEWSTYLE|NO_ZEROES", f)
	}
	_, err := r.c.Write(binary.BigEndian.AppendUint32(nil, clientFlags))
	return err
}

func (r *rawClient) option(opt uint32, data []byte) error {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	_, err := r.c.Write(append(b, data...))
	return err
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (r *rawClient) optReply() (optReply, error) {
	var b [20]byte
	if _, err := io.ReadFull(r.c, b[:]); err != nil {
		return optReply{}, err
	}
	if m := binary.BigEndian.Uint64(b[:]); m != optReplyMagic {
		return optReply{}, fmt.Errorf("bad option reply magic %#x", m)
	}
	rep := optReply{opt: binary.BigEndian.Uint32(b[8:]), typ: binary.BigEndian.Uint32(b[12:])}
	rep.data = make([]byte, binary.BigEndian.Uint32(b[16:]))
	_, err := io.ReadFull(r.c, rep.data)
	return rep, err
}

func goData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// goExport runs NBD_OPT_GO and returns the export's size and flags, or
// the error reply type.
func (r *rawClient) goExport(name string) (size uint64, flags uint16, err error) {
	if err := r.option(optGo, goData(name, 3)); err != nil {
		return 0, 0, err
	}
	for {
		rep, err := r.optReply()
		if err != nil {
			return 0, 0, err
		}
		switch {
		case rep.typ == repAck:
			return size, flags, nil
		case rep.typ == repInfo && len(rep.data) >= 2 && binary.BigEndian.Uint16(rep.data) == 0:
			if len(rep.data) != 12 {
				return 0, 0, fmt.Errorf("INFO_EXPORT of %d bytes", len(rep.data))
			}
			size, flags = binary.BigEndian.Uint64(rep.data[2:]), binary.BigEndian.Uint16(rep.data[10:])
		case rep.typ == repInfo:
		default:
			return 0, 0, &repError{rep.typ, string(rep.data)}
		}
	}
}

type repError struct {
	typ uint32
	msg string
}

func (e *repError) Error() string { return fmt.Sprintf("option reply %#x: %s", e.typ, e.msg) }

func repType(err error) uint32 {
	var re *repError
	if errors.As(err, &re) {
		return re.typ
	}
	return 0
}

func (r *rawClient) request(typ, flags uint16, handle, off uint64, length uint32, data []byte) error {
	b := binary.BigEndian.AppendUint32(nil, reqMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	_, err := r.c.Write(append(b, data...))
	return err
}

// reply reads a simple reply; n is the data a successful READ carries.
func (r *rawClient) reply(dataLen func(handle uint64) int) (handle uint64, errno uint32, data []byte, err error) {
	var b [16]byte
	if _, err := io.ReadFull(r.c, b[:]); err != nil {
		return 0, 0, nil, err
	}
	if m := binary.BigEndian.Uint32(b[:]); m != replyMagic {
		return 0, 0, nil, fmt.Errorf("bad reply magic %#x", m)
	}
	errno, handle = binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint64(b[8:])
	if errno == 0 && dataLen != nil {
		data = make([]byte, dataLen(handle))
		_, err = io.ReadFull(r.c, data)
	}
	return handle, errno, data, err
}

// connect dials and negotiates export name with GO.
func connect(t testing.TB, addr, name string) (*rawClient, uint64) {
	t.Helper()
	r := dialRaw(t, addr)
	if err := r.hello(3); err != nil {
		t.Fatal(err)
	}
	size, _, err := r.goExport(name)
	if err != nil {
		t.Fatal(err)
	}
	return r, size
}

// expectClosed checks that the server closes the connection (without
// sending anything more than drain allows) within a few seconds.
func (r *rawClient) expectClosed() {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, r.c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatal("the server did not close the connection")
	}
}
