package manager

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/wire/capability"
)

// DefaultLifetime is how long a minted capability stays valid when the
// caller does not say.
const DefaultLifetime = time.Hour

// ErrUnknownDisk: the manager holds no key for the named disk.
var ErrUnknownDisk = errors.New("manager: unknown disk")

// Disk is one managed disk: where its key and version files are.
type Disk struct {
	Name string
	Addr netip.Addr // its address on the user-level stacks
	// Open: the disk runs in open mode and wants the all-zero capability.
	Open                 bool
	KeyPath, VersionPath string
}

// Grant is what a capability allows.
type Grant struct {
	Offset, Length uint64 // Length math.MaxUint64 from 0: the whole disk
	Rights         capability.Rights
	Lifetime       time.Duration // 0: DefaultLifetime; negative: already expired
}

// Manager mints capabilities for the disks it was given. Safe for
// concurrent use.
type Manager struct {
	mu    sync.Mutex
	disks map[string]Disk
	// Now is the clock expiries count from; nil is time.Now.
	Now func() time.Time
}

// New returns a manager of no disks.
func New() *Manager { return &Manager{disks: map[string]Disk{}} }

// Add manages d (replacing a disk of the same name).
func (m *Manager) Add(d Disk) {
	m.mu.Lock()
	m.disks[d.Name] = d
	m.mu.Unlock()
}

// Lookup finds a disk by name, or by address when name is empty.
func (m *Manager) Lookup(name string, addr netip.Addr) (Disk, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d, ok := m.disks[name]; ok {
		return d, nil
	}
	if name == "" {
		for _, d := range m.disks {
			if d.Addr == addr {
				return d, nil
			}
		}
	}
	var names []string
	for n := range m.disks {
		names = append(names, n)
	}
	sort.Strings(names)
	return Disk{}, fmt.Errorf("%w: %q %v (managed: %s)", ErrUnknownDisk, name, addr, strings.Join(names, ", "))
}

// WholeDisk grants every right on every byte.
func WholeDisk(l time.Duration) Grant {
	return Grant{Offset: 0, Length: math.MaxUint64, Rights: capability.RightsAll, Lifetime: l}
}

// Mint returns a capability for disk (by name, or by address when name is
// empty) at the disk's current version, with a fresh nonce.
func (m *Manager) Mint(name string, addr netip.Addr, g Grant) ([capability.Size]byte, error) {
	return m.mint(name, addr, g, nil)
}

// MintTransfer returns a capability for a third-party transfer from disk
// to dst: sealed under capability.TransferKey(key, dst), so the disk
// refuses it for any other destination. g.Rights should hold RightRead.
func (m *Manager) MintTransfer(name string, addr netip.Addr, g Grant, dst netip.AddrPort) ([capability.Size]byte, error) {
	return m.mint(name, addr, g, &dst)
}

func (m *Manager) mint(name string, addr netip.Addr, g Grant, dst *netip.AddrPort) ([capability.Size]byte, error) {
	d, err := m.Lookup(name, addr)
	if err != nil {
		return [capability.Size]byte{}, err
	}
	if d.Open {
		return [capability.Size]byte{}, nil
	}
	c, key, err := m.Prepare(d, g)
	if err != nil {
		return [capability.Size]byte{}, err
	}
	if dst != nil {
		key = capability.TransferKey(key, *dst)
	}
	return capability.Mint(key, c), nil
}

// Prepare reads d's key and current version and fills in a capability for
// g, unsealed: Mint seals it. Tests use it to mint variants.
func (m *Manager) Prepare(d Disk, g Grant) (capability.Capability, []byte, error) {
	kf, err := capability.ReadKeyFile(d.KeyPath)
	if err != nil {
		return capability.Capability{}, nil, err
	}
	v, err := capability.ReadVersion(d.VersionPath)
	if err != nil {
		return capability.Capability{}, nil, err
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	l := g.Lifetime
	if l == 0 {
		l = DefaultLifetime
	}
	return capability.Capability{DiskID: kf.DiskID, Offset: g.Offset, Length: g.Length, Rights: g.Rights,
		Expiry: now().Add(l).Unix(), Version: v, Nonce: capability.NewNonce()}, kf.Key, nil
}
