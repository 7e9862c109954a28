package spec

import (
	"fmt"
	"math/big"
	"strings"
	"time"
)

type unit struct {
	name string
	mult uint64
}

// rateUnits are tc's decimal bit-rate units, largest first for FormatRate.
var rateUnits = []unit{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}}

// sizeUnits are the size units, largest first within each family.
var (
	binarySizeUnits  = []unit{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	decimalSizeUnits = []unit{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
)

// MinRateBits is the smallest rate ParseRate accepts: one byte per second,
// the unit the kernel's tbf counts in.
const MinRateBits = 8

// ParseRate parses a bit rate the way tc writes it: a decimal number and
// one of bit, kbit, mbit, gbit (decimal multiples, case-insensitive). A
// bare number is bit/s, as in tc. Fractions are accepted when the result
// is a whole number of bits ("1.5mbit").
func ParseRate(s string) (uint64, error) {
	num, u := splitNumber(s)
	if num == "" {
		return 0, badValue(ErrInvalid, "rate %q: want a number and a unit (bit, kbit, mbit, gbit)", s)
	}
	mult := uint64(1)
	if u != "" {
		lu := strings.ToLower(u)
		found := false
		for _, r := range rateUnits {
			if lu == r.name {
				mult, found = r.mult, true
			}
		}
		if !found {
			hint := ""
			if strings.HasSuffix(lu, "bps") || strings.HasSuffix(lu, "b/s") {
				hint = "; tc's bps means bytes per second, so write the rate in bits"
			}
			return 0, badValue(ErrUnit, "rate %q: unit %q is not one of bit, kbit, mbit, gbit%s", s, u, hint)
		}
	}
	v, err := scale(num, mult, 1<<64-1)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	if v < MinRateBits {
		return 0, badValue(ErrInvalid, "rate %q: below %dbit (one byte per second)", s, MinRateBits)
	}
	return v, nil
}

// ParseSize parses a byte size: a decimal number and one of B, KiB, MiB,
// GiB, TiB (binary) or KB, MB, GB, TB (decimal). A bare number is bytes.
// Units are case-sensitive so that "Gb" cannot be mistaken for gigabits.
func ParseSize(s string) (int64, error) {
	num, u := splitNumber(s)
	if num == "" {
		return 0, badValue(ErrInvalid, "size %q: want a number and a unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	mult := uint64(1)
	if u != "" {
		found := false
		hint := ""
		for _, list := range [][]unit{binarySizeUnits, decimalSizeUnits} {
			for _, r := range list {
				if u == r.name {
					mult, found = r.mult, true
				} else if strings.EqualFold(u, r.name) {
					hint = fmt.Sprintf(" (did you mean %s?)", r.name)
				}
			}
		}
		if !found {
			return 0, badValue(ErrUnit, "size %q: unit %q is not one of B, KiB, MiB, GiB, TiB, KB, MB, GB, TB%s", s, u, hint)
		}
	}
	v, err := scale(num, mult, 1<<63-1)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	if v == 0 {
		return 0, badValue(ErrInvalid, "size %q: must be positive", s)
	}
	return int64(v), nil
}

// FormatRate writes bits in the largest rate unit that keeps it whole, so
// that ParseRate(FormatRate(r)) == r.
func FormatRate(bits uint64) string {
	for _, u := range rateUnits {
		if bits != 0 && bits%u.mult == 0 {
			return fmt.Sprintf("%d%s", bits/u.mult, u.name)
		}
	}
	return fmt.Sprintf("%dbit", bits)
}

// FormatSize writes bytes in the exact form with the smallest number,
// preferring binary units on a tie (64000000 is "64MB", 268435456 is
// "256MiB"), so that ParseSize(FormatSize(n)) == n.
func FormatSize(bytes int64) string {
	if bytes <= 0 {
		return fmt.Sprintf("%dB", bytes)
	}
	best, bestUnit := uint64(bytes), "B"
	for _, list := range [][]unit{binarySizeUnits, decimalSizeUnits} {
		for _, u := range list {
			if v := uint64(bytes); v%u.mult == 0 && v/u.mult < best {
				best, bestUnit = v/u.mult, u.name
			}
		}
	}
	return fmt.Sprintf("%d%s", best, bestUnit)
}

// splitNumber splits "1.5 GiB" into "1.5" and "GiB". num is empty when s
// does not start with a well-formed decimal number.
func splitNumber(s string) (num, unit string) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
		i++
	}
	num, unit = s[:i], strings.TrimSpace(s[i:])
	intPart, frac, hasDot := strings.Cut(num, ".")
	if intPart == "" || (hasDot && frac == "") || strings.Contains(frac, ".") {
		return "", unit
	}
	return num, unit
}

// scale returns num*mult exactly, failing when the product is not whole or
// exceeds max.
func scale(num string, mult, max uint64) (uint64, error) {
	if len(num) > 64 {
		return 0, badValue(ErrInvalid, "number too long")
	}
	intPart, frac, _ := strings.Cut(num, ".")
	n, ok := new(big.Int).SetString(intPart+frac, 10)
	if !ok {
		return 0, badValue(ErrInvalid, "not a decimal number")
	}
	n.Mul(n, new(big.Int).SetUint64(mult))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := new(big.Int).QuoRem(n, den, new(big.Int))
	if r.Sign() != 0 {
		return 0, badValue(ErrInvalid, "not a whole number of the base unit")
	}
	if !q.IsUint64() || q.Uint64() > max {
		return 0, badValue(ErrInvalid, "too large")
	}
	return q.Uint64(), nil
}

// valueError is a bad-value message that wraps its sentinel without
// repeating the sentinel's text.
type valueError struct {
	err error
	msg string
}

func badValue(sentinel error, format string, args ...any) error {
	return &valueError{err: sentinel, msg: fmt.Sprintf(format, args...)}
}

func (e *valueError) Error() string { return e.msg }
func (e *valueError) Unwrap() error { return e.err }

// PPM is the denominator of ParsePercent's result: 1% is 10,000 ppm.
const PPM = 1_000_000

// MaxDelay bounds a link's added delay: longer delays hold more frames than
// a link-layer delay line keeps (see stack/link/impair).
const MaxDelay = 10 * time.Second

// ParsePercent parses a probability written as a percentage ("1%",
// "0.1%", "100%"; the % sign is required so that "1" cannot mean 1% to one
// reader and 100% to another, except for a bare 0, which means the same
// to everyone) and returns it in parts per million. The
// result must be a whole number of ppm (at most four decimals).
func ParsePercent(s string) (uint32, error) {
	t := strings.TrimSpace(s)
	num, ok := strings.CutSuffix(t, "%")
	if !ok {
		// Zero is zero in any unit, as --rate 0 and --delay 0 are.
		if n, rest := splitNumber(t); n != "" && rest == "" && strings.Trim(n, "0.") == "" {
			return 0, nil
		}
		return 0, badValue(ErrUnit, "percentage %q: want a number and %% (e.g. 1%% or 0.1%%)", s)
	}
	n, rest := splitNumber(num)
	if n == "" || rest != "" {
		return 0, badValue(ErrInvalid, "percentage %q: want a decimal number before %%", s)
	}
	v, err := scale(n, PPM/100, PPM)
	if err != nil {
		return 0, fmt.Errorf("percentage %q: %w", s, badValue(ErrInvalid, "%v (from 0%% to 100%%, in steps of 0.0001%%)", err))
	}
	return uint32(v), nil
}

// FormatPercent writes ppm parts per million as ParsePercent reads it.
func FormatPercent(ppm uint32) string {
	whole, frac := ppm/(PPM/100), ppm%(PPM/100)
	if frac == 0 {
		return fmt.Sprintf("%d%%", whole)
	}
	return strings.TrimRight(fmt.Sprintf("%d.%04d", whole, frac), "0") + "%"
}

// ParseDelay parses a Go duration ("5ms", "1.5s", "250us") from 0 to
// MaxDelay.
func ParseDelay(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, badValue(ErrInvalid, "delay %q: want a duration such as 5ms or 250us", s)
	}
	if d < 0 || d > MaxDelay {
		return 0, badValue(ErrInvalid, "delay %q: must be from 0 to %v", s, MaxDelay)
	}
	return d, nil
}
