// Package render is the cpu side of the display demo: it renders an
// animation (moving colour bars or a Mandelbrot zoom) and streams it to a
// display peripheral as tiles of the display protocol (package tileproto),
// over whatever UDP socket it is given — the cpu's user-level stack in the
// testbed.
package render
