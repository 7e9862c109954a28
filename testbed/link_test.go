package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netstation/netstation/fabric/tcbpf"
	"github.com/netstation/netstation/stack/link/impair"
)

// TestLinkSplit: with BPF, the link layer only delays; without, it does
// everything the kernel would have.
func TestLinkSplit(t *testing.T) {
	f := linkFile{LinkParams: LinkParams{RateBits: 1e9, LossPPM: 10_000, CorruptPPM: 1_000, Delay: 5 * time.Millisecond, Seed: 7, Down: true}}
	f.Kernel = true
	if got, want := f.linkLayerParams(), (impair.Params{Delay: 5 * time.Millisecond}); got != want {
		t.Errorf("kernel: link layer gets %+v, want %+v", got, want)
	}
	if got, want := f.kernelParams(), (tcbpf.Params{LossPPM: 10_000, CorruptPPM: 1_000, Seed: 7, Down: true}); got != want {
		t.Errorf("kernel gets %+v, want %+v", got, want)
	}
	f.Kernel = false
	if got, want := f.linkLayerParams(), (impair.Params{LossPPM: 10_000, CorruptPPM: 1_000, Delay: 5 * time.Millisecond, Seed: 7, Down: true}); got != want {
		t.Errorf("link layer gets %+v, want %+v", got, want)
	}
}

func TestLinkFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "nodes"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := readLinkFile(dir, "a"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	want := linkFile{LinkParams: LinkParams{RateBits: 5e8, LossPPM: 50_000, Delay: time.Millisecond}, Shaped: true, Kernel: true}
	if err := writeLinkFile(dir, "a", want); err != nil {
		t.Fatal(err)
	}
	got, err := readLinkFile(dir, "a")
	if err != nil || got != want {
		t.Errorf("read back %+v, %v; want %+v", got, err, want)
	}
	if err := os.WriteFile(linkPath(dir, "b"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readLinkFile(dir, "b"); err == nil {
		t.Error("a broken link file was accepted")
	}
}

func TestTemplatesState(t *testing.T) {
	var m linkManager
	if s := m.templates(); !strings.HasPrefix(s, "off: ") || m.bpf() {
		t.Errorf("before any attach: %q, bpf %v", s, m.bpf())
	}
	m.bpfTried = true
	if s := m.templates(); s != TemplatesOn || !m.bpf() {
		t.Errorf("attached: %q, bpf %v", s, m.bpf())
	}
	m.bpfOff = bpfReason(fmt.Errorf("tcbpf: attach: %w", syscall.EPERM))
	s := m.templates()
	if !strings.HasPrefix(s, "off: BPF not permitted") || strings.Contains(s, "operation not permitted") || strings.Contains(s, "\n") || m.bpf() {
		t.Errorf("EPERM: %q, bpf %v", s, m.bpf())
	}
}

func TestSeeded(t *testing.T) {
	p := impair.Params{LossPPM: 1}
	a, b := seeded(p), seeded(p)
	if a.Seed == 0 || a.Seed == b.Seed {
		t.Errorf("unseeded loss got seeds %d, %d: want random, non-zero", a.Seed, b.Seed)
	}
	if got := seeded(impair.Params{LossPPM: 1, Seed: 7}); got.Seed != 7 {
		t.Errorf("a given seed changed to %d", got.Seed)
	}
	if got := seeded(impair.Params{Delay: time.Millisecond}); got.Seed != 0 {
		t.Errorf("a delay-only link got seed %d", got.Seed)
	}
}
