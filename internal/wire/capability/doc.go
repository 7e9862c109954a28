// Package capability implements NASD-style capabilities for the disk
// peripheral: a small, self-describing grant — disk id, byte range, rights,
// expiry, version and nonce — sealed with an HMAC-SHA256 under a key the
// disk shares with its file manager (cpu0). The manager mints them; the
// disk checks every request against one, statelessly except for the
// version it holds (bumping it revokes every older capability) and a
// replay cache (disk.CapabilityAuthorizer).
//
// A capability travels in the 64-byte capability field of every storage
// protocol request, in a fixed binary encoding tabled in
// docs/protocols/disk.md ("Capabilities"): a format byte, the fields, and
// the HMAC truncated to 160 bits (RFC 2104 section 5: at least half the
// hash output and at least 80 bits). An all-zero field means "no
// capability". A capability is a bearer token: whoever sees it on the wire
// may use it within its range, rights and lifetime, so managers keep
// ranges tight and lifetimes short.
//
// The key a disk shares with its managers reaches both as a KeyFile
// (mode 0600, written by the testbed at up), never over the network.
package capability
