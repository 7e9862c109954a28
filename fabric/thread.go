package fabric

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// errPanic carries a panic out of the namespace goroutine so the caller can
// re-raise it on its own goroutine.
type errPanic struct{ v any }

func (e errPanic) Error() string { return fmt.Sprint("panic in namespace: ", e.v) }

// runIn runs fn on a locked OS thread switched into target (target < 0
// means: stay in the thread's current namespace, used to run on a clean
// non-main thread). It blocks until fn returns and passes fn's error
// through; a panic in fn is re-raised in the caller.
//
// The switch happens on a fresh goroutine so that a failed restore can end
// that goroutine while its thread is still locked: the runtime then destroys
// the thread. Goroutines that lock their thread and run on the main thread
// hand the work to yet another goroutine while they stay locked, because a
// locked goroutine ending on the main thread wedges it (FACTS.md).
func runIn(target netns.NsHandle, fn func() error) error {
	done := make(chan error, 1)
	go lockedRun(target, fn, done)
	err := <-done
	var p errPanic
	if errors.As(err, &p) {
		panic(p.v)
	}
	return err
}

// mainThreadHandoffs counts the times runIn's goroutine found itself on
// the main thread and handed the work on (for tests).
var mainThreadHandoffs atomic.Uint64

// lockedRun is the body of runIn's goroutine.
func lockedRun(target netns.NsHandle, fn func() error, out chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread: stay locked on it while another goroutine
		// (necessarily on another thread) does the work.
		mainThreadHandoffs.Add(1)
		inner := make(chan error, 1)
		go lockedRun(target, fn, inner)
		err := <-inner
		runtime.UnlockOSThread()
		out <- err
		return
	}
	clean, err := switchAndRun(target, fn)
	if clean {
		runtime.UnlockOSThread()
	}
	// Otherwise the goroutine ends locked and the runtime discards the
	// thread rather than reuse it in a foreign namespace.
	out <- err
}

// switchAndRun switches the calling (locked) thread to target, runs fn and
// restores the thread's namespace. clean reports whether the thread ended
// where it began.
func switchAndRun(target netns.NsHandle, fn func() error) (clean bool, err error) {
	orig, err := netns.Get()
	if err != nil {
		return true, fmt.Errorf("read the thread's namespace: %w", err)
	}
	defer orig.Close()
	if target >= 0 {
		if err := netns.Set(target); err != nil {
			return true, fmt.Errorf("enter namespace: %w", err)
		}
	}
	var ferr error
	func() {
		defer func() {
			if r := recover(); r != nil {
				ferr = errPanic{r}
			}
		}()
		ferr = fn()
	}()
	// fn may have unshared or switched the thread itself; always restore.
	if err := netns.Set(orig); err != nil {
		return false, errors.Join(ferr, fmt.Errorf("restore the thread's namespace (thread discarded): %w", err))
	}
	return true, ferr
}
