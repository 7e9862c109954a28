package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/netstation/netstation/internal/ctl"
)

// ErrUnauthenticated: a peer request without a valid MAC reached an agent
// that has a cluster key.
var ErrUnauthenticated = errors.New("unauthenticated peer request")

// maxSkew bounds the age of a signed peer request (replays of older ones
// are refused) and the clock difference between hosts it tolerates.
const maxSkew = 60 * time.Second

// signed is the envelope of every request between agents: the arguments
// and, when the cluster has a key, an HMAC-SHA256 over the operation, the
// time and the arguments.
type signed struct {
	Time int64           `json:"time"` // Unix nanoseconds
	MAC  []byte          `json:"mac,omitempty"`
	Body json.RawMessage `json:"body,omitempty"`
}

func (a *Agent) mac(op string, t int64, body []byte) []byte {
	m := hmac.New(sha256.New, a.cfg.Key)
	m.Write([]byte(op))
	m.Write([]byte{0})
	m.Write(strconv.AppendInt(nil, t, 10))
	m.Write([]byte{0})
	m.Write(body)
	return m.Sum(nil)
}

// seal wraps args for op.
func (a *Agent) seal(op string, args any) (signed, error) {
	s := signed{Time: time.Now().UnixNano()}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return s, err
		}
		s.Body = b
	}
	if len(a.cfg.Key) > 0 {
		s.MAC = a.mac(op, s.Time, s.Body)
	}
	return s, nil
}

// open checks a peer request and returns it with its arguments unwrapped.
func (a *Agent) open(req ctl.Request) (ctl.Request, error) {
	var s signed
	if err := req.Decode(&s); err != nil {
		return req, err
	}
	if len(a.cfg.Key) > 0 {
		age := time.Since(time.Unix(0, s.Time))
		if !hmac.Equal(s.MAC, a.mac(req.Op, s.Time, s.Body)) {
			return req, fmt.Errorf("%w: %s: bad or missing MAC (do the agents share --key-file?)", ErrUnauthenticated, req.Op)
		}
		if age > maxSkew || age < -maxSkew {
			return req, fmt.Errorf("%w: %s: signed %v ago (replayed, or the hosts' clocks differ)", ErrUnauthenticated, req.Op, age.Round(time.Second))
		}
	}
	req.Args = s.Body
	return req, nil
}

// callPeer sends one signed request to another agent's RPC port.
func (a *Agent) callPeer(ctx context.Context, addr, op string, args, out any, each func(json.RawMessage) error) error {
	s, err := a.seal(op, args)
	if err != nil {
		return err
	}
	return ctl.CallNet(ctx, "tcp", addr, op, s, out, each)
}

// gossipKey derives memberlist's AES-256 key from the cluster key.
func gossipKey(key []byte) []byte {
	k := sha256.Sum256(append([]byte("netstation gossip\x00"), key...))
	return k[:]
}

// diskKeySeed is what the hosts' disk capability keys derive from
// (testbed.UpOptions.DiskKeySeed): nil without a cluster key.
func diskKeySeed(key []byte) []byte {
	if len(key) == 0 {
		return nil
	}
	k := sha256.Sum256(append([]byte("netstation disk keys\x00"), key...))
	return k[:]
}
