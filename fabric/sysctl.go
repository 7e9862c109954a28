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

// bridgeNetfilterKeys are br_netfilter's switches that send bridged frames
// through the IPv4, IPv6 and ARP netfilter hooks (per network namespace
// since Linux 5.3; on by default wherever the module is loaded).
var bridgeNetfilterKeys = []string{
	"net/bridge/bridge-nf-call-iptables",
	"net/bridge/bridge-nf-call-ip6tables",
	"net/bridge/bridge-nf-call-arptables",
}

// bridgeSkipNetfilter turns those switches off in the calling thread's
// namespace. The fabric filters nothing with netfilter (its template check
// is a tc BPF program on each port), yet with br_netfilter loaded every
// bridged frame ran the IP hooks: 10-14 % of a bulk UDP sender's samples
// (the bridge forwards on the sending CPU), for either stack. A kernel
// without br_netfilter has no such keys, and a namespace that may not set
// them (an unprivileged user namespace's) only keeps that cost: neither
// is an error.
func bridgeSkipNetfilter() error {
	for _, key := range bridgeNetfilterKeys {
		if err := writeSysctl(key, "0"); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	return nil
}
