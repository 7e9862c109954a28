package bench

import (
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// systemInfo is iperf3's start.system_info: the uname line.
func systemInfo() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return runtime.GOOS + " " + runtime.GOARCH
	}
	f := func(b []byte) string { return strings.TrimRight(string(b), "\x00") }
	return strings.Join([]string{f(u.Sysname[:]), f(u.Nodename[:]), f(u.Release[:]), f(u.Version[:]), f(u.Machine[:])}, " ")
}
