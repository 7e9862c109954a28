package storage_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/netstation/netstation/cpu/storage"
	"github.com/netstation/netstation/peripherals/disk"
)

// Example serves a 1 MiB disk on loopback kernel UDP and uses it.
func Example() {
	dir, _ := os.MkdirTemp("", "disk")
	defer os.RemoveAll(dir)
	srv, err := disk.NewServer(disk.Config{Path: filepath.Join(dir, "disk.img"), Size: 1 << 20,
		Authorizer: disk.OpenAccess{}}) // open mode: no capabilities checked
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	spc, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer spc.Close()
	go srv.Serve(spc)

	cpc, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	c, err := storage.Dial(cpc, spc.LocalAddr(), storage.Options{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx := context.Background()
	c.WriteAt(ctx, []byte("hello, disk"), 4096, false)
	c.Flush(ctx) // now durable
	p := make([]byte, 11)
	c.ReadAt(ctx, p, 4096)
	fmt.Printf("%s; size %d, window %d\n", p, c.Info().Size, c.Info().Window)
	// Output: hello, disk; size 1048576, window 32
}
