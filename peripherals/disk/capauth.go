package disk

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
)

// DefaultMaxNonces is the replay cache's size when
// CapabilityAuthorizer.MaxNonces is 0.
const DefaultMaxNonces = 4096

// maxSessionsPerNonce bounds the sessions one capability's replay entry
// remembers; see CapabilityAuthorizer.Consume.
const maxSessionsPerNonce = 64

// Reasons a CapabilityAuthorizer refuses a request, the keys of its Stats.
const (
	denyNone      = iota // the all-zero field: no capability
	denyFormat           // not a capability of a known format
	denyShortKey         // the disk's key is shorter than capability.MinKeySize
	denyMAC              // forged, tampered with, or sealed under another key
	denyDisk             // minted for another disk
	denyRevoked          // version older than the disk's: revoked
	denyVersion          // version newer than the disk's: the manager is ahead
	denyExpired          // past its expiry
	denyRights           // the operation is not in its rights
	denyRange            // the request's bytes are not all inside its range
	denyReplay           // nonce consumed, or seen under another capability
	denyCacheFull        // the replay cache holds MaxNonces live capabilities
	numDenials
)

var denialNames = [numDenials]string{"no_capability", "format", "short_key", "bad_mac", "wrong_disk",
	"revoked", "version_ahead", "expired", "rights", "range", "replay", "replay_cache_full"}

// Refusals of a CapabilityAuthorizer. Each wraps ErrDenied and
// diskproto.CodeDenied (the code the server answers with), and the
// capability package's error where one applies.
var (
	ErrCapabilityNone      = newDenial(denyNone, capability.ErrNone)
	ErrCapabilityFormat    = newDenial(denyFormat, capability.ErrFormat)
	ErrCapabilityKey       = newDenial(denyShortKey, capability.ErrKey)
	ErrCapabilityMAC       = newDenial(denyMAC, capability.ErrBadMAC)
	ErrCapabilityDisk      = newDenial(denyDisk, nil)
	ErrCapabilityRevoked   = newDenial(denyRevoked, nil)
	ErrCapabilityVersion   = newDenial(denyVersion, nil)
	ErrCapabilityExpired   = newDenial(denyExpired, nil)
	ErrCapabilityRights    = newDenial(denyRights, nil)
	ErrCapabilityRange     = newDenial(denyRange, nil)
	ErrCapabilityReplay    = newDenial(denyReplay, nil)
	ErrCapabilityCacheFull = newDenial(denyCacheFull, nil)
)

// denial is a refusal reason. The values are made once, so a flood of
// bad requests allocates nothing.
type denial struct {
	reason int
	cause  error
}

func newDenial(reason int, cause error) error { return &denial{reason: reason, cause: cause} }

func (d *denial) Error() string { return "disk: access denied: capability: " + denialNames[d.reason] }

func (d *denial) Unwrap() []error {
	if d.cause == nil {
		return []error{ErrDenied, diskproto.CodeDenied}
	}
	return []error{ErrDenied, diskproto.CodeDenied, d.cause}
}

var denials = [numDenials]error{ErrCapabilityNone, ErrCapabilityFormat, ErrCapabilityKey, ErrCapabilityMAC,
	ErrCapabilityDisk, ErrCapabilityRevoked, ErrCapabilityVersion, ErrCapabilityExpired, ErrCapabilityRights,
	ErrCapabilityRange, ErrCapabilityReplay, ErrCapabilityCacheFull}

// CapabilityAuthorizer is the disk's NASD-style access check: every READ,
// WRITE, FLUSH and TRIM must carry a capability (package capability)
// sealed with Key, minted for DiskID at the current Version, unexpired,
// granting the operation and covering the request's byte range (FLUSH has
// none). INFO needs no capability: it reveals only the disk's geometry and
// opens a session, and its capability field is not examined.
//
// Replays. A capability is a bearer token used by many requests, and the
// storage protocol retransmits a request unchanged (same request id, same
// capability, fresh tag), so a capability seen again is normal. The replay
// cache, keyed by nonce until the capability expires, refuses:
//   - a capability whose nonce was first seen sealed in another
//     capability: the manager draws a fresh nonce for every capability,
//     so this is a reused nonce (a manager that lost its state, or a
//     replayed older grant) and the first capability keeps the nonce;
//   - a capability the disk was told is used up (Consume). Requests it
//     authorized before, per session up to the highest request id, still
//     pass, so their retransmissions reach the server's duplicate cache
//     and get their original answer instead of a refusal of work done.
//
// Revoking every capability at once is bumping Version (Version.Add(1)):
// older ones are refused as revoked. The zero value refuses everything
// (no key); set Key, DiskID and Version before serving. Safe for
// concurrent use.
type CapabilityAuthorizer struct {
	Key     []byte // shared with the manager; at least capability.MinKeySize bytes
	DiskID  uint32
	Version atomic.Uint32
	// Now is the clock expiry is checked against; nil is time.Now.
	Now func() time.Time
	// MaxNonces bounds the replay cache: live capabilities seen. When it
	// is full of unexpired ones, new capabilities are refused (counted as
	// replay_cache_full) rather than forgetting consumed ones. 0 is
	// DefaultMaxNonces.
	MaxNonces int

	mu      sync.Mutex
	nonces  map[uint64]*nonceEntry
	refused [numDenials]atomic.Uint64
}

var _ Authorizer = (*CapabilityAuthorizer)(nil)

// nonceEntry is what the replay cache knows about one nonce.
type nonceEntry struct {
	mac      capability.MAC // of the capability that first used the nonce
	expiry   int64          // the entry is dropped once the capability has expired
	consumed bool
	// highest is, per session, the highest request id authorized under the
	// capability before it was consumed: their retransmissions still pass.
	highest map[sessionKey]uint64
}

// Authorize implements Authorizer.
func (a *CapabilityAuthorizer) Authorize(req *diskproto.Request, from net.Addr) error {
	if req.Op == diskproto.OpInfo {
		return nil
	}
	key := a.Key
	if req.Op == diskproto.OpTransfer {
		// A transfer capability is sealed under a key bound to its
		// destination: an order naming another one fails the MAC.
		dst, ok := diskproto.TransferDestination(req.Payload)
		if !ok {
			return a.deny(denyFormat)
		}
		if len(key) >= capability.MinKeySize {
			key = capability.TransferKey(key, dst)
		}
	}
	c, err := capability.Verify(key, req.Capability)
	if err != nil {
		switch {
		case errors.Is(err, capability.ErrNone):
			return a.deny(denyNone)
		case errors.Is(err, capability.ErrKey):
			return a.deny(denyShortKey)
		case errors.Is(err, capability.ErrBadMAC):
			return a.deny(denyMAC)
		}
		return a.deny(denyFormat)
	}
	if c.DiskID != a.DiskID {
		return a.deny(denyDisk)
	}
	switch v := a.Version.Load(); {
	case c.Version < v:
		return a.deny(denyRevoked)
	case c.Version > v:
		return a.deny(denyVersion)
	}
	now := a.now()
	if c.Expired(now) {
		return a.deny(denyExpired)
	}
	if c.Rights&capability.RightFor(req.Op) == 0 {
		return a.deny(denyRights)
	}
	if req.Op != diskproto.OpFlush && !c.Covers(req.Offset, uint64(req.Length)) {
		return a.deny(denyRange)
	}
	var mac capability.MAC
	copy(mac[:], req.Capability[capability.Size-capability.MACSize:])
	if reason, ok := a.checkReplay(&c, mac, keyOf(req.Session, from), req.ReqID, now.Unix()); !ok {
		return a.deny(reason)
	}
	return nil
}

func (a *CapabilityAuthorizer) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *CapabilityAuthorizer) deny(reason int) error {
	a.refused[reason].Add(1)
	return denials[reason]
}

// checkReplay applies the replay rules to a verified, unexpired
// capability and records the request.
func (a *CapabilityAuthorizer) checkReplay(c *capability.Capability, mac capability.MAC, sess sessionKey, reqID uint64, now int64) (int, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.nonces[c.Nonce]
	if e == nil {
		if !a.room(now) {
			return denyCacheFull, false
		}
		e = &nonceEntry{mac: mac, expiry: c.Expiry, highest: make(map[sessionKey]uint64)}
		a.nonces[c.Nonce] = e
	}
	if e.mac != mac {
		// Both are verified capabilities, so the comparison leaks nothing
		// a holder of either does not know.
		return denyReplay, false
	}
	if e.consumed {
		if h, ok := e.highest[sess]; ok && reqID <= h {
			return 0, true // a retransmission of a request authorized before
		}
		return denyReplay, false
	}
	if h, ok := e.highest[sess]; ok {
		e.highest[sess] = max(h, reqID)
	} else if len(e.highest) < maxSessionsPerNonce {
		e.highest[sess] = reqID
	}
	return 0, true
}

// room makes room for one more entry if it can: it drops expired ones
// when the cache is full. Called with a.mu held.
func (a *CapabilityAuthorizer) room(now int64) bool {
	if a.nonces == nil {
		a.nonces = make(map[uint64]*nonceEntry)
	}
	limit := a.MaxNonces
	if limit <= 0 {
		limit = DefaultMaxNonces
	}
	if len(a.nonces) < limit {
		return true
	}
	for n, e := range a.nonces {
		if now >= e.expiry {
			delete(a.nonces, n)
		}
	}
	return len(a.nonces) < limit
}

// Consume marks c used up: from now on requests carrying it are refused
// as replays, except retransmissions of requests it authorized before
// (per session, request ids up to the highest seen; at most 64 sessions
// per capability are remembered). The manager calls it (through the disk)
// when a grant's work is done, for example a one-shot transfer order. It
// holds until c expires, even beyond MaxNonces, and does not survive a
// restart of the disk: bump Version for that.
func (a *CapabilityAuthorizer) Consume(c capability.Capability) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nonces == nil {
		a.nonces = make(map[uint64]*nonceEntry)
	}
	e := a.nonces[c.Nonce]
	if e == nil {
		e = &nonceEntry{expiry: c.Expiry, highest: make(map[sessionKey]uint64)}
		a.nonces[c.Nonce] = e
	}
	e.consumed = true
}

// Stats returns the refusals since the authorizer was made, by reason:
// no_capability, format, short_key, bad_mac, wrong_disk, revoked,
// version_ahead, expired, rights, range, replay, replay_cache_full. Zero
// entries are left out.
func (a *CapabilityAuthorizer) Stats() map[string]uint64 {
	m := make(map[string]uint64)
	for i := range a.refused {
		if n := a.refused[i].Load(); n > 0 {
			m[denialNames[i]] = n
		}
	}
	return m
}

// Admitter is an Authorizer that also judges a capability on its own,
// before any request carries it: what a front end with a handshake (NBD's
// export name) asks at connection time, so that a client learns at once,
// and in words, why it will get nowhere.
type Admitter interface {
	// Admit checks the capability's seal, disk, version and expiry (not
	// its rights or range: those depend on each request). A refusal wraps
	// ErrDenied and reads as a sentence a user can act on.
	Admit(field [diskproto.CapabilitySize]byte) error
}

var (
	_ Admitter = (*CapabilityAuthorizer)(nil)
	_ Admitter = OpenAccess{}
)

// admitError is a refusal at admission: the denial it counts as, in words.
type admitError struct {
	denial error
	msg    string
}

func (e *admitError) Error() string { return e.msg }
func (e *admitError) Unwrap() error { return e.denial }

// grantHint says where a capability comes from.
const grantHint = "`netstation disk grant DISK` prints a current one"

// Admit implements Admitter. Refusals are counted by reason, as
// Authorize's are.
func (a *CapabilityAuthorizer) Admit(field [diskproto.CapabilitySize]byte) error {
	refuse := func(reason int, format string, args ...any) error {
		return &admitError{denial: a.deny(reason), msg: "capability refused: " + fmt.Sprintf(format, args...)}
	}
	c, err := capability.Verify(a.Key, field)
	switch {
	case errors.Is(err, capability.ErrNone):
		return refuse(denyNone, "this disk checks capabilities and none was given: the export name must be one, in hex; "+grantHint)
	case errors.Is(err, capability.ErrKey):
		return refuse(denyShortKey, "the disk's key is too short to check capabilities")
	case errors.Is(err, capability.ErrBadMAC):
		return refuse(denyMAC, "not sealed with this disk's key (forged, altered, or minted for another testbed); "+grantHint)
	case err != nil:
		return refuse(denyFormat, "not a capability (%v)", err)
	}
	if c.DiskID != a.DiskID {
		return refuse(denyDisk, "minted for another disk (id %#x, this disk is %#x)", c.DiskID, a.DiskID)
	}
	switch v := a.Version.Load(); {
	case c.Version < v:
		return refuse(denyRevoked, "revoked: minted at version %d, the disk is at version %d since a `disk revoke`; %s", c.Version, v, grantHint)
	case c.Version > v:
		return refuse(denyVersion, "minted at version %d, ahead of the disk's version %d", c.Version, v)
	}
	if now := a.now(); c.Expired(now) {
		return refuse(denyExpired, "expired at %s (%s ago); %s", time.Unix(c.Expiry, 0).UTC().Format(time.RFC3339),
			now.Sub(time.Unix(c.Expiry, 0)).Round(time.Second), grantHint)
	}
	return nil
}

// Admit implements Admitter: open mode admits only the all-zero
// capability.
func (OpenAccess) Admit(field [diskproto.CapabilitySize]byte) error {
	if field != [diskproto.CapabilitySize]byte{} {
		return fmt.Errorf("%w: this disk is in open mode and checks no capabilities: use the export name disk0 (or none)", ErrDenied)
	}
	return nil
}
