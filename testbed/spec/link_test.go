package spec

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestParsePercent(t *testing.T) {
	good := []struct {
		in   string
		want uint32
	}{
		{"0%", 0}, {"1%", 10_000}, {"0.1%", 1_000}, {"5%", 50_000}, {"100%", PPM},
		{" 2.5 %", 25_000}, {"0.0001%", 1}, {"12.3456%", 123_456},
		{"0", 0}, {"0.0", 0}, {" 0 ", 0}, // zero needs no unit, as --rate 0 and --delay 0
	}
	for _, c := range good {
		got, err := ParsePercent(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParsePercent(%q) = %d, %v; want %d", c.in, got, err, c.want)
			continue
		}
		if back, err := ParsePercent(FormatPercent(got)); err != nil || back != got {
			t.Errorf("FormatPercent(%d) = %q does not round-trip (%d, %v)", got, FormatPercent(got), back, err)
		}
	}
	bad := []struct {
		in  string
		err error
	}{
		{"1", ErrUnit}, {"0.5", ErrUnit}, {"", ErrUnit}, {"%", ErrInvalid}, {"-1%", ErrInvalid}, {"101%", ErrInvalid},
		{"0.00001%", ErrInvalid}, {"1.2.3%", ErrInvalid}, {"one%", ErrInvalid}, {"1e2%", ErrInvalid},
	}
	for _, c := range bad {
		if v, err := ParsePercent(c.in); !errors.Is(err, c.err) {
			t.Errorf("ParsePercent(%q) = %d, %v; want %v", c.in, v, err, c.err)
		}
	}
}

func TestParseDelay(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "5ms": 5 * time.Millisecond, "250us": 250 * time.Microsecond, "10s": 10 * time.Second} {
		if got, err := ParseDelay(in); err != nil || got != want {
			t.Errorf("ParseDelay(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"5", "-1ms", "11s", "soon"} {
		if d, err := ParseDelay(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseDelay(%q) = %v, %v; want ErrInvalid", in, d, err)
		}
	}
}

func TestParseLinkImpairments(t *testing.T) {
	top, err := Parse("lab.yaml", []byte(header+"  - name: a\n    kind: cpu\n    link: {rate: 1gbit, loss: 1%, corrupt: 0.1%, delay: 5ms, seed: 7, rx: framering}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := top.Nodes[0].Link
	want := LinkParams{RateBits: 1e9, LossPPM: 10_000, CorruptPPM: 1_000, Delay: 5 * time.Millisecond, Seed: 7, Rx: LinkRxFrameRing}
	if got != want {
		t.Errorf("link = %+v, want %+v", got, want)
	}
}

func FuzzParsePercent(f *testing.F) {
	for _, s := range []string{"1%", "0.1%", "100%", "1", "%", "-0%", "99.99999%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParsePercent(s)
		if err != nil {
			return
		}
		if v > PPM {
			t.Fatalf("ParsePercent(%q) = %d above %d", s, v, PPM)
		}
		if back, err := ParsePercent(FormatPercent(v)); err != nil || back != v {
			t.Fatalf("round trip of %q: %d -> %q -> %d, %v", s, v, FormatPercent(v), back, err)
		}
	})
}

func ExampleParsePercent() {
	ppm, _ := ParsePercent("0.1%")
	fmt.Println(ppm, FormatPercent(ppm))
	_, err := ParsePercent("5")
	fmt.Println(err)
	// Output:
	// 1000 0.1%
	// percentage "5": want a number and % (e.g. 1% or 0.1%)
}
