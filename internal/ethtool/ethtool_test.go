package ethtool_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/netstation/netstation/internal/ethtool"
	"github.com/netstation/netstation/internal/nstest"
	"github.com/netstation/netstation/internal/privtest"
)

// TestSet turns GRO and TSO on and off on a veth of the test's own namespaces
// and reads it back each time.
func TestSet(t *testing.T) {
	privtest.Root(t)
	a, b := nstest.New(t, "etha"), nstest.New(t, "ethb")
	nstest.Veth(t, a, "e0", b, "e1", 1500)
	err := a.Do(func() error {
		for _, f := range []ethtool.Feature{ethtool.GRO, ethtool.TSO} {
			for _, on := range []bool{true, false, true} {
				if err := ethtool.Set("e0", f, on); err != nil {
					return err
				}
				got, err := ethtool.Get("e0", f)
				if err != nil {
					return err
				}
				if got != on {
					t.Errorf("%v after Set(%v): %v", f, on, got)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Do(func() error { _, err := ethtool.Get("nosuchdev0", ethtool.GRO); return err })
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("GRO of a missing device: %v, want ENODEV", err)
	}
	if _, err := ethtool.Get("a-name-much-too-long", ethtool.TSO); err == nil {
		t.Error("an over-long interface name was accepted")
	}
}
