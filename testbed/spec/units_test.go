package spec

import (
	"errors"
	"testing"
)

func TestParseRate(t *testing.T) {
	good := []struct {
		in   string
		want uint64
	}{
		{"1gbit", 1e9}, {"1Gbit", 1e9}, {"100mbit", 100e6}, {"1.5mbit", 1.5e6}, {"64kbit", 64e3},
		{"800bit", 800}, {"8", 8}, {" 10 mbit ", 10e6}, {"18446744073bit", 18446744073},
		{"18446744073gbit", 18446744073e9},
	}
	for _, tc := range good {
		if got, err := ParseRate(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in  string
		err error
	}{
		{"", ErrInvalid}, {"gbit", ErrInvalid}, {"1mbps", ErrUnit}, {"1m", ErrUnit}, {"1 furlong", ErrUnit},
		{"1.5bit", ErrInvalid}, {"7bit", ErrInvalid}, {"0", ErrInvalid}, {"-1mbit", ErrInvalid},
		{"1..5mbit", ErrInvalid}, {"1.mbit", ErrInvalid}, {".5mbit", ErrInvalid},
		{"18446744074gbit", ErrInvalid}, {"99999999999999999999999999gbit", ErrInvalid},
	}
	for _, tc := range bad {
		if got, err := ParseRate(tc.in); !errors.Is(err, tc.err) {
			t.Errorf("ParseRate(%q) = %d, %v; want %v", tc.in, got, err, tc.err)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"1GiB", 1 << 30}, {"256MiB", 256 << 20}, {"4KiB", 4096}, {"2TiB", 2 << 40}, {"512B", 512},
		{"512", 512}, {"1KB", 1000}, {"1.5GB", 1.5e9}, {"64MB", 64e6}, {"0.5KiB", 512}, {"3TB", 3e12},
		{"8388607TiB", 8388607 << 40},
	}
	for _, tc := range good {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	bad := []struct {
		in  string
		err error
	}{
		{"", ErrInvalid}, {"GiB", ErrInvalid}, {"1gib", ErrUnit}, {"1Gb", ErrUnit}, {"1G", ErrUnit},
		{"0", ErrInvalid}, {"0.0003KB", ErrInvalid}, {"8388608TiB", ErrInvalid}, {"-5MiB", ErrInvalid},
	}
	for _, tc := range bad {
		if got, err := ParseSize(tc.in); !errors.Is(err, tc.err) {
			t.Errorf("ParseSize(%q) = %d, %v; want %v", tc.in, got, err, tc.err)
		}
	}
}

func TestFormatRoundTrip(t *testing.T) {
	for _, r := range []uint64{8, 999, 1000, 1500, 1e6, 2.5e6, 1e9, 40e9, 1<<64 - 1} {
		s := FormatRate(r)
		if got, err := ParseRate(s); err != nil || got != r {
			t.Errorf("FormatRate(%d) = %q, parses back to %d, %v", r, s, got, err)
		}
	}
	for _, n := range []int64{1, 1000, 1024, 1536, 256 << 20, 1e9, 3 << 40, 1<<63 - 1} {
		s := FormatSize(n)
		if got, err := ParseSize(s); err != nil || got != n {
			t.Errorf("FormatSize(%d) = %q, parses back to %d, %v", n, s, got, err)
		}
	}
	if FormatRate(1e9) != "1gbit" || FormatSize(256<<20) != "256MiB" || FormatSize(64e6) != "64MB" {
		t.Errorf("unexpected forms %s %s %s", FormatRate(1e9), FormatSize(256<<20), FormatSize(64e6))
	}
}
