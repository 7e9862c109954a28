package ctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
)

// ErrNotRunning: the process or service asked for is not running.
var ErrNotRunning = errors.New("not running")

// Well-known error codes: a Response carries one beside its message, so
// the sentinel behind an error survives the socket and errors.Is works
// on the caller's side (see RemoteError).
const (
	CodeNotFound   = "not_found"   // os.ErrNotExist
	CodeExists     = "exists"      // os.ErrExist
	CodeClosed     = "closed"      // net.ErrClosed
	CodeDenied     = "denied"      // os.ErrPermission: access denied, refused
	CodeTimeout    = "timeout"     // context.DeadlineExceeded, os.ErrDeadlineExceeded
	CodeCanceled   = "canceled"    // context.Canceled
	CodeInvalid    = "invalid"     // os.ErrInvalid: invalid argument
	CodeNotRunning = "not_running" // ErrNotRunning
)

type codedSentinel struct {
	code string
	// match are the errors that get the code; is is what the caller's
	// error then matches (for timeouts both deadline sentinels).
	match []error
	is    error
}

var timeoutErr = errors.Join(context.DeadlineExceeded, os.ErrDeadlineExceeded)

var (
	codesMu sync.RWMutex
	// registered domain sentinels come first: they are more specific
	// than the well-known ones they may wrap.
	registered []codedSentinel
	wellKnown  = []codedSentinel{
		{CodeNotFound, []error{os.ErrNotExist}, os.ErrNotExist},
		{CodeExists, []error{os.ErrExist}, os.ErrExist},
		{CodeClosed, []error{net.ErrClosed}, net.ErrClosed},
		{CodeDenied, []error{os.ErrPermission}, os.ErrPermission},
		{CodeTimeout, []error{context.DeadlineExceeded, os.ErrDeadlineExceeded}, timeoutErr},
		{CodeCanceled, []error{context.Canceled}, context.Canceled},
		{CodeInvalid, []error{os.ErrInvalid}, os.ErrInvalid},
		{CodeNotRunning, []error{ErrNotRunning}, ErrNotRunning},
	}
)

// RegisterCode gives a package's own sentinel a code of its own, so that
// errors.Is(err, sentinel) holds on the far side of a call. Call it from
// the init of the package that defines the sentinel: both ends of a call
// are the same binary, so both know the code. A code registered twice
// panics.
func RegisterCode(code string, sentinel error) {
	codesMu.Lock()
	defer codesMu.Unlock()
	for _, c := range append(registered, wellKnown...) {
		if c.code == code {
			panic(fmt.Sprintf("ctl: error code %q registered twice", code))
		}
	}
	registered = append(registered, codedSentinel{code, []error{sentinel}, sentinel})
}

// CodeOf is the code of the first registered, then well-known, sentinel
// err matches, or "" for none.
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	codesMu.RLock()
	defer codesMu.RUnlock()
	for _, list := range [][]codedSentinel{registered, wellKnown} {
		for _, c := range list {
			for _, m := range c.match {
				if errors.Is(err, m) {
					return c.code
				}
			}
		}
	}
	return ""
}

func sentinelOf(code string) error {
	if code == "" {
		return nil
	}
	codesMu.RLock()
	defer codesMu.RUnlock()
	for _, list := range [][]codedSentinel{registered, wellKnown} {
		for _, c := range list {
			if c.code == code {
				return c.is
			}
		}
	}
	return nil // a code of a newer peer: the message still says it
}

// RemoteError is an error the far end of a call reported: its message
// and its code. It matches ErrRemote and the sentinel of its code for
// errors.Is (an unknown code matches only ErrRemote).
type RemoteError struct {
	Code    string
	Message string
}

func (e *RemoteError) Error() string { return ErrRemote.Error() + ": " + e.Message }

// Unwrap is ErrRemote and the code's sentinel.
func (e *RemoteError) Unwrap() []error {
	if s := sentinelOf(e.Code); s != nil {
		return []error{ErrRemote, s}
	}
	return []error{ErrRemote}
}

// Relay is err as a server passes it on to its own caller (an agent
// forwarding a peer's answer): a RemoteError at its top loses the
// "remote error" prefix and ErrRemote, which the next hop adds again,
// and keeps its code. Any other error is returned as it is.
func Relay(err error) error {
	var re *RemoteError
	if errors.As(err, &re) && error(re) == err {
		return &relayed{re: re}
	}
	return err
}

type relayed struct{ re *RemoteError }

func (r *relayed) Error() string { return r.re.Message }

func (r *relayed) Unwrap() error { return sentinelOf(r.re.Code) }
