package capability_test

import (
	"fmt"
	"time"

	"github.com/netstation/netstation/internal/wire/capability"
)

// Example mints a read-only capability for the first MiB of disk 1, as the
// file manager does, and verifies it, as the disk does.
func Example() {
	key := capability.NewKey() // shared by the manager and the disk
	field := capability.Mint(key, capability.Capability{
		DiskID: 1, Offset: 0, Length: 1 << 20,
		Rights:  capability.RightRead,
		Expiry:  time.Now().Add(time.Minute).Unix(),
		Version: 1,
		Nonce:   capability.NewNonce(),
	})
	// field goes into storage.Options.Capability.

	c, err := capability.Verify(key, field)
	fmt.Println(err, c.Rights, c.Covers(4096, 4096), c.Covers(1<<20, 1))

	field[30] ^= 1 // one bit of the expiry
	_, err = capability.Verify(key, field)
	fmt.Println(err)
	// Output:
	// <nil> read true false
	// capability: MAC mismatch (forged, tampered with or another key)
}
