package fabric

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named namespaces are bind-mounted, as with `ip netns`.
// A rootless testbed's supervisor, which cannot write /run/netns, points it
// at its own state directory with SetNetnsDir before any other call.
var NetnsDir = "/run/netns"

// SetNetnsDir moves the named-namespace directory (see NetnsDir). Call it
// once, before anything else in this package runs.
func SetNetnsDir(dir string) {
	netnsDirState.Lock()
	defer netnsDirState.Unlock()
	NetnsDir = dir
	netnsDirState.ready = false
}

// netlinkTimeout bounds every netlink request so a lost reply becomes an
// error, not a hang.
const netlinkTimeout = 10 * time.Second

// A Session caches, per namespace, an open namespace file descriptor and a
// netlink handle whose socket lives in that namespace, so a testbed of many
// nodes pays for each only once. The empty namespace name "" means the
// namespace of the thread that called NewSession (the host's, in a process
// that never leaves a thread in a foreign namespace).
//
// A Session is safe for concurrent use. Its cached sockets keep namespaces
// alive: Close it when done. DeleteNetns through the Session drops the cache
// entry first; a namespace deleted behind the Session's back is noticed on
// the next use (the name no longer leads to the cached namespace) and the
// stale entry is dropped then.
type Session struct {
	mu     sync.Mutex
	closed bool
	host   netns.NsHandle
	hostH  *netlink.Handle
	named  map[string]*nsEntry
}

// nsEntry is one cached namespace.
type nsEntry struct {
	fd       netns.NsHandle
	h        *netlink.Handle
	dev, ino uint64 // identity of the namespace (nsfs device and inode)
}

func (e *nsEntry) close() {
	if e.h != nil {
		e.h.Close()
	}
	if e.fd >= 0 {
		e.fd.Close()
	}
}

// NewSession opens a Session. Handles are opened lazily, on first use of
// each namespace.
func NewSession() (*Session, error) {
	host, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("fabric: open the caller's namespace: %w", err)
	}
	return &Session{host: host, named: map[string]*nsEntry{}}, nil
}

// Close releases every cached handle and descriptor. It does not delete
// anything.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for name, e := range s.named {
		e.close()
		delete(s.named, name)
	}
	if s.hostH != nil {
		s.hostH.Close()
	}
	return s.host.Close()
}

// openHandleIn opens a NETLINK_ROUTE handle whose socket lives in ns.
func openHandleIn(ns netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := runIn(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := h.SetSocketTimeout(netlinkTimeout); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// nsIdentity returns the nsfs device and inode of the namespace mounted at
// path, ErrNotFound when nothing is, or when path is a leftover plain file.
func nsIdentity(path string) (dev, ino uint64, err error) {
	var fsst unix.Statfs_t
	if err := unix.Statfs(path, &fsst); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, 0, ErrNotFound
		}
		return 0, 0, err
	}
	if fsst.Type != unix.NSFS_MAGIC {
		return 0, 0, fmt.Errorf("%s is not a mounted namespace: %w", path, ErrNotFound)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, err
	}
	return st.Dev, st.Ino, nil
}

// entry returns the cached namespace ns ("" = host) with its netlink
// handle, opening them if needed.
func (s *Session) entry(ns string) (*nsEntry, error) { return s.lookup(ns, true) }

// lookup returns the cached namespace ns ("" = host), opening it if needed;
// the netlink handle only when withHandle is set (Do needs none).
func (s *Session) lookup(ns string, withHandle bool) (*nsEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if ns == "" {
		if s.hostH == nil && withHandle {
			h, err := openHandleIn(s.host)
			if err != nil {
				return nil, fmt.Errorf("netlink handle in the host namespace: %w", err)
			}
			s.hostH = h
		}
		return &nsEntry{fd: s.host, h: s.hostH}, nil
	}
	if err := checkNetnsName(ns); err != nil {
		return nil, err
	}
	path := filepath.Join(NetnsDir, ns)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if e, ok := s.named[ns]; ok {
			e.close()
			delete(s.named, ns)
		}
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("namespace %s: %w", ns, ErrNotFound)
		}
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	if e, ok := s.named[ns]; ok {
		if e.dev == st.Dev && e.ino == st.Ino {
			if e.h == nil && withHandle {
				h, err := openHandleIn(e.fd)
				if err != nil {
					return nil, fmt.Errorf("netlink handle in namespace %s: %w", ns, err)
				}
				e.h = h
			}
			return e, nil
		}
		e.close() // the name now leads elsewhere: the cached one was deleted
		delete(s.named, ns)
	}
	fd, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	e := &nsEntry{fd: fd}
	if err := e.identify(); err != nil {
		e.close()
		return nil, fmt.Errorf("namespace %s: %w", ns, err)
	}
	if withHandle {
		if e.h, err = openHandleIn(fd); err != nil {
			e.close()
			return nil, fmt.Errorf("netlink handle in namespace %s: %w", ns, err)
		}
	}
	s.named[ns] = e
	return e, nil
}

// identify fills dev and ino from the open descriptor, checking that it is
// a namespace.
func (e *nsEntry) identify() error {
	var fsst unix.Statfs_t
	if err := unix.Fstatfs(int(e.fd), &fsst); err != nil {
		return err
	}
	if fsst.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("not a mounted namespace (a leftover file?): %w", ErrNotFound)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(e.fd), &st); err != nil {
		return err
	}
	e.dev, e.ino = st.Dev, st.Ino
	return nil
}

// Forget drops the cache entry of ns, closing its descriptor and socket so
// they do not keep the namespace alive (call it before somebody else
// deletes the namespace). The next use of ns opens it afresh.
func (s *Session) Forget(ns string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.named[ns]; ok {
		e.close()
		delete(s.named, ns)
	}
}

// netnsDirOnce records that /run/netns is a shared mount; set only after
// success so a failure is retried by the next caller.
var netnsDirState struct {
	sync.Mutex
	ready bool
}

// prepareNetnsDir makes /run/netns a shared mount point, as iproute2 does:
// unmounting a namespace there then propagates into every mount namespace
// that copied it (those of `ip netns exec` children), so a deleted namespace
// is not kept alive by a bind mount somebody else's mount namespace holds.
func prepareNetnsDir() error {
	netnsDirState.Lock()
	defer netnsDirState.Unlock()
	if netnsDirState.ready {
		return nil
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return err
	}
	madeMount := false
	for {
		err := unix.Mount("", NetnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINVAL) || madeMount {
			return fmt.Errorf("make %s a shared mount: %w", NetnsDir, err)
		}
		// Not a mount point yet: bind it onto itself, then retry.
		if err := unix.Mount(NetnsDir, NetnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", NetnsDir, err)
		}
		madeMount = true
	}
	netnsDirState.ready = true
	return nil
}

// CreateNetns creates the named namespace, bind-mounted under /run/netns
// like `ip netns add`, with loopback up and IPv6 off. An existing namespace
// of that name is left as it is (nil error).
func (s *Session) CreateNetns(name string) error {
	if err := checkNetnsName(name); err != nil {
		return fmt.Errorf("fabric: create namespace: %w", err)
	}
	if err := s.createNetns(name); err != nil {
		return fmt.Errorf("fabric: create namespace %s: %w", name, err)
	}
	return nil
}

func (s *Session) createNetns(name string) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	path := filepath.Join(NetnsDir, name)
	if _, _, err := nsIdentity(path); err == nil {
		return nil
	}
	if err := prepareNetnsDir(); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err == nil {
			f.Close()
			break
		}
		if !errors.Is(err, fs.ErrExist) || attempt > 0 {
			return err
		}
		// Somebody else may be between creating the file and mounting on
		// it: give them a moment before calling the file a leftover.
		for range 20 {
			if _, _, err := nsIdentity(path); err == nil {
				return nil // created meanwhile by somebody else
			}
			time.Sleep(5 * time.Millisecond)
		}
		// A leftover file with nothing mounted on it (a crash between
		// create and mount): replace it.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	e := &nsEntry{fd: -1}
	err := runIn(-1, func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount: %w", err)
		}
		fd, err := unix.Open(src, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		e.fd = netns.NsHandle(fd)
		// Set up from inside: sysctls written here land in the new
		// namespace, and the netlink socket is born in it.
		for _, key := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
			if err := writeSysctl(key, "1"); err != nil {
				return err
			}
		}
		if e.h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return fmt.Errorf("netlink handle: %w", err)
		}
		lo, err := e.h.LinkByName("lo")
		if err != nil {
			return fmt.Errorf("find lo: %w", err)
		}
		if err := e.h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
		return nil
	})
	if err == nil {
		err = e.identify()
	}
	if err == nil && e.h != nil {
		err = e.h.SetSocketTimeout(netlinkTimeout)
	}
	if err != nil {
		e.close()
		_ = unix.Unmount(path, unix.MNT_DETACH)
		_ = os.Remove(path)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		e.close()
		return nil // created; nothing to cache
	}
	if old, ok := s.named[name]; ok {
		old.close()
	}
	s.named[name] = e
	return nil
}

// DeleteNetns removes the named namespace's mount and file. An absent
// namespace is not an error. The kernel destroys the namespace, and the
// links in it, once nothing else holds it (a process inside it, an open
// socket or descriptor elsewhere).
func (s *Session) DeleteNetns(name string) error {
	if err := checkNetnsName(name); err != nil {
		return fmt.Errorf("fabric: delete namespace: %w", err)
	}
	s.Forget(name)
	path := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EINVAL):
			// Not a mount point: a leftover file; remove it below.
		default:
			return fmt.Errorf("fabric: delete namespace %s: unmount: %w", name, err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fabric: delete namespace %s: %w", name, err)
	}
	return nil
}

// NetnsExists reports whether a namespace is mounted under that name.
func NetnsExists(name string) bool {
	if checkNetnsName(name) != nil {
		return false
	}
	_, _, err := nsIdentity(filepath.Join(NetnsDir, name))
	return err == nil
}

// NetnsUsers returns the processes whose network namespace is one of the
// named namespaces, by pid, read from /proc/PID/ns/net. Processes that end
// while it reads, or that it may not inspect, are left out.
func NetnsUsers(names []string) []int {
	type id struct{ dev, ino uint64 }
	want := make(map[id]bool, len(names))
	for _, n := range names {
		if checkNetnsName(n) != nil {
			continue
		}
		if dev, ino, err := nsIdentity(filepath.Join(NetnsDir, n)); err == nil {
			want[id{dev, ino}] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) == nil && want[id{st.Dev, st.Ino}] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// ListNetns returns the names under /run/netns that start with prefix,
// sorted. Leftover files with no namespace mounted on them are listed too,
// so that cleanup finds them.
func ListNetns(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetnsDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("fabric: list namespaces: %w", err)
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// OpenNetns opens the named namespace; the caller closes the handle.
func OpenNetns(name string) (netns.NsHandle, error) {
	if err := checkNetnsName(name); err != nil {
		return -1, fmt.Errorf("fabric: open namespace: %w", err)
	}
	fd, err := netns.GetFromPath(filepath.Join(NetnsDir, name))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = ErrNotFound
		}
		return -1, fmt.Errorf("fabric: open namespace %s: %w", name, err)
	}
	e := nsEntry{fd: fd}
	if err := e.identify(); err != nil {
		fd.Close()
		return -1, fmt.Errorf("fabric: open namespace %s: %w", name, err)
	}
	return fd, nil
}

// Handle returns the Session's netlink handle for ns ("" = host). The
// Session owns it: do not close it.
func (s *Session) Handle(ns string) (*netlink.Handle, error) {
	e, err := s.entry(ns)
	if err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	return e.h, nil
}

// Do runs fn on a locked OS thread inside ns ("" = host) and returns its
// error. Sockets fn opens stay in that namespace after it returns.
// Goroutines fn starts do not inherit the namespace.
func (s *Session) Do(ns string, fn func() error) error {
	e, err := s.lookup(ns, false)
	if err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	return runIn(e.fd, fn)
}

// StartIn calls cmd.Start from a locked thread inside ns, so the child is
// born in that namespace; the thread is restored afterwards. Note that
// SysProcAttr.Pdeathsig fires when the forking thread ends, which here is
// only if restoring it failed.
func (s *Session) StartIn(ns string, cmd *exec.Cmd) error {
	if err := s.Do(ns, cmd.Start); err != nil {
		return fmt.Errorf("fabric: start %s in %s: %w", cmd.Path, nsLabel(ns), err)
	}
	return nil
}

// Sysctl writes value to the sysctl key inside ns ("" = host). The key is
// in dotted form (net.ipv4.ip_forward) or, when a part contains a dot
// itself, slash form (net/ipv6/conf/eth0.7/disable_ipv6).
func (s *Session) Sysctl(ns, key, value string) error {
	if _, err := sysctlPath(key); err != nil {
		return fmt.Errorf("fabric: sysctl: %w", err)
	}
	if err := s.Do(ns, func() error { return writeSysctl(key, value) }); err != nil {
		return fmt.Errorf("fabric: sysctl %s=%s in %s: %w", key, value, nsLabel(ns), err)
	}
	return nil
}
