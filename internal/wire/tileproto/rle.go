package tileproto

import (
	"bytes"
	"fmt"
)

// The RLE encoding is PackBits over whole pixels: a control byte c, then
//
//	c <  128: c+1 literal pixels follow (1..128);
//	c >= 128: one pixel follows, repeated c-126 times (2..129).
//
// Its worst case grows the payload by one byte per 128 pixels, and every
// run is bounded, so a decoder needs no state beyond the tile.

// AppendRLE appends the RLE encoding of pix (whole pixels of bpp bytes) to
// dst.
func AppendRLE(dst, pix []byte, bpp int) []byte {
	n := len(pix) / bpp
	px := func(i int) []byte { return pix[i*bpp : i*bpp+bpp] }
	for i := 0; i < n; {
		// A run of at least two equal pixels?
		j := i + 1
		for j < n && j-i < 129 && bytes.Equal(px(j), px(i)) {
			j++
		}
		if j-i >= 2 {
			dst = append(dst, byte(j-i+126))
			dst = append(dst, px(i)...)
			i = j
			continue
		}
		// Literals until the next run of two or the 128-pixel limit.
		j = i + 1
		for j < n && j-i < 128 && !(j+1 < n && bytes.Equal(px(j), px(j+1))) {
			j++
		}
		dst = append(dst, byte(j-i-1))
		dst = append(dst, pix[i*bpp:j*bpp]...)
		i = j
	}
	return dst
}

func decodeRLE(dst, src []byte, bpp int) error {
	o := 0
	for len(src) > 0 {
		c := int(src[0])
		src = src[1:]
		if c < 128 {
			k := (c + 1) * bpp
			if k > len(src) || o+k > len(dst) {
				return fmt.Errorf("%w: RLE literal overruns", ErrMalformed)
			}
			o += copy(dst[o:], src[:k])
			src = src[k:]
			continue
		}
		reps := c - 126
		if bpp > len(src) || o+reps*bpp > len(dst) {
			return fmt.Errorf("%w: RLE run overruns", ErrMalformed)
		}
		// Fill by doubling: one pixel, then copies of what is filled.
		run := dst[o : o+reps*bpp]
		k := copy(run, src[:bpp])
		for k < len(run) {
			k += copy(run[k:], run[:k])
		}
		o += len(run)
		src = src[bpp:]
	}
	if o != len(dst) {
		return fmt.Errorf("%w: RLE gives %d bytes, want %d", ErrMalformed, o, len(dst))
	}
	return nil
}
