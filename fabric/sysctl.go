package fabric

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// sysctlPath maps a sysctl key to its file under /proc/sys, refusing keys
// that would leave /proc/sys.
func sysctlPath(key string) (string, error) {
	rel := key
	if !strings.Contains(key, "/") {
		rel = strings.ReplaceAll(key, ".", "/")
	}
	if rel == "" {
		return "", fmt.Errorf("empty sysctl key: %w", ErrInvalid)
	}
	for _, part := range strings.Split(rel, "/") {
		if part == "" || part == "." || part == ".." || strings.ContainsRune(part, 0) {
			return "", fmt.Errorf("sysctl key %q: %w", key, ErrInvalid)
		}
	}
	return "/proc/sys/" + rel, nil
}

// writeSysctl writes value to key in the namespace of the calling thread
// (files under /proc/sys/net belong to the namespace of the thread that
// opens them).
func writeSysctl(key, value string) error {
	path, err := sysctlPath(key)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && strings.HasPrefix(path, "/proc/sys/net/ipv6/") && !ipv6Present() {
			return nil // no IPv6 in this kernel: it is off already
		}
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ipv6Present reports whether the kernel has IPv6 at all.
func ipv6Present() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

// disableIPv6 writes disable_ipv6=1 for each interface, from the calling
// thread's namespace. It must run before the interface goes up, so that no
// link-local address (and no DAD or router solicitation) ever appears.
func disableIPv6(ifnames ...string) error {
	for _, name := range ifnames {
		// The slash form keeps dotted interface names intact.
		if err := writeSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil {
			return fmt.Errorf("disable IPv6 on %s: %w", name, err)
		}
	}
	return nil
}
