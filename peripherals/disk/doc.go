// Package disk is netstation's disk peripheral's storage server: a block
// device served over UDP with the storage protocol of docs/protocols/disk.md
// (wire format in internal/wire/diskproto). The disk kind that serves it,
// and NBD (sub-package nbd) beside it, on a peripheral's stack is
// sub-package diskkind.
//
// A Server keeps the device in a sparse backing file, so its data survives
// restarts, and serves any number of net.PacketConn — kernel UDP sockets in
// tests and the "--stack kernel" demo, the user-level stack's UDP sockets
// in a testbed. Its promises are NBD's: a WRITE with FUA and every WRITE
// acknowledged before a FLUSH are on stable storage (fdatasync) before the
// FUA write or the FLUSH is answered. A duplicate-request cache answers
// retransmitted non-idempotent requests with their original reply, and a
// per-session window with a client-advanced low-water mark keeps a stale
// replayed WRITE from overwriting newer data.
//
// The backing file is mapped (MAP_SHARED, mem.go): a WRITE's data is
// copied into the page cache with no system call, with non-temporal stores
// (streamcopy.go: the destination lines are not read in first, which made
// Go's copy cost twice the kernel's copy of the same bytes), and a READ's
// is copied out of it into the reply; holes go through the file.
//
// Every request passes an Authorizer. A testbed's disk runs a
// CapabilityAuthorizer (NASD capabilities, internal/wire/capability) with the
// key the testbed made at up; OpenAccess, the explicit "open" mode that
// accepts only the all-zero capability, runs when the topology asks.
//
// A TRANSFER order (transfer.go) is a third-party transfer: the server
// reads a byte range and streams it as display-protocol tiles straight to
// a display, paced by the display's REPORTs and resending lost tiles, and
// answers the order when every frame is on screen.
package disk
