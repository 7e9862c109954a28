// Package display is the display peripheral: its kind (Kind: the
// framebuffer served on the runtime's stack, UDP tiles and HTTP, with the
// display-stats and snapshot ops) and its server, a double-buffered
// framebuffer fed by the tile protocol of internal/wire/tileproto
// (docs/protocols/display.md).
//
// Tiles of the frame being received are drawn into a back buffer; PRESENT
// (or, by rule, the first datagram of a newer frame) swaps it with the
// front buffer, so a snapshot always sees one whole presented frame. Every
// datagram that cannot be applied is dropped and counted by reason; none
// can make the server panic, block or draw outside the framebuffer.
package display
