package diskkind

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/netstation/netstation/internal/ctl"
	"github.com/netstation/netstation/internal/dgram"
	"github.com/netstation/netstation/internal/wire/capability"
	"github.com/netstation/netstation/internal/wire/diskproto"
	"github.com/netstation/netstation/peripherals"
	"github.com/netstation/netstation/peripherals/disk"
	"github.com/netstation/netstation/peripherals/disk/nbd"
	"github.com/netstation/netstation/peripherals/gossip"
	"github.com/netstation/netstation/stack/header"
)

// Kind is the disk: a block device on the testbed, served over the
// storage protocol (docs/protocols/disk.md, UDP port diskproto.Port) and
// NBD (TCP port nbd.Port) on its own stack, backed by a sparse file in the
// testbed's state directory, checking NASD capabilities.
var Kind = peripherals.Kind{
	Name: "disk",
	Doc:  "a block device: the storage protocol and NBD over its own stack",
	Params: []peripherals.Param{
		{Name: ParamSize, Doc: "the device's size in bytes (default 256 MiB)"},
		{Name: ParamAccess, Doc: `"capability" (the default: NASD capabilities keyed at up) or "open"`},
	},
	Check: checkParams,
	Start: start,
}

// The disk's topology parameters (a topology's disk block).
const (
	ParamSize   = "size"
	ParamAccess = "access"
)

// DefaultSize is the size of a disk without a size parameter.
const DefaultSize int64 = 256 << 20

// The disk's control ops.
const (
	OpStats  peripherals.Op = "disk-stats"  // -> disk.Stats
	OpRevoke peripherals.Op = "disk-revoke" // -> RevokeReply
)

// The disk's files in the testbed's state directory (Runtime.NodeFile).
const (
	FileImage   = "img"                     // the backing file, sparse
	FileKey     = capability.KeyFileExt     // capability.KeyFile: made by the testbed at up, read by the disk and its file managers
	FileVersion = capability.VersionFileExt // the capability version: rewritten by every revocation
)

// ErrParam: a disk parameter's value is wrong.
var ErrParam = errors.New("disk")

func checkParams(ps peripherals.Params) error {
	size, err := ps.Int(ParamSize, DefaultSize)
	if err != nil {
		return err
	}
	if size <= 0 {
		return fmt.Errorf("%w: size %d is not positive", ErrParam, size)
	}
	switch a := ps.String(ParamAccess, "capability"); a {
	case "capability", "open":
	default:
		return fmt.Errorf("%w: unknown access %q (want capability or open)", ErrParam, a)
	}
	return nil
}

func start(ctx context.Context, rt *peripherals.Runtime) (func() error, error) {
	ps := rt.Params()
	size, err := ps.Int(ParamSize, DefaultSize)
	if err != nil {
		return nil, err
	}
	name := rt.Config().Name
	access := Access{Open: ps.String(ParamAccess, "") == "open",
		KeyPath: rt.NodeFile(name, FileKey), VersionPath: rt.NodeFile(name, FileVersion)}
	d, err := Start(rt, rt.NodeFile(name, FileImage), size, access)
	if err != nil {
		return nil, err
	}
	rt.SetMeta(func(m *gossip.Meta) { m.DiskBytes = size })
	return d.Close, nil
}

// Service is a disk peripheral's storage server, on the user-level
// stack and, while a kernel baseline runs, on a kernel socket too.
type Service struct {
	srv *disk.Server
	nbd *nbd.Server
	mu  sync.Mutex
	kpc net.PacketConn
}

// Access says how a disk checks requests.
type Access struct {
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

// Start serves the storage protocol on p's stack, port diskproto.Port,
// backed by the file at path (created sparse with size bytes; kept across
// restarts of the peripheral), checking capabilities as access says.
func Start(p *peripherals.Runtime, path string, size int64, access Access) (*Service, error) {
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
	srv, err := disk.NewServer(disk.Config{Path: path, Size: size, Authorizer: auth, Logger: p.Logger(),
		Datagram: p.Stack().MTU() - header.IPv4MinimumSize - header.UDPMinimumSize,
		Listen: func() (net.PacketConn, error) {
			return p.Stack().ListenUDP(netip.AddrPortFrom(p.Addr(), 0))
		}})
	if err != nil {
		return nil, err
	}
	pc, err := p.Stack().ListenUDP(netip.AddrPortFrom(p.Addr(), diskproto.Port))
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("disk: listen: %w", err)
	}
	d := &Service{srv: srv}
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
			p.Logger().Error("disk: kernel baseline listen", "err", err)
			return
		}
		dgram.SetKernelBuffers(kpc, 8<<20)
		d.kpc = kpc
		go srv.Serve(kpc)
	})
	p.Handle(OpStats, func(context.Context, ctl.Request, *ctl.Stream) (any, error) { return srv.Stats(), nil })
	var revokeMu sync.Mutex
	p.Handle(OpRevoke, func(context.Context, ctl.Request, *ctl.Stream) (any, error) {
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
		p.Logger().Info("disk: capabilities revoked", "version", v)
		return RevokeReply{Version: v}, nil
	})
	p.AddService(fmt.Sprintf("disk/udp:%d", diskproto.Port))
	// NBD on TCP port 10809 of the same stack (stack/tcp), beside the UDP
	// protocol, on the same file and under the same capabilities: nbdinfo,
	// nbdcopy and fio's nbd engine talk to the disk directly.
	ns, err := nbd.NewServer(nbd.Config{Backend: srv, Logger: p.Logger(), PollBudget: nbdPollBudget})
	if err == nil {
		var ln net.Listener
		if ln, err = p.Stack().ListenTCP(netip.AddrPortFrom(p.Addr(), nbd.Port)); err == nil {
			d.nbd = ns
			go ns.Serve(ln)
			p.AddService(fmt.Sprintf("nbd/tcp:%d", nbd.Port))
		}
	}
	if err != nil {
		p.Logger().Error("disk: nbd", "err", err)
	}
	return d, nil
}

// Close stops the server.
func (d *Service) Close() error {
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

// The storage server is what NBD serves.
var _ nbd.Backend = (*disk.Server)(nil)

// nbdPollBudget is how long an NBD connection's reader drives the link
// itself before it sleeps (nbd.Config.PollBudget): NBD clients wait on
// each reply, and a kernel sender's window waits on our ACKs.
const nbdPollBudget = 200 * time.Microsecond
