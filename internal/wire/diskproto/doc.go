// Package diskproto is the wire format of netstation's storage protocol:
// block I/O (INFO, READ, WRITE, FLUSH, TRIM) carried in single UDP
// datagrams between a cpu's storage client and a disk peripheral.
//
// Both ends import it, so it depends on nothing but the standard library.
// The protocol itself — header layouts, the client and server state
// machines, the duplicate-request cache and the error codes — is specified
// in docs/protocols/disk.md; this package only encodes and validates.
//
// Every request carries a per-transmission tag (fresh on each
// retransmission, for unambiguous RTT samples, as in AoE) and a stable
// request id per operation (the key of the server's duplicate-request
// cache, as the XID is in NFS over UDP). Headers and payloads are each
// protected by a CRC32C.
package diskproto
