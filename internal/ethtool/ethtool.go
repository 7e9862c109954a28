package ethtool

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From <linux/sockios.h> and <linux/ethtool.h>.
const (
	siocEthtool = 0x8946
	cmdGetTSO   = 0x1e // ETHTOOL_GTSO
	cmdSetTSO   = 0x1f // ETHTOOL_STSO
	cmdGetGRO   = 0x2b // ETHTOOL_GGRO
	cmdSetGRO   = 0x2c // ETHTOOL_SGRO
)

// Feature is an offload the legacy ethtool commands switch as a whole.
type Feature struct {
	name     string
	get, set uint32
}

// The features netstation switches.
var (
	// GRO is generic receive offload (NETIF_F_GRO).
	GRO = Feature{"GRO", cmdGetGRO, cmdSetGRO}
	// TSO is TCP segmentation offload, every variant (NETIF_F_ALL_TSO).
	TSO = Feature{"TSO", cmdGetTSO, cmdSetTSO}
)

func (f Feature) String() string { return f.name }

// value is struct ethtool_value.
type value struct {
	cmd, data uint32
}

// ifreq is struct ifreq with ifr_data: the name, then a pointer, padded to
// the 40 bytes the kernel copies in.
type ifreq struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [40 - unix.IFNAMSIZ - 8]byte
}

func call(ifname string, v *value) error {
	if len(ifname) == 0 || len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("ethtool: bad interface name %q", ifname)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ethtool: socket: %w", err)
	}
	defer unix.Close(fd)
	var r ifreq
	copy(r.name[:], ifname)
	r.data = unsafe.Pointer(v)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&r)))
	runtime.KeepAlive(v)
	if e != 0 {
		return fmt.Errorf("ethtool %s: cmd %#x: %w", ifname, v.cmd, e)
	}
	return nil
}

// Get reports whether feature f is on for ifname.
func Get(ifname string, f Feature) (bool, error) {
	v := value{cmd: f.get}
	if err := call(ifname, &v); err != nil {
		return false, err
	}
	return v.data != 0, nil
}

// Set turns feature f on or off for ifname.
func Set(ifname string, f Feature, on bool) error {
	v := value{cmd: f.set}
	if on {
		v.data = 1
	}
	return call(ifname, &v)
}
