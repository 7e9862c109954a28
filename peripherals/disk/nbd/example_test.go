package nbd_test

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
)

// Serve a disk over NBD on a kernel socket; in a testbed the listener is
// the peripheral's user-level TCP on port nbd.Port. Any NBD client can
// then use nbd://127.0.0.1:PORT/disk0.
func Example() {
	dir, _ := os.MkdirTemp("", "nbd-example")
	defer os.RemoveAll(dir)
	d, err := disk.NewServer(disk.Config{Path: filepath.Join(dir, "disk.img"), Size: 64 << 20, Authorizer: disk.OpenAccess{}})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	srv, err := nbd.NewServer(nbd.Config{Backend: d})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	// The server speaks first: the newstyle greeting.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	greeting := make([]byte, 16)
	io.ReadFull(c, greeting)
	fmt.Printf("%s\n", greeting)
	// Output: NBDMAGICIHAVEOPT
}
