package peripherals

import (
	"context"
	"errors"

	"github.com/netstation/netstation/internal/ctl"
)

// Op names a control-socket operation. The runtime's own are below; each
// kind declares its own next to its argument and reply types.
type Op string

// The runtime's control ops, served by every peripheral.
const (
	OpStatus   Op = "status"   // -> Status
	OpPing     Op = "ping"     // PingArgs -> PingReply..., PingSummary
	OpShutdown Op = "shutdown" // stop the peripheral
	OpImpair   Op = "impair"   // impair.Params -> impair.Params in force
	OpKernel   Op = "kernel"   // bool -> the kernel baseline's address
	OpMembers  Op = "members"  // -> MembersView
	OpJoin     Op = "join"     // JoinArgs -> JoinResult: full-state exchanges (ends Config.DeferJoin's wait)
	// OpDeclareDead: DeclareDeadArgs -> nothing: the peripheral declares
	// a member dead (the testbed supervisor's watchdog).
	OpDeclareDead Op = "declare-dead"
	OpBenchRecv   Op = "bench-recv"
	OpBenchSend   Op = "bench-send"
	OpBenchEcho   Op = "bench-echo"
	OpBenchRTT    Op = "bench-rtt"
	OpPin         Op = "pin" // PinArgs -> PinResult: every thread of the process on those CPUs
	OpProbeRecv   Op = "probe-recv"
	OpProbeSend   Op = "probe-send"
)

// ErrUnknownOp: the peripheral serves no such op.
var ErrUnknownOp = errors.New("unknown op")

// Stream lets an op's handler send intermediate responses (progress)
// before its result.
type Stream = ctl.Stream

// HandleArgs adds op to rt with arguments decoded into an A: the common
// shape of a kind's op. s streams intermediate responses.
func HandleArgs[A any](rt *Runtime, op Op, f func(ctx context.Context, args A, s *Stream) (any, error)) {
	rt.Handle(op, func(ctx context.Context, req ctl.Request, s *ctl.Stream) (any, error) {
		var a A
		if err := req.Decode(&a); err != nil {
			return nil, err
		}
		return f(ctx, a, s)
	})
}
