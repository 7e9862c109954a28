package dgram

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRefuseGSO: an EINVAL for a send of more than 64 segments is an older
// kernel's UDP_MAX_SEGMENTS (keep to 64, sizes untouched); an EINVAL or
// EMSGSIZE for 64 or fewer is the size (segment no more at it); EIO is no
// checksum offload (no segmentation at all).
func TestRefuseGSO(t *testing.T) {
	k := &kernelConn{mode: KernelBest}
	k.gsoMax.Store(maxGSOBytes)
	k.segMax.Store(MaxGSOSegments)
	wrap := func(e error) error { return fmt.Errorf("sendmmsg: %w", e) }
	if !k.refuseGSO(wrap(unix.EINVAL), 64, 128) || k.segMax.Load() != LegacyGSOSegments || k.gsoMax.Load() != maxGSOBytes {
		t.Fatalf("EINVAL for 128 x 64 B: segMax %d gsoMax %d", k.segMax.Load(), k.gsoMax.Load())
	}
	if !k.refuseGSO(wrap(unix.EINVAL), 9000, 7) || k.gsoMax.Load() != 8999 || k.segMax.Load() != LegacyGSOSegments {
		t.Fatalf("EINVAL for 7 x 9000 B: segMax %d gsoMax %d", k.segMax.Load(), k.gsoMax.Load())
	}
	if !k.refuseGSO(wrap(unix.EMSGSIZE), 4000, 16) || k.gsoMax.Load() != 3999 {
		t.Fatalf("EMSGSIZE for 16 x 4000 B: gsoMax %d", k.gsoMax.Load())
	}
	if k.refuseGSO(wrap(unix.ECONNREFUSED), 100, 2) {
		t.Fatal("ECONNREFUSED asked for a retry")
	}
	if !k.refuseGSO(wrap(unix.EIO), 100, 2) || k.gsoMax.Load() != 0 {
		t.Fatalf("EIO: gsoMax %d", k.gsoMax.Load())
	}
}
