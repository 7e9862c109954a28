package peripherals

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/diskproto"
	"github.com/netstation/netstation/stack/header"
)

// DiskService is a disk peripheral's storage server, on the user-level
// stack and, while a kernel baseline runs, on a kernel socket too.
type DiskService struct {
	srv *disk.Server
	mu  sync.Mutex
	kpc net.PacketConn
}

// StartDisk serves the storage protocol on p's stack, port diskproto.Port,
// backed by the file at path (created sparse with size bytes; kept across
// restarts of the peripheral).
func StartDisk(p *Peripheral, path string, size int64) (*DiskService, error) {
	// Replies are cut to the MTU, the kernel baseline's as well as ours:
	// both stacks carry the same protocol.
	srv, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: disk.OpenAccess{}, Logger: p.log,
		Datagram: p.Stack().MTU() - header.IPv4MinimumSize - header.UDPMinimumSize})
	if err != nil {
		return nil, err
	}
	pc, err := p.Stack().ListenUDP(netip.AddrPortFrom(p.cfg.Addr.Addr(), diskproto.Port))
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("disk: listen: %w", err)
	}
	d := &DiskService{srv: srv}
	go srv.Serve(pc)
	p.OnKernel(func(on bool, addr netip.Addr) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if !on {
			if d.kpc != nil {
				d.kpc.Close()
				d.kpc = nil
			}
			return
		}
		kpc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, diskproto.Port)))
		if err != nil {
			p.log.Error("disk: kernel baseline listen", "err", err)
			return
		}
		dgram.SetKernelBuffers(kpc, 8<<20)
		d.kpc = kpc
		go srv.Serve(kpc)
	})
	p.Handle("disk-stats", func(context.Context, ctl.Request, *ctl.Stream) (any, error) { return srv.Stats(), nil })
	p.AddService(fmt.Sprintf("disk/udp:%d", diskproto.Port))
	return d, nil
}

// Close stops the server.
func (d *DiskService) Close() error {
	d.mu.Lock()
	if d.kpc != nil {
		d.kpc.Close()
	}
	d.mu.Unlock()
	return d.srv.Close()
}
