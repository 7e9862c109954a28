package diskproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/netstation/netstation/internal/wire/crc"
)

// Wire constants. The layouts are tabled in docs/protocols/disk.md.
const (
	Magic = 0x4E44 // "ND": netstation disk
	// Version 5: a retransmission of a request the disk is still running
	// is answered CodeInProgress, and one of a READ whose reply has left
	// CodeSent, instead of silence or a second reading (a READ asks for
	// all of it again with FlagHave and an empty bitmap); 4: a READ
	// carries the rate at which the disk is to pace its reply (the
	// request header grows by 8 bytes); 3: receivers report which
	// datagrams of a segmented message they hold (SACK) and senders
	// resend only the missing ones; 2: data larger than a datagram
	// travels in segments.
	Version = 5

	// Port is the UDP port a disk peripheral serves on.
	Port = 10810

	// RequestHeaderSize is the fixed size of a request header, capability
	// and pace rate included; a WRITE's data follows it.
	RequestHeaderSize = 136
	// LegacyRequestHeaderSize is the request header of versions 2 and 3:
	// version 4's without the pace rate. A disk recognizes such requests
	// to refuse them (OtherVersion); a client probes with one
	// (LegacyRequest).
	LegacyRequestHeaderSize = 128
	// ReplyHeaderSize is the fixed size of a reply header; a READ's data or
	// an INFO's InfoPayload follows it.
	ReplyHeaderSize = 48
	// CapabilitySize is the size of the capability field of every request.
	CapabilitySize = 64
	// InfoPayloadSize is the size of an INFO reply's payload.
	InfoPayloadSize = 28

	// MaxDatagram is the largest UDP payload over IPv4.
	MaxDatagram = 65507
	// MaxPayload is the most data one request or reply can carry in its
	// own datagram; more travels in data segments (segment.go).
	MaxPayload = MaxDatagram - RequestHeaderSize
	// MaxIOLimit bounds the data of one request: the largest MaxIO a server
	// may advertise.
	MaxIOLimit = 4 << 20

	// MaxWindow bounds the window a server may advertise, so a client's
	// per-window tables stay small whatever a server claims.
	MaxWindow = 1 << 16

	replyBit   = 0x80
	segmentBit = 0x40
)

// Op is a request's operation.
type Op uint8

// The operations.
const (
	OpInfo  Op = 1 // size, block size, window, largest I/O; opens a session
	OpRead  Op = 2
	OpWrite Op = 3
	OpFlush Op = 4 // every write acknowledged before it is durable when it is answered
	OpTrim  Op = 5 // the range reads back as zeros
	// OpTransfer: a third-party transfer order (transfer.go): the disk
	// reads [offset, offset+length) and streams it as tiles to a
	// display; the reply comes when the display has presented it all.
	OpTransfer Op = 6
)

// NumOps bounds Op values, for tables indexed by Op.
const NumOps = 7

var opNames = [NumOps]string{"unknown", "info", "read", "write", "flush", "trim", "transfer"}

func (o Op) String() string {
	if o > 0 && int(o) < NumOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Valid reports whether o is a defined operation.
func (o Op) Valid() bool { return o >= OpInfo && o <= OpTransfer }

// Flags modify a request.
type Flags uint16

// The request flags.
const (
	// FlagFUA (force unit access) makes a WRITE durable before it is
	// answered. It is valid on WRITE only.
	FlagFUA Flags = 1 << 0
	// FlagReport asks the server, on a WRITE whose data is still
	// arriving, for a SACK of the datagrams it holds: the client's probe
	// when neither the reply nor a SACK came. Valid on WRITE only.
	FlagReport Flags = 1 << 1
	// FlagHave marks a READ retransmission whose payload is a bitmap of
	// the reply's datagrams the client holds (HeldBitmap's layout): the
	// server sends only the others. Valid on READ only.
	FlagHave Flags = 1 << 2

	validFlags = FlagFUA | FlagReport | FlagHave
)

// Features are advertised by the server in INFO.
type Features uint32

// The features.
const (
	// FeatureOpenAccess: the server runs in open mode and accepts the
	// all-zero capability.
	FeatureOpenAccess Features = 1 << 0
	FeatureTrim       Features = 1 << 1
	FeatureFUA        Features = 1 << 2
)

// Code is the status of a reply. Codes other than CodeOK are errors.
type Code uint16

// The status codes; docs/protocols/disk.md says which ends retry which.
const (
	CodeOK         Code = 0
	CodeBadRequest Code = 1  // malformed: length does not match, bad flags or reserved bits
	CodeBadOp      Code = 2  // unknown operation
	CodeChecksum   Code = 3  // the payload's CRC32C does not match: retransmit
	CodeInvalid    Code = 4  // length 0 where data is required
	CodeTooBig     Code = 5  // length above the advertised MaxIO
	CodeRange      Code = 6  // offset+length beyond the end of the disk
	CodeIO         Code = 7  // the backing store failed
	CodeNoSession  Code = 8  // unknown session or old epoch: send INFO, then retransmit
	CodeWindow     Code = 9  // request id outside the session's window
	CodeDenied     Code = 10 // the capability does not allow the request
	// CodeTransfer: a transfer order ran but the display did not confirm
	// every frame (it stopped answering, or tiles kept getting lost).
	CodeTransfer Code = 11
	// CodeVersion: the request spoke another version of the protocol.
	// The reply carries the requester's version byte, so an old client
	// can parse it; docs/protocols/disk.md.
	CodeVersion Code = 12
	// CodeInProgress (version 5): the request is queued or running at the
	// disk, or its READ reply is still leaving; its reply follows. The
	// answer to a retransmission, so that the client knows the request
	// arrived and holds its timer instead of backing off.
	CodeInProgress Code = 13
	// CodeSent (version 5): the whole reply to this READ has left the
	// disk. The answer to a READ retransmitted without FlagHave; a client
	// that still holds nothing of the reply lost all of it (the reply went
	// before this answer on the same path) and asks again with FlagHave
	// and an empty bitmap.
	CodeSent Code = 14
	NumCodes      = 15
)

var codeNames = [NumCodes]string{"ok", "bad request", "unknown operation", "payload checksum",
	"invalid length", "too big", "out of range", "i/o error", "no session", "outside window", "access denied",
	"transfer failed", "protocol version mismatch", "in progress", "reply sent"}

func (c Code) String() string {
	if int(c) < NumCodes {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// Error makes a Code usable as an error, so errors.Is(err, CodeRange) works
// on the client's errors.
func (c Code) Error() string { return "disk: " + c.String() }

// Parse errors. ReplyCode tells which of them still allow an error reply.
var (
	ErrShort           = errors.New("diskproto: datagram shorter than a header")
	ErrMagic           = errors.New("diskproto: bad magic")
	ErrVersion         = errors.New("diskproto: unsupported version")
	ErrHeaderChecksum  = errors.New("diskproto: header checksum mismatch")
	ErrNotReply        = errors.New("diskproto: not a reply")
	ErrNotRequest      = errors.New("diskproto: not a request")
	ErrUnknownOp       = errors.New("diskproto: unknown operation")
	ErrFlags           = errors.New("diskproto: bad flags or reserved bits")
	ErrLength          = errors.New("diskproto: length field does not match the datagram")
	ErrPayloadChecksum = errors.New("diskproto: payload checksum mismatch")
	ErrBuffer          = errors.New("diskproto: buffer too small")
	ErrPayloadSize     = errors.New("diskproto: payload too large for one datagram")
	ErrSegment         = errors.New("diskproto: bad data segment")
)

// ReplyCode returns the code a server answers a request that failed
// ParseRequest with err. ok is false when the header cannot be trusted
// (short, bad magic, version or header checksum): such a datagram is
// dropped and counted, never answered.
func ReplyCode(err error) (c Code, ok bool) {
	switch {
	case errors.Is(err, ErrUnknownOp):
		return CodeBadOp, true
	case errors.Is(err, ErrFlags), errors.Is(err, ErrLength):
		return CodeBadRequest, true
	case errors.Is(err, ErrPayloadChecksum):
		return CodeChecksum, true
	}
	return 0, false
}

// Checksum is the CRC32C (Castagnoli) of p, the checksum of every payload.
func Checksum(p []byte) uint32 { return crc.Sum(p) }

// UpdateChecksum continues sum (a Checksum so far) over p: the checksum of
// data that lies in pieces.
func UpdateChecksum(sum uint32, p []byte) uint32 { return crc.Update(sum, p) }

var be = binary.BigEndian

// Request is a decoded request. Payload aliases the parsed datagram.
type Request struct {
	Op      Op
	Flags   Flags
	Tag     uint32 // fresh per transmission; echoed in the reply
	Length  uint32 // bytes to read, write or trim
	Session uint64 // the client's random session id
	ReqID   uint64 // stable across retransmissions of one operation
	Low     uint64 // every request id below it is finished at the client
	Epoch   uint64 // the server's boot epoch from INFO; 0 in INFO
	Offset  uint64
	// ReplyDatagram is the size the client wants a READ's reply cut to
	// (0: the server's choice; else MinDatagram to MaxDatagram): the
	// client knows its own receive path.
	ReplyDatagram uint16
	Capability    [CapabilitySize]byte
	// PayloadCRC is the CRC32C of all of a WRITE's data (Length bytes).
	PayloadCRC uint32
	// PaceRate is the rate, in bytes per second, at which the disk is to
	// send a READ's reply data (version 4): the client's congestion
	// window per RTT, as it paces its own WRITE data. 0: unpaced (no RTT
	// sample yet). Only a READ may carry one.
	PaceRate uint64
	// Payload is the WRITE data carried in the header's datagram: all of
	// it, or its first part when Partial (the rest arrives in segments).
	Payload []byte
}

// Partial reports whether part of a WRITE's data travels in segments.
func (r *Request) Partial() bool { return r.Op == OpWrite && uint32(len(r.Payload)) < r.Length }

// Marshal writes r (header and payload) into b and returns the datagram's
// length. For a WRITE, Length is taken from len(Payload); a READ with
// FlagHave carries its bitmap as the payload and keeps its Length.
func (r *Request) Marshal(b []byte) (int, error) {
	if len(r.Payload) > MaxPayload {
		return 0, ErrPayloadSize
	}
	n := RequestHeaderSize + len(r.Payload)
	if len(b) < n {
		return 0, ErrBuffer
	}
	h := *r
	if r.Op != OpTransfer && r.Flags&FlagHave == 0 && (r.Op == OpWrite || len(r.Payload) > 0) {
		h.Length = uint32(len(r.Payload))
	}
	h.PayloadCRC = Checksum(r.Payload)
	copy(b[RequestHeaderSize:], r.Payload)
	h.MarshalHeader(b)
	return n, nil
}

// MarshalHeader writes r's header into b[:RequestHeaderSize] with r.Length
// and r.PayloadCRC as given: the form of a segmented WRITE, whose data
// the caller lays out after it (see Layout).
func (r *Request) MarshalHeader(b []byte) {
	be.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = byte(r.Op)
	be.PutUint16(b[4:], uint16(r.Flags))
	be.PutUint16(b[6:], r.ReplyDatagram)
	be.PutUint32(b[8:], r.Tag)
	be.PutUint32(b[12:], r.Length)
	be.PutUint64(b[16:], r.Session)
	be.PutUint64(b[24:], r.ReqID)
	be.PutUint64(b[32:], r.Low)
	be.PutUint64(b[40:], r.Epoch)
	be.PutUint64(b[48:], r.Offset)
	be.PutUint32(b[56:], r.PayloadCRC)
	copy(b[64:LegacyRequestHeaderSize], r.Capability[:])
	be.PutUint64(b[128:], r.PaceRate)
	crc.Seal(b[:RequestHeaderSize], requestCRCField)
}

// SetRequestDataCRC stores the data CRC of a marshalled request, unsealed:
// RewriteRequest or RewriteRequestFlags re-seals the header before it is
// sent. For a sender that sums the data only just before sending it.
func SetRequestDataCRC(b []byte, sum uint32) { be.PutUint32(b[56:], sum) }

// RewriteRequest updates the tag, low-water mark and epoch of a marshalled
// request in place and re-seals its header: what a retransmission changes.
func RewriteRequest(b []byte, tag uint32, low, epoch uint64) {
	be.PutUint32(b[8:], tag)
	be.PutUint64(b[32:], low)
	be.PutUint64(b[40:], epoch)
	crc.Seal(b[:RequestHeaderSize], requestCRCField)
}

// RewriteRequestFlags is RewriteRequest that also sets the flags: a
// WRITE's probe adds FlagReport to the header it resends.
func RewriteRequestFlags(b []byte, flags Flags, tag uint32, low, epoch uint64) {
	be.PutUint16(b[4:], uint16(flags))
	RewriteRequest(b, tag, low, epoch)
}

// Offsets of the header checksum fields: each covers its header but
// itself (crc.Skipping).
const (
	requestCRCField = 60
	replyCRCField   = 44
	segmentCRCField = 12
	sackCRCField    = 12
)

// OtherVersion reports whether b looks like a request of another version
// of this protocol that can be answered: our magic, a version byte other
// than ours, and a header with its CRC intact in the layout of versions 2
// and 3 (LegacyRequestHeaderSize bytes, CRC at 60 over the rest) or in
// ours. It returns the version byte. A server answers such a request with
// VersionReply so that the requester learns why it is refused instead of
// timing out.
func OtherVersion(b []byte) (uint8, bool) {
	if len(b) < LegacyRequestHeaderSize || be.Uint16(b[0:]) != Magic || b[2] == Version ||
		b[3]&(replyBit|segmentBit) != 0 {
		return 0, false
	}
	if !crc.Valid(b[:LegacyRequestHeaderSize], requestCRCField) &&
		(len(b) < RequestHeaderSize || !crc.Valid(b[:RequestHeaderSize], requestCRCField)) {
		return 0, false
	}
	return b[2], true
}

// VersionReply writes into b (at least ReplyHeaderSize bytes) the reply to
// a request of another version (OtherVersion): the reply header of
// versions 2 to 5 (they share it) with the requester's version byte, its
// tag, session and request id, and status CodeVersion. It returns the
// reply's length.
func VersionReply(b, req []byte, epoch uint64) int {
	rep := Reply{Op: Op(req[3]), Status: CodeVersion, Tag: be.Uint32(req[8:]), Session: be.Uint64(req[16:]),
		ReqID: be.Uint64(req[24:]), Epoch: epoch, PayloadCRC: Checksum(nil)}
	rep.MarshalHeader(b)
	b[2] = req[2]
	crc.Seal(b[:ReplyHeaderSize], replyCRCField)
	return ReplyHeaderSize
}

// LegacyRequest writes into dst (at least LegacyRequestHeaderSize bytes)
// the header of the marshalled request b in the layout of versions 2 and
// 3 with version byte v (the pace rate left out) and returns its length:
// a client's probe in an older version, to tell a disk of that version
// from one that does not answer.
func LegacyRequest(dst, b []byte, v uint8) int {
	copy(dst, b[:LegacyRequestHeaderSize])
	dst[2] = v
	crc.Seal(dst[:LegacyRequestHeaderSize], requestCRCField)
	return LegacyRequestHeaderSize
}

// PeerVersion reports the version byte of a datagram that is a reply of
// another version of this protocol to session (magic, header CRC and
// session checked): how a client learns that the disk speaks another
// version.
func PeerVersion(b []byte, session uint64) (uint8, bool) {
	if len(b) < ReplyHeaderSize || be.Uint16(b[0:]) != Magic || b[2] == Version || b[3]&replyBit == 0 ||
		b[3]&segmentBit != 0 || !crc.Valid(b[:ReplyHeaderSize], replyCRCField) ||
		be.Uint64(b[16:]) != session {
		return 0, false
	}
	return b[2], true
}

// ParseRequest decodes and validates a request datagram. On errors that
// ReplyCode accepts, r holds the trustworthy header fields (so an error
// reply can echo them); on the others r is zero.
func ParseRequest(b []byte) (r Request, err error) {
	switch {
	case len(b) < 3:
		return Request{}, ErrShort
	case be.Uint16(b[0:]) != Magic:
		return Request{}, ErrMagic
	case b[2] != Version:
		return Request{}, ErrVersion // another version's header may be shorter: say so first
	case len(b) < RequestHeaderSize:
		return Request{}, ErrShort
	}
	if !crc.Valid(b[:RequestHeaderSize], requestCRCField) {
		return Request{}, ErrHeaderChecksum
	}
	if b[3]&(replyBit|segmentBit) != 0 {
		return Request{}, ErrNotRequest
	}
	r = Request{
		Op:      Op(b[3]),
		Flags:   Flags(be.Uint16(b[4:])),
		Tag:     be.Uint32(b[8:]),
		Length:  be.Uint32(b[12:]),
		Session: be.Uint64(b[16:]),
		ReqID:   be.Uint64(b[24:]),
		Low:     be.Uint64(b[32:]),
		Epoch:   be.Uint64(b[40:]),
		Offset:  be.Uint64(b[48:]),

		ReplyDatagram: be.Uint16(b[6:]),
		PayloadCRC:    be.Uint32(b[56:]),
	}
	copy(r.Capability[:], b[64:LegacyRequestHeaderSize])
	r.PaceRate = be.Uint64(b[128:])
	payload := b[RequestHeaderSize:]
	switch {
	case !r.Op.Valid():
		return r, ErrUnknownOp
	case r.ReplyDatagram != 0 && (r.ReplyDatagram < MinDatagram || r.ReplyDatagram > MaxDatagram),
		r.Flags&^validFlags != 0, r.Flags&(FlagFUA|FlagReport) != 0 && r.Op != OpWrite,
		r.Flags&FlagHave != 0 && r.Op != OpRead, r.PaceRate != 0 && r.Op != OpRead:
		return r, ErrFlags
	case r.Op == OpWrite && uint64(len(payload)) > uint64(r.Length),
		r.Op == OpWrite && len(payload) == 0 && r.Length > 0,
		r.Op == OpTransfer && len(payload) != TransferOrderSize,
		r.Op == OpRead && r.Flags&FlagHave != 0 && (len(payload) == 0 || len(payload) > BitmapSize(MaxSegments(r.Length)+1)),
		r.Op != OpWrite && r.Op != OpTransfer && r.Flags&FlagHave == 0 && len(payload) != 0:
		return r, ErrLength
	case (r.Op == OpTransfer || r.Flags&FlagHave != 0 || uint64(len(payload)) == uint64(r.Length)) && r.PayloadCRC != Checksum(payload):
		return r, ErrPayloadChecksum
	}
	r.Payload = payload
	return r, nil
}

// Reply is a decoded reply. Payload aliases the parsed datagram.
type Reply struct {
	Op      Op // the request's operation
	Status  Code
	Tag     uint32 // the tag of the transmission being answered
	Session uint64
	ReqID   uint64
	Epoch   uint64 // the server's boot epoch
	// Length and PayloadCRC describe all of the reply's data: a READ's may
	// be longer than Payload, the part in this datagram (Partial).
	Length     uint32
	PayloadCRC uint32
	Payload    []byte // READ data or an InfoPayload
}

// Partial reports whether part of a READ reply's data travels in segments.
func (r *Reply) Partial() bool { return uint32(len(r.Payload)) < r.Length }

// Marshal writes r (header and all of its payload) into b and returns the
// datagram's length; Length and PayloadCRC are taken from Payload.
func (r *Reply) Marshal(b []byte) (int, error) {
	if len(r.Payload) > MaxDatagram-ReplyHeaderSize {
		return 0, ErrPayloadSize
	}
	n := ReplyHeaderSize + len(r.Payload)
	if len(b) < n {
		return 0, ErrBuffer
	}
	copy(b[ReplyHeaderSize:], r.Payload)
	r.Length, r.PayloadCRC = uint32(len(r.Payload)), Checksum(r.Payload)
	r.MarshalHeader(b)
	return n, nil
}

// MarshalHeader writes r's header into b[:ReplyHeaderSize] with r.Length
// and r.PayloadCRC as given. Servers read data straight into place after
// it (see Layout) and so avoid a copy.
func (r *Reply) MarshalHeader(b []byte) {
	be.PutUint16(b[0:], Magic)
	b[2] = Version
	b[3] = byte(r.Op) | replyBit
	be.PutUint16(b[4:], uint16(r.Status))
	be.PutUint16(b[6:], 0)
	be.PutUint32(b[8:], r.Tag)
	be.PutUint32(b[12:], r.Length)
	be.PutUint64(b[16:], r.Session)
	be.PutUint64(b[24:], r.ReqID)
	be.PutUint64(b[32:], r.Epoch)
	be.PutUint32(b[40:], r.PayloadCRC)
	crc.Seal(b[:ReplyHeaderSize], replyCRCField)
}

// ParseReply decodes and validates a reply datagram.
func ParseReply(b []byte) (Reply, error) {
	if len(b) < ReplyHeaderSize {
		return Reply{}, ErrShort
	}
	if be.Uint16(b[0:]) != Magic {
		return Reply{}, ErrMagic
	}
	if b[2] != Version {
		return Reply{}, ErrVersion
	}
	if !crc.Valid(b[:ReplyHeaderSize], replyCRCField) {
		return Reply{}, ErrHeaderChecksum
	}
	if b[3]&replyBit == 0 || b[3]&segmentBit != 0 {
		return Reply{}, ErrNotReply
	}
	if be.Uint16(b[6:]) != 0 {
		return Reply{}, ErrFlags
	}
	r := Reply{
		Op:         Op(b[3] &^ replyBit),
		Status:     Code(be.Uint16(b[4:])),
		Tag:        be.Uint32(b[8:]),
		Length:     be.Uint32(b[12:]),
		Session:    be.Uint64(b[16:]),
		ReqID:      be.Uint64(b[24:]),
		Epoch:      be.Uint64(b[32:]),
		PayloadCRC: be.Uint32(b[40:]),
		Payload:    b[ReplyHeaderSize:],
	}
	n := uint64(len(r.Payload))
	switch {
	case n > uint64(r.Length),
		n < uint64(r.Length) && (r.Op != OpRead || r.Status != CodeOK || n == 0):
		return Reply{}, ErrLength
	case n == uint64(r.Length) && r.PayloadCRC != Checksum(r.Payload):
		return Reply{}, ErrPayloadChecksum
	}
	return r, nil
}

// InfoPayload is the payload of a successful INFO reply.
type InfoPayload struct {
	Size      uint64 // bytes
	BlockSize uint32 // the unit of atomicity and of TRIM's preference
	Window    uint32 // requests a session may have outstanding
	MaxIO     uint32 // the largest READ/WRITE/TRIM length of one request
	Features  Features
	// WindowBytes caps the READ and WRITE data a session may have in
	// flight: what the server's receive queue holds without dropping.
	WindowBytes uint32
}

// Marshal returns p's wire form.
func (p InfoPayload) Marshal() []byte {
	b := make([]byte, InfoPayloadSize)
	be.PutUint64(b[0:], p.Size)
	be.PutUint32(b[8:], p.BlockSize)
	be.PutUint32(b[12:], p.Window)
	be.PutUint32(b[16:], p.MaxIO)
	be.PutUint32(b[20:], uint32(p.Features))
	be.PutUint32(b[24:], p.WindowBytes)
	return b
}

// ParseInfo decodes an INFO reply's payload and checks it is usable.
func ParseInfo(b []byte) (InfoPayload, error) {
	if len(b) != InfoPayloadSize {
		return InfoPayload{}, ErrLength
	}
	p := InfoPayload{
		Size:      be.Uint64(b[0:]),
		BlockSize: be.Uint32(b[8:]),
		Window:    be.Uint32(b[12:]),
		MaxIO:     be.Uint32(b[16:]),
		Features:  Features(be.Uint32(b[20:])),

		WindowBytes: be.Uint32(b[24:]),
	}
	if p.BlockSize == 0 || p.Window == 0 || p.Window > MaxWindow || p.MaxIO == 0 || p.MaxIO > MaxIOLimit ||
		p.WindowBytes < MinDatagram {
		return InfoPayload{}, fmt.Errorf("%w: block size %d, window %d, max I/O %d, window bytes %d",
			ErrLength, p.BlockSize, p.Window, p.MaxIO, p.WindowBytes)
	}
	return p, nil
}
