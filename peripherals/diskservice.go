package peripherals

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
	"github.com/netstation/netstation/stack/header"
)

// DiskService is a disk peripheral's storage server, on the user-level
// stack and, while a kernel baseline runs, on a kernel socket too.
type DiskService struct {
	srv *disk.Server
	nbd *nbd.Server
	mu  sync.Mutex
	kpc net.PacketConn
}

// DiskAccess says how a disk checks requests.
type DiskAccess struct {
	// Open: the documented open mode (disk.OpenAccess). Only when the
	// topology asks for it.
	Open bool
	// KeyPath is the key file the testbed made at up
	// (capability.KeyFile); VersionPath holds the capability version,
	// rewritten by every revocation so that it survives restarts.
	KeyPath, VersionPath string
}

// RevokeReply answers the disk-revoke control op.
type RevokeReply struct {
	Version uint32 `json:"version"` // the version now in force
}

// StartDisk serves the storage protocol on p's stack, port diskproto.Port,
// backed by the file at path (created sparse with size bytes; kept across
// restarts of the peripheral), checking capabilities as access says.
func StartDisk(p *Peripheral, path string, size int64, access DiskAccess) (*DiskService, error) {
	var auth disk.Authorizer = disk.OpenAccess{}
	var ca *disk.CapabilityAuthorizer
	if !access.Open {
		kf, err := capability.ReadKeyFile(access.KeyPath)
		if err != nil {
			return nil, err
		}
		v, err := capability.ReadVersion(access.VersionPath)
		if err != nil {
			return nil, err
		}
		ca = &disk.CapabilityAuthorizer{Key: kf.Key, DiskID: kf.DiskID}
		ca.Version.Store(v)
		auth = ca
	}
	// Replies are cut to the MTU, the kernel baseline's as well as ours:
	// both stacks carry the same protocol.
	srv, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: auth, Logger: p.log,
		Datagram: p.Stack().MTU() - header.IPv4MinimumSize - header.UDPMinimumSize,
		Listen: func() (net.PacketConn, error) {
			return p.Stack().ListenUDP(netip.AddrPortFrom(p.cfg.Addr.Addr(), 0))
		}})
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
	var revokeMu sync.Mutex
	p.Handle("disk-revoke", func(context.Context, ctl.Request, *ctl.Stream) (any, error) {
		if ca == nil {
			return nil, fmt.Errorf("disk: open mode has no capabilities to revoke")
		}
		revokeMu.Lock()
		defer revokeMu.Unlock()
		// Durable first: a restart must not bring the old version back.
		v := ca.Version.Load() + 1
		if err := capability.WriteVersion(access.VersionPath, v); err != nil {
			return nil, fmt.Errorf("disk: revoke: %w", err)
		}
		ca.Version.Store(v)
		p.log.Info("disk: capabilities revoked", "version", v)
		return RevokeReply{Version: v}, nil
	})
	p.AddService(fmt.Sprintf("disk/udp:%d", diskproto.Port))
	// NBD on TCP port 10809 of the same stack (stack/tcp), beside the UDP
	// protocol, on the same file and under the same capabilities: nbdinfo,
	// nbdcopy and fio's nbd engine talk to the disk directly.
	ns, err := nbd.NewServer(nbd.Config{Backend: srv, Logger: p.log})
	if err == nil {
		var ln net.Listener
		if ln, err = p.Stack().ListenTCP(netip.AddrPortFrom(p.cfg.Addr.Addr(), nbd.Port)); err == nil {
			d.nbd = ns
			go ns.Serve(ln)
			p.AddService(fmt.Sprintf("nbd/tcp:%d", nbd.Port))
		}
	}
	if err != nil {
		p.log.Error("disk: nbd", "err", err)
	}
	return d, nil
}

// Close stops the server.
func (d *DiskService) Close() error {
	if d.nbd != nil {
		d.nbd.Close()
	}
	d.mu.Lock()
	if d.kpc != nil {
		d.kpc.Close()
	}
	d.mu.Unlock()
	return d.srv.Close()
}
