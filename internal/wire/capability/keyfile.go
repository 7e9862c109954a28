package capability

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// KeyFile is what a testbed hands a disk and its file manager at up: the
// shared key, in a file only the testbed's owner can read (mode 0600),
// never on the wire.
type KeyFile struct {
	Disk   string `json:"disk"`    // the disk's node name
	DiskID uint32 `json:"disk_id"` // the id capabilities for it carry
	Key    []byte `json:"key"`     // KeySize random bytes (base64 in the file)
}

// KeyFileExt and VersionFileExt name a disk's key file and capability
// version file in a testbed's state directory (nodes/<disk>.key,
// nodes/<disk>.capver): the disk reads both, its file managers (the cpus)
// read both to mint, and only the disk rewrites the version (revocation).
const (
	KeyFileExt     = "key"
	VersionFileExt = "capver"
)

// ErrKeyFile: a key file is missing, unreadable or malformed.
var ErrKeyFile = errors.New("capability: bad key file")

// DiskIDOf derives a disk's id from its node name (FNV-1a, never 0), so
// that a capability minted for one disk of a testbed fails on another.
func DiskIDOf(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32() | 1
}

// CreateKeyFile writes a fresh key for disk at path with mode 0600, unless
// a valid key file is already there (a testbed keeps its keys for its
// lifetime): it returns the file in force.
func CreateKeyFile(path, disk string) (*KeyFile, error) {
	if kf, err := ReadKeyFile(path); err == nil && kf.Disk == disk {
		return kf, nil
	}
	return WriteKeyFile(path, disk, NewKey())
}

// WriteKeyFile writes (or replaces) the key file of disk with key, which
// must be at least MinKeySize bytes: for keys derived rather than drawn.
func WriteKeyFile(path, disk string, key []byte) (*KeyFile, error) {
	if len(key) < MinKeySize {
		return nil, fmt.Errorf("%w: %d bytes", ErrKey, len(key))
	}
	kf := &KeyFile{Disk: disk, DiskID: DiskIDOf(disk), Key: key}
	b, err := json.Marshal(kf)
	if err != nil {
		return nil, err
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("capability: key file: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("capability: key file: %w", err)
	}
	return kf, nil
}

// ReadKeyFile reads a key file and checks it.
func ReadKeyFile(path string) (*KeyFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyFile, err)
	}
	var kf KeyFile
	if err := json.Unmarshal(b, &kf); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	if len(kf.Key) < MinKeySize || kf.DiskID == 0 || kf.Disk == "" {
		return nil, fmt.Errorf("%w: %s: key of %d bytes, disk %q id %d", ErrKeyFile, path, len(kf.Key), kf.Disk, kf.DiskID)
	}
	return &kf, nil
}

// ReadVersion reads a disk's capability version file: one decimal number.
// A missing file is version 0.
func ReadVersion(path string) (uint32, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("capability: version file %s: %w", path, err)
	}
	return uint32(v), nil
}

// WriteVersion replaces a version file atomically and durably: a disk
// that restarts after a revocation must not accept the revoked
// capabilities again.
func WriteVersion(path string, v uint32) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.FormatUint(uint64(v), 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// TransferKey derives the key that seals transfer capabilities for the
// destination dst: HMAC-SHA256(key, "netstation transfer v1" | addr | port).
// A transfer order naming any other destination fails the MAC check, so
// the manager, not the bearer, chooses where a disk may send data.
func TransferKey(key []byte, dst netip.AddrPort) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte("netstation transfer v1"))
	a := dst.Addr().As16()
	h.Write(a[:])
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], dst.Port())
	h.Write(p[:])
	return h.Sum(nil)
}
