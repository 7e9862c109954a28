package fabric

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// mainThreadEnv names the namespace TestMain uses for the check in a
// child test process.
const mainThreadEnv = "FABRIC_TEST_MAIN_THREAD_NS"

func TestMain(m *testing.M) {
	if ns := os.Getenv(mainThreadEnv); ns != "" {
		if err := doFromMainThread(ns); err != nil {
			fmt.Println("FAIL:", err)
			os.Exit(1)
		}
		fmt.Println("main-thread check ok")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// doFromMainThread calls Do from many goroutines while the main goroutine
// waits unlocked, so the main thread is free to pick up runIn's goroutines.
// It checks that fn never ran on the main thread, that it ran inside ns,
// that the main thread was offered work at least once (or the check proved
// nothing), and that every thread is home afterwards.
func doFromMainThread(ns string) error {
	home, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range 8 {
		wg.Go(func() {
			for range 500 {
				err := Do(ns, func() error {
					if unix.Gettid() == unix.Getpid() {
						return fmt.Errorf("fn ran on the main thread")
					}
					inside, err := os.Readlink("/proc/thread-self/ns/net")
					if err == nil && inside == home {
						err = fmt.Errorf("fn ran in the caller's namespace")
					}
					return err
				})
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
	}
	if mainThreadHandoffs.Load() == 0 {
		return fmt.Errorf("the main thread never picked up a namespace goroutine; nothing was checked")
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, task := range tasks {
		if got, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net"); err == nil && got != home {
			return fmt.Errorf("thread %s left in %s", task.Name(), got)
		}
	}
	fmt.Printf("%d hand-offs from the main thread\n", mainThreadHandoffs.Load())
	return nil
}

// Do called from the main thread (which a locked goroutine must never
// leave in a foreign namespace) works and leaves it home.
func TestDoFromMainThread(t *testing.T) {
	p := testPrefix(t)
	ns := p + "m"
	if err := CreateNetns(ns); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), mainThreadEnv+"="+ns)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	t.Logf("child (pid %s): %s", strconv.Itoa(cmd.ProcessState.Pid()), out)
}
