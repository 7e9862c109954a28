package fabric

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// Sentinel errors, wrapped with %w and matched with errors.Is.
var (
	// ErrNotFound: the namespace, link or qdisc named does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: an object with that name exists but is not what was asked
	// for (another kind of link, a veth with another peer, ...).
	ErrExists = errors.New("exists with a different configuration")
	// ErrInvalid: a name, address, rate or key is malformed.
	ErrInvalid = errors.New("invalid argument")
	// ErrClosed: the Session was closed.
	ErrClosed = fmt.Errorf("fabric: session closed: %w", net.ErrClosed)
)

// ifNameMax is IFNAMSIZ-1, the longest interface name the kernel accepts.
const ifNameMax = 15

// checkNetnsName accepts the names `ip netns add` accepts: a single path
// element. "" is not a namespace name here (it means the host namespace to
// callers that accept it, and those check for it first).
func checkNetnsName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("namespace name %q: %w", name, ErrInvalid)
	case len(name) > 255:
		return fmt.Errorf("namespace name %.20q...: longer than 255 bytes: %w", name, ErrInvalid)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("namespace name %q: contains '/' or NUL: %w", name, ErrInvalid)
	}
	return nil
}

// checkIfName applies the kernel's dev_valid_name rules.
func checkIfName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("interface name %q: %w", name, ErrInvalid)
	case len(name) > ifNameMax:
		return fmt.Errorf("interface name %q: longer than %d bytes: %w", name, ifNameMax, ErrInvalid)
	}
	for _, c := range []byte(name) {
		if c == '/' || c == ':' || c == 0 || c == ' ' || (c >= '\t' && c <= '\r') {
			return fmt.Errorf("interface name %q: contains %q: %w", name, c, ErrInvalid)
		}
	}
	return nil
}

// nsLabel names a namespace in messages.
func nsLabel(ns string) string {
	if ns == "" {
		return "host namespace"
	}
	return "namespace " + ns
}
