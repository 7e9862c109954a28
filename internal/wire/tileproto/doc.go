// Package tileproto is the wire format of the netstation display protocol
// (docs/protocols/display.md): self-contained tiles of pixels with
// absolute coordinates, a frame sequence number and a PRESENT message,
// one UDP datagram each. Nothing is carried from one datagram to the next,
// so a lost tile costs exactly its own rectangle.
//
// The package only encodes and decodes; the framebuffer that applies tiles
// lives in package peripherals/display, the sender in cpu/render; both
// import this package downward (see package wire).
package tileproto
