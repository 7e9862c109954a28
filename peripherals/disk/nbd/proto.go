package nbd

// Wire constants of the NBD protocol (doc/proto.md of NetworkBlockDevice/nbd).
const (
	// Port is the IANA port of NBD.
	Port = 10809

	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic = 0x3e889045565a9

	requestMagic     = 0x25609513
	simpleReplyMagic = 0x67446698

	// Handshake flags (server) and client flags.
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
	clientFlagsKnown  = flagFixedNewstyle | flagNoZeroes

	// Options.
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8

	// Option reply types.
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repErrUnsup     = 1<<31 + 1
	repErrPolicy    = 1<<31 + 2
	repErrInvalid   = 1<<31 + 3
	repErrUnknown   = 1<<31 + 6
	repErrTooBig    = 1<<31 + 9
	repFlagErrorBit = 1 << 31

	// Info types.
	infoExport    = 0
	infoBlockSize = 3

	// Transmission flags.
	transHasFlags     = 1 << 0
	transSendFlush    = 1 << 2
	transSendFUA      = 1 << 3
	transSendTrim     = 1 << 5
	transCanMultiConn = 1 << 8

	// Commands.
	cmdRead  = 0
	cmdWrite = 1
	cmdDisc  = 2
	cmdFlush = 3
	cmdTrim  = 4

	// Command flags.
	cmdFlagFUA = 1 << 0

	// Errors of simple replies (Linux errno values, as the protocol says).
	errPerm     = 1
	errIO       = 5
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errShutdown = 108

	requestSize     = 28
	simpleReplySize = 16

	// MaxPayload is the largest READ or WRITE the server accepts: the
	// maximum block size it advertises (32 MiB, the protocol's customary
	// limit). Larger READs get EINVAL; a larger WRITE ends the connection,
	// since its payload cannot be skipped cheaply.
	MaxPayload = 32 << 20
	// maxOptionData bounds an option's data; larger options end the
	// negotiation (a name is at most 4096 bytes).
	maxOptionData = 64 << 10
	maxNameLen    = 4096
)
