package manager_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/netstation/netstation/cpu/manager"
	"github.com/netstation/netstation/internal/wire/capability"
)

// A file manager mints a read capability for part of a disk; the disk
// (here: capability.Verify with the same key file) checks it.
func ExampleManager_Mint() {
	dir, _ := os.MkdirTemp("", "manager")
	defer os.RemoveAll(dir)
	key := filepath.Join(dir, "disk0.key") // made by the testbed at up
	kf, _ := capability.CreateKeyFile(key, "disk0")

	m := manager.New()
	m.Add(manager.Disk{Name: "disk0", KeyPath: key, VersionPath: filepath.Join(dir, "disk0.capver")})
	b, err := m.Mint("disk0", netip.Addr{}, manager.Grant{Offset: 0, Length: 1 << 20,
		Rights: capability.RightRead, Lifetime: time.Minute})
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := capability.Verify(kf.Key, b)
	fmt.Println(err, c.Rights, c.Length, c.DiskID == capability.DiskIDOf("disk0"))
	// Output: <nil> read 1048576 true
}
