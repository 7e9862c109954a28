package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeWatch drives a watchdog over n slots with a fake clock and fake run
// delays.
type fakeWatch struct {
	w       *watchdog
	now     int64
	beats   []atomic.Uint64
	pids    []int
	delay   map[int]time.Duration
	waitNow map[int]bool
}

func newFakeWatch(n int) *fakeWatch {
	f := &fakeWatch{now: int64(time.Hour), beats: make([]atomic.Uint64, n), pids: make([]int, n), delay: map[int]time.Duration{}, waitNow: map[int]bool{}}
	for i := range f.pids {
		f.pids[i] = 100 + i
	}
	f.w = &watchdog{suspect: 2 * time.Second, miss: 4 * time.Second, slots: make([]watchSlot, n),
		waiting: func(pid int) (time.Duration, bool, bool) { return f.delay[pid], f.waitNow[pid], true }}
	return f
}

// step advances the clock by d, has every slot in beating beat at the
// new time, and checks.
func (f *fakeWatch) step(d time.Duration, beating ...int) watchVerdict {
	f.now += int64(d)
	for _, i := range beating {
		f.beats[i].Store(uint64(f.now))
	}
	return f.w.check(f.now, f.beats, f.pids)
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func except(n, skip int) []int {
	return slices.DeleteFunc(all(n), func(i int) bool { return i == skip })
}

// TestWatchdogDeclaresSilent: a slot that stops beating is declared hung
// once it has been silent for miss, once; the others are fresh; when it
// beats again it is reported resumed and can be declared again later.
func TestWatchdogDeclaresSilent(t *testing.T) {
	const n = 8
	f := newFakeWatch(n)
	for k := 0; k < 5; k++ {
		if v := f.step(500*time.Millisecond, all(n)...); len(v.hung) != 0 || len(v.fresh) != n {
			t.Fatalf("all beating: %+v", v)
		}
	}
	var hungAt time.Duration
	for k := 1; k <= 20; k++ {
		v := f.step(500*time.Millisecond, except(n, 3)...)
		if len(v.hung) > 0 {
			if !slices.Equal(v.hung, []int{3}) || hungAt != 0 {
				t.Fatalf("declared %v (already at %v)", v.hung, hungAt)
			}
			hungAt = time.Duration(k) * 500 * time.Millisecond
		}
		if slices.Contains(v.fresh, 3) && k > 4 {
			t.Fatalf("silent slot listed fresh after %v", time.Duration(k)*500*time.Millisecond)
		}
	}
	// Declared at miss, give or take a scan (the first look after suspect
	// only takes the run delay's baseline).
	if hungAt < 4*time.Second || hungAt > 5*time.Second {
		t.Errorf("declared after %v of silence, want 4-5 s", hungAt)
	}
	v := f.step(500*time.Millisecond, all(n)...)
	if !slices.Equal(v.resumed, []int{3}) || len(v.fresh) != n {
		t.Fatalf("beating again: %+v", v)
	}
	hung := 0
	for k := 0; k < 20; k++ {
		hung += len(f.step(500*time.Millisecond, except(n, 3)...).hung)
	}
	if hung != 1 {
		t.Errorf("silent again: declared %d times, want once", hung)
	}
}

// TestWatchdogExcusesCPUWait: a slot silent because its process waits for
// a CPU (its run delay grows with the clock) is not declared, however
// long; once the waiting stops and it stays silent, it is. A process that
// gets a CPU a tenth of the time and still does not beat is declared
// once that tenth adds up to the miss window (a livelock under load).
func TestWatchdogExcusesCPUWait(t *testing.T) {
	const n = 8
	f := newFakeWatch(n)
	f.step(500*time.Millisecond, all(n)...)
	pid := f.pids[5]
	for k := 0; k < 60; k++ {
		f.delay[pid] += 500 * time.Millisecond // all of the wall time
		if v := f.step(500*time.Millisecond, except(n, 5)...); len(v.hung) != 0 {
			t.Fatalf("starved slot declared after %v", time.Duration(k+1)*500*time.Millisecond)
		}
	}
	if f.w.excused == 0 {
		t.Error("no excuse counted")
	}
	declared := false
	for k := 0; k < 40 && !declared; k++ {
		declared = slices.Equal(f.step(500*time.Millisecond, except(n, 5)...).hung, []int{5})
	}
	if !declared {
		t.Error("silent without waiting for a CPU, never declared")
	}
	// Waiting now (runnable, its run delay not yet counted by the
	// kernel, which adds it when the thread gets the CPU): excused.
	f.step(500*time.Millisecond, all(n)...)
	f.waitNow[pid] = true
	for k := 0; k < 60; k++ {
		if v := f.step(500*time.Millisecond, except(n, 5)...); len(v.hung) != 0 {
			t.Fatalf("a slot waiting for a CPU now declared after %v", time.Duration(k+1)*500*time.Millisecond)
		}
	}
	f.waitNow[pid] = false
	f.step(500*time.Millisecond, all(n)...)
	var at time.Duration
	for k := 1; k <= 100 && at == 0; k++ {
		f.delay[pid] += 450 * time.Millisecond
		if slices.Equal(f.step(500*time.Millisecond, except(n, 5)...).hung, []int{5}) {
			at = time.Duration(k) * 500 * time.Millisecond
		}
	}
	// 2 s to suspect, then 2 s more at a tenth: 22 s.
	if at < 15*time.Second || at > 30*time.Second {
		t.Errorf("running a tenth of the time without beating: declared after %v, want about 22 s", at)
	}
}

// TestWatchdogArming: a slot is watched only once its process has beaten
// (never-beating and not-running slots are not declared); a new process
// in the slot (a restart) is not judged by the old one's beats.
func TestWatchdogArming(t *testing.T) {
	const n = 8
	f := newFakeWatch(n)
	f.pids[6] = 0 // not running
	for k := 0; k < 40; k++ {
		if v := f.step(500*time.Millisecond, except(n, 7)...); len(v.hung) != 0 {
			t.Fatalf("declared %v: slot 7 never beat, slot 6 runs nothing", v.hung)
		}
	}
	// Slot 7 beats once, then its process is replaced: the old beat is
	// the new process's floor, nothing is judged until it beats.
	f.step(500*time.Millisecond, all(n)...)
	f.pids[7] = 999
	for k := 0; k < 40; k++ {
		if v := f.step(500*time.Millisecond, except(n, 7)...); slices.Contains(v.hung, 7) {
			t.Fatalf("a restarted process declared on its predecessor's beat after %v", time.Duration(k+1)*500*time.Millisecond)
		}
	}
	declared := false
	f.step(500*time.Millisecond, all(n)...)
	for k := 0; k < 20 && !declared; k++ {
		declared = slices.Contains(f.step(500*time.Millisecond, except(n, 7)...).hung, 7)
	}
	if !declared {
		t.Error("the restarted process, armed by its own beat then silent, never declared")
	}
}

// TestWatchdogHoldsMassSilence: when most slots fall silent at once (the
// machine, or the supervisor, stalled) none is declared.
func TestWatchdogHoldsMassSilence(t *testing.T) {
	const n = 8
	f := newFakeWatch(n)
	f.step(500*time.Millisecond, all(n)...)
	held := 0
	for k := 0; k < 20; k++ {
		v := f.step(500*time.Millisecond, 0, 1, 2)
		if len(v.hung) != 0 {
			t.Fatalf("declared %v of 5 silent at once", v.hung)
		}
		held = max(held, v.held)
	}
	if held != 5 {
		t.Errorf("held %d, want 5", held)
	}
}

// TestBeatTable: a peripheral's beat (mapBeat over the table's memfd,
// as a child gets it) lands in its slot of the supervisor's table.
func TestBeatTable(t *testing.T) {
	tb, err := newBeatTable(4)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	dup := func() *os.File {
		fd, err := unix.Dup(int(tb.f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return os.NewFile(uintptr(fd), "heartbeat")
	}
	beat, err := mapBeat(dup(), "2")
	if err != nil {
		t.Fatal(err)
	}
	before := monotonic()
	beat()
	if got := int64(tb.slots[2].Load()); got < before || got > monotonic() {
		t.Errorf("slot 2 holds %d, want a time after %d", got, before)
	}
	for _, i := range []int{0, 1, 3} {
		if tb.slots[i].Load() != 0 {
			t.Errorf("slot %d written", i)
		}
	}
	for _, bad := range []string{"4", "-1", "x"} {
		if _, err := mapBeat(dup(), bad); err == nil {
			t.Errorf("slot %q taken", bad)
		}
	}
}

// TestProcWaiting: a stopped process waits for nothing (the hang the
// watchdog looks for); a spinning one is runnable (bounded polling: it is
// seen running or waiting for a CPU within a few looks); a gone one is
// unknown.
func TestProcWaiting(t *testing.T) {
	stopped := exec.Command("sleep", "60")
	spinning := exec.Command("sh", "-c", "while :; do :; done")
	for _, c := range []*exec.Cmd{stopped, spinning} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { c.Process.Kill(); c.Wait() }()
	}
	if err := stopped.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", stopped.Process.Pid))
		if strings.Contains(string(b), ") T ") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, now, ok := procWaiting(stopped.Process.Pid); !ok || now {
		t.Errorf("stopped: waiting now %v, known %v; want not waiting, known", now, ok)
	}
	seen := false
	for k := 0; k < 200 && !seen; k++ {
		_, seen, _ = procWaiting(spinning.Process.Pid)
		time.Sleep(5 * time.Millisecond)
	}
	if !seen {
		t.Error("spinning: never seen runnable in 200 looks")
	}
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := procWaiting(gone.Process.Pid); ok {
		t.Error("a gone process reported known")
	}
}
